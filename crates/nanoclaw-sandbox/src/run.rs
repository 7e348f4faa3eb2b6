//! Host side of the init protocol: spawn the backend's launcher (`bwrap ...`, `docker exec
//! ...`), feed stdin, read the init's frames from stdout, and bound everything.
//!
//! The init enforces the wall-time limit inside the sandbox; the host keeps its own deadline a
//! little later as a backstop, and kills the launcher if it passes. Killing the launcher must
//! take the whole sandboxed tree with it; each backend arranges that.

use std::fmt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::spec::{
    FRAME_REPORT, FRAME_STDERR, FRAME_STDOUT, InitReport, MAX_CHUNK_FRAME, MAX_REPORT_FRAME,
    Outcome,
};
use crate::{ExecOutput, SandboxError};

/// Bytes of the launcher's own stderr kept (its setup errors).
const LAUNCHER_STDERR_CAP: usize = 16 * 1024;
/// How long after the wall-time limit the host gives the init to report before killing it.
pub const HOST_GRACE: Duration = Duration::from_secs(5);

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

    /// Keep what fits under `cap`, count the rest.
    pub fn push(&mut self, chunk: &[u8], cap: usize) {
        let keep = chunk.len().min(cap.saturating_sub(self.bytes.len()));
        self.bytes.extend_from_slice(&chunk[..keep]);
        self.dropped += (chunk.len() - keep) as u64;
    }
}

/// What the frame decoder collected.
#[derive(Default)]
pub struct Frames {
    stdout: Captured,
    stderr: Captured,
    report: Option<InitReport>,
    /// Set when the stream broke the protocol.
    violation: Option<String>,
}

/// What the launcher does between fork and exec, as root where the daemon is: join the group's
/// cgroup, then (under a root daemon) enter its private view and drop to the sandbox uid.
#[derive(Default)]
pub struct BeforeExec {
    pub cgroup_fds: Vec<std::os::fd::RawFd>,
    pub view: Option<crate::unprivileged::HostView>,
}

/// Spawn `program args`, run the init protocol over its stdio, and return the result. With
/// `stream`, the command's stdin is fed from it as bytes come and its stdout written to it as
/// frames arrive (nothing of stdout is kept), until the command ends.
pub async fn run_launcher(
    program: &str,
    args: &[String],
    stdin: &[u8],
    wall_time: Duration,
    cap: usize,
    before_exec: BeforeExec,
    stream: Option<crate::StreamEnds>,
) -> Result<ExecOutput, SandboxError> {
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !before_exec.cgroup_fds.is_empty() || before_exec.view.is_some() {
        // SAFETY: the closure only calls write(2) on descriptors that stay open until the
        // spawn returns (the caller holds the ExecCgroup), and the view's syscalls on memory
        // allocated before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                crate::cgroup::join_from_pre_exec(&before_exec.cgroup_fds)?;
                match &before_exec.view {
                    Some(view) => view.enter(),
                    None => Ok(()),
                }
            });
        }
    }
    let mut child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        program: program.to_owned(),
        source,
    })?;

    let (stream_in, stream_out) = match stream {
        Some(ends) => (Some(ends.stdin), Some(ends.stdout)),
        None => (None, None),
    };
    let feed = child.stdin.take().map(|mut pipe| {
        let input = stdin.to_vec();
        tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe; that is not an error.
            match stream_in {
                Some(mut from_host) => {
                    let _ = tokio::io::copy(&mut from_host, &mut pipe).await;
                }
                None => {
                    let _ = pipe.write_all(&input).await;
                }
            }
        })
    });
    let frames = child
        .stdout
        .take()
        .map(|pipe| tokio::spawn(read_frames_into(pipe, cap, stream_out)));
    let launcher_err = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(drain(pipe, LAUNCHER_STDERR_CAP)));

    let timed_out = match tokio::time::timeout(wall_time + HOST_GRACE, child.wait()).await {
        Ok(status) => {
            status?;
            false
        }
        Err(_elapsed) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            true
        }
    };
    if let Some(feed) = feed {
        feed.abort();
    }
    let frames = match frames {
        Some(task) => collect(task).await?,
        None => Frames::default(),
    };
    let launcher_err = match launcher_err {
        Some(task) => collect(task).await?,
        None => Captured::default(),
    };
    assemble(frames, &launcher_err, timed_out, started)
}

