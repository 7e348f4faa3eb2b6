//! Model clients: the Anthropic Messages API and the OpenAI Chat Completions API (which OpenAI,
//! OpenRouter, Ollama, vLLM and llama.cpp's server all speak), both streamed over SSE.
//!
//! Owns: the provider-neutral conversation types, HTTP with timeouts, retries with backoff and
//! jitter on 429, 5xx and connection errors (honouring `Retry-After`), and turning a stream into
//! one [`ModelResponse`]. Model output is parsed as data; nothing here acts on it.
//!
//! Runs on the host only, and is the only holder of the model API key.

mod anthropic;
mod openai;
pub mod sse;

use std::time::Duration;

use futures_util::StreamExt;
use nanoclaw_core::ToolCall;
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, Provider};

/// Longest wait between retries, whatever the server asks for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// First backoff step; doubled each retry, with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Bytes of an error body quoted in an error message.
const ERROR_BODY_EXCERPT: usize = 2048;
/// Time allowed to open a TCP/TLS connection to the model server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One message of a conversation, independent of provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    User {
        text: String,
    },
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        call_id: String,
        content: String,
        is_error: bool,
    },
}

impl Message {
    /// A rough size in tokens, for the context budget (4 bytes per token).
    pub fn approx_tokens(&self) -> usize {
        let bytes = match self {
            Message::User { text } => text.len(),
            Message::Assistant { text, tool_calls } => {
                text.len()
                    + tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.to_string().len())
                        .sum::<usize>()
            }
            Message::Tool { content, .. } => content.len(),
        };
        bytes / 4 + 4
    }
}

/// A tool the model may call: name, description, JSON schema of its arguments.
#[derive(Clone, Debug, Serialize)]
pub struct ToolSpec {
    /// The name the model calls it by (an MCP tool's wire name: `mcp__SERVER__TOOL`).
    pub name: String,
    pub description: String,
    pub schema: serde_json::Value,
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    Other,
}

/// Tokens a step used, as the server reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One complete model response.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop: StopReason,
    pub usage: Usage,
}

/// Why a model call failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The server refused the request (4xx other than 429); retrying would not help.
    #[error("the model server at {url} refused the request with HTTP {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    /// Every attempt failed with a retryable error.
    #[error(
        "the model server at {url} did not answer after {attempts} attempts; last error: {last}"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        last: String,
    },
    /// The server answered with something that is not a valid response.
    #[error("the model server at {url} sent an invalid response: {detail}")]
    BadResponse { url: String, detail: String },
}

/// A streamed response being assembled, one provider's events at a time.
trait StreamAccumulator {
    /// Take one SSE event. Returns `true` once the response is complete.
    fn on_event(&mut self, event: &sse::Event) -> Result<bool, String>;
    fn finish(self) -> Result<ModelResponse, String>;
}

/// What one attempt ended with, for the retry loop.
enum Attempt {
    Done(ModelResponse),
    Retry {
        reason: String,
        wait: Option<Duration>,
    },
    Fail(ModelError),
}

/// How long `check` waits for the model server.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What asking the model server for its models list found.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelCheck {
    Reachable(String),
    /// A 401 or 403: the key is refused.
    Rejected(String),
    /// Unreachable, or another answer.
    Failed(String),
}

impl ModelCheck {
    pub fn describe(&self) -> &str {
        match self {
            ModelCheck::Reachable(s) | ModelCheck::Rejected(s) | ModelCheck::Failed(s) => s,
        }
    }
}

/// A configured model client.
pub struct ModelClient {
    http: reqwest::Client,
    cfg: ModelConfig,
    api_key: Option<String>,
    url: String,
}

impl ModelClient {
    pub fn new(cfg: ModelConfig, api_key: Option<String>) -> anyhow::Result<Self> {
        // No redirects: one to another host would carry the key there (reqwest keeps custom
        // headers such as x-api-key across hosts), past the binding `base_url` was checked for.
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let url = match cfg.provider {
            Provider::Anthropic => anthropic::endpoint(&cfg.base_url),
            Provider::Openai => openai::endpoint(&cfg.base_url),
        };
        Ok(ModelClient {
            http,
            cfg,
            api_key,
            url,
        })
    }

