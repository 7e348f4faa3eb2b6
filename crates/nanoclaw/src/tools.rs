//! The agent's tools: their JSON schemas for the model, argument validation, and the one
//! function every tool call passes through, [`Tools::call`], which asks the gate first.
//!
//! Every tool here executes inside the group's sandbox: `shell` as `bash -c`, the file tools
//! through the init's file protocol. The host never opens a workspace path. Invalid arguments
//! go back to the model as a tool error; nothing here panics on model output.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nanoclaw_core::{Decision, GroupId, ToolCall, ToolEffect, gate};
use nanoclaw_sandbox::files::{FileReply, FileRequest, run_file_op};
use nanoclaw_sandbox::{Backend, ExecRequest, ExitState, Limits, Program};
use serde::Deserialize;
use serde_json::json;

use crate::egress::Egress;
use crate::model::ToolSpec;

/// What a tool call produced, as the model will see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutcome {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutcome {
    fn ok(content: impl Into<String>) -> Self {
        ToolOutcome {
            content: content.into(),
            is_error: false,
        }
    }
    fn error(content: impl Into<String>) -> Self {
        ToolOutcome {
            content: content.into(),
            is_error: true,
        }
    }
}

/// The tool names, with their effect class for the gate.
const TOOLS: &[(&str, ToolEffect)] = &[
    ("shell", ToolEffect::Sandboxed),
    ("read_file", ToolEffect::Sandboxed),
    ("write_file", ToolEffect::Sandboxed),
    ("edit_file", ToolEffect::Sandboxed),
    ("list_files", ToolEffect::Sandboxed),
    ("grep", ToolEffect::Sandboxed),
];

fn effect_of(name: &str) -> ToolEffect {
    TOOLS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(ToolEffect::Unknown, |(_, e)| *e)
}

