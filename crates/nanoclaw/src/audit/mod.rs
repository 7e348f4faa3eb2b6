//! The audit log ([`log`]): the hash-chained record of what the agent saw, decided and
//! attempted. `log.rs` stands alone (it uses nothing else of the crate) so that the audit
//! benchmark builds it on its own.

mod log;
#[cfg(test)]
mod tests;

pub use log::*;
