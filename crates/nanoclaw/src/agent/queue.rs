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
    /// Held by whatever runs a turn of the group (chat turns, task runs): one at a time.
    turn_locks: Mutex<HashMap<GroupId, Arc<tokio::sync::Mutex<()>>>>,
    /// Told when the owner stops a group's running turn.
    stops: Mutex<HashMap<GroupId, Arc<tokio::sync::Notify>>>,
}

/// The right to run one turn of a group now.
pub struct TurnSlot {
    _group: tokio::sync::OwnedMutexGuard<()>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Queue {
    pub fn new(agent: Arc<Agent>, max_concurrent_turns: usize) -> Arc<Queue> {
        Arc::new(Queue {
            agent,
            groups: Mutex::new(HashMap::new()),
            turns: Arc::new(Semaphore::new(max_concurrent_turns)),
            turn_locks: Mutex::new(HashMap::new()),
            stops: Mutex::new(HashMap::new()),
        })
    }

    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// Wait until this process may run a turn of `group`: the group's turn lock, then a slot
    /// under the global cap. Both are held until the guard drops.
    pub async fn turn_slot(&self, group: &GroupId) -> Option<TurnSlot> {
        let lock = {
            let mut locks = self.turn_locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(group.clone()).or_default())
        };
        let group_guard = lock.lock_owned().await;
        let permit = self.turns.clone().acquire_owned().await.ok()?;
        Some(TurnSlot {
            _group: group_guard,
            _permit: permit,
        })
    }

    fn stop_signal(&self, group: &GroupId) -> Arc<tokio::sync::Notify> {
        let mut stops = self.stops.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(stops.entry(group.clone()).or_default())
    }

    /// Run `work` (a group's turn) unless the group is stopped first: then `work` is dropped
    /// where it stands (its model request, its sandboxed command, its wait for an approval go
    /// with it) and `None` comes back.
    pub async fn stoppable<T>(
        &self,
        group: &GroupId,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let stop = self.stop_signal(group);
        let stopped = stop.notified();
        tokio::pin!(stopped);
        // Registered now, so a stop between here and the first poll is not missed.
        stopped.as_mut().enable();
        tokio::select! {
            done = work => Some(done),
            () = stopped => None,
        }
    }

    /// Stop `group`'s running turn now, as `by`; queued messages stay queued. Returns once
    /// the turn has ended, `false` when none was running.
    pub async fn stop(&self, group: &GroupId, by: &str) -> bool {
        if !self.agent.stopping(group, by) {
            return false;
        }
        self.stop_signal(group).notify_waiters();
        // The worker ends the turn as stopped (`Agent::stopped`); wait for it, a little.
        for _ in 0..500 {
            if !self.agent.is_running(group) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// The groups a worker is answering now.
    pub fn running(&self) -> Vec<GroupId> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let mut running: Vec<GroupId> = groups
            .iter()
            .filter(|(_, s)| s.running)
            .map(|(g, _)| g.clone())
            .collect();
        running.sort();
        running
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
            match self.turn_slot(&group).await {
                Some(_slot) => match self.stoppable(&group, self.agent.drain_group(&group)).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        // The messages stay pending in the store and are retried on the next kick
                        // or restart; nothing is lost.
                        tracing::error!(%group, error = %format!("{e:#}"), "could not process the group's messages");
                    }
                    None => {
                        if let Err(e) = self.agent.stopped(&group) {
                            tracing::error!(%group, error = %format!("{e:#}"), "could not end a stopped turn");
                        }
                        // Queued messages wait for the next message or restart: a stop stops.
                        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(state) = groups.get_mut(&group) {
                            state.running = false;
                            state.kicked_again = false;
                        }
                        return;
                    }
                },
                None => return,
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
