//! The agent loop: one turn for one group, from claimed messages to a reply in the outbox.
//!
//! A turn reads top to bottom: build the prompt (system prompt + the group's MEMORY.md, read
//! through the sandbox + recent history + the new messages), then model ↔ tools until a final
//! answer or the step limit. Every step is persisted as it happens; the reply and the messages'
//! `done` mark commit together at the end. Model output is data: tool calls are dispatched only
//! through [`Tools::call`], which asks the gate first.

use std::sync::Arc;

use nanoclaw_core::GroupId;
use nanoclaw_core::policy::SenderRole;
use serde_json::json;

use crate::agent::tools::{self, CallContext, Tools};
use crate::config::Config;
use crate::config::home::Home;
use crate::model::{Message, ModelClient, Usage};
use crate::store::{ClaimedTurn, Store, TurnEnd, TurnId};

/// How a turn ended, for channels that report it directly (the terminal).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnResult {
    Replied(String),
    Failed(String),
}

/// Everything a turn needs. One per process, shared by all groups.
pub struct Agent {
    pub home: Home,
    /// The config in force; `nanoclaw reload` swaps it with the model client made from it.
    /// Each turn reads both once, so one turn runs under one config. A std RwLock: held only
    /// to clone or swap the Arc.
    config: std::sync::RwLock<(Arc<Config>, Arc<ModelResult>)>,
    pub store: Arc<Store>,
    pub tools: Tools,
    /// The turn each group is running now, with where its reply goes (`None`: a silent task),
    /// so that a stop can end it. A std Mutex: held only to read or swap an entry.
    pub running: std::sync::Mutex<std::collections::HashMap<GroupId, RunningTurn>>,
}

/// The model client, or (`Err`) the message that tells the user what to set.
pub type ModelResult = Result<ModelClient, String>;

/// A turn in progress.
pub struct RunningTurn {
    turn: ClaimedTurn,
    /// Where its reply goes; `None` for a silent task.
    reply: Option<String>,
    /// Who asked to stop it: the entry stays for [`Agent::stopped`] to end the turn.
    stopping: Option<String>,
    /// The approval requests the stop denied.
    denied: usize,
}

/// Marks a turn as running for as long as it lives.
struct Running<'a> {
    agent: &'a Agent,
    group: GroupId,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.agent.running.lock().unwrap_or_else(|p| p.into_inner());
        // A stopped turn's future is dropped mid-way: its entry stays for `Agent::stopped`.
        if running
            .get(&self.group)
            .is_some_and(|r| r.stopping.is_none())
        {
            running.remove(&self.group);
        }
    }
}

