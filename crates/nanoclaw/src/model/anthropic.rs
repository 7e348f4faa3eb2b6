//! The Anthropic Messages API wire format: request body, auth headers, and the streamed
//! response events (`message_start`, `content_block_*`, `message_delta`, `message_stop`).

use serde_json::{Value, json};

use super::{
    Message, ModelResponse, StopReason, StreamAccumulator, ToolSpec, Usage, parse_arguments, sse,
};
use crate::config::ModelConfig;
use nanoclaw_core::ToolCall;

/// The API version this client speaks.
const API_VERSION: &str = "2023-06-01";

pub fn endpoint(base_url: &str) -> String {
    format!("{}/v1/messages", base_url.trim_end_matches('/'))
}

pub fn authorize(req: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    let req = req.header("anthropic-version", API_VERSION);
    match key {
        Some(key) => req.header("x-api-key", key),
        None => req,
    }
}

pub fn request_body(
    cfg: &ModelConfig,
    system: &str,
    messages: &[Message],
    tools: &[ToolSpec],
) -> Value {
    let mut wire: Vec<Value> = Vec::new();
    for m in messages {
        match m {
            Message::User { text } => wire.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, tool_calls } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for c in tool_calls {
                    // The API needs an object; malformed arguments were already answered with a
                    // tool error, so an empty object stands in for them here.
                    let input = if c.arguments.is_object() {
                        c.arguments.clone()
                    } else {
                        json!({})
                    };
                    content.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                if content.is_empty() {
                    content.push(json!({"type": "text", "text": "(no text)"}));
                }
                wire.push(json!({"role": "assistant", "content": content}));
            }
            Message::Tool {
                call_id,
                content,
                is_error,
            } => {
                let block = json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error});
                // Results of one assistant step travel together in one user message.
                match wire.last_mut() {
                    Some(last) if last["role"] == "user" && last["content"].is_array() => {
                        if let Some(blocks) = last["content"].as_array_mut() {
                            blocks.push(block);
                        }
                    }
                    _ => wire.push(json!({"role": "user", "content": [block]})),
                }
            }
        }
    }
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}))
        .collect();
    json!({
        "model": cfg.name,
        "max_tokens": cfg.max_output_tokens,
        "system": system,
        "messages": wire,
        "tools": tools,
        "stream": true,
    })
}

/// One content block being streamed.
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
}

#[derive(Default)]
pub struct Accumulator {
    blocks: Vec<(u64, Block)>,
    stop: Option<StopReason>,
    usage: Usage,
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_field(v: &Value, path: &[&str]) -> Result<String, String> {
    field(v, path)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("missing string field {}", path.join(".")))
}

impl Accumulator {
    fn block_mut(&mut self, index: u64) -> Result<&mut Block, String> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
            .ok_or_else(|| format!("delta for content block {index} that was never started"))
    }
}

impl StreamAccumulator for Accumulator {
    fn on_event(&mut self, event: &sse::Event) -> Result<bool, String> {
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| format!("event data is not JSON ({e}): {:.200}", event.data))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                if let Some(n) =
                    field(&v, &["message", "usage", "input_tokens"]).and_then(Value::as_u64)
                {
                    self.usage.input_tokens = n;
                }
            }
            "content_block_start" => {
                let index = field(&v, &["index"])
                    .and_then(Value::as_u64)
                    .ok_or("content_block_start without index")?;
                let block = match field(&v, &["content_block", "type"]).and_then(Value::as_str) {
                    Some("text") => {
                        Block::Text(str_field(&v, &["content_block", "text"]).unwrap_or_default())
                    }
                    Some("tool_use") => Block::ToolUse {
                        id: str_field(&v, &["content_block", "id"])?,
                        name: str_field(&v, &["content_block", "name"])?,
                        json: String::new(),
                    },
                    // Other block kinds (thinking, ...) are not used by this client.
                    _ => return Ok(false),
                };
                self.blocks.push((index, block));
            }
            "content_block_delta" => {
                let index = field(&v, &["index"])
                    .and_then(Value::as_u64)
                    .ok_or("content_block_delta without index")?;
                match field(&v, &["delta", "type"]).and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = str_field(&v, &["delta", "text"])?;
                        if let Block::Text(t) = self.block_mut(index)? {
                            t.push_str(&text);
                        }
                    }
                    Some("input_json_delta") => {
                        let part = str_field(&v, &["delta", "partial_json"])?;
                        if let Block::ToolUse { json, .. } = self.block_mut(index)? {
                            json.push_str(&part);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = field(&v, &["delta", "stop_reason"]).and_then(Value::as_str) {
                    self.stop = Some(match reason {
                        "end_turn" | "stop_sequence" => StopReason::EndTurn,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        _ => StopReason::Other,
                    });
                }
                if let Some(n) = field(&v, &["usage", "output_tokens"]).and_then(Value::as_u64) {
                    self.usage.output_tokens = n;
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let msg =
                    str_field(&v, &["error", "message"]).unwrap_or_else(|_| event.data.clone());
                return Err(format!("the server reported an error mid-stream: {msg}"));
            }
            _ => {} // ping and future event kinds
        }
        Ok(false)
    }

    fn finish(self) -> Result<ModelResponse, String> {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for (_, block) in self.blocks {
            match block {
                Block::Text(t) => text.push_str(&t),
                Block::ToolUse { id, name, json } => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: parse_arguments(&json),
                }),
            }
        }
        let stop = self.stop.unwrap_or(StopReason::Other);
        Ok(ModelResponse {
            text,
            tool_calls,
            stop,
            usage: self.usage,
        })
    }
}
