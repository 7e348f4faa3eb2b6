//! The bubblewrap backend: a fresh sandbox for every command, over the group's persistent
//! workspace.
//!
//! Each sandbox gets new user, PID, network, IPC, UTS and cgroup namespaces (so no network but
//! loopback), runs as an unprivileged uid with every capability dropped (under a root daemon,
//! bwrap itself runs as a dedicated unprivileged host uid: see [`crate::unprivileged`]), in its own session,
//! with an empty environment. The file system is built from an allow-list: `/usr` and a few
//! named files under `/etc` read-only, fresh `/proc`, `/dev` and `/tmp`, the workspace at
//! `/workspace`, and the init at `/.nanoclaw/init`. Nothing else of the host is visible: no
//! home, no data dir, no config, no secrets.
//!
//! `--die-with-parent` plus the PID namespace make killing `bwrap` kill the whole tree: the
//! host's backstop behind the init's own wall-time limit. Each command runs in its group's
//! cgroup (memory, processes, CPU) where the host allows, with a size-limited `/tmp`.

use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::cgroup::{CgroupRoot, GroupCgroup};
use crate::relay::PROXY_SOCKET_IN_SANDBOX;
use crate::spec::{Enforcement, InitSpec, Program};
use crate::unprivileged::HostView;
use crate::{
    Backend, ExecFuture, ExecRequest, INIT_PATH_IN_SANDBOX, SandboxError, WORKSPACE_IN_SANDBOX,
};
use crate::{init_argv, run};

/// The uid and gid commands run as inside the sandbox: mapped to the daemon's own on the host,
/// or under a root daemon to the dedicated [`crate::unprivileged::SANDBOX_HOST_UID`].
const SANDBOX_UID: &str = "1000";
/// `PATH` inside the sandbox.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Top-level directories that are, on merged-/usr systems, symlinks into `/usr`.
const USR_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The only files and directories of the host's `/etc` a sandbox sees: what the dynamic linker,
/// TLS clients, time zones, name and service lookups need. Each is one more mount per command,
/// so the list stays short. Notably absent: shadow, sudoers, ssh keys, shell start-up files.
const ETC_ALLOWLIST: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ssl/certs",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
    "/etc/protocols",
    "/etc/services",
];

/// How the backend should treat cgroup limits.
#[derive(Clone, Debug)]
pub struct BwrapOptions {
    /// Landlock: best effort, or refuse to run without it.
    pub landlock: Enforcement,
    /// cgroup limits: best effort (rlimits stand in for memory), or refuse to run without them.
    pub cgroups: Enforcement,
}

/// The bubblewrap backend. Cheap to share; holds only what is common to every sandbox.
pub struct BwrapBackend {
    bwrap: PathBuf,
    init: String,
    common_args: Vec<String>,
    options: BwrapOptions,
    /// Where group cgroups go, or why there are none.
    cgroups: Result<CgroupRoot, String>,
    /// Each group's cgroup, by workspace, created at its first command. A std Mutex: held
    /// only to look up or insert, never across an await.
    group_cgroups: Mutex<HashMap<PathBuf, Arc<GroupCgroup>>>,
    /// The daemon is root: bwrap runs as the dedicated sandbox uid, from a private view of the
    /// host paths it binds.
    drop_root: bool,
}

impl BwrapBackend {
    /// Find `bwrap` on `PATH` and prepare the common arguments. `init` is the host path of the
    /// nanoclaw binary that will be mounted as the init.
    pub fn new(init: &Path, options: BwrapOptions) -> Result<Self, SandboxError> {
        let bwrap = find_on_path("bwrap").ok_or_else(|| {
            SandboxError::Unavailable(
                "bubblewrap (bwrap) is not installed; on Debian or Ubuntu: apt-get install bubblewrap"
                    .into(),
            )
        })?;
        let init = utf8(init)?.to_owned();
        let cgroups = CgroupRoot::detect();
        if let Ok(root) = &cgroups {
            root.remove_stale();
        }
        if let (Enforcement::Required, Err(why)) = (options.cgroups, &cgroups) {
            return Err(SandboxError::Unavailable(format!(
                "cgroup limits are required but unavailable: {why}"
            )));
        }
        Ok(BwrapBackend {
            bwrap,
            init,
            common_args: common_args(),
            options,
            cgroups,
            group_cgroups: Mutex::new(HashMap::new()),
            drop_root: crate::unprivileged::needed(),
        })
    }

