//! The agent's tools and the one path every tool call takes, [`Tools::call`]:
//!
//! 1. record the call as the model made it;
//! 2. put it in the form its tool reads ([`table::canonical`]) and parse it into typed
//!    arguments ([`table::parse`]): a malformed call ends here, before any approver sees it;
//! 3. the policy gate decides on exactly that call, keeping every rule that matched;
//! 4. the decision is made durable in the audit log; if it cannot be, nothing runs;
//! 5. an `ask` waits for the approvers (the approval is durable too before the call runs);
//! 6. the typed arguments run: `shell` and the file tools inside the group's sandbox
//!    ([`shell`], the init's file protocol), the web tools through the group's egress proxy
//!    ([`web`]), the task tools on the group's own tasks ([`tasks`]);
//! 7. secret values are redacted from the result, which is recorded and handed back.
//!
//! The host never opens a workspace path, and nothing here panics on model output.

mod mcp;
mod shell;
pub mod table;
mod tasks;
mod web;

use std::path::Path;
use std::sync::Arc;

use nanoclaw_core::policy::{Context, Policy, SenderRole};
use nanoclaw_core::{Decision, GroupId, ToolCall};
use nanoclaw_sandbox::files::{FileReply, FileRequest, run_file_op};
use nanoclaw_sandbox::{Backend, Limits};
use serde_json::json;

use crate::agent::approvals::{Approvals, Outcome};
use crate::agent::egress_gate::CallGate;
use crate::agent::progress::{self, Progress};
use crate::audit::{Audit, EventKind};
use crate::sandbox::egress::Egress;
pub use table::{Args, canonical, effect_of, network_tools, specs};
use web::CallNet;

/// What a tool call produced, as the model will see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutcome {
    pub content: String,
    pub is_error: bool,
    /// The content came from outside (the web): the turn is tainted from here on.
    pub outside: bool,
}

impl ToolOutcome {
    fn ok(content: impl Into<String>) -> Self {
        ToolOutcome {
            content: content.into(),
            is_error: false,
            outside: false,
        }
    }
    fn error(content: impl Into<String>) -> Self {
        ToolOutcome {
            content: content.into(),
            is_error: true,
            outside: false,
        }
    }
}

/// The effect class of a tool the policy names: a built-in's own; a configured MCP server's
/// tool (`SERVER.TOOL`) acts outside the sandbox (so it asks unless a rule allows it); anything
/// else is no tool.
pub fn effect_for(config: &crate::config::Config, name: &str) -> nanoclaw_core::ToolEffect {
    match name.split_once('.') {
        Some((server, tool)) if !tool.is_empty() && config.mcp.contains_key(server) => {
            nanoclaw_core::ToolEffect::OutsideSandbox
        }
        _ => effect_of(name),
    }
}

/// Where a call comes from: told to the gate by the agent, never taken from the model.
pub struct CallContext<'a> {
    pub group: &'a GroupId,
    /// The config the turn runs under (its MCP servers).
    pub config: &'a crate::config::Config,
    pub channel: &'a str,
    /// The role of the sender of the turn's newest message, as its channel decided it.
    pub sender: SenderRole,
    /// The turn has read outside content.
    pub tainted: bool,
    pub turn: i64,
}

/// Runs tool calls in groups' sandboxes, each after the policy gate.
pub struct Tools {
    backend: Arc<dyn Backend>,
    egress: Egress,
    /// The policy in force; `nanoclaw reload` swaps it. Each call reads it once, so one call
    /// is judged under one policy. A std RwLock: held only to clone or swap the Arc.
    policy: std::sync::RwLock<Arc<Policy>>,
    /// Shared with the egress gates of running calls.
    approvals: Arc<Approvals>,
    audit: Arc<Audit>,
    /// For the task tools: the store, and the scheduler's wake-up.
    store: Arc<crate::store::Store>,
    tasks_changed: Arc<tokio::sync::Notify>,
    /// Each call's start and end, for whoever watches its group.
    announcer: crate::agent::progress::Announcer,
    /// The MCP servers' connections.
    mcp: Arc<crate::mcp::Servers>,
    /// Each group's MCP tools as last offered to its model: what its calls may name.
    mcp_offered: std::sync::Mutex<std::collections::HashMap<GroupId, Vec<crate::mcp::McpTool>>>,
}

