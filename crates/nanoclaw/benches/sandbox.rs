//! The cost of one sandboxed command: `true` through the bwrap backend and the full init
//! (no_new_privs, rlimits, Landlock, seccomp, relay check, tree reaping, framed report), with
//! the group's cgroup where the host allows. Prints its figures; asserts nothing.
//!
//! Then the Docker backend: `true` by exec in a warm container, and the first command after the
//! container was created (when the engine and the test image are available).
//!
//! Run with `cargo bench -p nanoclaw --bench sandbox`.

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use nanoclaw_sandbox::bwrap::{BwrapBackend, BwrapOptions};
use nanoclaw_sandbox::docker::{DockerBackend, DockerOptions};
use nanoclaw_sandbox::{Backend, Enforcement, ExecRequest, ExitState, Limits, Program};

const RUNS: usize = 300;
const DOCKER_RUNS: usize = 100;
const DOCKER_COLD_RUNS: usize = 10;
const WARMUP: usize = 10;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let workspace = tempfile::tempdir().expect("tempdir");
        let init = Path::new(env!("CARGO_BIN_EXE_nanoclaw"));
        for (label, cgroups) in [
            ("with cgroups where available", true),
            ("rlimits only", false),
        ] {
            let options = BwrapOptions {
                landlock: Enforcement::BestEffort,
                cgroups: Enforcement::BestEffort,
            };
            let backend = BwrapBackend::new(init, options).expect("bwrap backend");
            let backend = if cgroups {
                backend
            } else {
                backend.without_cgroups()
            };
            let req = ExecRequest {
                workspace: workspace.path().to_path_buf(),
                program: Program::Command(vec!["true".into()]),
                stdin: Vec::new(),
                limits: Limits::DEFAULT,
                proxy_socket: None,
                trust_dir: None,
                env: Vec::new(),
                stream: None,
            };
            let mut samples = Vec::with_capacity(RUNS);
            let mut used_cgroups = false;
            for i in 0..RUNS + WARMUP {
                let t = Instant::now();
                let out = backend.exec(&req).await.expect("exec");
                let elapsed = t.elapsed();
                assert_eq!(out.state, ExitState::Exited(0));
                used_cgroups = out.cgroup_limits;
                if i >= WARMUP {
                    samples.push(elapsed);
                }
            }
            backend.shutdown().await;
            report(
                &format!(
                    "bwrap `true` through the full init, {label} (cgroups used: {used_cgroups})"
                ),
                &mut samples,
            );
        }
        match support::docker_image() {
            Ok(()) => docker(init, workspace.path()).await,
            Err(why) => println!("docker: skipped: {why}"),
        }
    });
}

async fn docker(init: &Path, workspace: &Path) {
    let options = DockerOptions {
        socket: nanoclaw_sandbox::docker::default_socket(),
        image: support::DOCKER_TEST_IMAGE.into(),
        idle_timeout: Duration::from_secs(600),
        landlock: Enforcement::BestEffort,
        home_id: "bench".into(),
    };
    let req = ExecRequest {
        workspace: workspace.to_path_buf(),
        program: Program::Command(vec!["true".into()]),
        stdin: Vec::new(),
        limits: Limits::DEFAULT,
        proxy_socket: None,
        trust_dir: None,
        env: Vec::new(),
        stream: None,
    };
    // Cold: a new backend (so a new container) each time; the first command creates it.
    let mut cold = Vec::with_capacity(DOCKER_COLD_RUNS);
    for _ in 0..DOCKER_COLD_RUNS {
        let backend = DockerBackend::connect(init, options.clone())
            .await
            .expect("docker backend");
        let t = Instant::now();
        let out = backend.exec(&req).await.expect("exec");
        cold.push(t.elapsed());
        assert_eq!(out.state, ExitState::Exited(0));
        backend.shutdown().await;
    }
    report(
        "docker: first command after container creation (create + start + exec)",
        &mut cold,
    );
    let backend = DockerBackend::connect(init, options)
        .await
        .expect("docker backend");
    let mut warm = Vec::with_capacity(DOCKER_RUNS);
    for i in 0..DOCKER_RUNS + WARMUP {
        let t = Instant::now();
        let out = backend.exec(&req).await.expect("exec");
        let elapsed = t.elapsed();
        assert_eq!(out.state, ExitState::Exited(0));
        if i >= WARMUP {
            warm.push(elapsed);
        }
    }
    backend.shutdown().await;
    report(
        "docker: `true` by exec in a warm container, through the full init",
        &mut warm,
    );
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: f64| {
        samples[((samples.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
    };
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms min={:.2} ms",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.0)
    );
}
