//! Sandbox backends for nanoclaw, and the init that runs first inside every sandbox.
//!
//! Map of the crate:
//! - [`Backend`]: the one trait every backend implements: run a command in a group's sandbox.
//! - [`bwrap`]: the bubblewrap backend: a fresh sandbox per command over the group's workspace.
//! - [`cgroup`]: per-command cgroups (v2, or v1 controllers) for memory, process and CPU limits.
//! - [`run`]: host side of the init protocol: spawn the launcher, read the init's frames.
//! - [`spec`]: the protocol itself: what the host asks ([`spec::InitSpec`]), what the init
//!   reports ([`spec::InitReport`]), and the [`spec::Limits`].
//! - [`init`]: the program that runs inside the sandbox: no_new_privs, rlimits, Landlock,
//!   seccomp, the proxy relay, then the command or file request, then the report.
//! - [`files`]: the file tools (read, write, edit, list, grep), carried out inside the sandbox
//!   so the host never opens a path in a workspace.
//!
//! What this crate must never do: trust anything that comes back out of a sandbox. Frames are
//! size-checked before they are read, output is capped before it is kept, and a report that
//! does not parse is an error, never a partial success.

pub mod bwrap;
pub mod cgroup;
pub mod docker;
pub mod files;
pub mod init;
mod landlock_rules;
mod reaper;
pub mod relay;
pub mod run;
mod seccomp;
pub mod spec;
pub mod unprivileged;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub use run::{Captured, ExitState};
pub use spec::{Enforcement, Hardening, LandlockStatus, LimitHit, Limits, Program};

/// Where the init binary is mounted inside every sandbox.
pub const INIT_PATH_IN_SANDBOX: &str = "/.nanoclaw/init";
/// The first argument of the init, telling the `nanoclaw` binary to act as the init.
pub const INIT_ARG: &str = "__init";
/// Where the group's workspace is mounted inside every sandbox, and the commands' working dir.
pub const WORKSPACE_IN_SANDBOX: &str = "/workspace";
/// The seccomp deny-list, for `doctor` and the docs.
pub use seccomp::DENIED as SECCOMP_DENIED;

/// One command to run in a group's sandbox.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// The group's workspace on the host. The backend mounts it; it never opens paths in it.
    pub workspace: PathBuf,
    /// What the init runs.
    pub program: Program,
    /// Bytes written to the init's stdin (the command's, or the file request), then closed.
    pub stdin: Vec<u8>,
    pub limits: Limits,
    /// The egress proxy's Unix socket for this group, mounted for the in-sandbox relay.
    pub proxy_socket: Option<PathBuf>,
    /// A host directory holding `ca.pem` (the local CA's certificate, never its key) and
    /// `ca-bundle.pem` (the system roots plus that CA), mounted read-only at
    /// [`TRUST_DIR_IN_SANDBOX`]; the bundle also replaces the system bundle.
    pub trust_dir: Option<PathBuf>,
    /// Environment for the command (secret placeholders; never a secret).
    pub env: Vec<(String, String)>,
    /// For a long-lived command spoken to over its stdio (an MCP server): its stdin and stdout
    /// as streams, instead of `stdin` written at once and stdout captured. Its stderr is still
    /// captured, under the output cap.
    pub stream: Option<Stream>,
}

/// A long-lived command's stdin and stdout as byte streams. The host keeps the ends
/// [`Stream::pair`] returns; the backend takes the other ends, once.
#[derive(Clone, Default)]
pub struct Stream(std::sync::Arc<std::sync::Mutex<Option<StreamEnds>>>);

/// The backend's ends of a [`Stream`].
pub struct StreamEnds {
    /// What the host wrote, for the command's stdin.
    pub stdin: tokio::io::DuplexStream,
    /// Where the command's stdout goes, for the host to read.
    pub stdout: tokio::io::DuplexStream,
}

/// Bytes of a streamed command's stderr the host keeps.
pub const STREAM_STDERR_CAP: usize = 64 * 1024;

/// Bytes buffered in each direction of a stream before the writer waits.
const STREAM_BUFFER: usize = 256 * 1024;

