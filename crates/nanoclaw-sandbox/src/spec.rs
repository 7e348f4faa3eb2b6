//! What the host asks of the init, and what the init reports back: the one protocol that
//! crosses the sandbox boundary for every command.
//!
//! The host passes an [`InitSpec`] as one JSON argument. The init answers on its stdout with
//! frames: `[kind: u8][len: u32 big-endian][payload]`, where kind is `O` (the command's stdout),
//! `E` (its stderr) or `R` (the final [`InitReport`], JSON). The command never writes to the
//! host's pipe directly, so it cannot forge a frame; the host still treats every frame as
//! untrusted and bounds what it reads.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::files::FileReply;

/// Frame kinds.
pub const FRAME_STDOUT: u8 = b'O';
pub const FRAME_STDERR: u8 = b'E';
pub const FRAME_REPORT: u8 = b'R';
/// Largest output chunk the init sends in one frame.
pub const MAX_CHUNK_FRAME: usize = 64 * 1024;
/// Largest report frame the host accepts (a file reply rides in it).
pub const MAX_REPORT_FRAME: usize = 8 * 1024 * 1024;
/// Exit status of an init that could not set the sandbox up (as `docker run` uses 125).
pub const EXIT_INIT_FAILED: i32 = 125;

/// Resource limits for one command. Every bound is enforced by the init (rlimits, wall time,
/// output) and, where the host offers cgroups, by the backend (memory, processes, CPU share).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time after which the whole process tree is killed.
    pub wall_time: Duration,
    /// Bytes kept from each of stdout and stderr; the rest is counted and dropped.
    pub output_bytes: usize,
    /// Memory of the whole sandbox (cgroup), in bytes.
    pub memory_bytes: u64,
    /// Processes and threads in the sandbox (cgroup `pids.max`; `RLIMIT_NPROC` without one).
    pub max_processes: u32,
    /// CPU time of each process (`RLIMIT_CPU`).
    pub cpu_time: Duration,
    /// CPU bandwidth of the whole sandbox, in thousandths of a core (cgroup).
    pub cpu_millis: u32,
    /// Largest file a process may write (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Size of the sandbox's `/tmp` (tmpfs).
    pub tmp_size_bytes: u64,
    /// Bytes the workspace may hold; checked before and after each command.
    pub workspace_quota_bytes: u64,
}

impl Limits {
    /// Defaults for a personal agent on a small machine.
    pub const DEFAULT: Limits = Limits {
        wall_time: Duration::from_secs(60),
        output_bytes: 32 * 1024,
        memory_bytes: 1024 * 1024 * 1024,
        max_processes: 256,
        cpu_time: Duration::from_secs(120),
        cpu_millis: 1000,
        file_size_bytes: 512 * 1024 * 1024,
        tmp_size_bytes: 256 * 1024 * 1024,
        workspace_quota_bytes: 2 * 1024 * 1024 * 1024,
    };
}

/// A limit a command ran into. The tool error names it, so the model can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitHit {
    WallTime,
    CpuTime,
    Memory,
    Processes,
    FileSize,
    WorkspaceQuota,
}

impl LimitHit {
    /// A sentence naming the limit and its value.
    pub fn describe(self, limits: &Limits) -> String {
        let mib = |b: u64| b / (1024 * 1024);
        match self {
            LimitHit::WallTime => format!(
                "the command hit its wall-time limit of {} s; the whole process tree was stopped",
                limits.wall_time.as_secs()
            ),
            LimitHit::CpuTime => {
                format!(
                    "a process hit the CPU-time limit of {} s and was stopped",
                    limits.cpu_time.as_secs()
                )
            }
            LimitHit::Memory => format!(
                "the sandbox hit its memory limit of {} MiB; a process was killed",
                mib(limits.memory_bytes)
            ),
            LimitHit::Processes => {
                format!(
                    "the sandbox hit its limit of {} processes; a fork failed",
                    limits.max_processes
                )
            }
            LimitHit::FileSize => format!(
                "a process tried to write a file larger than the limit of {} MiB (or the workspace's remaining room)",
                mib(limits.file_size_bytes)
            ),
            LimitHit::WorkspaceQuota => format!(
                "the workspace holds more than its quota of {} MiB; delete files before writing more",
                mib(limits.workspace_quota_bytes)
            ),
        }
    }
}

/// How firmly a hardening step is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Apply what the kernel supports; report the rest as missing.
    BestEffort,
    /// Refuse to run anything unless fully applied.
    Required,
}

/// What the init is asked to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    /// Run this command (argv, no shell) with `/workspace` as working dir.
    Command(Vec<String>),
    /// Carry out one [`FileRequest`], read as JSON from stdin (a request can be larger than a
    /// command-line argument may be).
    FileRequest,
}

/// The init's whole instruction, passed as one JSON argument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    pub program: Program,
    pub limits: Limits,
    pub landlock: Enforcement,
    /// No cgroup holds the sandbox: `RLIMIT_AS` and `RLIMIT_NPROC` stand in for the memory and
    /// process limits.
    pub rlimit_fallback: bool,
    /// Extra environment for the command: secret placeholders and the CA bundle's paths.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    TimedOut,
}

/// Landlock as the kernel applied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockStatus {
    FullyEnforced,
    PartiallyEnforced,
    NotEnforced,
}

/// The hardening the init applied, measured from inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardening {
    pub no_new_privs: bool,
    pub seccomp: bool,
    pub landlock: LandlockStatus,
    /// The highest Landlock ABI the kernel offers (0: none).
    pub landlock_abi: u32,
    pub proxy_relay: bool,
    /// The command's own nested Landlock domain, which keeps it from signalling the init or
    /// connecting to its abstract sockets (Landlock ABI 6 and later).
    pub command_scope: LandlockStatus,
}

/// The init's final frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitReport {
    pub outcome: Outcome,
    pub limit: Option<LimitHit>,
    pub file_reply: Option<FileReply>,
    /// Set when the init itself failed; the command did not run.
    pub error: Option<String>,
    pub hardening: Option<Hardening>,
    pub dropped_stdout: u64,
    pub dropped_stderr: u64,
}
