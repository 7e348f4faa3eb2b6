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

use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Uri};
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
/// Reading headers together: more of them, or more bytes of their values, count as data.
const READING_HEADERS_MAX: usize = 16;
const READING_BYTES_MAX: usize = 1024;

/// What the policy is told about one request, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The whole URL, for a person who must approve it: secret values in it shown as their
    /// placeholders.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub method: String,
    /// Normalized ([`normalize_path`]), without the query: what a rule's `path` is held to.
    pub path: String,
    pub query: bool,
    pub body: bool,
    pub sends: bool,
}

impl Facts {
    /// Read `req`, bound for `host:port` (checked already) over `scheme`.
    pub fn of(
        scheme: &str,
        host: &str,
        port: u16,
        req: &Request<Incoming>,
        credentials: &Credentials,
    ) -> Facts {
        let body = !hyper::body::Body::is_end_stream(req.body());
        Facts::from_parts(
            scheme,
            host,
            port,
            req.method().as_str(),
            req.uri(),
            req.headers(),
            body,
            credentials,
        )
    }

    /// The facts of a request given in parts (what `nanoclaw policy check-egress` is told). A
    /// header whose value is only a credential's placeholder (what the proxy will inject) is
    /// not data.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        scheme: &str,
        host: &str,
        port: u16,
        method: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: bool,
        credentials: &Credentials,
    ) -> Facts {
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let url = credentials
            .response_redactor()
            .replace_str(&format!("{scheme}://{authority}{target}"));
        let raw_path = uri.path();
        let path = normalize_path(raw_path);
        let query = uri.query().is_some_and(|q| !q.is_empty());
        let (mut reading, mut reading_bytes) = (0, 0);
        let data_header = headers.iter().any(|(name, value)| {
            if READING_HEADERS.contains(&name.as_str()) {
                reading += 1;
                reading_bytes += value.len();
                value.len() > READING_VALUE_MAX
            } else {
                !credentials.only_placeholders(value.as_bytes())
            }
        }) || reading > READING_HEADERS_MAX
            || reading_bytes > READING_BYTES_MAX;
        let sends =
            !reads_only(method) || query || body || data_header || raw_path.len() > PATH_MAX;
        Facts {
            url,
            host: host.to_owned(),
            port,
            method: method.to_owned(),
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

/// The path as a server that normalizes would route it: percent-escapes decoded and dot
/// segments resolved (RFC 3986, 5.2.4), so a rule's `path` cannot be stepped out of with
/// `/api/../x`, `/api/%2e%2e/x` or `/api/..%2fx`.
pub fn normalize_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&decoded);
    let mut out: Vec<&str> = Vec::new();
    for segment in text.split('/').skip(1) {
        match segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    // A path ending in a dot segment is a directory.
    let trailing = text.ends_with("/.") || text.ends_with("/..");
    let mut path = format!("/{}", out.join("/"));
    if trailing && path.len() > 1 {
        path.push('/');
    }
    path
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credential;
    use crate::policy::HostPattern;

    const PLACEHOLDER: &str = "NANOCLAW_SECRET_TOKEN_0123456789abcdef";

    fn credentials() -> Credentials {
        let token = Credential {
            name: "TOKEN".into(),
            value: "s3cret-value-1234".into(),
            placeholder: PLACEHOLDER.into(),
            hosts: vec![HostPattern::Exact("api.example.com".into())],
            header: None,
            in_query: false,
            in_body: false,
        };
        Credentials::new(vec![token], &["TOKEN".into()])
    }

    fn facts(method: &str, target: &str, headers: &[(&str, String)], body: bool) -> Facts {
        let uri: Uri = target.parse().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let c = credentials();
        Facts::from_parts(
            "https",
            "api.example.com",
            443,
            method,
            &uri,
            &map,
            body,
            &c,
        )
    }

    #[test]
    fn a_plain_read_sends_nothing_and_every_channel_beyond_it_sends() {
        let ua = [("user-agent", "curl/8.0".to_owned())];
        assert!(!facts("GET", "/page", &ua, false).sends);
        assert!(!facts("HEAD", "/page", &[], false).sends);
        for (why, f) in [
            ("a query", facts("GET", "/page?d=x", &ua, false)),
            ("a body", facts("GET", "/page", &ua, true)),
            ("another method", facts("PROPFIND", "/page", &[], false)),
            ("lower-case get", facts("get", "/page", &[], false)),
            (
                "a data header",
                facts("GET", "/page", &[("x-data", "leak".into())], false),
            ),
            (
                "a cookie",
                facts("GET", "/page", &[("cookie", "a=b".into())], false),
            ),
            (
                "a long reading header",
                facts("GET", "/page", &[("user-agent", "x".repeat(300))], false),
            ),
            (
                "a long path",
                facts("GET", &format!("/{}", "p".repeat(600)), &[], false),
            ),
            (
                "a header with more than a placeholder",
                facts(
                    "GET",
                    "/page",
                    &[("authorization", format!("Bearer {PLACEHOLDER} leak"))],
                    false,
                ),
            ),
        ] {
            assert!(f.sends, "{why} does not count as sending: {f:?}");
        }
        let token = [("authorization", format!("Bearer {PLACEHOLDER}"))];
        assert!(
            !facts("GET", "/page", &token, false).sends,
            "a credential the proxy injects is not data"
        );
    }

    #[test]
    fn paths_are_judged_as_a_normalizing_server_routes_them() {
        for (raw, routed) in [
            ("/api/items", "/api/items"),
            ("/api/../leak", "/leak"),
            ("/api/%2e%2e/leak", "/leak"),
            ("/api/..%2fleak", "/leak"),
            ("/api/x/../../leak", "/leak"),
            ("/api/./x", "/api/x"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/", "/"),
        ] {
            assert_eq!(normalize_path(raw), routed, "{raw}");
        }
        assert_eq!(facts("POST", "/api/%2e%2e/leak", &[], true).path, "/leak");
    }

    #[test]
    fn many_reading_headers_together_count_as_data() {
        let many: Vec<(&str, String)> = (0..17)
            .map(|_| ("accept", "text/plain".to_owned()))
            .collect();
        assert!(facts("GET", "/page", &many, false).sends);
        let wide: Vec<(&str, String)> = (0..5).map(|_| ("range", "x".repeat(250))).collect();
        assert!(facts("GET", "/page", &wide, false).sends);
        let few = [
            ("accept", "text/html".to_owned()),
            ("user-agent", "curl/8".to_owned()),
        ];
        assert!(!facts("GET", "/page", &few, false).sends);
    }

    #[test]
    fn the_url_shown_to_approvers_never_holds_a_value() {
        let f = facts("GET", "/page?k=s3cret-value-1234", &[], false);
        assert_eq!(
            f.url,
            format!("https://api.example.com/page?k={PLACEHOLDER}")
        );
        assert!(f.query && f.sends);
        assert_eq!(f.path, "/page");
    }
}