    /// Whether the server takes this client's key: its model list, asked with the key (no
    /// tokens spent). `Ok` says what was found; `Err` why the key or the server fails.
    pub async fn check(&self) -> ModelCheck {
        match self.ask_for_models().await {
            Ok(said) => ModelCheck::Reachable(said),
            Err((true, said)) => ModelCheck::Rejected(said),
            Err((false, said)) => ModelCheck::Failed(said),
        }
    }

    /// The models list, asked with the key; `Err((rejected, why))`.
    async fn ask_for_models(&self) -> Result<String, (bool, String)> {
        let base = self.cfg.base_url.trim_end_matches('/');
        let url = match self.cfg.provider {
            Provider::Anthropic => format!("{base}/v1/models"),
            Provider::Openai => format!("{base}/models"),
        };
        let req = self.http.get(&url).timeout(CHECK_TIMEOUT);
        let req = match self.cfg.provider {
            Provider::Anthropic => anthropic::authorize(req, self.api_key.as_deref()),
            Provider::Openai => openai::authorize(req, self.api_key.as_deref()),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| (false, format!("UNREACHABLE ({})", describe_reqwest(&e))))?;
        match resp.status().as_u16() {
            200..=299 => Ok("reachable, key accepted".into()),
            401 | 403 => Err((
                true,
                format!(
                    "TOKEN REJECTED (HTTP {} from {url}): store the right key (nanoclaw secret rotate {})",
                    resp.status().as_u16(),
                    self.cfg.provider.key_env()
                ),
            )),
            // A server without a model list (many local ones) cannot say; it answered.
            404 | 405 => Ok(
                "reachable (it lists no models, so the key is checked at the first turn)".into(),
            ),
            status => Err((false, format!("the server answered HTTP {status} at {url}"))),
        }
    }

    /// One model step: send the conversation, return the complete response.
    pub async fn complete(
        &self,
        system: &str,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<ModelResponse, ModelError> {
        let body = match self.cfg.provider {
            Provider::Anthropic => anthropic::request_body(&self.cfg, system, messages, tools),
            Provider::Openai => openai::request_body(&self.cfg, system, messages, tools),
        };
        let attempts = self.cfg.max_retries + 1;
        let mut last = String::new();
        for attempt in 0..attempts {
            match self.attempt(&body).await {
                Attempt::Done(resp) => return Ok(resp),
                Attempt::Fail(err) => return Err(err),
                Attempt::Retry { reason, wait } => {
                    last = reason;
                    if attempt + 1 == attempts {
                        break;
                    }
                    let wait = wait.unwrap_or_else(|| backoff(attempt)).min(MAX_RETRY_WAIT);
                    tracing::warn!(url = %self.url, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, error = %last, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(ModelError::Unreachable {
            url: self.url.clone(),
            attempts,
            last,
        })
    }

    async fn attempt(&self, body: &serde_json::Value) -> Attempt {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.to_string());
        req = match self.cfg.provider {
            Provider::Anthropic => anthropic::authorize(req, self.api_key.as_deref()),
            Provider::Openai => openai::authorize(req, self.api_key.as_deref()),
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                return Attempt::Retry {
                    reason: describe_reqwest(&e),
                    wait: None,
                };
            }
        };
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            let wait = retry_after(resp.headers());
            let body = excerpt(resp).await;
            return Attempt::Retry {
                reason: format!("HTTP {}: {body}", status.as_u16()),
                wait,
            };
        }
        if !status.is_success() {
            let body = excerpt(resp).await;
            return Attempt::Fail(ModelError::Refused {
                url: self.url.clone(),
                status: status.as_u16(),
                body,
            });
        }
        let result = match self.cfg.provider {
            Provider::Anthropic => read_stream(resp, anthropic::Accumulator::default()).await,
            Provider::Openai => read_stream(resp, openai::Accumulator::default()).await,
        };
        match result {
            Ok(resp) => Attempt::Done(resp),
            Err(StreamFailure::Transport(reason)) => Attempt::Retry { reason, wait: None },
            Err(StreamFailure::Invalid(detail)) => Attempt::Fail(ModelError::BadResponse {
                url: self.url.clone(),
                detail,
            }),
        }
    }
}

enum StreamFailure {
    /// The connection broke mid-stream: worth another attempt.
    Transport(String),
    /// The server sent something that is not a valid stream: not worth retrying.
    Invalid(String),
}

async fn read_stream<A: StreamAccumulator>(
    resp: reqwest::Response,
    mut acc: A,
) -> Result<ModelResponse, StreamFailure> {
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !content_type.starts_with("text/event-stream") {
        return Err(StreamFailure::Invalid(format!(
            "expected an event stream (text/event-stream), got content type {content_type:?}"
        )));
    }
    let mut decoder = sse::Decoder::default();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StreamFailure::Transport(describe_reqwest(&e)))?;
        for event in decoder
            .feed(&chunk)
            .map_err(|e| StreamFailure::Invalid(e.to_string()))?
        {
            if acc.on_event(&event).map_err(StreamFailure::Invalid)? {
                return acc.finish().map_err(StreamFailure::Invalid);
            }
        }
    }
    Err(StreamFailure::Transport(
        "the stream ended before the response was complete".into(),
    ))
}

