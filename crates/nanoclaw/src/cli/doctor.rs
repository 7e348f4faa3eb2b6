//! `nanoclaw doctor`: check each part and say plainly what works, what does not, and what to do.
//!
//! The isolation report is measured inside a real sandbox (its `/proc/self/status` and network
//! devices), not inferred from the configuration. Exits 1 when anything required is missing.

use std::process::ExitCode;
use std::time::Duration;

use nanoclaw_core::GroupId;
use nanoclaw_sandbox::{Enforcement, ExecRequest, ExitState, LandlockStatus, Limits, Program};

use crate::config::home::Home;

pub async fn run(home: Home) -> anyhow::Result<ExitCode> {
    use std::fmt::Write as _;
    let config = crate::app::load_config(&home)?;
    // The report is written once at the end: a closed stdout must not panic mid-report.
    let mut report = String::new();
    macro_rules! println {
        ($($arg:tt)*) => {{ let _ = writeln!(report, $($arg)*); }};
    }
    println!("data dir: {}", home.dir.display());
    let mut healthy = true;
    println!(
        "daemon: {}",
        if crate::channels::control_client::daemon_running(&home).await {
            "running (`nanoclaw status` shows what it is doing)"
        } else {
            "not running (start it with `nanoclaw run`)"
        }
    );

    // 1. Sandbox.
    match crate::sandbox::backend::choose(&home, &config, true).await {
        Ok(backend) => {
            println!("sandbox: {} works", backend.name());
            let probed = probe_sandbox(backend.as_ref(), &home, &config).await;
            backend.shutdown().await;
            match probed {
                Ok(features) => {
                    for f in features {
                        let state = match (f.active, f.required) {
                            (true, _) => "active".to_owned(),
                            (false, true) => "MISSING (required)".to_owned(),
                            (false, false) => "missing (best effort)".to_owned(),
                        };
                        println!(
                            "  {:<36} {state}{}",
                            f.name,
                            f.detail.map(|d| format!(" — {d}")).unwrap_or_default()
                        );
                        healthy &= f.active || !f.required;
                    }
                }
                Err(e) => {
                    healthy = false;
                    println!("  probe failed: {e}");
                }
            }
        }
        Err(reason) => {
            healthy = false;
            println!("sandbox: NONE WORKS: {reason}\n  no tool can run until this is fixed");
        }
    }

    // 2. Secrets, then the model (whose key may be one of them).
    let secrets = match crate::app::open_secrets(&home) {
        Ok(secrets) => {
            println!(
                "secrets: {} stored, all open with the key from {}",
                secrets.len(),
                if std::env::var_os(crate::store::secrets::KEY_ENV).is_some() {
                    format!("${}", crate::store::secrets::KEY_ENV)
                } else {
                    crate::store::secrets::key_file_path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|e| e.to_string())
                }
            );
            secrets
        }
        Err(e) => {
            healthy = false;
            println!("secrets: CANNOT OPEN: {e:#}");
            Vec::new()
        }
    };
    let m = &config.model;
    match crate::app::model_client(&home, &config, &secrets) {
        Ok(client) => {
            let checked = client.check().await;
            println!(
                "model: {:?} {} at {}: {}",
                m.provider,
                m.name,
                without_credentials(&m.base_url),
                checked.describe()
            );
            healthy &= matches!(checked, crate::model::ModelCheck::Reachable(_));
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

    // 4. Channels: each configured one's secret is stored (and the policy parses).
    let stored: Vec<&str> = secrets.iter().map(|s| s.meta.name.as_str()).collect();
    let channels = [
        (
            "telegram",
            config.telegram.as_ref().map(|t| t.token_secret.as_str()),
        ),
        (
            "email",
            config.email.as_ref().map(|e| e.password_secret.as_str()),
        ),
        (
            "webhook",
            config.webhook.as_ref().map(|w| w.key_secret.as_str()),
        ),
    ];
    for (name, secret) in channels {
        match secret {
            None => println!("channel {name}: not configured"),
            Some(s) if stored.contains(&s) => {
                let checked = check_channel(&home, &config, name, &secrets).await;
                healthy &= checked.is_ok();
                println!(
                    "channel {name}: secret {s} stored; {}",
                    match &checked {
                        Ok(s) | Err(s) => s,
                    }
                );
            }
            Some(s) => {
                healthy = false;
                println!(
                    "channel {name}: SECRET {s} IS NOT STORED: nanoclaw secret set {s} --host <its host>"
                );
            }
        }
    }
    match crate::config::policy_file::load(&home, &crate::app::vocabulary_for(&config)) {
        Ok(p) => println!("policy: {} approver(s)", p.approvers().len()),
        Err(e) => {
            healthy = false;
            println!("policy: INVALID: {e:#}");
        }
    }

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

/// Try a configured channel for real: Telegram's `getMe`, an IMAP login. The webhook has
/// nothing to reach (its callback is only called with a reply).
async fn check_channel(
    home: &Home,
    config: &crate::config::Config,
    name: &str,
    secrets: &[crate::store::secrets::OpenSecret],
) -> Result<String, String> {
    let value = |key: &str| {
        secrets
            .iter()
            .find(|s| s.meta.name == key)
            .map(|s| s.value.clone())
            .unwrap_or_default()
    };
    match name {
        "telegram" => match &config.telegram {
            Some(t) => crate::channels::telegram::Telegram::check(t, &value(&t.token_secret)).await,
            None => Ok("not configured".into()),
        },
        "email" => match &config.email {
            Some(e) => {
                let store =
                    crate::store::Store::open(&home.db_path()).map_err(|e| e.to_string())?;
                crate::channels::email::Email::new(
                    e.clone(),
                    value(&e.password_secret),
                    std::sync::Arc::new(store),
                )
                .check()
                .await
            }
            None => Ok("not configured".into()),
        },
        _ => Ok("nothing to reach until a reply is sent".into()),
    }
}

/// Any HTTP answer means the server is there; returns what went wrong otherwise.
/// A URL as it may be printed: user and password, if it carries them, replaced.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// One isolation feature as measured.
struct Feature {
    name: &'static str,
    active: bool,
    required: bool,
    detail: Option<String>,
}

/// What the probe command prints, section by section.
const PROBE_SCRIPT: &str = "cat /proc/self/status; echo ---; cat /proc/net/dev; echo ---; ls /proc; \
echo ---; (cat /proc/$PPID/environ >/dev/null 2>&1 && echo INIT-OPEN || echo INIT-CLOSED); \
(f=/tmp/.nanoclaw-probe; : > $f && { chmod 4755 $f 2>/dev/null && echo SUID-ALLOWED || echo SUID-REFUSED; rm -f $f; }); \
: > /workspace/.nanoclaw-uid-probe; \
echo ---; (exec 3<>/dev/tcp/127.0.0.1/3128 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && head -c 12 <&3) 2>&1";

/// Run a probe in a real sandbox, with a throwaway proxy socket to test the relay, and read
/// what isolation is actually in force.
async fn probe_sandbox(
    backend: &dyn nanoclaw_sandbox::Backend,
    home: &Home,
    config: &crate::config::Config,
) -> anyhow::Result<Vec<Feature>> {
    let socket = std::env::temp_dir().join(format!("nanoclaw-doctor-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    // The relay hands each connection over as a descriptor, as it does to the real proxy.
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((conn, _)) = listener.accept().await {
            if let Ok(nanoclaw_egress::handoff::Client::Tcp(mut tcp)) =
                nanoclaw_egress::handoff::receive(conn).await
            {
                let mut buf = [0u8; 256];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            }
        }
    });
    let probe = ExecRequest {
        workspace: home.workspace(&GroupId::main())?,
        program: Program::Command(vec!["/bin/bash".into(), "-c".into(), PROBE_SCRIPT.into()]),
        stdin: Vec::new(),
        limits: Limits {
            wall_time: Duration::from_secs(10),
            ..config.limits
        },
        proxy_socket: Some(socket.clone()),
        trust_dir: None,
        env: Vec::new(),
        stream: None,
    };
    let result = backend.exec(&probe).await;
    server.abort();
    let _ = std::fs::remove_file(&socket);
    let out = result?;
    if out.state != ExitState::Exited(0) {
        anyhow::bail!(
            "the probe ended with {}: {}",
            out.state,
            out.stderr.text_lossy().trim()
        );
    }
    let text = out.stdout.text_lossy();
    let mut features = isolation_features(&text);
    // The file the probe made in the workspace tells which host uid its commands run as.
    let made = home
        .workspace(&GroupId::main())?
        .join(".nanoclaw-uid-probe");
    let host_uid = std::fs::symlink_metadata(&made).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let _ = std::fs::remove_file(&made);
    features.push(Feature {
        name: "commands run as a non-root host uid",
        active: host_uid.is_some_and(|uid| uid != 0),
        required: true,
        detail: Some(match host_uid {
            Some(uid) if uid == nanoclaw_sandbox::unprivileged::SANDBOX_HOST_UID => {
                format!("host uid {uid}, dedicated to sandboxes (the daemon is root)")
            }
            Some(uid) => format!("host uid {uid}"),
            None => "the probe's file did not appear in the workspace".into(),
        }),
    });
    let h = out.hardening;
    let landlock = h.map(|h| h.landlock);
    features.push(Feature {
        name: "seccomp filter",
        active: h.is_some_and(|h| h.seccomp) && text.contains("Seccomp:\t2"),
        required: true,
        detail: Some(format!(
            "{} system calls denied",
            nanoclaw_sandbox::SECCOMP_DENIED.len()
        )),
    });
    features.push(Feature {
        name: "Landlock (writes: /workspace, /tmp)",
        active: landlock == Some(LandlockStatus::FullyEnforced),
        required: config.landlock == Enforcement::Required,
        detail: h.map(|h| format!("{:?}, kernel ABI {}", h.landlock, h.landlock_abi)),
    });
    features.push(Feature {
        name: "cgroup limits (memory, pids, cpu)",
        active: out.cgroup_limits,
        required: config.cgroups == Enforcement::Required,
        detail: if !out.cgroup_limits {
            let why = nanoclaw_sandbox::cgroup::CgroupRoot::detect()
                .err()
                .unwrap_or_default();
            Some(format!(
                "rlimits only (RLIMIT_AS and RLIMIT_NPROC stand in): {why}"
            ))
        } else if !out.cgroup_unenforced.is_empty() {
            Some(format!(
                "not enforced: {} (this host's cgroups offer no such control)",
                out.cgroup_unenforced.join(", ")
            ))
        } else {
            None
        },
    });
    features.push(Feature {
        name: "init out of the command's reach",
        active: text.contains("INIT-CLOSED")
            && h.is_some_and(|h| h.command_scope == LandlockStatus::FullyEnforced),
        required: false,
        detail: h.map(|h| {
            format!(
                "/proc/<init> {}; signal scope {:?}",
                if text.contains("INIT-CLOSED") {
                    "closed"
                } else {
                    "OPEN"
                },
                h.command_scope
            )
        }),
    });
    features.push(Feature {
        name: "no setuid files or device nodes",
        active: text.contains("SUID-REFUSED"),
        required: true,
        detail: None,
    });
    let relay_ok = text
        .rsplit("---")
        .next()
        .is_some_and(|s| s.contains("HTTP/1.1 204"));
    features.push(Feature {
        name: "proxy relay (127.0.0.1:3128)",
        active: h.is_some_and(|h| h.proxy_relay) && relay_ok,
        required: true,
        detail: None,
    });
    Ok(features)
}

/// Read the isolation in force from a sandboxed process's status, network devices and view of
/// `/proc`.
fn isolation_features(probe: &str) -> Vec<Feature> {
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
        .trim()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    let uid = field("Uid:");
    let cap_eff = field("CapEff:");
    let feature = |name, active| Feature {
        name,
        active,
        required: true,
        detail: None,
    };
    vec![
        feature(
            "capabilities dropped",
            !cap_eff.is_empty() && cap_eff.chars().all(|c| c == '0'),
        ),
        feature("no_new_privs", field("NoNewPrivs:") == "1"),
        feature("unprivileged uid", !uid.is_empty() && !uid.starts_with('0')),
        feature(
            "network namespace (loopback only)",
            !devices.is_empty() && devices.iter().all(|d| *d == "lo"),
        ),
        feature("pid namespace", (1..=16).contains(&visible_pids)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_printed_without_credentials() {
        assert_eq!(
            without_credentials("http://user:pw@127.0.0.1:8080/v1"),
            "http://***@127.0.0.1:8080/v1"
        );
        assert_eq!(
            without_credentials("https://api.anthropic.com"),
            "https://api.anthropic.com"
        );
    }

    #[test]
    fn reads_features_from_a_status_dump() {
        let probe = "Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n---\nInter-|\n face |\n    lo: 0 0\n---\n1\n2\n5\nself\n";
        assert!(isolation_features(probe).iter().all(|f| f.active));
        let host = format!(
            "Uid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\nNoNewPrivs:\t0\n---\nInter-|\n face |\n    lo: 0\n  eth0: 1\n---\n{}",
            (1..200).map(|n| format!("{n}\n")).collect::<String>()
        );
        assert!(isolation_features(&host).iter().all(|f| !f.active));
    }
}
