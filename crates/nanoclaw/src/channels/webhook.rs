//! The webhook channel: anything that can sign an HTTP request can talk to the agent.
//!
//! Inbound: `POST /v1/webhook` on the daemon's API listener, a JSON body
//! `{"id": "...", "chat": "...", "sender": "...", "text": "..."}`, and the header
//! `X-Nanoclaw-Signature: sha256=<hex HMAC-SHA256 of the body>` under the key stored as the
//! secret the config names. A bad or missing signature is a 401 and nothing is stored. The
//! message is routed ([`crate::channels::router`]) and committed before the 200; an `id` seen before is
//! acknowledged again and stored once.
//!
//! Outbound: replies for webhook chats are posted as `{"chat", "group", "text", "reply_id"}` to the
//! configured callback URL, signed the same way, and marked sent only after a 2xx; failures
//! are retried with backoff ([`crate::channels::outbox`]), so a reply is delivered at least once.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::agent::queue::Queue;
use crate::channels::router::Rules;
use crate::store::Store;

pub const CHANNEL: &str = "webhook";
pub const SIGNATURE_HEADER: &str = "x-nanoclaw-signature";
/// The longest text accepted in one message.
const MAX_TEXT: usize = 64 * 1024;
/// Longest message id.
const MAX_ID: usize = 256;

/// The channel as configured, with its key opened from the secrets store.
pub struct Webhook {
    pub rules: Rules,
    pub key: ring::hmac::Key,
    pub callback_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inbound {
    /// Unique per message, required: the signature covers only the body, so a recorded request
    /// replayed is recognised by its id and stored once.
    id: String,
    chat: String,
    sender: String,
    text: String,
}

/// Why an inbound request was refused: (HTTP status, message).
pub type Refused = (u16, String);

/// The signature header's value for `body`.
pub fn sign(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    format!("sha256={}", nanoclaw_core::hex::encode(tag.as_ref()))
}

fn verify(key: &ring::hmac::Key, body: &[u8], header: Option<&str>) -> Result<(), Refused> {
    let Some(header) = header else {
        return Err((
            401,
            format!("missing {SIGNATURE_HEADER}: sha256=<hex HMAC of the body>"),
        ));
    };
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return Err((
            401,
            format!("{SIGNATURE_HEADER} must be sha256=<hex HMAC of the body>"),
        ));
    };
    match nanoclaw_core::hex::decode(hex) {
        Some(tag) if ring::hmac::verify(key, body, &tag).is_ok() => Ok(()),
        _ => Err((401, "the signature does not match the body".into())),
    }
}

