//! The store: one SQLite database in the data dir, in WAL mode, with numbered migrations run at
//! open. It holds groups, sessions, the inbox, turns, conversation history and the outbox.
//!
//! One connection behind a std `Mutex` does all the writing but the audit log's (its writer
//! thread has a connection of its own): every statement is short and nothing async happens
//! while the lock is held. Each state change a crash could split (claiming
//! messages for a turn; finishing a turn with its reply) is one transaction, which is what makes
//! "nothing accepted is lost, nothing answered twice" hold across `kill -9`.

pub mod schedule;
pub mod secrets;
pub mod tasks;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use nanoclaw_core::GroupId;
use nanoclaw_core::policy::SenderRole;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::model::{Message, Usage};

/// Migrations, in order. Entry `n` moves the schema from version `n` to `n + 1`. Never edit one
/// that has shipped; add a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER
);
CREATE TABLE turns (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    session_id  INTEGER NOT NULL REFERENCES sessions(id),
    status      TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    error       TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE TABLE inbox (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    channel     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    text        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'done')),
    turn_id     INTEGER REFERENCES turns(id),
    received_at INTEGER NOT NULL
);
CREATE INDEX inbox_pending ON inbox(group_id, status);
CREATE TABLE history (
    id            INTEGER PRIMARY KEY,
    turn_id       INTEGER NOT NULL REFERENCES turns(id),
    seq           INTEGER NOT NULL,
    message       TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    UNIQUE (turn_id, seq)
);
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL REFERENCES groups(id),
    channel     TEXT NOT NULL,
    turn_id     INTEGER NOT NULL REFERENCES turns(id),
    text        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER
);
CREATE INDEX outbox_unsent ON outbox(group_id, channel, sent_at);
"#,
    r#"
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    group_id    TEXT,
    body        TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
CREATE INDEX audit_group ON audit(group_id, at);
CREATE INDEX audit_kind ON audit(kind, at);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    tool        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    approvers   TEXT NOT NULL,
    quorum      INTEGER NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('once', 'always')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'used')),
    always      INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    decided_at  INTEGER
);
CREATE INDEX approvals_fingerprint ON approvals(fingerprint, status);
CREATE TABLE approval_votes (
    id          INTEGER PRIMARY KEY,
    approval_id INTEGER NOT NULL REFERENCES approvals(id),
    approver    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    vote        TEXT NOT NULL CHECK (vote IN ('approve', 'approve_always', 'deny')),
    counted     INTEGER NOT NULL,
    at          INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY,
    group_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('cron', 'every', 'once')),
    spec        TEXT NOT NULL,
    tz          TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    isolated    INTEGER NOT NULL,
    post        INTEGER NOT NULL,
    catch_up    INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'paused', 'done', 'removed')),
    next_due    INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tasks_due ON tasks(status, next_due);
CREATE TABLE task_runs (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    slot        INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'abandoned', 'skipped')),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT,
    result      TEXT,
    UNIQUE (task_id, slot, attempt)
);
"#,
    r#"
ALTER TABLE inbox ADD COLUMN triggered INTEGER NOT NULL DEFAULT 1;
ALTER TABLE inbox ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX inbox_external ON inbox(channel, external_id) WHERE external_id IS NOT NULL;
CREATE TABLE chats (
    channel     TEXT NOT NULL,
    chat        TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    PRIMARY KEY (channel, chat)
);
"#,
    r#"
CREATE TABLE channel_state (
    channel     TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
);
"#,
    r#"
CREATE TABLE mail_threads (
    root            TEXT PRIMARY KEY,
    subject         TEXT NOT NULL,
    reply_to        TEXT NOT NULL,
    last_message_id TEXT NOT NULL,
    refs            TEXT NOT NULL
);
"#,
    // A failed task run with attempts left names when to try again, so a restart does not
    // forget it.
    r#"
ALTER TABLE task_runs ADD COLUMN retry_at INTEGER;
CREATE INDEX task_runs_retry ON task_runs(retry_at) WHERE retry_at IS NOT NULL;
"#,
    // A turn that read outside content; a later turn with it in its history starts tainted.
    r#"
ALTER TABLE turns ADD COLUMN tainted INTEGER NOT NULL DEFAULT 0;
"#,
    // The group's memory as each turn began, and the judgement of its current content.
    r#"
