//! The Telegram channel, over the Bot API: long polling for updates, sending replies, and
//! approval requests with inline approve/deny buttons.
//!
//! - An update is committed to the inbox (routed by [`crate::channels::router`]) before the polling
//!   offset moves past it; the offset is kept in the store, so a crash redelivers at most the
//!   updates after the last stored one, and those are stored once (by update id).
//! - Replies are split within Telegram's limit of 4,096 UTF-16 units at paragraph, then line,
//!   then word boundaries; messages to one chat are spaced as Telegram asks (1 s, 3 s in
//!   groups), and a 429 waits the `retry_after` Telegram gives (at most five minutes).
//! - A button press is checked against the pending request (id and code in the callback data)
//!   and the pressing user against that request's approvers (`ids.telegram` in policy.toml).
//! - The bot token is a secret used only here, on the host; errors never show the URL that
//!   holds it.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_core::approval::{Tally, Vote};

use crate::agent::approvals::{AnswerError, Answerer};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::agent::approvals::{Presenter, Request};
use crate::agent::queue::Queue;
use crate::channels::router::Rules;
use crate::store::Store;

pub const CHANNEL: &str = "telegram";
/// Telegram's limit on one message's text, in UTF-16 code units (an emoji outside the Basic
/// Multilingual Plane counts two).
pub const MAX_MESSAGE: usize = 4096;

pub struct Telegram {
    /// The Bot API's host, for messages (`base` holds the token and is never shown).
    host: String,
    base: String,
    http: reqwest::Client,
    rules: Rules,
    poll_timeout: u64,
    store: Arc<Store>,
    /// The policy in force now (who the approvers are), from the agent: it can be reloaded.
    policy: Arc<dyn Fn() -> Arc<nanoclaw_core::Policy> + Send + Sync>,
    audit: Arc<crate::audit::Audit>,
    /// When each chat may next be sent to: Telegram asks for at most one message a second in
    /// a chat and twenty a minute in a group. A std Mutex: never held across an await.
    next_send: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

/// The spacing Telegram asks for between messages to one chat (groups have negative ids).
fn spacing(chat: &str) -> Duration {
    if chat.starts_with('-') {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("Telegram API: {0}")]
    Http(String),
    #[error("Telegram API error {code}: {description}")]
    Api { code: i64, description: String },
    #[error("Telegram asks to wait {0} s")]
    RateLimited(u64),
    #[error("malformed Telegram response: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct ApiResponse {
    ok: bool,
    result: Option<Value>,
    error_code: Option<i64>,
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

#[derive(Deserialize)]
struct Update {
    update_id: i64,
    message: Option<Message>,
    callback_query: Option<CallbackQuery>,
}

#[derive(Deserialize)]
struct Message {
    chat: Chat,
    from: Option<User>,
    text: Option<String>,
    reply_to_message: Option<Box<Message>>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
}

#[derive(Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
}

#[derive(Deserialize)]
struct CallbackQuery {
    id: String,
    from: User,
    data: Option<String>,
}

/// Split `text` into pieces of at most `max` UTF-16 code units (as Telegram counts), at
/// paragraph, then line, then word boundaries, cutting mid-word only when a word is longer
/// than `max`, and never inside a character. A piece that would hold only whitespace is left
/// out (Telegram refuses an empty message); a line's indentation is kept.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_end();
    while rest.encode_utf16().count() > max {
        // The byte where the first character that would pass `max` units begins; at least one
        // character, so a limit below one character's width cannot stall the loop.
        let mut units = 0;
        let cut_byte = rest
            .char_indices()
            .find(|(_, c)| {
                units += c.len_utf16();
                units > max
            })
            .map_or(rest.len(), |(i, _)| i)
            .max(rest.chars().next().map_or(0, char::len_utf8));
        let window = &rest[..cut_byte];
        let at = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window.rfind(sep).filter(|i| *i > 0).map(|i| (i, sep.len())));
        let (piece, skip) = match at {
            Some((i, len)) => (&rest[..i], len),
            None => (window, 0),
        };
        if !piece.trim().is_empty() {
            out.push(piece.trim_end().to_owned());
        }
        rest = rest[piece.len() + skip..].trim_start_matches('\n');
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

impl Telegram {
    fn policy_now(&self) -> Arc<nanoclaw_core::Policy> {
        (self.policy)()
    }

