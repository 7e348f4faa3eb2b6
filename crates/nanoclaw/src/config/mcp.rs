//! `[mcp.servers.NAME]`: the MCP servers the agent may use, validated once. A server is a
//! command run inside a sandbox of each group it serves, reaching only the hosts listed here
//! through a proxy of its own, holding only the placeholders of the secrets listed here.

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

/// One MCP server.
#[derive(Clone, Debug)]
pub struct McpServer {
    pub name: String,
    /// The command, run in the group's sandbox (working directory `/workspace`).
    pub command: Vec<String>,
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
            if s.url.is_some() {
                return Err(self.invalid(
                    format!("{key}.url"),
                    "a local server (`command`); remote (streamable HTTP) servers are not supported yet",
                    "a url",
                ));
            }
            if s.command.is_empty() || s.command.iter().any(|a| a.is_empty() || a.contains('\0')) {
                return Err(self.invalid(
                    format!("{key}.command"),
                    "the server's command as a non-empty list of arguments",
                    format!("{:?}", s.command),
                ));
            }
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
                    command: s.command.clone(),
                    groups,
                    egress: self.egress(&format!("{key}.egress"), &s.egress)?,
                    secrets: s.secrets.clone(),
                    timeout: Duration::from_secs(s.timeout_secs as u64),
                },
            );
        }
        Ok(servers)
    }
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
                "[mcp.servers.t]\nurl = \"https://mcp.example.com/mcp\"\n",
                "not supported yet",
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
