//! The bubblewrap backend: a fresh sandbox for every command, over the group's persistent
//! workspace.
//!
//! Each sandbox gets new user, PID, network, IPC, UTS and cgroup namespaces (so no network but
//! loopback), runs as an unprivileged uid with every capability dropped, in its own session,
//! with an empty environment. The file system is built from an allow-list: `/usr` and a few
//! named files under `/etc` read-only, fresh `/proc`, `/dev` and `/tmp`, the workspace at
//! `/workspace`, and the init at `/.nanoclaw/init`. Nothing else of the host is visible: no
//! home, no data dir, no config, no secrets.
//!
//! `--die-with-parent` plus the PID namespace make killing `bwrap` kill the whole tree, which is
//! how the wall-time limit is enforced.

use std::path::{Path, PathBuf};

use crate::{Backend, ExecFuture, ExecOutput, ExecRequest, INIT_PATH_IN_SANDBOX, SandboxError};
use crate::{WORKSPACE_IN_SANDBOX, run};

/// The uid and gid commands run as inside the sandbox (mapped to the daemon's own on the host).
const SANDBOX_UID: &str = "1000";
/// `PATH` inside the sandbox.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Top-level directories that are, on merged-/usr systems, symlinks into `/usr`.
const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The only files and directories of the host's `/etc` a sandbox sees: what the dynamic linker,
/// TLS clients, time zones and the shell need. Notably absent: shadow, sudoers, ssh keys.
const ETC_ALLOWLIST: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ssl/certs",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/bash.bashrc",
    "/etc/inputrc",
    "/etc/mime.types",
    "/etc/protocols",
    "/etc/services",
];

/// The bubblewrap backend. Cheap to share; holds only the arguments common to every sandbox.
pub struct BwrapBackend {
    bwrap: PathBuf,
    init: String,
    common_args: Vec<String>,
}

impl BwrapBackend {
    /// Find `bwrap` on `PATH` and prepare the common arguments. `init` is the host path of the
    /// nanoclaw binary that will be mounted as the init.
    pub fn new(init: &Path) -> Result<Self, SandboxError> {
        let bwrap = find_on_path("bwrap").ok_or_else(|| {
            SandboxError::Unavailable(
                "bubblewrap (bwrap) is not installed; on Debian or Ubuntu: apt-get install bubblewrap"
                    .into(),
            )
        })?;
        let init = utf8(init)?.to_owned();
        Ok(BwrapBackend {
            bwrap,
            init,
            common_args: common_args(),
        })
    }

    /// The full argument list for one request.
    fn args(&self, req: &ExecRequest) -> Result<Vec<String>, SandboxError> {
        let mut args = self.common_args.clone();
        args.extend(
            [
                "--bind",
                utf8(&req.workspace)?,
                WORKSPACE_IN_SANDBOX,
                "--ro-bind",
                &self.init,
                INIT_PATH_IN_SANDBOX,
                // Every mount point exists now; the root itself becomes read-only, so the only
                // writable places are the workspace and /tmp.
                "--remount-ro",
                "/",
                "--chdir",
                WORKSPACE_IN_SANDBOX,
                "--",
            ]
            .map(str::to_owned),
        );
        args.extend(req.program.init_argv());
        Ok(args)
    }
}

impl Backend for BwrapBackend {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn exec<'a>(&'a self, req: &'a ExecRequest) -> ExecFuture<'a> {
        Box::pin(async move {
            let args = self.args(req)?;
            let program = utf8(&self.bwrap)?;
            let out: ExecOutput = run::run_capped(
                program,
                &args,
                &req.stdin,
                req.limits.wall_time,
                req.limits.output_bytes,
            )
            .await?;
            // bwrap reports its own setup failures on stderr with this prefix and status 1.
            if out.state == run::ExitState::Exited(1) && out.stderr.bytes.starts_with(b"bwrap: ") {
                return Err(SandboxError::Setup(
                    out.stderr.text_lossy().trim().to_owned(),
                ));
            }
            Ok(out)
        })
    }
}

fn common_args() -> Vec<String> {
    let mut a: Vec<String> = [
        // Namespaces: user, pid, net, ipc, uts, cgroup. No network but loopback.
        "--unshare-all",
        "--unshare-user",
        "--uid",
        SANDBOX_UID,
        "--gid",
        SANDBOX_UID,
        "--hostname",
        "nanoclaw",
        // The tree dies with bwrap; no controlling terminal (TIOCSTI); no capabilities.
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        // An empty environment, then only what is set here.
        "--clearenv",
        "--setenv",
        "PATH",
        SANDBOX_PATH,
        "--setenv",
        "HOME",
        WORKSPACE_IN_SANDBOX,
        "--setenv",
        "TMPDIR",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "TERM",
        "dumb",
        // File system: read-only system, fresh proc/dev/tmp.
        "--ro-bind",
        "/usr",
        "/usr",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]
    .map(str::to_owned)
    .to_vec();
    for name in USR_LINKS {
        let host = Path::new("/").join(name);
        match std::fs::read_link(&host) {
            Ok(target) => a.extend([
                "--symlink".to_owned(),
                target.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) if host.is_dir() => a.extend([
                "--ro-bind".to_owned(),
                host.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) => {}
        }
    }
    for path in ETC_ALLOWLIST {
        a.extend(["--ro-bind-try", path, path].map(str::to_owned));
    }
    a
}

fn utf8(path: &Path) -> Result<&str, SandboxError> {
    path.to_str()
        .ok_or_else(|| SandboxError::Setup(format!("path {} is not valid UTF-8", path.display())))
}

/// The first executable named `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
