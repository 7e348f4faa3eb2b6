//! Runs a host process (the backend's launcher, e.g. `bwrap`) with a wall-clock timeout and
//! capped output capture.
//!
//! Owns: spawning, feeding stdin, draining stdout/stderr without ever holding more than the cap,
//! and killing the launcher on timeout. Killing the launcher must take the whole sandboxed tree
//! with it; each backend arranges that (bwrap: `--die-with-parent` and a PID namespace).

use std::fmt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::{ExecOutput, SandboxError};

/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 16 * 1024;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitState {
    /// Exited with this status code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Still running at the wall-time limit; the whole tree was killed.
    TimedOut,
}

impl fmt::Display for ExitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitState::Exited(code) => write!(f, "exit status {code}"),
            ExitState::Signaled(sig) => write!(f, "killed by signal {sig}"),
            ExitState::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Output kept from one stream, with a count of what was dropped past the cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Bytes the process wrote beyond the cap, counted but not kept.
    pub dropped: u64,
}

impl Captured {
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Spawn `program args`, write `stdin`, capture up to `cap` bytes of each output stream, and kill
/// the process if it is still running after `wall_time`.
pub async fn run_capped(
    program: &str,
    args: &[String],
    stdin: &[u8],
    wall_time: Duration,
    cap: usize,
) -> Result<ExecOutput, SandboxError> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SandboxError::Spawn {
            program: program.to_owned(),
            source,
        })?;

    // Feed and drain on their own tasks so that what was printed before a timeout is kept.
    let feed = child.stdin.take().map(|mut pipe| {
        let input = stdin.to_vec();
        tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe; that is not an error.
            let _ = pipe.write_all(&input).await;
        })
    });
    let stdout = tokio::spawn(drain(child.stdout.take(), cap));
    let stderr = tokio::spawn(drain(child.stderr.take(), cap));

    let state = match tokio::time::timeout(wall_time, child.wait()).await {
        Ok(status) => exit_state(status?),
        Err(_elapsed) => {
            // Killing the launcher takes the sandboxed tree with it (see the module doc).
            let _ = child.start_kill();
            let _ = child.wait().await;
            ExitState::TimedOut
        }
    };
    if let Some(feed) = feed {
        feed.abort();
    }
    Ok(ExecOutput {
        state,
        stdout: collect(stdout).await?,
        stderr: collect(stderr).await?,
        duration: started.elapsed(),
    })
}

/// How long to wait for the output pipes to close once the launcher has exited. They close as
/// soon as the sandbox's process tree is gone, which the backend guarantees; this only bounds
/// the wait if that guarantee were ever broken.
const PIPE_CLOSE_GRACE: Duration = Duration::from_secs(2);

async fn collect(
    task: tokio::task::JoinHandle<std::io::Result<Captured>>,
) -> Result<Captured, SandboxError> {
    match tokio::time::timeout(PIPE_CLOSE_GRACE, task).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(join)) => Err(SandboxError::Io(std::io::Error::other(join))),
        Err(_) => Err(SandboxError::Setup(
            "a process outlived its sandbox and kept the output pipe open".into(),
        )),
    }
}

fn exit_state(status: std::process::ExitStatus) -> ExitState {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitState::Exited(code),
        (None, Some(sig)) => ExitState::Signaled(sig),
        (None, None) => ExitState::Exited(-1),
    }
}

/// Read a pipe to its end, keeping at most `cap` bytes and counting the rest.
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, cap: usize) -> std::io::Result<Captured> {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else {
        return Ok(captured);
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(captured);
        }
        let room = cap.saturating_sub(captured.bytes.len());
        let keep = n.min(room);
        captured.bytes.extend_from_slice(&buf[..keep]);
        captured.dropped += (n - keep) as u64;
    }
}
