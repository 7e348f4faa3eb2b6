//! The escape suite: each test is an attack a compromised agent would try from inside its
//! sandbox, run through `nanoclaw sandbox exec` (the shell tool's path) against every backend
//! this machine has. Each must fail. A script prints `ESCAPED` when an attack works and ends
//! with `DONE`, so a script that died early cannot pass by saying nothing.
//!
//! Backends that are not available here are skipped with the reason printed, never passed.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::{TestHome, Wire, text};

const HELPER: &str = include_str!("escape_helper.py");

/// The backends this suite runs against, with the reason for each one that is skipped.
fn backends() -> Vec<&'static str> {
    let mut available = Vec::new();
    if which("bwrap") {
        available.push("bwrap");
    } else {
        support::skip("backend bwrap: bubblewrap is not installed");
    }
    match support::docker_image() {
        Ok(()) => available.push("docker"),
        Err(why) => support::skip(&format!("backend docker: {why}")),
    }
    assert!(
        !available.is_empty(),
        "no sandbox backend available: the escape suite cannot run"
    );
    available
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// A data dir for `backend`, with `limits` (lines of the `[limits]` table; the command timeout
/// defaults to 10 s) and the attack helper in the main workspace.
fn home(backend: &str, limits: &str) -> TestHome {
    let timeout = if limits.contains("command_timeout_secs") {
        ""
    } else {
        "command_timeout_secs = 10\n"
    };
    let h = TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        &format!(
            "[sandbox]\nbackend = \"{backend}\"\ndocker_image = \"{}\"\n[limits]\n{timeout}{limits}",
            support::DOCKER_TEST_IMAGE
        ),
    );
    std::fs::create_dir_all(h.workspace("main")).unwrap();
    std::fs::write(h.workspace("main").join(".escape_helper.py"), HELPER).unwrap();
    h
}

/// Run `script` in `group`'s sandbox, with `$DATA` (the data dir's host path) and the `attack`
/// helper defined.
async fn sh(h: &TestHome, group: &str, script: &str) -> Output {
    let data = h.path().display().to_string();
    // `attack` runs the helper and flags a run that said neither BLOCKED nor ESCAPED, so an
    // attack that never ran cannot pass.
    let full = format!(
        "DATA='{data}'\nattack() {{ out=$(python3 /workspace/.escape_helper.py \"$@\" 2>&1); echo \"$out\"; \
         echo \"$out\" | grep -qE '^(BLOCKED|ESCAPED|SKIP)' || echo HELPER-FAILED \"$@\"; }}\n{script}"
    );
    h.run(&[
        "sandbox", "exec", "--group", group, "--", "bash", "-c", &full,
    ])
    .await
}

/// Run `script` (with `$DATA` set to the data dir's host path) on every backend and require
/// that nothing escaped and the script reached its end.
async fn blocked_with(limits: &str, script: &str) {
    for backend in backends() {
        let h = home(backend, limits);
        let out = sh(&h, "main", &format!("{script}\necho DONE")).await;
        let stdout = text(&out.stdout);
        assert!(
            !stdout.contains("ESCAPED")
                && !stdout.contains("NOT-SECCOMP")
                && !stdout.contains("HELPER-FAILED"),
            "[{backend}] attack worked:\n{stdout}\n{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("DONE"),
            "[{backend}] script did not finish:\n{stdout}\n{}",
            text(&out.stderr)
        );
    }
}

async fn blocked(script: &str) {
    blocked_with("", script).await
}

macro_rules! attack {
    ($name:ident, $script:expr) => {
        #[tokio::test]
        async fn $name() {
            blocked($script).await;
        }
    };
}

// ----- reading host files -----

