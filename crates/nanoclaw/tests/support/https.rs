//! Local HTTPS origins behind a test CA (trusted by nanoclaw through `[egress] extra_roots`,
//! never by the sandbox): an echo that records what arrived, redirects, an HTML page, and a
//! git smart-HTTP server (`git http-backend` as CGI) that demands a bearer token.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The test CA: its certificate in a file (for `extra_roots`), its key minting server leaves.
pub struct TestCa {
    pub cert_file: PathBuf,
    authority: nanoclaw_egress::tls::Authority,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let (cert, key) = nanoclaw_egress::tls::generate_ca().expect("test CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_file = dir.path().join("test-ca.pem");
        std::fs::write(&cert_file, cert).expect("write test CA");
        TestCa {
            cert_file,
            authority: nanoclaw_egress::tls::Authority::load(&key).expect("load test CA"),
            _dir: dir,
        }
    }
}

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Origin {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Config {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The bearer token `/git/` demands.
    git_token: Option<String>,
    git_root: Option<PathBuf>,
}

impl Origin {
    /// Serve HTTPS on 127.0.0.1 with a leaf for `host` from `ca`. `git` = (repositories root,
    /// the token `/git/` demands).
    pub async fn start(ca: &TestCa, host: &str, git: Option<(&Path, &str)>) -> Origin {
        let server = ca.authority.server_config(host).expect("leaf");
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let config = Arc::new(Config {
            seen: Arc::clone(&seen),
            git_token: git.map(|(_, t)| t.to_owned()),
            git_root: git.map(|(p, _)| p.to_owned()),
        });
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, config) = (acceptor.clone(), Arc::clone(&config));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let config = Arc::clone(&config);
                        async move { Ok::<_, Infallible>(respond(&config, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Origin { port, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

async fn respond(config: &Config, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let seen = Seen {
        method,
        path: path.clone(),
        headers,
        body,
    };
    config.seen.lock().unwrap().push(seen.clone());
    if let Some(to) = path.strip_prefix("/redirect?to=") {
        return Response::builder()
            .status(302)
            .header("location", to)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    if path == "/page" {
        return reply(
            200,
            "text/html; charset=utf-8",
            "<html><head><title>Test page</title><script>var hidden = 1;</script></head>\
<body><h1>Hello &amp; welcome</h1><p>The answer is 42.</p></body></html>",
        );
    }
    if path == "/gzip" {
        // Compressed whatever the request asked for, as some servers do.
        return Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from_static(b"\x1f\x8b not really gzip")))
            .unwrap();
    }
    if path.starts_with("/git/") {
        return git(config, &seen).await;
    }
    // The echo: what arrived, as text (the proxy must redact any secret value in it).
    let mut text = format!("{} {}\n", seen.method, seen.path);
    for (k, v) in &seen.headers {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text.push_str(&format!("\n{}", String::from_utf8_lossy(&seen.body)));
    reply(200, "text/plain", text)
}

/// `git http-backend` as CGI, behind a bearer token.
async fn git(config: &Config, seen: &Seen) -> Response<Full<Bytes>> {
    let (Some(root), Some(token)) = (&config.git_root, &config.git_token) else {
        return reply(404, "text/plain", "no git here");
    };
    if seen.header("authorization") != Some(&format!("Bearer {token}")) {
        return Response::builder()
            .status(401)
            .header("www-authenticate", "Bearer realm=\"git\"")
            .body(Full::new(Bytes::from("token required")))
            .unwrap();
    }
    let rest = &seen.path["/git".len()..];
    let (path_info, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &seen.method)
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", seen.body.len().to_string())
        .env("CONTENT_TYPE", seen.header("content-type").unwrap_or(""))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    if let Some(p) = seen.header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut child = cmd.spawn().expect("git http-backend");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&seen.body).await.unwrap();
    }
    let out = child
        .wait_with_output()
        .await
        .expect("git http-backend output");
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, 2))
        })
        .expect("CGI headers");
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let mut resp = Response::builder().status(200);
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v
                .trim()
                .split(' ')
                .next()
                .unwrap_or("200")
                .parse()
                .unwrap_or(200);
            resp = resp.status(code);
        } else {
            resp = resp.header(k.trim(), v.trim());
        }
    }
    resp.body(Full::new(Bytes::from(
        out.stdout[split.0 + split.1..].to_vec(),
    )))
    .unwrap()
}

/// A TLS front on 127.0.0.1 with a leaf for `host` from `ca`, passing each connection's
/// plaintext to the plain-HTTP server on `backend`; returns its port.
#[allow(dead_code)]
pub async fn tls_front(ca: &TestCa, host: &str, backend: u16) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.authority.server_config(host).expect("leaf"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}
