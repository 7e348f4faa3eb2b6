//! `nanoclaw sandbox exec`: one command in a group's sandbox, exactly as the shell tool runs it.

use std::process::ExitCode;
use std::sync::Arc;

use nanoclaw_core::GroupId;

use crate::app::{load_config, open_secrets};
use crate::config::home::Home;
use crate::sandbox::{backend, egress};
use nanoclaw_sandbox::ExitState;

pub async fn sandbox_exec(
    home: Home,
    group: GroupId,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    // With a daemon running, its proxy serves the group: run the command through it.
    if crate::channels::control_client::daemon_running(&home).await {
        return through_daemon(&home, &group, command).await;
    }
    let config = load_config(&home)?;
    let backend = backend::choose(&home, &config, false)
        .await
        .map_err(anyhow::Error::msg)?;
    let secrets = open_secrets(&home)?;
    let net =
        egress::Egress::new(&home, Arc::new(config.clone()), &secrets, None)?.for_group(&group)?;
    // The owner's own command, not a turn's: held to the allowlist alone.
    let call = net.open_call("sandbox exec".into(), None);
    let req = nanoclaw_sandbox::ExecRequest {
        workspace: home.workspace(&group)?,
        program: nanoclaw_sandbox::Program::Command(command),
        stdin: Vec::new(),
        limits: config.limits_for(&group),
        proxy_socket: Some(net.proxy_socket.clone()),
        trust_dir: Some(net.trust_dir.clone()),
        env: net.env.clone(),
        stream: None,
    };
    // As the shell tool: a command past its egress budget is stopped.
    let result = call.bounded(backend.exec(&req)).await;
    drop(call);
    backend.shutdown().await;
    let out = result??;
    std::io::stdout().write_all(&out.stdout.bytes)?;
    std::io::stderr().write_all(&out.stderr.bytes)?;
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if stream.dropped > 0 {
            eprintln!(
                "nanoclaw: [truncated: {} more bytes of {name} were dropped]",
                stream.dropped
            );
        }
    }
    if let Some(hit) = out.limit {
        eprintln!("nanoclaw: limit hit: {}", hit.describe(&req.limits));
    }
    let code = match out.state {
        ExitState::Exited(c) => c,
        ExitState::Signaled(s) => 128 + s,
        ExitState::TimedOut => 124,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

async fn through_daemon(
    home: &Home,
    group: &GroupId,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    use nanoclaw_core::secret::base64_decode;
    use std::io::Write;
    let out = crate::channels::control_client::sandbox_exec(home, group, command).await?;
    let bytes = |key: &str| -> Vec<u8> {
        out[key]
            .as_str()
            .and_then(|s| base64_decode(s.as_bytes()))
            .unwrap_or_default()
    };
    std::io::stdout().write_all(&bytes("stdout"))?;
    std::io::stderr().write_all(&bytes("stderr"))?;
    for name in ["stdout", "stderr"] {
        let dropped = out[format!("{name}_dropped")].as_u64().unwrap_or(0);
        if dropped > 0 {
            eprintln!("nanoclaw: [truncated: {dropped} more bytes of {name} were dropped]");
        }
    }
    if let Some(hit) = out["limit"].as_str() {
        eprintln!("nanoclaw: limit hit: {hit}");
    }
    let code = out["code"].as_i64().unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
