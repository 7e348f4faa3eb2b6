//! The outbox: replies waiting for their channel, and marking them sent once it took them.

use nanoclaw_core::GroupId;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{InboxId, Result, Store, TurnId, now};

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

/// Where the reply to one inbound message stands.
pub enum ReplyTo {
    /// Its turn has not finished (or not started).
    Waiting,
    /// The reply, not yet handed over; `failed` when the turn failed.
    Here { reply: Outbound, failed: bool },
    /// Its turn finished and replied on another channel.
    Elsewhere { channel: String },
}

impl Store {
    /// The reply, on `channel`, to the turn that took inbox message `inbox_id`.
    pub fn reply_to(&self, inbox_id: InboxId, channel: &str) -> Result<ReplyTo> {
        let conn = self.conn();
        let turn: Option<(i64, String)> = conn
            .query_row(
                "SELECT t.id, t.status FROM inbox i JOIN turns t ON t.id = i.turn_id WHERE i.id = ?1",
                [inbox_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((turn, status)) = turn else {
            return Ok(ReplyTo::Waiting);
        };
        if status != "done" && status != "failed" {
            return Ok(ReplyTo::Waiting);
        }
        let reply: Option<(Outbound, bool)> = conn
            .query_row(
                "SELECT id, group_id, channel, turn_id, text, created_at, sent_at IS NOT NULL FROM outbox
                 WHERE turn_id = ?1 ORDER BY id LIMIT 1",
                [turn],
                |r| Ok((row_to_outbound(r)?, r.get(6)?)),
            )
            .optional()?;
        Ok(match reply {
            Some((reply, false)) if reply.channel == channel => ReplyTo::Here {
                reply,
                failed: status == "failed",
            },
            Some((reply, _)) if reply.channel != channel => ReplyTo::Elsewhere {
                channel: reply.channel,
            },
            // Handed over already, or no reply at all: nothing more will come.
            _ => ReplyTo::Elsewhere {
                channel: channel.to_owned(),
            },
        })
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

    /// The inbox ids of the messages turn `turn` answered, and whether it failed.
    pub fn answered_by(&self, turn: TurnId) -> Result<(Vec<InboxId>, bool)> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM inbox WHERE turn_id = ?1 ORDER BY id")?;
        let ids = stmt
            .query_map([turn], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<InboxId>>>()?;
        let failed: bool = conn
            .query_row(
                "SELECT status = 'failed' FROM turns WHERE id = ?1",
                [turn],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false);
        Ok((ids, failed))
    }

    /// Unsent replies of a group on `channel` to turns no message of that channel started
    /// (task runs posting there), oldest first: what a watcher of the channel is shown.
    pub fn unsent_unasked(&self, group: &GroupId, channel: &str) -> Result<Vec<Outbound>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT o.id, o.group_id, o.channel, o.turn_id, o.text, o.created_at FROM outbox o
             WHERE o.group_id = ?1 AND o.channel = ?2 AND o.sent_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.turn_id = o.turn_id AND i.channel = ?2)
             ORDER BY o.id",
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
