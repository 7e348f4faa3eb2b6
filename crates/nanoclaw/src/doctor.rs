//! `nanoclaw doctor`: check each part and say plainly what works, what does not, and what to do.
//!
//! The isolation report is measured inside a real sandbox (its `/proc/self/status` and network
//! devices), not inferred from the configuration. Exits 1 when anything required is missing.

use std::process::ExitCode;
use std::time::Duration;

use nanoclaw_core::GroupId;
use nanoclaw_sandbox::{ExecRequest, ExitState, Limits, Program};

use crate::home::Home;

/// How long doctor waits for the model server to answer at all.
const MODEL_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(home: Home) -> anyhow::Result<ExitCode> {
    use std::fmt::Write as _;
    let config = crate::load_config(&home)?;
    // The report is written once at the end: a closed stdout must not panic mid-report.
    let mut report = String::new();
    macro_rules! println {
        ($($arg:tt)*) => {{ let _ = writeln!(report, $($arg)*); }};
    }
    println!("data dir: {}", home.dir.display());
    let mut healthy = true;

    // 1. Sandbox.
    match crate::sandbox_backend(&home, &config, true).await {
        Ok(backend) => {
            println!("sandbox: {} works", backend.name());
            let probe = ExecRequest {
                workspace: home.workspace(&GroupId::main())?,
                program: Program::Command(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "cat /proc/self/status; echo ---; cat /proc/net/dev; echo ---; ls /proc".into(),
                ]),
                stdin: Vec::new(),
                limits: Limits {
                    wall_time: Duration::from_secs(10),
                    output_bytes: 64 * 1024,
                },
            };
            match backend.exec(&probe).await {
                Ok(out) if out.state == ExitState::Exited(0) => {
                    for (feature, active) in isolation_features(&out.stdout.text_lossy()) {
                        println!(
                            "  {feature:<34} {}",
                            if active { "active" } else { "MISSING" }
                        );
                        healthy &= active;
                    }
                }
                Ok(out) => {
                    healthy = false;
                    println!(
                        "  probe failed ({}): {}",
                        out.state,
                        out.stderr.text_lossy().trim()
                    );
                }
                Err(e) => {
                    healthy = false;
                    println!("  probe failed: {e}");
                }
            }
            for later in [
                "seccomp filter",
                "Landlock",
                "egress proxy relay",
                "cgroup limits",
            ] {
                println!("  {later:<34} not in this version");
            }
        }
        Err(reason) => {
            healthy = false;
            println!("sandbox: NONE WORKS: {reason}\n  no tool can run until this is fixed");
        }
    }

    // 2. Model.
    let m = &config.model;
    match crate::model_client(&home, &config) {
        Ok(_) => {
            let reachable = probe_model(&m.base_url).await;
            println!(
                "model: {:?} {} at {}: {}",
                m.provider,
                m.name,
                m.base_url,
                reachable.as_deref().unwrap_or("reachable")
            );
            healthy &= reachable.is_none();
        }
        Err(hint) => {
            healthy = false;
            println!("model: NOT CONFIGURED: {hint}");
        }
    }

    // 3. The local API.
    let token = home.token_path();
    println!(
        "api: http://{} (token {})",
        config.api_listen,
        if token.is_file() {
            "present"
        } else {
            "missing; `nanoclaw init` creates it"
        }
    );
    healthy &= token.is_file();

    println!(
        "{}",
        if healthy {
            "all checks passed"
        } else {
            "some checks failed (see above)"
        }
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes());
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Any HTTP answer means the server is there; returns what went wrong otherwise.
async fn probe_model(base_url: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(MODEL_PROBE_TIMEOUT)
        .build()
        .ok()?;
    match client.get(base_url).send().await {
        Ok(_) => None,
        Err(e) => Some(format!("UNREACHABLE ({e})")),
    }
}

/// Read the isolation actually in force from a sandboxed process's status and network devices.
fn isolation_features(probe: &str) -> Vec<(&'static str, bool)> {
    let mut parts = probe.split("---\n");
    let (status, netdev, procs) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    // In a fresh PID namespace only the sandbox's own few processes are visible.
    let visible_pids = procs
        .lines()
        .filter(|l| l.trim().parse::<u32>().is_ok())
        .count();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let devices: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    let uid = field("Uid:");
    vec![
        (
            "capabilities dropped",
            field("CapEff:").chars().all(|c| c == '0') && !field("CapEff:").is_empty(),
        ),
        ("no_new_privs", field("NoNewPrivs:") == "1"),
        ("unprivileged uid", !uid.is_empty() && !uid.starts_with("0")),
        (
            "network namespace (loopback only)",
            !devices.is_empty() && devices.iter().all(|d| *d == "lo"),
        ),
        ("pid namespace", (1..=8).contains(&visible_pids)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_features_from_a_status_dump() {
        let probe = "Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n---\nInter-|\n face |\n    lo: 0 0\n---\n1\n2\n5\nself\n";
        assert!(isolation_features(probe).iter().all(|(_, on)| *on));
        let host = format!(
            "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\nNoNewPrivs:\t0\n---\nInter-|\n face |\n    lo: 0\n  eth0: 1\n---\n{}",
            (1..200).map(|n| format!("{n}\n")).collect::<String>()
        );
        let host = host.as_str();
        assert!(isolation_features(host).iter().all(|(_, on)| !*on));
    }
}