/// Exponential backoff with jitter: a random wait in [d/2, d], d = base * 2^attempt.
fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_RETRY_WAIT);
    let mut bytes = [0u8; 4];
    // Jitter only spreads retries out; a failing random source just means no jitter.
    let _ = getrandom::fill(&mut bytes);
    let fraction = u32::from_le_bytes(bytes) as f64 / u32::MAX as f64;
    full.mul_f64(0.5 + 0.5 * fraction)
}

/// The wait a server asked for: `retry-after-ms` (OpenAI) or `Retry-After` in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // Capped before the conversion: `from_secs_f64` panics on values beyond a Duration.
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return (ms.is_finite() && ms >= 0.0)
            .then(|| Duration::from_secs_f64((ms / 1000.0).min(MAX_RETRY_WAIT.as_secs_f64())));
    }
    let secs = get("retry-after")?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_WAIT.as_secs_f64())))
}

/// The start of an error response's body: read only as far as the excerpt needs, however
/// large the body is.
async fn excerpt(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_EXCERPT {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let cut = &bytes[..bytes.len().min(ERROR_BODY_EXCERPT)];
    String::from_utf8_lossy(cut).trim().to_owned()
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Parse a tool call's argument text. Text that is not JSON is kept as a JSON string, so the
/// tool can tell the model its arguments were malformed instead of the turn failing.
fn parse_arguments(raw: &str) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::json!({});
    }
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let a = backoff(0);
        assert!(a >= BACKOFF_BASE / 2 && a <= BACKOFF_BASE);
        let b = backoff(3);
        assert!(b >= BACKOFF_BASE * 4 && b <= BACKOFF_BASE * 8);
        assert!(backoff(40) <= MAX_RETRY_WAIT);
    }

    #[test]
    fn retry_after_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut bad = reqwest::header::HeaderMap::new();
        bad.insert("retry-after", "-3".parse().unwrap());
        assert_eq!(retry_after(&bad), None);
        bad.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&bad), None);
        // Absurd waits are capped, never a panic.
        for huge in ["1e23", "1e308", "18446744073709551616000"] {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("retry-after-ms", huge.parse().unwrap());
            assert_eq!(retry_after(&h), Some(MAX_RETRY_WAIT), "{huge}");
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("retry-after", huge.parse().unwrap());
            assert_eq!(retry_after(&h), Some(MAX_RETRY_WAIT), "{huge}");
        }
    }

    #[test]
    fn malformed_arguments_are_kept_as_a_string() {
        assert_eq!(parse_arguments("{\"a\":1}"), serde_json::json!({"a":1}));
        assert_eq!(parse_arguments(""), serde_json::json!({}));
        assert_eq!(parse_arguments("{\"a\":"), serde_json::json!("{\"a\":"));
    }
}
