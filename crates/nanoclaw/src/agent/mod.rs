//! The agent: everything between a committed message and a committed reply. This is the trust
//! path of the daemon: what a turn sees, what it asks the model, and how each tool call the
//! model makes is parsed, decided, approved and run.
//!
//! - [`queue`]: one turn at a time per group, a global cap on concurrent turns.
//! - [`turn`]: the turn loop: prompt → model → tool calls → reply into the outbox.
//! - [`tools`]: the tool table and [`tools::Tools::call`], the one path of every tool call:
//!   parse → gate → approval → run → audit.
//! - [`approvals`]: approval requests, their votes, and [`approvals::answer`], which every
//!   surface (CLI, API, chat) calls.
//! - [`egress_gate`]: the policy's word on each network request a call makes.
//! - [`progress`]: each tool call's start and end, announced to whoever watches the group.
//! - [`memory`]: the group's MEMORY.md, read through the sandbox; `prompt`: what the model
//!   is shown, with outside content marked.
//!
//! It must never run a tool without the gate, never take a sender's role from a name, and never
//! let model output be anything but data.

pub mod approvals;
pub mod egress_gate;
pub mod memory;
pub mod progress;
mod prompt;
pub mod queue;
pub mod tools;
pub mod turn;

pub use turn::{Agent, TurnResult};
