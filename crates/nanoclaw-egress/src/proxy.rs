//! The proxy a group's sandbox reaches through its own Unix socket: HTTP/1.1 forward proxying
//! (absolute-form `http://` requests) and `CONNECT` tunnels.
//!
//! For each request, in order: the group's policy must allow the host, port and method; the
//! proxy resolves the name itself; every resolved address is checked (`addr::forbidden`), and
//! the connection goes to exactly the first address that passed. A refusal is a 403 whose body
//! names the rule or the reason. Every request, allowed or not, is recorded.
//!
//! Once the allowlist has let a request through, the tool call's gate ([`crate::gate`]) decides
//! it for the call's turn, and may wait for a human. CONNECT to a host one of the group's
//! secrets is bound to, or one the gate wants opened, is intercepted (see
//! [`crate::intercept`]); every other CONNECT is a plain tunnel. Plain-HTTP requests are scanned
//! for secret values and placeholders like intercepted ones, and never carry a secret.
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

use crate::addr;
use crate::calls::{Budget, CallLease, CallState, CallSummary, Calls, Unattributed};
use crate::credentials::Credentials;
use crate::gate::{EgressGate, Facts, Tunnel};
use crate::handoff::{self, Client};
use crate::policy::{Policy, Refusal, Rule, normalize_host};
use crate::pump;
use crate::tls::Authority;

/// Time allowed to open a connection upstream.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per group, tunnels and intercepted connections included for as
/// long as they last; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// Request bodies scanned for secrets are read whole, up to this size.
pub const SCAN_LIMIT: usize = 32 << 20;
/// Request bodies a group's proxy holds in memory at once to scan them; more wait their turn.
/// With [`SCAN_LIMIT`], this bounds what one sandbox can make the daemon buffer.
const CONCURRENT_SCANS: usize = 4;
/// The longest a request body to be scanned may take to arrive, unless the proxy is built
/// with another ([`GroupProxy::with_body_timeout`]).
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// The stack of a tunnel's splice thread: it calls splice(2) in a loop and needs little.
const PUMP_STACK: usize = 64 * 1024;

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// TLS interception: the local CA and the verified client side toward upstreams.
#[derive(Clone)]
pub struct Interception {
    pub authority: Arc<Authority>,
    pub upstream: Arc<rustls::ClientConfig>,
}

/// What the proxy records: a request, or what a call's requests beyond those recorded in full
/// came to.
pub enum Event<'a> {
    Request(&'a Record<'a>),
    /// The group, and the summary of one of its calls.
    CallSummary(&'a str, &'a CallSummary),
}

/// Receives every egress record (the daemon's audit log).
pub type Recorder = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Everything one group's proxy works from.
pub struct GroupProxy {
    pub group: String,
    /// The allowlist in force; [`GroupProxy::replace_policy`] swaps it. Each request reads it
    /// once. A std RwLock: held only to clone or swap the Arc.
    policy: std::sync::RwLock<Arc<Policy>>,
    /// The secrets in force; [`GroupProxy::replace_credentials`] swaps them. Each request reads
    /// them once. A std RwLock: held only to clone or swap the Arc.
    credentials: std::sync::RwLock<Arc<Credentials>>,
    /// Bumped by every swap: connections that could carry a secret (plain HTTP, intercepted
    /// tunnels) close when it moves, so none outlives the credentials it was served with.
    revocations: tokio::sync::watch::Sender<u64>,
    /// `None` when no secret is in use; then nothing is intercepted.
    pub tls: Option<Interception>,
    pub recorder: Option<Recorder>,
    scans: tokio::sync::Semaphore,
    body_timeout: Duration,
    /// Requests let through so far (tunnels and interceptions included).
    passed: std::sync::atomic::AtomicU64,
    /// The tool calls open now; a connection is served only on behalf of one.
    calls: Arc<Calls>,
    /// Listeners of the host's own that no rule reaches, `private` or not (the daemon's API).
    reserved: Vec<SocketAddr>,
}

/// A tool call the proxy serves connections for, open while this lives. Dropping it cuts the
/// call's connections and records what its coalesced requests came to.
pub struct ProxyCall {
    lease: Option<CallLease>,
    group: String,
    recorder: Option<Recorder>,
}

/// A call was stopped: it made more requests than one call may.
#[derive(Debug, thiserror::Error)]
#[error(
    "the command was stopped: it made more than {} requests through the egress proxy, the most one call may",
    crate::calls::REQUESTS_PER_CALL
)]
pub struct CallStopped;

