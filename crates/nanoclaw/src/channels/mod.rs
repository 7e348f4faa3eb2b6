//! Channels: how messages reach the agent and how its replies leave. Outside the trust path
//! but for [`accept`], [`router`] and [`admission`]: every adapter hands each inbound message
//! to the one `accept`, which routes it (who sent it, which group, addressed or not), commits
//! it to the store and wakes the group's queue. The adapters never decide a sender's role,
//! never write the inbox themselves and never run a turn.
//!
//! - [`router`]: a chat and sender become a group and a [`nanoclaw_core::policy::SenderRole`].
//! - [`admission`]: unknown senders on channels that ask.
//! - [`outbox`]: delivering committed replies; [`health`]: each channel's connection state.
//! - adapters: [`api`], [`terminal`], [`telegram`], [`email`], [`webhook`].

pub mod admission;
pub mod api;
pub mod approval_text;
pub mod control;
pub mod control_client;
pub mod email;
pub mod health;
pub mod outbox;
pub mod router;
pub mod telegram;
pub mod terminal;
pub mod webhook;

use std::sync::Arc;

use nanoclaw_core::GroupId;
use nanoclaw_core::policy::SenderRole;

use crate::agent::Agent;
use crate::agent::approvals::Presenter;
use crate::agent::queue::Queue;
use crate::audit::Audit;
use crate::store::{InboxId, Routed, Store, StoreError};
use router::{Route, Rules};

/// One inbound message as an adapter read it off the wire, before any decision.
pub struct Inbound<'a> {
    /// The channel's name (`telegram`, `email`, `webhook`, `api`, `terminal`).
    pub channel: &'a str,
    pub text: &'a str,
    /// The channel's own id for the message, so a redelivery is stored once.
    pub external_id: Option<&'a str>,
    pub from: From<'a>,
}

/// Who a message is from and how it is addressed.
pub enum From<'a> {
    /// A chat on a platform: the router decides the sender's role and the group.
    Chat {
        rules: &'a Rules,
        chat: &'a str,
        /// The sender as the channel vouches for them (what owners, senders and admissions
        /// are matched against).
        sender: &'a str,
        /// The sender as they are named to the approvers and in the prompt (the same, but for
        /// a mail whose From the receiving server did not vouch for).
        named: &'a str,
        /// The platform marks it as addressed to the agent (a reply to the bot).
        addressed: bool,
    },
    /// A channel that authenticates its user itself (the terminal: the local user at the data
    /// dir; the HTTP API: the bearer token), speaking to a group it names.
    Authenticated {
        group: GroupId,
        sender: &'a str,
        role: SenderRole,
    },
}

/// What became of a message.
#[derive(Debug)]
pub enum Accepted {
    /// Not stored; `why` is for the log.
    Ignored { why: String },
    /// The owner's `/stop`: the group's running turn (if any) was stopped, nothing stored.
    Stopped { group: GroupId, was_running: bool },
    /// Committed (`id` is `None` for a redelivery, stored before). `held`: an unknown sender's,
    /// kept while the approvers are asked to admit them.
    Stored {
        group: GroupId,
        id: Option<InboxId>,
        triggered: bool,
        held: bool,
    },
}

