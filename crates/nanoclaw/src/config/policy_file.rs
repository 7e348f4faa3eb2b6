//! The policy file, `policy.toml` in the data dir: who may approve, and the ordered rules the
//! gate applies to every tool call (`nanoclaw_core::policy`). A file that is missing, does not
//! parse, names an unknown approver, or has a rule naming a tool, channel or argument that does
//! not exist (a rule that could never match) stops startup naming the file, the line and the
//! key: a typo must never turn a `deny` off.

use anyhow::Context;
use nanoclaw_core::Policy;
use nanoclaw_core::policy::Vocabulary;

use crate::config::home::Home;

pub const POLICY_FILE: &str = "policy.toml";

/// Written by `nanoclaw init`.
pub const DEFAULT_POLICY: &str = r#"# nanoclaw policy: decides every tool call before it runs.
#
# Rules are checked in order; the first that matches decides, except that a matching "deny"
# anywhere wins. With no match: tools that run inside the sandbox are allowed, anything else
# asks an approver. `nanoclaw policy check --tool T --args JSON` shows what a call would get.

# People who may answer approval requests. `terminal = true`: the owner at this machine
# (answering with `nanoclaw approvals approve ID`, or /approve CODE through the HTTP API).
[approvers.owner]
terminal = true

# Examples (remove the leading # to use one):
#
# [[rule]]
# name = "no force pushes"
# tool = "shell"
# args = { command = { regex = "git\\s+push\\s.*--force" } }
# action = "deny"
#
# [[rule]]
# name = "writes to the web ask once the turn has read outside content"
# tool = "http_request"
# tainted = true
# args = { method = { one_of = ["POST", "PUT", "PATCH", "DELETE"] } }
# action = "ask"
# approvers = ["owner"]     # default: every approver above
# quorum = 1                # distinct approvers needed
# timeout_secs = 600        # no answer in time means deny
# scope = "once"            # or "always" for this exact tool, arguments and group
#
# Other keys: group, channel (globs), sender ("owner", "approver", "other"); argument matchers
# `equals`, `glob`, `regex`, `one_of` on a dotted path into the call's arguments.

# Egress rules decide each network request a tool call makes that the group's allowlist let
# through. With none matching, a turn that has read outside content asks the approvers before
# a request that sends data out (a body, a query, a data header, a method other than GET and
# HEAD); every other request is allowed.
#
# [[egress]]
# name = "the tracker takes posts, even from tainted turns"
# host = "tracker.example.com"     # glob
# methods = ["POST"]               # as sent; "CONNECT" decides a whole tunnel
# path = "/api/issues*"            # glob, without the query
# action = "allow"
#
# Other keys: ports, query, body, sends (booleans), tool (shell, web_fetch, http_request),
# group, channel, sender, tainted; approvers, quorum, timeout_secs, scope as in [[rule]].
"#;

/// The channels messages arrive on (a scheduled task's turn comes from `task`).
const CHANNELS: &[&str] = &[
    crate::channels::terminal::CHANNEL,
    crate::channels::api::CHANNEL,
    crate::channels::telegram::CHANNEL,
    crate::channels::email::CHANNEL,
    crate::channels::webhook::CHANNEL,
    "task",
];

/// What rules may name: the tools offered to the model with their arguments, the channels, and
/// the channels that present approval requests to approvers by id.
pub fn vocabulary() -> Vocabulary {
    let tools = crate::agent::tools::specs()
        .into_iter()
        .map(|spec| {
            let args = spec.schema["properties"]
                .as_object()
                .map(|props| props.keys().cloned().collect())
                .unwrap_or_default();
            (spec.name.to_owned(), args)
        })
        .collect();
    Vocabulary {
        tools,
        network_tools: crate::agent::tools::NETWORK_TOOLS
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
        channels: CHANNELS.iter().map(|c| (*c).to_owned()).collect(),
        approver_channels: vec![crate::channels::telegram::CHANNEL.to_owned()],
    }
}

/// The turn and tool a request is checked for by `policy check-egress`.
pub struct TurnOf<'a> {
    pub group: &'a nanoclaw_core::GroupId,
    pub channel: &'a str,
    pub sender: nanoclaw_core::policy::SenderRole,
    pub tainted: bool,
    pub tool: &'a str,
}

/// Print what the proxy's gate would decide for `method url` (and its tunnel, for https) in
/// `turn`. `Err` names the bad argument.
pub fn check_egress(
    policy: &Policy,
    turn: &TurnOf<'_>,
    url: &str,
    method: &str,
    body: bool,
    headers: &[String],
) -> Result<(), String> {
    use nanoclaw_core::egress_rules::{EgressContext, TunnelVerdict};
    use nanoclaw_egress::gate::Facts;
    if !crate::agent::tools::NETWORK_TOOLS.contains(&turn.tool) {
        return Err(format!(
            "--tool {:?} never reaches the network (those that do: {})",
            turn.tool,
            crate::agent::tools::NETWORK_TOOLS.join(", ")
        ));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("the URL {url:?} is not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => {
            return Err(format!(
                "the URL {url:?} must start with http:// or https://"
            ));
        }
    };
    let host = uri
        .host()
        .map(nanoclaw_egress::policy::normalize_host)
        .ok_or_else(|| format!("the URL {url:?} has no host"))?;
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("--method {method:?} is not a method"));
    }
    let mut map = hyper::HeaderMap::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: give \"Name: value\""))?;
        let name = hyper::header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| format!("--header {h:?}: bad name: {e}"))?;
        let value = hyper::header::HeaderValue::from_str(value.trim())
            .map_err(|e| format!("--header {h:?}: bad value: {e}"))?;
        map.append(name, value);
    }
    let facts = Facts::from_parts(
        scheme,
        &host,
        port,
        method,
        &uri,
        &map,
        body,
        &nanoclaw_egress::Credentials::default(),
    );
    let ctx = EgressContext {
        group: turn.group.as_str(),
        channel: turn.channel,
        sender: turn.sender,
        tainted: turn.tainted,
        tool: turn.tool,
    };
    if scheme == "https" {
        match policy.decide_tunnel(&ctx, &host, port) {
            TunnelVerdict::Inspect => {
                println!("tunnel {host}:{port}: opened, so that each request inside is decided")
            }
            TunnelVerdict::Decided(v) => {
                print_verdict(Some(&format!("tunnel {host}:{port}")), &v);
                if v.decision == nanoclaw_core::Decision::Allow {
                    println!(
                        "  (relayed unopened: the request below is not seen unless a secret is bound to the host)"
                    );
                }
            }
        }
    }
    println!("sends data: {}", if facts.sends { "yes" } else { "no" });
    print_verdict(
        Some(&format!("{method} {}", facts.url)),
        &policy.decide_egress(&ctx, &facts.request()),
    );
    Ok(())
}

