//! The audit log: the hash-chained record of what the agent saw, decided and attempted.
//! [`log`] writes it and verifies it (on the trust path; it stands alone, using nothing else of
//! the crate, so the audit benchmark builds it on its own); [`read`] shows and exports it for
//! people, and [`timeline`] tells one turn's story from it.

mod log;
mod read;
#[cfg(test)]
mod tests;
pub mod timeline;

pub use log::*;
pub use read::*;
