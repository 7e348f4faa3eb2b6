//! Turns: claiming pending messages, sessions, each step's history, the memory judgement,
//! taint, and finishing a turn with its reply in one transaction.

use nanoclaw_core::GroupId;
use nanoclaw_core::policy::SenderRole;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::inbox::{Inbound, role_column};
use super::{Result, Store, TurnId, now};
use crate::model::{Message, Usage};

/// The most pending messages one turn takes into its prompt (the newest).
pub const MAX_TURN_MESSAGES: usize = 100;

/// The part of a session's past that goes into a prompt.
#[derive(Debug)]
pub struct History {
    pub messages: Vec<Message>,
    /// One of those turns read outside content.
    pub tainted: bool,
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
#[derive(Clone, Debug)]
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

/// How a turn ended, for [`Store::finish_turn`].
pub enum TurnEnd<'a> {
    /// Answered; the reply goes to the outbox.
    Done { reply: &'a str },
    /// Failed; `notice` tells the user why and goes to the outbox.
    Failed { error: &'a str, notice: &'a str },
}

impl Store {
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

    /// Keep `group` from starting turns (chat turns and task runs) until [`Store::resume`].
    /// Returns false when it was paused already.
    pub fn pause(&self, group: &GroupId) -> Result<bool> {
        Ok(self.conn().execute(
            "INSERT OR IGNORE INTO group_pauses (group_id, paused_at) VALUES (?1, ?2)",
            params![group.as_str(), now()],
        )? == 1)
    }

    /// Let a paused group start turns again. Returns false when it was not paused.
    pub fn resume(&self, group: &GroupId) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM group_pauses WHERE group_id = ?1",
            [group.as_str()],
        )? == 1)
    }

    /// The paused groups, by name.
    pub fn paused_groups(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT group_id FROM group_pauses ORDER BY group_id")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    pub fn is_paused(&self, group: &GroupId) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM group_pauses WHERE group_id = ?1",
                [group.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Claim every pending message of `group` for a new turn, in one transaction.
    /// Returns `None` when nothing is pending, or the group is paused.
    pub fn claim_turn(&self, group: &GroupId) -> Result<Option<ClaimedTurn>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let paused: Option<i64> = tx
            .query_row(
                "SELECT paused_at FROM group_pauses WHERE group_id = ?1",
                [group.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if paused.is_some() {
            return Ok(None);
        }
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
}