    pub fn new(
        config: &crate::config::channels::TelegramConfig,
        token: &str,
        store: Arc<Store>,
        policy: Arc<dyn Fn() -> Arc<nanoclaw_core::Policy> + Send + Sync>,
        audit: Arc<crate::audit::Audit>,
    ) -> anyhow::Result<Telegram> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No redirects: the Bot API never sends one, and following one could carry a request
        // (and its body) to a host the token is not bound to.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.poll_timeout_secs + 15))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Telegram {
            base: format!("{}/bot{token}", config.api_base.trim_end_matches('/')),
            host: crate::app::host_of_url(&config.api_base),
            http,
            rules: config.rules.clone(),
            poll_timeout: config.poll_timeout_secs,
            store,
            policy,
            audit,
            next_send: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// `nanoclaw doctor`: whether the Bot API takes the token (`getMe`), in words naming the
    /// host; `Err` says what failed, "TOKEN REJECTED" when the platform refused it.
    pub async fn check(
        config: &crate::config::channels::TelegramConfig,
        token: &str,
    ) -> Result<String, String> {
        let host = crate::app::host_of_url(&config.api_base);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let resp = http
            .post(format!(
                "{}/bot{token}/getMe",
                config.api_base.trim_end_matches('/')
            ))
            .send()
            .await
            // Never the URL: it holds the token.
            .map_err(|e| format!("{host} cannot be reached: {}", e.without_url()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(format!("TOKEN REJECTED by {host} ({status})"));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{host} cut its answer to getMe: {}", e.without_url()))?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{host} answered getMe with something that is not JSON: {e}"))?;
        match body["result"]["username"].as_str() {
            Some(name) if body["ok"] == true => Ok(format!("{host} knows the bot as @{name}")),
            _ => Err(format!(
                "{host} refused getMe ({status}): {}",
                body["description"].as_str().unwrap_or("no description")
            )),
        }
    }

    /// Wait until `chat` may be sent to, and book the next slot.
    async fn pace(&self, chat: &str) {
        let now = tokio::time::Instant::now();
        let at = {
            let mut next = self.next_send.lock().unwrap_or_else(|p| p.into_inner());
            let at = next.get(chat).copied().filter(|t| *t > now).unwrap_or(now);
            next.insert(chat.to_owned(), at + spacing(chat));
            at
        };
        tokio::time::sleep_until(at).await;
    }