attack!(
    read_etc_shadow,
    "cat /etc/shadow 2>/dev/null && echo ESCAPED"
);
attack!(
    read_host_home,
    "for d in /root /home; do ls -A $d 2>/dev/null | grep -q . && echo ESCAPED $d; done"
);
attack!(
    read_data_dir,
    "ls -A \"$DATA\" 2>/dev/null | grep -q . && echo ESCAPED"
);
attack!(
    read_config_file,
    "cat \"$DATA/nanoclaw.toml\" 2>/dev/null && echo ESCAPED"
);
attack!(
    read_api_token_secret,
    "cat \"$DATA/api.token\" 2>/dev/null && echo ESCAPED"
);
attack!(
    read_store_database,
    "head -c 16 \"$DATA/nanoclaw.db\" 2>/dev/null | grep -q SQLite && echo ESCAPED"
);
attack!(
    read_secrets_from_any_process_environment,
    "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -E 'API_KEY|test-key|NANOCLAW_HOME' && echo ESCAPED"
);
attack!(
    see_host_processes_in_proc,
    "n=$(ls /proc | grep -c '^[0-9]'); [ \"$n\" -gt 16 ] && echo ESCAPED $n; grep -l 'carg[o]' /proc/[0-9]*/cmdline 2>/dev/null && echo ESCAPED"
);
attack!(
    read_kernel_memory,
    "head -c 1 /proc/kcore >/dev/null 2>&1 && echo ESCAPED; head -c 1 /dev/mem >/dev/null 2>&1 && echo ESCAPED"
);
attack!(
    read_host_sysfs,
    "ls /sys/class/net 2>/dev/null | grep -v '^lo$' | grep -q . && echo ESCAPED"
);
attack!(
    read_host_root_through_proc_1_root,
    "ls -A /proc/1/root/root 2>/dev/null | grep -q . && echo ESCAPED; cat /proc/1/root/etc/shadow 2>/dev/null && echo ESCAPED"
);

#[tokio::test]
async fn read_another_groups_workspace() {
    for backend in backends() {
        let h = home(backend, "");
        assert!(
            sh(&h, "victim", "echo private-words > diary.txt")
                .await
                .status
                .success()
        );
        let script = "cat ../victim/diary.txt 2>/dev/null; cat /workspace/../victim/diary.txt 2>/dev/null; \
                      find / -path /proc -prune -o -name diary.txt -print 2>/dev/null; echo DONE";
        let out = sh(&h, "main", script).await;
        let o = text(&out.stdout);
        assert!(
            !o.contains("private-words") && !o.contains("diary") && o.contains("DONE"),
            "[{backend}] {o}"
        );
    }
}

// ----- writing outside /workspace and /tmp -----

attack!(
    write_system_directories,
    "for d in /usr /usr/bin /etc /bin /lib /; do touch $d/.x 2>/dev/null && echo ESCAPED $d; done"
);
attack!(
    write_proc_sys,
    "echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo ESCAPED; echo b > /proc/sysrq-trigger 2>/dev/null && echo ESCAPED"
);
attack!(
    write_sysfs,
    "echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo ESCAPED"
);
attack!(
    write_through_proc_self_root,
    "touch /proc/self/root/usr/.x 2>/dev/null && echo ESCAPED"
);
attack!(
    write_host_file_through_hardlink,
    "ln /etc/passwd /workspace/pw 2>/dev/null && { echo x >> /workspace/pw 2>/dev/null && echo ESCAPED; }"
);
attack!(
    write_outside_via_symlink_in_workspace,
    "ln -s /usr/lib /workspace/lnk; touch /workspace/lnk/.x 2>/dev/null && echo ESCAPED"
);
attack!(
    tmp_does_not_persist_between_commands,
    "test -e /tmp/.left-behind && echo ESCAPED; touch /tmp/.left-behind"
);

#[tokio::test]
async fn tmp_is_fresh_for_every_command() {
    for backend in backends() {
        let h = home(backend, "");
        sh(&h, "main", "echo planted > /tmp/plant").await;
        let out = sh(&h, "main", "cat /tmp/plant 2>/dev/null; echo DONE").await;
        assert_eq!(text(&out.stdout), "DONE\n", "[{backend}]");
    }
}

// ----- network -----

#[tokio::test]
async fn tcp_to_a_service_on_the_hosts_loopback() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    blocked(&format!(
        "(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo ESCAPED"
    ))
    .await;
}

#[tokio::test]
async fn udp_to_a_service_on_the_hosts_loopback() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    blocked(&format!("attack udp {port}")).await;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        sock.recv(&mut buf).is_err(),
        "a datagram from the sandbox reached the host"
    );
}

