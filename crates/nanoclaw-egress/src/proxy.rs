//! The proxy a group's sandbox reaches through its own Unix socket: HTTP/1.1 forward proxying
//! (absolute-form `http://` requests) and `CONNECT` tunnels.
//!
//! For each request, in order: the group's policy must allow the host, port and method; the
//! proxy resolves the name itself; every resolved address is checked (`addr::forbidden`), and
//! the connection goes to exactly the first address that passed. A refusal is a 403 whose body
//! names the rule or the reason. Every request, allowed or not, is recorded.
//!
//! The group is known from the socket the request came in on, never from anything the sandbox
//! says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixListener};

#[path = "../../shared/pump.rs"]
mod pump;

use crate::addr;
use crate::policy::{Policy, Refusal, Rule, normalize_host};

/// Time allowed to open a connection upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(text + "\n"))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn refused(refusal: &Refusal) -> Response<ProxyBody> {
    let status = match refusal {
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Unresolved { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::FORBIDDEN,
    };
    text_response(status, refusal.to_string())
}

/// Serve one group's socket until the listener fails.
pub async fn serve(listener: UnixListener, group: String, policy: Arc<Policy>) {
    let group: Arc<str> = group.into();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(%group, error = %e, "egress proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (group, policy) = (Arc::clone(&group), Arc::clone(&policy));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (group, policy) = (Arc::clone(&group), Arc::clone(&policy));
                async move { Ok::<_, Infallible>(handle(&group, &policy, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "egress connection ended with an error");
            }
        });
    }
}

/// Bind a group's socket at `path` (replacing a stale one) and serve it on a new task.
pub fn spawn(
    path: &Path,
    group: String,
    policy: Arc<Policy>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    Ok(tokio::spawn(serve(listener, group, policy)))
}

async fn handle(group: &str, policy: &Policy, req: Request<Incoming>) -> Response<ProxyBody> {
    let method = req.method().clone();
    let target = req.uri().to_string();
    let result = if method == Method::CONNECT {
        tunnel(policy, req).await
    } else {
        forward(policy, req).await
    };
    match result {
        Ok((resp, host)) => {
            tracing::info!(target: "nanoclaw::egress", group, %method, %host, %target, status = resp.status().as_u16(), decision = "allow", "egress request");
            resp
        }
        Err(refusal) => {
            tracing::info!(target: "nanoclaw::egress", group, %method, %target, decision = "refuse", reason = %refusal, "egress request");
            refused(&refusal)
        }
    }
}

/// Split an authority into host and port; IPv6 literals keep their brackets off.
fn host_port(authority: &str, default_port: u16) -> Result<(String, u16), Refusal> {
    let bad = || Refusal::BadRequest(format!("bad host {authority:?}"));
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok((format!("[{host}]"), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), p.parse().map_err(|_| bad())?)),
        None => Ok((authority.to_owned(), default_port)),
    }
}

/// Resolve `host` and pick the first address the rule may reach.
async fn resolve(rule: &Rule, host: &str, port: u16) -> Result<SocketAddr, Refusal> {
    let name = normalize_host(host);
    let lookup = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup.as_str(), port))
        .await
        .map_err(|e| Refusal::Unresolved {
            host: name.clone(),
            error: e.to_string(),
        })?
        .collect();
    let mut first_refusal = None;
    for a in &addrs {
        let ip = a.ip();
        let why = if addr::is_metadata(ip) {
            Some("a cloud metadata address")
        } else if rule.private {
            None
        } else {
            addr::forbidden(ip)
        };
        match why {
            None => return Ok(*a),
            Some(why) => {
                first_refusal.get_or_insert(Refusal::Address {
                    host: name.clone(),
                    addr: ip.to_string(),
                    why,
                    rule: rule.text.clone(),
                });
            }
        }
    }
    Err(first_refusal.unwrap_or(Refusal::Unresolved {
        host: name,
        error: "no addresses".into(),
    }))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Refusal> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Refusal::Unresolved {
            host: addr.to_string(),
            error: format!("connect failed: {e}"),
        }),
        Err(_) => Err(Refusal::Unresolved {
            host: addr.to_string(),
            error: "connect timed out".into(),
        }),
    }
}