/// The tool schemas offered to the model.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "shell",
            description: "Run a bash command in your sandbox, with /workspace as working directory. \
No network. Returns the exit status and output (long output is truncated).",
            schema: json!({"type": "object", "properties": {
                "command": {"type": "string", "description": "The bash command line."},
                "timeout_secs": {"type": "integer", "minimum": 1, "description": "Wall-time limit; at most the configured limit."}
            }, "required": ["command"], "additionalProperties": false}),
        },
        ToolSpec {
            name: "read_file",
            description: "Read a text file. Relative paths are from /workspace.",
            schema: json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "offset": {"type": "integer", "minimum": 1, "description": "First line to read (1-based)."},
                "limit": {"type": "integer", "minimum": 1, "description": "Number of lines to read."}
            }, "required": ["path"], "additionalProperties": false}),
        },
        ToolSpec {
            name: "write_file",
            description: "Create or overwrite a file with the given content, creating parent directories.",
            schema: json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "content": {"type": "string"}
            }, "required": ["path", "content"], "additionalProperties": false}),
        },
        ToolSpec {
            name: "edit_file",
            description: "Replace one exact occurrence of old_text with new_text in a file. Fails if \
old_text occurs zero times or more than once.",
            schema: json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "old_text": {"type": "string"},
                "new_text": {"type": "string"}
            }, "required": ["path", "old_text", "new_text"], "additionalProperties": false}),
        },
        ToolSpec {
            name: "list_files",
            description: "List files whose path (relative to `path`, default /workspace) matches a glob \
such as \"**/*.md\" or \"*.txt\".",
            schema: json!({"type": "object", "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string"}
            }, "required": ["pattern"], "additionalProperties": false}),
        },
        ToolSpec {
            name: "grep",
            description: "Search files for lines matching a regular expression. Returns path:line:text.",
            schema: json!({"type": "object", "properties": {
                "pattern": {"type": "string", "description": "A regular expression."},
                "path": {"type": "string", "description": "File or directory; default /workspace."},
                "glob": {"type": "string", "description": "Only files whose relative path matches this glob."},
                "ignore_case": {"type": "boolean"}
            }, "required": ["pattern"], "additionalProperties": false}),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellArgs {
    command: String,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_text: String,
    new_text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    pattern: String,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
    #[serde(default)]
    ignore_case: bool,
}

/// Parse a call's arguments into a tool's argument type, or say exactly what is wrong.
fn parse_args<T: serde::de::DeserializeOwned>(call: &ToolCall) -> Result<T, ToolOutcome> {
    if !call.arguments.is_object() {
        return Err(ToolOutcome::error(format!(
            "invalid arguments for {}: expected a JSON object, got {}",
            call.name,
            truncate_for_error(&call.arguments.to_string())
        )));
    }
    serde_json::from_value(call.arguments.clone())
        .map_err(|e| ToolOutcome::error(format!("invalid arguments for {}: {e}", call.name)))
}

fn truncate_for_error(s: &str) -> String {
    let shown: String = s.chars().take(200).collect();
    if shown.len() < s.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

/// Runs tool calls in groups' sandboxes.
pub struct Tools {
    backend: Arc<dyn Backend>,
    egress: Egress,
}

impl Tools {
    pub fn new(backend: Arc<dyn Backend>, egress: Egress) -> Self {
        Tools { backend, egress }
    }

    /// The group's egress proxy socket for its sandbox; without one the sandbox simply has no
    /// way out, so a failure is logged, not fatal to commands that need no network.
    pub fn proxy_socket(&self, group: &GroupId) -> Option<std::path::PathBuf> {
        match self.egress.socket_for(group) {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!(%group, error = %format!("{e:#}"), "no egress proxy for this group");
                None
            }
        }
    }

    /// Release the backend's long-lived sandboxes; call once, when the process is done.
    pub async fn shutdown(&self) {
        self.backend.shutdown().await;
    }

    /// The one path every tool call takes: the gate decides, then the tool runs (or not) in the
    /// sandbox over `workspace`, under `limits`.
    pub async fn call(
        &self,
        group: &GroupId,
        workspace: &Path,
        limits: Limits,
        call: &ToolCall,
    ) -> ToolOutcome {
        let verdict = gate::decide(call, effect_of(&call.name));
        tracing::info!(tool = %call.name, decision = ?verdict.decision, reason = ?verdict.reason, "tool call decided");
        match verdict.decision {
            Decision::Allow => self.run(group, workspace, limits, call).await,
            Decision::Ask => ToolOutcome::error(format!(
                "{} was not run: {}, and this version cannot yet ask for one",
                call.name,
                verdict.reason.describe()
            )),
            Decision::Deny => {
                let known: Vec<&str> = TOOLS.iter().map(|(n, _)| *n).collect();
                ToolOutcome::error(format!(
                    "{} was refused: {}. Available tools: {}",
                    call.name,
                    verdict.reason.describe(),
                    known.join(", ")
                ))
            }
        }
    }

    async fn run(
        &self,
        group: &GroupId,
        workspace: &Path,
        limits: Limits,
        call: &ToolCall,
    ) -> ToolOutcome {
        let request = match call.name.as_str() {
            "shell" => {
                return match parse_args::<ShellArgs>(call) {
                    Ok(args) => self.shell(group, workspace, limits, args).await,
                    Err(e) => e,
                };
            }
            "read_file" => parse_args::<ReadArgs>(call).map(|a| FileRequest::Read {
                path: a.path,
                offset: a.offset,
                limit: a.limit,
            }),
            "write_file" => parse_args::<WriteArgs>(call).map(|a| FileRequest::Write {
                path: a.path,
                content: a.content,
            }),
            "edit_file" => parse_args::<EditArgs>(call).map(|a| FileRequest::Edit {
                path: a.path,
                old: a.old_text,
                new: a.new_text,
            }),
            "list_files" => parse_args::<ListArgs>(call).map(|a| FileRequest::List {
                pattern: a.pattern,
                path: a.path,
            }),
            "grep" => parse_args::<GrepArgs>(call).map(|a| FileRequest::Grep {
                pattern: a.pattern,
                path: a.path,
                glob: a.glob,
                ignore_case: a.ignore_case,
            }),
            other => return ToolOutcome::error(format!("no tool named {other:?}")),
        };
        match request {
            Ok(req) => self.file(workspace, limits, &req).await,
            Err(e) => e,
        }
    }

    async fn shell(
        &self,
        group: &GroupId,
        workspace: &Path,
        limits: Limits,
        args: ShellArgs,
    ) -> ToolOutcome {
        let wall_time = match args.timeout_secs {
            Some(0) => {
                return ToolOutcome::error(
                    "invalid arguments for shell: timeout_secs must be at least 1",
                );
            }
            Some(s) => Duration::from_secs(s).min(limits.wall_time),
            None => limits.wall_time,
        };
        let limits = Limits {
            wall_time,
            ..limits
        };
        let req = ExecRequest {
            workspace: workspace.to_path_buf(),
            program: Program::Command(vec!["bash".into(), "-c".into(), args.command]),
            stdin: Vec::new(),
            limits,
            proxy_socket: self.proxy_socket(group),
        };
        match self.backend.exec(&req).await {
            Ok(out) => {
                let is_error = out.state != ExitState::Exited(0) || out.limit.is_some();
                ToolOutcome {
                    content: format_exec(&out, &limits),
                    is_error,
                }
            }
            Err(e) => ToolOutcome::error(format!("the sandbox could not run the command: {e}")),
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

    /// Read a file in the sandbox; `None` when it does not exist.
    pub async fn read_optional(
        &self,
        workspace: &Path,
        limits: Limits,
        path: &str,
    ) -> Result<Option<String>, String> {
        let req = FileRequest::Read {
            path: path.into(),
            offset: None,
            limit: None,
        };
        match run_file_op(self.backend.as_ref(), workspace.to_path_buf(), &req, limits).await {
            Ok(FileReply::Ok { text }) => Ok(Some(text)),
            Ok(FileReply::NotFound { .. }) => Ok(None),
            Ok(FileReply::Error { message }) => Err(message),
            Err(e) => Err(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: serde_json::Value) -> ToolCall {
        ToolCall {
            id: "1".into(),
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn every_tool_has_a_spec_and_an_effect() {
        let names: Vec<_> = specs().iter().map(|s| s.name).collect();
        let listed: Vec<_> = TOOLS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, listed);
    }

    #[test]
    fn malformed_arguments_become_tool_errors() {
        let e = parse_args::<ShellArgs>(&call("shell", json!("{\"command\":")))
            .err()
            .unwrap();
        assert!(
            e.is_error && e.content.contains("expected a JSON object"),
            "{}",
            e.content
        );
        let e = parse_args::<ShellArgs>(&call("shell", json!({"cmd": "ls"})))
            .err()
            .unwrap();
        assert!(e.content.contains("unknown field `cmd`"), "{}", e.content);
        let e = parse_args::<ShellArgs>(&call("shell", json!({"command": 3})))
            .err()
            .unwrap();
        assert!(e.content.contains("invalid type"), "{}", e.content);
        let e = parse_args::<EditArgs>(&call("edit_file", json!({"path": "a"})))
            .err()
            .unwrap();
        assert!(e.content.contains("missing field"), "{}", e.content);
    }
}