impl Stream {
    /// A stream, with the host's ends: write to the first (the command's stdin), read from the
    /// second (its stdout).
    pub fn pair() -> (Stream, tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (host_in, backend_in) = tokio::io::duplex(STREAM_BUFFER);
        let (backend_out, host_out) = tokio::io::duplex(STREAM_BUFFER);
        let ends = StreamEnds {
            stdin: backend_in,
            stdout: backend_out,
        };
        (
            Stream(std::sync::Arc::new(std::sync::Mutex::new(Some(ends)))),
            host_in,
            host_out,
        )
    }

    /// The backend's ends; `None` once taken.
    pub fn take(&self) -> Option<StreamEnds> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

/// Where the trust directory appears in a sandbox.
pub const TRUST_DIR_IN_SANDBOX: &str = "/etc/nanoclaw";
/// The system CA bundle path that TLS clients read by default (Debian and derivatives).
pub const SYSTEM_BUNDLE_IN_SANDBOX: &str = "/etc/ssl/certs/ca-certificates.crt";
/// File names inside the trust directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_BUNDLE_FILE: &str = "ca-bundle.pem";

impl ExecRequest {
    /// The command's environment: `env`, plus, when the trust directory is mounted, the
    /// variables common TLS clients read their roots from.
    pub fn command_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        if self.trust_dir.is_some() {
            let bundle = format!("{TRUST_DIR_IN_SANDBOX}/{CA_BUNDLE_FILE}");
            for var in [
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "GIT_SSL_CAINFO",
            ] {
                env.push((var.into(), bundle.clone()));
            }
            env.push((
                "NODE_EXTRA_CA_CERTS".into(),
                format!("{TRUST_DIR_IN_SANDBOX}/{CA_CERT_FILE}"),
            ));
        }
        env
    }
}

/// What came back from one command.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub state: ExitState,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
    /// A limit the command ran into, if any.
    pub limit: Option<LimitHit>,
    /// The reply to a [`Program::FileRequest`].
    pub file_reply: Option<files::FileReply>,
    /// The hardening the init reported applying.
    pub hardening: Option<Hardening>,
    /// Whether the backend's cgroup limits held this command.
    pub cgroup_limits: bool,
    /// Limits the host's cgroups do not offer ("swap", "cpu"): rlimits alone stand for them.
    pub cgroup_unenforced: Vec<&'static str>,
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
    /// The backend started but could not build the sandbox, or the init refused to go on.
    #[error("the sandbox could not be set up: {0}")]
    Setup(String),
    /// Talking to the sandboxed process failed.
    #[error("i/o with the sandbox failed: {0}")]
    Io(#[from] std::io::Error),
    /// The sandbox sent something that is not a valid reply.
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
    /// Run one request in a sandbox over `req.workspace`, through the init.
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> ExecFuture<'a>;
    /// Wait until nothing of an earlier, abandoned command over `workspace` can still run
    /// (Docker: its container is gone). A caller opening the group's proxy to a new call waits
    /// for this first, so no late request of the old command is taken for the new call's.
    fn settle<'a>(
        &'a self,
        _workspace: &'a std::path::Path,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }

    /// Release what the backend keeps between commands (containers). Called when the process
    /// is done with the backend.
    fn shutdown<'a>(&'a self) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
}

/// The argv that starts the init with `spec`. Every backend runs exactly this, so the init is
/// always the first thing to run in a sandbox.
pub fn init_argv(spec: &spec::InitSpec) -> Result<Vec<String>, SandboxError> {
    let json = serde_json::to_string(spec)
        .map_err(|e| SandboxError::Setup(format!("encoding the init spec: {e}")))?;
    Ok(vec![
        INIT_PATH_IN_SANDBOX.to_owned(),
        INIT_ARG.to_owned(),
        json,
    ])
}

/// Run `true` and check that the backend can build a sandbox at all. Returns what the init
/// reported applying.
pub async fn self_test(
    backend: &dyn Backend,
    workspace: PathBuf,
) -> Result<ExecOutput, SandboxError> {
    let req = ExecRequest {
        workspace,
        program: Program::Command(vec!["true".into()]),
        stdin: Vec::new(),
        limits: Limits {
            wall_time: Duration::from_secs(10),
            ..Limits::DEFAULT
        },
        proxy_socket: None,
        trust_dir: None,
        env: Vec::new(),
        stream: None,
    };
    let out = backend.exec(&req).await?;
    match out.state {
        ExitState::Exited(0) => Ok(out),
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
