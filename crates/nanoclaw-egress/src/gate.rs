//! The policy's word on each request: what the proxy reads off a request (does it send data
//! out?) and the gate a tool call brings, which decides the request for that call's turn.
//!
//! The proxy decides nothing here itself. It reads the facts once ([`Facts::of`]), asks the
//! call's [`EgressGate`], and refuses what the gate refuses. The gate may wait for a human's
//! approval; the request waits with it, and the call's end cuts both.
//!
//! What this module must never do: call a request reading-only when any part the sandbox
//! chose beyond the host, a short path and the plain reading headers could carry data.

use std::future::Future;
use std::pin::Pin;

use hyper::Request;
use hyper::body::Incoming;
use nanoclaw_core::egress_rules::{EgressRequest, reads_only};

use crate::credentials::Credentials;

/// Headers a plain read sends, whose (short) values say how to read, not what to say.
const READING_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "connection",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "pragma",
    "proxy-connection",
    "range",
    "te",
    "user-agent",
];
/// A reading header's value longer than this counts as data.
const READING_VALUE_MAX: usize = 256;
/// A path longer than this counts as data.
const PATH_MAX: usize = 512;

/// What the policy is told about one request, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The whole URL, for a person who must approve it: secret values in it shown as their
    /// placeholders.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub method: String,
    pub path: String,
    pub query: bool,
    pub body: bool,
    pub sends: bool,
}

impl Facts {
    /// Read `req`, bound for `host:port` (checked already) over `scheme`. A header whose
    /// value is only a credential's placeholder (what the proxy will inject) is not data.
    pub fn of(
        scheme: &str,
        host: &str,
        port: u16,
        req: &Request<Incoming>,
        credentials: &Credentials,
    ) -> Facts {
        let method = req.method().as_str().to_owned();
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = credentials
            .response_redactor()
            .replace_str(&format!("{scheme}://{authority}{target}"));
        let path = req.uri().path().to_owned();
        let query = req.uri().query().is_some_and(|q| !q.is_empty());
        let body = !hyper::body::Body::is_end_stream(req.body());
        let data_header = req.headers().iter().any(|(name, value)| {
            let reading = READING_HEADERS.contains(&name.as_str());
            if reading {
                value.len() > READING_VALUE_MAX
            } else {
                !credentials.only_placeholders(value.as_bytes())
            }
        });
        let sends = !reads_only(&method) || query || body || data_header || path.len() > PATH_MAX;
        Facts {
            url,
            host: host.to_owned(),
            port,
            method,
            path,
            query,
            body,
            sends,
        }
    }

    /// The form the policy engine takes.
    pub fn request(&self) -> EgressRequest<'_> {
        EgressRequest {
            host: &self.host,
            port: self.port,
            method: &self.method,
            path: &self.path,
            query: self.query,
            body: self.body,
            sends: self.sends,
        }
    }
}

/// How a tunnel is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// Bytes relayed untouched.
    Relay,
    /// Opened (TLS ended with the local CA) so that each request inside is decided.
    Inspect,
}

/// A gate's answer: `Err` holds why the request was refused, for the 403 and the record.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The policy as one tool call's turn sees it. The daemon implements it per call; a call
/// opened without one (the owner's own `sandbox exec`) is held to the allowlist alone.
pub trait EgressGate: Send + Sync {
    /// A `CONNECT` to `host:port` the allowlist let through.
    fn tunnel<'a>(&'a self, host: &'a str, port: u16) -> Answer<'a, Tunnel>;
    /// One request the allowlist let through.
    fn request<'a>(&'a self, facts: &'a Facts) -> Answer<'a, ()>;
}
