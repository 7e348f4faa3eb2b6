//! The init's Landlock rules: read and execute anywhere the sandbox can see, write only under
//! `/workspace`, `/tmp` and `/dev` (for `/dev/null`, `/dev/shm` and friends; bwrap's `/dev` holds
//! only harmless nodes). Where the kernel offers it, abstract Unix sockets and signals are
//! scoped to the sandbox too.
//!
//! The result is a status, not a boolean: the caller decides whether partial enforcement is
//! acceptable.

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};

use crate::spec::{Enforcement, LandlockStatus};

/// The newest ABI these rules are written for.
const TARGET_ABI: ABI = ABI::V6;

/// Directories where writes are allowed.
pub const WRITABLE: &[&str] = &["/workspace", "/tmp", "/dev"];

#[derive(Debug, thiserror::Error)]
#[error("Landlock: {0}")]
pub struct LandlockError(String);

/// The highest Landlock ABI the running kernel offers, 0 when none.
pub fn kernel_abi() -> u32 {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // queries the ABI version; it takes no pointers the kernel dereferences.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if v < 0 { 0 } else { v as u32 }
}

/// `statfs` magic of FUSE file systems.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether the root file system is FUSE (e.g. Docker's fuse-overlayfs storage driver), on
/// which Landlock cannot recognise files as beneath `/` and would deny everything, exec
/// included.
fn root_is_fuse() -> bool {
    // SAFETY: statfs writes into the zeroed struct we own; the path is a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c"/".as_ptr(), &mut st) == 0 && st.f_type as i64 == FUSE_SUPER_MAGIC
    }
}

/// Restrict the calling process (and everything it starts).
pub fn restrict(enforcement: Enforcement) -> Result<LandlockStatus, LandlockError> {
    if root_is_fuse() {
        return match enforcement {
            Enforcement::BestEffort => Ok(LandlockStatus::NotEnforced),
            Enforcement::Required => Err(LandlockError(
                "required, but the root file system is FUSE, which Landlock cannot label".into(),
            )),
        };
    }
    let level = match enforcement {
        Enforcement::BestEffort => CompatLevel::BestEffort,
        Enforcement::Required => CompatLevel::HardRequirement,
    };
    let err = |e: &dyn std::fmt::Display| LandlockError(e.to_string());
    let status = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(|e| err(&e))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|e| err(&e))?
        .create()
        .map_err(|e| err(&e))?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(TARGET_ABI)))
        .map_err(|e| err(&e))?
        .add_rules(path_beneath_rules(WRITABLE, AccessFs::from_all(TARGET_ABI)))
        .map_err(|e| err(&e))?
        .restrict_self()
        .map_err(|e| err(&e))?;
    let status = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockStatus::NotEnforced,
    };
    if enforcement == Enforcement::Required && status != LandlockStatus::FullyEnforced {
        return Err(LandlockError(format!(
            "required but only {status:?} on this kernel (ABI {})",
            kernel_abi()
        )));
    }
    Ok(status)
}

/// The command's own Landlock domain, nested in the init's: it handles no file access (the
/// init's domain already bounds that) and scopes signals and abstract Unix sockets, so the
/// command can reach neither the init nor anything else outside its own domain. The ruleset
/// is created before the fork; the child enters it with one system call just before exec.
pub struct CommandScope {
    ruleset: Option<std::os::fd::OwnedFd>,
}

impl CommandScope {
    /// Create the ruleset. Without kernel support it is empty (best effort) or an error
    /// (required).
    pub fn create(enforcement: Enforcement) -> Result<CommandScope, LandlockError> {
        let level = match enforcement {
            Enforcement::BestEffort => CompatLevel::BestEffort,
            Enforcement::Required => CompatLevel::HardRequirement,
        };
        let err = |e: &dyn std::fmt::Display| LandlockError(format!("the command's domain: {e}"));
        // Reparenting a file (rename or link across directories) is the one access every domain
        // denies unless a rule grants it, even one that handles no file access: this domain
        // grants it where the init's lets the command write, or `rename(2)` between two
        // directories of the workspace would fail with EXDEV.
        let created = Ruleset::default()
            .set_compatibility(level)
            .handle_access(AccessFs::Refer)
            .map_err(|e| err(&e))?
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|e| err(&e))?
            .create()
            .map_err(|e| err(&e))?
            .add_rules(path_beneath_rules(WRITABLE, AccessFs::Refer))
            .map_err(|e| err(&e))?;
        Ok(CommandScope {
            ruleset: created.into(),
        })
    }

    pub fn status(&self) -> LandlockStatus {
        match self.ruleset {
            Some(_) => LandlockStatus::FullyEnforced,
            None => LandlockStatus::NotEnforced,
        }
    }

    /// The ruleset's descriptor, valid while `self` lives.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.ruleset.as_ref().map(|fd| fd.as_raw_fd())
    }
}

/// Enter the ruleset `fd` (from [`CommandScope::raw_fd`]). Async-signal-safe: one system call,
/// no allocation, so it may run between fork and exec.
pub fn enter_command_scope(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: landlock_restrict_self takes a descriptor and a flags integer; no pointers.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
