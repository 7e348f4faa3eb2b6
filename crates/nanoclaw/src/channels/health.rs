//! Each platform channel's connection, as its adapter last found it, for `nanoclaw status`:
//! connected since when, or retrying since when with the last error, or refused by the
//! platform (a credential it rejected: not retried until the daemon is told of a new one).
//! Adapters tell it; the status reads it; nothing is decided on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Where one channel's connection stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Started, not yet connected.
    Starting {
        since: String,
    },
    Connected {
        since: String,
    },
    /// The last attempt failed; the adapter tries again with backoff.
    Retrying {
        since: String,
        attempts: u32,
        error: String,
    },
    /// The platform rejected the credential (HTTP 401/403, an IMAP login refused): trying again
    /// cannot help, so the adapter waits for a new secret (`nanoclaw secret rotate`).
    Rejected {
        since: String,
        error: String,
    },
}

/// The registry the daemon's adapters share.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<&'static str, State>>>);

fn now() -> String {
    crate::audit::format_time(crate::store::now())
}

impl Health {
    fn set(&self, channel: &'static str, state: impl FnOnce(Option<&State>) -> State) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let next = state(all.get(channel));
        all.insert(channel, next);
    }

    pub fn starting(&self, channel: &'static str) {
        self.set(channel, |_| State::Starting { since: now() });
    }

    /// Connected; kept as it was when it already was.
    pub fn connected(&self, channel: &'static str) {
        self.set(channel, |was| match was {
            Some(s @ State::Connected { .. }) => s.clone(),
            _ => State::Connected { since: now() },
        });
    }

    /// An attempt failed with `error` (never holding a credential).
    pub fn retrying(&self, channel: &'static str, error: &str) {
        self.set(channel, |was| match was {
            Some(State::Retrying {
                since, attempts, ..
            }) => State::Retrying {
                since: since.clone(),
                attempts: attempts + 1,
                error: error.to_owned(),
            },
            _ => State::Retrying {
                since: now(),
                attempts: 1,
                error: error.to_owned(),
            },
        });
    }

    pub fn rejected(&self, channel: &'static str, error: &str) {
        self.set(channel, |_| State::Rejected {
            since: now(),
            error: error.to_owned(),
        });
    }

    /// A channel that no longer runs (stopped for a restart).
    pub fn forget(&self, channel: &'static str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel);
    }

    /// Every channel's state, by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl State {
    /// A channel in this state keeps the daemon from being healthy.
    pub fn is_problem(&self) -> bool {
        matches!(self, State::Retrying { .. } | State::Rejected { .. })
    }

    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            State::Starting { since } => format!("starting (since {since})"),
            State::Connected { since } => format!("connected since {since}"),
            State::Retrying {
                since,
                attempts,
                error,
            } => format!("retrying since {since} ({attempts} attempts): {error}"),
            State::Rejected { since, error } => format!(
                "token rejected at {since}: {error}; not retried until the secret changes (nanoclaw secret rotate)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_count_from_the_first_failure_and_a_connection_resets_them() {
        let h = Health::default();
        h.starting("telegram");
        h.retrying("telegram", "connection refused");
        h.retrying("telegram", "timed out");
        let State::Retrying {
            attempts, error, ..
        } = h.snapshot()["telegram"].clone()
        else {
            panic!("not retrying");
        };
        assert_eq!((attempts, error.as_str()), (2, "timed out"));
        h.connected("telegram");
        assert!(!h.snapshot()["telegram"].is_problem());
        h.rejected("telegram", "401 Unauthorized");
        assert!(
            h.snapshot()["telegram"]
                .describe()
                .contains("token rejected")
        );
    }
}
