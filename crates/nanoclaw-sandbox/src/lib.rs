//! Sandbox backends for nanoclaw, and the init that runs first inside every sandbox.
//!
//! Map of the crate:
//! - [`Backend`]: the one trait every backend implements: run a command in a group's sandbox.
//! - [`bwrap`]: the bubblewrap backend: a fresh sandbox per command over the group's workspace.
//! - [`run`]: host-side process runner shared by backends: wall-clock timeout, capped output.
//! - [`files`]: the file-tool protocol (read, write, edit, list, grep). Requests are executed by
//!   the init *inside* the sandbox, so the host never opens a path in a workspace.
//! - [`init`]: the entry point that runs inside the sandbox.
//!
//! What this crate must never do: trust anything that comes back out of a sandbox. Output is
//! capped before it is kept, JSON replies are parsed with size limits, and a reply that does
//! not parse is an error, never a partial success.

pub mod bwrap;
pub mod files;
pub mod init;
pub mod run;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub use run::{Captured, ExitState};

/// Where the init binary is mounted inside every sandbox.
pub const INIT_PATH_IN_SANDBOX: &str = "/.nanoclaw/init";
/// The first argument of the init, telling the `nanoclaw` binary to act as the init.
pub const INIT_ARG: &str = "__init";
/// Where the group's workspace is mounted inside every sandbox, and the commands' working dir.
pub const WORKSPACE_IN_SANDBOX: &str = "/workspace";

/// Limits applied to one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time after which the whole process tree is killed.
    pub wall_time: Duration,
    /// Bytes kept from each of stdout and stderr; the rest is counted and dropped.
    pub output_bytes: usize,
}

/// One command to run in a group's sandbox.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// The group's workspace on the host. The backend mounts it; it never opens paths in it.
    pub workspace: PathBuf,
    /// What the init runs.
    pub program: Program,
    /// Bytes written to the command's stdin, then closed.
    pub stdin: Vec<u8>,
    pub limits: Limits,
}

/// What the init inside the sandbox is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// Run this command (argv, no shell) with `/workspace` as working dir.
    Command(Vec<String>),
    /// Serve one [`files::FileRequest`] read from stdin.
    FileRequest,
}

impl Program {
    /// The argv that starts the init for this program. Every backend runs exactly this, so the
    /// init is always the first thing to run in a sandbox.
    pub fn init_argv(&self) -> Vec<String> {
        let mut argv = vec![INIT_PATH_IN_SANDBOX.to_owned(), INIT_ARG.to_owned()];
        match self {
            Program::Command(cmd) => {
                argv.extend(["exec".to_owned(), "--".to_owned()]);
                argv.extend(cmd.iter().cloned());
            }
            Program::FileRequest => argv.push("file".to_owned()),
        }
        argv
    }
}

/// What came back from one command.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub state: ExitState,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

/// Why a command could not be run (as opposed to a command that ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The backend's program could not be started.
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The backend started but could not build the sandbox.
    #[error("the sandbox could not be set up: {0}")]
    Setup(String),
    /// Talking to the sandboxed process failed.
    #[error("i/o with the sandbox failed: {0}")]
    Io(#[from] std::io::Error),
    /// The sandbox answered a file request with something that is not a valid reply.
    #[error("the sandbox sent an invalid reply: {0}")]
    BadReply(String),
    /// The backend is not usable on this host.
    #[error("{0}")]
    Unavailable(String),
}

/// A boxed future, so backends can sit behind `dyn Backend`.
pub type ExecFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ExecOutput, SandboxError>> + Send + 'a>>;

/// A sandbox backend. Every command the agent runs goes through one of these.
pub trait Backend: Send + Sync {
    /// Short name shown by `doctor` and in logs.
    fn name(&self) -> &'static str;
    /// Run one command in a fresh or per-group sandbox over `req.workspace`.
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> ExecFuture<'a>;
}

/// Run one command and check that the backend can build a sandbox at all.
pub async fn self_test(backend: &dyn Backend, workspace: PathBuf) -> Result<(), SandboxError> {
    let req = ExecRequest {
        workspace,
        program: Program::Command(vec!["true".into()]),
        stdin: Vec::new(),
        limits: Limits {
            wall_time: Duration::from_secs(10),
            output_bytes: 4096,
        },
    };
    let out = backend.exec(&req).await?;
    match out.state {
        ExitState::Exited(0) => Ok(()),
        other => Err(SandboxError::Setup(format!(
            "`true` did not succeed in the sandbox ({other}): {}",
            out.stderr.text_lossy()
        ))),
    }
}

/// The backend used when none works: every command fails with the reason, so the daemon can
/// still start, answer messages and say what is wrong, but never runs anything unsandboxed.
pub struct UnavailableBackend {
    pub reason: String,
}

impl Backend for UnavailableBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    fn exec<'a>(&'a self, _req: &'a ExecRequest) -> ExecFuture<'a> {
        Box::pin(async move {
            Err(SandboxError::Unavailable(format!(
                "no sandbox backend works, so no command can run: {}",
                self.reason
            )))
        })
    }
}