    /// The host uid commands run as, when it is not the daemon's own (under a root daemon).
    pub fn host_uid(&self) -> Option<u32> {
        self.drop_root
            .then_some(crate::unprivileged::SANDBOX_HOST_UID)
    }

    /// The group's cgroup with `limits` applied, created at its first command.
    fn group_cgroup(&self, req: &ExecRequest) -> Result<Option<Arc<GroupCgroup>>, SandboxError> {
        let Ok(root) = &self.cgroups else {
            return Ok(None);
        };
        let required = self.options.cgroups == Enforcement::Required;
        let fail = |e: std::io::Error| -> Result<Option<Arc<GroupCgroup>>, SandboxError> {
            if required {
                Err(SandboxError::Setup(format!(
                    "setting up the group's cgroup: {e}"
                )))
            } else {
                tracing::warn!(error = %e, "no cgroup for this group; rlimits only");
                Ok(None)
            }
        };
        let existing = {
            let map = self.group_cgroups.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&req.workspace).cloned()
        };
        let cgroup = match existing {
            Some(cg) => cg,
            None => {
                let key = req
                    .workspace
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("group");
                let cg = match root.create(key) {
                    Ok(cg) => Arc::new(cg),
                    Err(e) => return fail(e),
                };
                let mut map = self.group_cgroups.lock().unwrap_or_else(|p| p.into_inner());
                Arc::clone(map.entry(req.workspace.clone()).or_insert(cg))
            }
        };
        match cgroup.apply(&req.limits) {
            Ok(()) => Ok(Some(cgroup)),
            Err(e) => fail(e),
        }
    }

    /// The same backend with cgroups switched off (rlimits only), for comparison.
    pub fn without_cgroups(mut self) -> Self {
        self.cgroups = Err("switched off".into());
        self
    }

    /// Why cgroup limits are not available, if they are not.
    pub fn cgroups_missing(&self) -> Option<&str> {
        self.cgroups.as_ref().err().map(String::as_str)
    }

    /// The full argument list for one request, and the view the launcher must enter first
    /// (under a root daemon).
    fn args(
        &self,
        req: &ExecRequest,
        rlimit_fallback: bool,
    ) -> Result<(Vec<String>, Option<HostView>), SandboxError> {
        let mut view = self.drop_root.then(HostView::default);
        // Where bwrap finds a host path: the path itself, or its place in the view.
        let mut source = |host: &Path, name: &str| -> Result<String, SandboxError> {
            match view.as_mut() {
                Some(view) => view.add(host, name),
                None => utf8(host).map(str::to_owned),
            }
        };
        let workspace = source(&req.workspace, "workspace")?;
        let init = source(Path::new(&self.init), "init")?;
        let socket = req
            .proxy_socket
            .as_ref()
            .map(|s| source(s, "proxy.sock"))
            .transpose()?;
        let trust = req
            .trust_dir
            .as_ref()
            .map(|d| source(d, "trust"))
            .transpose()?;
        let mut args = self.common_args.clone();
        args.extend([
            "--size".to_owned(),
            req.limits.tmp_size_bytes.to_string(),
            "--tmpfs".to_owned(),
            "/tmp".to_owned(),
        ]);
        args.extend([
            "--bind".to_owned(),
            workspace,
            WORKSPACE_IN_SANDBOX.to_owned(),
        ]);
        args.extend([
            "--ro-bind".to_owned(),
            init,
            INIT_PATH_IN_SANDBOX.to_owned(),
        ]);
        if let Some(socket) = socket {
            // Read-only: connecting needs no write access to the mount, and a chmod from inside
            // would change the host socket's mode.
            args.extend([
                "--ro-bind".to_owned(),
                socket,
                PROXY_SOCKET_IN_SANDBOX.to_owned(),
            ]);
        }
        if let Some(dir) = trust {
            let bundle = format!("{dir}/{}", crate::CA_BUNDLE_FILE);
            args.extend([
                "--ro-bind".to_owned(),
                dir,
                crate::TRUST_DIR_IN_SANDBOX.to_owned(),
            ]);
            args.extend([
                "--ro-bind".to_owned(),
                bundle,
                crate::SYSTEM_BUNDLE_IN_SANDBOX.to_owned(),
            ]);
        }
        // Every mount point exists now; the root itself becomes read-only, so the only
        // writable places are the workspace, /tmp and bwrap's /dev.
        args.extend(
            ["--remount-ro", "/", "--chdir", WORKSPACE_IN_SANDBOX, "--"].map(str::to_owned),
        );
        let spec = InitSpec {
            program: req.program.clone(),
            limits: req.limits,
            landlock: self.options.landlock,
            rlimit_fallback,
            env: req.command_env(),
        };
        args.extend(init_argv(&spec)?);
        Ok((args, view))
    }

    /// Under a root daemon, what the dedicated uid must own: the workspace (given over once)
    /// and the proxy socket (to connect to it).
    fn hand_over(&self, req: &ExecRequest) -> Result<(), SandboxError> {
        if !self.drop_root {
            return Ok(());
        }
        let fail = |what: &Path, e: std::io::Error| {
            SandboxError::Setup(format!(
                "giving {} to the sandbox uid {}: {e}",
                what.display(),
                crate::unprivileged::SANDBOX_HOST_UID
            ))
        };
        crate::unprivileged::own_workspace(&req.workspace).map_err(|e| fail(&req.workspace, e))?;
        if let Some(socket) = &req.proxy_socket {
            crate::unprivileged::own_socket(socket).map_err(|e| fail(socket, e))?;
        }
        Ok(())
    }
}