impl Tools {
    pub fn new(
        backend: Arc<dyn Backend>,
        egress: Egress,
        policy: Arc<Policy>,
        approvals: Approvals,
        audit: Arc<Audit>,
        store: Arc<crate::store::Store>,
    ) -> Self {
        Tools {
            mcp: Arc::new(crate::mcp::Servers::new(
                Arc::clone(&backend),
                Arc::clone(&audit),
                Arc::clone(&store),
            )),
            mcp_offered: Default::default(),
            backend,
            egress,
            policy: std::sync::RwLock::new(policy),
            approvals: Arc::new(approvals),
            audit,
            store,
            tasks_changed: Arc::new(tokio::sync::Notify::new()),
            announcer: crate::agent::progress::Announcer::default(),
        }
    }

    /// Where calls are announced as they start and end.
    pub fn announcer(&self) -> &crate::agent::progress::Announcer {
        &self.announcer
    }

    /// Notified whenever a tool changes the schedule.
    pub fn tasks_changed(&self) -> &Arc<tokio::sync::Notify> {
        &self.tasks_changed
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put `policy` in force for every call from now on (calls already decided keep theirs).
    pub fn set_policy(&self, policy: Arc<Policy>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The sandbox backend, for reading a workspace file the host must not open itself.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Withholds secret values and placeholders from replies.
    pub fn reply_guard(&self) -> Arc<nanoclaw_core::secret::Replacer> {
        self.egress.reply_guard()
    }

    /// Put newly opened secrets in force: the proxies, the placeholders of new sandboxes, the
    /// redaction of tool results and replies (the audit log's redaction is the caller's).
    pub fn replace_secrets(
        &self,
        secrets: &[crate::store::secrets::OpenSecret],
    ) -> anyhow::Result<()> {
        self.egress.replace_secrets(secrets)
    }

    /// Put a reloaded config's egress allowlists in force, and stop the MCP servers it no
    /// longer runs as they run (each starts again, as configured now, when next needed).
    pub fn replace_config(&self, config: Arc<crate::config::Config>) {
        let configured = config.mcp.clone();
        self.mcp.put_in_force(configured.clone());
        self.egress.replace_config(config);
        let servers = Arc::clone(&self.mcp);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { servers.retire(&configured).await });
            }
            // Outside a runtime no server has run (they run only within turns).
            Err(_) => tracing::debug!("no runtime: no MCP servers to retire"),
        }
    }

    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    /// The group's network for its sandbox; without it the sandbox simply has no way out, so
    /// a failure is logged, not fatal to commands that need no network.
    pub fn sandbox_net(&self, group: &GroupId) -> Option<crate::sandbox::egress::SandboxNet> {
        match self.egress.for_group(group) {
            Ok(net) => Some(net),
            Err(e) => {
                tracing::warn!(%group, error = %format!("{e:#}"), "no egress proxy for this group");
                None
            }
        }
    }

    /// The owner's own command (`nanoclaw sandbox exec` through the daemon): in the group's
    /// sandbox, with the group's proxy held to the allowlist alone, as a command of no turn.
    pub async fn owner_exec(
        &self,
        group: &GroupId,
        workspace: &Path,
        limits: Limits,
        command: Vec<String>,
    ) -> anyhow::Result<nanoclaw_sandbox::ExecOutput> {
        let net = self.egress.for_group(group)?;
        self.backend.settle(workspace).await;
        let req = nanoclaw_sandbox::ExecRequest {
            workspace: workspace.to_path_buf(),
            program: nanoclaw_sandbox::Program::Command(command),
            stdin: Vec::new(),
            limits,
            proxy_socket: Some(net.proxy_socket.clone()),
            trust_dir: Some(net.trust_dir.clone()),
            env: net.env.clone(),
            stream: None,
        };
        let call = net.open_call("sandbox exec".into(), None);
        // As the shell tool: a command past its egress budget is stopped.
        let out = call.bounded(self.backend.exec(&req)).await??;
        Ok(out)
    }

    /// Release the backend's long-lived sandboxes and the MCP servers; call once, when the
    /// process is done.
    pub async fn shutdown(&self) {
        self.mcp.shutdown().await;
        self.backend.shutdown().await;
    }

    /// The one path every tool call takes (see the module's steps): parsed, decided (asking
    /// approvers when the policy says so), made durable, then run in the sandbox over
    /// `workspace`, under `limits`. The call, the decision and the result are audited.
    pub async fn call(
        &self,
        ctx: &CallContext<'_>,
        workspace: &Path,
        limits: Limits,
        call: &ToolCall,
    ) -> ToolOutcome {
        let group = ctx.group.as_str();
        // 1. The call as the model made it.
        self.audit.record(
            EventKind::ToolCall,
            Some(group),
            json!({"turn": ctx.turn, "call_id": call.id, "tool": call.name, "arguments": call.arguments}),
        );
        // 2. From here on, the call as the tool reads it: what the gate judges is what runs
        // (an MCP tool under its policy name, `SERVER.TOOL`).
        let canonical = self.mcp_canonical(ctx.group, canonical(call));
        if canonical.arguments != call.arguments {
            self.audit.record(
                EventKind::ToolCallCanonical,
                Some(group),
                json!({"turn": ctx.turn, "call_id": call.id, "tool": call.name, "arguments": canonical.arguments}),
            );
        }
        let call = &canonical;
        let started = std::time::Instant::now();
        self.announcer.tell(Progress::Started {
            group: group.to_owned(),
            tool: call.name.clone(),
            args: self
                .egress
                .redactor()
                .replace_str(&progress::short_args(&call.arguments)),
        });
        let parsed = match self.mcp_tool(ctx.group, &call.name) {
            Some(tool) => mcp::parse(&tool, call),
            None => table::parse(call),
        };
        let args = match parsed {
            Ok(args) => args,
            Err(e) => return self.finish(ctx, call, started, ToolOutcome::error(e)),
        };
        // 3. Decide, under the policy in force as the call is decided (also its network gate's).
        let policy = self.policy();
        let verdict = policy.decide(&Context {
            tool: &call.name,
            args: &call.arguments,
            group,
            channel: ctx.channel,
            sender: ctx.sender,
            tainted: ctx.tainted,
            effect: effect_for(ctx.config, &call.name),
        });
        let reason = verdict.reason.describe();
        tracing::info!(tool = %call.name, decision = ?verdict.decision, %reason, "tool call decided");
        // 4. INVARIANT: the decision is in the log before anything it allows happens.
        let matched: Vec<String> = verdict.matched.iter().map(|r| r.describe()).collect();
        let recorded = self
            .audit
            .durable(
                EventKind::PolicyDecision,
                Some(group),
                json!({"turn": ctx.turn, "call_id": call.id, "tool": call.name, "decision": verdict.decision, "reason": reason, "matched": matched, "sender": ctx.sender, "tainted": ctx.tainted, "channel": ctx.channel}),
            )
            .await;
        if let Err(e) = recorded {
            tracing::error!(tool = %call.name, error = %e, "a decision could not be recorded; the call does not run");
            return self.finish(
                ctx,
                call,
                started,
                ToolOutcome::error(format!(
                    "{} was not run: its decision could not be recorded ({e})",
                    call.name
                )),
            );
        }
        // 5. Ask when asked to; 6. run.
        let outcome = match (verdict.decision, &verdict.approval) {
            (Decision::Allow, _) => self.run(ctx, workspace, limits, call, args, &policy).await,
            (Decision::Ask, Some(spec)) if spec.approvers.is_empty() => {
                ToolOutcome::error(format!(
                    "{} was not run: it needs a human's approval ({reason}), and no approvers are configured in policy.toml",
                    call.name
                ))
            }
            (Decision::Ask, Some(spec)) => {
                let outcome = self.approvals.decide(ctx.group, call, spec, &reason).await;
                self.announcer.tell(Progress::Answered {
                    group: group.to_owned(),
                    tool: call.name.clone(),
                    answer: match &outcome {
                        Ok(Outcome::Approved { by, .. }) => format!("approved by {by}"),
                        Ok(Outcome::Denied { by }) => format!("denied by {by}"),
                        Ok(Outcome::Expired { after }) => {
                            format!("no answer within {}s: denied", after.as_secs())
                        }
                        Err(e) => format!("the approval could not be recorded: {e}"),
                    },
                });
                match outcome {
                    Ok(Outcome::Approved { .. }) => {
                        // The policy may have been reloaded while the call waited: an approval
                        // never runs what the policy in force now refuses.
                        let now = self.policy();
                        let again = now.decide(&Context {
                            tool: &call.name,
                            args: &call.arguments,
                            group,
                            channel: ctx.channel,
                            sender: ctx.sender,
                            tainted: ctx.tainted,
                            effect: effect_for(ctx.config, &call.name),
                        });
                        if again.decision == Decision::Deny {
                            ToolOutcome::error(format!(
                                "{} was not run: approved, but the policy reloaded since refuses it ({})",
                                call.name,
                                again.reason.describe()
                            ))
                        } else {
                            self.run(ctx, workspace, limits, call, args, &now).await
                        }
                    }
                    Ok(Outcome::Denied { by }) => ToolOutcome::error(format!(
                        "{} was not run: the approver {by} denied it",
                        call.name
                    )),
                    Ok(Outcome::Expired { after }) => ToolOutcome::error(format!(
                        "{} was not run: no approval came within {}s, which counts as a denial",
                        call.name,
                        after.as_secs()
                    )),
                    Err(e) => ToolOutcome::error(format!(
                        "{} was not run: the approval could not be recorded: {e}",
                        call.name
                    )),
                }
            }
            (Decision::Ask, None) | (Decision::Deny, _) => {
                ToolOutcome::error(format!("{} was refused: {reason}", call.name))
            }
        };
        self.finish(ctx, call, started, outcome)
    }

    /// Step 7: a secret's value never reaches the model, whatever produced it; the result is
    /// recorded as the model will see it.
    fn finish(
        &self,
        ctx: &CallContext<'_>,
        call: &ToolCall,
        started: std::time::Instant,
        mut outcome: ToolOutcome,
    ) -> ToolOutcome {
        outcome.content = self.egress.redactor().replace_str(&outcome.content);
        self.announcer.tell(Progress::Ended {
            group: ctx.group.to_string(),
            tool: call.name.clone(),
            millis: started.elapsed().as_millis() as u64,
            ok: !outcome.is_error,
            status: progress::short(&outcome.content),
        });
        self.audit.record(
            EventKind::ToolResult,
            Some(ctx.group.as_str()),
            json!({"turn": ctx.turn, "call_id": call.id, "tool": call.name, "is_error": outcome.is_error, "outside": outcome.outside, "millis": (started.elapsed().as_micros() as f64) / 1000.0, "bytes": outcome.content.len(), "content": outcome.content}),
        );
        outcome
    }

    /// Run a decided call's typed arguments.
    async fn run(
        &self,
        ctx: &CallContext<'_>,
        workspace: &Path,
        limits: Limits,
        call: &ToolCall,
        args: Args,
        policy: &Arc<Policy>,
    ) -> ToolOutcome {
        let group = ctx.group;
        // How the egress record names this call.
        let tag = format!("turn {} call {}", ctx.turn, call.id);
        // The policy's word on each network request the call makes, for this turn.
        let gate = Arc::new(CallGate::new(
            Arc::clone(policy),
            Arc::clone(&self.approvals),
            group.clone(),
            ctx.channel.to_owned(),
            ctx.sender,
            ctx.tainted,
            tag.clone(),
            call.name.clone(),
        ));
        let call_net = CallNet { tag: &tag, gate };
        // Nothing of an abandoned earlier command may still reach the group's proxy once this
        // call opens it, or its late requests would be taken for this call's.
        self.backend.settle(workspace).await;
        match args {
            Args::Shell { command, timeout } => {
                self.shell(group, &call_net, workspace, limits, command, timeout)
                    .await
            }
            Args::File(req) => self.file(workspace, limits, &req).await,
            Args::WebFetch { url, max_chars } => {
                self.web_fetch(group, &call_net, url, max_chars).await
            }
            Args::HttpRequest {
                method,
                url,
                headers,
                body,
            } => {
                self.http_request(group, &call_net, method, &url, &headers, &body)
                    .await
            }
            Args::ScheduleTask {
                name,
                prompt,
                when,
                isolated,
                silent,
            } => self.schedule_task(ctx, name, prompt, when, isolated, silent),
            Args::ListTasks => self.list_tasks(group),
            Args::CancelTask { id } => self.cancel_task(group, id),
            Args::Mcp {
                server,
                tool,
                arguments,
            } => {
                self.mcp_call(ctx, workspace, limits, &call_net, &server, &tool, arguments)
                    .await
            }
        }
    }

    /// Run one file request in the sandbox and render the reply for the model.
    pub async fn file(&self, workspace: &Path, limits: Limits, req: &FileRequest) -> ToolOutcome {
        let backend = self.backend.as_ref();
        match run_file_op(backend, workspace.to_path_buf(), req, limits).await {
            Ok(FileReply::Ok { text }) => ToolOutcome::ok(text),
            Ok(FileReply::NotFound { path }) => {
                ToolOutcome::error(format!("{path}: no such file or directory"))
            }
            Ok(FileReply::Error { message }) => ToolOutcome::error(message),
            Err(e) => ToolOutcome::error(format!("the sandbox could not run the file tool: {e}")),
        }
    }
}
