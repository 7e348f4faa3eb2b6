//! The host side of isolation: which sandbox backend runs commands ([`backend`]), each group's
//! egress proxy with its credentials and audit ([`egress`]), and the web tools' client, whose
//! only way out is that proxy ([`web`]). The sandboxes and the proxy themselves are the
//! `nanoclaw_sandbox` and `nanoclaw_egress` crates.

pub mod backend;
pub mod egress;
pub mod web;
