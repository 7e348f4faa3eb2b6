//! A group's network policy: which hosts and ports its sandbox may reach through the proxy,
//! with which methods, and why a request was refused.
//!
//! Hosts are matched as names before anything is resolved: an exact name, or `*.suffix` for
//! any name under a suffix (not the suffix itself). A host given as an IP address in any
//! spelling (dotted, decimal, octal, hex, bracketed IPv6) only matches a rule that names that
//! address the same way, so numeric tricks cannot reach past the list.

use std::fmt;

/// Ports allowed when a rule names none.
pub const DEFAULT_PORTS: &[u16] = &[80, 443];

/// How a rule names hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
}

/// One allowlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub pattern: HostPattern,
    pub ports: Vec<u16>,
    /// Allowed methods (upper case); `None` allows any.
    pub methods: Option<Vec<String>>,
    /// The hosts of this rule may resolve to private, loopback or link-local addresses (a
    /// service on the owner's own network). Cloud metadata addresses stay refused.
    pub private: bool,
    /// The rule as written, for messages.
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("egress rule {0:?}: empty host")]
    EmptyHost(String),
    #[error("egress rule {0:?}: bad port")]
    BadPort(String),
    #[error(
        "egress rule {0:?}: a host is a DNS name (labels of letters, digits and '-', 1-63 characters each), an IPv4 address or a bracketed IPv6 address, with an optional leading '*.'"
    )]
    BadHost(String),
    #[error("egress rule {0:?}: a host name, not a URL (leave out the scheme and the path)")]
    Url(String),
    #[error(
        "egress rule {0:?}: a wildcard keeps at least two labels (`*.example.com`, not `*.com`)"
    )]
    WideWildcard(String),
    #[error("egress rule {0:?}: cloud metadata addresses are always refused")]
    Metadata(String),
    #[error("egress rule {0:?}: unknown method {1:?}")]
    BadMethod(String, String),
    #[error("egress rule {0:?}: methods is empty (leave it out to allow every method)")]
    NoMethods(String),
}

/// Whether `host` (lower case, no wildcard) is a DNS name, an IPv4 address, or an IPv6 address
/// in brackets.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Methods a rule may name.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT",
];

/// Lower-case a host and drop one trailing dot (`example.com.` is `example.com`).
pub fn normalize_host(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    h.strip_suffix('.').map(str::to_owned).unwrap_or(h)
}

