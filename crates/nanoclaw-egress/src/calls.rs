//! Which tool call a group's proxy is serving, and how much one call may make it record.
//!
//! A connection is served only while a call of its group is open ([`Calls::open`]): it is
//! attributed to that call, every record it makes names the call, and it is cut when the call
//! ends. A connection that arrives while no call is open (a process that outlived its command,
//! say) is refused; refusals of that kind are counted and recorded in bounded form, never one
//! event per attempt.
//!
//! Each call has a budget: the first [`RECORDS_IN_FULL`] requests are recorded one by one; the
//! rest are coalesced by decision, method and host into counts with a few sample paths, written
//! once when the call ends. Past [`REQUESTS_PER_CALL`] requests the call is exhausted: every
//! further request and connection is refused, and [`CallLease::exhausted`] tells the caller
//! to stop the call. So a sandbox can grow the audit log by a bounded number of events per call.
//!
//! What this module must never do: serve a connection it cannot attribute to an open call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::gate::{EgressGate, Facts, Tunnel};
use crate::policy::Refusal;

/// Requests of one call recorded one event each; later ones are coalesced.
pub const RECORDS_IN_FULL: u64 = 64;
/// Requests one call may make through its proxy; past this the call is stopped.
pub const REQUESTS_PER_CALL: u64 = 1000;
/// Distinct (decision, method, host) kinds one call's summary keeps; the rest are one bucket.
const SUMMARY_KINDS: usize = 64;
/// Sample paths kept per kind in a summary.
const SAMPLES_PER_KIND: usize = 3;
/// Longest sample path kept, in bytes.
const SAMPLE_LEN: usize = 200;

/// The open calls of one group's proxy. At most one is open at a time in practice (a group's
/// tool calls run one after another); with several, a connection belongs to the newest.
#[derive(Default)]
pub struct Calls {
    open: Mutex<Vec<Arc<CallState>>>,
    /// Connections refused because no call was open, over the proxy's life.
    unattributed: AtomicU64,
}

/// Why a connection belongs to no call.
#[derive(Debug, PartialEq, Eq)]
pub enum Unattributed {
    /// No call of the group is open. `total` counts such connections over the proxy's life;
    /// `record` is set for the 1st, 2nd, 4th, 8th, ... so a flood of them makes a logarithmic
    /// number of records, each with the running total.
    NoCall { total: u64, record: bool },
    /// The open call is past its budget.
    Exhausted,
}

/// One open call, as the connections it owns see it.
pub struct CallState {
    /// Who the call is, as the records name it (turn and call id), chosen by the caller.
    pub tag: String,
    /// Decides each request for the call's turn; `None` holds the call to the allowlist alone.
    gate: Option<Arc<dyn EgressGate>>,
    requests: AtomicU64,
    coalesced: Mutex<BTreeMap<(String, String, String), Kind>>,
    /// `true` once the call has ended: its connections are cut.
    ended: watch::Sender<bool>,
    /// `true` once the call went past its budget.
    exhausted: watch::Sender<bool>,
}

/// Requests of one kind past the first ones, for the call's summary.
#[derive(Clone, Debug, Default)]
pub struct Kind {
    pub count: u64,
    pub samples: Vec<String>,
}

/// What a call did through the proxy beyond its requests recorded in full, written when it ends.
#[derive(Clone, Debug)]
pub struct CallSummary {
    pub call: String,
    pub requests: u64,
    pub exhausted: bool,
    /// `(decision, method, host)` with count and sample paths.
    pub coalesced: Vec<((String, String, String), Kind)>,
}

/// How a request of a call is to be recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Budget {
    /// Record it in full.
    InFull,
    /// Counted into the call's summary.
    Coalesced,
    /// Over budget: refuse it (counted, not recorded).
    Exhausted,
}

impl CallState {
    /// Count one request and say how it is recorded; `decision`, `method`, `host` and `path`
    /// key and sample it when it is coalesced.
    pub fn charge(&self, decision: &str, method: &str, host: &str, path: &str) -> Budget {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if n > REQUESTS_PER_CALL {
            self.exhausted.send_replace(true);
            return Budget::Exhausted;
        }
        if n <= RECORDS_IN_FULL {
            return Budget::InFull;
        }
        let mut kinds = self.coalesced.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (decision.to_owned(), method.to_owned(), host.to_owned());
        if !kinds.contains_key(&key) && kinds.len() >= SUMMARY_KINDS {
            key = ("other".into(), String::new(), String::new());
        }
        let kind = kinds.entry(key).or_default();
        kind.count += 1;
        if kind.samples.len() < SAMPLES_PER_KIND {
            let mut end = path.len().min(SAMPLE_LEN);
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            kind.samples.push(path[..end].to_owned());
        }
        Budget::Coalesced
    }

    /// Whether the call is past its budget (new requests and connections are refused).
    pub fn is_exhausted(&self) -> bool {
        *self.exhausted.borrow()
    }

    /// Resolves when the call ends.
    pub async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// Run `work` until it is done or the call ends, whichever comes first: everything that
    /// serves one of the call's connections runs under this.
    pub async fn until_ended(&self, work: impl std::future::Future<Output = ()>) {
        tokio::select! {
            () = work => {}
            () = self.ended() => {}
        }
    }

