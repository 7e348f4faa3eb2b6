//! The init's seccomp filter: the system calls a sandboxed command may never make.
//!
//! The sandbox runs arbitrary programs (shells, compilers, interpreters), so the filter is a
//! deny-list of the calls that reach kernel attack surface or cross the sandbox's walls; the
//! namespaces, dropped capabilities, `no_new_privs` and Landlock hold the rest. Each entry says
//! why it is here. Denied calls fail with `EPERM`, except `clone3` and `openat2`, which fail
//! with `ENOSYS` so that libc falls back to `clone` and `openat`, whose arguments the filter can
//! inspect. Beside whole calls, it refuses arguments: namespace flags on `clone`, socket
//! families other than Unix and IP, terminal-injecting `ioctl`s, setuid and setgid modes, and
//! device nodes.
//!
//! seccompiler compiles the rules, with one exception it cannot express: on x86-64, a system
//! call number with the x32 bit set (`0x40000000`) names the same calls by other numbers, so a
//! six-instruction filter written out below refuses every such number (`EPERM`), whether or not
//! the kernel has x32 enabled.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Every system call denied outright, with the reason.
pub const DENIED: &[(i64, &str)] = &[
    (libc::SYS_ptrace, "inspect or control another process"),
    (libc::SYS_process_vm_readv, "read another process's memory"),
    (
        libc::SYS_process_vm_writev,
        "write another process's memory",
    ),
    (libc::SYS_mount, "change the file system layout"),
    (libc::SYS_umount2, "uncover what a mount hides"),
    (libc::SYS_pivot_root, "change the root"),
    (libc::SYS_chroot, "change the root"),
    (libc::SYS_move_mount, "new mount API"),
    (libc::SYS_open_tree, "new mount API: clone a mount"),
    (libc::SYS_fsopen, "new mount API"),
    (libc::SYS_fsconfig, "new mount API"),
    (libc::SYS_fsmount, "new mount API"),
    (libc::SYS_fspick, "new mount API"),
    (libc::SYS_mount_setattr, "new mount API: change mount flags"),
    (
        libc::SYS_unshare,
        "new namespaces: a way around the sandbox's own",
    ),
    (libc::SYS_setns, "join another namespace"),
    (libc::SYS_keyctl, "kernel keyrings are shared with the host"),
    (
        libc::SYS_add_key,
        "kernel keyrings are shared with the host",
    ),
    (
        libc::SYS_request_key,
        "kernel keyrings are shared with the host",
    ),
    (libc::SYS_bpf, "load programs into the kernel"),
    (
        libc::SYS_perf_event_open,
        "kernel profiling: side channels and attack surface",
    ),
    (
        libc::SYS_io_uring_setup,
        "io_uring: large attack surface, bypasses seccomp for its ops",
    ),
    (libc::SYS_io_uring_enter, "io_uring"),
    (libc::SYS_io_uring_register, "io_uring"),
    (libc::SYS_kexec_load, "replace the running kernel"),
    (libc::SYS_kexec_file_load, "replace the running kernel"),
    (libc::SYS_init_module, "load a kernel module"),
    (libc::SYS_finit_module, "load a kernel module"),
    (libc::SYS_delete_module, "unload a kernel module"),
    (libc::SYS_swapon, "change the host's swap"),
    (libc::SYS_swapoff, "change the host's swap"),
    (libc::SYS_reboot, "reboot the host"),
    (libc::SYS_acct, "process accounting to a file"),
    (libc::SYS_quotactl, "disk quota control"),
    (libc::SYS_quotactl_fd, "disk quota control"),
    (
        libc::SYS_userfaultfd,
        "stalls kernel code paths; a common exploit aid",
    ),
    (
        libc::SYS_name_to_handle_at,
        "open files by handle, around path checks",
    ),
    (
        libc::SYS_open_by_handle_at,
        "open files by handle, around path checks",
    ),
];

/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// Socket families a command may open: Unix, IPv4, IPv6. Not netlink, packet, raw, ...
const ALLOWED_SOCKET_FAMILIES: &[u64] = &[
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
];

/// `ioctl` requests that push input into a terminal or reach the console.
// The request constants' type differs between libcs (c_ulong on glibc, c_int on musl).
#[allow(clippy::unnecessary_cast)]
const DENIED_IOCTLS: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

/// Calls that set a file's mode, with the argument holding it. A mode with the setuid or setgid
/// bit is refused: the workspace is a host directory, and when the daemon runs as root the
/// sandbox's uid is root on the host, so a setuid file made there would be a setuid-root file
/// on the host. (`openat2` carries its mode in memory the filter cannot read; it is refused
/// with `ENOSYS`, so callers use `openat`.)
const MODE_ARGS: &[(i64, u8)] = &[
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_chmod, 1),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_open, 2),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_creat, 1),
    (libc::SYS_fchmod, 1),
    (libc::SYS_fchmodat, 2),
    (libc::SYS_fchmodat2, 2),
    (libc::SYS_openat, 3),
];
/// Mode bits refused in [`MODE_ARGS`].
const PRIVILEGE_BITS: &[u64] = &[libc::S_ISUID as u64, libc::S_ISGID as u64];