/// `CONNECT host:port`: check, connect, answer 200, then relay bytes both ways.
async fn tunnel(
    policy: &Policy,
    req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, String), Refusal> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| Refusal::BadRequest("CONNECT without host:port".into()))?;
    let (host, port) = host_port(&authority, 443)?;
    let rule = policy.allow(&host, port, "CONNECT")?;
    let addr = resolve(rule, &host, port).await?;
    let upstream = connect(addr).await?;
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => relay_tunnel(upgraded, upstream, addr).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Ok((
        Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        ),
        host,
    ))
}

/// Move a tunnel's bytes until both sides are done. When the client side is still the plain
/// Unix socket (always, for this server), both directions are spliced in the kernel on
/// blocking threads; otherwise they are copied.
async fn relay_tunnel(
    upgraded: hyper::upgrade::Upgraded,
    mut upstream: TcpStream,
    addr: SocketAddr,
) {
    use tokio::io::AsyncWriteExt;
    let parts = match upgraded.downcast::<TokioIo<tokio::net::UnixStream>>() {
        Ok(parts) => parts,
        Err(upgraded) => {
            let mut client = TokioIo::new(upgraded);
            let r = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut upstream,
                pump::CHUNK,
                pump::CHUNK,
            )
            .await;
            tracing::debug!(target: "nanoclaw::egress", %addr, result = ?r, "tunnel closed");
            return;
        }
    };
    // Bytes the client sent right after the CONNECT head are already read: send them first.
    if !parts.read_buf.is_empty() && upstream.write_all(&parts.read_buf).await.is_err() {
        return;
    }
    let blocking = |s: std::io::Result<()>| s.is_ok();
    let client = parts.io.into_inner().into_std();
    let upstream = upstream.into_std();
    let (Ok(client), Ok(upstream)) = (client, upstream) else {
        return;
    };
    if !blocking(client.set_nonblocking(false)) || !blocking(upstream.set_nonblocking(false)) {
        return;
    }
    let clones = (client.try_clone(), client.try_clone(), upstream.try_clone());
    let (Ok(client_w), Ok(client_shut), Ok(upstream_r)) = clones else {
        return;
    };
    let down = tokio::task::spawn_blocking(move || {
        pump::pump(upstream_r, client_w);
        let _ = client_shut.shutdown(std::net::Shutdown::Write);
    });
    let Ok(upstream_shut) = upstream.try_clone() else {
        return;
    };
    let up = tokio::task::spawn_blocking(move || {
        pump::pump(client, upstream);
        let _ = upstream_shut.shutdown(std::net::Shutdown::Write);
    });
    let _ = tokio::join!(up, down);
    tracing::debug!(target: "nanoclaw::egress", %addr, "tunnel closed");
}

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

/// An absolute-form `http://` request: check, connect, send it on in origin form.
async fn forward(
    policy: &Policy,
    req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, String), Refusal> {
    let uri = req.uri().clone();
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(Refusal::BadRequest(format!(
                "scheme {other:?} must go through CONNECT"
            )));
        }
        None => {
            return Err(Refusal::BadRequest(
                "not a proxy request (the target must be an absolute http:// URL)".into(),
            ));
        }
    }
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| Refusal::BadRequest("no host in the URL".into()))?;
    let (host, port) = host_port(&authority, 80)?;
    let rule = policy.allow(&host, port, req.method().as_str())?;
    let addr = resolve(rule, &host, port).await?;
    let stream = connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Refusal::Unresolved {
            host: host.clone(),
            error: format!("HTTP handshake: {e}"),
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = path
        .parse()
        .map_err(|_| Refusal::BadRequest("bad path".into()))?;
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    if !parts.headers.contains_key(hyper::header::HOST)
        && let Ok(v) = authority.parse()
    {
        parts.headers.insert(hyper::header::HOST, v);
    }
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| Refusal::Unresolved {
            host: host.clone(),
            error: format!("upstream request failed: {e}"),
        })?;
    let (mut parts, body) = resp.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    Ok((Response::from_parts(parts, body.boxed()), host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split() {
        assert_eq!(
            host_port("example.com:8443", 443).unwrap(),
            ("example.com".into(), 8443)
        );
        assert_eq!(
            host_port("example.com", 443).unwrap(),
            ("example.com".into(), 443)
        );
        assert_eq!(host_port("[::1]:80", 443).unwrap(), ("[::1]".into(), 80));
        assert_eq!(host_port("[::1]", 443).unwrap(), ("[::1]".into(), 443));
        assert!(host_port("[::1", 443).is_err());
        assert!(host_port("x:notaport", 443).is_err());
    }
}