ALTER TABLE turns ADD COLUMN memory_hash TEXT;
CREATE TABLE memory_state (
    group_id    TEXT PRIMARY KEY,
    hash        TEXT NOT NULL,
    tainted     INTEGER NOT NULL
);
"#,
    // Who started each mail conversation: anyone else writing into the thread gets a
    // conversation of their own. Rows so far: the sender of the first mail stored in the
    // thread's group ("owner" stands for the owners), else the last sender.
    r#"
ALTER TABLE mail_threads ADD COLUMN starter TEXT NOT NULL DEFAULT '';
UPDATE mail_threads SET starter = COALESCE(
    (SELECT CASE WHEN i.sender LIKE 'email:%' THEN substr(i.sender, 7) ELSE i.sender END
       FROM chats c JOIN inbox i ON i.group_id = c.group_id AND i.channel = 'email'
      WHERE c.channel = 'email' AND c.chat = mail_threads.root
      ORDER BY i.id LIMIT 1),
    reply_to);
"#,
    // Each message carries the role its channel decided for its sender, and whether its text is
    // outside content; a task carries its creator's role and whether the turn that wrote it had
    // read outside content. Rows so far: the labels the channels wrote ("owner" and the API's
    // "api" for the owner) become the owner's role, everything else another's; tasks stored
    // so far run as they did (as another's, outside content).
    r#"
ALTER TABLE inbox ADD COLUMN role TEXT NOT NULL DEFAULT 'other' CHECK (role IN ('owner', 'approver', 'other'));
ALTER TABLE inbox ADD COLUMN outside INTEGER NOT NULL DEFAULT 1;
UPDATE inbox SET role = 'owner', outside = 0 WHERE sender IN ('owner', 'api');
ALTER TABLE tasks ADD COLUMN role TEXT NOT NULL DEFAULT 'other' CHECK (role IN ('owner', 'approver', 'other'));
ALTER TABLE tasks ADD COLUMN tainted INTEGER NOT NULL DEFAULT 1;
"#,
];

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

/// The most pending messages one turn takes into its prompt (the newest).
pub const MAX_TURN_MESSAGES: usize = 100;

/// The part of a session's past that goes into a prompt.
#[derive(Debug)]
pub struct History {
    pub messages: Vec<Message>,
    /// One of those turns read outside content.
    pub tainted: bool,
}
pub type TurnId = i64;

/// An accepted inbound message.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub id: InboxId,
    pub channel: String,
    /// The sender as the channel names them, for the prompt and the log only: never for a
    /// decision.
    pub sender: String,
    /// The sender's role, as the channel decided it when the message came in.
    pub role: SenderRole,
    /// The text is outside content (from someone other than the owner, or a task prompt a
    /// tainted turn wrote): the turn that reads it is tainted.
    pub outside: bool,
    pub text: String,
}

/// A role as the store holds it: the column's CHECK admits only the three names.
pub fn role_column(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<SenderRole> {
    let name: String = r.get(idx)?;
    name.parse()
        .map_err(|e: nanoclaw_core::policy::UnknownRole| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
}

/// A message a channel routed to a group.
#[derive(Clone, Copy, Debug)]
pub struct Routed<'a> {
    pub channel: &'a str,
    /// The chat it came from, where the group's replies go.
    pub chat: &'a str,
    pub sender: &'a str,
    /// Decided by the router.
    pub role: SenderRole,
    pub text: &'a str,
    /// It starts a turn (else it waits as context for the next one).
    pub triggered: bool,
    /// The channel's own id for it, to store a redelivery once.
    pub external_id: Option<&'a str>,
}

/// A task's prompt, as a run of it enters the inbox.
pub struct TaskPrompt<'a> {
    /// `task:NAME`, for the prompt and the log.
    pub sender: &'a str,
    /// The role of whoever created the task.
    pub role: SenderRole,
    /// The prompt is outside content.
    pub outside: bool,
    pub prompt: &'a str,
    pub isolated: bool,
}

/// A turn claimed for processing, with the messages it answers.
#[derive(Debug)]
pub struct ClaimedTurn {
    pub id: TurnId,
    pub group: GroupId,
    pub session_id: i64,
    pub messages: Vec<Inbound>,
    /// Older pending messages beyond [`MAX_TURN_MESSAGES`], left out of this turn (they stay
    /// in the inbox, done).
    pub left_out: usize,
    /// A task run without the group's history.
    pub isolated: bool,
}

