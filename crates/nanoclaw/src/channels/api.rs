//! The local HTTP API channel, served by `nanoclaw run` on a loopback address.
//!
//! - `POST /v1/groups/{group}/messages` with `{"text": "...", "sender": "..."}`: the message is
//!   committed to the inbox, then answered `202 {"id": N}`.
//! - `GET /v1/groups/{group}/replies?after=N`: the group's replies with id > N, oldest first,
//!   each with the ids of the messages it answers; the API's own are marked sent once handed
//!   to a client.
//! - `POST /v1/groups/{group}/messages` with `/approve CODE [always]` or `/deny CODE`: an
//!   answer to an approval request, recorded at once, `200 {"approval": "..."}`.
//! - `GET /v1/approvals`: the pending approval requests; `POST /v1/approvals/{id or code}` with
//!   `{"vote": "approve" | "deny", "always": bool, "approver": "name"}` answers one.
//! - `GET /v1/status`: what `nanoclaw status --json` shows.
//! - `POST /v1/tasks/wake`: the schedule changed (sent by `nanoclaw task …`).
//! - `POST /v1/webhook`: the webhook channel ([`crate::channels::webhook`]); authenticated by its HMAC
//!   signature, not the token.
//! - `GET /v1/health`: `{"ok": true}`, no token needed.
//!
//! `docs/openapi.json` describes all of it; a test holds the server to it. Every other request needs `Authorization: Bearer <token>`, the token from the data dir's
//! `api.token` (exactly one such header). Bodies are capped; malformed ones get a 400 that says
//! what is wrong. A connection must send its headers within [`HEADER_TIMEOUT`] and a body
//! within [`BODY_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are served at once (more wait to be
//! accepted), so idle or stalled clients cannot exhaust the daemon's descriptors or memory.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use nanoclaw_core::GroupId;
use serde::Deserialize;
use serde_json::json;

use crate::agent::queue::Queue;
use crate::store::Store;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The longest a client may take to send a request's headers (the first, or the next on a
/// kept-alive connection).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest a client may take to send a request's body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 128;
/// Most replies returned by one GET.
const MAX_REPLIES_PER_GET: usize = 100;
/// The channel name stored with messages from this API.
pub const CHANNEL: &str = "api";

pub struct Api {
    pub store: Arc<Store>,
    pub queue: Arc<Queue>,
    pub token: String,
    pub audit: Arc<crate::audit::Audit>,
    /// Told when `POST /v1/tasks/wake` says the schedule changed (`nanoclaw task …`).
    pub tasks_changed: Arc<tokio::sync::Notify>,
    /// The webhook channel, when configured; it authenticates by signature, not the token.
    /// Swapped when a reload restarts the channels.
    pub webhook: std::sync::RwLock<Option<Arc<crate::channels::webhook::Webhook>>>,
    /// The daemon's status (as `nanoclaw status --json` shows it), set once the control
    /// plane is up.
    pub status: std::sync::OnceLock<StatusFn>,
}

