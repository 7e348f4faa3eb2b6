//! The Docker backend: one long-lived container per group, one exec per command, through the
//! Docker Engine API on its Unix socket (bollard). Only the parts of the API that Podman's
//! Docker-compatible socket also serves are used: create, start, exec, list, remove, inspect.
//!
//! Each container: no network (`none`), a read-only root file system, every capability
//! dropped, `no-new-privileges`, the daemon's own uid and gid (the dedicated sandbox uid,
//! [`crate::unprivileged::SANDBOX_HOST_UID`], when the daemon is root), memory, pids and CPU limits, a size-limited tmpfs at
//! `/tmp`, the group's workspace bind-mounted at `/workspace` and nanoclaw's own binary at
//! `/.nanoclaw/init`, which every exec runs first. The image is built locally
//! (`docker/agent.Dockerfile`); nothing is pulled, ever.
//!
//! Containers carry labels naming the data dir and the owning process, so containers left by
//! a process that died are found and removed at start; idle containers are removed after a
//! configurable time; a one-shot process removes its own when it is done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::relay::PROXY_SOCKET_IN_SANDBOX;
use crate::run::{Captured, FrameDecoder, HOST_GRACE, assemble};
use crate::spec::{Enforcement, InitSpec, Limits};
use crate::{
    Backend, ExecFuture, ExecRequest, INIT_PATH_IN_SANDBOX, SandboxError, WORKSPACE_IN_SANDBOX,
    init_argv,
};

/// The uid and gid commands run as when the daemon itself runs as root: the same dedicated uid
/// as bwrap's, so a workspace serves either backend.
const SANDBOX_ID_WHEN_ROOT: u32 = crate::unprivileged::SANDBOX_HOST_UID;
/// Seconds the client waits for the engine on one API call.
const API_TIMEOUT_SECS: u64 = 120;
/// How often idle containers are looked for, at most.
const IDLE_SWEEP: Duration = Duration::from_secs(10);
/// The environment of every exec; nothing of the daemon's own is passed.
const SANDBOX_ENV: &[&str] = &[
    "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
    "HOME=/workspace",
    "TMPDIR=/tmp",
    "LANG=C.UTF-8",
    "TERM=dumb",
];
/// Label keys.
const LABEL_MANAGED: &str = "org.nanoclaw.managed";
const LABEL_HOME: &str = "org.nanoclaw.home";
const LABEL_PID: &str = "org.nanoclaw.pid";
const LABEL_GROUP: &str = "org.nanoclaw.group";

/// Settings of the Docker backend.
#[derive(Clone, Debug)]
pub struct DockerOptions {
    /// The engine's socket: `unix:///var/run/docker.sock`, a Podman socket, ...
    pub socket: String,
    /// The agent image, built locally.
    pub image: String,
    /// Idle time after which a group's container is removed.
    pub idle_timeout: Duration,
    /// Landlock inside the container.
    pub landlock: Enforcement,
    /// A stable id of the data dir, so containers of one nanoclaw are told from another's.
    pub home_id: String,
}

/// The socket named by `DOCKER_HOST` (unix only), else Docker's default.
pub fn default_socket() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => h,
        _ => "unix:///var/run/docker.sock".into(),
    }
}

/// A group's running container and what it was created with.
struct Running {
    id: String,
    /// Limits, proxy socket and image it was created with; a change means a new container.
    fingerprint: String,
    last_used: Instant,
}