impl Agent {
    pub fn new(
        home: Home,
        config: Config,
        store: Arc<Store>,
        model: ModelResult,
        tools: Tools,
    ) -> Agent {
        Agent {
            home,
            config: std::sync::RwLock::new((Arc::new(config), Arc::new(model))),
            store,
            tools,
            running: Default::default(),
        }
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()).0)
    }

    /// The model client in force now.
    pub fn model(&self) -> Arc<ModelResult> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// Put `config` and the model client made from it in force for every turn from now on.
    pub fn set_config(&self, config: Arc<Config>, model: ModelResult) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = (config, Arc::new(model));
    }

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
        let _running = self.mark_running(turn, Some(reply_channel.clone()));
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

    /// Run a task's prompt as a turn of its group. The run speaks with its creator's role; it
    /// is tainted by its prompt only when a tainted turn (or another than the owner) wrote it,
    /// and otherwise only by what it reads. Its reply goes to the group's chat when the task
    /// posts (the channel the group last heard from, else the HTTP API), and is returned for
    /// the run log either way.
    pub async fn run_task_turn(
        &self,
        group: &nanoclaw_core::GroupId,
        task: &crate::store::tasks::Task,
    ) -> anyhow::Result<Result<String, String>> {
        let task_name = &task.name;
        let post = task.post;
        let turn = self.store.start_task_turn(
            group,
            &crate::store::TaskPrompt {
                sender: &format!("task:{task_name}"),
                role: task.role,
                outside: task.tainted || task.role == SenderRole::Other,
                prompt: &task.prompt,
                isolated: task.isolated,
            },
        )?;
        let channel = if post {
            Some(
                self.store
                    .last_chat_channel(group)?
                    .unwrap_or_else(|| "api".into()),
            )
        } else {
            None
        };
        let _running = self.mark_running(&turn, channel.clone());
        let outcome = self.converse(&turn).await;
        match &outcome {
            Ok(reply) => {
                let text = format!("[task {task_name}] {reply}");
                self.store
                    .finish(&turn, channel.as_deref(), TurnEnd::Done { reply: &text })?;
            }
            Err(error) => {
                let notice = format!("[task {task_name}] failed: {error}");
                self.store.finish(
                    &turn,
                    channel.as_deref(),
                    TurnEnd::Failed {
                        error,
                        notice: &notice,
                    },
                )?;
            }
        }
        Ok(outcome)
    }

    fn mark_running(&self, turn: &ClaimedTurn, reply: Option<String>) -> Running<'_> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                turn.group.clone(),
                RunningTurn {
                    turn: turn.clone(),
                    reply,
                    stopping: None,
                    denied: 0,
                },
            );
        Running {
            agent: self,
            group: turn.group.clone(),
        }
    }

    /// Mark `group`'s running turn as being stopped by `by`, and deny the group's pending
    /// approval requests now, before the turn is dropped (a wait dropped on its own would
    /// withdraw its request instead). Returns false when none runs.
    pub fn stopping(&self, group: &GroupId, by: &str) -> bool {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get_mut(group) {
            Some(r) => {
                r.stopping = Some(by.to_owned());
                match crate::agent::approvals::deny_pending(&self.store, group) {
                    Ok(n) => r.denied += n,
                    Err(e) => {
                        tracing::error!(%group, error = %e, "could not deny a stopped turn's approval requests");
                    }
                }
                true
            }
            None => false,
        }
    }

    /// The groups with a turn running now (chat turns and task runs).
    pub fn running_groups(&self) -> Vec<GroupId> {
        let mut groups: Vec<GroupId> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        groups.sort();
        groups
    }

    /// The id of `group`'s running turn.
    pub fn running_turn(&self, group: &GroupId) -> Option<TurnId> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .map(|r| r.turn.id)
    }

    /// Whether `group` has a turn running now.
    pub fn is_running(&self, group: &GroupId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(group)
    }

    /// After a stop dropped `group`'s turn mid-way (its model request, sandboxed command or
    /// approval wait with it): the turn ends as stopped, its reply channel is told, the group's
    /// pending approval requests are denied, and the stop is audited. Returns the turn's id, or
    /// `None` when no turn was running.
    pub fn stopped(&self, group: &GroupId) -> anyhow::Result<Option<TurnId>> {
        let entry = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(group);
        let Some(RunningTurn {
            turn,
            reply,
            stopping,
            denied,
        }) = entry
        else {
            return Ok(None);
        };
        let by = stopping.unwrap_or_else(|| "the owner".into());
        let denied = denied + crate::agent::approvals::deny_pending(&self.store, group)?;
        let notice = format!(
            "(stopped: {by} stopped this turn{})",
            if denied > 0 {
                format!("; {denied} approval request(s) denied")
            } else {
                String::new()
            }
        );
        self.store.finish(
            &turn,
            reply.as_deref(),
            TurnEnd::Failed {
                error: "stopped",
                notice: &notice,
            },
        )?;
        self.tools.audit().record(
            crate::audit::EventKind::TurnStopped,
            Some(group.as_str()),
            json!({"turn": turn.id, "by": by, "approvals_denied": denied}),
        );
        Ok(Some(turn.id))
    }

    /// The model ↔ tools loop, its reply (or error) held to the reply guard: a reply is an
    /// egress path too (a platform fetches the URLs in it for previews), so no secret value or
    /// placeholder leaves in one. `Err` carries a message fit to show the user.
    async fn converse(&self, turn: &ClaimedTurn) -> Result<String, String> {
        match self.converse_unguarded(turn).await {
            Ok(reply) => Ok(self.guard_reply(turn, reply)),
            Err(error) => Err(self.guard_reply(turn, error)),
        }
    }

    /// `text` with every secret value and placeholder withheld; each withholding is audited
    /// and the text says so.
    fn guard_reply(&self, turn: &ClaimedTurn, text: String) -> String {
        let guard = self.tools.reply_guard();
        // The secrets found, from the guard's own matches (never from the reply's text, which
        // could name any secret it likes).
        let names: std::collections::BTreeSet<String> = guard
            .replacements_in(text.as_bytes())
            .into_iter()
            .map(crate::sandbox::egress::withheld_name)
            .collect();
        if names.is_empty() {
            return text;
        }
        let guarded = guard.replace_str(&text);
        tracing::warn!(group = %turn.group, turn = turn.id, secrets = ?names, "a reply carried secrets or their placeholders; withheld");
        self.tools.audit().record(
            crate::audit::EventKind::ReplyWithheld,
            Some(turn.group.as_str()),
            json!({"turn": turn.id, "secrets": names}),
        );
        format!(
            "{guarded}\n\n(nanoclaw withheld secrets from this reply: {}; see the audit log)",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    }

    async fn converse_unguarded(&self, turn: &ClaimedTurn) -> Result<String, String> {
        // 0. What the turn saw, recorded before anything can fail: `audit verify` holds every
        // turn and message of the store to these events.
        for m in &turn.messages {
            self.tools.audit().record(
 crate::audit::EventKind::MessageReceived,
                Some(turn.group.as_str()),
                json!({"turn": turn.id, "inbox_id": m.id, "channel": m.channel, "sender": m.sender, "role": m.role, "outside": m.outside, "text": m.text}),
            );
        }
        // The log is a control: while it cannot be written, no turn acts.
        if let Some(why) = self.tools.audit().failing() {
            return Err(format!(
                "the audit log cannot be written ({why}); no turn runs until it can"
            ));
        }
        // One config and one model client for the whole turn, whatever a reload does meanwhile.
        let config = self.config();
        let model = self.model();
        let model = model.as_ref().as_ref().map_err(Clone::clone)?;
        let workspace = self
            .home
            .workspace(&turn.group)
            .map_err(|e| format!("{e:#}"))?;
        let persist = |seq: u32, m: &Message, usage: Usage| {
            self.store
                .append_step(turn.id, seq, m, usage)
                .map_err(|e| format!("could not save the turn: {e}"))
        };

        // 1. Where the turn comes from, for the gate: channel, sender, taint.
        let audit = self.tools.audit();
        let group = turn.group.as_str();
        let channel = turn
            .messages
            .last()
            .map_or("api", |m| m.channel.as_str())
            .to_owned();
        let roles: Vec<SenderRole> = turn.messages.iter().map(|m| m.role).collect();
        // Outside content in the new messages (another's words, a prompt a tainted turn wrote)
        // taints the turn; each message's role and outside mark were decided when it came in.
        let mut tainted = turn.messages.iter().any(|m| m.outside);
        // The gate sees the least trusted sender among the turn's messages: an owner's message
        // after someone else's does not make the turn the owner's.
        let rank = |r: &SenderRole| match r {
            SenderRole::Other => 0,
            SenderRole::Approver => 1,
            SenderRole::Owner => 2,
        };
        let sender = roles
            .iter()
            .copied()
            .min_by_key(rank)
            .unwrap_or(SenderRole::Other);

        // 2. The prompt: system prompt and memory, history, then the new messages.
        let limits = config.limits_for(&turn.group);
        let started = std::time::Instant::now();
        let memory =
            match crate::agent::memory::read(self.tools.backend(), &workspace, limits).await {
                Ok(memory) => memory,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read MEMORY.md");
                    String::new()
                }
            };
        let memory_untrusted = self
            .store
            .judge_memory(&turn.group, turn.id, &crate::agent::memory::hash(&memory))
            .map_err(|e| format!("could not save the turn: {e}"))?
            && !memory.trim().is_empty();
        tainted |= memory_untrusted;
        let system = super::prompt::system(&config.system_prompt, &memory, memory_untrusted);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "prompt built"
        );
        let mut messages = if turn.isolated {
            Vec::new()
        } else {
            let history = self
                .store
                .history(turn.session_id, turn.id, config.context_budget_tokens)
                .map_err(|e| format!("could not load history: {e}"))?;
            // Outside content read by an earlier turn is in this prompt too.
            tainted |= history.tainted;
            history.messages
        };
        if tainted {
            self.store
                .mark_tainted(turn.id)
                .map_err(|e| format!("could not save the turn: {e}"))?;
        }
        let incoming = Message::User {
            text: super::prompt::incoming(turn),
        };
        persist(0, &incoming, Usage::default())?;
        messages.push(incoming);
        let mut seq = 1;
        let mut specs = tools::specs();
        specs.extend(
            self.tools
                .mcp_specs(&config, &turn.group, &workspace, limits)
                .await,
        );
        // What the model sees: this prompt, then each step's response and tool results below.
        audit.record(
 crate::audit::EventKind::Prompt,
            Some(group),
            json!({"turn": turn.id, "system": system, "messages": messages, "tools": specs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>()}),
        );

        // 3. Model ↔ tools until an answer or the step limit.
        let mut last_text = String::new();
        for _step in 0..config.model.max_steps {
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
            audit.record(
 crate::audit::EventKind::ModelResponse,
                Some(group),
                json!({"turn": turn.id, "step": seq, "message": assistant, "usage": {"input_tokens": resp.usage.input_tokens, "output_tokens": resp.usage.output_tokens}}),
            );
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
                let ctx = CallContext {
                    group: &turn.group,
                    config: &config,
                    channel: &channel,
                    sender,
                    tainted,
                    turn: turn.id,
                };
                let outcome = self.tools.call(&ctx, &workspace, limits, call).await;
                tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, tool = %call.name, "tool done");
                let content = if outcome.outside {
                    if !tainted {
                        tainted = true;
                        self.store
                            .mark_tainted(turn.id)
                            .map_err(|e| format!("could not save the turn: {e}"))?;
                    }
                    super::prompt::untrusted(&call.name, &outcome.content)
                } else {
                    outcome.content
                };
                let result = Message::Tool {
                    call_id: call.id.clone(),
                    content,
                    is_error: outcome.is_error,
                };
                persist(seq, &result, Usage::default())?;
                seq += 1;
                messages.push(result);
            }
        }
        let note = format!(
            "(stopped: this turn reached its limit of {} model steps)",
            config.model.max_steps
        );
        Ok(if last_text.trim().is_empty() {
            note
        } else {
            format!("{last_text}\n\n{note}")
        })
    }
}