attack!(
    tcp_to_an_outside_address,
    "(exec 3<>/dev/tcp/1.1.1.1/443) 2>/dev/null && echo ESCAPED; (exec 3<>/dev/tcp/10.0.0.1/80) 2>/dev/null && echo ESCAPED"
);
attack!(
    dns_lookup,
    "getent hosts example.com >/dev/null 2>&1 && echo ESCAPED; getent hosts localhost.localdomain.invalid >/dev/null 2>&1 && echo ESCAPED"
);
attack!(
    no_network_interface_but_loopback,
    "ip -o link 2>/dev/null | grep -v ' lo:' | grep -q . && echo ESCAPED; grep -v -E '^ *(lo|Inter|face)' /proc/net/dev | grep -q . && echo ESCAPED"
);
attack!(raw_socket, "attack socket raw");
attack!(packet_socket, "attack socket packet");
attack!(netlink_socket, "attack socket netlink");
attack!(
    docker_socket,
    "for s in /var/run/docker.sock /run/docker.sock /run/podman/podman.sock; do test -e $s && echo ESCAPED $s; done"
);

#[tokio::test]
async fn abstract_unix_socket_on_the_host() {
    let name = format!("nanoclaw-escape-{}", std::process::id());
    let fd = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    blocked(&format!("attack abstract {name}")).await;
    drop(fd);
}

// ----- privilege -----

attack!(
    ptrace_another_process,
    "sleep 5 & attack syscall ptrace 0x10 $! 0 0"
);
attack!(
    process_vm_readv,
    "attack syscall process_vm_readv 1 0 0 0 0 0"
);
attack!(
    mount_a_file_system,
    "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo ESCAPED; attack syscall mount 0 0 0 0 0"
);
attack!(
    new_mount_api,
    "attack syscall fsopen 0 0; attack syscall open_tree -100 0 0"
);
attack!(
    nested_user_namespace,
    "unshare -U true 2>/dev/null && echo ESCAPED; unshare -r true 2>/dev/null && echo ESCAPED; attack syscall unshare 0x10000000"
);
attack!(
    clone_into_new_namespaces,
    "attack clone_ns; attack syscall clone3 0 0"
);
attack!(
    join_another_namespace,
    "attack syscall setns 0 0; nsenter -t 1 -n true 2>/dev/null && echo ESCAPED"
);
attack!(
    chroot_and_pivot_root,
    "attack syscall chroot 0; attack syscall pivot_root 0 0"
);
attack!(
    setuid_binary_gains_nothing,
    "for b in $(find /usr/bin /usr/sbin -perm -4000 -type f 2>/dev/null); do echo found $b; done; \
     /usr/bin/mount -t tmpfs none /tmp 2>/dev/null && echo ESCAPED mount; \
     su -c true root </dev/null 2>/dev/null && echo ESCAPED su"
);
attack!(
    capabilities_are_all_dropped,
    "for f in CapInh CapPrm CapEff CapBnd CapAmb; do grep \"^$f:\" /proc/self/status | grep -qv '0000000000000000$' && echo ESCAPED $f; done; grep -q '^NoNewPrivs:.1' /proc/self/status || echo ESCAPED nnp"
);
attack!(
    device_nodes,
    "mknod /tmp/sda b 8 0 2>/dev/null && echo ESCAPED; ls /dev | grep -E '^(sd|vd|nvme|mem|kmsg|port)' && echo ESCAPED"
);
attack!(
    load_kernel_module,
    "attack syscall init_module 0 0 0; attack syscall finit_module 0 0 0; attack syscall delete_module 0 0"
);
attack!(bpf_program, "attack syscall bpf 0 0 0");
attack!(
    kernel_keyring,
    "attack syscall keyctl 0 0; attack syscall add_key 0 0 0 0 0"
);
attack!(io_uring, "attack syscall io_uring_setup 1 0");
attack!(perf_events, "attack syscall perf_event_open 0 0 -1 -1 0");
attack!(userfaultfd, "attack syscall userfaultfd 0");
attack!(
    replace_or_reboot_the_kernel,
    "attack syscall kexec_load 0 0 0 0; attack syscall reboot 0 0 0 0; attack syscall swapon 0 0"
);
attack!(
    open_by_file_handle,
    "attack syscall open_by_handle_at -100 0 0"
);
attack!(tiocsti_terminal_injection, "attack tiocsti");
attack!(
    x32_system_call_numbers,
    "attack x32 unshare 0x10000000; attack x32 mount 0 0 0 0 0; attack x32 bpf 0 0 0; attack x32 521 0 0 0 0"
);

