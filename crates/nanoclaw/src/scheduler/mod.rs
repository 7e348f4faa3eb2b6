//! The task runner in the daemon: it sleeps until the earliest due time (or until told that
//! tasks changed), claims every due slot in the store ([`tasks::claim_due`]) and runs each as
//! an agent turn of its group, under the same sandbox and policy as a chat turn, one turn at a
//! time per group, at most `max_concurrent_runs` task runs at once. A failed run is tried
//! again after a backoff, up to `max_attempts`: the store keeps when, and the retry is claimed
//! like a due slot, so a restart in between does not lose it. Every run is audited and logged
//! in the task's run log.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_core::GroupId;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};

use crate::agent::queue::Queue;
use crate::store::tasks::{self, Claim};

/// The longest the runner sleeps without looking (tasks added by another process, such as
/// `nanoclaw task add` while the daemon runs and cannot reach it, are seen by then).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The pause after the store refused a claim, before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Where the runner reads the time; tests and benchmarks may supply their own.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now()
    }
}

pub use crate::config::SchedulerLimits as Limits;

pub struct Scheduler {
    queue: Arc<Queue>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    runs: Arc<Semaphore>,
    /// Woken when tasks change in this process (the agent's tools, the API's wake call).
    pub wake: Arc<Notify>,
}

impl Scheduler {
    pub fn new(
        queue: Arc<Queue>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Scheduler {
            queue,
            clock,
            limits,
            runs: Arc::new(Semaphore::new(limits.max_concurrent_runs.max(1))),
            wake,
        })
    }

    /// Run until the process ends.
    pub async fn run(self: Arc<Self>) {
        let store = Arc::clone(&self.queue.agent().store);
        match tasks::abandon_running(&store, self.clock.now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                runs = n,
                "task runs interrupted by the last stop are abandoned, not repeated"
            ),
            Err(e) => tracing::error!(error = %e, "could not mark interrupted task runs"),
        }
        loop {
            let now = self.clock.now_ms();
            let claimed = match tasks::claim_due(&store, now) {
                Ok(claims) => {
                    for claim in claims {
                        let me = Arc::clone(&self);
                        tokio::spawn(async move { me.execute(claim).await });
                    }
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not claim due tasks");
                    false
                }
            };
            let wait = match tasks::next_due(&store) {
                // An overdue slot the store would not let us claim: not again at once.
                Ok(Some(_)) if !claimed => ERROR_PAUSE,
                Ok(Some(due)) => {
                    Duration::from_millis(u64::try_from(due - now).unwrap_or(0)).min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(e) => {
                    tracing::error!(error = %e, "could not read the next due time");
                    MAX_SLEEP
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One claimed slot or retry: run it, and if it fails with attempts left, record when to
    /// try again.
    async fn execute(self: Arc<Self>, claim: Claim) {
        let Ok(_run_slot) = Arc::clone(&self.runs).acquire_owned().await else {
            return;
        };
        let agent = Arc::clone(self.queue.agent());
        let store = &agent.store;
        let audit = Arc::clone(agent.tools.audit());
        let Ok(group) = claim.task.group.parse::<GroupId>() else {
            let _ = tasks::finish(
                store,
                claim.run_id,
                tasks::Outcome::Failed("the task's group name is invalid"),
                self.clock.now_ms(),
            );
            return;
        };
        let started = self.clock.now_ms();
        audit.record(
 crate::audit::EventKind::TaskRun,
            Some(group.as_str()),
            json!({"task": claim.task.id, "name": claim.task.name, "run": claim.run_id, "slot": claim.slot, "attempt": claim.attempt, "late_ms": started - claim.slot}),
        );
        let mut stopped = false;
        let outcome = {
            let Some(_turn) = self.queue.turn_slot(&group).await else {
                return;
            };
            if agent.store.is_paused(&group).unwrap_or(false) {
                Ok(Err("not run: the group is paused".to_owned()))
            } else {
                match self
                    .queue
                    .stoppable(&group, agent.run_task_turn(&group, &claim.task))
                    .await
                {
                    Some(outcome) => outcome,
                    None => {
                        stopped = true;
                        if let Err(e) = agent.stopped(&group) {
                            tracing::error!(%group, error = %format!("{e:#}"), "could not end a stopped task run");
                        }
                        Ok(Err("stopped by the owner".to_owned()))
                    }
                }
            }
        };
        let outcome = match outcome {
            Ok(result) => result,
            Err(e) => Err(format!("{e:#}")),
        };
        let finished = self.clock.now_ms();
        let recorded = match &outcome {
            Ok(result) => tasks::Outcome::Ok(result),
            Err(error)
                if claim.attempt < self.limits.max_attempts
                    && !stopped
                    && !error.starts_with("not run: the group is paused") =>
            {
                let backoff = self.limits.retry_backoff * 2u32.pow(claim.attempt - 1);
                tracing::warn!(task = claim.task.id, attempt = claim.attempt, %error, ?backoff, "task run failed; trying again");
                let backoff_ms = i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
                tasks::Outcome::Retry(error, finished.saturating_add(backoff_ms))
            }
            Err(error) => {
                tracing::warn!(task = claim.task.id, attempts = claim.attempt, %error, "task run failed; no attempts left");
                tasks::Outcome::Failed(error)
            }
        };
        if let Err(e) = tasks::finish(store, claim.run_id, recorded, finished) {
            tracing::error!(task = claim.task.id, error = %e, "could not record how a task run ended");
        }
        audit.record(
 crate::audit::EventKind::TaskRunFinished,
            Some(group.as_str()),
            json!({"task": claim.task.id, "run": claim.run_id, "ok": outcome.is_ok(), "duration_ms": finished - started, "error": outcome.as_ref().err()}),
        );
        if matches!(recorded, tasks::Outcome::Retry(..)) {
            // The runner's sleep was computed before this retry existed.
            self.wake.notify_one();
        }
    }
}
