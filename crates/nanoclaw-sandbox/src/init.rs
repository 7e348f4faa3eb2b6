//! The init: the first program to run inside every sandbox, on every backend.
//!
//! It is the `nanoclaw` binary itself, mounted read-only at `/.nanoclaw/init`, started as
//! `init __init SPEC_JSON`. It runs one straight sequence:
//!
//! 0. make itself non-dumpable (before anything else: see below) and close every descriptor it
//!    inherited but stdin, stdout and stderr;
//! 1. parse the spec (a malformed one stops here);
//! 2. `no_new_privs`;
//! 3. resource limits (rlimits);
//! 4. Landlock (writes only under /workspace, /tmp, /dev);
//! 5. seccomp;
//! 6. the proxy relay, if the proxy socket is mounted;
//! 7. the work: run the command as a child in a Landlock domain of its own (forwarding its
//!    output as frames, killing the whole tree at the end or at the time limit, then every other
//!    process the sandbox holds) or carry out one file request;
//! 8. the report frame.
//!
//! The command runs as the init's own uid, so the init keeps itself out of the command's reach
//! by other means: it is non-dumpable (its `/proc/<pid>/fd`, `mem` and `environ` refuse the
//! command, so the report channel, its stdout, can never be opened from inside), the command's
//! nested Landlock domain cannot signal it or reach its abstract sockets (kernels with Landlock
//! ABI 6), and on bwrap it is the PID namespace's init, which the kernel shields from signals
//! sent inside the namespace and whose exit kills everything left in it.
//!
//! A step that fails stops the init with a report naming it; it never carries on weaker.
//! It must never run on the host: the host starts it only through a backend.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cgroup::Counters;
use crate::spec::{
    EXIT_INIT_FAILED, FRAME_REPORT, FRAME_STDERR, FRAME_STDOUT, Hardening, InitReport, InitSpec,
    LandlockStatus, LimitHit, MAX_CHUNK_FRAME, Outcome, Program,
};
use crate::{WORKSPACE_IN_SANDBOX, files, landlock_rules, reaper, relay, seccomp};

/// Open files per process.
const MAX_OPEN_FILES: u64 = 4096;
/// Directory entries the workspace-usage walk visits before it stops counting.
const MAX_USAGE_WALK: usize = 1_000_000;
/// Exit status reported for a command that could not be started (as a shell would).
const EXIT_CANNOT_RUN: i32 = 127;

/// The frame writer shared by the output forwarders and the final report.
type Frames = Arc<Mutex<std::io::Stdout>>;

fn write_frame(out: &Frames, kind: u8, payload: &[u8]) {
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    let len = (payload.len() as u32).to_be_bytes();
    // If the host has gone away there is nobody left to tell.
    let _ = out
        .write_all(&[kind])
        .and_then(|()| out.write_all(&len))
        .and_then(|()| out.write_all(payload));
    let _ = out.flush();
}

fn finish(out: &Frames, report: &InitReport) -> i32 {
    let json = serde_json::to_vec(report).unwrap_or_default();
    write_frame(out, FRAME_REPORT, &json);
    match (report.error.is_some(), report.outcome) {
        (true, _) => EXIT_INIT_FAILED,
        (false, Outcome::Exited(code)) => code,
        (false, Outcome::Signaled(sig)) => 128 + sig,
        (false, Outcome::TimedOut) => 124,
    }
}

fn failed(out: &Frames, hardening: Option<Hardening>, error: String) -> i32 {
    let report = InitReport {
        outcome: Outcome::Exited(EXIT_INIT_FAILED),
        limit: None,
        file_reply: None,
        error: Some(error),
        hardening,
        dropped_stdout: 0,
        dropped_stderr: 0,
    };
    finish(out, &report)
}

