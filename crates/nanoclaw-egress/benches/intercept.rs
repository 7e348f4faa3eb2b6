//! Added latency of TLS interception: a small HTTPS GET to a loopback origin, directly and
//! through the proxy with a secret bound to the host (CONNECT, TLS with a cached leaf from the
//! local CA, placeholder substitution, verified TLS upstream). Measured per request on a fresh
//! connection (every handshake included) and on a kept-alive connection. Prints p50 and p90;
//! asserts nothing.
//!
//! Run with `cargo bench -p nanoclaw-egress --bench intercept`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nanoclaw_egress::policy::{Policy, Rule};
use nanoclaw_egress::proxy::{GroupProxy, Interception};
use nanoclaw_egress::tls::{Authority, generate_ca, upstream_config};
use nanoclaw_egress::{Credential, Credentials};
use rustls::pki_types::ServerName;

const RUNS: usize = 400;
const VALUE: &str = "bench-secret-value-0123456789";
const PLACEHOLDER: &str = "NANOCLAW_SECRET_TOKEN_0123456789abcdef";

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    upstream_config(&[ca_pem.as_bytes().to_vec()]).expect("client roots")
}

async fn origin(authority: &Authority) -> u16 {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(authority.server_config("localhost").expect("leaf"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let ok = req
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v.as_bytes() == format!("Bearer {VALUE}").as_bytes());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(if ok {
                            "ok"
                        } else {
                            "no"
                        }))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn handshake<S>(io: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("http");
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut Sender, port: u16, auth: &str) {
    let req = Request::builder()
        .uri("/small")
        .header("host", format!("localhost:{port}"))
        .header("authorization", format!("Bearer {auth}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"ok", "the origin did not get the secret");
}

async fn direct(tls: &Arc<rustls::ClientConfig>, port: u16) -> Sender {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let s = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .expect("tls");
    handshake(s).await
}

async fn proxied(sock: &std::path::Path, tls: &Arc<rustls::ClientConfig>, port: u16) -> Sender {
    let unix = tokio::net::UnixStream::connect(sock).await.expect("proxy");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(unix))
        .await
        .expect("http");
    tokio::spawn(conn.with_upgrades());
    let connect = Request::builder()
        .method("CONNECT")
        .uri(format!("localhost:{port}"))
        .body(Full::new(Bytes::new()))
        .expect("connect");
    let resp = sender
        .send_request(connect)
        .await
        .expect("connect response");
    assert!(
        resp.status().is_success(),
        "CONNECT refused: {}",
        resp.status()
    );
    let upgraded = hyper::upgrade::on(resp).await.expect("upgrade");
    let name = ServerName::try_from("localhost").expect("name");
    let s = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, TokioIo::new(upgraded))
        .await
        .expect("tls to the proxy");
    handshake(s).await
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // The origin's CA (trusted upstream as an extra root) and the proxy's local CA.
        let (origin_ca, origin_key) = generate_ca().expect("ca");
        let port = origin(&Authority::load(&origin_key).expect("ca")).await;
        let (local_ca, local_key) = generate_ca().expect("ca");
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("g.sock");
        let credential = Credential {
            name: "TOKEN".into(),
            value: VALUE.into(),
            placeholder: PLACEHOLDER.into(),
            hosts: vec![Rule::parse("localhost", None, false).expect("rule").pattern],
            header: None,
            in_query: false,
            in_body: false,
        };
        let proxy = GroupProxy::new(
            "bench".into(),
            Policy {
                rules: vec![Rule::parse(&format!("localhost:{port}"), None, true).expect("rule")],
            },
            Credentials::new(vec![credential], &["TOKEN".into()]),
            Some(Interception {
                authority: Arc::new(Authority::load(&local_key).expect("local ca")),
                upstream: client_config(&origin_ca),
            }),
            None,
        );
        // One call open for the whole run: the proxy serves nothing outside a call.
        std::mem::forget(proxy.open_call("bench".into(), None));
        nanoclaw_egress::proxy::spawn(&sock, Arc::new(proxy)).expect("proxy");
        let to_origin = client_config(&origin_ca);
        let to_proxy = client_config(&local_ca);

        // Warm up: the leaf is minted and cached on the first intercepted connection.
        for _ in 0..20 {
            get(&mut direct(&to_origin, port).await, port, VALUE).await;
            get(&mut proxied(&sock, &to_proxy, port).await, port, PLACEHOLDER).await;
        }
        let (mut d_fresh, mut p_fresh, mut d_kept, mut p_kept) = (vec![], vec![], vec![], vec![]);
        let mut d_conn = direct(&to_origin, port).await;
        let mut p_conn = proxied(&sock, &to_proxy, port).await;
        for _ in 0..RUNS {
            let t = Instant::now();
            get(&mut direct(&to_origin, port).await, port, VALUE).await;
            d_fresh.push(t.elapsed());
            let t = Instant::now();
            get(&mut proxied(&sock, &to_proxy, port).await, port, PLACEHOLDER).await;
            p_fresh.push(t.elapsed());
            let t = Instant::now();
            get(&mut d_conn, port, VALUE).await;
            d_kept.push(t.elapsed());
            let t = Instant::now();
            get(&mut p_conn, port, PLACEHOLDER).await;
            p_kept.push(t.elapsed());
        }
        for (what, d, p) in [("new connection", d_fresh, p_fresh), ("kept-alive connection", d_kept, p_kept)] {
            let (d50, d90) = percentiles(d);
            let (p50, p90) = percentiles(p);
            println!(
                "{what}: direct p50 {:.3} ms p90 {:.3} ms; intercepted p50 {:.3} ms p90 {:.3} ms; added p50 {:.3} ms",
                d50.as_secs_f64() * 1e3,
                d90.as_secs_f64() * 1e3,
                p50.as_secs_f64() * 1e3,
                p90.as_secs_f64() * 1e3,
                (p50.as_secs_f64() - d50.as_secs_f64()) * 1e3,
            );
        }
    });
}