impl Rule {
    /// Parse `host`, `host:port`, `*.suffix` or `*.suffix:port`, with optional method limits.
    pub fn parse(text: &str, methods: Option<&[String]>, private: bool) -> Result<Rule, RuleError> {
        let err_text = text.to_owned();
        if text.contains("://") || text.contains('/') {
            return Err(RuleError::Url(err_text));
        }
        let (host, ports) = match text.rsplit_once(':') {
            Some((h, _)) if !h.ends_with(']') && h.contains(':') => (text, DEFAULT_PORTS.to_vec()),
            Some((h, p)) => (
                h,
                vec![
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| RuleError::BadPort(err_text.clone()))?,
                ],
            ),
            None => (text, DEFAULT_PORTS.to_vec()),
        };
        let host = normalize_host(host);
        if host.is_empty() || host == "*." {
            return Err(RuleError::EmptyHost(err_text));
        }
        let pattern = match host.strip_prefix("*.") {
            Some(suffix) if valid_host(suffix) && !suffix.starts_with('[') => {
                if !suffix.contains('.') {
                    return Err(RuleError::WideWildcard(err_text));
                }
                HostPattern::Suffix(format!(".{suffix}"))
            }
            Some(_) => return Err(RuleError::BadHost(err_text)),
            None if valid_host(&host) => {
                let literal = host.trim_start_matches('[').trim_end_matches(']');
                if literal
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(crate::addr::is_metadata)
                {
                    return Err(RuleError::Metadata(err_text));
                }
                HostPattern::Exact(host)
            }
            None => return Err(RuleError::BadHost(err_text)),
        };
        let methods = match methods {
            None => None,
            Some([]) => return Err(RuleError::NoMethods(err_text)),
            Some(ms) => Some(
                ms.iter()
                    .map(|m| {
                        let up = m.to_ascii_uppercase();
                        if METHODS.contains(&up.as_str()) {
                            Ok(up)
                        } else {
                            Err(RuleError::BadMethod(err_text.clone(), m.clone()))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Rule {
            pattern,
            ports,
            methods,
            private,
            text: text.to_owned(),
        })
    }

    fn matches_host(&self, host: &str) -> bool {
        self.pattern.matches(host)
    }
}

impl HostPattern {
    /// Whether a normalized host name matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
        }
    }
}

/// A group's allowlist. Empty means no egress at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// Why the proxy refused a request. The 403 body is this, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No rule allows this host and port.
    NotAllowed { host: String, port: u16 },
    /// The rule allows the host but not the method.
    Method { method: String, rule: String },
    /// The host resolved to an address the proxy never connects to.
    Address {
        host: String,
        addr: String,
        why: &'static str,
        rule: String,
    },
    /// The host did not resolve.
    Unresolved { host: String, error: String },
    /// The request was not a proxy request the proxy understands.
    BadRequest(String),
    /// A placeholder headed to a host its secret is not bound to (or a secret this group
    /// may not use): an exfiltration attempt.
    Exfiltration { secret: String, host: String },
    /// A secret's raw value in an outbound request.
    SecretValue { secret: String, host: String },
    /// A secret would have gone out over plain HTTP.
    Cleartext { secret: String },
    /// A placeholder where its secret does not allow substitution.
    PlaceholderPlace { secret: String, place: &'static str },
    /// A request body too large to scan.
    TooLarge { limit: usize },
    /// A request whose target or Host header names another host than the one it goes to (on
    /// an intercepted connection: the host of the CONNECT).
    HostMismatch { connect: String, host: String },
    /// A bound host answered with an encoded (compressed) body, which cannot be redacted.
    Encoded { host: String, encoding: String },
    /// A connection from the sandbox while none of its group's tool calls was running.
    NoCall { refused_so_far: u64 },
    /// The tool call made more requests through the proxy than one call may.
    CallBudget { limit: u64 },
    /// The policy's egress rules (or a human asked by them) refused it.
    Policy { reason: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAllowed { host, port } => {
                write!(
                    f,
                    "refused: {host}:{port} is not on this group's egress allowlist"
                )
            }
            Refusal::Method { method, rule } => {
                write!(f, "refused: rule {rule:?} does not allow {method}")
            }
            Refusal::Address {
                host,
                addr,
                why,
                rule,
            } => write!(
                f,
                "refused: {host} resolves to {addr}, {why}; rule {rule:?} does not allow private addresses"
            ),
            Refusal::Unresolved { host, error } => {
                write!(f, "refused: {host} does not resolve: {error}")
            }
            Refusal::BadRequest(why) => write!(f, "refused: {why}"),
            Refusal::Exfiltration { secret, host } => write!(
                f,
                "refused: the placeholder of secret {secret} was headed to {host}, which that secret is not bound to for this group (recorded as an exfiltration attempt)"
            ),
            Refusal::SecretValue { secret, host } => write!(
                f,
                "refused: the request to {host} carries the raw value of secret {secret}; send its placeholder instead"
            ),
            Refusal::Cleartext { secret } => write!(
                f,
                "refused: secret {secret} is injected only over HTTPS, never plain HTTP"
            ),
            Refusal::PlaceholderPlace { secret, place } => write!(
                f,
                "refused: the placeholder of secret {secret} is in the request {place}, where that secret is not substituted (see `nanoclaw secret set --help`)"
            ),
            Refusal::TooLarge { limit } => write!(
                f,
                "refused: request bodies to hosts with secrets, and plain-HTTP bodies, are scanned and limited to {limit} bytes"
            ),
            Refusal::HostMismatch { connect, host } => write!(
                f,
                "refused: request for {host} on a connection opened to {connect}"
            ),
            Refusal::Encoded { host, encoding } => write!(
                f,
                "refused: {host} answered with Content-Encoding {encoding:?} although the proxy asked for none; a host with a secret bound must answer unencoded so the body can be checked for secret values"
            ),
            Refusal::NoCall { refused_so_far } => write!(
                f,
                "refused: a connection while no tool call of this group was running ({refused_so_far} so far); only a running call may reach the network"
            ),
            Refusal::CallBudget { limit } => write!(
                f,
                "refused: this tool call made more than {limit} requests through the proxy, the most one call may; the call is stopped"
            ),
            Refusal::Policy { reason } => write!(f, "refused by policy: {reason}"),
        }
    }
}

