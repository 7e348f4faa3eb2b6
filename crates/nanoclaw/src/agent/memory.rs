//! The group's memory file, `/workspace/MEMORY.md`, which goes into every turn's system
//! prompt: read through the sandbox (the host never opens a path inside a workspace itself),
//! known by its SHA-256, and judged trusted or outside content (`Store::judge_memory`).
//!
//! Memory written while a turn was tainted carries what that turn read, so later turns would
//! otherwise take it as the owner's word: such memory taints the turns that see it, and reaches
//! the model inside `<untrusted-data>`, until the owner reviews it (`nanoclaw memory show`)
//! and vouches for that exact content (`nanoclaw memory trust HASH`). This module never writes
//! the file; the agent does, with its tools.

use std::path::Path;

use nanoclaw_sandbox::files::{FileReply, FileRequest, run_file_op};
use nanoclaw_sandbox::{Backend, Limits};

/// The file, relative to the workspace.
pub const FILE: &str = "MEMORY.md";

/// The memory's identity: lowercase hex SHA-256 of its bytes.
pub fn hash(text: &str) -> String {
    nanoclaw_core::hex::encode(
        ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref(),
    )
}

/// The memory as it is now; empty when there is none.
pub async fn read(
    backend: &dyn Backend,
    workspace: &Path,
    limits: Limits,
) -> Result<String, String> {
    let req = FileRequest::Read {
        path: FILE.into(),
        offset: None,
        limit: None,
    };
    match run_file_op(backend, workspace.to_path_buf(), &req, limits).await {
        Ok(FileReply::Ok { text }) => Ok(text),
        Ok(FileReply::NotFound { .. }) => Ok(String::new()),
        Ok(FileReply::Error { message }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}
