//! The egress gate of one tool call: the policy's `[[egress]]` rules, decided for the call's
//! turn (its group, channel, sender and taint, told by the agent), with approvals asked of the
//! turn's approvers like any tool call's.
//!
//! A sandboxed command can make many requests; the gate keeps what it can cost a person
//! bounded: one approval request at a time per call, at most [`ASKS_PER_CALL`] of them, and
//! none after a human has refused one of the call's requests.
//!
//! Within one call, taint moves as soon as anything comes in: once a request or tunnel has
//! been let through, the call's later requests are judged as a tainted turn's.
//!
//! What this module must never do: let a request through that the policy refused or that no
//! approver approved, or take the turn's context from anything the sandbox sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nanoclaw_core::egress_rules::{EgressContext, TunnelVerdict};
use nanoclaw_core::policy::{ApprovalSpec, SenderRole};
use nanoclaw_core::{Decision, GroupId, Policy, ToolCall, Verdict};
use nanoclaw_egress::gate::{Answer, EgressGate, Facts, Tunnel};
use serde_json::json;

use crate::agent::approvals::{Approvals, Outcome};

/// Approval requests one tool call's network requests may open.
pub const ASKS_PER_CALL: usize = 4;

/// The name approvers see for a network request awaiting approval.
pub const EGRESS_TOOL: &str = "egress";

/// One tool call's gate, made by the agent's tool runner when the call starts.
pub struct CallGate {
    pub policy: Arc<Policy>,
    pub approvals: Arc<Approvals>,
    pub group: GroupId,
    pub channel: String,
    pub sender: SenderRole,
    pub tainted: bool,
    /// The tool call this gate serves: its id and tool.
    pub call_id: String,
    pub tool: String,
    asked: tokio::sync::Mutex<Asked>,
    /// Set once the call has let a request or tunnel through: from then on its requests are
    /// judged as a tainted turn's.
    read_outside: AtomicBool,
    /// Time spent waiting for approvers so far, and since when the current wait (if any).
    held: std::sync::Mutex<(Duration, Option<Instant>)>,
}

/// What the call has asked of approvers so far.
#[derive(Default)]
struct Asked {
    count: usize,
    /// Set once an approver refused (or let expire) one of the call's requests.
    refused: Option<String>,
}

impl CallGate {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Arc<Policy>,
        approvals: Arc<Approvals>,
        group: GroupId,
        channel: String,
        sender: SenderRole,
        tainted: bool,
        call_id: String,
        tool: String,
    ) -> CallGate {
        CallGate {
            policy,
            approvals,
            group,
            channel,
            sender,
            tainted,
            call_id,
            tool,
            asked: tokio::sync::Mutex::new(Asked::default()),
            read_outside: AtomicBool::new(false),
            held: std::sync::Mutex::new((Duration::ZERO, None)),
        }
    }

    /// How long the call's requests have waited for approvers in all, the current wait
    /// included: a client timing a request leaves this out.
    pub fn held_for(&self) -> Duration {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.0 + held.1.map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn hold(&self, waiting: bool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match (waiting, held.1.take()) {
            (true, _) => held.1 = Some(Instant::now()),
            (false, Some(since)) => held.0 += since.elapsed(),
            (false, None) => {}
        }
    }

    fn context(&self) -> EgressContext<'_> {
        EgressContext {
            group: self.group.as_str(),
            channel: &self.channel,
            sender: self.sender,
            // Once the call has let a request through, what came back may steer the rest of
            // the call (`curl …/script | sh`): its later requests are judged as tainted.
            tainted: self.tainted || self.read_outside.load(Ordering::SeqCst),
            tool: &self.tool,
        }
    }

    /// Carry out a verdict: allow, refuse with its reason, or ask the approvers about
    /// `request` (what they are shown) and wait.
    async fn carry_out(&self, verdict: Verdict, request: serde_json::Value) -> Result<(), String> {
        let reason = verdict.reason.describe();
        let passed = match (verdict.decision, verdict.approval) {
            (Decision::Allow, _) => Ok(()),
            (Decision::Ask, Some(spec)) => self.ask(request, &spec, &reason).await,
            (Decision::Ask, None) | (Decision::Deny, _) => Err(reason),
        };
        if passed.is_ok() {
            self.read_outside.store(true, Ordering::SeqCst);
        }
        passed
    }

    async fn ask(
        &self,
        request: serde_json::Value,
        spec: &ApprovalSpec,
        reason: &str,
    ) -> Result<(), String> {
        if spec.approvers.is_empty() {
            return Err(format!(
                "it needs a human's approval ({reason}), and no approvers are configured in policy.toml"
            ));
        }
        // One request at a time: a command opening many connections cannot flood approvers.
        let mut asked = self.asked.lock().await;
        if let Some(earlier) = &asked.refused {
            return Err(format!(
                "an earlier request of this tool call was refused ({earlier}); no more are asked"
            ));
        }
        if asked.count >= ASKS_PER_CALL {
            return Err(format!(
                "it needs a human's approval ({reason}), and this tool call has already asked {ASKS_PER_CALL} times, the most one call may"
            ));
        }
        asked.count += 1;
        let call = ToolCall {
            id: format!("{}/egress {}", self.call_id, asked.count),
            name: EGRESS_TOOL.into(),
            arguments: request,
        };
        let why = format!("{reason}; made by {} in this turn", self.tool);
        self.hold(true);
        let outcome = self.approvals.decide(&self.group, &call, spec, &why).await;
        self.hold(false);
        let refused = match outcome {
            Ok(Outcome::Approved { .. }) => return Ok(()),
            Ok(Outcome::Denied { by }) => format!("the approver {by} denied it"),
            Ok(Outcome::Expired { after }) => format!(
                "no approval came within {}s, which counts as a denial",
                after.as_secs()
            ),
            Err(e) => format!("the approval could not be recorded: {e}"),
        };
        asked.refused = Some(refused.clone());
        Err(refused)
    }
}

impl EgressGate for CallGate {
    fn tunnel<'a>(&'a self, host: &'a str, port: u16) -> Answer<'a, Tunnel> {
        Box::pin(async move {
            match self.policy.decide_tunnel(&self.context(), host, port) {
                TunnelVerdict::Inspect => Ok(Tunnel::Inspect),
                TunnelVerdict::Decided(verdict) => {
                    let shown = json!({"method": "CONNECT", "target": format!("{host}:{port}"), "tool": self.tool});
                    self.carry_out(verdict, shown).await.map(|()| Tunnel::Relay)
                }
            }
        })
    }

    fn request<'a>(&'a self, facts: &'a Facts) -> Answer<'a, ()> {
        Box::pin(async move {
            let verdict = self.policy.decide_egress(&self.context(), &facts.request());
            let shown = json!({
                "method": facts.method,
                "url": facts.url,
                "body": facts.body,
                "sends": facts.sends,
                "tool": self.tool,
            });
            self.carry_out(verdict, shown).await
        })
    }
}