/// `what: decision: reason` (`decision: reason` without `what`), and for an `ask` who may
/// answer and how long it waits.
pub fn print_verdict(what: Option<&str>, verdict: &nanoclaw_core::Verdict) {
    let decision = match verdict.decision {
        nanoclaw_core::Decision::Allow => "allow",
        nanoclaw_core::Decision::Ask => "ask",
        nanoclaw_core::Decision::Deny => "deny",
    };
    let (prefix, indent) = match what {
        Some(what) => (format!("{what}: "), "  "),
        None => (String::new(), ""),
    };
    println!("{prefix}{decision}: {}", verdict.reason.describe());
    if let Some(a) = &verdict.approval {
        println!(
            "{indent}approvers: {} ({} needed), timeout {}s, scope {:?}",
            if a.approvers.is_empty() {
                "none configured (so it is refused)".to_owned()
            } else {
                a.approvers.join(", ")
            },
            a.quorum,
            a.timeout.as_secs(),
            a.scope
        );
    }
}

/// Load and check the policy.
pub fn load(home: &Home) -> anyhow::Result<Policy> {
    let path = home.dir.join(POLICY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::cli::UsageError(format!(
                "{} is missing: every tool call is checked against it (`nanoclaw init` writes \
                 the default one and keeps existing files)",
                path.display()
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&text).map_err(|e| crate::cli::UsageError(format!("{}: {e}", path.display())).into())
}

/// Parse and check a policy file's text.
pub fn parse(text: &str) -> Result<Policy, nanoclaw_core::policy::PolicyError> {
    let policy = Policy::parse(text)?;
    policy.check(&vocabulary())?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_parses_and_has_the_owner() {
        let p = parse(DEFAULT_POLICY).unwrap();
        assert!(p.approver("owner").is_some_and(|a| a.terminal));
    }

    /// Each mistake that would leave a rule unable to match, or an approver unable to answer,
    /// is refused with the line and key.
    #[test]
    fn rules_that_could_never_match_are_refused() {
        let owner = "[approvers.owner]\nterminal = true\n";
        for (body, expected) in [
            (
                "[[rule]]\ntool = \"shel\"\naction = \"deny\"\n",
                "line 3: rule[1].tool: \"shel\" names no tool (tools: shell,",
            ),
            (
                "[[rule]]\ntool = \"SHELL\"\naction = \"deny\"\n",
                "rule[1].tool: \"SHELL\" names no tool",
            ),
            (
                "[[rule]]\ntool = \"shell\"\nchannel = \"telegarm\"\naction = \"deny\"\n",
                "rule[1].channel: \"telegarm\" names no channel (channels: terminal, api, telegram, email, webhook, task)",
            ),
            (
                "[[rule]]\ntool = \"shell\"\nargs = { cmd = { regex = \"rm\" } }\naction = \"deny\"\n",
                "rule[1].args.cmd: no tool this rule matches has an argument \"cmd\" (shell takes command, timeout_secs)",
            ),
            (
                "[[rule]]\ntool = \"http_request\"\nargs = { method = { one_of = [] } }\naction = \"deny\"\n",
                "rule[1].args.method: one_of needs at least one value",
            ),
            (
                "[[rule]]\ntool = \"*\"\nargs = { command = { glob = \"*\" }, url = { glob = \"*\" } }\naction = \"deny\"\n",
                "rule[1].args: no one tool this rule matches takes all of command, url",
            ),
            (
                "[approvers.bob]\nids = { slack = [\"1\"] }\n",
                "line 3: approvers.\"bob\".ids: approvers cannot be reached on \"slack\"",
            ),
            (
                "[approvers.bob]\nids = { telegram = [\"\"] }\n",
                "approvers.\"bob\": an empty id in ids.telegram",
            ),
            (
                "[approvers.bob]\n",
                "approvers.\"bob\": can never answer a request",
            ),
            (
                "[approvers.\"\"]\nterminal = true\n",
                "an approver needs a name",
            ),
        ] {
            let text = format!("{owner}{body}");
            let e = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(expected), "{body}: {e}");
        }
        // Globs that name something are fine, arguments of any tool a glob matches too.
        parse(&format!(
            "{owner}[[rule]]\ntool = \"*_file\"\nchannel = \"tele*\"\nargs = {{ path = {{ glob = \"/etc/*\" }} }}\naction = \"deny\"\n"
        ))
        .unwrap();
    }
}