/// The one way in for every channel: route the message (sender role, group, trigger), let
/// `before_store` record what the channel keeps beside it (a mail thread), commit it, then ask
/// to admit a held sender or wake the group's queue. Only after this returns `Ok` may the
/// channel acknowledge the message.
pub fn accept(
    agent: &Agent,
    queue: Option<&Arc<Queue>>,
    msg: &Inbound<'_>,
    before_store: impl FnOnce(&Accepting) -> Result<(), StoreError>,
) -> Result<Accepted, StoreError> {
    let store = &agent.store;
    // 1. Decide: the group, the sender's role, whether it starts a turn.
    let (group, chat, label, role, triggered, held) = match &msg.from {
        From::Authenticated {
            group,
            sender,
            role,
        } => (
            group.clone(),
            None,
            (*sender).to_owned(),
            *role,
            true,
            false,
        ),
        From::Chat {
            rules,
            chat,
            sender,
            named,
            addressed,
        } => {
            let known = store.group_of_chat(msg.channel, chat)?;
            let route = router::route(
                rules,
                chat,
                sender,
                msg.text,
                || admission::admitted(agent, msg.channel, sender),
                known.as_ref(),
            );
            let (group, role, triggered, held) = match route {
                Route::Ignore { why } => return Ok(Accepted::Ignored { why }),
                Route::Deliver {
                    group,
                    triggered,
                    role,
                } => (group, role, triggered || *addressed, false),
                Route::Hold { group } => (group, SenderRole::Other, false, true),
            };
            // The prompt names the sender by channel; the owner is "owner" on every channel.
            let label = match role {
                SenderRole::Owner => "owner".to_owned(),
                _ => format!("{}:{named}", msg.channel),
            };
            (group, Some(*chat), label, role, triggered, held)
        }
    };
    // The owner's `/stop` ends the group's running turn now; it is a command, not a message.
    if role == SenderRole::Owner && msg.text.trim() == "/stop" {
        let was_running = match queue {
            Some(queue) => stop_soon(queue, &group),
            None => false,
        };
        return Ok(Accepted::Stopped { group, was_running });
    }
    before_store(&Accepting { held })?;
    // 2. Commit. INVARIANT: nothing is acknowledged before this.
    let id = match chat {
        Some(chat) => store.accept_routed(
            &group,
            &Routed {
                channel: msg.channel,
                chat,
                sender: &label,
                role,
                text: msg.text,
                triggered,
                external_id: msg.external_id,
            },
        )?,
        None => Some(store.accept_inbound(&group, msg.channel, &label, role, msg.text)?),
    };
    // 3. Act: ask to admit a held sender (once: a redelivery asks nothing), or wake the queue.
    if held
        && id.is_some()
        && let From::Chat { named, .. } = &msg.from
    {
        admission::ask(agent, msg.channel, named, &group, msg.text);
    }
    if triggered && let Some(queue) = queue {
        queue.kick(group.clone());
    }
    Ok(Accepted::Stored {
        group,
        id,
        triggered,
        held,
    })
}

/// Pause (`paused`) or resume a group, audited. Returns whether it changed.
pub fn pause(agent: &Agent, group: &GroupId, paused: bool) -> Result<bool, StoreError> {
    let changed = if paused {
        agent.store.pause(group)?
    } else {
        agent.store.resume(group)?
    };
    agent.tools.audit().record(
        crate::audit::EventKind::GroupPaused,
        Some(group.as_str()),
        serde_json::json!({"paused": paused, "changed": changed}),
    );
    Ok(changed)
}

/// Stop `group`'s running turn as the owner, without waiting for it to end (`accept` runs on
/// an adapter's path and must not block it).
fn stop_soon(queue: &Arc<Queue>, group: &GroupId) -> bool {
    let running = queue.agent().is_running(group);
    if running {
        let (queue, group) = (Arc::clone(queue), group.clone());
        tokio::spawn(async move { queue.stop(&group, "the owner").await });
    }
    running
}

/// What `accept` decided, for the channel's own bookkeeping before the commit.
pub struct Accepting {
    /// An unknown sender's message, kept while the approvers are asked to admit them.
    pub held: bool,
}

/// A channel's long-running work, spawned by the daemon.
pub type Running = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What every platform adapter is to the daemon: it receives (each message through
/// [`accept`], committed before it is acknowledged), delivers its replies from the outbox
/// (through [`outbox::deliver`], which marks each sent and records it once the platform took
/// it), and may put approval requests in front of approvers. The terminal and the HTTP API,
/// which are not long-running adapters, go through `accept` and `outbox::delivered` directly.
pub trait Channel: Send + Sync + 'static {
    /// The channel's name, as messages, policy rules and the audit log name it.
    fn name(&self) -> &'static str;
    /// Receive until the process ends, telling `health` how its connection stands.
    fn receive(self: Arc<Self>, queue: Arc<Queue>, health: health::Health) -> Running;
    /// Deliver the outbox's replies on this channel until the process ends.
    fn deliver(self: Arc<Self>, store: Arc<Store>, audit: Arc<Audit>) -> Running;
    /// What shows approval requests to this channel's approvers, if it does.
    fn presenter(self: Arc<Self>) -> Option<Arc<dyn Presenter>> {
        None
    }
}
