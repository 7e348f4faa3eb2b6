//! MCP calls, measured. Prints its figures; asserts nothing.
//!
//! - A warm local server's trivial tool (the test suite's stdio server, `send_mail`), called
//!   through the whole path (parse, schema check, gate, durable decision, the server's proxy
//!   opened, the sandboxed server, the result redacted and recorded), as the `tool_result`
//!   event's own duration; against the same server called directly over stdio on the host.
//! - The memory of the idle warm server's sandbox: the server process and the init.
//!
//! Run with `cargo bench -p nanoclaw --bench mcp` (needs `scripts/mcp-servers.sh`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use support::{ScriptedModel, Step, TestHome, Wire};

const CALLS: usize = 60;
const SERVER: &str = include_str!("../tests/mcp_hostile.py");

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, samples: &mut [Duration]) -> Duration {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = percentile(samples, 0.5);
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms min={:.2} ms",
        samples.len(),
        ms(p50),
        ms(percentile(samples, 0.9)),
        ms(samples[0])
    );
    p50
}

/// The server on the host, over its stdio: `CALLS` round trips after a warm-up.
fn direct(script: &std::path::Path) -> Vec<Duration> {
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut input = child.stdin.take().unwrap();
    let mut output = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut rpc = |id: usize, method: &str, params: serde_json::Value| {
        let msg =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(input, "{msg}").unwrap();
        input.flush().unwrap();
        line.clear();
        output.read_line(&mut line).unwrap();
    };
    rpc(
        0,
        "initialize",
        serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}),
    );
    let mut samples = Vec::new();
    for i in 0..CALLS + 5 {
        let t = Instant::now();
        rpc(
            i + 1,
            "tools/call",
            serde_json::json!({"name": "send_mail", "arguments": {"to": "a@x", "body": "hi"}}),
        );
        if i >= 5 {
            samples.push(t.elapsed());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    samples
}

/// Resident memory of the processes whose command line holds `needle`, in KiB.
fn rss_of(needle: &str) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(needle) || cmdline.contains("cargo") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        found.push((cmdline.chars().take(60).collect(), kib));
    }
    found
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let model = ScriptedModel::start(Wire::Anthropic, Vec::new()).await;
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[mcp.servers.bench]\ncommand = [\"/usr/bin/python3\", \"/workspace/.bench-server.py\"]\n"
        ),
    );
    std::fs::create_dir_all(h.workspace("main")).unwrap();
    let script = h.workspace("main").join(".bench-server.py");
    std::fs::write(&script, SERVER).unwrap();
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"bench.*\"\naction = \"allow\"\n",
    )
    .unwrap();
    let mut daemon = h.daemon(port).await;
    // One turn of many calls: the server is warm after the first.
    let calls: Vec<(String, String)> = (0..CALLS + 5)
        .map(|_| {
            (
                "mcp__bench__send_mail".to_owned(),
                r#"{"to": "a@x", "body": "hi"}"#.to_owned(),
            )
        })
        .collect();
    model.push(vec![Step::Tools(calls), Step::Text("done".into())]);
    let out = h.run(&["ask", "send them"]).await;
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    let results = support::text(
        &h.run(&["audit", "show", "--kind", "tool_result"])
            .await
            .stdout,
    );
    let mut through: Vec<Duration> = results
        .lines()
        .filter_map(|l| {
            let json = &l[l.find('{')?..];
            let v: serde_json::Value = serde_json::from_str(json).ok()?;
            Some(Duration::from_secs_f64(v["millis"].as_f64()? / 1000.0))
        })
        .skip(5)
        .collect();
    assert!(
        through.len() >= CALLS,
        "too few timed calls in the audit log:\n{}\n{}",
        support::text(
            &h.run(&["audit", "show", "--kind", "mcp_server"])
                .await
                .stdout
        ),
        support::text(&out.stderr)
    );
    let mut direct = direct(&script);
    let a = report(
        "MCP call through nanoclaw (gate, audit, sandboxed server)",
        &mut through,
    );
    let b = report(
        "the same call, straight to the server over stdio",
        &mut direct,
    );
    println!(
        "nanoclaw's own overhead at p50: {:.2} ms",
        (a.as_secs_f64() - b.as_secs_f64()) * 1000.0
    );
    for (process, kib) in rss_of(".bench-server.py") {
        println!(
            "idle warm server sandbox: {process}: {:.1} MiB resident",
            kib as f64 / 1024.0
        );
    }
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
}