impl Backend for BwrapBackend {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn exec<'a>(&'a self, req: &'a ExecRequest) -> ExecFuture<'a> {
        Box::pin(async move {
            // A file request runs only the init's own bounded code, never the agent's: its
            // rlimits suffice.
            let cgroup = match req.program {
                Program::Command(_) => self.group_cgroup(req)?,
                Program::FileRequest => None,
            };
            self.hand_over(req)?;
            let (args, view) = self.args(req, cgroup.is_none())?;
            let before_exec = run::BeforeExec {
                cgroup_fds: cgroup.as_ref().map(|cg| cg.procs_fds()).unwrap_or_default(),
                view,
            };
            let before = cgroup.as_ref().map(|cg| cg.counters());
            // A streamed command's stdout is not kept; its stderr is, under a cap of its own.
            let cap = match req.stream {
                Some(_) => crate::STREAM_STDERR_CAP,
                None => req.limits.output_bytes,
            };
            let result = run::run_launcher(
                utf8(&self.bwrap)?,
                &args,
                &req.stdin,
                req.limits.wall_time,
                cap,
                before_exec,
                req.stream.as_ref().and_then(crate::Stream::take),
            )
            .await;
            let (Some(cgroup), Some(before)) = (cgroup, before) else {
                return result;
            };
            let mut out = result?;
            out.cgroup_limits = true;
            out.cgroup_unenforced = cgroup.unenforced();
            if out.limit.is_none() {
                out.limit = before.limit_hit_since(cgroup.counters());
            }
            Ok(out)
        })
    }

    fn shutdown<'a>(
        &'a self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let cgroups: Vec<_> = {
                let mut map = self.group_cgroups.lock().unwrap_or_else(|p| p.into_inner());
                map.drain().map(|(_, cg)| cg).collect()
            };
            for cg in cgroups {
                cg.remove();
            }
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
        // The init is the PID namespace's init: no signal sent inside the namespace reaches
        // it, and when it exits the kernel kills whatever is left there.
        "--as-pid-1",
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
        // The kernel keyrings the sandbox's uid can see (root's, under a root daemon): hidden.
        "--ro-bind",
        "/dev/null",
        "/proc/keys",
        "--ro-bind",
        "/dev/null",
        "/proc/key-users",
        "--dev",
        "/dev",
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
