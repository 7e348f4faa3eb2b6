//! Picking the sandbox backend the config names: `bwrap`, `docker`, or `auto` (bwrap if it
//! works, else Docker). There is no third choice: when none works the caller gets the reasons,
//! and tools refuse to run.

use std::path::Path;
use std::sync::Arc;

use nanoclaw_core::GroupId;
use nanoclaw_sandbox::Backend;
use nanoclaw_sandbox::bwrap::{BwrapBackend, BwrapOptions};
use nanoclaw_sandbox::docker::{DockerBackend, DockerOptions};

use crate::config::home::Home;
use crate::config::{BackendChoice, Config};

/// The configured backend, after a self-test when `self_test` is set (long-lived processes);
/// one-shot commands skip it: their first command reports the same failure.
pub async fn choose(
    home: &Home,
    config: &Config,
    self_test: bool,
) -> Result<Arc<dyn Backend>, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the nanoclaw binary: {e}"))?;
    match config.backend {
        BackendChoice::Bwrap => bwrap(home, config, &exe, self_test).await,
        BackendChoice::Docker => docker(home, config, &exe, self_test).await,
        BackendChoice::Auto => match bwrap(home, config, &exe, self_test).await {
            Ok(b) => Ok(b),
            Err(bw) => docker(home, config, &exe, self_test)
                .await
                .map_err(|d| format!("no sandbox backend works. bwrap: {bw}. docker: {d}")),
        },
    }
}

async fn bwrap(
    home: &Home,
    config: &Config,
    exe: &Path,
    self_test: bool,
) -> Result<Arc<dyn Backend>, String> {
    let options = BwrapOptions {
        landlock: config.landlock,
        cgroups: config.cgroups,
    };
    let backend = BwrapBackend::new(exe, options).map_err(|e| e.to_string())?;
    if self_test {
        test(&backend, home)
            .await
            .map_err(|e| format!("bwrap self-test failed: {e}"))?;
    }
    Ok(Arc::new(backend))
}

async fn docker(
    home: &Home,
    config: &Config,
    exe: &Path,
    self_test: bool,
) -> Result<Arc<dyn Backend>, String> {
    let options = DockerOptions {
        socket: config.docker_socket.clone(),
        image: config.docker_image.clone(),
        idle_timeout: config.docker_idle_timeout,
        landlock: config.landlock,
        home_id: nanoclaw_sandbox::docker::home_id(&home.dir),
    };
    let backend = DockerBackend::connect(exe, options)
        .await
        .map_err(|e| e.to_string())?;
    if self_test && let Err(e) = test(&backend, home).await {
        backend.shutdown().await;
        return Err(format!("docker self-test failed: {e}"));
    }
    Ok(Arc::new(backend))
}

async fn test(backend: &dyn Backend, home: &Home) -> Result<(), String> {
    let probe = home
        .workspace(&GroupId::main())
        .map_err(|e| format!("{e:#}"))?;
    nanoclaw_sandbox::self_test(backend, probe)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