impl Policy {
    /// The rule allowing `method` to `host:port`, or why there is none.
    pub fn allow(&self, host: &str, port: u16, method: &str) -> Result<&Rule, Refusal> {
        let host = normalize_host(host);
        let mut by_host = self
            .rules
            .iter()
            .filter(|r| r.matches_host(&host) && r.ports.contains(&port))
            .peekable();
        let Some(first) = by_host.peek().copied() else {
            return Err(Refusal::NotAllowed { host, port });
        };
        by_host
            .find(|r| {
                r.methods
                    .as_ref()
                    .is_none_or(|ms| ms.iter().any(|m| m == method))
            })
            .ok_or_else(|| Refusal::Method {
                method: method.to_owned(),
                rule: first.text.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Policy {
        Policy {
            rules: rules
                .iter()
                .map(|r| Rule::parse(r, None, false).unwrap())
                .collect(),
        }
    }

    #[test]
    fn exact_suffix_and_ports() {
        let p = policy(&["api.github.com", "*.example.org", "internal.test:8443"]);
        assert!(p.allow("api.github.com", 443, "GET").is_ok());
        assert!(p.allow("API.GitHub.com.", 80, "GET").is_ok());
        assert!(p.allow("api.github.com", 8080, "GET").is_err());
        assert!(p.allow("evil-api.github.com", 443, "GET").is_err());
        assert!(p.allow("a.b.example.org", 443, "GET").is_ok());
        assert!(
            p.allow("example.org", 443, "GET").is_err(),
            "*.suffix does not match the suffix itself"
        );
        assert!(p.allow("notexample.org", 443, "GET").is_err());
        assert!(p.allow("internal.test", 8443, "GET").is_ok());
        assert!(p.allow("internal.test", 443, "GET").is_err());
    }

    #[test]
    fn ip_literals_in_any_spelling_are_not_on_a_name_list() {
        let p = policy(&["*.example.org", "example.org"]);
        for host in [
            "127.0.0.1",
            "2130706433",
            "0177.0.0.1",
            "0x7f.0.0.1",
            "[::1]",
            "::ffff:127.0.0.1",
            "0",
            "localhost",
        ] {
            assert!(
                matches!(p.allow(host, 80, "GET"), Err(Refusal::NotAllowed { .. })),
                "{host}"
            );
        }
    }

    #[test]
    fn methods_are_limited_per_rule() {
        let methods = vec!["get".to_owned()];
        let p = Policy {
            rules: vec![Rule::parse("api.example.com", Some(&methods), false).unwrap()],
        };
        assert!(p.allow("api.example.com", 443, "GET").is_ok());
        let e = p.allow("api.example.com", 443, "POST").unwrap_err();
        assert!(e.to_string().contains("does not allow POST"), "{e}");
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        for bad in [
            "",
            "*.",
            "a b",
            "*.*.x",
            "host:0",
            "host:99999",
            "ex*ample.com",
            "*",
        ] {
            assert!(Rule::parse(bad, None, false).is_err(), "{bad:?} parsed");
        }
        for bad in [
            "a..b",
            ".example.com",
            "[zz]",
            "*.[::1]",
            "under_score.example",
            &format!("{}.example", "a".repeat(64)),
            &format!("{}example", "a.".repeat(130)),
        ] {
            assert_eq!(
                Rule::parse(bad, None, false),
                Err(RuleError::BadHost(bad.to_owned())),
                "{bad:?}"
            );
        }
        for (bad, expected) in [
            (
                "https://api.example.com",
                RuleError::Url as fn(String) -> RuleError,
            ),
            ("api.example.com/v1", RuleError::Url),
            ("*.com", RuleError::WideWildcard),
            ("169.254.169.254", RuleError::Metadata),
            ("[fd00:ec2::254]", RuleError::Metadata),
            ("host:0", RuleError::BadPort),
        ] {
            assert_eq!(
                Rule::parse(bad, None, true),
                Err(expected(bad.to_owned())),
                "{bad:?}"
            );
        }
        for good in [
            "[::1]",
            "127.0.0.1:8080",
            "*.example.com",
            "a-b.example:443",
        ] {
            assert!(Rule::parse(good, None, true).is_ok(), "{good:?}");
        }
        let e = Rule::parse("x.com", Some(&["FETCH".to_owned()]), false).unwrap_err();
        assert_eq!(e, RuleError::BadMethod("x.com".into(), "FETCH".into()));
        let e = Rule::parse("x.com", Some(&[]), false).unwrap_err();
        assert_eq!(e, RuleError::NoMethods("x.com".into()));
    }

    #[test]
    fn refusal_names_the_rule() {
        let e = policy(&[]).allow("x.com", 443, "GET").unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused: x.com:443 is not on this group's egress allowlist"
        );
    }
}
