//! `[mcp.servers.NAME]`: the MCP servers the agent may use, validated once. A local server is a
//! command run inside a sandbox of each group it serves, reaching only the hosts listed here
//! through a proxy of its own, holding only the placeholders of the secrets listed here. A
//! remote server is a URL spoken to over streamable HTTP through that same kind of proxy (its
//! own host allowed besides those listed), so the secrets listed here reach it only as the
//! proxy injects them toward their bound hosts.

use std::collections::BTreeMap;
use std::time::Duration;

use nanoclaw_core::GroupId;
use nanoclaw_egress::Policy;
use serde::Deserialize;

use super::{ConfigError, RawEgressRule, Validator};

/// The longest a server name may be (it prefixes each of its tools' names).
const MAX_NAME: usize = 24;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMcp {
    #[serde(default)]
    servers: BTreeMap<String, RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    command: Vec<String>,
    url: Option<String>,
    #[serde(default = "main_only")]
    groups: Vec<String>,
    #[serde(default)]
    egress: Vec<RawEgressRule>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default = "default_timeout")]
    timeout_secs: i64,
}

fn main_only() -> Vec<String> {
    vec!["main".into()]
}

fn default_timeout() -> i64 {
    60
}

/// How a server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum McpTransport {
    /// A command, run in the group's sandbox (working directory `/workspace`), spoken to over
    /// its stdio.
    Stdio { command: Vec<String> },
    /// A remote server's endpoint (`http://` or `https://`), spoken to over streamable HTTP
    /// through the server's proxy.
    Http { url: String },
}

impl std::fmt::Display for McpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpTransport::Stdio { command } => f.write_str(&command.join(" ")),
            McpTransport::Http { url } => f.write_str(url),
        }
    }
}

/// One MCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpServer {
    pub name: String,
    pub transport: McpTransport,
    /// The groups whose turns get its tools (each its own sandbox of the server).
    pub groups: Vec<GroupId>,
    /// What its sandbox may reach, through its own proxy.
    pub egress: Policy,
    /// The secrets whose placeholders it gets (each still only toward its bound hosts).
    pub secrets: Vec<String>,
    /// The longest one call may take.
    pub timeout: Duration,
}

impl McpServer {
    pub fn serves(&self, group: &GroupId) -> bool {
        self.groups.contains(group)
    }
}

impl Validator<'_> {
    pub(super) fn mcp(&self, raw: &RawMcp) -> Result<BTreeMap<String, McpServer>, ConfigError> {
        let mut servers = BTreeMap::new();
        for (name, s) in &raw.servers {
            let key = format!("mcp.servers.{name}");
            let good_name = !name.is_empty()
                && name.len() <= MAX_NAME
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.contains("--")
                && !name.ends_with('-');
            if !good_name {
                return Err(self.invalid(
                    key,
                    format!("a server name of a-z, 0-9 and single '-' between them, starting with a letter, at most {MAX_NAME} characters"),
                    format!("{name:?}"),
                ));
            }
            let mut egress_rules: Vec<RawEgressRule> = s.egress.clone();
            let transport = match (&s.url, s.command.is_empty()) {
                (Some(_), false) => {
                    return Err(self.invalid(
                        key,
                        "either `command` (a local server) or `url` (a remote one), not both",
                        "both",
                    ));
                }
                (Some(url), true) => {
                    let authority = remote_authority(url).map_err(|why| {
                        self.invalid(format!("{key}.url"), why, format!("{url:?}"))
                    })?;
                    // The server's own host, unless a rule of `egress` names it (to allow a
                    // private address, say): the endpoint is reached like any other host.
                    let named = self
                        .egress(&format!("{key}.egress"), &s.egress)?
                        .allow(&authority.0, authority.1, "POST")
                        .is_ok();
                    if !named {
                        egress_rules.push(RawEgressRule::Host(format!(
                            "{}:{}",
                            authority.0, authority.1
                        )));
                    }
                    McpTransport::Http { url: url.clone() }
                }
                (None, _) => {
                    if s.command.is_empty()
                        || s.command.iter().any(|a| a.is_empty() || a.contains('\0'))
                    {
                        return Err(self.invalid(
                            format!("{key}.command"),
                            "the server's command as a non-empty list of arguments (or `url` for a remote server)",
                            format!("{:?}", s.command),
                        ));
                    }
                    McpTransport::Stdio {
                        command: s.command.clone(),
                    }
                }
            };
            let mut groups = Vec::new();
            for g in &s.groups {
                groups.push(
                    g.parse::<GroupId>()
                        .map_err(|e| self.invalid(format!("{key}.groups"), "group names", e))?,
                );
            }
            if groups.is_empty() {
                return Err(self.invalid(format!("{key}.groups"), "at least one group", "[]"));
            }
            if !(1..=3600).contains(&s.timeout_secs) {
                return Err(self.invalid(
                    format!("{key}.timeout_secs"),
                    "an integer from 1 to 3600",
                    s.timeout_secs,
                ));
            }
            servers.insert(
                name.clone(),
                McpServer {
                    name: name.clone(),
                    transport,
                    groups,
                    egress: self.egress(&format!("{key}.egress"), &egress_rules)?,
                    secrets: s.secrets.clone(),
                    timeout: Duration::from_secs(s.timeout_secs as u64),
                },
            );
        }
        Ok(servers)
    }
}

