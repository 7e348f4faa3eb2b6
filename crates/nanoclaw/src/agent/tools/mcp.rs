//! MCP tools on the one path: the group's offered tools (pinned, unchanged) become tool specs
//! under their wire names; a call naming one is renamed to its policy name (`SERVER.TOOL`)
//! before the gate, its arguments checked against the tool's schema, and after the gate it goes
//! to the server ([`crate::mcp::Servers::call`]). Every result is outside content.

use std::path::Path;
use std::sync::Arc;

use nanoclaw_core::{GroupId, ToolCall};
use nanoclaw_egress::gate::EgressGate;
use nanoclaw_sandbox::Limits;
use serde_json::{Value, json};

use super::web::CallNet;
use super::{Args, ToolOutcome, Tools};
use crate::config::Config;
use crate::config::mcp::McpServer;
use crate::mcp::McpTool;
use crate::model::ToolSpec;

/// Parse a call of an offered MCP tool: its arguments held to the tool's input schema.
pub(super) fn parse(tool: &McpTool, call: &ToolCall) -> Result<Args, String> {
    crate::mcp::schema::check(&tool.schema, &call.arguments)
        .map_err(|e| format!("invalid arguments for {}: {e}", call.name))?;
    Ok(Args::Mcp {
        server: tool.server.clone(),
        tool: tool.tool.clone(),
        arguments: call.arguments.as_object().cloned().unwrap_or_default(),
    })
}

impl Tools {
    /// The MCP tools `group`'s model is offered this turn, as specs; servers are started as
    /// needed. A list that changed from its pins asks the approvers to trust it.
    pub async fn mcp_specs(
        &self,
        config: &Config,
        group: &GroupId,
        workspace: &Path,
        limits: Limits,
    ) -> Vec<ToolSpec> {
        let servers: Vec<&McpServer> = config.mcp.values().filter(|s| s.serves(group)).collect();
        if servers.is_empty() {
            self.offer(group, Vec::new());
            return Vec::new();
        }
        let start = |server: &McpServer| {
            Ok(crate::mcp::Place {
                workspace: workspace.to_path_buf(),
                limits,
                net: self.egress.for_server(group, server)?,
                tls: Arc::clone(self.egress.tool_tls()),
            })
        };
        let listed = self.mcp.list(&servers, group, &start).await;
        for (server, why) in &listed.down {
            tracing::warn!(%group, server, error = %why, "an MCP server is down; its tools are not offered");
        }
        for (server, hash) in listed.changed {
            self.ask_to_trust(group, server, hash);
        }
        let specs = listed
            .tools
            .iter()
            .map(|t| ToolSpec {
                name: t.wire.clone(),
                description: format!(
                    "[MCP server {}, tool {}] {}",
                    t.server, t.tool, t.description
                ),
                schema: t.schema.clone(),
            })
            .collect();
        self.offer(group, listed.tools);
        specs
    }

    fn offer(&self, group: &GroupId, tools: Vec<McpTool>) {
        self.mcp_offered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.clone(), tools);
    }

    /// The offered MCP tool of `group` named `name` (its policy name).
    pub(super) fn mcp_tool(&self, group: &GroupId, name: &str) -> Option<McpTool> {
        self.mcp_offered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)?
            .iter()
            .find(|t| t.policy_name() == name)
            .cloned()
    }

    /// A call by an offered MCP tool's wire name, under its policy name; any other call as it
    /// is. (A wire name no offered tool has stays as it is, and fails to parse.)
    pub(super) fn mcp_canonical(&self, group: &GroupId, mut call: ToolCall) -> ToolCall {
        if !call.name.starts_with("mcp__") {
            return call;
        }
        let offered = self.mcp_offered.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tool) = offered
            .get(group)
            .and_then(|tools| tools.iter().find(|t| t.wire == call.name))
        {
            call.name = tool.policy_name();
        }
        call
    }

    /// Open an approval request to trust `server`'s changed tool list; approved, its tools are
    /// pinned as they are now (if the list waiting is still that one).
    fn ask_to_trust(&self, group: &GroupId, server: String, hash: String) {
        let approvals = Arc::clone(&self.approvals);
        let store = Arc::clone(&self.store);
        let audit = Arc::clone(&self.audit);
        let spec = self.policy().default_approval();
        let group = group.clone();
        tokio::spawn(async move {
            if spec.approvers.is_empty() {
                return;
            }
            let call = ToolCall {
                id: format!("mcp-trust-{}", &hash[..12.min(hash.len())]),
                name: "mcp.trust".into(),
                arguments: json!({"server": server, "list_hash": hash}),
            };
            let reason = format!(
                "MCP server {server} changed its tools since they were pinned (see `nanoclaw mcp list`); approving trusts the new list"
            );
            let outcome = approvals.decide(&group, &call, &spec, &reason).await;
            if let Ok(crate::agent::approvals::Outcome::Approved { by, .. }) = outcome {
                // Only the list the approvers were shown: if the server changed it again
                // meanwhile, that one waits for its own approval.
                match crate::mcp::pins::trust_pending(&store, &audit, &server, &hash, &by) {
                    Ok(crate::mcp::pins::Trust::Pinned(_)) => {}
                    Ok(other) => {
                        tracing::warn!(
                            server,
                            ?other,
                            "an approved MCP tool list was no longer the one waiting; nothing pinned"
                        );
                    }
                    Err(e) => {
                        tracing::error!(server, error = %e, "could not pin a trusted MCP tool list");
                    }
                }
            }
        });
    }

    /// Run a decided MCP call: the server's proxy serves it for this call's gate.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn mcp_call(
        &self,
        ctx: &super::CallContext<'_>,
        workspace: &Path,
        limits: Limits,
        call_net: &CallNet<'_>,
        server: &str,
        tool: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> ToolOutcome {
        let Some(config) = ctx.config.mcp.get(server) else {
            return ToolOutcome::error(format!("no MCP server {server} is configured"));
        };
        let group = ctx.group;
        let start = |server: &McpServer| {
            Ok(crate::mcp::Place {
                workspace: workspace.to_path_buf(),
                limits,
                net: self.egress.for_server(group, server)?,
                tls: Arc::clone(self.egress.tool_tls()),
            })
        };
        let gate: Arc<dyn EgressGate> = Arc::clone(&call_net.gate) as Arc<dyn EgressGate>;
        let call = crate::mcp::Call {
            tool,
            arguments,
            tag: call_net.tag.to_owned(),
            gate,
        };
        let result = self.mcp.call(config, group, call, &start).await;
        ToolOutcome {
            content: result.text,
            is_error: result.is_error,
            // Whatever a server answers came from outside.
            outside: true,
        }
    }
}