impl ProxyCall {
    /// Run `work` as this call's, dropping it (which stops a sandboxed command) once the call
    /// has made more requests than one call may.
    pub async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, CallStopped> {
        let exhausted = async {
            match &self.lease {
                Some(lease) => lease.exhausted().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = work => Ok(done),
            () = exhausted => Err(CallStopped),
        }
    }
}

impl Drop for ProxyCall {
    fn drop(&mut self) {
        let summary = self.lease.take().and_then(CallLease::close);
        if let (Some(summary), Some(r)) = (summary, &self.recorder) {
            r(&Event::CallSummary(&self.group, &summary));
        }
    }
}

impl GroupProxy {
    /// The secrets in force now.
    pub fn credentials(&self) -> Arc<Credentials> {
        Arc::clone(&self.credentials.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put `credentials` in force: no request from now on is served with the old ones, and
    /// every open connection that could carry a secret (plain HTTP, intercepted tunnels) is
    /// closed, streaming bodies included. Relayed tunnels carry no secret and stay.
    /// The allowlist in force now.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put a new allowlist in force for every request from now on (a tunnel already open runs
    /// to the end of its tool call).
    pub fn replace_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    pub fn replace_credentials(&self, credentials: Credentials) {
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(credentials);
        self.revocations.send_modify(|n| *n += 1);
    }

    /// Run `work` until it is done, the call ends, or the credentials are replaced.
    pub(crate) async fn until_ended_or_revoked(
        &self,
        call: &CallState,
        work: impl std::future::Future<Output = ()>,
    ) {
        let mut revoked = self.revocations.subscribe();
        tokio::select! {
            () = call.until_ended(work) => {}
            _ = revoked.changed() => {}
        }
    }

    pub fn new(
        group: String,
        policy: Policy,
        credentials: Credentials,
        tls: Option<Interception>,
        recorder: Option<Recorder>,
    ) -> GroupProxy {
        GroupProxy {
            group,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            credentials: std::sync::RwLock::new(Arc::new(credentials)),
            revocations: tokio::sync::watch::Sender::new(0),
            tls,
            recorder,
            scans: tokio::sync::Semaphore::new(CONCURRENT_SCANS),
            body_timeout: BODY_TIMEOUT,
            passed: std::sync::atomic::AtomicU64::new(0),
            calls: Arc::new(Calls::default()),
            reserved: Vec::new(),
        }
    }

    /// The same proxy, never connecting to `listeners` (in any spelling of their address:
    /// IPv4-mapped IPv6, or the unspecified address at their port), whatever a rule allows.
    pub fn never_reaching(mut self, listeners: Vec<SocketAddr>) -> GroupProxy {
        self.reserved = listeners;
        self
    }

    /// Open a tool call: until the returned value is dropped, connections to this proxy are
    /// served as the call's, `tag` names the call in their records, and `gate` decides each
    /// of its requests (without one, the allowlist alone does).
    pub fn open_call(&self, tag: String, gate: Option<Arc<dyn EgressGate>>) -> ProxyCall {
        ProxyCall {
            lease: Some(self.calls.open(tag, gate)),
            group: self.group.clone(),
            recorder: self.recorder.clone(),
        }
    }

    /// The same proxy, giving a request body to be scanned `timeout` to arrive instead of a
    /// minute.
    pub fn with_body_timeout(self, timeout: Duration) -> GroupProxy {
        GroupProxy {
            body_timeout: timeout,
            ..self
        }
    }

    /// How many requests this proxy has let through: a caller comparing two readings knows
    /// whether anything came in from outside in between.
    pub fn requests_passed(&self) -> u64 {
        self.passed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Count it if it let something through, charge it to its call, and unless the call's
    /// budget coalesces it, log it (secret values shown as placeholders: the log is not
    /// redacted downstream, unlike the audit) and hand it to the recorder.
    pub(crate) fn record(&self, record: &Record<'_>) {
        if record.reason.is_none() {
            self.passed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(call) = record.call
            && call.charge(record.decision, record.method, record.host, record.path)
                != Budget::InFull
        {
            return;
        }
        // Every field the sandbox chose may hold a value (the method, a Host header quoted in
        // a refusal's text).
        let credentials = self.credentials();
        let redactor = credentials.response_redactor();
        record.log(
            &redactor.replace_str(record.method),
            &redactor.replace_str(record.host),
            &redactor.replace_str(record.path),
            &redactor.replace_str(&record.reason.map(|r| r.to_string()).unwrap_or_default()),
        );
        if let Some(r) = &self.recorder {
            r(&Event::Request(record));
        }
    }

    /// A connection refused for want of a running call: recorded for the 1st, 2nd, 4th, ...
    fn record_unattributed(&self, total: u64) {
        let refusal = Refusal::NoCall {
            refused_so_far: total,
        };
        self.record(&Record {
            group: &self.group,
            call: None,
            method: "",
            host: "",
            path: "",
            status: 0,
            bytes_out: 0,
            bytes_in: 0,
            secrets: &[],
            decision: "refuse",
            reason: Some(&refusal),
        });
    }
}

/// One line of the egress record: what was asked, what was decided.
pub struct Record<'a> {
    pub group: &'a str,
    /// The tool call the connection belongs to (its `tag` names it), if any.
    pub call: Option<&'a CallState>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes_out: usize,
    pub bytes_in: u64,
    pub secrets: &'a [String],
    pub decision: &'a str,
    pub reason: Option<&'a Refusal>,
}

impl Record<'_> {
    fn log(&self, method: &str, host: &str, path: &str, reason: &str) {
        let secrets = self.secrets.join(",");
        tracing::info!(
            target: "nanoclaw::egress",
            group = self.group,
            method,
            host,
            path,
            status = self.status,
            bytes_out = self.bytes_out,
            bytes_in = self.bytes_in,
            secrets = %secrets,
            decision = self.decision,
            reason = %reason,
            "egress request"
        );
    }
}

/// How a refusal is recorded: placeholders sent astray are exfiltration attempts.
pub(crate) fn decision_of(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Exfiltration { .. } | Refusal::SecretValue { .. } => "exfiltration",
        Refusal::Policy { .. } => "deny",
        _ => "refuse",
    }
}

pub(crate) fn text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
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

pub(crate) fn refused(refusal: &Refusal) -> Response<ProxyBody> {
    let status = match refusal {
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refusal::Unresolved { .. } => StatusCode::BAD_GATEWAY,
        Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::Encoded { .. } => StatusCode::BAD_GATEWAY,
        Refusal::CallBudget { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::FORBIDDEN,
    };
    text_response(status, refusal.to_string())
}

/// Serve one group's socket until the listener fails.
pub async fn serve(listener: UnixListener, proxy: Arc<GroupProxy>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(group = %proxy.group, error = %e, "egress proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // INVARIANT: a connection is served only on behalf of a running tool call.
        let call = match proxy.calls.attribute() {
            Ok(call) => call,
            Err(Unattributed::NoCall { total, record }) => {
                if record {
                    proxy.record_unattributed(total);
                }
                continue;
            }
            Err(Unattributed::Exhausted) => continue,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(group = %proxy.group, "egress proxy at its connection limit; closing one");
            continue;
        };
        // Shared with the tunnels and intercepted connections this connection upgrades to: the
        // slot is free again only when they end too.
        let slot = Arc::new(Conn {
            _permit: permit,
            call,
        });
        let proxy = Arc::clone(&proxy);
        let proxy_for_cut = Arc::clone(&proxy);
        tokio::spawn(async move {
            let ended = Arc::clone(&slot.call);
            let served = async move {
                match handoff::receive(stream).await {
                    Ok(Client::Tcp(tcp)) => serve_connection(tcp, proxy, slot).await,
                    Ok(Client::Direct(direct)) => serve_connection(direct, proxy, slot).await,
                    Err(e) => {
                        tracing::debug!(group = %proxy.group, error = %e, "egress connection refused")
                    }
                }
            };
            // The call's end cuts the connection, whatever it is doing; so does a change of
            // the secrets it could carry.
            let p = Arc::clone(&proxy_for_cut);
            p.until_ended_or_revoked(&ended, served).await;
        });
    }
}

/// What everything serving one accepted connection holds: its connection slot and its call.
pub(crate) struct Conn {
    _permit: tokio::sync::OwnedSemaphorePermit,
    pub(crate) call: Arc<CallState>,
}

/// A connection slot, held by everything serving one accepted connection.
type Slot = Arc<Conn>;

async fn serve_connection<I>(io: I, proxy: Arc<GroupProxy>, slot: Slot)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (proxy, slot) = (Arc::clone(&proxy), Arc::clone(&slot));
        async move { Ok::<_, Infallible>(handle(&proxy, req, slot).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "egress connection ended with an error");
    }
}

/// Bind a group's socket at `path` (replacing a stale one) and serve it on a new task.
pub fn spawn(path: &Path, proxy: Arc<GroupProxy>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    Ok(tokio::spawn(serve(listener, proxy)))
}

async fn handle(
    proxy: &Arc<GroupProxy>,
    req: Request<Incoming>,
    slot: Slot,
) -> Response<ProxyBody> {
    let method = req.method().clone();
    let target = req.uri().to_string();
    let call = Arc::clone(&slot.call);
    let result = match call.within_budget() {
        Err(refusal) => Err(refusal),
        Ok(()) if method == Method::CONNECT => tunnel(proxy, req, slot).await,
        Ok(()) => forward(proxy, &call, req).await,
    };
    let (response, host, secrets, bytes_out, decision, reason) = match result {
        Ok(f) => (f.response, f.host, f.secrets, f.bytes_out, f.decision, None),
        Err(refusal) => (
            refused(&refusal),
            String::new(),
            Vec::new(),
            0,
            decision_of(&refusal),
            Some(refusal),
        ),
    };
    proxy.record(&Record {
        group: &proxy.group,
        call: Some(&call),
        method: method.as_str(),
        host: &host,
        path: &target,
        status: response.status().as_u16(),
        bytes_out,
        bytes_in: hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0),
        secrets: &secrets,
        decision,
        reason: reason.as_ref(),
    });
    response
}

/// A request the proxy let through, for the record.
struct Forwarded {
    response: Response<ProxyBody>,
    host: String,
    secrets: Vec<String>,
    bytes_out: usize,
    decision: &'static str,
}

/// Split an authority into host and port; IPv6 literals keep their brackets.
pub(crate) fn host_port(authority: &str, default_port: u16) -> Result<(String, u16), Refusal> {
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

/// Resolve `host` and pick the first address the rule may reach (never one of `reserved`).
pub(crate) async fn resolve(
    rule: &Rule,
    host: &str,
    port: u16,
    reserved: &[SocketAddr],
) -> Result<SocketAddr, Refusal> {
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
        } else if reserved.iter().any(|r| addr::reaches_listener(*a, *r)) {
            Some("nanoclaw's own API")
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

pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, Refusal> {
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

/// `CONNECT host:port`: check and resolve; then either intercept (a secret of this group is
/// bound to the host) or connect and relay bytes both ways untouched.
async fn tunnel(
    proxy: &Arc<GroupProxy>,
    req: Request<Incoming>,
    slot: Slot,
) -> Result<Forwarded, Refusal> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| Refusal::BadRequest("CONNECT without host:port".into()))?;
    // Before the name is looked up: a lookup of `<secret>.allowed.example` would carry it out.
    let credentials = proxy.credentials();
    credentials.check_target("CONNECT", &authority)?;
    let (host, port) = host_port(&authority, 443)?;
    let host = normalize_host(&host);
    // One allowlist for the whole request, whatever a reload does meanwhile.
    let policy = proxy.policy();
    let rule = policy.allow(&host, port, "CONNECT")?;
    let mode = slot.call.tunnel(&host, port).await?;
    let addr = resolve(rule, &host, port, &proxy.reserved).await?;
    let ok = || {
        Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        )
    };
    if credentials.intercepts(&host) || mode == Tunnel::Inspect {
        let tls = proxy.tls.as_ref().ok_or_else(|| {
            Refusal::BadRequest(format!(
                "the proxy must open the tunnel to {host} (a secret is bound to it, or the policy decides each request) but has no CA to do it with"
            ))
        })?;
        let server = tls
            .authority
            .server_config(&host)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let proxy = Arc::clone(proxy);
        let target = crate::intercept::Target {
            host: host.clone(),
            port,
            addr,
        };
        let cut = Arc::clone(&proxy);
        tokio::spawn(async move {
            let call = Arc::clone(&slot.call);
            let served = async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => {
                        crate::intercept::serve(proxy, upgraded, server, target, slot).await
                    }
                    Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                }
            };
            cut.until_ended_or_revoked(&call, served).await;
        });
        return Ok(Forwarded {
            response: ok(),
            host,
            secrets: Vec::new(),
            bytes_out: 0,
            decision: "intercept",
        });
    }
    let upstream = connect(addr).await?;
    tokio::spawn(async move {
        let call = Arc::clone(&slot.call);
        let _slot = slot;
        let served = async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => relay_tunnel(upgraded, upstream, addr).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        };
        call.until_ended(served).await;
    });
    Ok(Forwarded {
        response: ok(),
        host,
        secrets: Vec::new(),
        bytes_out: 0,
        decision: "allow",
    })
}