/// Entry point; `args` are the arguments after `__init`.
pub fn main(args: &[String]) -> i32 {
    let out: Frames = Arc::new(Mutex::new(std::io::stdout()));
    // 0. INVARIANT: non-dumpable before anything else. The command will run as this same uid;
    // a dumpable init would let it open /proc/<init>/fd/1 and write a report of its own, or
    // write code into /proc/<init>/mem. A container's idle main process is held to the same.
    if let Err(e) = make_non_dumpable() {
        return failed(&out, None, e);
    }
    // INVARIANT: nothing but stdin, stdout and stderr crosses into the sandbox. A descriptor
    // the launcher's caller left open (a shell redirect, a service manager's socket) would be
    // a way to a host file past every mount and Landlock rule.
    if let Err(e) = close_inherited() {
        return failed(&out, None, e);
    }

    // A container's main process: reap and wait, run nothing.
    if args == ["idle"] {
        idle();
    }

    // 1. The spec.
    let spec: InitSpec = match args {
        [json] => match serde_json::from_str(json) {
            Ok(spec) => spec,
            Err(e) => return failed(&out, None, format!("malformed init spec: {e}")),
        },
        _ => return failed(&out, None, "usage: init __init SPEC_JSON".into()),
    };

    // 2. no_new_privs: no setuid binary or file capability can raise privileges from here on.
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return failed(
            &out,
            None,
            format!("no_new_privs: {}", std::io::Error::last_os_error()),
        );
    }
    let mut hardening = Hardening {
        no_new_privs: true,
        seccomp: false,
        landlock: LandlockStatus::NotEnforced,
        landlock_abi: landlock_rules::kernel_abi(),
        proxy_relay: false,
        command_scope: LandlockStatus::NotEnforced,
    };

    // 3. Resource limits, inherited by everything the command starts.
    let (usage_before, fsize_limit) = match apply_rlimits(&spec) {
        Ok(v) => v,
        Err(e) => return failed(&out, Some(hardening), e),
    };

    // 4. Landlock.
    match landlock_rules::restrict(spec.landlock) {
        Ok(status) => hardening.landlock = status,
        Err(e) => return failed(&out, Some(hardening), e.to_string()),
    }

    // 5. seccomp. INVARIANT: installed before any thread starts and before any untrusted
    // input (the relay's connections, the command) is touched.
    if let Err(e) = seccomp::install() {
        return failed(&out, Some(hardening), e.to_string());
    }
    hardening.seccomp = true;

    // 6. The proxy relay.
    match relay::start() {
        Ok(on) => hardening.proxy_relay = on,
        Err(e) => return failed(&out, Some(hardening), format!("proxy relay: {e}")),
    }

    // 7. The work.
    let mut report = match &spec.program {
        Program::FileRequest => InitReport {
            outcome: Outcome::Exited(0),
            limit: None,
            file_reply: Some(files::serve_stdin_request()),
            error: None,
            hardening: Some(hardening),
            dropped_stdout: 0,
            dropped_stderr: 0,
        },
        Program::Command(argv) => {
            run_command(&out, argv, &spec, hardening, fsize_limit, usage_before)
        }
    };
    if report.limit.is_none()
        && spec.limits.workspace_quota_bytes > 0
        && grew_past_quota(
            workspace_usage(),
            spec.limits.workspace_quota_bytes,
            usage_before,
        )
    {
        report.limit = Some(LimitHit::WorkspaceQuota);
    }

    // 8. The report.
    finish(&out, &report)
}

