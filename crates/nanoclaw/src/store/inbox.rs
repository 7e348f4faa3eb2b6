//! The inbox: messages as channels committed them (with the sender's role their channel
//! decided), the chats they came from, and each channel's saved position.

use nanoclaw_core::GroupId;
use nanoclaw_core::policy::SenderRole;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{InboxId, Result, Store, now};

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

impl Store {
    /// Messages waiting for a turn, by group.
    pub fn pending_counts(&self) -> Result<Vec<(String, i64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT group_id, count(*) FROM inbox WHERE status = 'pending' GROUP BY group_id ORDER BY group_id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
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

    /// Whether any message, turn or task ever named `group`.
    pub fn group_known(&self, group: &GroupId) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM groups WHERE id = ?1",
                [group.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Withdraw a message no turn has taken yet (it is kept, marked done, in no turn); or say
    /// which turn took it.
    pub fn withdraw(&self, id: InboxId) -> Result<Withdrawal> {
        let conn = self.conn();
        let withdrawn = conn.execute(
            "UPDATE inbox SET status = 'done' WHERE id = ?1 AND status = 'pending' AND turn_id IS NULL",
            [id],
        )?;
        if withdrawn == 1 {
            return Ok(Withdrawal::Withdrawn);
        }
        let turn: Option<Option<i64>> = conn
            .query_row("SELECT turn_id FROM inbox WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(match turn {
            Some(Some(turn)) => Withdrawal::Taken(turn),
            _ => Withdrawal::Unknown,
        })
    }
}

/// What [`Store::withdraw`] found.
#[derive(Debug, PartialEq)]
pub enum Withdrawal {
    /// Withdrawn before any turn took it.
    Withdrawn,
    /// This turn took it (it may be running or over).
    Taken(super::TurnId),
    /// No such message (or one withdrawn before).
    Unknown,
}