/// Fail when a host process's command line holds `tag`.
fn assert_none_running(backend: &str, tag: &str) {
    let ps = std::process::Command::new("pgrep")
        .args(["-f", tag])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "[{backend}] survived: {}",
        text(&ps.stdout)
    );
}

// ----- the init: the command's keeper and the only voice of the sandbox -----

// The command runs as the init's uid: a dumpable init let it write a report of its own
// through /proc/<init>/fd/1, which the host then believed.
attack!(
    forge_the_inits_report_through_proc,
    "attack forge; attack idle_mem"
);
attack!(stop_or_kill_the_init, "attack signal_init");

#[tokio::test]
async fn forged_report_and_killed_init_leave_no_survivor() {
    for backend in backends() {
        let h = home(backend, "");
        let tag = format!("nanoclaw-survivor-{}", std::process::id());
        // The red team's sequence: leave a process behind, forge the init's report, kill it.
        let script = format!(
            "setsid bash -c 'exec -a {tag} sleep 300' >/dev/null 2>&1 < /dev/null & \
             sleep 0.2; attack forge; attack signal_init; echo DONE"
        );
        let out = sh(&h, "main", &script).await;
        let stdout = text(&out.stdout);
        assert!(
            !stdout.contains("ESCAPED") && stdout.contains("DONE"),
            "[{backend}] {stdout}\n{}",
            text(&out.stderr)
        );
        // The next call finds nothing of the last one running.
        // (A bracket keeps the pattern from matching this very command line.)
        let next = sh(
            &h,
            "main",
            &format!("pgrep -f '[n]{}' || echo NONE", &tag[1..]),
        )
        .await;
        assert!(
            text(&next.stdout).contains("NONE"),
            "[{backend}] survived into the next call: {}",
            text(&next.stdout)
        );
        assert_none_running(backend, &tag);
    }
}

// The red team's inherited descriptors: whatever the caller of nanoclaw left open (a shell
// redirect, a service manager's socket) reached into the bwrap sandbox, past every mount and
// Landlock rule: `exec 78</etc/shadow; nanoclaw sandbox exec -- head <&78`.
#[tokio::test]
async fn a_descriptor_inherited_from_the_caller_reaches_into_the_sandbox() {
    use std::os::fd::AsRawFd;
    for backend in backends() {
        let h = home(backend, "");
        let secret = h.path().join("host-only.txt");
        std::fs::write(&secret, "host secret ESCAPED-READ\n").unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&secret)
            .unwrap();
        let fd = file.as_raw_fd();
        let mut cmd = h.command();
        cmd.args([
            "sandbox",
            "exec",
            "--",
            "bash",
            "-c",
            "ls -l /proc/self/fd; head -c 100 <&77; echo ESCAPED-WRITE >&77; echo DONE",
        ]);
        // SAFETY: dup2 in the child between fork and exec; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 77) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().await.unwrap();
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("DONE"),
            "[{backend}] {stdout}{}",
            text(&out.stderr)
        );
        assert!(
            !stdout.contains("ESCAPED-READ"),
            "[{backend}] read a host file: {stdout}"
        );
        let after = std::fs::read_to_string(&secret).unwrap();
        assert!(
            !after.contains("ESCAPED-WRITE"),
            "[{backend}] wrote a host file"
        );
        drop(file);
    }
}

// ----- a root daemon's single layer -----

