//! CONNECT passthrough throughput: 1 GiB from an origin on the host's loopback, fetched by curl
//! directly on the host, and by curl inside a bwrap sandbox through the relay and the group's
//! egress proxy (a CONNECT tunnel). Prints both, their ratio, and the CPU time the whole
//! machine spent on each (from /proc/stat: the tunnel's extra hop is work for the cores the
//! client and the origin also need); asserts nothing. The two transfers alternate, so a slow
//! spell of the machine hits both; the ratio is given of the medians (the typical run) and of
//! the best runs.
//!
//! Run with `cargo bench -p nanoclaw --bench egress`.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{TestHome, Wire, text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BYTES: u64 = 1 << 30;
const RUNS: usize = 7;

/// An origin that answers every request with `BYTES` zero bytes.
async fn origin() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {BYTES}\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![0u8; 256 * 1024];
                let mut left = BYTES;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
        }
    });
    port
}

/// CPU seconds the whole machine has spent busy so far (all cores; /proc/stat counts in
/// hundredths of a second).
fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy / 100.0
}

/// curl's seconds for the transfer, from its `-w` output.
fn seconds(out: &str) -> f64 {
    out.split_whitespace()
        .last()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let port = origin().await;
        let url = format!("http://127.0.0.1:{port}/big");
        let h = TestHome::new(
            Wire::Anthropic,
            "http://127.0.0.1:9",
            &format!(
                "[sandbox]\nbackend = \"bwrap\"\n[limits]\ncommand_timeout_secs = 300\n[egress]\nallow = [{{ host = \"127.0.0.1:{port}\", private = true }}]\n"
            ),
        );
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        let (mut direct_cpu, mut proxied_cpu) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let before = busy_cpu_seconds();
            let out = tokio::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{time_total}", &url])
                .output()
                .await
                .expect("curl");
            direct.push(seconds(&text(&out.stdout)));
            let between = busy_cpu_seconds();
            direct_cpu.push(between - before);
            let script = format!("curl -s -p --noproxy '' -x \"$HTTP_PROXY\" -o /dev/null -w '%{{time_total}}' {url}");
            let out = h.run(&["sandbox", "exec", "--", "bash", "-c", &script]).await;
            proxied.push(seconds(&text(&out.stdout)));
            let after = busy_cpu_seconds();
            // The same sandbox with no transfer: its start and stop are not the tunnel's work.
            h.run(&["sandbox", "exec", "--", "true"]).await;
            proxied_cpu.push((after - between) - (busy_cpu_seconds() - after));
        }
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let median = |v: &[f64]| {
            let mut sorted = v.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        let mib_per_s = |seconds: f64| (BYTES as f64 / (1u64 << 20) as f64) / seconds;
        let (dm, pm) = (median(&direct), median(&proxied));
        let (db, pb) = (best(&direct), best(&proxied));
        println!("1 GiB direct over loopback (curl on the host): median {dm:.2} s, {:.0} MiB/s; best {db:.2} s (runs: {direct:.3?})", mib_per_s(dm));
        println!(
            "1 GiB through relay + CONNECT proxy (curl in a bwrap sandbox): median {pm:.2} s, {:.0} MiB/s; best {pb:.2} s (runs: {proxied:.3?})",
            mib_per_s(pm)
        );
        println!(
            "CONNECT passthrough throughput: {:.0}% of direct (medians), {:.0}% (best runs)",
            100.0 * dm / pm,
            100.0 * db / pb
        );
        let (dc, pc) = (median(&direct_cpu), median(&proxied_cpu));
        println!(
            "CPU seconds, all cores (medians): direct {dc:.2} (runs: {direct_cpu:.2?}); through the proxy {pc:.2}, less a bare sandbox's start (runs: {proxied_cpu:.2?})"
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        println!(
            "with {cores} cores busy all the time, the proxied transfer takes at least {:.2} s: at best {:.0}% of the median direct run",
            pc / cores,
            100.0 * dm / (pc / cores)
        );
    });
}
