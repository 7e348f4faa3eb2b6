//! The store: one SQLite database in the data dir, in WAL mode, with numbered migrations run at
//! open. It holds groups, sessions, the inbox, turns, conversation history and the outbox.
//!
//! One connection behind a std `Mutex` does all the writing but the audit log's (its writer
//! thread has a connection of its own): every statement is short and nothing async happens
//! while the lock is held. Each state change a crash could split (claiming
//! messages for a turn; finishing a turn with its reply) is one transaction, which is what makes
//! "nothing accepted is lost, nothing answered twice" hold across `kill -9`.
//!
//! Each table's SQL sits beside the others' in its own file: [`inbox`] (messages as committed,
//! chats, channel positions), [`turns`] (claiming, history, taint, memory, finishing),
//! [`outbox`] (replies and their delivery), [`tasks`] (the task table and its runs, with
//! [`schedule`]'s time math), [`migrations`] (the schema); approvals keep theirs in
//! `agent::approvals` through [`Store::with_conn`]. [`secrets`] is the sealed secrets file
//! beside the database.

mod inbox;
mod migrations;
mod outbox;
pub mod schedule;
pub mod secrets;
pub mod tasks;
mod turns;

pub use inbox::{Inbound, Routed, Withdrawal, role_column};
use migrations::MIGRATIONS;
pub use outbox::{Outbound, ReplyTo};
pub use turns::{ClaimedTurn, TaskPrompt, TurnEnd};

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use nanoclaw_core::GroupId;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

/// Store errors carry SQLite's message; the caller adds what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored message is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the database schema is version {found}, newer than this nanoclaw knows ({known})")]
    TooNew { found: i64, known: i64 },
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub type InboxId = i64;

pub type TurnId = i64;

pub struct Store {
    conn: Mutex<Connection>,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Switching a new file to WAL needs a lock that another process opening it at the same
        // moment may hold, and SQLite does not wait for it: retry for a while.
        let mut tries = 0;
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 500 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Run `f` on the connection, for modules that own their own tables' SQL (approvals).
    pub fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied change: every change is a
        // transaction, rolled back when its guard dropped. So a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_group(conn: &Connection, group: &GroupId) -> Result<()> {
        conn.execute(
            "INSERT OR IGNORE INTO groups (id, created_at) VALUES (?1, ?2)",
            params![group.as_str(), now()],
        )?;
        Ok(())
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == known {
        return Ok(());
    }
    // Several processes may open a new store at once (the daemon, the CLI): each migration
    // runs under the write lock, after reading the version again inside it.
    loop {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        let Some(sql) = MIGRATIONS.get(version as usize) else {
            tx.commit()?;
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "store migrated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, Usage};
    use nanoclaw_core::policy::SenderRole;
    use turns::MAX_TURN_MESSAGES;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        (dir, s)
    }

    fn g(s: &str) -> GroupId {
        s.parse().unwrap()
    }

    #[test]
    fn processes_opening_a_new_store_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Store::open(&path).map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }

    #[test]
    fn migrations_are_idempotent_and_wal_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        let s = Store::open(&path).unwrap();
        let mode: String = s
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn mail_conversations_so_far_are_started_by_their_first_sender() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let c = s.conn();
        // A thread the owner started and a friend wrote into last, as an older version kept
        // it; and one whose group holds no mail any more.
        c.execute_batch(
            "INSERT INTO groups (id, created_at) VALUES ('mail-r', 0);
             INSERT INTO chats (channel, chat, group_id) VALUES ('email', 'r@x', 'mail-r');
             INSERT INTO inbox (group_id, channel, sender, text, status, received_at)
                 VALUES ('mail-r', 'email', 'owner', 'plans', 'done', 0),
                        ('mail-r', 'email', 'email:friend@x', 'me too', 'done', 1);
             INSERT INTO mail_threads (root, subject, reply_to, last_message_id, refs)
                 VALUES ('r@x', 's', 'friend@x', 'm2@x', 'r@x'),
                        ('gone@x', 's', 'someone@x', 'gone@x', 'gone@x');
             ALTER TABLE mail_threads DROP COLUMN starter;",
        )
        .unwrap();
        // Migration 10 (index 9): the starter column and its backfill.
        c.execute_batch(MIGRATIONS[9]).unwrap();
        let starter = |root: &str| -> String {
            c.query_row(
                "SELECT starter FROM mail_threads WHERE root = ?1",
                [root],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(starter("r@x"), "owner");
        assert_eq!(starter("gone@x"), "someone@x");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn interrupted_turn_requeues_its_messages_and_answers_once() {
        let (_d, s) = store();
        s.accept_inbound(&g("a"), "api", "u", SenderRole::Owner, "hello")
            .unwrap();
        let turn = s.claim_turn(&g("a")).unwrap().unwrap();
        assert!(
            s.claim_turn(&g("a")).unwrap().is_none(),
            "claimed messages are not claimed twice"
        );
        drop(turn); // the process dies here
        assert_eq!(s.recover_interrupted().unwrap(), 1);
        let turn = s.claim_turn(&g("a")).unwrap().unwrap();
        assert_eq!(turn.messages.len(), 1);
        s.finish_turn(&turn, "api", TurnEnd::Done { reply: "hi" })
            .unwrap();
        assert_eq!(s.recover_interrupted().unwrap(), 0);
        assert!(s.claim_turn(&g("a")).unwrap().is_none());
        assert_eq!(s.replies_after(&g("a"), 0, 10).unwrap().len(), 1);
    }

    #[test]
    fn history_is_per_session_and_whole_turns_within_budget() {
        let (_d, s) = store();
        for i in 0..3 {
            s.accept_inbound(&g("a"), "api", "u", SenderRole::Owner, &format!("m{i}"))
                .unwrap();
            let t = s.claim_turn(&g("a")).unwrap().unwrap();
            s.append_step(
                t.id,
                0,
                &Message::User {
                    text: format!("m{i}"),
                },
                Usage::default(),
            )
            .unwrap();
            s.append_step(
                t.id,
                1,
                &Message::Assistant {
                    text: "x".repeat(400),
                    tool_calls: vec![],
                },
                Usage::default(),
            )
            .unwrap();
            s.finish_turn(&t, "api", TurnEnd::Done { reply: "ok" })
                .unwrap();
        }
        s.accept_inbound(&g("a"), "api", "u", SenderRole::Owner, "now")
            .unwrap();
        let t = s.claim_turn(&g("a")).unwrap().unwrap();
        let all = s.history(t.session_id, t.id, 100_000).unwrap().messages;
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], Message::User { text: "m0".into() });
        let some = s.history(t.session_id, t.id, 150).unwrap().messages;
        assert_eq!(some.len(), 2, "only the newest whole turn fits");
        assert_eq!(some[0], Message::User { text: "m2".into() });
        // Another group's history is invisible.
        s.accept_inbound(&g("b"), "api", "u", SenderRole::Owner, "x")
            .unwrap();
        let tb = s.claim_turn(&g("b")).unwrap().unwrap();
        assert!(
            s.history(tb.session_id, tb.id, 100_000)
                .unwrap()
                .messages
                .is_empty()
        );
        // A new session starts empty.
        s.new_session(&g("a")).unwrap();
        s.finish_turn(&t, "api", TurnEnd::Done { reply: "ok" })
            .unwrap();
        s.accept_inbound(&g("a"), "api", "u", SenderRole::Owner, "fresh")
            .unwrap();
        let t2 = s.claim_turn(&g("a")).unwrap().unwrap();
        assert!(
            s.history(t2.session_id, t2.id, 100_000)
                .unwrap()
                .messages
                .is_empty()
        );
    }

