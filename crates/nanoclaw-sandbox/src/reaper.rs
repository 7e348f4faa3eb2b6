//! Process-tree control for the init: become a subreaper so every orphan of the command is
//! reparented to the init, then find and kill every descendant when the command ends or times
//! out. Nothing a command starts outlives it, on any backend.

use std::collections::HashMap;

/// Rounds of kill-and-reap before giving up on a tree that keeps forking (the process limit
/// bounds how many can exist, so a few rounds suffice).
const MAX_KILL_ROUNDS: usize = 1000;

/// Make the calling process the reaper of its orphaned descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every live (not yet exited) process visible in `/proc`, with its parent.
fn process_table() -> HashMap<i32, i32> {
    let mut parent_of: HashMap<i32, i32> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return parent_of;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces; fields follow the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let Some(ppid) = fields.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if state != "Z" && state != "X" {
            parent_of.insert(pid, ppid);
        }
    }
    parent_of
}

fn live_processes() -> Vec<i32> {
    process_table().into_keys().collect()
}

/// Every live descendant of `root`, read from `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let parent_of = process_table();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&child, &ppid) in &parent_of {
            if ppid == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// Reap every exited child without blocking.
pub fn reap_zombies() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG writes only to `status`, a valid local.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return;
        }
    }
}

/// Kill every descendant of this process, and reap them. Returns once none is left.
pub fn kill_tree() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    kill_until_none(|| descendants(me));
}

/// Kill what `victims` names, reap, and look again, until it names nothing.
fn kill_until_none(victims: impl Fn() -> Vec<i32>) {
    for _ in 0..MAX_KILL_ROUNDS {
        let victims = victims();
        if victims.is_empty() {
            reap_zombies();
            return;
        }
        for pid in victims {
            // SAFETY: kill with a positive pid signals exactly that process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        reap_zombies();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Kill every process this one can see except itself and the PID namespace's init, and reap
/// its own. In a container the init of one exec is not the namespace's init, and a process
/// that slipped out of its tree (reparented to the container's main process) would outlive
/// the command; no exec shares a container with another (the backend serialises them), so
/// everything else visible here belongs to a command that has ended.
pub fn kill_all_others() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    kill_until_none(|| {
        live_processes()
            .into_iter()
            .filter(|&pid| pid != me && pid != 1)
            .collect()
    });
}