pub struct DockerBackend {
    docker: Docker,
    /// `uid:gid` of the container's processes: the daemon's own, never root; 1000 when the
    /// daemon is root (the workspace is then handed to 1000).
    user: String,
    /// The uid (and gid) the workspace and proxy socket are handed to: set when the daemon is
    /// root, whose files the container's user could not otherwise use.
    chown_to: Option<u32>,
    init: PathBuf,
    options: DockerOptions,
    /// Containers by workspace path. A tokio Mutex: held across the create/start awaits so a
    /// group never gets two containers.
    running: Arc<Mutex<HashMap<PathBuf, Running>>>,
    /// One exec at a time per group's container: the init of an exec kills everything in the
    /// container but its main process when its command ends, which is sound only if no other
    /// exec's command is running there. A std Mutex around the map, held only to look up.
    exec_turns: std::sync::Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
    /// Removals of abandoned execs' containers still under way, by workspace: the group's next
    /// exec waits for its own, so nothing of the abandoned command runs beside it.
    removals: Arc<std::sync::Mutex<HashMap<PathBuf, tokio::task::JoinHandle<()>>>>,
    /// Containers created by this process, for unique names.
    created: std::sync::atomic::AtomicU64,
    /// The containers of streamed commands still running, removed at shutdown if their
    /// commands have not ended by then.
    streamed: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Removes a group's container unless disarmed: an exec abandoned half-way (its caller
/// dropped the future, e.g. to stop a call) would otherwise leave its command running there.
struct RemoveUnlessFinished {
    docker: Docker,
    running: Arc<Mutex<HashMap<PathBuf, Running>>>,
    removals: Arc<std::sync::Mutex<HashMap<PathBuf, tokio::task::JoinHandle<()>>>>,
    workspace: PathBuf,
    container: String,
    armed: bool,
}

impl Drop for RemoveUnlessFinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (docker, running) = (self.docker.clone(), Arc::clone(&self.running));
        let (workspace, id) = (self.workspace.clone(), self.container.clone());
        let key = workspace.clone();
        let task = runtime.spawn(async move {
            running.lock().await.remove(&workspace);
            tracing::info!(container = %id, "removing the container of an abandoned exec");
            let opts = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = docker.remove_container(&id, Some(opts)).await;
        });
        self.removals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, task);
    }
}

fn api_err(what: &str, e: bollard::errors::Error) -> SandboxError {
    SandboxError::Setup(format!("Docker engine: {what}: {e}"))
}

impl DockerBackend {
    /// Connect, check the image, and remove containers a dead process of this data dir left.
    pub async fn connect(init: &Path, options: DockerOptions) -> Result<Self, SandboxError> {
        let unavailable = |e: String| {
            SandboxError::Unavailable(format!("Docker backend ({}): {e}", options.socket))
        };
        let docker = Docker::connect_with_unix(
            &options.socket,
            API_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unavailable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| unavailable(format!("the engine does not answer: {e}")))?;
        docker.inspect_image(&options.image).await.map_err(|e| {
            unavailable(format!(
                "image {:?} is not there ({e}); build it with ./scripts/build-agent-image.sh",
                options.image
            ))
        })?;
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (user, chown_to) = if uid == 0 {
            (
                format!("{SANDBOX_ID_WHEN_ROOT}:{SANDBOX_ID_WHEN_ROOT}"),
                Some(SANDBOX_ID_WHEN_ROOT),
            )
        } else {
            (format!("{uid}:{gid}"), None)
        };
        let backend = DockerBackend {
            docker,
            user,
            chown_to,
            init: init.to_path_buf(),
            options,
            running: Arc::new(Mutex::new(HashMap::new())),
            exec_turns: std::sync::Mutex::new(HashMap::new()),
            removals: Arc::new(std::sync::Mutex::new(HashMap::new())),
            created: std::sync::atomic::AtomicU64::new(0),
            streamed: Arc::default(),
        };
        backend.remove_stale().await?;
        backend.spawn_idle_sweeper();
        Ok(backend)
    }

    /// Containers of this data dir whose owning process is gone.
    async fn remove_stale(&self) -> Result<(), SandboxError> {
        let filters = HashMap::from([(
            "label",
            vec![format!("{LABEL_HOME}={}", self.options.home_id)],
        )]);
        let list = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(list))
            .await
            .map_err(|e| api_err("listing containers", e))?;
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let owner: Option<i32> = labels.get(LABEL_PID).and_then(|p| p.parse().ok());
            let alive = owner.is_some_and(|pid| {
                // SAFETY: signal 0 only checks that the process exists.
                pid > 0 && unsafe { libc::kill(pid, 0) } == 0
            });
            if !alive && let Some(id) = c.id {
                tracing::info!(container = %id, "removing a container left by an earlier run");
                self.remove(&id).await;
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &str) {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(e) = self.docker.remove_container(id, Some(opts)).await {
            tracing::warn!(container = %id, error = %e, "could not remove container");
        }
    }

