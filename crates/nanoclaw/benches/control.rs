//! The control plane, measured as a user meets it. Prints its figures; asserts nothing.
//!
//! - `nanoclaw ask` (one `shell` call, an instantly answering scripted model) in its own
//!   process and through a running daemon, alternating, in one run.
//! - `nanoclaw status` against a running daemon.
//! - Revocation: from `nanoclaw secret rm` returning to the daemon having put the file in force
//!   (the command returns only then), as the time the command takes.
//!
//! Run with `cargo bench -p nanoclaw --bench control`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{ScriptedModel, Step, TestHome, Wire};

const RUNS: usize = 60;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

fn report(name: &str, samples: &mut [Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms min={:.2} ms",
        samples.len(),
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.9)),
        ms(samples[0])
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn timed_ask(home: &TestHome, model: &ScriptedModel, group: &str) -> Duration {
    model.push(vec![
        Step::Tools(vec![("shell".into(), r#"{"command": "echo hi"}"#.into())]),
        Step::EchoToolResult,
    ]);
    let t = Instant::now();
    let out = home
        .command()
        .args(["ask", "--group", group, "say hi"])
        .output()
        .await
        .expect("run");
    let elapsed = t.elapsed();
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    elapsed
}

async fn run() {
    let model = ScriptedModel::start(Wire::Anthropic, Vec::new()).await;
    let port = support::free_port();
    // Two data dirs: one with a daemon, one without, measured in turns.
    let with = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let without = TestHome::new(Wire::Anthropic, &model.url, "");
    let mut daemon = with.daemon(port).await;
    let (mut in_process, mut through) = (Vec::new(), Vec::new());
    for i in 0..RUNS + 5 {
        let group = format!("bench-{i}");
        let a = timed_ask(&without, &model, &group).await;
        let b = timed_ask(&with, &model, &group).await;
        if i >= 5 {
            in_process.push(a);
            through.push(b);
        }
    }
    report("nanoclaw ask in its own process", &mut in_process);
    report("nanoclaw ask through the running daemon", &mut through);

    let mut status = Vec::new();
    for i in 0..RUNS + 5 {
        let t = Instant::now();
        let out = with.command().arg("status").output().await.expect("run");
        let elapsed = t.elapsed();
        assert!(out.status.success(), "{}", support::text(&out.stdout));
        if i >= 5 {
            status.push(elapsed);
        }
    }
    report("nanoclaw status (daemon running)", &mut status);

    let mut revoke = Vec::new();
    for i in 0..20 {
        let name = format!("BENCH_{i}");
        let out = with
            .set_secret(
                &name,
                "bench-value-12345678",
                &["--host", "example.com", "--group", "main"],
            )
            .await;
        assert!(out.status.success(), "{}", support::text(&out.stderr));
        let t = Instant::now();
        let out = with.run(&["secret", "rm", &name]).await;
        revoke.push(t.elapsed());
        assert!(support::text(&out.stdout).contains("in force in the running daemon"));
    }
    report(
        "nanoclaw secret rm, in force in the daemon on return",
        &mut revoke,
    );
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
}