// Under a root daemon the sandbox's uid was root on the host: a setuid file in the workspace
// was a setuid-root file on the host, and a device node would open the host's device. (Now it
// is a dedicated unprivileged uid, and these stay refused besides.)
attack!(
    setuid_file_in_the_workspace,
    "touch s; chmod 4755 s 2>/dev/null; chmod u+s,g+s s 2>/dev/null; \
     python3 -c 'import os; os.close(os.open(\"s2\", os.O_CREAT|os.O_WRONLY, 0o6755))' 2>/dev/null; \
     for f in s s2; do [ -e $f ] && [ $(( $(stat -c %#a $f) & 06000 )) -ne 0 ] && echo ESCAPED setuid $f; done; \
     python3 -c 'import os; os.chmod(\"s\", 0o2755)' 2>/dev/null && echo ESCAPED setgid; true"
);
attack!(
    device_node_in_the_workspace,
    "mknod null2 c 1 3 2>/dev/null && echo ESCAPED char device; mknod blk b 7 0 2>/dev/null && echo ESCAPED block device; \
     mkfifo fifo && echo BLOCKED 'fifos are fine'; true"
);
attack!(
    chmod_the_hosts_proxy_socket,
    "chmod 777 /run/nanoclaw/proxy.sock 2>/dev/null && echo ESCAPED chmod proxy socket; \
     [ -S /run/nanoclaw/proxy.sock ] || echo HELPER-FAILED no proxy socket; true"
);
attack!(
    read_the_kernel_keyrings,
    "grep -q . /proc/keys 2>/dev/null && echo ESCAPED /proc/keys; true"
);

/// Under a root daemon, what a command makes on the host belongs to the dedicated sandbox uid
/// (on both backends), not to root: a root-owned
/// host file (a sysctl, the proxy socket) is out of its reach by plain permissions, whatever
/// Landlock does.
#[tokio::test]
async fn a_root_daemons_sandbox_is_not_root_on_the_host() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        support::skip("the daemon is not root here");
        return;
    }
    for backend in backends() {
        let h = home(backend, "");
        let out = sh(
            &h,
            "main",
            "touch made-here && echo MADE; \
             echo '|/tmp/x' > /proc/sys/kernel/core_pattern 2>/dev/null && echo ESCAPED core_pattern; \
             echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo ESCAPED sysrq; true",
        )
        .await;
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("MADE") && !stdout.contains("ESCAPED"),
            "[{backend}] {stdout}{}",
            text(&out.stderr)
        );
        let made = std::fs::symlink_metadata(h.workspace("main").join("made-here")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            made.uid(),
            0,
            "[{backend}] a file the command made is root's"
        );
        assert_eq!(
            (made.uid(), made.gid()),
            (65_000, 65_000),
            "[{backend}] the dedicated sandbox uid"
        );
    }
}

// ----- persistence -----