/// Calls that make a file system node, with the argument holding its type: device nodes are
/// refused (a device node in a host directory opens the host's device). FIFOs and sockets are
/// harmless and stay allowed.
const MKNOD_ARGS: &[(i64, u8)] = &[
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_mknod, 1),
    (libc::SYS_mknodat, 2),
];
const DEVICE_TYPES: &[u64] = &[libc::S_IFCHR as u64, libc::S_IFBLK as u64];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

fn arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SeccompError::Build(format!("{e:?}")))
}

/// A condition on argument `arg`. `int` arguments (socket family, ioctl request) are compared
/// on their low 32 bits, as the kernel reads them, so junk in the high bits cannot slip past.
fn cond(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| SeccompError::Build(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(|e| SeccompError::Build(e.to_string()))
}

/// One rule per value, OR'ed: argument `arg`, compared by `op(value)`, equals `value`.
fn any_of(
    arg: u8,
    len: SeccompCmpArgLen,
    values: &[u64],
    op: impl Fn(u64) -> SeccompCmpOp,
) -> Result<Vec<SeccompRule>, SeccompError> {
    values
        .iter()
        .map(|&value| rule(vec![cond(arg, len.clone(), op(value), value)?]))
        .collect()
}

/// The main filter: every match fails with `EPERM`.
fn deny_filter() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    // clone with any namespace flag (one rule per flag: rules are OR'ed).
    let clone_rules = any_of(0, SeccompCmpArgLen::Qword, NAMESPACE_FLAGS, |flag| {
        SeccompCmpOp::MaskedEq(flag)
    })?;
    rules.insert(libc::SYS_clone, clone_rules);
    // socket and socketpair of a family not on the allow-list (conditions are AND'ed).
    let family_rule = || {
        rule(
            ALLOWED_SOCKET_FAMILIES
                .iter()
                .map(|f| cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *f))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    rules.insert(libc::SYS_socket, vec![family_rule()?]);
    rules.insert(libc::SYS_socketpair, vec![family_rule()?]);
    let ioctl_rules = any_of(1, SeccompCmpArgLen::Dword, DENIED_IOCTLS, |_| {
        SeccompCmpOp::Eq
    })?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    // A mode with setuid or setgid.
    for &(nr, arg) in MODE_ARGS {
        let per_bit = any_of(arg, SeccompCmpArgLen::Dword, PRIVILEGE_BITS, |bit| {
            SeccompCmpOp::MaskedEq(bit)
        })?;
        rules.insert(nr, per_bit);
    }
    // A device node.
    for &(nr, arg) in MKNOD_ARGS {
        let per_type = any_of(arg, SeccompCmpArgLen::Dword, DEVICE_TYPES, |_| {
            SeccompCmpOp::MaskedEq(libc::S_IFMT as u64)
        })?;
        rules.insert(nr, per_type);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| SeccompError::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

/// The second filter: `clone3` fails with `ENOSYS` (its flags live in memory the filter cannot
/// read, so libc is made to use `clone`).
fn clone3_filter() -> Result<BpfProgram, SeccompError> {
    // openat2 likewise: its mode is in memory too.
    let rules = BTreeMap::from([
        (libc::SYS_clone3, Vec::new()),
        (libc::SYS_openat2, Vec::new()),
    ]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(|e| SeccompError::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

/// The x32 bit of an x86-64 system call number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The filter refusing x32 system call numbers: the deny-list names each call by its x86-64
/// number only, and x32 reaches the same calls (and some by numbers of their own, 512 and up)
/// with this bit set.
fn x32_filter() -> BpfProgram {
    use seccompiler::sock_filter;
    // Classic BPF opcodes (linux/filter.h) and seccomp's data layout and return values.
    const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
    const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let op = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, ARCH, 0, 0),
        // Another architecture: not this filter's business (the deny filter kills it).
        op(JEQ_K, AUDIT_ARCH_X86_64, 0, 3),
        op(LD_W_ABS, NR, 0, 0),
        op(JGE_K, X32_SYSCALL_BIT, 0, 1),
        op(RET_K, RET_ERRNO | libc::EPERM as u32, 0, 0),
        op(RET_K, RET_ALLOW, 0, 0),
    ]
}

/// Install the filters on the calling thread; every thread and process it creates inherits
/// them. Requires `no_new_privs` (set by the caller first).
pub fn install() -> Result<(), SeccompError> {
    let deny = deny_filter()?;
    let clone3 = clone3_filter()?;
    seccompiler::apply_filter(&deny).map_err(|e| SeccompError::Install(e.to_string()))?;
    seccompiler::apply_filter(&clone3).map_err(|e| SeccompError::Install(e.to_string()))?;
    if cfg!(target_arch = "x86_64") {
        seccompiler::apply_filter(&x32_filter())
            .map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_architecture() {
        assert!(!deny_filter().unwrap().is_empty());
        assert!(!clone3_filter().unwrap().is_empty());
    }

    #[test]
    fn every_required_call_is_denied() {
        let denied: Vec<i64> = DENIED.iter().map(|(nr, _)| *nr).collect();
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_userfaultfd,
            libc::SYS_keyctl,
            libc::SYS_perf_event_open,
        ] {
            assert!(denied.contains(&nr), "syscall {nr} is not denied");
        }
        assert!(DENIED.iter().all(|(_, why)| !why.is_empty()));
    }
}