/// The host and port of a remote server's URL, or why it cannot be one.
fn remote_authority(url: &str) -> Result<(String, u16), &'static str> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| "an http:// or https:// URL of the server's MCP endpoint")?;
    let port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return Err("an http:// or https:// URL of the server's MCP endpoint"),
    };
    let authority = uri
        .authority()
        .ok_or("an http:// or https:// URL with a host")?;
    if authority.as_str().contains('@') {
        return Err("a URL without credentials (name a secret bound to the host instead)");
    }
    if authority.host().is_empty() {
        return Err("an http:// or https:// URL with a host");
    }
    Ok((
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(port),
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(std::path::Path::new("nanoclaw.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn servers_are_validated_naming_the_key() {
        let c = parse(
            "[mcp.servers.git]\ncommand = [\"mcp-server-git\"]\negress = [\"github.com\"]\nsecrets = [\"GITHUB_TOKEN\"]\n",
        )
        .unwrap();
        let git = &c.mcp["git"];
        assert!(git.serves(&"main".parse().unwrap()) && !git.serves(&"work".parse().unwrap()));
        assert_eq!(git.timeout.as_secs(), 60);
        // A remote server's own host is allowed besides its rules, unless a rule names it.
        let c = parse("[mcp.servers.t]\nurl = \"https://mcp.example.com/mcp\"\n").unwrap();
        let t = &c.mcp["t"];
        assert_eq!(
            t.transport,
            super::McpTransport::Http {
                url: "https://mcp.example.com/mcp".into()
            }
        );
        assert!(t.egress.allow("mcp.example.com", 443, "POST").is_ok());
        assert!(t.egress.allow("mcp.example.com", 80, "POST").is_err());
        assert!(t.egress.allow("other.example", 443, "POST").is_err());
        let c = parse("[mcp.servers.t]\nurl = \"http://127.0.0.1:8123/mcp\"\negress = [{ host = \"127.0.0.1:8123\", private = true }]\n").unwrap();
        let rule = c.mcp["t"].egress.allow("127.0.0.1", 8123, "POST").unwrap();
        assert!(rule.private);
        for (text, want) in [
            ("[mcp.servers.Git]\ncommand = [\"x\"]\n", "mcp.servers.Git"),
            (
                "[mcp.servers.a--b]\ncommand = [\"x\"]\n",
                "mcp.servers.a--b",
            ),
            (
                "[mcp.servers.git]\ncommand = []\n",
                "mcp.servers.git.command",
            ),
            (
                "[mcp.servers.t]\nurl = \"ftp://mcp.example.com/mcp\"\n",
                "mcp.servers.t.url",
            ),
            (
                "[mcp.servers.t]\nurl = \"https://me:pw@mcp.example.com/mcp\"\n",
                "without credentials",
            ),
            (
                "[mcp.servers.t]\nurl = \"https://mcp.example.com/mcp\"\ncommand = [\"x\"]\n",
                "not both",
            ),
            (
                "[mcp.servers.git]\ncommand = [\"x\"]\ngroups = [\"Bad\"]\n",
                "mcp.servers.git.groups",
            ),
            (
                "[mcp.servers.git]\ncommand = [\"x\"]\negress = [\"bad host\"]\n",
                "mcp.servers.git.egress",
            ),
            (
                "[mcp.servers.git]\ncommand = [\"x\"]\ntimeout_secs = 0\n",
                "timeout_secs",
            ),
            ("[mcp.servers.git]\ncommand = [\"x\"]\nbogus = 1\n", "bogus"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
