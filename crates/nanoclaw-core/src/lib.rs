//! The trusted core of nanoclaw: the domain types every other part agrees on, and the gate
//! that decides each tool call before it runs.
//!
//! This crate does no I/O. It is handed values and returns values, so a reviewer can read it
//! without following a socket, a file or a process.

pub mod gate;
pub mod group;
pub mod secret;
pub mod tool;

pub use gate::{Decision, Verdict};
pub use group::GroupId;
pub use tool::{ToolCall, ToolEffect};