    /// How to serve a tunnel the allowlist let through: as the call's gate says, relayed
    /// untouched without one.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<Tunnel, Refusal> {
        match &self.gate {
            Some(gate) => gate
                .tunnel(host, port)
                .await
                .map_err(|reason| Refusal::Policy { reason }),
            None => Ok(Tunnel::Relay),
        }
    }

    /// Whether the call's gate lets a request through that the allowlist let through.
    pub async fn admit(&self, facts: &Facts) -> Result<(), Refusal> {
        match &self.gate {
            Some(gate) => gate
                .request(facts)
                .await
                .map_err(|reason| Refusal::Policy { reason }),
            None => Ok(()),
        }
    }

    /// A request of a call past its budget is refused.
    pub fn within_budget(&self) -> Result<(), Refusal> {
        if self.is_exhausted() {
            return Err(Refusal::CallBudget {
                limit: REQUESTS_PER_CALL,
            });
        }
        Ok(())
    }

    fn summary(&self) -> Option<CallSummary> {
        let requests = self.requests.load(Ordering::SeqCst);
        let kinds = std::mem::take(&mut *self.coalesced.lock().unwrap_or_else(|p| p.into_inner()));
        (requests > RECORDS_IN_FULL).then(|| CallSummary {
            call: self.tag.clone(),
            requests,
            exhausted: self.is_exhausted(),
            coalesced: kinds.into_iter().collect(),
        })
    }
}

impl Calls {
    /// Open a call; connections arriving while the lease lives belong to it, and `gate`
    /// decides their requests.
    pub fn open(self: &Arc<Self>, tag: String, gate: Option<Arc<dyn EgressGate>>) -> CallLease {
        let state = Arc::new(CallState {
            tag,
            gate,
            requests: AtomicU64::new(0),
            coalesced: Mutex::new(BTreeMap::new()),
            ended: watch::Sender::new(false),
            exhausted: watch::Sender::new(false),
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&state));
        CallLease {
            calls: Arc::clone(self),
            state,
        }
    }

    /// The call a connection arriving now belongs to, if one is open and within its budget.
    pub fn attribute(&self) -> Result<Arc<CallState>, Unattributed> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let call = open.last().cloned();
        drop(open);
        match call {
            Some(call) if !call.is_exhausted() => Ok(call),
            Some(call) => {
                // Counted against the call, like a request, so its summary shows the attempt.
                call.charge("refuse", "CONNECT", "", "");
                Err(Unattributed::Exhausted)
            }
            None => {
                let total = self.unattributed.fetch_add(1, Ordering::SeqCst) + 1;
                Err(Unattributed::NoCall {
                    total,
                    record: total.is_power_of_two(),
                })
            }
        }
    }
}

/// An open call. Dropping it ends the call: its connections are cut, and its summary (if it
/// made more requests than are recorded in full) is returned by [`CallLease::close`].
pub struct CallLease {
    calls: Arc<Calls>,
    state: Arc<CallState>,
}

impl CallLease {
    /// Resolves once the call is past its budget: the caller stops the call.
    pub async fn exhausted(&self) {
        let mut rx = self.state.exhausted.subscribe();
        let _ = rx.wait_for(|e| *e).await;
    }

    pub fn is_exhausted(&self) -> bool {
        self.state.is_exhausted()
    }

    /// End the call and return what its records left out, if anything.
    pub fn close(self) -> Option<CallSummary> {
        self.end();
        self.state.summary()
    }

    fn end(&self) {
        let mut open = self.calls.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|c| !Arc::ptr_eq(c, &self.state));
        drop(open);
        self.state.ended.send_replace(true);
    }
}

impl Drop for CallLease {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_belong_to_the_open_call_and_none_without_one() {
        let calls = Arc::new(Calls::default());
        assert_eq!(
            calls.attribute().err(),
            Some(Unattributed::NoCall {
                total: 1,
                record: true
            })
        );
        let lease = calls.open("turn 1 call a".into(), None);
        assert_eq!(calls.attribute().unwrap().tag, "turn 1 call a");
        drop(lease);
        let recorded = (0..1000)
            .filter(|_| {
                matches!(
                    calls.attribute(),
                    Err(Unattributed::NoCall { record: true, .. })
                )
            })
            .count();
        assert_eq!(
            recorded, 9,
            "a thousand more refusals make nine records (2, 4, ..., 512)"
        );
    }

    #[test]
    fn a_flood_of_requests_is_coalesced_then_exhausts_the_call() {
        let calls = Arc::new(Calls::default());
        let lease = calls.open("c".into(), None);
        let call = calls.attribute().unwrap();
        let mut full = 0;
        for i in 0..REQUESTS_PER_CALL + 10 {
            match call.charge("refuse", "GET", "evil.example", &format!("/{i}")) {
                Budget::InFull => full += 1,
                Budget::Coalesced => {}
                Budget::Exhausted => assert!(i >= REQUESTS_PER_CALL),
            }
        }
        assert_eq!(full, RECORDS_IN_FULL);
        assert!(lease.is_exhausted());
        assert_eq!(
            calls.attribute().err(),
            Some(Unattributed::Exhausted),
            "an exhausted call takes no connection"
        );
        let summary = lease.close().unwrap();
        assert!(summary.exhausted);
        let (key, kind) = &summary.coalesced[0];
        assert_eq!(key.2, "evil.example");
        assert_eq!(kind.count, REQUESTS_PER_CALL - RECORDS_IN_FULL);
        assert_eq!(kind.samples.len(), SAMPLES_PER_KIND);
    }

    #[tokio::test]
    async fn ending_a_call_wakes_its_connections() {
        let calls = Arc::new(Calls::default());
        let lease = calls.open("c".into(), None);
        let call = calls.attribute().unwrap();
        let waiter = tokio::spawn(async move { call.ended().await });
        drop(lease);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
