//! `nanoclaw policy check` and `check-egress`: what the gate would decide, and the rule that decides it.

use std::process::ExitCode;

use crate::agent::tools;
use crate::cli::*;
use crate::config::home::Home;
use crate::config::policy_file;

pub fn policy_check(
    home: &Home,
    tool: &str,
    args: &str,
    turn: &TurnArgs,
) -> anyhow::Result<ExitCode> {
    use nanoclaw_core::policy::Context;
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let policy = policy_file::load(
        home,
        &crate::app::vocabulary_for(&crate::app::load_config(home)?),
    )?;
    let args: serde_json::Value = serde_json::from_str(args)
        .map_err(|e| UsageError(format!("--args is not valid JSON: {e}")))?;
    if !args.is_object() {
        return Err(UsageError("--args must be a JSON object".into()).into());
    }
    // Judged as the gate judges it: in the form the tool reads.
    let call = tools::canonical(&nanoclaw_core::tool::ToolCall {
        id: String::new(),
        name: tool.to_owned(),
        arguments: args,
    });
    let vocabulary = crate::app::vocabulary();
    if !vocabulary.channels.iter().any(|c| c == &turn.channel) {
        return Err(UsageError(format!(
            "--channel {:?} is no channel (channels: {})",
            turn.channel,
            vocabulary.channels.join(", ")
        ))
        .into());
    }
    let verdict = policy.decide(&Context {
        tool,
        args: &call.arguments,
        group: turn.group.as_str(),
        channel: &turn.channel,
        sender: turn.sender,
        tainted: turn.tainted,
        effect: tools::effect_for(&crate::app::load_config(home)?, tool),
    });
    print_verdict(None, &verdict);
    // The real call path parses first: say when these arguments would never get this far.
    if let Err(e) = tools::table::parse(&call)
        && tools::table::find(tool).is_some()
    {
        println!("but these arguments are refused before the gate: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `policy check-egress`: the gate's decision for one request (and its tunnel).
pub fn check_egress(
    home: &Home,
    url: &str,
    method: &str,
    body: bool,
    header: &[String],
    tool: &str,
    turn: &TurnArgs,
) -> anyhow::Result<ExitCode> {
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let policy = policy_file::load(
        home,
        &crate::app::vocabulary_for(&crate::app::load_config(home)?),
    )?;
    let turn = TurnOf {
        group: &turn.group,
        channel: &turn.channel,
        sender: turn.sender,
        tainted: turn.tainted,
        tool,
    };
    check_egress_of(&policy, &turn, url, method, body, header).map_err(UsageError)?;
    Ok(ExitCode::SUCCESS)
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
fn check_egress_of(
    policy: &nanoclaw_core::Policy,
    turn: &TurnOf<'_>,
    url: &str,
    method: &str,
    body: bool,
    headers: &[String],
) -> Result<(), String> {
    use nanoclaw_core::egress_rules::{EgressContext, TunnelVerdict};
    use nanoclaw_egress::gate::Facts;
    let network = crate::agent::tools::network_tools();
    if !network.contains(&turn.tool) {
        return Err(format!(
            "--tool {:?} never reaches the network (those that do: {})",
            turn.tool,
            network.join(", ")
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
    // A port as written: one out of range is an error here, as it is at the proxy (the URL
    // parser would drop it and leave the scheme's default).
    let authority = uri.authority().map_or("", |a| a.as_str());
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = hostport.rsplit_once(']').map_or(hostport, |(_, t)| t);
    let port = match after_host.rsplit_once(':') {
        Some((_, p)) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("the URL {url:?} has a bad port {p:?} (1 to 65535)"))?,
        None if scheme == "https" => 443,
        None => 80,
    };
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