/// A reply waiting in (or delivered from) the outbox.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outbound {
    pub id: i64,
    pub group: String,
    pub channel: String,
    pub turn_id: TurnId,
    pub text: String,
    pub created_at: i64,
}

/// How a turn ended, for [`Store::finish_turn`].
pub enum TurnEnd<'a> {
    /// Answered; the reply goes to the outbox.
    Done { reply: &'a str },
    /// Failed; `notice` tells the user why and goes to the outbox.
    Failed { error: &'a str, notice: &'a str },
}

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

    /// Commit an inbound message. Only after this returns may the channel acknowledge it.
    pub fn accept_inbound(
        &self,
        group: &GroupId,
        channel: &str,
        sender: &str,
        role: SenderRole,
        text: &str,
    ) -> Result<InboxId> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::ensure_group(&tx, group)?;
        tx.execute(
            "INSERT INTO inbox (group_id, channel, sender, text, status, received_at, role, outside)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7)",
            params![group.as_str(), channel, sender, text, now(), role.as_str(), role == SenderRole::Other],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Commit a message a channel routed: `triggered` messages start a turn; the others wait as
    /// context for the next one. A message whose `external_id` this channel already stored is
    /// a redelivery: `None`, nothing stored twice. The chat is remembered as the group's, for
    /// replies.
    pub fn accept_routed(&self, group: &GroupId, m: &Routed<'_>) -> Result<Option<InboxId>> {
        let Routed {
            channel,
            chat,
            sender,
            role,
            text,
            triggered,
            external_id,
        } = *m;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::ensure_group(&tx, group)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO inbox (group_id, channel, sender, text, status, received_at, triggered, external_id, role, outside)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9)",
            params![group.as_str(), channel, sender, text, now(), triggered, external_id, role.as_str(), role == SenderRole::Other],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT OR REPLACE INTO chats (channel, chat, group_id) VALUES (?1, ?2, ?3)",
            params![channel, chat, group.as_str()],
        )?;
        tx.commit()?;
        Ok(Some(id))
    }

    /// A channel's saved position (a Telegram update offset, an IMAP UID), by key.
    pub fn channel_state(&self, channel: &str, key: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM channel_state WHERE channel = ?1 AND key = ?2",
                params![channel, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_channel_state(&self, channel: &str, key: &str, value: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO channel_state (channel, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value",
            params![channel, key, value],
        )?;
        Ok(())
    }

    /// The group a chat of `channel` was stored under, if it was seen before.
    pub fn group_of_chat(&self, channel: &str, chat: &str) -> Result<Option<GroupId>> {
        let stored: Option<String> = self
            .conn()
            .query_row(
                "SELECT group_id FROM chats WHERE channel = ?1 AND chat = ?2",
                params![channel, chat],
                |r| r.get(0),
            )
            .optional()?;
        Ok(stored.and_then(|g| g.parse().ok()))
    }

    /// The chat of `channel` that a group's replies go to.
    pub fn chat_of(&self, channel: &str, group: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT chat FROM chats WHERE channel = ?1 AND group_id = ?2 LIMIT 1",
                params![channel, group],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Replies not yet delivered on `channel`, any group, oldest first.
    pub fn unsent_on(&self, channel: &str, limit: usize) -> Result<Vec<Outbound>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, group_id, channel, turn_id, text, created_at FROM outbox
             WHERE channel = ?1 AND sent_at IS NULL ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![channel, limit as i64], row_to_outbound)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// After a crash: turns still marked running were interrupted, and their messages go back to
    /// pending so they are answered. Returns how many messages were requeued.
    pub fn recover_interrupted(&self) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE turns SET status = 'interrupted', finished_at = ?1 WHERE status = 'running'",
            params![now()],
        )?;
        // A task's prompt is never run again as a message: its run is abandoned instead
        // (`tasks::abandon_running`), so the slot runs at most once.
        tx.execute(
            "UPDATE inbox SET status = 'done' WHERE status = 'processing' AND channel = 'task'",
            [],
        )?;
        let n = tx.execute(
            "UPDATE inbox SET status = 'pending', turn_id = NULL WHERE status = 'processing'",
            [],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Groups that have messages waiting.
    pub fn groups_with_pending(&self) -> Result<Vec<GroupId>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT group_id FROM inbox WHERE status = 'pending' AND triggered = 1 ORDER BY group_id",
        )?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Ids were validated when first stored; one that no longer parses is skipped, not trusted.
        Ok(ids.into_iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Claim every pending message of `group` for a new turn, in one transaction.
    /// Returns `None` when nothing is pending.
    pub fn claim_turn(&self, group: &GroupId) -> Result<Option<ClaimedTurn>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending: Vec<(Inbound, bool)> = {
            let mut stmt = tx.prepare(
                "SELECT id, channel, sender, text, triggered, role, outside FROM inbox
                 WHERE group_id = ?1 AND status = 'pending' ORDER BY id",
            )?;
            stmt.query_map([group.as_str()], |r| {
                Ok((
                    Inbound {
                        id: r.get(0)?,
                        channel: r.get(1)?,
                        sender: r.get(2)?,
                        text: r.get(3)?,
                        role: role_column(r, 5)?,
                        outside: r.get(6)?,
                    },
                    r.get(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        // Untriggered messages wait as context until a triggered one starts a turn.
        if !pending.iter().any(|(_, triggered)| *triggered) {
            return Ok(None);
        }
        let session_id = Self::current_session(&tx, group)?;
        tx.execute(
            "INSERT INTO turns (group_id, session_id, status, started_at) VALUES (?1, ?2, 'running', ?3)",
            params![group.as_str(), session_id, now()],
        )?;
        let turn = tx.last_insert_rowid();
        // A chat that talked for long between turns: the messages addressed to the agent and the
        // newest others go into the prompt; older chatter is left out (kept, done with this
        // turn) rather than flood it.
        let untriggered = pending.iter().filter(|(_, t)| !*t).count();
        let room = MAX_TURN_MESSAGES.saturating_sub(pending.len() - untriggered);
        let mut skip = untriggered.saturating_sub(room);
        let (mut messages, mut left_out) = (Vec::new(), Vec::new());
        for (m, triggered) in pending {
            if !triggered && skip > 0 {
                skip -= 1;
                left_out.push(m);
            } else {
                messages.push(m);
            }
        }
        for m in &left_out {
            tx.execute(
                "UPDATE inbox SET status = 'done', turn_id = ?1 WHERE id = ?2",
                params![turn, m.id],
            )?;
        }
        for m in &messages {
            tx.execute(
                "UPDATE inbox SET status = 'processing', turn_id = ?1 WHERE id = ?2",
                params![turn, m.id],
            )?;
        }
        tx.commit()?;
        Ok(Some(ClaimedTurn {
            id: turn,
            group: group.clone(),
            session_id,
            messages,
            left_out: left_out.len(),
            isolated: false,
        }))
    }

    fn current_session(conn: &Connection, group: &GroupId) -> Result<i64> {
        let open: Option<i64> = conn
            .query_row(
                "SELECT id FROM sessions WHERE group_id = ?1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
                [group.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = open {
            return Ok(id);
        }
        conn.execute(
            "INSERT INTO sessions (group_id, started_at) VALUES (?1, ?2)",
            params![group.as_str(), now()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// End the group's current session; the next turn starts a fresh one with no history.
    pub fn new_session(&self, group: &GroupId) -> Result<()> {
        let conn = self.conn();
        Self::ensure_group(&conn, group)?;
        conn.execute(
            "UPDATE sessions SET ended_at = ?1 WHERE group_id = ?2 AND ended_at IS NULL",
            params![now(), group.as_str()],
        )?;
        Ok(())
    }

    /// Persist one step of a turn (a message, a model response or a tool result).
    pub fn append_step(
        &self,
        turn: TurnId,
        seq: u32,
        message: &Message,
        usage: Usage,
    ) -> Result<()> {
        let json = serde_json::to_string(message)?;
        self.conn().execute(
            "INSERT INTO history (turn_id, seq, message, input_tokens, output_tokens, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                turn,
                seq,
                json,
                usage.input_tokens as i64,
                usage.output_tokens as i64,
                now()
            ],
        )?;
        Ok(())
    }

    /// Judge the group's memory as `turn` begins with it (`hash`): whether it is outside content.
    /// Content judged before keeps its judgement. Content that changed since is laid to the
    /// group's previous turn if that turn began with other content: outside content if that
    /// turn was tainted (it wrote what it read), trusted if not; a change with no turn to lay
    /// it to is the owner's, trusted. The turn's starting memory is recorded for the next one.
    pub fn judge_memory(&self, group: &GroupId, turn: TurnId, hash: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let judged: Option<(String, bool)> = tx
            .query_row(
                "SELECT hash, tainted FROM memory_state WHERE group_id = ?1",
                [group.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let tainted = match judged {
            Some((judged_hash, tainted)) if judged_hash == hash => tainted,
            _ => {
                let previous: Option<(bool, String)> = tx
                    .query_row(
                        "SELECT tainted, memory_hash FROM turns
                         WHERE group_id = ?1 AND id < ?2 AND memory_hash IS NOT NULL
                         ORDER BY id DESC LIMIT 1",
                        params![group.as_str(), turn],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                matches!(previous, Some((true, began_with)) if began_with != hash)
            }
        };
        tx.execute(
            "INSERT OR REPLACE INTO memory_state (group_id, hash, tainted) VALUES (?1, ?2, ?3)",
            params![group.as_str(), hash, tainted],
        )?;
        tx.execute(
            "UPDATE turns SET memory_hash = ?2 WHERE id = ?1",
            params![turn, hash],
        )?;
        tx.commit()?;
        Ok(tainted)
    }

    /// How the group's memory was last judged: its hash and whether it is outside content.
    pub fn memory_judgement(&self, group: &GroupId) -> Result<Option<(String, bool)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT hash, tainted FROM memory_state WHERE group_id = ?1",
                [group.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The owner vouches for the memory whose hash is `hash`: turns that begin with exactly
    /// that content take it as trusted.
    pub fn trust_memory(&self, group: &GroupId, hash: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO memory_state (group_id, hash, tainted) VALUES (?1, ?2, 0)",
            params![group.as_str(), hash],
        )?;
        Ok(())
    }

    /// Record that a turn has read outside content.
    pub fn mark_tainted(&self, turn: TurnId) -> Result<()> {
        self.conn()
            .execute("UPDATE turns SET tainted = 1 WHERE id = ?1", [turn])?;
        Ok(())
    }

    /// The steps of the session's completed turns, newest turns first, whole turns only, until
    /// `budget_tokens` is spent. Returned oldest first, ready for the prompt, with whether any
    /// of those turns read outside content.
    pub fn history(
        &self,
        session_id: i64,
        before_turn: TurnId,
        budget_tokens: usize,
    ) -> Result<History> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT h.turn_id, h.message, t.tainted FROM history h JOIN turns t ON t.id = h.turn_id
             WHERE t.session_id = ?1 AND t.status = 'done' AND t.id < ?2
             ORDER BY h.turn_id DESC, h.seq ASC",
        )?;
        let rows = stmt
            .query_map(params![session_id, before_turn], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut turns: Vec<(Vec<Message>, bool)> = Vec::new();
        let mut current = None;
        for (turn, json, tainted) in rows {
            if current != Some(turn) {
                turns.push((Vec::new(), tainted));
                current = Some(turn);
            }
            if let Some((t, _)) = turns.last_mut() {
                t.push(serde_json::from_str(&json)?);
            }
        }
        let mut spent = 0usize;
        let mut kept = Vec::new();
        let mut tainted = false;
        for (turn, turn_tainted) in turns {
            let cost: usize = turn.iter().map(Message::approx_tokens).sum();
            if spent + cost > budget_tokens {
                break;
            }
            spent += cost;
            tainted |= turn_tainted;
            kept.push(turn);
        }
        Ok(History {
            messages: kept.into_iter().rev().flatten().collect(),
            tainted,
        })
    }

    /// Finish a turn in one transaction: its reply (or failure notice) into the outbox, its
    /// messages marked done. Either all of this happens or none of it.
    /// Start a turn for a task run: its prompt enters the inbox already claimed, on the `task`
    /// channel, so no chat turn picks it up. It speaks with its creator's `role`, and is
    /// outside content only when `outside` (a tainted turn wrote it, or another did).
    pub fn start_task_turn(&self, group: &GroupId, run: &TaskPrompt<'_>) -> Result<ClaimedTurn> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::ensure_group(&tx, group)?;
        let session_id = Self::current_session(&tx, group)?;
        tx.execute(
            "INSERT INTO turns (group_id, session_id, status, started_at) VALUES (?1, ?2, 'running', ?3)",
            params![group.as_str(), session_id, now()],
        )?;
        let turn = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO inbox (group_id, channel, sender, text, status, turn_id, received_at, role, outside)
             VALUES (?1, 'task', ?2, ?3, 'processing', ?4, ?5, ?6, ?7)",
            params![group.as_str(), run.sender, run.prompt, turn, now(), run.role.as_str(), run.outside],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(ClaimedTurn {
            id: turn,
            group: group.clone(),
            session_id,
            messages: vec![Inbound {
                id,
                channel: "task".into(),
                sender: run.sender.into(),
                role: run.role,
                outside: run.outside,
                text: run.prompt.into(),
            }],
            left_out: 0,
            isolated: run.isolated,
        })
    }

    /// The channel the group last heard from (a chat, not a task), for posting task results.
    pub fn last_chat_channel(&self, group: &GroupId) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT channel FROM inbox WHERE group_id = ?1 AND channel != 'task' ORDER BY id DESC LIMIT 1",
                [group.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Finish a turn and put its reply in the outbox for `channel`.
    pub fn finish_turn(&self, turn: &ClaimedTurn, channel: &str, end: TurnEnd<'_>) -> Result<i64> {
        self.finish(turn, Some(channel), end)
            .map(|id| id.unwrap_or(0))
    }

    /// Finish a turn; its reply goes to the outbox only when `channel` is given (a silent task
    /// keeps its result in its run log).
    pub fn finish(
        &self,
        turn: &ClaimedTurn,
        channel: Option<&str>,
        end: TurnEnd<'_>,
    ) -> Result<Option<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (status, error, text) = match end {
            TurnEnd::Done { reply } => ("done", None, reply),
            TurnEnd::Failed { error, notice } => ("failed", Some(error), notice),
        };
        tx.execute(
            "UPDATE turns SET status = ?1, error = ?2, finished_at = ?3 WHERE id = ?4",
            params![status, error, now(), turn.id],
        )?;
        tx.execute(
            "UPDATE inbox SET status = 'done' WHERE turn_id = ?1",
            [turn.id],
        )?;
        let id = match channel {
            Some(channel) => {
                tx.execute(
                    "INSERT INTO outbox (group_id, channel, turn_id, text, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![turn.group.as_str(), channel, turn.id, text, now()],
                )?;
                Some(tx.last_insert_rowid())
            }
            None => None,
        };
        tx.commit()?;
        Ok(id)
    }

    /// Outbox rows of a group with id greater than `after`, oldest first (sent or not).
    pub fn replies_after(
        &self,
        group: &GroupId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Outbound>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, group_id, channel, turn_id, text, created_at FROM outbox
             WHERE group_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(
                params![group.as_str(), after, limit as i64],
                row_to_outbound,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Unsent outbox rows of a group for a channel, oldest first.
    pub fn unsent(&self, group: &GroupId, channel: &str) -> Result<Vec<Outbound>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, group_id, channel, turn_id, text, created_at FROM outbox
             WHERE group_id = ?1 AND channel = ?2 AND sent_at IS NULL ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![group.as_str(), channel], row_to_outbound)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Mark outbox rows as accepted by their channel. Returns the ids that were not marked
    /// before (a reply shown twice is sent once).
    pub fn mark_sent(&self, ids: &[i64]) -> Result<Vec<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut marked = Vec::new();
        for id in ids {
            let n = tx.execute(
                "UPDATE outbox SET sent_at = ?1 WHERE id = ?2 AND sent_at IS NULL",
                params![now(), id],
            )?;
            if n == 1 {
                marked.push(*id);
            }
        }
        tx.commit()?;
        Ok(marked)
    }
}

fn row_to_outbound(r: &rusqlite::Row<'_>) -> rusqlite::Result<Outbound> {
    Ok(Outbound {
        id: r.get(0)?,
        group: r.get(1)?,
        channel: r.get(2)?,
        turn_id: r.get(3)?,
        text: r.get(4)?,
        created_at: r.get(5)?,
    })
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
