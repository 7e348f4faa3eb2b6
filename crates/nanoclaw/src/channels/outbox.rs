//! Delivering a channel's replies from the outbox: the one loop every outbound channel runs.
//! A reply is marked sent only once the channel delivered it, or once the channel says it can
//! never be delivered; any other failure stops the round and retries it after a doubling
//! backoff, so replies go out in order and at least once.

use std::future::Future;
use std::time::Duration;

use serde_json::json;

use crate::audit::{Audit, EventKind};
use crate::store::{Outbound, Store, StoreError};

/// Replies read per round.
const BATCH: usize = 20;
/// How often an idle outbox is looked at, and the first and longest waits after a failure.
const IDLE: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How one delivery attempt ended, when it did not fail for now.
pub enum Sent {
    Delivered,
    /// It can never be delivered (no chat to answer in, refused for good): logged and marked
    /// sent so it stops.
    Undeliverable(String),
}

/// The channel accepted `replies`: they are marked sent and each is a `message_sent` event
/// (recorded here, when the channel took it, not when the turn queued it). Every channel's
/// delivery ends here.
pub fn delivered(store: &Store, audit: &Audit, replies: &[&Outbound]) -> Result<(), StoreError> {
    let ids: Vec<i64> = replies.iter().map(|r| r.id).collect();
    let marked = store.mark_sent(&ids)?;
    for r in replies.iter().filter(|r| marked.contains(&r.id)) {
        audit.record(
            EventKind::MessageSent,
            Some(&r.group),
            json!({"turn": r.turn_id, "outbox_id": r.id, "channel": r.channel, "text": r.text}),
        );
    }
    Ok(())
}

/// Deliver `channel`'s replies with `send` until the process ends.
pub async fn deliver<F, Fut>(store: &Store, audit: &Audit, channel: &str, mut send: F)
where
    F: FnMut(Outbound) -> Fut,
    Fut: Future<Output = Result<Sent, String>>,
{
    let mut backoff = IDLE;
    loop {
        let pending = match store.unsent_on(channel, BATCH) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(channel, error = %e, "reading the outbox");
                Vec::new()
            }
        };
        let mut failed = false;
        let idle = pending.is_empty();
        for reply in pending {
            match send(reply.clone()).await {
                Ok(Sent::Delivered) => {
                    if let Err(e) = delivered(store, audit, &[&reply]) {
                        tracing::error!(channel, error = %e, "could not mark a reply sent");
                    }
                }
                Ok(Sent::Undeliverable(why)) => {
                    tracing::warn!(channel, group = %reply.group, %why, "reply cannot be delivered; dropped");
                    if let Err(e) = store.mark_sent(&[reply.id]) {
                        tracing::error!(channel, error = %e, "could not mark a reply dropped");
                    }
                }
                Err(e) => {
                    tracing::warn!(channel, error = %e, ?backoff, "sending failed; will retry");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = IDLE;
            if idle {
                tokio::time::sleep(IDLE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_core::GroupId;
    use nanoclaw_core::policy::SenderRole;

    #[test]
    fn a_reply_is_recorded_as_sent_once_when_the_channel_took_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let store = Store::open(&db).unwrap();
        let audit = Audit::open(&db, Default::default()).unwrap();
        let group = GroupId::main();
        store
            .accept_inbound(&group, "api", "api", SenderRole::Owner, "hi")
            .unwrap();
        let turn = store.claim_turn(&group).unwrap().unwrap();
        store
            .finish_turn(&turn, "api", crate::store::TurnEnd::Done { reply: "hello" })
            .unwrap();
        let sent = |audit: &Audit| -> i64 {
            audit.flush();
            store
                .with_conn(|c| {
                    Ok(c.query_row(
                        "SELECT count(*) FROM audit WHERE kind = 'message_sent'",
                        [],
                        |r| r.get(0),
                    )?)
                })
                .unwrap()
        };
        // Queued is not sent.
        assert_eq!(sent(&audit), 0);
        let replies = store.unsent(&group, "api").unwrap();
        delivered(&store, &audit, &replies.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(sent(&audit), 1);
        // Shown again (a second GET): still sent once.
        delivered(&store, &audit, &replies.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(sent(&audit), 1);
        audit.close();
    }
}
