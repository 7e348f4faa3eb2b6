//! Per-group cgroups: memory, process-count and CPU-bandwidth limits for a group's sandboxes,
//! with v2 where the host offers it and v1 controllers where only those exist.
//!
//! The host creates one cgroup per group under its own the first time the group runs a
//! command, and keeps it for the life of the process: every command's launcher joins it
//! between fork and exec (so nothing of the command ever runs outside it), and whether a limit
//! was hit is read from the counters' change across the command. Keeping one per group, not
//! one per command, spares a mkdir/rmdir per command and the dying memory cgroups that page
//! cache would otherwise leave behind. Cgroups of a process that died are removed when the
//! next one starts. Only paths under the cgroup file systems are touched; nothing here opens a
//! path a sandbox controls.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::spec::{LimitHit, Limits};

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// CFS period for the CPU bandwidth limit, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Attempts to remove a cgroup whose last processes are still exiting.
const REMOVE_ATTEMPTS: usize = 50;
/// Prefix of the cgroups this project creates: `nanoclaw-<pid>-<group>`.
const PREFIX: &str = "nanoclaw-";

/// Where group cgroups are created.
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

/// One group's cgroup(s).
pub struct GroupCgroup {
    root: CgroupRoot,
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each hierarchy, open so a child only has to write to join.
    procs: Vec<File>,
    /// The limits last written, so unchanged ones are not written again.
    written: Mutex<Option<Limits>>,
    /// The limits the host's cgroups did not offer when they were last written.
    unenforced: Mutex<Vec<&'static str>>,
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

impl CgroupRoot {
    /// Find where this process may create cgroups with the controllers it needs, or say why
    /// not. Existence only: whether this process may create cgroups there shows at the first
    /// command, which then falls back to rlimits (or fails, when cgroups are required).
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
            dir.join("cgroup.procs").is_file().then_some(dir)
        };
        match (v1("memory"), v1("pids")) {
            (Some(memory), Some(pids)) => Ok(CgroupRoot::V1 {
                memory,
                pids,
                cpu: v1("cpu"),
            }),
            _ => Err("no cgroup v2 hierarchy and no v1 memory and pids controllers".into()),
        }
    }

    fn parents(&self) -> Vec<&Path> {
        match self {
            CgroupRoot::V2 { parent } => vec![parent],
            CgroupRoot::V1 { memory, pids, cpu } => {
                let mut v: Vec<&Path> = vec![memory, pids];
                v.extend(cpu.as_deref());
                v
            }
        }
    }

    /// Remove the cgroups of nanoclaw processes that are gone.
    pub fn remove_stale(&self) {
        for parent in self.parents() {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name
                    .strip_prefix(PREFIX)
                    .and_then(|r| r.split('-').next()?.parse::<i32>().ok())
                else {
                    continue;
                };
                // SAFETY: signal 0 only checks that the process exists.
                if unsafe { libc::kill(pid, 0) } != 0 {
                    remove_dir(&entry.path());
                }
            }
        }
    }

    /// Create the cgroup for one group (`key` is its name).
    pub fn create(&self, key: &str) -> std::io::Result<GroupCgroup> {
        let name = format!("{PREFIX}{}-{key}", std::process::id());
        let mut cg = GroupCgroup {
            root: self.clone(),
            dirs: Vec::new(),
            procs: Vec::new(),
            written: Mutex::new(None),
            unenforced: Mutex::new(Vec::new()),
        };
        for parent in self.parents() {
            let dir = parent.join(&name);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                // Left by an earlier command of this same process that could not remove it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    cg.remove();
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", dir.display()),
                    ));
                }
            }
            cg.procs.push(
                OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?,
            );
            cg.dirs.push(dir);
        }
        Ok(cg)
    }
}

