//! An intercepted CONNECT: the proxy ends the sandbox's TLS with a leaf from the local CA,
//! reads each HTTP/1.1 request, checks and prepares it (method rules, Host, secrets), and sends
//! it on over verified TLS to exactly the address checked at CONNECT time.
//!
//! Hosts a group's secret is bound to come here, and tunnels the call's gate wants opened to
//! decide each request inside. A request naming another host on the
//! same connection (in its target or any Host header) is refused, so a connection opened to a
//! bound host cannot carry requests for another. Responses are asked for unencoded and
//! refused if they come encoded anyway: a compressed body could not be redacted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::ServerName;

use crate::gate::Facts;
use crate::policy::Refusal;
use crate::proxy::{
    CONNECT_TIMEOUT, GroupProxy, ProxyBody, Record, check_host, connect, decision_of, inbound,
    outbound, refused,
};

/// Where an intercepted connection goes: the name (for SNI, Host and the certificate) and the
/// address checked for it.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

/// The upstream side of one intercepted connection, opened on the first request and again
/// whenever the upstream closed it.
struct Upstream {
    target: Target,
    sender: tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
}

impl Upstream {
    async fn open(
        &self,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<SendRequest<ProxyBody>, Refusal> {
        let fail = |what: &str, e: &dyn std::fmt::Display| Refusal::Unresolved {
            host: self.target.host.clone(),
            error: format!("{what}: {e}"),
        };
        let tcp = connect(self.target.addr).await?;
        let name = self
            .target
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = ServerName::try_from(name).map_err(|e| fail("server name", &e))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| fail("TLS handshake", &"timed out"))?
        .map_err(|e| {
            fail(
                "TLS handshake (upstream certificate verified against the trusted roots)",
                &e,
            )
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail("HTTP handshake", &e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn send(
        &self,
        config: &Arc<rustls::ClientConfig>,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Refusal> {
        let mut guard = self.sender.lock().await;
        let reusable = match guard.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *guard = Some(self.open(config).await?);
        }
        let Some(sender) = guard.as_mut() else {
            return Err(Refusal::BadRequest("no upstream connection".into()));
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| Refusal::Unresolved {
                host: self.target.host.clone(),
                error: format!("upstream request failed: {e}"),
            })
    }
}

/// Serve one intercepted connection until the sandbox closes it.
pub(crate) async fn serve(
    proxy: Arc<GroupProxy>,
    upgraded: Upgraded,
    server: Arc<ServerConfig>,
    target: Target,
    conn: Arc<crate::proxy::Conn>,
) {
    let host = target.host.clone();
    let tls = match tokio_rustls::TlsAcceptor::from(server)
        .accept(TokioIo::new(upgraded))
        .await
    {
        Ok(tls) => tls,
        Err(e) => {
            // Most often the client does not trust the local CA.
            tracing::info!(target: "nanoclaw::egress", group = %proxy.group, %host, error = %e, "intercepted TLS handshake failed");
            return;
        }
    };
    let upstream = Arc::new(Upstream {
        target,
        sender: tokio::sync::Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |req| {
        let (proxy, upstream, conn) =
            (Arc::clone(&proxy), Arc::clone(&upstream), Arc::clone(&conn));
        async move { Ok::<_, Infallible>(handle(&proxy, &upstream, &conn.call, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(error = %e, %host, "intercepted connection ended with an error");
    }
}

async fn handle(
    proxy: &GroupProxy,
    upstream: &Upstream,
    call: &crate::calls::CallState,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let host = upstream.target.host.clone();
    let mut secrets = Vec::new();
    let mut bytes_out = 0;
    // Read once: the whole request is served with the credentials in force as it came in.
    let credentials = proxy.credentials();
    let result = async {
        call.within_budget()?;
        let authority = if upstream.target.port == 443 {
            host.clone()
        } else {
            format!("{host}:{}", upstream.target.port)
        };
        credentials.check_target(method.as_str(), &authority)?;
        check_host(&host, upstream.target.port, &req)?;
        proxy
            .policy()
            .allow(&host, upstream.target.port, method.as_str())?;
        call.admit(&Facts::of(
            "https",
            &host,
            upstream.target.port,
            &req,
            &credentials,
        ))
        .await?;
        let Some(tls) = proxy.tls.as_ref() else {
            return Err(Refusal::BadRequest("interception is not configured".into()));
        };
        let (req, names, size) = outbound(proxy, &host, &authority, true, req).await?;
        secrets = names;
        bytes_out = size;
        let response = upstream.send(&tls.upstream, req).await?;
        check_unencoded(&host, &response)?;
        Ok(response)
    }
    .await;
    let (response, reason) = match result {
        Ok(resp) => (inbound(&credentials, resp), None),
        Err(refusal) => (refused(&refusal), Some(refusal)),
    };
    proxy.record(&Record {
        group: &proxy.group,
        call: Some(call),
        method: method.as_str(),
        host: &host,
        path: &path,
        status: response.status().as_u16(),
        bytes_out,
        bytes_in: hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0),
        secrets: &secrets,
        decision: reason.as_ref().map_or("allow", decision_of),
        reason: reason.as_ref(),
    });
    response
}

/// A bound host's response must come unencoded (the request asked for `identity`): secret
/// values in a compressed body would reach the sandbox unredacted.
fn check_unencoded(host: &str, response: &Response<Incoming>) -> Result<(), Refusal> {
    for value in response.headers().get_all(hyper::header::CONTENT_ENCODING) {
        let encoding = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if !encoding.trim().eq_ignore_ascii_case("identity") {
            return Err(Refusal::Encoded {
                host: host.to_owned(),
                encoding,
            });
        }
    }
    Ok(())
}
