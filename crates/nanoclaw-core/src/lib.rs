//! The trusted core of nanoclaw: the domain types every other part agrees on, the policy
//! engine that decides each tool call before it runs, and the secret placeholders and
//! redaction.
//!
//! This crate does no I/O. It is handed values and returns values, so a reviewer can read it
//! without following a socket, a file or a process.

pub mod approval;
pub mod audit;
pub mod egress_rules;
pub mod gate;
pub mod group;
pub mod hex;
pub mod policy;
pub mod secret;
pub mod tool;

pub use gate::Decision;
pub use group::GroupId;
pub use policy::{Policy, Verdict};
pub use tool::{ToolCall, ToolEffect};
