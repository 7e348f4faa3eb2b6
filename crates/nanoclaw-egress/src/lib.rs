//! The egress proxy of nanoclaw: the only way out of a sandbox.
//!
//! - [`policy`]: a group's allowlist (hosts, `*.suffix`, ports, methods) and refusals.
//! - [`addr`]: addresses the proxy never connects to (loopback, private, link-local, CGNAT,
//!   multicast, unspecified, metadata; IPv4 inside IPv6 judged as IPv4).
//! - [`proxy`]: the per-group server on a Unix socket: HTTP forwarding and CONNECT tunnels.
//!
//! What this crate must never do: forward to an address it has not checked, or take the
//! group from anything but the socket a request came in on.

pub mod addr;
pub mod policy;
pub mod proxy;

pub use policy::{Policy, Refusal, Rule};