    #[test]
    fn a_turn_takes_the_newest_messages_and_leaves_the_older_out() {
        let (_d, s) = store();
        let routed = |text: &str, triggered: bool| {
            s.accept_routed(
                &g("a"),
                &Routed {
                    channel: "webhook",
                    chat: "room",
                    sender: "webhook:bob",
                    role: SenderRole::Other,
                    text,
                    triggered,
                    external_id: None,
                },
            )
            .unwrap();
        };
        // The request, then a long talk before the turn starts.
        routed("@bot do the thing", true);
        for i in 0..(MAX_TURN_MESSAGES + 50) {
            routed(&format!("m{i}"), false);
        }
        let t = s.claim_turn(&g("a")).unwrap().unwrap();
        assert_eq!((t.messages.len(), t.left_out), (MAX_TURN_MESSAGES, 51));
        assert_eq!(
            t.messages[0].text, "@bot do the thing",
            "the request is kept"
        );
        assert_eq!(t.messages[1].text, "m51");
        // The older ones are not offered again.
        assert!(s.claim_turn(&g("a")).unwrap().is_none());
        s.finish_turn(&t, "api", TurnEnd::Done { reply: "ok" })
            .unwrap();
        assert!(s.claim_turn(&g("a")).unwrap().is_none());
    }

    #[test]
    fn memory_written_by_a_tainted_turn_stays_outside_content_until_trusted() {
        let (_d, s) = store();
        let a = g("a");
        // Each step: a turn begins with this memory; was it outside content? Then the turn is
        // tainted (or not) and the memory may change before the next.
        let turn = |text: &str| {
            s.accept_inbound(&a, "api", "owner", SenderRole::Owner, text)
                .unwrap();
            let t = s.claim_turn(&a).unwrap().unwrap();
            let judged = s.judge_memory(&a, t.id, text).unwrap();
            (t, judged)
        };
        let (t1, judged) = turn("h1");
        assert!(!judged, "memory found at the start is the owner's");
        s.mark_tainted(t1.id).unwrap();
        s.finish_turn(&t1, "api", TurnEnd::Done { reply: "ok" })
            .unwrap();
        // t1 was tainted and the memory changed after it began: t1 wrote it.
        let (t2, judged) = turn("h2");
        assert!(judged);
        s.mark_tainted(t2.id).unwrap();
        s.finish_turn(&t2, "api", TurnEnd::Done { reply: "ok" })
            .unwrap();
        // Unchanged: still outside content, whoever ran in between.
        let (t3, judged) = turn("h2");
        assert!(judged);
        s.finish_turn(&t3, "api", TurnEnd::Done { reply: "ok" })
            .unwrap();
        assert_eq!(s.memory_judgement(&a).unwrap(), Some(("h2".into(), true)));
        // The owner vouches for exactly this content.
        s.trust_memory(&a, "h2").unwrap();
        let (t4, judged) = turn("h2");
        assert!(!judged);
        s.finish_turn(&t4, "api", TurnEnd::Done { reply: "ok" })
            .unwrap();
        // An untainted turn's change, or the owner's, is trusted.
        let (t5, judged) = turn("h3");
        assert!(!judged);
        s.finish_turn(&t5, "api", TurnEnd::Done { reply: "ok" })
            .unwrap();
        // Another group's judgement is its own.
        assert_eq!(s.memory_judgement(&g("b")).unwrap(), None);
    }
}