/// Close every descriptor above stderr.
fn close_inherited() -> Result<(), String> {
    // SAFETY: close_range takes integers only; closing descriptors this process does not use
    // (nothing has been opened yet) cannot invalidate anything it holds.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.9: one by one, up to the descriptor limit.
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if max < 0 {
        return Err(format!(
            "closing inherited descriptors: {}",
            std::io::Error::last_os_error()
        ));
    }
    for fd in 3..max as i32 {
        // SAFETY: as above; EBADF for descriptors that are not open is expected.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Clear the dumpable flag: `/proc/<pid>/` of this process then belongs to root and refuses
/// every process without `CAP_SYS_PTRACE` (which no sandboxed process has).
fn make_non_dumpable() -> Result<(), String> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "clearing the dumpable flag: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> Result<(), String> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass by reference.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(format!(
            "setrlimit({resource}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Set every rlimit. Returns the workspace usage before the command and the file-size limit
/// applied (the smaller of the configured limit and the workspace's remaining room).
fn apply_rlimits(spec: &InitSpec) -> Result<(u64, u64), String> {
    let l = &spec.limits;
    let cpu = l.cpu_time.as_secs().max(1);
    set_rlimit(libc::RLIMIT_CPU, cpu, cpu + 1)?;
    set_rlimit(libc::RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES)?;
    set_rlimit(libc::RLIMIT_CORE, 0, 0)?;
    if spec.rlimit_fallback {
        // RLIMIT_NPROC counts every process of the uid on the host, so it is only a stand-in:
        // with a cgroup, the sandbox's own pids limit is the precise one.
        let n = l.max_processes as u64;
        set_rlimit(libc::RLIMIT_NPROC, n, n)?;
        set_rlimit(libc::RLIMIT_AS, l.memory_bytes, l.memory_bytes)?;
    }
    let used = if l.workspace_quota_bytes > 0 {
        workspace_usage()
    } else {
        0
    };
    let room = if l.workspace_quota_bytes > 0 {
        l.workspace_quota_bytes.saturating_sub(used)
    } else {
        u64::MAX
    };
    // A zero limit would make every write fail with EFBIG at once; one block keeps the error
    // at the point of writing.
    let fsize = l.file_size_bytes.min(room).max(4096);
    set_rlimit(libc::RLIMIT_FSIZE, fsize, fsize)?;
    Ok((used, fsize))
}

/// How often the init looks at the workspace's file system while a command runs.
const QUOTA_POLL: Duration = Duration::from_millis(20);
/// Shortest time between two exact counts of the workspace while a command runs.
const QUOTA_WALK_EVERY: Duration = Duration::from_millis(250);

/// Stops a command that writes past the workspace quota while it writes: every
/// [`QUOTA_POLL`] it reads how much the workspace's file system has grown since the command
/// started (one `statfs`), and once that growth could have used the room left, counts the
/// workspace exactly (at most every [`QUOTA_WALK_EVERY`]). Growth elsewhere on a shared file
/// system only triggers a count, never a kill. The overshoot is what a command writes
/// between two looks.
struct QuotaWatch {
    quota: u64,
    usage_before: u64,
    room: u64,
    free_at_start: u64,
    last_walk: Option<std::time::Instant>,
}

impl QuotaWatch {
    fn new(quota: u64, usage_before: u64) -> QuotaWatch {
        QuotaWatch {
            quota,
            usage_before,
            room: quota.saturating_sub(usage_before),
            free_at_start: free_bytes(),
            last_walk: None,
        }
    }

    fn exceeded(&mut self) -> bool {
        if self.quota == 0 {
            return false;
        }
        let grown = self.free_at_start.saturating_sub(free_bytes());
        if grown == 0 || grown < self.room {
            return false;
        }
        if self
            .last_walk
            .is_some_and(|at| at.elapsed() < QUOTA_WALK_EVERY)
        {
            return false;
        }
        self.last_walk = Some(std::time::Instant::now());
        grew_past_quota(workspace_usage(), self.quota, self.usage_before)
    }
}

/// A workspace at `used` bytes is over `quota` through the command's doing: at the quota counts
/// (the file-size limit stops writes exactly there), and a command that only deleted, leaving
/// it no larger than `before`, never is.
fn grew_past_quota(used: u64, quota: u64, before: u64) -> bool {
    used >= quota && used > before
}

/// Free bytes on the workspace's file system.
fn free_bytes() -> u64 {
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c"/workspace".as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bfree.saturating_mul(st.f_frsize)
    }
}

/// Bytes the workspace occupies on disk, counted without following symlinks.
fn workspace_usage() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut pending = vec![std::path::PathBuf::from(WORKSPACE_IN_SANDBOX)];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_USAGE_WALK {
                return total;
            }
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

/// The main process of a long-lived container (Docker backend): reap whatever is reparented
/// to it, forever. It runs no command and reads no input.
fn idle() -> ! {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0 {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Forward one of the command's output pipes as frames, keeping at most `cap` bytes.
fn forward(out: Frames, mut pipe: impl Read, kind: u8, cap: usize) -> u64 {
    let mut buf = vec![0u8; MAX_CHUNK_FRAME];
    let mut sent = 0usize;
    let mut dropped = 0u64;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return dropped,
            Ok(n) => n,
        };
        let keep = n.min(cap.saturating_sub(sent));
        if keep > 0 {
            write_frame(&out, kind, &buf[..keep]);
            sent += keep;
        }
        dropped += (n - keep) as u64;
    }
}

fn run_command(
    out: &Frames,
    argv: &[String],
    spec: &InitSpec,
    mut hardening: Hardening,
    fsize: u64,
    usage_before: u64,
) -> InitReport {
    let (env, limits) = (&spec.env, &spec.limits);
    // The command's own Landlock domain, made here and entered by the child just before exec.
    let scope = match landlock_rules::CommandScope::create(spec.landlock) {
        Ok(scope) => scope,
        Err(e) => {
            return InitReport {
                outcome: Outcome::Exited(EXIT_CANNOT_RUN),
                limit: None,
                file_reply: None,
                error: Some(e.to_string()),
                hardening: Some(hardening),
                dropped_stdout: 0,
                dropped_stderr: 0,
            };
        }
    };
    hardening.command_scope = scope.status();
    let mut report = InitReport {
        outcome: Outcome::Exited(EXIT_CANNOT_RUN),
        limit: None,
        file_reply: None,
        error: None,
        hardening: Some(hardening),
        dropped_stdout: 0,
        dropped_stderr: 0,
    };
    let Some((program, args)) = argv.split_first() else {
        report.error = Some("empty command".into());
        return report;
    };
    if let Err(e) = reaper::become_subreaper() {
        report.error = Some(format!("becoming the subreaper: {e}"));
        return report;
    }
    let counters_before = Counters::of_own_cgroup();

    // INVARIANT: every thread the init needs exists before the command starts. A command that
    // fills the process limit at once must not leave the init unable to spawn its own.
    let spawned = (|| -> std::io::Result<_> {
        let (out_read, out_write) = std::io::pipe()?;
        let (err_read, err_write) = std::io::pipe()?;
        let cap = limits.output_bytes;
        let (o, e) = (Arc::clone(out), Arc::clone(out));
        let stdout =
            std::thread::Builder::new().spawn(move || forward(o, out_read, FRAME_STDOUT, cap))?;
        let stderr =
            std::thread::Builder::new().spawn(move || forward(e, err_read, FRAME_STDERR, cap))?;
        // Waits for the command, so the wall-time limit can interrupt the wait.
        let (child_tx, child_rx) = mpsc::channel::<std::process::Child>();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::Builder::new().spawn(move || {
            if let Ok(mut child) = child_rx.recv() {
                let _ = done_tx.send(child.wait());
            }
        })?;
        Ok((out_write, err_write, stdout, stderr, child_tx, done_rx))
    })();
    let (out_write, err_write, stdout, stderr, child_tx, done_rx) = match spawned {
        Ok(parts) => parts,
        Err(e) => {
            report.error = Some(format!("preparing to run the command: {e}"));
            return report;
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(WORKSPACE_IN_SANDBOX)
        .stdout(out_write)
        .stderr(err_write);
    if hardening.proxy_relay {
        cmd.envs(relay::proxy_env());
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(fd) = scope.raw_fd() {
        // SAFETY: the closure runs between fork and exec and makes one system call on a
        // descriptor this process holds open until the spawn returns; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || landlock_rules::enter_command_scope(fd));
        }
    }
    let spawned = cmd.spawn();
    drop(scope);
    // The command holds the pipes' write ends now; ours must close for the forwarders to end.
    drop(cmd);
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let msg = format!("nanoclaw: cannot run {program:?}: {e}\n");
            write_frame(out, FRAME_STDERR, msg.as_bytes());
            drop(child_tx);
            report.dropped_stdout = stdout.join().unwrap_or(0);
            report.dropped_stderr = stderr.join().unwrap_or(0);
            return report;
        }
    };
    let pid = child.id() as i32;
    let _ = child_tx.send(child);
    // Wait for the command, watching the wall time and the workspace quota.
    let deadline = std::time::Instant::now() + limits.wall_time;
    let mut quota = QuotaWatch::new(limits.workspace_quota_bytes, usage_before);
    let kill = |pid: i32| {
        // SAFETY: kill with the command's own (positive) pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // The rest of the tree is killed below; it may hold the disk's writes a moment.
        reaper::kill_tree();
    };
    let status = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left.min(QUOTA_POLL)) {
            Ok(status) => break status.ok(),
            Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                report.limit = Some(LimitHit::WallTime);
                kill(pid);
                let _ = done_rx.recv_timeout(Duration::from_secs(5));
                break None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if quota.exceeded() {
                    report.limit = Some(LimitHit::WorkspaceQuota);
                    kill(pid);
                    break done_rx
                        .recv_timeout(Duration::from_secs(5))
                        .ok()
                        .and_then(Result::ok);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    // Whatever the command left running dies with it, and so does anything else in the
    // sandbox but its main process, however it detached (a container outlives its execs).
    reaper::kill_tree();
    reaper::kill_all_others();
    report.dropped_stdout = stdout.join().unwrap_or(0);
    report.dropped_stderr = stderr.join().unwrap_or(0);

    report.outcome = match status {
        None => Outcome::TimedOut,
        Some(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => Outcome::Exited(code),
                (None, Some(sig)) => Outcome::Signaled(sig),
                (None, None) => Outcome::Exited(EXIT_CANNOT_RUN),
            }
        }
    };
    if report.limit.is_none() {
        report.limit = limit_from_outcome(report.outcome, fsize < limits.file_size_bytes);
    }
    if report.limit.is_none() {
        // A container's own cgroup, visible inside it (the Docker backend).
        report.limit = counters_before.limit_hit_since(Counters::of_own_cgroup());
    }
    report
}

/// Limits visible in how the command ended: a signal, or a shell's 128+signal exit status
/// when the signal hit one of its children.
/// `quota_bound` says the file-size limit was lowered to the workspace's remaining room.
fn limit_from_outcome(outcome: Outcome, quota_bound: bool) -> Option<LimitHit> {
    let sig = match outcome {
        Outcome::Signaled(sig) => sig,
        Outcome::Exited(code) if code > 128 => code - 128,
        _ => return None,
    };
    match sig {
        libc::SIGXCPU => Some(LimitHit::CpuTime),
        libc::SIGXFSZ if quota_bound => Some(LimitHit::WorkspaceQuota),
        libc::SIGXFSZ => Some(LimitHit::FileSize),
        _ => None,
    }
}
