//! Channels: how messages reach the agent and how its replies leave. Outside the trust path
//! but for [`accept`], [`router`] and [`admission`]: every adapter hands each inbound message
//! to the one `accept`, which routes it (who sent it, which group, addressed or not), commits
//! it to the store and wakes the group's queue. The adapters never decide a sender's role,
//! never write the inbox themselves and never run a turn.
//!
//! - [`router`]: a chat and sender become a group and a [`nanoclaw_core::policy::SenderRole`].
//! - [`admission`]: unknown senders on channels that ask.
//! - [`outbox`]: delivering committed replies.
//! - adapters: [`api`], [`terminal`], [`telegram`], [`email`], [`webhook`].

pub mod admission;
pub mod api;
pub mod email;
pub mod outbox;
pub mod router;
pub mod telegram;
pub mod terminal;
pub mod webhook;
