//! The group queue: one turn at a time per group, and a cap on turns running at once across
//! groups. Channels call [`Queue::kick`] after committing a message; the queue reads what is
//! pending from the store, so a kick is only a wake-up and can never lose a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nanoclaw_core::GroupId;
use tokio::sync::Semaphore;

use crate::agent::Agent;

#[derive(Default)]
struct GroupState {
    /// A worker task is running for the group.
    running: bool,
    /// A kick arrived while the worker ran; it must look again before it stops.
    kicked_again: bool,
}

pub struct Queue {
    agent: Arc<Agent>,
    /// A std Mutex: held only to flip flags, never across an await.
    groups: Mutex<HashMap<GroupId, GroupState>>,
    turns: Arc<Semaphore>,
}

impl Queue {
    pub fn new(agent: Arc<Agent>, max_concurrent_turns: usize) -> Arc<Queue> {
        Arc::new(Queue {
            agent,
            groups: Mutex::new(HashMap::new()),
            turns: Arc::new(Semaphore::new(max_concurrent_turns)),
        })
    }

    /// Make sure the group's pending messages get answered.
    pub fn kick(self: &Arc<Self>, group: GroupId) {
        {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            let state = groups.entry(group.clone()).or_default();
            if state.running {
                state.kicked_again = true;
                return;
            }
            state.running = true;
            state.kicked_again = false;
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move { queue.work(group).await });
    }

    async fn work(self: Arc<Self>, group: GroupId) {
        loop {
            match self.turns.clone().acquire_owned().await {
                Ok(_permit) => {
                    if let Err(e) = self.agent.drain_group(&group).await {
                        // The messages stay pending in the store and are retried on the next kick
                        // or restart; nothing is lost.
                        tracing::error!(%group, error = %format!("{e:#}"), "could not process the group's messages");
                    }
                }
                Err(_closed) => return,
            }
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            let Some(state) = groups.get_mut(&group) else {
                return;
            };
            if state.kicked_again {
                state.kicked_again = false;
                continue;
            }
            state.running = false;
            return;
        }
    }
}
