//! A scripted model server that speaks the Anthropic Messages and OpenAI Chat Completions wire
//! formats, streamed over SSE, and replays a script of responses in order. It records every
//! request body so tests can assert what the agent sent.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Anthropic,
    Openai,
}

/// A step calling the shell tool with `command`.
pub fn shell(command: &str) -> Step {
    Step::Tools(vec![(
        "shell".into(),
        serde_json::json!({ "command": command }).to_string(),
    )])
}

/// One scripted response.
#[derive(Clone, Debug)]
pub enum Step {
    /// A final text answer.
    Text(String),
    /// Tool calls: (name, raw argument text, which need not be valid JSON).
    Tools(Vec<(String, String)>),
    /// A final answer quoting the last tool result the agent sent.
    EchoToolResult,
    /// An HTTP error status with a body.
    Status(u16, String),
    /// Wait this long, then take the next step.
    Delay(Duration),
    /// Hold the response this long, then answer with a text.
    SlowText(Duration, String),
    /// A 429 with `Retry-After` set to this many seconds.
    RateLimited(u64),
    /// A 200 response with this content type and body, verbatim.
    Raw(String, String),
    /// A 307 to this URL.
    Redirect(String),
}

struct State {
    script: Vec<Step>,
    next: usize,
    requests: Vec<Value>,
    in_flight: usize,
    max_in_flight: usize,
}

pub struct ScriptedModel {
    pub url: String,
    pub wire: Wire,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedModel {
    pub async fn start(wire: Wire, script: Vec<Step>) -> ScriptedModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State {
            script,
            next: 0,
            requests: Vec::new(),
            in_flight: 0,
            max_in_flight: 0,
        }));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(wire, Arc::clone(&state), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        ScriptedModel {
            url,
            wire,
            state,
            task,
        }
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The most requests that were ever being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// Append steps to the script.
    pub fn push(&self, steps: Vec<Step>) {
        self.state.lock().unwrap().script.extend(steps);
    }

    /// Wait until at least `n` requests have arrived.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.requests().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "model server saw {} of {n} requests",
                self.requests().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type Resp = Response<Full<Bytes>>;

async fn handle(
    wire: Wire,
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_owned();
    let expected = match wire {
        Wire::Anthropic => "/v1/messages",
        Wire::Openai => "/v1/chat/completions",
    };
    let auth_ok = match wire {
        Wire::Anthropic => {
            req.headers()
                .get("x-api-key")
                .is_some_and(|v| v == "test-key")
                && req.headers().contains_key("anthropic-version")
        }
        Wire::Openai => req
            .headers()
            .get("authorization")
            .is_some_and(|v| v == "Bearer test-key"),
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // The model list, as the real APIs answer it: only with the key.
    if path == "/v1/models" {
        return Ok(if auth_ok {
            plain(200, r#"{"data": [{"id": "scripted"}]}"#)
        } else {
            plain(401, "missing or wrong credentials")
        });
    }
    if path != expected {
        return Ok(plain(404, &format!("no route {path}")));
    }
    if !auth_ok {
        return Ok(plain(401, "missing or wrong credentials"));
    }
    let Ok(body): Result<Value, _> = serde_json::from_slice(&body) else {
        return Ok(plain(400, "body is not JSON"));
    };
    if body["stream"] != json!(true) {
        return Ok(plain(400, "this server only streams"));
    }
    state.lock().unwrap().requests.push(body.clone());
    let step = loop {
        let step = {
            let mut s = state.lock().unwrap();
            let step = s.script.get(s.next).cloned();
            s.next += 1;
            step
        };
        match step {
            Some(Step::Delay(d)) => tokio::time::sleep(d).await,
            other => break other,
        }
    };
    let Some(step) = step else {
        return Ok(plain(400, "the script is exhausted"));
    };
    if let Step::SlowText(d, _) = &step {
        {
            let mut s = state.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
        }
        tokio::time::sleep(*d).await;
        state.lock().unwrap().in_flight -= 1;
    }
    Ok(match step {
        Step::SlowText(_, t) => sse(wire, &t, &[]),
        Step::Raw(content_type, body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert("content-type", content_type.parse().unwrap());
            r
        }
        Step::Status(code, msg) => plain(code, &msg),
        Step::Redirect(to) => {
            let mut r = plain(307, "moved");
            r.headers_mut().insert("location", to.parse().unwrap());
            r
        }
        Step::RateLimited(secs) => {
            let mut r = plain(429, "rate limited");
            r.headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
            r
        }
        Step::Text(t) => sse(wire, &t, &[]),
        Step::Tools(calls) => sse(wire, "", &calls),
        Step::EchoToolResult => sse(
            wire,
            &format!("tool said: {}", last_tool_result(wire, &body)),
            &[],
        ),
        Step::Delay(_) => unreachable!("delays are consumed above"),
    })
}

fn plain(code: u16, msg: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(
        json!({"error": {"message": msg}}).to_string(),
    )));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

fn last_tool_result(wire: Wire, body: &Value) -> String {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    for m in msgs.iter().rev() {
        match wire {
            Wire::Anthropic => {
                if let Some(b) = m["content"]
                    .as_array()
                    .and_then(|blocks| blocks.iter().rev().find(|b| b["type"] == "tool_result"))
                {
                    return b["content"].as_str().unwrap_or("").to_owned();
                }
            }
            Wire::Openai => {
                if m["role"] == "tool" {
                    return m["content"].as_str().unwrap_or("").to_owned();
                }
            }
        }
    }
    "(no tool result)".into()
}

/// A complete streamed response, split into small events as real servers do.
fn sse(wire: Wire, text: &str, calls: &[(String, String)]) -> Resp {
    let mut out = String::new();
    let mut event = |name: &str, data: Value| {
        if !name.is_empty() {
            out.push_str(&format!("event: {name}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    };
    match wire {
        Wire::Anthropic => {
            event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": [], "usage": {"input_tokens": 11, "output_tokens": 1}}}),
            );
            event("ping", json!({"type": "ping"}));
            let mut index = 0;
            if !text.is_empty() {
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                );
                for chunk in chunks(text, 7) {
                    event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": chunk}}),
                    );
                }
                event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                );
                index += 1;
            }
            for (n, (name, args)) in calls.iter().enumerate() {
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": format!("toolu_{n}"), "name": name, "input": {}}}),
                );
                for chunk in chunks(args, 5) {
                    event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": chunk}}),
                    );
                }
                event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                );
                index += 1;
            }
            let stop = if calls.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            };
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 7}}),
            );
            event("message_stop", json!({"type": "message_stop"}));
        }
        Wire::Openai => {
            let chunk = |delta: Value, finish: Value| json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            event(
                "",
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            );
            for part in chunks(text, 7) {
                event("", chunk(json!({"content": part}), Value::Null));
            }
            for (n, (name, args)) in calls.iter().enumerate() {
                event(
                    "",
                    chunk(
                        json!({"tool_calls": [{"index": n, "id": format!("call_{n}"), "type": "function", "function": {"name": name, "arguments": ""}}]}),
                        Value::Null,
                    ),
                );
                for part in chunks(args, 5) {
                    event(
                        "",
                        chunk(
                            json!({"tool_calls": [{"index": n, "function": {"arguments": part}}]}),
                            Value::Null,
                        ),
                    );
                }
            }
            let finish = if calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            event("", chunk(json!({}), json!(finish)));
            event(
                "",
                json!({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}),
            );
            out.push_str("data: [DONE]\n\n");
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn chunks(s: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