/// What assembles the daemon's status.
pub type StatusFn = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// `POST /v1/approvals/{id or code}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostAnswer {
    vote: VoteWord,
    /// With `approve`: approve every later identical call too.
    #[serde(default)]
    always: bool,
    /// Which approver answers, when more than one may answer at the terminal.
    #[serde(default)]
    approver: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum VoteWord {
    Approve,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    text: String,
    /// Who wrote it, for the prompt and the log (default: the owner, as "api").
    #[serde(default = "default_sender")]
    sender: String,
    /// The writer's role, as the token holder (the owner) vouches for it [default: owner when
    /// no sender is named, else other]. Never taken from the sender's name.
    #[serde(default)]
    role: Option<nanoclaw_core::policy::SenderRole>,
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
        let not_allowed = || {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}", req.method()),
            )
        };
        match (req.method(), path.as_str()) {
            (&Method::GET, "/v1/health") => {
                return Ok(reply(StatusCode::OK, json!({"ok": true})));
            }
            (&Method::POST, "/v1/webhook") => return self.webhook(req).await,
            (_, "/v1/health" | "/v1/webhook") => return Err(not_allowed()),
            _ => {}
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
            (&Method::GET, ["v1", "status"]) => match self.status.get() {
                Some(status) => Ok(reply(StatusCode::OK, status())),
                None => Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the daemon is still starting",
                )),
            },
            (&Method::GET, ["v1", "approvals"]) => {
                let pending = crate::agent::approvals::list(&self.store, false)
                    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
                let shown: Vec<serde_json::Value> = pending
                    .iter()
                    .map(|r| {
                        json!({"id": r.id, "code": r.code, "group": r.group, "tool": r.tool,
                            "arguments": r.arguments, "reason": r.reason, "approvers": r.approvers,
                            "quorum": r.quorum, "expires_at": crate::audit::format_time(r.expires_at)})
                    })
                    .collect();
                Ok(reply(StatusCode::OK, json!({"approvals": shown})))
            }
            (&Method::POST, ["v1", "approvals", key]) => {
                let key = (*key).to_owned();
                self.post_answer(&key, req).await
            }
            (
                _,
                ["v1", "groups", _, "messages" | "replies"]
                | ["v1", "tasks", "wake"]
                | ["v1", "status" | "approvals"]
                | ["v1", "approvals", _],
            ) => Err(not_allowed()),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path}"),
            )),
        }
    }

    async fn webhook(&self, req: Request<Incoming>) -> Result<Reply, ApiError> {
        let hook = self
            .webhook
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(hook) = hook else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "no webhook channel is configured",
            ));
        };
        let signature = one_header(&req, crate::channels::webhook::SIGNATURE_HEADER)?
            .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
        let body = read_body(req).await?;
        match hook.receive(&self.queue, &body, signature.as_deref()) {
            Ok(answer) => Ok(reply(StatusCode::OK, answer)),
            Err((status, message)) => Err(error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            )),
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        // The scheme's name is case-insensitive (RFC 9110).
        let given = one_header(req, hyper::header::AUTHORIZATION.as_str())?
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
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
        let body = read_body(req).await?;
        let msg: PostMessage = serde_json::from_slice(&body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"text\": \"...\", \"sender\": \"...\" (optional), \"role\": \"owner\" | \"approver\" | \"other\" (optional)}}: {e}"
                ),
            )
        })?;
        if msg.text.trim().is_empty() {
            return Err(error(StatusCode::BAD_REQUEST, "text is empty"));
        }
        if msg.sender.trim().is_empty() || msg.sender.chars().any(char::is_control) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "sender must be a non-empty name without control characters",
            ));
        }
        // The role is decided here, once: the token holder is the owner; a named sender is
        // someone else unless the token holder says otherwise.
        let role = msg.role.unwrap_or(if msg.sender == default_sender() {
            nanoclaw_core::policy::SenderRole::Owner
        } else {
            nanoclaw_core::policy::SenderRole::Other
        });
        if crate::channels::approval_text::malformed_command(&msg.text) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "approval answers are /approve CODE [always] and /deny CODE",
            ));
        }
        // `/approve CODE [always]` and `/deny CODE` answer an approval request at once: they
        // never queue behind the turn that is waiting for them.
        if let Some((code, vote)) = crate::channels::approval_text::parse_command(&msg.text) {
            // Someone else's relayed words never answer an approval, whatever they are named.
            if role == nanoclaw_core::policy::SenderRole::Other {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "a message relayed from someone other than the owner (role other) cannot answer an approval request",
                ));
            }
            let named = (msg.sender != default_sender()).then_some(msg.sender.as_str());
            return self.answer(&code, named, vote);
        }
        let inbound = crate::channels::Inbound {
            channel: CHANNEL,
            text: &msg.text,
            external_id: None,
            from: crate::channels::From::Authenticated {
                group,
                sender: &msg.sender,
                role,
            },
        };
        // INVARIANT: committed before acknowledged.
        let accepted =
            crate::channels::accept(self.queue.agent(), Some(&self.queue), &inbound, |_| Ok(()))
                .map_err(|e| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("could not store the message: {e}"),
                    )
                })?;
        match accepted {
            crate::channels::Accepted::Stopped { was_running, .. } => {
                Ok(reply(StatusCode::OK, json!({"stopped": was_running})))
            }
            crate::channels::Accepted::Stored { id: Some(id), .. } => {
                Ok(reply(StatusCode::ACCEPTED, json!({"id": id})))
            }
            other => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the message was not stored: {other:?}"),
            )),
        }
    }

    /// `POST /v1/approvals/{key}`: the token holder answers, as the terminal approver (or the
    /// named one).
    async fn post_answer(&self, key: &str, req: Request<Incoming>) -> Result<Reply, ApiError> {
        let body = read_body(req).await?;
        let answer: PostAnswer = serde_json::from_slice(&body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be {{\"vote\": \"approve\" | \"deny\", \"always\": true | false (optional), \"approver\": \"name\" (optional)}}: {e}"
                ),
            )
        })?;
        let vote = match (answer.vote, answer.always) {
            (VoteWord::Approve, always) => nanoclaw_core::approval::Vote::Approve { always },
            (VoteWord::Deny, false) => nanoclaw_core::approval::Vote::Deny,
            (VoteWord::Deny, true) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "always goes with approve only",
                ));
            }
        };
        self.answer(key, answer.approver.as_deref(), vote)
    }

    /// Record an answer given through this API; the tally, or why it was not recorded.
    fn answer(
        &self,
        key: &str,
        named: Option<&str>,
        vote: nanoclaw_core::approval::Vote,
    ) -> Result<Reply, ApiError> {
        use crate::agent::approvals::AnswerError;
        let result = crate::agent::approvals::answer(
            &self.store,
            &self.audit,
            &self.queue.agent().tools.policy(),
            key,
            &crate::agent::approvals::Answerer::AtTerminal {
                channel: CHANNEL,
                named,
            },
            vote,
        );
        match result {
            Ok(tally) => Ok(reply(
                StatusCode::OK,
                json!({"approval": crate::channels::approval_text::describe_tally(&tally)}),
            )),
            Err(e) => {
                let status = match e {
                    AnswerError::NotFound(_) => StatusCode::NOT_FOUND,
                    AnswerError::WhichApprover(_) => StatusCode::BAD_REQUEST,
                    AnswerError::Decided { .. } => StatusCode::CONFLICT,
                    _ => StatusCode::FORBIDDEN,
                };
                Err(error(status, e.to_string()))
            }
        }
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
        let ours: Vec<&crate::store::Outbound> =
            rows.iter().filter(|r| r.channel == CHANNEL).collect();
        crate::channels::outbox::delivered(&self.store, &self.audit, &ours).map_err(internal)?;
        let mut shown = Vec::with_capacity(rows.len());
        for r in &rows {
            let (answers, failed) = self.store.answered_by(r.turn_id).map_err(internal)?;
            shown.push(
                json!({"id": r.id, "group": r.group, "channel": r.channel, "turn_id": r.turn_id,
                "text": r.text, "created_at": r.created_at, "answers": answers, "failed": failed}),
            );
        }
        Ok(reply(StatusCode::OK, json!({"replies": shown})))
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
                after = v.parse::<i64>().map_err(|e| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "after must be a whole number of at most 19 digits, got {v:?}: {e}"
                        ),
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

/// The value of header `name`, refusing a request that sends it more than once (which one
/// counts would depend on who reads it).
fn one_header<'r>(
    req: &'r Request<Incoming>,
    name: &str,
) -> Result<Option<&'r hyper::header::HeaderValue>, ApiError> {
    let mut values = req.headers().get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("the {name} header is sent more than once"),
        ));
    }
    Ok(first)
}

/// The request's body, at most [`MAX_BODY_BYTES`], arriving within [`BODY_TIMEOUT`]. A
/// `Content-Length` over the cap is refused before anything is read.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        )
    };
    if hyper::body::Body::size_hint(req.body()).lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| {
        error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )
    })?;
    match collected {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("could not read the body: {e}"),
        )),
    }
}

/// Serve the API on `listener` until the process ends.
pub async fn serve(api: Arc<Api>, listener: tokio::net::TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first: over the cap, connections wait in the listen queue.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
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
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| Arc::clone(&api).handle(req));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
