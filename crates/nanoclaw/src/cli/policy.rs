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
    let policy = policy_file::load(home)?;
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
    let verdict = policy.decide(&Context {
        tool,
        args: &call.arguments,
        group: turn.group.as_str(),
        channel: &turn.channel,
        sender: turn.sender,
        tainted: turn.tainted,
        effect: tools::effect_of(tool),
    });
    policy_file::print_verdict(None, &verdict);
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
    let policy = policy_file::load(home)?;
    let turn = policy_file::TurnOf {
        group: &turn.group,
        channel: &turn.channel,
        sender: turn.sender,
        tainted: turn.tainted,
        tool,
    };
    policy_file::check_egress(&policy, &turn, url, method, body, header).map_err(UsageError)?;
    Ok(ExitCode::SUCCESS)
}
