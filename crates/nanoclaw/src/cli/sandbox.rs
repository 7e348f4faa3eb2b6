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
