//! The gate every tool call passes before it runs.
//!
//! Decisions are an ordered enum combined with `max()`, so `Deny` always wins over `Ask` and
//! `Ask` over `Allow`. The verdict keeps the reason so the caller can report why.
//!
//! This is where the configurable policy engine plugs in. Until it lands, the gate applies the
//! defaults of the design: sandboxed tools are allowed, actions with effects outside the sandbox
//! ask, anything unmatched asks. The gate never returns `Allow` for a tool it does not know.

use crate::tool::{ToolCall, ToolEffect};

/// What happens to a tool call. Ordered: a combination of decisions takes the strictest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Ask,
    Deny,
}

/// Why the gate decided what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Default rule: the tool runs inside the sandbox.
    DefaultSandboxed,
    /// Default rule: the tool acts outside the sandbox.
    DefaultOutsideSandbox,
    /// No tool of that name exists.
    UnknownTool,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::DefaultSandboxed => {
                "default rule: tools that run inside the sandbox are allowed"
            }
            Reason::DefaultOutsideSandbox => {
                "default rule: tools with effects outside the sandbox need a human's approval"
            }
            Reason::UnknownTool => "no tool of that name exists",
        }
    }
}

/// The gate's answer for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: Reason,
}

/// Decide one tool call. `effect` is the effect class of the tool the call names, as the
/// tool registry reports it.
pub fn decide(_call: &ToolCall, effect: ToolEffect) -> Verdict {
    let (decision, reason) = match effect {
        ToolEffect::Sandboxed => (Decision::Allow, Reason::DefaultSandboxed),
        ToolEffect::OutsideSandbox => (Decision::Ask, Reason::DefaultOutsideSandbox),
        ToolEffect::Unknown => (Decision::Deny, Reason::UnknownTool),
    };
    Verdict { decision, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: serde_json::json!({}),
        }
    }

    #[test]
    fn deny_wins_over_ask_wins_over_allow() {
        assert_eq!(Decision::Allow.max(Decision::Ask), Decision::Ask);
        assert_eq!(Decision::Ask.max(Decision::Deny), Decision::Deny);
        assert_eq!(Decision::Allow.max(Decision::Deny), Decision::Deny);
    }

    #[test]
    fn sandboxed_tools_are_allowed_by_default() {
        let v = decide(&call("shell"), ToolEffect::Sandboxed);
        assert_eq!(v.decision, Decision::Allow);
        assert_eq!(v.reason, Reason::DefaultSandboxed);
    }

    #[test]
    fn outside_effects_ask_by_default() {
        assert_eq!(
            decide(&call("send"), ToolEffect::OutsideSandbox).decision,
            Decision::Ask
        );
    }

    #[test]
    fn unknown_tool_is_never_allowed() {
        assert_eq!(
            decide(&call("nope"), ToolEffect::Unknown).decision,
            Decision::Deny
        );
    }
}
