//! Unknown senders on channels set to `unknown_senders = "ask"`: their first message is kept
//! (as context, starting no turn) and the approvers are asked, once, whether to admit them.
//! Admission is an approval of the call `admit_sender {channel, sender}`; once approved, the
//! sender routes like a known one (still outside content: never the owner).

use std::time::Duration;

use nanoclaw_core::policy::{ApprovalSpec, Scope};
use nanoclaw_core::{GroupId, ToolCall};
use serde_json::json;

use crate::agent::Agent;

/// How long an admission request stays open.
const ASK_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

fn call(channel: &str, sender: &str) -> ToolCall {
    ToolCall {
        id: String::new(),
        name: "admit_sender".into(),
        arguments: json!({"channel": channel, "sender": sender}),
    }
}

/// Admission is per channel and sender, not per group.
fn scope_group() -> GroupId {
    GroupId::main()
}

pub fn admitted(agent: &Agent, channel: &str, sender: &str) -> bool {
    agent
        .tools
        .approvals()
        .was_approved(&scope_group(), &call(channel, sender))
}

/// Ask the approvers to admit `sender`, whose message waits in `group`.
pub fn ask(agent: &Agent, channel: &str, sender: &str, group: &GroupId, text: &str) {
    let approvers: Vec<String> = agent
        .tools
        .policy()
        .approvers()
        .iter()
        .map(|a| a.name.clone())
        .collect();
    if approvers.is_empty() {
        tracing::warn!(
            channel,
            sender,
            "an unknown sender waits, but no approvers are configured"
        );
        return;
    }
    let spec = ApprovalSpec {
        approvers,
        quorum: 1,
        timeout: ASK_FOR,
        scope: Scope::Always,
    };
    let preview: String = text.chars().take(200).collect();
    let reason = format!(
        "{sender} is not known on {channel}; their message waits in group {group}: {preview:?}"
    );
    if let Err(e) =
        agent
            .tools
            .approvals()
            .ask_later(&scope_group(), &call(channel, sender), &spec, &reason)
    {
        tracing::error!(channel, sender = ?sender, error = %e, "could not ask to admit a sender");
    }
}