/// Turn what came out of a sandbox into a result: the report decides; without one, a timeout
/// is a timeout and anything else is a setup failure described by the launcher's stderr.
pub fn assemble(
    frames: Frames,
    launcher_err: &Captured,
    timed_out: bool,
    started: Instant,
) -> Result<ExecOutput, SandboxError> {
    if let Some(v) = frames.violation {
        return Err(SandboxError::BadReply(v));
    }
    let Some(report) = frames.report else {
        if timed_out {
            return Ok(ExecOutput {
                state: ExitState::TimedOut,
                stdout: frames.stdout,
                stderr: frames.stderr,
                duration: started.elapsed(),
                limit: Some(crate::LimitHit::WallTime),
                file_reply: None,
                hardening: None,
                cgroup_limits: false,
                cgroup_unenforced: Vec::new(),
            });
        }
        let detail = launcher_err.text_lossy().trim().to_owned();
        return Err(SandboxError::Setup(if detail.is_empty() {
            "the sandbox's init sent no report".into()
        } else {
            detail
        }));
    };
    if let Some(error) = report.error {
        return Err(SandboxError::Setup(error));
    }
    let mut stdout = frames.stdout;
    let mut stderr = frames.stderr;
    stdout.dropped += report.dropped_stdout;
    stderr.dropped += report.dropped_stderr;
    Ok(ExecOutput {
        state: match report.outcome {
            Outcome::Exited(c) => ExitState::Exited(c),
            Outcome::Signaled(s) => ExitState::Signaled(s),
            Outcome::TimedOut => ExitState::TimedOut,
        },
        stdout,
        stderr,
        duration: started.elapsed(),
        limit: report.limit,
        file_reply: report.file_reply,
        hardening: report.hardening,
        cgroup_limits: false,
        cgroup_unenforced: Vec::new(),
    })
}

/// How long to wait for the pipes to close once the launcher has exited. They close as soon
/// as the sandbox's process tree is gone, which the init and the backend guarantee; this only
/// bounds the wait if that guarantee were ever broken.
const PIPE_CLOSE_GRACE: Duration = Duration::from_secs(2);

async fn collect<T>(task: tokio::task::JoinHandle<std::io::Result<T>>) -> Result<T, SandboxError> {
    match tokio::time::timeout(PIPE_CLOSE_GRACE, task).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(join)) => Err(SandboxError::Io(std::io::Error::other(join))),
        Err(_) => Err(SandboxError::Setup(
            "a process outlived its sandbox and kept a pipe open".into(),
        )),
    }
}

/// Read the init's frames until its stdout closes.
#[cfg(test)]
async fn read_frames<R: AsyncRead + Unpin>(pipe: R, cap: usize) -> std::io::Result<Frames> {
    read_frames_into(pipe, cap, None).await
}

/// Read the init's frames to the end; with `sink`, the command's stdout is written there as
/// it arrives (a host that stopped reading is not waited for: the rest is dropped).
pub async fn read_frames_into<R: AsyncRead + Unpin>(
    mut pipe: R,
    cap: usize,
    mut sink: Option<tokio::io::DuplexStream>,
) -> std::io::Result<Frames> {
    let mut decoder = FrameDecoder::new(cap);
    if sink.is_some() {
        decoder.streamed = Some(Vec::new());
    }
    let mut buf = vec![0u8; MAX_CHUNK_FRAME];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(decoder.finish());
        }
        decoder.feed(&buf[..n]);
        if let (Some(out), Some(streamed)) = (sink.as_mut(), decoder.streamed.as_mut())
            && !streamed.is_empty()
        {
            let chunk = std::mem::take(streamed);
            if out.write_all(&chunk).await.is_err() {
                sink = None;
                decoder.streamed = None;
            }
        }
    }
}

/// Decodes the init's frame stream from chunks as they arrive, whatever their boundaries.
/// It never buffers more than one frame: a frame's length is checked before its payload is
/// kept, and a broken stream is recorded and ignored from then on.
pub struct FrameDecoder {
    pending: Vec<u8>,
    frames: Frames,
    cap: usize,
    /// When the command's stdout is streamed: what arrived since it was last taken.
    pub streamed: Option<Vec<u8>>,
    /// The first bytes of the stream, quoted when it turns out not to be frames.
    head: Vec<u8>,
}

/// Bytes of a stream's start quoted in a protocol error.
const QUOTED_HEAD: usize = 200;

