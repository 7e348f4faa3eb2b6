//! Benchmarks of the whole binary, as a user meets it. Prints its figures; asserts nothing.
//!
//! - `nanoclaw --version`: process start to exit.
//! - `nanoclaw ask` for a turn with one `shell` call against an instantly answering scripted
//!   model: two model round trips, a bwrap sandbox for MEMORY.md and one for the command.
//! - Idle RSS of `nanoclaw run` with the HTTP API up.
//!
//! Run with `cargo bench -p nanoclaw --bench cli`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{ScriptedModel, Step, TestHome, Wire};

const VERSION_RUNS: usize = 300;
const ASK_RUNS: usize = 100;

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
    rt.block_on(async {
        version().await;
        ask().await;
        idle_rss().await;
    });
}

async fn version() {
    let mut samples = Vec::with_capacity(VERSION_RUNS);
    for _ in 0..VERSION_RUNS {
        let t = Instant::now();
        let out = std::process::Command::new(support::bin())
            .arg("--version")
            .output()
            .expect("run");
        samples.push(t.elapsed());
        assert!(out.status.success());
    }
    report("nanoclaw --version", &mut samples);
}

async fn ask() {
    let model = ScriptedModel::start(Wire::Anthropic, Vec::new()).await;
    let home = TestHome::new(Wire::Anthropic, &model.url, "");
    let mut samples = Vec::with_capacity(ASK_RUNS);
    for i in 0..ASK_RUNS + 5 {
        model.push(vec![
            Step::Tools(vec![("shell".into(), r#"{"command": "echo hi"}"#.into())]),
            Step::EchoToolResult,
        ]);
        let group = format!("bench-{i}");
        let t = Instant::now();
        let out = home
            .command()
            .args(["ask", "--group", &group, "say hi"])
            .output()
            .await
            .expect("run");
        let elapsed = t.elapsed();
        assert!(out.status.success(), "{}", support::text(&out.stderr));
        if i >= 5 {
            samples.push(elapsed); // the first few warm the page cache
        }
    }
    report("nanoclaw ask (one shell call, instant model)", &mut samples);
}

async fn idle_rss() {
    let model = ScriptedModel::start(Wire::Anthropic, Vec::new()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut child = home
        .command()
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "daemon did not come up");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?")
        .trim()
        .to_owned();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .trim()
        .to_owned();
    println!("nanoclaw run, idle with the HTTP API up: {rss} (peak {hwm})");
    let _ = child.start_kill();
    let _ = child.wait().await;
}