fn write(dir: &Path, file: &str, value: impl std::fmt::Display) -> std::io::Result<()> {
    fs::write(dir.join(file), value.to_string())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

/// Write a limit the host may not offer: a control file that is not there (cgroupfs never
/// creates one) is noted under the limit's name; any failure to write one that is there is an
/// error.
fn optional(
    dir: &Path,
    file: &'static str,
    value: impl std::fmt::Display,
    unenforced: &mut Vec<&'static str>,
) -> std::io::Result<()> {
    if !dir.join(file).exists() {
        unenforced.push(match file {
            "cpu.max" => "cpu",
            _ => "swap",
        });
        return Ok(());
    }
    write(dir, file, value)
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

/// Kill what is left in a cgroup and remove it.
fn remove_dir(dir: &Path) {
    for _ in 0..REMOVE_ATTEMPTS {
        let pids = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill with a positive pid read from our own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
}

/// OOM kills and refused forks so far; a change across a command means it hit the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    oom_kills: u64,
    forks_refused: u64,
}

impl Counters {
    /// The counters of the cgroup this process runs in, as a container shows it at
    /// /sys/fs/cgroup (v2, or v1 controllers). Zero where none is visible (a bwrap sandbox,
    /// whose cgroup the host reads instead).
    pub fn of_own_cgroup() -> Counters {
        let root = Path::new(CGROUP_ROOT);
        Counters {
            oom_kills: read_counter(root, "memory.events", "oom_kill ").max(read_counter(
                &root.join("memory"),
                "memory.oom_control",
                "oom_kill ",
            )),
            forks_refused: read_counter(root, "pids.events", "max ").max(read_counter(
                &root.join("pids"),
                "pids.events",
                "max ",
            )),
        }
    }

    /// The limit a command hit, from the counters before it (`self`) and after it.
    pub fn limit_hit_since(self, after: Counters) -> Option<LimitHit> {
        if after.oom_kills > self.oom_kills {
            Some(LimitHit::Memory)
        } else if after.forks_refused > self.forks_refused {
            Some(LimitHit::Processes)
        } else {
            None
        }
    }
}

impl GroupCgroup {
    /// Write `limits` if they differ from what the cgroup holds. A limit whose control file
    /// is missing (the host offers no such controller) is noted in [`Self::unenforced`]; any
    /// other failure to write a limit fails the command.
    pub fn apply(&self, limits: &Limits) -> std::io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.as_ref() == Some(limits) {
            return Ok(());
        }
        let mut unenforced = Vec::new();
        let quota = (limits.cpu_millis as u64 * CPU_PERIOD_US / 1000).max(1000);
        match &self.root {
            CgroupRoot::V2 { .. } => {
                let dir = &self.dirs[0];
                write(dir, "memory.max", limits.memory_bytes)?;
                // Swap would let a balloon outgrow the memory limit.
                optional(dir, "memory.swap.max", 0, &mut unenforced)?;
                write(dir, "pids.max", limits.max_processes)?;
                optional(
                    dir,
                    "cpu.max",
                    format!("{quota} {CPU_PERIOD_US}"),
                    &mut unenforced,
                )?;
            }
            CgroupRoot::V1 { .. } => {
                write(&self.dirs[0], "memory.limit_in_bytes", limits.memory_bytes)?;
                optional(
                    &self.dirs[0],
                    "memory.memsw.limit_in_bytes",
                    limits.memory_bytes,
                    &mut unenforced,
                )?;
                write(&self.dirs[1], "pids.max", limits.max_processes)?;
                match self.dirs.get(2) {
                    Some(cpu) => {
                        write(cpu, "cpu.cfs_period_us", CPU_PERIOD_US)?;
                        write(cpu, "cpu.cfs_quota_us", quota)?;
                    }
                    None => unenforced.push("cpu"),
                }
            }
        }
        *written = Some(*limits);
        *self.unenforced.lock().unwrap_or_else(|p| p.into_inner()) = unenforced;
        Ok(())
    }

    /// The limits this host's cgroups do not offer (no swap accounting, no cpu controller):
    /// the others hold; these are reported, as `doctor` shows.
    pub fn unenforced(&self) -> Vec<&'static str> {
        self.unenforced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `cgroup.procs` descriptors a child writes itself into before exec.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    pub fn counters(&self) -> Counters {
        let (memory, pids) = match &self.root {
            CgroupRoot::V2 { .. } => (&self.dirs[0], &self.dirs[0]),
            CgroupRoot::V1 { .. } => (&self.dirs[0], &self.dirs[1]),
        };
        let oom_kills = match self.root {
            CgroupRoot::V2 { .. } => read_counter(memory, "memory.events", "oom_kill "),
            // Not memory.failcnt: it also counts page-cache reclaim, which is no failure.
            CgroupRoot::V1 { .. } => read_counter(memory, "memory.oom_control", "oom_kill "),
        };
        Counters {
            oom_kills,
            forks_refused: read_counter(pids, "pids.events", "max "),
        }
    }

    /// Kill anything left and remove the cgroups.
    pub fn remove(&self) {
        for dir in self.dirs.iter().rev() {
            remove_dir(dir);
        }
    }
}

/// In the child between fork and exec: join the cgroups. Only async-signal-safe calls.
pub fn join_from_pre_exec(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: `fd` is an open descriptor of cgroup.procs owned by the parent's GroupCgroup,
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
    fn a_limit_the_host_does_not_offer_is_noted_and_a_failed_write_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut unenforced = Vec::new();
        // No control file: the controller is not there; noted, not an error.
        optional(dir.path(), "cpu.max", "100000 100000", &mut unenforced).unwrap();
        optional(dir.path(), "memory.swap.max", 0, &mut unenforced).unwrap();
        assert_eq!(unenforced, ["cpu", "swap"]);
        // A control file that cannot be written (here: a directory) fails the command.
        std::fs::create_dir(dir.path().join("cpu.max")).unwrap();
        let mut unenforced = Vec::new();
        assert!(optional(dir.path(), "cpu.max", "100000 100000", &mut unenforced).is_err());
        assert!(unenforced.is_empty());
    }

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