    fn spawn_idle_sweeper(&self) {
        let running = Arc::downgrade(&self.running);
        let docker = self.docker.clone();
        let idle = self.options.idle_timeout;
        // Look at least twice per idle period, so a container goes within 1.5 periods.
        let sweep = IDLE_SWEEP.min(idle / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(sweep).await;
                let Some(running) = running.upgrade() else {
                    return;
                };
                let mut map = running.lock().await;
                let expired: Vec<PathBuf> = map
                    .iter()
                    .filter(|(_, r)| r.last_used.elapsed() >= idle)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in expired {
                    if let Some(r) = map.remove(&key) {
                        tracing::info!(container = %r.id, "removing an idle container");
                        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
                        let _ = docker.remove_container(&r.id, Some(opts)).await;
                    }
                }
            }
        });
    }

    /// Remove every container this process created.
    async fn remove_all(&self) {
        let mut map = self.running.lock().await;
        for (_, r) in map.drain() {
            self.remove(&r.id).await;
        }
        let streamed: Vec<String> = self
            .streamed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for id in streamed {
            self.remove(&id).await;
        }
    }

    /// Hand a host path the container must use to the sandbox user, when the daemon is root.
    /// lchown: the path is the host's own (a workspace dir, a socket) and is never followed.
    fn hand_to_sandbox_user(&self, path: &Path) -> Result<(), SandboxError> {
        let Some(id) = self.chown_to else {
            return Ok(());
        };
        std::os::unix::fs::lchown(path, Some(id), Some(id)).map_err(|e| {
            SandboxError::Setup(format!(
                "handing {} to the sandbox user: {e}",
                path.display()
            ))
        })
    }

    /// The group's container, created and started if needed.
    async fn container_for(&self, req: &ExecRequest) -> Result<String, SandboxError> {
        let fingerprint = format!(
            "{:?}|{:?}|{}",
            req.limits.without_per_command(),
            req.proxy_socket,
            self.options.image
        );
        let mut map = self.running.lock().await;
        if let Some(r) = map.get_mut(&req.workspace) {
            if r.fingerprint == fingerprint {
                r.last_used = Instant::now();
                return Ok(r.id.clone());
            }
            let old = r.id.clone();
            map.remove(&req.workspace);
            self.remove(&old).await;
        }
        let id = self.create(req).await?;
        map.insert(
            req.workspace.clone(),
            Running {
                id: id.clone(),
                fingerprint,
                last_used: Instant::now(),
            },
        );
        Ok(id)
    }

    async fn create(&self, req: &ExecRequest) -> Result<String, SandboxError> {
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| SandboxError::Setup(format!("{} is not UTF-8", p.display())))
        };
        let group = req
            .workspace
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("group")
            .to_owned();
        // A root daemon's workspaces are root's; the container's unprivileged user needs its own.
        if self.chown_to.is_some() {
            crate::unprivileged::own_workspace(&req.workspace).map_err(|e| {
                SandboxError::Setup(format!(
                    "handing {} to the sandbox user: {e}",
                    req.workspace.display()
                ))
            })?;
        }
        let mut binds = vec![
            format!("{}:{WORKSPACE_IN_SANDBOX}:rw", utf8(&req.workspace)?),
            format!("{}:{INIT_PATH_IN_SANDBOX}:ro", utf8(&self.init)?),
        ];
        if let Some(sock) = &req.proxy_socket {
            // The container's user must be able to connect; as root, hand the socket to it
            // rather than opening it to every user of the host.
            self.hand_to_sandbox_user(sock)?;
            // Read-only: connecting needs no write access, and no chmod from inside reaches it.
            binds.push(format!("{}:{PROXY_SOCKET_IN_SANDBOX}:ro", utf8(sock)?));
        }
        if let Some(dir) = &req.trust_dir {
            let bundle = dir.join(crate::CA_BUNDLE_FILE);
            binds.push(format!("{}:{}:ro", utf8(dir)?, crate::TRUST_DIR_IN_SANDBOX));
            binds.push(format!(
                "{}:{}:ro",
                utf8(&bundle)?,
                crate::SYSTEM_BUNDLE_IN_SANDBOX
            ));
        }
        let l = &req.limits;
        let (uid, gid) = self.user.split_once(':').unwrap_or(("1000", "1000"));
        let host = HostConfig {
            binds: Some(binds),
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(l.memory_bytes as i64),
            // Memory plus swap equal to memory: no swap.
            memory_swap: Some(l.memory_bytes as i64),
            nano_cpus: Some(l.cpu_millis as i64 * 1_000_000),
            pids_limit: Some(l.max_processes as i64),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                // Owned by the container's user: some engines drop `mode`, leaving a /tmp
                // only root could write.
                format!(
                    "rw,nosuid,nodev,size={},mode=1777,uid={uid},gid={gid}",
                    l.tmp_size_bytes
                ),
            )])),
            ..Default::default()
        };
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "1".to_owned()),
            (LABEL_HOME.to_owned(), self.options.home_id.clone()),
            (LABEL_PID.to_owned(), std::process::id().to_string()),
            (LABEL_GROUP.to_owned(), group.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.options.image.clone()),
            user: Some(self.user.clone()),
            hostname: Some("nanoclaw".into()),
            working_dir: Some(WORKSPACE_IN_SANDBOX.into()),
            env: Some(SANDBOX_ENV.iter().map(|s| s.to_string()).collect()),
            entrypoint: Some(vec![INIT_PATH_IN_SANDBOX.into()]),
            cmd: Some(vec![crate::INIT_ARG.into(), "idle".into()]),
            network_disabled: Some(true),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        };
        // Unique per creation: a group's earlier container may still be on its way out.
        let nth = self
            .created
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!(
            "nanoclaw-{}-{group}-{}-{nth}",
            self.options.home_id,
            std::process::id()
        );
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| api_err("creating the container", e))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(api_err("starting the container", e));
        }
        Ok(created.id)
    }

    /// Wait for the removal of `workspace`'s abandoned container, if one is under way.
    async fn await_removal(&self, workspace: &Path) {
        let removal = self
            .removals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(workspace);
        if let Some(removal) = removal {
            let _ = removal.await;
        }
    }

    async fn run(&self, req: &ExecRequest) -> Result<crate::ExecOutput, SandboxError> {
        if req.stream.is_some() {
            return self.run_streamed(req).await;
        }
        let started = Instant::now();
        let turn = {
            let mut turns = self.exec_turns.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(turns.entry(req.workspace.clone()).or_default())
        };
        let _one_exec_at_a_time = turn.lock().await;
        self.await_removal(&req.workspace).await;
        let container = self.container_for(req).await?;
        let spec = InitSpec {
            program: req.program.clone(),
            limits: req.limits,
            landlock: self.options.landlock,
            // The container's memory cgroup holds every exec.
            rlimit_fallback: false,
            env: req.command_env(),
        };
        let exec = CreateExecOptions {
            cmd: Some(init_argv(&spec)?),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            user: Some(self.user.clone()),
            working_dir: Some(WORKSPACE_IN_SANDBOX.to_owned()),
            env: Some(SANDBOX_ENV.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(&container, exec)
            .await
            .map_err(|e| api_err("creating the exec", e))?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| api_err("starting the exec", e))?
        else {
            return Err(SandboxError::Setup(
                "the engine did not attach to the exec".into(),
            ));
        };
        let mut abandoned = RemoveUnlessFinished {
            docker: self.docker.clone(),
            running: Arc::clone(&self.running),
            removals: Arc::clone(&self.removals),
            workspace: req.workspace.clone(),
            container: container.clone(),
            armed: true,
        };
        let stdin = req.stdin.clone();
        let feed = tokio::spawn(async move {
            let _ = input.write_all(&stdin).await;
            let _ = input.shutdown().await;
        });
        let mut decoder = FrameDecoder::new(req.limits.output_bytes);
        let mut engine_err = Captured::default();
        let read = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => decoder.feed(&message),
                    Ok(LogOutput::StdErr { message }) => engine_err.push(&message, 16 * 1024),
                    Ok(_) => {}
                    Err(e) => return Err(api_err("reading the exec's output", e)),
                }
            }
            Ok(())
        };
        let timed_out = match tokio::time::timeout(req.limits.wall_time + HOST_GRACE, read).await {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => {
                // The init did not end the command in time: the container goes, with everything
                // in it; the next command gets a fresh one.
                let mut map = self.running.lock().await;
                map.remove(&req.workspace);
                self.remove(&container).await;
                true
            }
        };
        feed.abort();
        abandoned.armed = false;
        let out = assemble(decoder.finish(), &engine_err, timed_out, started);
        if out.is_err() && !timed_out {
            // The init ended without its report (killed by the command, say): whatever the
            // command left running would outlive it in the container. The container goes too.
            let mut map = self.running.lock().await;
            map.remove(&req.workspace);
            self.remove(&container).await;
        }
        let mut out = out?;
        out.cgroup_limits = true;
        Ok(out)
    }
}

