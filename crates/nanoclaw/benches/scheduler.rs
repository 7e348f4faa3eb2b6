//! The scheduler with 10,000 tasks registered: the idle daemon's CPU use over 10 s, and how
//! late due tasks start (the slot's time to the run's start, as the run log records it).
//! Prints both; asserts nothing.
//!
//! Run with `cargo bench -p nanoclaw --bench scheduler`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::model_server::{ScriptedModel, Step};
use support::{TestHome, Wire, text};

const TASKS: i64 = 10_000;
const DUE_RUNS: usize = 5;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let steps = (0..DUE_RUNS).map(|i| Step::Text(format!("done {i}"))).collect();
        let model = ScriptedModel::start(Wire::Anthropic, steps).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let h = TestHome::new(
            Wire::Anthropic,
            &model.url,
            &format!("[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
        );
        // The schema, then 10,000 daily tasks due over the next day.
        let out = h.run(&["task", "list"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        {
            let mut c = rusqlite::Connection::open(h.path().join("nanoclaw.db")).expect("db");
            let tx = c.transaction().expect("tx");
            let now = now_ms();
            for i in 0..TASKS {
                tx.execute(
                    "INSERT INTO tasks (group_id, name, kind, spec, tz, prompt, isolated, post, catch_up, status, next_due, created_at)
                     VALUES ('main', ?1, 'every', '1d', 'UTC', 'daily', 0, 0, 1, 'active', ?2, ?3)",
                    rusqlite::params![format!("t{i}"), now + 600_000 + i * 8_000, now - 86_400_000 + 600_000 + i * 8_000],
                )
                .expect("insert");
            }
            tx.commit().expect("commit");
        }
        let mut c = h.command();
        c.arg("run").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut daemon = c.spawn().expect("daemon");
        let pid = daemon.id().expect("pid");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ticks_per_sec = 100.0; // USER_HZ on Linux
        let before = cpu_ticks(pid);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let used = (cpu_ticks(pid) - before) as f64 / ticks_per_sec;
        println!(
            "idle daemon with {TASKS} tasks: {:.3} s of CPU in 10 s ({:.2}% of one core)",
            used,
            used * 10.0
        );
        let mut lateness = Vec::new();
        for i in 0..DUE_RUNS {
            let due = now_ms() + 2_000;
            let at = {
                let secs = due.div_euclid(1000);
                let out = std::process::Command::new("date")
                    .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
                    .output()
                    .expect("date");
                text(&out.stdout).trim().to_owned()
            };
            let out = h
                .run(&["task", "add", "--name", &format!("due{i}"), "--at", &at, "--prompt", "now", "--silent"])
                .await;
            assert!(out.status.success(), "{}", text(&out.stderr));
            let id = TASKS + 1 + i as i64;
            let started = loop {
                let c = rusqlite::Connection::open(h.path().join("nanoclaw.db")).expect("db");
                let row: Option<(i64, i64)> = c
                    .query_row(
                        "SELECT slot, started_at FROM task_runs WHERE task_id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .ok();
                if let Some(r) = row {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            lateness.push(started.1 - started.0);
        }
        lateness.sort();
        println!(
            "due task start, {DUE_RUNS} one-shot tasks among {TASKS}: late by {:?} ms (median {} ms, worst {} ms)",
            lateness,
            lateness[lateness.len() / 2],
            lateness[lateness.len() - 1]
        );
        daemon.start_kill().expect("kill");
        let _ = daemon.wait().await;
    });
}
