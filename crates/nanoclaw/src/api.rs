//! The local HTTP API channel, served by `nanoclaw run` on a loopback address.
//!
//! - `POST /v1/groups/{group}/messages` with `{"text": "...", "sender": "..."}`: the message is
//!   committed to the inbox, then answered `202 {"id": N}`.
//! - `GET /v1/groups/{group}/replies?after=N`: the group's replies with id > N, oldest first;
//!   each is marked sent once it has been handed to a client.
//! - `POST /v1/groups/{group}/messages` with `/approve CODE [always]` or `/deny CODE`: an
//!   answer to an approval request, recorded at once, `200 {"approval": "..."}`.
//! - `POST /v1/tasks/wake`: the schedule changed (sent by `nanoclaw task …`).
//! - `POST /v1/webhook`: the webhook channel ([`crate::webhook`]); authenticated by its HMAC
//!   signature, not the token.
//! - `GET /v1/health`: `{"ok": true}`, no token needed.
//!
//! Every other request needs `Authorization: Bearer <token>`, the token from the data dir's
//! `api.token`. Bodies are capped; malformed ones get a 400 that says what is wrong.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use nanoclaw_core::GroupId;
use serde::Deserialize;
use serde_json::json;

use crate::queue::Queue;
use crate::store::Store;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most replies returned by one GET.
const MAX_REPLIES_PER_GET: usize = 100;
/// The channel name stored with messages from this API.
pub const CHANNEL: &str = "api";

pub struct Api {
    pub store: Arc<Store>,
    pub queue: Arc<Queue>,
    pub token: String,
    pub audit: Arc<crate::audit::Audit>,
    pub policy: Arc<nanoclaw_core::Policy>,
    /// Told when `POST /v1/tasks/wake` says the schedule changed (`nanoclaw task …`).
    pub tasks_changed: Arc<tokio::sync::Notify>,
    /// The webhook channel, when configured; it authenticates by signature, not the token.
    pub webhook: Option<Arc<crate::webhook::Webhook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    text: String,
    #[serde(default = "default_sender")]
    sender: String,
}

fn default_sender() -> String {
    "api".into()
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A refused request: its status and a message naming what was wrong.
struct ApiError {
    status: StatusCode,
    message: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// Compare in time independent of where the strings differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Api {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Reply, Infallible> {
        Ok(self
            .route(req)
            .await
            .unwrap_or_else(|e| reply(e.status, json!({"error": e.message}))))
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Reply, ApiError> {
        let path = req.uri().path().to_owned();
        if path == "/v1/health" {
            return Ok(reply(StatusCode::OK, json!({"ok": true})));
        }
        if path == "/v1/webhook" && req.method() == Method::POST {
            return self.webhook(req).await;
        }
        self.authorize(&req)?;
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (req.method(), parts.as_slice()) {
            (&Method::POST, ["v1", "groups", group, "messages"]) => {
                let group = parse_group(group)?;
                self.post_message(group, req).await
            }
            (&Method::GET, ["v1", "groups", group, "replies"]) => {
                let group = parse_group(group)?;
                let after = parse_after(req.uri().query())?;
                self.get_replies(group, after)
            }
            (&Method::POST, ["v1", "tasks", "wake"]) => {
                self.tasks_changed.notify_one();
                Ok(reply(StatusCode::OK, json!({"ok": true})))
            }
            (_, ["v1", "groups", _, "messages" | "replies"]) => Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}", req.method()),
            )),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path}"),
            )),
        }
    }

    async fn webhook(&self, req: Request<Incoming>) -> Result<Reply, ApiError> {
        let Some(hook) = &self.webhook else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "no webhook channel is configured",
            ));
        };
        let signature = req
            .headers()
            .get(crate::webhook::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("could not read the body (at most {MAX_BODY_BYTES} bytes): {e}"),
                )
            })?
            .to_bytes();
        match hook.receive(&self.store, &self.queue, &body, signature.as_deref()) {
            Ok(answer) => Ok(reply(StatusCode::OK, answer)),
            Err((status, message)) => Err(error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            )),
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if constant_time_eq(t.trim().as_bytes(), self.token.as_bytes()) => Ok(()),
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (see api.token in the data dir)",
            )),
        }
    }

    async fn post_message(
        &self,
        group: GroupId,
        req: Request<Incoming>,
    ) -> Result<Reply, ApiError> {
        let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("could not read the body (at most {MAX_BODY_BYTES} bytes): {e}"),
                )
            })?;
        let msg: PostMessage = serde_json::from_slice(&body.to_bytes()).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"text\": \"...\"}}: {e}"),
            )
        })?;
        if msg.text.trim().is_empty() {
            return Err(error(StatusCode::BAD_REQUEST, "text is empty"));
        }
        // `/approve CODE [always]` and `/deny CODE` answer an approval request at once: they
        // never queue behind the turn that is waiting for them.
        if let Some((code, vote)) = crate::approvals::parse_command(&msg.text) {
            let named = (msg.sender != default_sender()).then_some(msg.sender.as_str());
            let request = crate::approvals::find(&self.store, &code).ok().flatten();
            let approver = crate::terminal_approver(&self.policy, named, request.as_ref())
                .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
            let result =
                crate::approvals::answer(&self.store, &self.audit, &code, &approver, CHANNEL, vote);
            return match result {
                Ok(tally) => Ok(reply(
                    StatusCode::OK,
                    json!({"approval": crate::describe_tally(&tally)}),
                )),
                Err(e) => Err(error(StatusCode::FORBIDDEN, e.to_string())),
            };
        }
        // INVARIANT: committed before acknowledged.
        let id = self
            .store
            .accept_inbound(&group, CHANNEL, &msg.sender, &msg.text)
            .map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("could not store the message: {e}"),
                )
            })?;
        self.queue.kick(group);
        Ok(reply(StatusCode::ACCEPTED, json!({"id": id})))
    }

    fn get_replies(&self, group: GroupId, after: i64) -> Result<Reply, ApiError> {
        let internal =
            |e: crate::store::StoreError| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        let rows = self
            .store
            .replies_after(&group, after, MAX_REPLIES_PER_GET)
            .map_err(internal)?;
        // Every reply of the group is shown; only the API's own are delivered by showing them.
        // Another channel's stay unsent for that channel's delivery loop.
        let ids: Vec<i64> = rows
            .iter()
            .filter(|r| r.channel == CHANNEL)
            .map(|r| r.id)
            .collect();
        self.store.mark_sent(&ids).map_err(internal)?;
        Ok(reply(StatusCode::OK, json!({"replies": rows})))
    }
}

fn parse_group(raw: &str) -> Result<GroupId, ApiError> {
    raw.parse()
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{e}")))
}

fn parse_after(query: Option<&str>) -> Result<i64, ApiError> {
    let mut after = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("after", v)) => {
                after = v.parse::<i64>().map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("after must be an integer, got {v:?}"),
                    )
                })?;
            }
            _ => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {pair:?}"),
                ));
            }
        }
    }
    Ok(after)
}

/// Serve the API on `listener` until the process ends.
pub async fn serve(api: Arc<Api>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| Arc::clone(&api).handle(req));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