impl DockerBackend {
    /// A long-lived command with its stdio streamed (an MCP server): a container of its own,
    /// made like a group's (same mounts, limits, user, init), so it neither holds the group's
    /// one-exec-at-a-time turn nor shares a container a command's failure would remove. The
    /// container goes when the command ends or the caller drops the exec.
    async fn run_streamed(&self, req: &ExecRequest) -> Result<crate::ExecOutput, SandboxError> {
        let started = Instant::now();
        let ends = req
            .stream
            .as_ref()
            .and_then(crate::Stream::take)
            .ok_or_else(|| SandboxError::Setup("the stream was already taken".into()))?;
        let container = self.create(req).await?;
        self.streamed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container.clone());
        let _gone = RemoveOnDrop {
            docker: self.docker.clone(),
            container: container.clone(),
            streamed: Arc::clone(&self.streamed),
        };
        let spec = InitSpec {
            program: req.program.clone(),
            limits: req.limits,
            landlock: self.options.landlock,
            rlimit_fallback: false,
            env: req.command_env(),
        };
        let exec = CreateExecOptions {
            cmd: Some(init_argv(&spec)?),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            user: Some(self.user.clone()),
            working_dir: Some(WORKSPACE_IN_SANDBOX.to_owned()),
            env: Some(SANDBOX_ENV.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(&container, exec)
            .await
            .map_err(|e| api_err("creating the exec", e))?;
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| api_err("starting the exec", e))?
        else {
            return Err(SandboxError::Setup(
                "the engine did not attach to the exec".into(),
            ));
        };
        let crate::StreamEnds {
            mut stdin,
            mut stdout,
        } = ends;
        let feed = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            let _ = input.shutdown().await;
        });
        let mut decoder = FrameDecoder::new(crate::STREAM_STDERR_CAP);
        decoder.streamed = Some(Vec::new());
        let mut engine_err = Captured::default();
        let read = async {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => {
                        decoder.feed(&message);
                        let chunk = decoder.streamed.as_mut().map(std::mem::take);
                        if let Some(chunk) = chunk.filter(|c| !c.is_empty())
                            && stdout.write_all(&chunk).await.is_err()
                        {
                            // The host stopped reading: its stdout is dropped from now on.
                            decoder.streamed = None;
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => engine_err.push(&message, 16 * 1024),
                    Ok(_) => {}
                    Err(e) => return Err(api_err("reading the exec's output", e)),
                }
            }
            Ok(())
        };
        let timed_out = match tokio::time::timeout(req.limits.wall_time + HOST_GRACE, read).await {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => true,
        };
        feed.abort();
        let mut out = assemble(decoder.finish(), &engine_err, timed_out, started)?;
        out.cgroup_limits = true;
        Ok(out)
    }
}

/// Removes a streamed command's container when its exec ends or is dropped.
struct RemoveOnDrop {
    docker: Docker,
    container: String,
    streamed: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.streamed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.container);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (docker, id) = (self.docker.clone(), self.container.clone());
        runtime.spawn(async move {
            let opts = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = docker.remove_container(&id, Some(opts)).await;
        });
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn exec<'a>(&'a self, req: &'a ExecRequest) -> ExecFuture<'a> {
        Box::pin(self.run(req))
    }

    fn settle<'a>(
        &'a self,
        workspace: &'a Path,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.await_removal(workspace))
    }

    fn shutdown<'a>(
        &'a self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.remove_all())
    }
}

impl Limits {
    /// The limits a container is created with; the rest apply per command.
    fn without_per_command(&self) -> (u64, u32, u32, u64) {
        (
            self.memory_bytes,
            self.max_processes,
            self.cpu_millis,
            self.tmp_size_bytes,
        )
    }
}

/// A short stable id for a data dir (FNV-1a of its path), for container labels and names.
pub fn home_id(data_dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}
