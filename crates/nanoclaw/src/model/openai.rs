//! The OpenAI Chat Completions wire format, as spoken by OpenAI, OpenRouter, Ollama, vLLM and
//! llama.cpp's server: request body, bearer auth, and streamed `chat.completion.chunk`s ending
//! in `data: [DONE]`.

use serde_json::{Value, json};

use super::{
    Message, ModelResponse, StopReason, StreamAccumulator, ToolSpec, Usage, parse_arguments, sse,
};
use crate::config::ModelConfig;
use nanoclaw_core::ToolCall;

pub fn endpoint(base_url: &str) -> String {
    format!("{}/chat/completions", base_url.trim_end_matches('/'))
}

pub fn authorize(req: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(key) => req.bearer_auth(key),
        None => req,
    }
}

pub fn request_body(
    cfg: &ModelConfig,
    system: &str,
    messages: &[Message],
    tools: &[ToolSpec],
) -> Value {
    let mut wire = vec![json!({"role": "system", "content": system})];
    for m in messages {
        wire.push(match m {
            Message::User { text } => json!({"role": "user", "content": text}),
            Message::Assistant { text, tool_calls } => {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|c| {
                        // Arguments travel as a JSON string; malformed ones go back as they came.
                        let args = match &c.arguments {
                            Value::String(raw) => raw.clone(),
                            other => other.to_string(),
                        };
                        json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}})
                    })
                    .collect();
                let content = if text.is_empty() { Value::Null } else { json!(text) };
                if calls.is_empty() {
                    json!({"role": "assistant", "content": content})
                } else {
                    json!({"role": "assistant", "content": content, "tool_calls": calls})
                }
            }
            Message::Tool { call_id, content, .. } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": content})
            }
        });
    }
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}}))
        .collect();
    json!({
        "model": cfg.name,
        "max_tokens": cfg.max_output_tokens,
        "messages": wire,
        "tools": tools,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

#[derive(Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Default)]
pub struct Accumulator {
    text: String,
    calls: Vec<(u64, PendingCall)>,
    stop: Option<StopReason>,
    usage: Usage,
}

impl StreamAccumulator for Accumulator {
    fn on_event(&mut self, event: &sse::Event) -> Result<bool, String> {
        if event.data.trim() == "[DONE]" {
            return Ok(true);
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| format!("chunk is not JSON ({e}): {:.200}", event.data))?;
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(format!("the server reported an error mid-stream: {msg}"));
        }
        if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
            self.usage.input_tokens = usage
                .get("prompt_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            self.usage.output_tokens = usage
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(false); // the usage-only chunk, or a keep-alive
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(t) = delta.get("content").and_then(Value::as_str) {
            self.text.push_str(t);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let pos = match self.calls.iter().position(|(i, _)| *i == index) {
                Some(pos) => pos,
                None => {
                    self.calls.push((index, PendingCall::default()));
                    self.calls.len() - 1
                }
            };
            let pending = &mut self.calls[pos].1;
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                pending.id = id.to_owned();
            }
            if let Some(f) = call.get("function") {
                if let Some(name) = f.get("name").and_then(Value::as_str) {
                    pending.name.push_str(name);
                }
                if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                    pending.arguments.push_str(args);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(match reason {
                "stop" => StopReason::EndTurn,
                "tool_calls" | "function_call" => StopReason::ToolUse,
                "length" => StopReason::MaxTokens,
                _ => StopReason::Other,
            });
        }
        Ok(false)
    }

    fn finish(self) -> Result<ModelResponse, String> {
        let mut tool_calls = Vec::new();
        for (n, (_, c)) in self.calls.into_iter().enumerate() {
            if c.name.is_empty() {
                return Err("a streamed tool call has no function name".into());
            }
            // Some local servers omit call ids; the result must still refer to the call.
            let id = if c.id.is_empty() {
                format!("call_{n}")
            } else {
                c.id
            };
            tool_calls.push(ToolCall {
                id,
                name: c.name,
                arguments: parse_arguments(&c.arguments),
            });
        }
        let stop = self.stop.unwrap_or(StopReason::Other);
        Ok(ModelResponse {
            text: self.text,
            tool_calls,
            stop,
            usage: self.usage,
        })
    }
}
