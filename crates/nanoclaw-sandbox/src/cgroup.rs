//! Per-command cgroups: memory, process-count and CPU-bandwidth limits for a whole sandbox,
//! with v2 where the host offers it and v1 controllers where only those exist.
//!
//! The host creates one cgroup per command under its own, moves the launcher into it between
//! fork and exec (so nothing of the command ever runs outside it), reads afterwards whether a
//! limit was hit, and removes it. Only paths under the cgroup file systems are touched; nothing
//! here opens a path a sandbox controls.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::spec::{LimitHit, Limits};

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// CFS period for the CPU bandwidth limit, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Attempts to remove a cgroup whose last processes are still exiting.
const REMOVE_ATTEMPTS: usize = 50;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Where per-command cgroups are created.
#[derive(Clone, Debug)]
pub enum CgroupRoot {
    /// Unified hierarchy: one parent with the memory, pids and cpu controllers delegated.
    V2 { parent: PathBuf },
    /// Legacy hierarchies: one parent per controller (cpu is optional).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
    },
}

/// One command's cgroup(s).
pub struct ExecCgroup {
    root: CgroupRoot,
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each hierarchy, opened before fork so the child only has to write.
    procs: Vec<File>,
}

/// This process's cgroup path in the hierarchy holding `controller` (v1), or the unified one.
fn own_path(controller: Option<&str>) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        if matches {
            return Some(PathBuf::from(path.trim_start_matches('/')));
        }
    }
    None
}

/// Whether a cgroup can be created under `p`: try it (mode bits say little for root).
fn writable_dir(p: &Path) -> bool {
    let probe = p.join(format!("nanoclaw-probe-{}", std::process::id()));
    let ok = fs::create_dir(&probe).is_ok();
    let _ = fs::remove_dir(&probe);
    ok
}

impl CgroupRoot {
    /// Find where this process may create cgroups with the controllers it needs, or say why not.
    pub fn detect() -> Result<CgroupRoot, String> {
        let root = Path::new(CGROUP_ROOT);
        if root.join("cgroup.controllers").is_file() {
            let parent = root.join(own_path(None).ok_or("cannot read /proc/self/cgroup")?);
            let enabled =
                fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            let needed = ["memory", "pids"];
            if !needed
                .iter()
                .all(|c| enabled.split_whitespace().any(|e| e == *c))
            {
                // Delegating needs the parent to hold no processes of its own; try, or report.
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(parent.join("cgroup.subtree_control"))
                    .map_err(|e| format!("cgroup v2 at {}: {e}", parent.display()))?;
                f.write_all(b"+memory +pids +cpu").map_err(|e| {
                    format!(
                        "cgroup v2: cannot enable memory and pids controllers under {}: {e}",
                        parent.display()
                    )
                })?;
            }
            return Ok(CgroupRoot::V2 { parent });
        }
        let v1 = |c: &str| -> Option<PathBuf> {
            let dir = root.join(c).join(own_path(Some(c))?);
            writable_dir(&dir).then_some(dir)
        };
        match (v1("memory"), v1("pids")) {
            (Some(memory), Some(pids)) => Ok(CgroupRoot::V1 {
                memory,
                pids,
                cpu: v1("cpu"),
            }),
            _ => Err(
                "no writable cgroup v2 hierarchy and no writable v1 memory and pids controllers"
                    .into(),
            ),
        }
    }

    /// Create a cgroup for one command and set its limits.
    pub fn create(&self, limits: &Limits) -> std::io::Result<ExecCgroup> {
        let name = format!(
            "nanoclaw-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = ExecCgroup {
            root: self.clone(),
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        let quota = (limits.cpu_millis as u64 * CPU_PERIOD_US / 1000).max(1000);
        match self {
            CgroupRoot::V2 { parent } => {
                let dir = cg.make(parent, &name)?;
                write(&dir, "memory.max", limits.memory_bytes)?;
                // Swap would let a balloon outgrow the memory limit.
                let _ = write(&dir, "memory.swap.max", 0);
                write(&dir, "pids.max", limits.max_processes)?;
                let _ = fs::write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"));
            }
            CgroupRoot::V1 { memory, pids, cpu } => {
                let dir = cg.make(memory, &name)?;
                write(&dir, "memory.limit_in_bytes", limits.memory_bytes)?;
                let _ = write(&dir, "memory.memsw.limit_in_bytes", limits.memory_bytes);
                let dir = cg.make(pids, &name)?;
                write(&dir, "pids.max", limits.max_processes)?;
                if let Some(cpu) = cpu {
                    let dir = cg.make(cpu, &name)?;
                    write(&dir, "cpu.cfs_period_us", CPU_PERIOD_US)?;
                    write(&dir, "cpu.cfs_quota_us", quota)?;
                }
            }
        }
        Ok(cg)
    }
}

fn write(dir: &Path, file: &str, value: impl std::fmt::Display) -> std::io::Result<()> {
    fs::write(dir.join(file), value.to_string())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

fn read_counter(dir: &Path, file: &str, key: &str) -> u64 {
    fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(str::trim)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl ExecCgroup {
    fn make(&mut self, parent: &Path, name: &str) -> std::io::Result<PathBuf> {
        let dir = parent.join(name);
        fs::create_dir(&dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        self.dirs.push(dir.clone());
        self.procs.push(
            OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?,
        );
        Ok(dir)
    }

    /// The `cgroup.procs` descriptors the child writes itself into before exec.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// A memory or process limit the command ran into.
    pub fn limit_hit(&self) -> Option<LimitHit> {
        let (memory_dir, pids_dir) = match &self.root {
            CgroupRoot::V2 { .. } => (self.dirs.first()?, self.dirs.first()?),
            CgroupRoot::V1 { .. } => (self.dirs.first()?, self.dirs.get(1)?),
        };
        let oom = match self.root {
            CgroupRoot::V2 { .. } => read_counter(memory_dir, "memory.events", "oom_kill "),
            // Not memory.failcnt: it also counts page-cache reclaim, which is no failure.
            CgroupRoot::V1 { .. } => read_counter(memory_dir, "memory.oom_control", "oom_kill "),
        };
        if oom > 0 {
            return Some(LimitHit::Memory);
        }
        if read_counter(pids_dir, "pids.events", "max ") > 0 {
            return Some(LimitHit::Processes);
        }
        None
    }

    /// Kill anything left and remove the cgroups.
    pub fn remove(self) {
        for dir in self.dirs.iter().rev() {
            for _ in 0..REMOVE_ATTEMPTS {
                let pids = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    // SAFETY: kill with a positive pid read from our own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
    }
}

/// In the child between fork and exec: join the cgroups. Only async-signal-safe calls.
pub fn join_from_pre_exec(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: `fd` is an open descriptor of cgroup.procs owned by the parent's ExecCgroup,
        // which outlives the spawn; write(2) is async-signal-safe. "0" means "this process".
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_reports_a_root_or_a_reason() {
        match CgroupRoot::detect() {
            Ok(root) => println!("cgroups: {root:?}"),
            Err(why) => {
                println!("no cgroups: {why}");
                assert!(!why.is_empty());
            }
        }
    }
}
