//! The `shell` tool: `bash -c` in the group's sandbox, its network only through the group's
//! proxy while this call is open. It never runs anything on the host.

use std::path::Path;
use std::time::Duration;

use nanoclaw_core::GroupId;
use nanoclaw_sandbox::{ExecRequest, ExitState, Limits, Program};

use super::web::CallNet;
use super::{ToolOutcome, Tools};

impl Tools {
    pub(super) async fn shell(
        &self,
        group: &GroupId,
        call_net: &CallNet<'_>,
        workspace: &Path,
        limits: Limits,
        command: String,
        timeout: Option<Duration>,
    ) -> ToolOutcome {
        let limits = Limits {
            wall_time: timeout.map_or(limits.wall_time, |t| t.min(limits.wall_time)),
            ..limits
        };
        let net = self.sandbox_net(group);
        let passed_before = net.as_ref().map(|n| n.requests_passed());
        let req = ExecRequest {
            workspace: workspace.to_path_buf(),
            program: Program::Command(vec!["bash".into(), "-c".into(), command]),
            stdin: Vec::new(),
            limits,
            proxy_socket: net.as_ref().map(|n| n.proxy_socket.clone()),
            trust_dir: net.as_ref().map(|n| n.trust_dir.clone()),
            env: net.as_ref().map(|n| n.env.clone()).unwrap_or_default(),
            stream: None,
        };
        // The proxy serves the sandbox only while this call is open.
        let call = net.as_ref().map(|n| call_net.open(n));
        let result = match &call {
            Some(call) => match call.bounded(self.backend.exec(&req)).await {
                Ok(result) => result,
                Err(stopped) => return ToolOutcome::error(stopped.to_string()),
            },
            None => self.backend.exec(&req).await,
        };
        drop(call);
        match result {
            Ok(out) => {
                let is_error = out.state != ExitState::Exited(0) || out.limit.is_some();
                // The command reached the web through the group's proxy: its output may carry
                // what it read there. (A group's turns run one at a time, so the count moved
                // for this command.)
                let outside = match (&net, passed_before) {
                    (Some(net), Some(before)) => net.requests_passed() > before,
                    _ => false,
                };
                ToolOutcome {
                    content: format_exec(&out, &limits),
                    is_error,
                    outside,
                }
            }
            Err(e) => ToolOutcome::error(format!("the sandbox could not run the command: {e}")),
        }
    }
}

/// Render a command's result: status line (naming any limit hit), then each non-empty stream
/// with truncation notes.
pub fn format_exec(out: &nanoclaw_sandbox::ExecOutput, limits: &Limits) -> String {
    let mut s = match (out.limit, out.state) {
        (Some(hit), ExitState::TimedOut) => format!("killed: {}", hit.describe(limits)),
        (Some(hit), state) => format!("{state}; limit hit: {}", hit.describe(limits)),
        (None, state) => state.to_string(),
    };
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if stream.bytes.is_empty() && stream.dropped == 0 {
            continue;
        }
        s.push_str(&format!("\n--- {name} ---\n{}", stream.text_lossy()));
        if stream.dropped > 0 {
            s.push_str(&format!(
                "\n[truncated: {} more bytes of {name} were dropped (output limit {} bytes)]",
                stream.dropped,
                stream.bytes.len()
            ));
        }
    }
    s
}