impl FrameDecoder {
    pub fn new(cap: usize) -> Self {
        FrameDecoder {
            pending: Vec::new(),
            frames: Frames::default(),
            cap,
            streamed: None,
            head: Vec::new(),
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        let room = QUOTED_HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        while !bytes.is_empty() && self.frames.violation.is_none() {
            // Take only what the current frame still needs.
            let want = match self.pending.len() {
                n if n < 5 => 5 - n,
                _ => {
                    let len = self.header_len();
                    5 + len - self.pending.len()
                }
            };
            let take = want.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == 5 {
                self.check_header();
            }
            if self.pending.len() >= 5
                && self.frames.violation.is_none()
                && self.pending.len() == 5 + self.header_len()
            {
                self.complete();
            }
        }
    }

    fn header_len(&self) -> usize {
        u32::from_be_bytes([
            self.pending[1],
            self.pending[2],
            self.pending[3],
            self.pending[4],
        ]) as usize
    }

    fn check_header(&mut self) {
        let kind = self.pending[0];
        let len = self.header_len();
        let max = if kind == FRAME_REPORT {
            MAX_REPORT_FRAME
        } else {
            MAX_CHUNK_FRAME
        };
        let known = [FRAME_STDOUT, FRAME_STDERR, FRAME_REPORT].contains(&kind);
        if len > max || !known || self.frames.report.is_some() {
            // Quote the start: when the init never ran, this is the loader's or engine's error.
            let start = String::from_utf8_lossy(&self.head).into_owned();
            self.frames.violation = Some(format!(
                "the sandbox's output broke the init protocol (a frame of kind {kind} and {len} bytes, starting {start:?})"
            ));
            self.pending.clear();
        }
    }

    fn complete(&mut self) {
        let frame = std::mem::take(&mut self.pending);
        let payload = &frame[5..];
        match frame[0] {
            FRAME_STDOUT => match &mut self.streamed {
                Some(streamed) => streamed.extend_from_slice(payload),
                None => self.frames.stdout.push(payload, self.cap),
            },
            FRAME_STDERR => self.frames.stderr.push(payload, self.cap),
            _ => match serde_json::from_slice(payload) {
                Ok(report) => self.frames.report = Some(report),
                Err(e) => {
                    self.frames.violation = Some(format!("the init's report does not parse: {e}"))
                }
            },
        }
    }

    /// The frames read, once the stream has ended.
    pub fn finish(mut self) -> Frames {
        if !self.pending.is_empty() && self.frames.violation.is_none() {
            self.frames.violation = Some("the init's output ended inside a frame".into());
        }
        self.frames
    }
}

/// Read a pipe to its end, keeping at most `cap` bytes and counting the rest.
async fn drain<R: AsyncRead + Unpin>(mut pipe: R, cap: usize) -> std::io::Result<Captured> {
    let mut captured = Captured::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(captured);
        }
        captured.push(&buf[..n], cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn frames_are_capped_and_the_report_parsed() {
        let report = br#"{"outcome":{"exited":3},"limit":null,"file_reply":null,"error":null,"hardening":null,"dropped_stdout":5,"dropped_stderr":0}"#;
        let mut stream = frame(FRAME_STDOUT, b"hello ");
        stream.extend(frame(FRAME_STDOUT, b"world"));
        stream.extend(frame(FRAME_STDERR, b"err"));
        stream.extend(frame(FRAME_REPORT, report));
        let f = read_frames(&stream[..], 8).await.unwrap();
        assert_eq!(f.stdout.bytes, b"hello wo");
        assert_eq!(f.stdout.dropped, 3);
        assert_eq!(f.stderr.bytes, b"err");
        assert_eq!(f.report.unwrap().outcome, Outcome::Exited(3));
        assert!(f.violation.is_none());
    }

    #[tokio::test]
    async fn oversized_unknown_and_trailing_frames_are_violations() {
        let mut big = vec![FRAME_STDOUT];
        big.extend_from_slice(&(MAX_CHUNK_FRAME as u32 + 1).to_be_bytes());
        assert!(read_frames(&big[..], 8).await.unwrap().violation.is_some());
        let unknown = frame(b'X', b"?");
        assert!(
            read_frames(&unknown[..], 8)
                .await
                .unwrap()
                .violation
                .is_some()
        );
        let mut after = frame(FRAME_REPORT, b"{}");
        after.extend(frame(FRAME_STDOUT, b"late"));
        assert!(
            read_frames(&after[..], 8)
                .await
                .unwrap()
                .violation
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_truncated_stream_has_no_report() {
        let mut s = frame(FRAME_STDOUT, b"abc");
        s.truncate(6);
        let f = read_frames(&s[..], 8).await.unwrap();
        assert!(f.report.is_none() && f.violation.is_some());
        assert!(read_frames(&[][..], 8).await.unwrap().report.is_none());
    }

    #[test]
    fn frames_split_at_every_byte_decode_the_same() {
        let report = br#"{"outcome":{"signaled":9},"limit":"memory","file_reply":null,"error":null,"hardening":null,"dropped_stdout":0,"dropped_stderr":0}"#;
        let mut stream = frame(FRAME_STDOUT, b"abc");
        stream.extend(frame(FRAME_REPORT, report));
        let mut d = FrameDecoder::new(100);
        for b in &stream {
            d.feed(std::slice::from_ref(b));
        }
        let f = d.finish();
        assert_eq!(f.stdout.bytes, b"abc");
        let r = f.report.unwrap();
        assert_eq!(r.outcome, Outcome::Signaled(9));
        assert_eq!(r.limit, Some(crate::LimitHit::Memory));
    }
}
