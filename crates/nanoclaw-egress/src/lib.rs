//! The egress proxy of nanoclaw: the only way out of a sandbox.
//!
//! - [`policy`]: a group's allowlist (hosts, `*.suffix`, ports, methods) and refusals.
//! - [`addr`]: addresses the proxy never connects to (loopback, private, link-local, CGNAT,
//!   multicast, unspecified, metadata; IPv4 inside IPv6 judged as IPv4).
//! - [`calls`]: which tool call each connection belongs to, and the per-call record budget.
//! - [`gate`]: what a request is told to the policy as (does it send data out?), and the gate
//!   each tool call brings to decide its requests (and wait for approvals).
//! - [`proxy`]: the per-group server on a Unix socket: HTTP forwarding and CONNECT tunnels.
//! - [`handoff`]: how connections arrive on that socket (a sandbox's TCP connection passed as
//!   a descriptor, or HTTP spoken directly).
//! - [`credentials`]: which secrets a group may use, where each is bound, and the per-request
//!   rules: raw values refused, placeholders only toward bound hosts, then substituted.
//! - [`tls`]: the local CA, leaf certificates per host, verified TLS toward upstreams.
//! - [`intercept`]: TLS-terminated connections: to hosts a group's secrets are bound to, and
//!   tunnels the gate wants opened.
//!
//! What this crate must never do: forward to an address it has not checked, take the group
//! from anything but the socket a request came in on, send a secret toward a host it is not
//! bound to, or log a secret's value.

pub mod addr;
pub mod calls;
pub mod credentials;
pub mod gate;
pub mod handoff;
pub mod intercept;
pub mod policy;
pub mod proxy;
mod pump;
pub mod tls;

pub use credentials::{Credential, Credentials, HeaderInjection};
pub use policy::{HostPattern, Policy, Refusal, Rule};
