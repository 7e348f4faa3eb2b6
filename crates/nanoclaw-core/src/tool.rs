//! A tool call as the model asked for it, parsed into a typed value, and the effect class of
//! each tool, which the gate uses to apply the default policy.

use serde::{Deserialize, Serialize};

/// One tool call taken from a model response. `arguments` is whatever JSON the model produced;
/// each tool validates it against its own schema before anything runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for this call; the tool result must carry it back.
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
}

/// Where a tool's effects land. The default policy keys off this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolEffect {
    /// Runs entirely inside the group's sandbox; its effects stay in the workspace.
    Sandboxed,
    /// Acts outside the sandbox (messages another chat, uses a credential-carrying integration).
    OutsideSandbox,
    /// A name no tool answers to.
    Unknown,
}