/// Move a tunnel's bytes until both sides are done. When the client is a handed-off TCP
/// connection (a sandbox's), both directions are spliced in the kernel on threads of their own
/// (not tokio's blocking pool, which name lookups need; the connection limit bounds them);
/// otherwise they are copied.
async fn relay_tunnel(
    upgraded: hyper::upgrade::Upgraded,
    mut upstream: TcpStream,
    addr: SocketAddr,
) {
    use tokio::io::AsyncWriteExt;
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(upgraded) => {
            let mut client = TokioIo::new(upgraded);
            let r = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut upstream,
                pump::COPY_CHUNK,
                pump::COPY_CHUNK,
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
    let Ok(upstream_shut) = upstream.try_clone() else {
        return;
    };
    // The pumps block in the kernel, on threads no future's drop reaches: when this tunnel is
    // dropped (its call ended) or done, both sockets are shut, which ends them.
    let (Ok(client_cut), Ok(upstream_cut)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let _cut = ShutOnDrop([client_cut, upstream_cut]);
    let down = pump_thread(move || {
        pump::pump(upstream_r, client_w);
        let _ = client_shut.shutdown(std::net::Shutdown::Write);
    });
    let up = pump_thread(move || {
        pump::pump(client, upstream);
        let _ = upstream_shut.shutdown(std::net::Shutdown::Write);
    });
    let _ = tokio::join!(up, down);
    tracing::debug!(target: "nanoclaw::egress", %addr, "tunnel closed");
}

/// Shuts both directions of its sockets when dropped.
struct ShutOnDrop([std::net::TcpStream; 2]);

impl Drop for ShutOnDrop {
    fn drop(&mut self) {
        for socket in &self.0 {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Run `work` on a new thread; the receiver completes when it is done (or could not start).
fn pump_thread(work: impl FnOnce() + Send + 'static) -> tokio::sync::oneshot::Receiver<()> {
    let (done, finished) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new()
        .name("tunnel".into())
        .stack_size(PUMP_STACK)
        .spawn(move || {
            work();
            let _ = done.send(());
        });
    if let Err(e) = started {
        // `done` was dropped with the closure: the receiver completes at once.
        tracing::warn!(target: "nanoclaw::egress", error = %e, "could not start a tunnel thread");
    }
    finished
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
    proxy: &Arc<GroupProxy>,
    call: &CallState,
    req: Request<Incoming>,
) -> Result<Forwarded, Refusal> {
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
    // Before the name is looked up: a lookup of `<secret>.allowed.example` would carry it out.
    let credentials = proxy.credentials();
    credentials.check_target(req.method().as_str(), &authority)?;
    let (host, port) = host_port(&authority, 80)?;
    let host = normalize_host(&host);
    check_host(&host, port, &req)?;
    let policy = proxy.policy();
    let rule = policy.allow(&host, port, req.method().as_str())?;
    call.admit(&Facts::of("http", &host, port, &req, &credentials))
        .await?;
    let addr = resolve(rule, &host, port, &proxy.reserved).await?;
    let (req, secrets, bytes_out) = outbound(proxy, &host, &authority, false, req).await?;
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
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Refusal::Unresolved {
            host: host.clone(),
            error: format!("upstream request failed: {e}"),
        })?;
    Ok(Forwarded {
        response: inbound(&credentials, resp),
        host,
        secrets,
        bytes_out,
        decision: "allow",
    })
}

/// Every Host header of a request, and its absolute-form authority if it has one, must name
/// the host (and port) it is sent to: a front end that routes by Host would otherwise take a
/// request checked for one host (and carrying that host's secret) to another.
pub(crate) fn check_host(host: &str, port: u16, req: &Request<Incoming>) -> Result<(), Refusal> {
    let mismatch = |named: String| Refusal::HostMismatch {
        connect: format!("{host}:{port}"),
        host: named,
    };
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let headers = req.headers().get_all(hyper::header::HOST).iter().map(|h| {
        h.to_str()
            .map(str::to_owned)
            .map_err(|_| mismatch(String::from_utf8_lossy(h.as_bytes()).into_owned()))
    });
    for named in authority.into_iter().map(Ok).chain(headers) {
        let named = named?;
        let (name, named_port) = host_port(&named, port)?;
        if normalize_host(&name) != host || named_port != port {
            return Err(mismatch(named));
        }
    }
    Ok(())
}

/// Make a request from the sandbox ready for its upstream: origin-form target, no hop-by-hop
/// headers, Host set to the host it goes to; and, when the daemon holds secrets, the body read
/// whole and the request checked and prepared by [`Credentials::prepare`]. On an intercepted
/// connection (`tls`) the response is asked for unencoded, so it can be redacted. Returns the
/// request, the names of the secrets injected and the body's size when known.
pub(crate) async fn outbound(
    proxy: &GroupProxy,
    host: &str,
    authority: &str,
    tls: bool,
    req: Request<Incoming>,
) -> Result<(Request<ProxyBody>, Vec<String>, usize), Refusal> {
    let credentials = proxy.credentials();
    let credentials = &*credentials;
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
    // `check_host` found every Host equal to this; one, in the form upstream expects.
    let host_header = authority
        .parse()
        .map_err(|_| Refusal::BadRequest(format!("bad host {authority:?}")))?;
    parts.headers.insert(hyper::header::HOST, host_header);
    if tls {
        parts.headers.insert(
            hyper::header::ACCEPT_ENCODING,
            hyper::header::HeaderValue::from_static("identity"),
        );
    }
    if credentials.is_empty() {
        let size = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
        return Ok((
            Request::from_parts(parts, body.boxed()),
            Vec::new(),
            usize::try_from(size).unwrap_or(usize::MAX),
        ));
    }
    // Waits while this group's proxy already holds CONCURRENT_SCANS bodies.
    let _scan = proxy
        .scans
        .acquire()
        .await
        .map_err(|_| Refusal::BadRequest("the proxy is shutting down".into()))?;
    // Bounded in time too: a body that stalls would hold one of the few scan places.
    let collected = tokio::time::timeout(
        proxy.body_timeout,
        http_body_util::Limited::new(body, SCAN_LIMIT).collect(),
    )
    .await
    .map_err(|_| {
        Refusal::BadRequest(format!(
            "the request body did not arrive within {:?}",
            proxy.body_timeout
        ))
    })?;
    let mut bytes: Vec<u8> = collected
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Refusal::TooLarge { limit: SCAN_LIMIT }
            } else {
                Refusal::BadRequest(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes()
        .into();
    let secrets = credentials.prepare(host, tls, &mut parts, &mut bytes)?;
    let len = bytes.len();
    if parts.headers.contains_key(hyper::header::CONTENT_LENGTH) || len > 0 {
        parts.headers.insert(
            hyper::header::CONTENT_LENGTH,
            hyper::header::HeaderValue::from(len),
        );
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    }
    let body = Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed();
    Ok((Request::from_parts(parts, body), secrets, len))
}

/// A response on its way back into the sandbox: hop-by-hop headers dropped and, when the
/// daemon holds secrets, any secret value in the body replaced by its placeholder (the length
/// then changes, so the body goes out chunked).
pub(crate) fn inbound(credentials: &Credentials, resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    // A header whose name carries a value cannot be rewritten into a valid one: it is dropped.
    let leaking: Vec<hyper::header::HeaderName> = parts
        .headers
        .keys()
        .filter(|name| credentials.carries_value(name.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in leaking {
        parts.headers.remove(name);
    }
    let redactor = credentials.response_redactor();
    for value in parts.headers.values_mut() {
        if redactor.contains(value.as_bytes())
            && let Ok(v) =
                hyper::header::HeaderValue::from_bytes(&redactor.replace(value.as_bytes()))
        {
            *value = v;
        }
    }
    if redactor.is_empty() || hyper::body::Body::is_end_stream(&body) {
        return Response::from_parts(parts, body.boxed());
    }
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    let body = Redacting {
        inner: body,
        stream: redactor.stream(),
        done: false,
    };
    Response::from_parts(parts, body.boxed())
}

/// A response body with secret values replaced as it streams.
struct Redacting {
    inner: Incoming,
    stream: nanoclaw_core::secret::StreamReplacer,
    done: bool,
}

impl hyper::body::Body for Redacting {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let out = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.stream.push(&data),
                    // Trailers are dropped: what is held back goes out as the last data.
                    Err(_) => continue,
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    this.stream.finish()
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(out)))));
            }
        }
    }
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
