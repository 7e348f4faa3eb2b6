//! The agent loop: one turn for one group, from claimed messages to a reply in the outbox.
//!
//! A turn reads top to bottom: build the prompt (system prompt + the group's MEMORY.md, read
//! through the sandbox + recent history + the new messages), then model ↔ tools until a final
//! answer or the step limit. Every step is persisted as it happens; the reply and the messages'
//! `done` mark commit together at the end. Model output is data: tool calls are dispatched only
//! through [`Tools::call`], which asks the gate first.

use std::sync::Arc;

use crate::config::Config;
use crate::home::Home;
use crate::model::{Message, ModelClient, Usage};
use crate::store::{ClaimedTurn, Store, TurnEnd};
use crate::tools::{self, Tools};

/// Bytes of MEMORY.md put in the prompt; the rest is left out with a note.
const MAX_MEMORY_BYTES: usize = 16 * 1024;

/// How a turn ended, for channels that report it directly (the terminal).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnResult {
    Replied(String),
    Failed(String),
}

/// Everything a turn needs. One per process, shared by all groups.
pub struct Agent {
    pub home: Home,
    pub config: Config,
    pub store: Arc<Store>,
    /// `Err` holds the message that tells the user what to set.
    pub model: Result<ModelClient, String>,
    pub tools: Tools,
}

impl Agent {
    /// Claim and answer everything pending for `group`, one turn at a time. Returns the results
    /// in order; empty when nothing was pending.
    pub async fn drain_group(
        &self,
        group: &nanoclaw_core::GroupId,
    ) -> anyhow::Result<Vec<(i64, TurnResult)>> {
        let mut results = Vec::new();
        while let Some(turn) = self.store.claim_turn(group)? {
            let result = self.run_turn(&turn).await?;
            results.push((turn.id, result));
        }
        Ok(results)
    }

    /// Run one claimed turn to its end and commit its reply.
    pub async fn run_turn(&self, turn: &ClaimedTurn) -> anyhow::Result<TurnResult> {
        let reply_channel = turn
            .messages
            .last()
            .map_or("api", |m| m.channel.as_str())
            .to_owned();
        let outcome = self.converse(turn).await;
        let result = match outcome {
            Ok(reply) => {
                self.store
                    .finish_turn(turn, &reply_channel, TurnEnd::Done { reply: &reply })?;
                TurnResult::Replied(reply)
            }
            Err(error) => {
                tracing::info!(group = %turn.group, turn = turn.id, %error, "turn failed");
                self.store.finish_turn(
                    turn,
                    &reply_channel,
                    TurnEnd::Failed {
                        error: &error,
                        notice: &error,
                    },
                )?;
                TurnResult::Failed(error)
            }
        };
        Ok(result)
    }

    /// The model ↔ tools loop. `Err` carries a message fit to show the user.
    async fn converse(&self, turn: &ClaimedTurn) -> Result<String, String> {
        let model = self.model.as_ref().map_err(Clone::clone)?;
        let workspace = self
            .home
            .workspace(&turn.group)
            .map_err(|e| format!("{e:#}"))?;
        let persist = |seq: u32, m: &Message, usage: Usage| {
            self.store
                .append_step(turn.id, seq, m, usage)
                .map_err(|e| format!("could not save the turn: {e}"))
        };

        // 1. The prompt: system prompt and memory, history, then the new messages.
        let limits = self.config.limits_for(&turn.group);
        let started = std::time::Instant::now();
        let system = self.system_prompt(&workspace, limits).await;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "prompt built"
        );
        let mut messages = self
            .store
            .history(turn.session_id, turn.id, self.config.context_budget_tokens)
            .map_err(|e| format!("could not load history: {e}"))?;
        let incoming = Message::User {
            text: incoming_text(turn),
        };
        persist(0, &incoming, Usage::default())?;
        messages.push(incoming);
        let mut seq = 1;
        let specs = tools::specs();

        // 2. Model ↔ tools until an answer or the step limit.
        let mut last_text = String::new();
        for _step in 0..self.config.model.max_steps {
            let resp = model
                .complete(&system, &messages, &specs)
                .await
                .map_err(|e| format!("I could not get an answer from the model: {e}"))?;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                tool_calls = resp.tool_calls.len(),
                "model step done"
            );
            let assistant = Message::Assistant {
                text: resp.text.clone(),
                tool_calls: resp.tool_calls.clone(),
            };
            persist(seq, &assistant, resp.usage)?;
            seq += 1;
            messages.push(assistant);
            if resp.tool_calls.is_empty() {
                return Ok(if resp.text.trim().is_empty() {
                    "(the model gave an empty answer)".into()
                } else {
                    resp.text
                });
            }
            last_text = resp.text;
            for call in &resp.tool_calls {
                let outcome = self.tools.call(&turn.group, &workspace, limits, call).await;
                tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, tool = %call.name, "tool done");
                let result = Message::Tool {
                    call_id: call.id.clone(),
                    content: outcome.content,
                    is_error: outcome.is_error,
                };
                persist(seq, &result, Usage::default())?;
                seq += 1;
                messages.push(result);
            }
        }
        let note = format!(
            "(stopped: this turn reached its limit of {} model steps)",
            self.config.model.max_steps
        );
        Ok(if last_text.trim().is_empty() {
            note
        } else {
            format!("{last_text}\n\n{note}")
        })
    }

    async fn system_prompt(
        &self,
        workspace: &std::path::Path,
        limits: nanoclaw_sandbox::Limits,
    ) -> String {
        let mut system = self.config.system_prompt.clone();
        match self
            .tools
            .read_optional(workspace, limits, "MEMORY.md")
            .await
        {
            Ok(Some(memory)) if !memory.trim().is_empty() => {
                let cut = floor_char_boundary(&memory, MAX_MEMORY_BYTES);
                system.push_str("\n\n## Your memory (/workspace/MEMORY.md)\n\n");
                system.push_str(&memory[..cut]);
                if cut < memory.len() {
                    system.push_str(
                        "\n[MEMORY.md is longer; the rest was left out. Read it with read_file.]",
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read MEMORY.md"),
        }
        system
    }
}

/// The new messages as one user message; senders are named when there are several.
fn incoming_text(turn: &ClaimedTurn) -> String {
    match turn.messages.as_slice() {
        [one] => one.text.clone(),
        many => many
            .iter()
            .map(|m| format!("[{}] {}", m.sender, m.text))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut cut = max.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}