    async fn call(&self, method: &str, mut body: Value) -> Result<Value, TelegramError> {
        if method == "sendMessage"
            && let Some(fields) = body.as_object_mut()
        {
            // No link previews, ever: Telegram's servers would fetch every URL in a reply, an
            // egress path past the proxy (a tainted turn could put data in a URL). Both the
            // current field and the one older Bot API servers read.
            fields.insert("link_preview_options".into(), json!({"is_disabled": true}));
            fields.insert("disable_web_page_preview".into(), Value::Bool(true));
        }
        let resp = self
            .http
            .post(format!("{}/{method}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            // Never the URL: it holds the token.
            .map_err(|e| TelegramError::Http(e.without_url().to_string()))?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| TelegramError::Http(e.without_url().to_string()))?;
        let r: ApiResponse = serde_json::from_slice(&bytes)
            .map_err(|e| TelegramError::Malformed(format!("{method}: {e}")))?;
        if r.ok {
            return Ok(r.result.unwrap_or(Value::Null));
        }
        let code = r.error_code.unwrap_or(0);
        if code == 429 {
            return Err(TelegramError::RateLimited(
                r.parameters.and_then(|p| p.retry_after).unwrap_or(1),
            ));
        }
        Err(TelegramError::Api {
            code,
            description: r.description.unwrap_or_default(),
        })
    }

    fn offset(&self) -> i64 {
        self.store
            .channel_state(CHANNEL, "offset")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn set_offset(&self, offset: i64) {
        let _ = self.store.set_channel_state(CHANNEL, "offset", offset);
    }

    /// Poll for updates until the process ends, reconnecting with backoff; a token the Bot API
    /// rejects ends the polling (retrying cannot help; a new secret restarts the channel).
    async fn poll(self: Arc<Self>, queue: Arc<Queue>, health: super::health::Health) {
        let mut backoff = Duration::from_secs(1);
        health.starting(CHANNEL);
        loop {
            let offset = self.offset();
            let got = self
                .call(
                    "getUpdates",
                    json!({"offset": offset, "timeout": self.poll_timeout, "allowed_updates": ["message", "callback_query"]}),
                )
                .await;
            let updates = match got {
                Ok(v) => {
                    health.connected(CHANNEL);
                    v
                }
                Err(TelegramError::RateLimited(secs)) => {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    continue;
                }
                Err(TelegramError::Api { code, description }) if code == 401 || code == 403 => {
                    let error = format!("{} answered {code} {description}", self.host);
                    tracing::error!(channel = CHANNEL, %error, "the bot token was rejected; polling stops until the secret changes");
                    health.rejected(CHANNEL, &error);
                    return;
                }
                Err(e) => {
                    health.retrying(CHANNEL, &format!("{}: {e}", self.host));
                    tracing::warn!(channel = CHANNEL, error = %e, ?backoff, "polling failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            let Value::Array(items) = updates else {
                tracing::warn!(channel = CHANNEL, "getUpdates did not return a list");
                continue;
            };
            for item in items {
                let id = item.get("update_id").and_then(Value::as_i64);
                match serde_json::from_value::<Update>(item) {
                    Ok(update) => {
                        let next = update.update_id + 1;
                        if self.handle(&queue, update).await {
                            // Only once the update is stored does the offset move past it.
                            self.set_offset(next);
                        } else {
                            break;
                        }
                    }
                    Err(e) => {
                        // A payload we cannot read is logged and skipped, never fatal.
                        tracing::warn!(channel = CHANNEL, error = %e, "malformed update skipped");
                        if let Some(id) = id {
                            self.set_offset(id + 1);
                        }
                    }
                }
            }
        }
    }

    /// One update. Returns false when it could not be stored (the offset stays).
    async fn handle(&self, queue: &Arc<Queue>, update: Update) -> bool {
        if let Some(q) = update.callback_query {
            self.button(q).await;
            return true;
        }
        let Some(msg) = update.message else {
            return true;
        };
        let (Some(text), Some(from)) = (msg.text.as_deref(), msg.from.as_ref()) else {
            return true;
        };
        if from.is_bot {
            return true;
        }
        let chat = msg.chat.id.to_string();
        let sender = from.id.to_string();
        // A reply to the bot counts as addressing it.
        let replying = msg
            .reply_to_message
            .as_ref()
            .and_then(|m| m.from.as_ref())
            .is_some_and(|u| u.is_bot);
        if let Some((code, vote)) = crate::channels::approval_text::parse_command(text) {
            self.answer(&sender, &code, vote, &chat).await;
            return true;
        }
        let external = update.update_id.to_string();
        let msg = crate::channels::Inbound {
            channel: CHANNEL,
            text,
            external_id: Some(&external),
            from: crate::channels::From::Chat {
                rules: &self.rules,
                chat: &chat,
                sender: &sender,
                named: &sender,
                addressed: replying,
            },
        };
        match crate::channels::accept(queue.agent(), Some(queue), &msg, |_| Ok(())) {
            Ok(crate::channels::Accepted::Ignored { why }) => {
                tracing::info!(channel = CHANNEL, chat = ?chat, sender = ?sender, why = ?why, "message ignored");
                true
            }
            Ok(crate::channels::Accepted::Stored { .. }) => true,
            Ok(crate::channels::Accepted::Stopped { was_running, .. }) => {
                let text = if was_running {
                    "stopped the running turn; queued messages stay queued"
                } else {
                    "nothing was running"
                };
                let _ = self
                    .call("sendMessage", json!({"chat_id": chat, "text": text}))
                    .await;
                true
            }
            Err(e) => {
                tracing::error!(channel = CHANNEL, error = %e, "could not store an update; will retry");
                false
            }
        }
    }

    /// `/approve` or `/deny` typed in a chat. From anyone who is not an approver it is ignored:
    /// no vote is stored and nothing is said, so strangers can neither fill the store nor learn
    /// which requests are open.
    async fn answer(&self, user: &str, key: &str, vote: Vote, chat: &str) {
        let text = match self.vote(user, key, vote) {
            Err(AnswerError::Stranger) => {
                tracing::info!(channel = CHANNEL, user = ?user, chat = ?chat, "an approval command from someone who is not an approver; ignored");
                return;
            }
            Ok(t) => crate::channels::approval_text::describe_tally(&t),
            Err(e) => e.to_string(),
        };
        let _ = self
            .call("sendMessage", json!({"chat_id": chat, "text": text}))
            .await;
    }

    /// `user`'s vote, through the one answer path.
    fn vote(&self, user: &str, key: &str, vote: Vote) -> Result<Tally, AnswerError> {
        crate::agent::approvals::answer(
            &self.store,
            &self.audit,
            &(self.policy)(),
            key,
            &Answerer::InChat {
                channel: CHANNEL,
                user,
            },
            vote,
        )
    }

    /// An inline button: `approve:ID:CODE`, `always:ID:CODE` or `deny:ID:CODE`.
    async fn button(&self, q: CallbackQuery) {
        let user = q.from.id.to_string();
        let data = q.data.unwrap_or_default();
        let parts: Vec<&str> = data.split(':').collect();
        let verdict = match parts.as_slice() {
            [action, id, code] => {
                let request = crate::agent::approvals::find(&self.store, id)
                    .ok()
                    .flatten();
                match request {
                    Some(r) if r.code == *code => {
                        let vote = match *action {
                            "approve" => Some(Vote::Approve { always: false }),
                            "always" => Some(Vote::Approve { always: true }),
                            "deny" => Some(Vote::Deny),
                            _ => None,
                        };
                        match vote.map(|v| self.vote(&user, id, v)) {
                            // Nothing stored for a stranger's press, whatever they press.
                            Some(Err(AnswerError::Stranger)) => {
                                "you are not an approver; only approvers answer approval requests"
                                    .into()
                            }
                            Some(Ok(t)) => crate::channels::approval_text::describe_tally(&t),
                            Some(Err(e)) => e.to_string(),
                            None => "unknown button".into(),
                        }
                    }
                    _ => "this button does not match a pending request".into(),
                }
            }
            _ => "unknown button".into(),
        };
        tracing::info!(channel = CHANNEL, user = ?user, data = ?data, %verdict, "approval button");
        let _ = self
            .call(
                "answerCallbackQuery",
                json!({"callback_query_id": q.id, "text": verdict.chars().take(200).collect::<String>()}),
            )
            .await;
    }

    /// Send one reply, split, waiting out rate limits.
    pub async fn send(&self, chat: &str, text: &str) -> Result<(), TelegramError> {
        for piece in split(text, MAX_MESSAGE) {
            self.send_one(json!({"chat_id": chat, "text": piece}))
                .await?;
        }
        Ok(())
    }

    async fn send_one(&self, body: Value) -> Result<(), TelegramError> {
        let chat = match &body["chat_id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for _ in 0..5 {
            self.pace(&chat).await;
            match self.call("sendMessage", body.clone()).await {
                Err(TelegramError::RateLimited(secs)) => {
                    // The chat's next slot is after the wait Telegram asked for.
                    let after = tokio::time::Instant::now() + Duration::from_secs(secs.min(300));
                    let mut next = self.next_send.lock().unwrap_or_else(|p| p.into_inner());
                    let slot = next.entry(chat.clone()).or_insert(after);
                    *slot = (*slot).max(after);
                }
                other => return other.map(|_| ()),
            }
        }
        Err(TelegramError::RateLimited(0))
    }

    /// Deliver the outbox's Telegram replies until the process ends.
    async fn deliver_replies(self: Arc<Self>) {
        let me = &*self;
        crate::channels::outbox::deliver(&me.store, &me.audit, CHANNEL, |reply| async move {
            let Some(chat) = me.store.chat_of(CHANNEL, &reply.group).ok().flatten() else {
                return Ok(crate::channels::outbox::Sent::Undeliverable(
                    "no chat to answer in".into(),
                ));
            };
            match me.send(&chat, &reply.text).await {
                Ok(()) => Ok(crate::channels::outbox::Sent::Delivered),
                // Telegram will never take it (chat gone, bot blocked).
                Err(TelegramError::Api { code, description }) if (400..500).contains(&code) => {
                    Ok(crate::channels::outbox::Sent::Undeliverable(format!(
                        "Telegram refused it: {code} {description}"
                    )))
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
}

/// Approval requests to each approver's Telegram ids, with buttons.
pub struct TelegramPresenter {
    pub telegram: Arc<Telegram>,
}

impl crate::channels::Channel for Telegram {
    fn name(&self) -> &'static str {
        CHANNEL
    }
    fn receive(
        self: Arc<Self>,
        queue: Arc<Queue>,
        health: super::health::Health,
    ) -> crate::channels::Running {
        Box::pin(self.poll(queue, health))
    }
    /// Telegram's client holds the store and the audit log already.
    fn deliver(
        self: Arc<Self>,
        _store: Arc<Store>,
        _audit: Arc<crate::audit::Audit>,
    ) -> crate::channels::Running {
        Box::pin(self.deliver_replies())
    }
    fn presenter(self: Arc<Self>) -> Option<Arc<dyn crate::agent::approvals::Presenter>> {
        Some(Arc::new(TelegramPresenter { telegram: self }))
    }
}

impl Presenter for TelegramPresenter {
    fn present(&self, request: &Request) {
        let targets: Vec<String> = self
            .telegram
            .policy_now()
            .approvers()
            .iter()
            .filter(|a| request.approvers.contains(&a.name))
            .flat_map(|a| a.ids.get(CHANNEL).cloned().unwrap_or_default())
            .collect();
        let text = crate::channels::approval_text::describe(request);
        let id = request.id;
        let code = request.code.clone();
        let telegram = Arc::clone(&self.telegram);
        tokio::spawn(async move {
            for chat in targets {
                let keyboard = json!({"inline_keyboard": [[
                    {"text": "Approve", "callback_data": format!("approve:{id}:{code}")},
                    {"text": "Always", "callback_data": format!("always:{id}:{code}")},
                    {"text": "Deny", "callback_data": format!("deny:{id}:{code}")},
                ]]});
                let body = json!({"chat_id": chat, "text": text, "reply_markup": keyboard});
                if let Err(e) = telegram.send_one(body).await {
                    tracing::warn!(channel = CHANNEL, error = %e, "could not send an approval request");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_replies_split_at_paragraphs_then_lines_then_words() {
        let para = "a".repeat(3000);
        let text = format!("{para}\n\n{para}");
        let parts = split(&text, MAX_MESSAGE);
        assert_eq!(parts, [para.clone(), para.clone()]);
        let lines = format!("{}\n{}", "b".repeat(3000), "c".repeat(3000));
        assert_eq!(split(&lines, MAX_MESSAGE).len(), 2);
        let words = "word ".repeat(2000);
        let parts = split(&words, MAX_MESSAGE);
        assert!(
            parts
                .iter()
                .all(|p| p.chars().count() <= MAX_MESSAGE && !p.ends_with(' '))
        );
        assert_eq!(parts.concat().replace(' ', ""), words.replace(' ', ""));
        let blob = "x".repeat(9000);
        let parts = split(&blob, MAX_MESSAGE);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [4096, 4096, 808]
        );
        // Multi-byte text counts characters, never splits inside one.
        let accents = "é".repeat(5000);
        let parts = split(&accents, MAX_MESSAGE);
        assert_eq!(parts[0].chars().count(), 4096);
        // Telegram counts UTF-16 units: an emoji beyond the BMP is two.
        let emoji = "😀".repeat(3000);
        let parts = split(&emoji, MAX_MESSAGE);
        assert!(
            parts
                .iter()
                .all(|p| p.encode_utf16().count() <= MAX_MESSAGE),
            "{:?}",
            parts
                .iter()
                .map(|p| p.encode_utf16().count())
                .collect::<Vec<_>>()
        );
        assert_eq!(parts.concat(), emoji);
        assert_eq!(parts[0].chars().count(), 2048);
        assert_eq!(split("short", MAX_MESSAGE), ["short"]);
    }

    /// Random text of spaces, line breaks, and one-, two-, three- and four-byte characters, split
    /// at random small limits: every piece fits, none is empty, and only the whitespace at a cut
    /// is lost.
    #[test]
    fn random_text_splits_into_fitting_pieces_and_loses_nothing() {
        let alphabet = ["a", "b", " ", "\n", "é", "日", "😀"];
        let mut rng = fastrand::Rng::with_seed(0x7e1e);
        for case in 0..20_000 {
            let text: String = (0..rng.usize(0..60))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let max = rng.usize(2..24);
            let parts = split(&text, max);
            for part in &parts {
                assert!(
                    part.encode_utf16().count() <= max,
                    "case {case}: {part:?} is over {max} in {text:?}"
                );
                assert!(
                    !part.trim().is_empty() || parts.len() == 1,
                    "case {case}: an empty piece of {text:?} at {max}: {parts:?}"
                );
            }
            let bare = |s: &str| s.split_whitespace().collect::<String>();
            assert_eq!(
                bare(&parts.concat()),
                bare(&text),
                "case {case}: {text:?} at {max}"
            );
        }
    }
}