#[tokio::test]
async fn background_process_outlives_its_command() {
    for backend in backends() {
        let h = home(backend, "");
        let tag = format!("nanoclaw-persist-{}", std::process::id());
        let script = format!(
            "(exec -a {tag}-a sleep 300) & disown; setsid bash -c 'exec -a {tag}-b sleep 300' & \
             nohup bash -c '(exec -a {tag}-c sleep 300) &' >/dev/null 2>&1; echo DONE"
        );
        let out = sh(&h, "main", &script).await;
        assert!(text(&out.stdout).contains("DONE"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_none_running(backend, &tag);
    }
}

// ----- resources -----

#[tokio::test]
async fn fork_bomb_is_contained_and_the_host_stays_responsive() {
    for backend in backends() {
        let h = home(backend, "max_processes = 64\ncommand_timeout_secs = 5\n");
        let started = Instant::now();
        let out = sh(
            &h,
            "main",
            "bomb() { bomb | bomb & }; bomb; sleep 3; echo DONE",
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "[{backend}] took {:?}",
            started.elapsed()
        );
        let err = text(&out.stderr);
        assert!(
            err.contains("processes") || err.contains("wall-time"),
            "[{backend}] no limit reported: {err}"
        );
        // The host and the next command are fine.
        let t = Instant::now();
        assert!(sh(&h, "main", "true").await.status.success());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn memory_balloon_is_killed_and_reported() {
    for backend in backends() {
        let h = home(backend, "memory_mb = 128\n");
        let out = sh(&h, "main", "attack balloon 8; echo DONE").await;
        assert!(
            !text(&out.stdout).contains("ESCAPED"),
            "[{backend}] {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains("memory limit of 128 MiB"),
            "[{backend}] {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn disk_fill_of_the_workspace_is_stopped_and_reported() {
    for backend in backends() {
        let h = home(backend, "workspace_quota_mb = 20\nfile_size_mb = 100\n");
        let out = sh(
            &h,
            "main",
            "head -c 60000000 /dev/zero > big; ls -la big; echo DONE",
        )
        .await;
        let err = text(&out.stderr);
        assert!(err.contains("quota of 20 MiB"), "[{backend}] {err}");
        let size = std::fs::metadata(h.workspace("main").join("big"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size <= 21 * 1024 * 1024, "[{backend}] wrote {size} bytes");
    }
}

/// Bytes the files directly in `dir` hold.
fn bytes_in(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// The red team's quota loop: many files, each under the file-size limit, left 544 MiB in a
// 20 MiB workspace (the quota was checked once, after the command).
#[tokio::test]
async fn many_small_files_are_stopped_at_the_quota_while_writing() {
    for backend in backends() {
        let h = home(
            backend,
            "workspace_quota_mb = 20\ncommand_timeout_secs = 30\n",
        );
        let out = sh(
            &h,
            "main",
            "mkdir -p fill; for ((i=1; i<=600; i++)); do head -c 1000000 /dev/zero > fill/f$i || break; done; echo DONE",
        )
        .await;
        let err = text(&out.stderr);
        assert!(err.contains("quota of 20 MiB"), "[{backend}] {err}");
        let written = bytes_in(&h.workspace("main").join("fill"));
        // What the command writes between two looks at the disk (20 ms) is the overshoot.
        assert!(
            written < 80 * 1024 * 1024,
            "[{backend}] {} MiB written into a 20 MiB workspace",
            written >> 20
        );
        // Over quota: a command that writes more is stopped, one that deletes is not.
        let more = sh(
            &h,
            "main",
            "for ((i=1; i<=50; i++)); do head -c 1000000 /dev/zero > more$i; done",
        )
        .await;
        assert!(
            text(&more.stderr).contains("quota"),
            "[{backend}] {}",
            text(&more.stderr)
        );
        assert!(
            bytes_in(&h.workspace("main")) < 8 * 1024 * 1024,
            "[{backend}] kept accepting files"
        );
        let rm = sh(&h, "main", "rm -rf fill more*; echo CLEAN").await;
        assert!(
            text(&rm.stdout).contains("CLEAN"),
            "[{backend}] {}",
            text(&rm.stderr)
        );
        assert!(
            !text(&rm.stderr).contains("quota"),
            "[{backend}] {}",
            text(&rm.stderr)
        );
    }
}

#[tokio::test]
async fn file_size_limit_stops_a_huge_file() {
    for backend in backends() {
        let h = home(backend, "file_size_mb = 5\n");
        let out = sh(&h, "main", "head -c 20000000 /dev/zero > big").await;
        assert!(
            text(&out.stderr).contains("larger than the limit of 5 MiB"),
            "[{backend}] {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn tmp_fill_is_bounded() {
    for backend in backends() {
        let h = home(backend, "tmp_size_mb = 8\n");
        let out = sh(
            &h,
            "main",
            "head -c 50000000 /dev/zero > /tmp/fill; echo status=$?; du -sm /tmp | cut -f1",
        )
        .await;
        let o = text(&out.stdout);
        assert!(
            o.contains("status=1"),
            "[{backend}] {o} {}",
            text(&out.stderr)
        );
        let used: u64 = o
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(999);
        assert!(used <= 8, "[{backend}] /tmp grew to {used} MiB");
    }
}

#[tokio::test]
async fn cpu_spin_is_stopped_by_the_cpu_time_limit() {
    for backend in backends() {
        let h = home(backend, "cpu_time_secs = 1\n");
        let started = Instant::now();
        let out = sh(&h, "main", "while :; do :; done").await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "[{backend}] {:?}",
            started.elapsed()
        );
        assert!(
            text(&out.stderr).contains("CPU-time limit of 1 s"),
            "[{backend}] {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn output_flood_is_capped_and_the_command_stopped() {
    for backend in backends() {
        let h = home(
            backend,
            "output_limit_bytes = 4096\ncommand_timeout_secs = 2\n",
        );
        let started = Instant::now();
        let out = sh(&h, "main", "yes flood").await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out.stdout.len(), 4096, "[{backend}]");
        assert_eq!(out.status.code(), Some(124));
    }
}