impl Webhook {
    /// Check, route and commit one inbound request. Returns the JSON answer.
    pub fn receive(
        &self,
        queue: &Arc<Queue>,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<serde_json::Value, Refused> {
        verify(&self.key, body, signature)?;
        let msg: Inbound = serde_json::from_slice(body).map_err(|e| {
            tracing::warn!(channel = CHANNEL, error = %e, "malformed webhook payload");
            (
                400,
                format!("body must be {{\"id\", \"chat\", \"sender\", \"text\"}}: {e}"),
            )
        })?;
        if msg.id.trim().is_empty() || msg.id.len() > MAX_ID {
            return Err((
                400,
                format!("id must be 1 to {MAX_ID} bytes, unique per message"),
            ));
        }
        for (field, value) in [("chat", &msg.chat), ("sender", &msg.sender)] {
            if value.trim().is_empty()
                || value.len() > MAX_ID
                || value.chars().any(char::is_control)
            {
                return Err((
                    400,
                    format!("{field} must be 1 to {MAX_ID} bytes, without control characters"),
                ));
            }
        }
        if msg.text.trim().is_empty() || msg.text.len() > MAX_TEXT {
            return Err((400, format!("text must be 1 to {MAX_TEXT} bytes")));
        }
        let inbound = crate::channels::Inbound {
            channel: CHANNEL,
            text: &msg.text,
            external_id: Some(&msg.id),
            from: crate::channels::From::Chat {
                rules: &self.rules,
                chat: &msg.chat,
                sender: &msg.sender,
                named: &msg.sender,
                addressed: false,
            },
        };
        let accepted = crate::channels::accept(queue.agent(), Some(queue), &inbound, |_| Ok(()))
            .map_err(|e| (500, format!("could not store the message: {e}")))?;
        Ok(match accepted {
            crate::channels::Accepted::Stopped { group, was_running } => {
                json!({"stopped": was_running, "group": group.as_str()})
            }
            crate::channels::Accepted::Ignored { why } => {
                // Debug-quoted: a sender's words must not forge log lines.
                tracing::info!(channel = CHANNEL, chat = ?msg.chat, sender = ?msg.sender, why = ?why, "message ignored");
                json!({"ignored": why})
            }
            crate::channels::Accepted::Stored {
                group, held: true, ..
            } => {
                json!({"held": "the sender is not known here; the owner is asked to admit them", "group": group.as_str()})
            }
            crate::channels::Accepted::Stored {
                group,
                id: Some(id),
                triggered,
                ..
            } => json!({"id": id, "group": group.as_str(), "triggered": triggered}),
            crate::channels::Accepted::Stored {
                group, id: None, ..
            } => {
                json!({"duplicate": true, "group": group.as_str()})
            }
        })
    }

    /// Deliver replies to the callback URL until the process ends.
    async fn deliver_replies(self: Arc<Self>, store: Arc<Store>, audit: Arc<crate::audit::Audit>) {
        let Some(url) = self.callback_url.clone() else {
            return;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook delivery cannot start");
                return;
            }
        };
        let (me, http, url, store_ref) = (&*self, &http, url.as_str(), &*store);
        crate::channels::outbox::deliver(store_ref, &audit, CHANNEL, |reply| async move {
            let chat = store_ref.chat_of(CHANNEL, &reply.group).ok().flatten();
            let body = json!({"chat": chat, "group": reply.group, "text": reply.text, "reply_id": reply.id}).to_string();
            let sent = http
                .post(url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, sign(&me.key, body.as_bytes()))
                .body(body)
                .send()
                .await
                .map_err(|e| format!("callback unreachable: {e}"))?;
            if sent.status().is_success() {
                Ok(crate::channels::outbox::Sent::Delivered)
            } else {
                Err(format!("callback answered {}", sent.status().as_u16()))
            }
        })
        .await;
    }
}

impl crate::channels::Channel for Webhook {
    fn name(&self) -> &'static str {
        CHANNEL
    }
    /// Inbound requests arrive on the HTTP API's listener ([`Webhook::receive`]); there is
    /// nothing to run here.
    /// Messages arrive on the HTTP API's listener: connected while it is.
    fn receive(
        self: Arc<Self>,
        _queue: Arc<Queue>,
        health: super::health::Health,
    ) -> crate::channels::Running {
        health.connected(CHANNEL);
        Box::pin(async {})
    }
    fn deliver(
        self: Arc<Self>,
        store: Arc<Store>,
        audit: Arc<crate::audit::Audit>,
    ) -> crate::channels::Running {
        Box::pin(self.deliver_replies(store, audit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_exact_body_and_key() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"0123456789abcdef");
        let body = br#"{"chat":"c","sender":"s","text":"t"}"#;
        let sig = sign(&key, body);
        assert!(verify(&key, body, Some(&sig)).is_ok());
        assert_eq!(verify(&key, b"other", Some(&sig)).unwrap_err().0, 401);
        let other = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"another key 1234");
        assert!(verify(&other, body, Some(&sig)).is_err());
        assert!(verify(&key, body, None).is_err());
        assert!(verify(&key, body, Some("sha256=zz")).is_err());
        // A sign inside a digit pair is not hex.
        let good = sign(&key, body);
        let signed = good.replacen("sha256=", "sha256=+", 1);
        assert!(verify(&key, body, Some(&signed[..signed.len() - 1])).is_err());
        assert!(
            verify(&key, body, Some(good.trim_start_matches("sha256=")))
                .unwrap_err()
                .1
                .contains("must be sha256=")
        );
        assert!(verify(&key, body, Some("md5=00")).is_err());
    }
}
