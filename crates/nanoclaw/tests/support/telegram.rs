//! A fake Telegram Bot API on loopback: the real paths (`/bot<TOKEN>/<method>`), JSON shapes
//! and error responses (401 for a wrong token, 400 for a message over 4,096 characters, 429
//! with `retry_after`), long polling with offsets, and a record of what the bot sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub const TOKEN: &str = "123456:TEST-token-abcdefghij";

#[derive(Default)]
struct State {
    updates: VecDeque<Value>,
    next_update: i64,
    /// Every `offset` the bot asked getUpdates for.
    offsets: Vec<i64>,
    sent: Vec<Value>,
    answered: Vec<Value>,
    /// How many sendMessage calls still get a 429.
    rate_limit: usize,
    /// Requests refused for a wrong token.
    rejected: usize,
}

#[derive(Clone)]
pub struct FakeTelegram {
    pub url: String,
    state: Arc<Mutex<State>>,
}

fn reply(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let state = Arc::new(Mutex::new(State {
            next_update: 100,
            ..State::default()
        }));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let s = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let s = Arc::clone(&s);
                            async move { Ok::<_, Infallible>(handle(&s, req).await) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FakeTelegram { url, state }
    }

    fn push(&self, mut update: Value) -> i64 {
        let mut s = self.state.lock().unwrap();
        let id = s.next_update;
        s.next_update += 1;
        update["update_id"] = json!(id);
        s.updates.push_back(update);
        id
    }

    /// A text message from `from` in `chat` (private when they are equal).
    pub fn message(&self, chat: i64, from: i64, text: &str, reply_to_bot: bool) -> i64 {
        let mut message = json!({
            "message_id": 1,
            "date": 1_795_000_000,
            "chat": {"id": chat, "type": if chat == from { "private" } else { "group" }},
            "from": {"id": from, "is_bot": false, "first_name": "T"},
            "text": text,
        });
        if reply_to_bot {
            message["reply_to_message"] = json!({
                "message_id": 0, "date": 1_795_000_000, "chat": {"id": chat, "type": "group"},
                "from": {"id": 42, "is_bot": true, "first_name": "bot"}, "text": "earlier"
            });
        }
        self.push(json!({ "message": message }))
    }

    /// A button press.
    pub fn press(&self, from: i64, data: &str) -> i64 {
        self.push(json!({"callback_query": {
            "id": format!("cb{from}"), "chat_instance": "x",
            "from": {"id": from, "is_bot": false, "first_name": "T"}, "data": data
        }}))
    }

    /// An update the bot cannot read.
    pub fn garbage(&self) -> i64 {
        self.push(json!({"message": {"chat": "not an object", "text": 5}}))
    }

    pub fn rate_limit_next(&self, n: usize) {
        self.state.lock().unwrap().rate_limit = n;
    }

    pub fn sent(&self) -> Vec<Value> {
        self.state.lock().unwrap().sent.clone()
    }

    pub fn answered(&self) -> Vec<Value> {
        self.state.lock().unwrap().answered.clone()
    }

    /// How many requests came with a wrong token.
    pub fn rejected(&self) -> usize {
        self.state.lock().unwrap().rejected
    }

    pub fn offsets(&self) -> Vec<i64> {
        self.state.lock().unwrap().offsets.clone()
    }
}

async fn handle(
    state: &Arc<Mutex<State>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let params: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let Some(rest) = path.strip_prefix(&format!("/bot{TOKEN}/")) else {
        state.lock().unwrap().rejected += 1;
        return reply(
            401,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
        );
    };
    match rest {
        "getMe" => reply(
            200,
            json!({"ok": true, "result": {"id": 42, "is_bot": true, "first_name": "bot", "username": "nano_bot"}}),
        ),
        "getUpdates" => {
            let offset = params["offset"].as_i64().unwrap_or(0);
            let timeout = params["timeout"].as_u64().unwrap_or(0).min(1);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let got: Vec<Value> = {
                    let mut s = state.lock().unwrap();
                    s.offsets.push(offset);
                    // Updates below the offset are confirmed: gone for good.
                    s.updates
                        .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                    s.updates.iter().cloned().collect()
                };
                if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                    return reply(200, json!({"ok": true, "result": got}));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        "sendMessage" => {
            let mut s = state.lock().unwrap();
            if s.rate_limit > 0 {
                s.rate_limit -= 1;
                return reply(
                    429,
                    json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
                );
            }
            let text = params["text"].as_str().unwrap_or_default();
            // Not Telegram's rule but nanoclaw's: a message with link previews on would have
            // Telegram's servers fetch the URLs in it.
            if params["link_preview_options"]["is_disabled"] != json!(true) {
                return reply(
                    400,
                    json!({"ok": false, "error_code": 400, "description": "test server: link previews must be disabled"}),
                );
            }
            if text.chars().count() > 4096 {
                return reply(
                    400,
                    json!({"ok": false, "error_code": 400, "description": "Bad Request: message is too long"}),
                );
            }
            if text.is_empty() {
                return reply(
                    400,
                    json!({"ok": false, "error_code": 400, "description": "Bad Request: message text is empty"}),
                );
            }
            let mut record = params.clone();
            record["_received_ms"] = json!(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            );
            s.sent.push(record);
            let id = s.sent.len();
            reply(
                200,
                json!({"ok": true, "result": {"message_id": id, "date": 1_795_000_000, "chat": {"id": params["chat_id"]}, "text": text}}),
            )
        }
        "answerCallbackQuery" => {
            state.lock().unwrap().answered.push(params);
            reply(200, json!({"ok": true, "result": true}))
        }
        _ => reply(
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found"}),
        ),
    }
}
