//! `nanoclaw secret`: store, list and remove secrets (values are read from stdin, never printed).

use std::process::ExitCode;

use anyhow::Context;
use nanoclaw_core::GroupId;

use crate::cli::*;
use crate::config::home::Home;
use crate::store::secrets;

pub fn secret_command(home: &Home, command: SecretCommand) -> anyhow::Result<ExitCode> {
    use std::io::{IsTerminal, Read, Write};
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let _lock = secrets::Secrets::lock(home)?;
    let mut store = secrets::Secrets::load(home)?;
    let mut out = std::io::stdout().lock();
    match command {
        SecretCommand::Set {
            name,
            hosts,
            groups,
            header,
            format,
            in_query,
            in_body,
        } => {
            nanoclaw_core::secret::check_name(&name).map_err(|e| UsageError(e.to_string()))?;
            for h in &hosts {
                let rule = nanoclaw_egress::Rule::parse(h, None, false)
                    .map_err(|e| UsageError(format!("--host {h:?}: {e}")))?;
                if rule.ports != nanoclaw_egress::policy::DEFAULT_PORTS {
                    return Err(UsageError(format!(
                        "--host {h:?}: a secret is bound to host names, not ports"
                    ))
                    .into());
                }
            }
            if let Some(h) = &header {
                if h.parse::<hyper::header::HeaderName>().is_err() {
                    return Err(
                        UsageError(format!("--header {h:?} is not a valid header name")).into(),
                    );
                }
                // The proxy owns these: they frame the request or steer where it goes.
                const FRAMING: &[&str] = &[
                    "host",
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "keep-alive",
                    "upgrade",
                    "te",
                    "trailer",
                    "proxy-authorization",
                    "proxy-connection",
                ];
                if FRAMING.contains(&h.to_ascii_lowercase().as_str()) {
                    return Err(UsageError(format!(
                        "--header {h:?}: the proxy sets that header itself; a secret cannot"
                    ))
                    .into());
                }
            }
            if let Some(f) = &format {
                if f.matches("{}").count() != 1 {
                    return Err(UsageError(format!(
                        "--format {f:?} must hold {{}} exactly once, where the value goes"
                    ))
                    .into());
                }
                if f.chars().any(char::is_control) {
                    return Err(UsageError(format!(
                        "--format {f:?} holds a control character (a line break would end the header)"
                    ))
                    .into());
                }
            }
            // A group named twice is granted once.
            let groups: Vec<GroupId> = groups.into_iter().fold(Vec::new(), |mut kept, g| {
                if !kept.contains(&g) {
                    kept.push(g);
                }
                kept
            });
            let mut value = String::new();
            if std::io::stdin().is_terminal() {
                eprint!("value of {name} (one line, then Enter): ");
                std::io::stdin().read_line(&mut value)?;
            } else {
                std::io::stdin()
                    .read_to_string(&mut value)
                    .context("reading the value from stdin")?;
            }
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            if value.is_empty() {
                return Err(UsageError(format!("no value for {name} on stdin")).into());
            }
            let key = secrets::SecretsKey::locate(home, store.is_empty())?;
            // Opening the others first proves the key is the one they were sealed with.
            store.open_all(&key)?;
            let binding = secrets::Binding {
                hosts: hosts
                    .iter()
                    .map(|h| nanoclaw_egress::policy::normalize_host(h))
                    .collect(),
                groups,
                header,
                format,
                in_query,
                in_body,
            };
            store
                .set(&key, &name, value, binding)
                .map_err(|e| UsageError(format!("{e:#}")))?;
            store.save()?;
            writeln!(
                out,
                "stored {name}; restart `nanoclaw run` for it to take effect"
            )?;
        }
        SecretCommand::List => {
            if store.is_empty() {
                writeln!(out, "no secrets")?;
            }
            for s in store.list() {
                let groups: Vec<String> = s.groups.iter().map(|g| g.to_string()).collect();
                let mut extras = Vec::new();
                if let Some(h) = &s.header {
                    extras.push(format!(
                        "header {h}: {}",
                        s.format.as_deref().unwrap_or("{}")
                    ));
                }
                if s.in_query {
                    extras.push("in URLs".into());
                }
                if s.in_body {
                    extras.push("in bodies".into());
                }
                writeln!(
                    out,
                    "{}\n  hosts: {}\n  groups: {}\n  placeholder: {}{}",
                    s.name,
                    s.hosts.join(", "),
                    if groups.is_empty() {
                        "(none: used by nanoclaw itself only)".into()
                    } else {
                        groups.join(", ")
                    },
                    s.placeholder,
                    if extras.is_empty() {
                        String::new()
                    } else {
                        format!("\n  also: {}", extras.join("; "))
                    }
                )?;
            }
        }
        SecretCommand::Rm { name } => {
            if !store.remove(&name) {
                return Err(UsageError(format!("no secret named {name:?}")).into());
            }
            store.save()?;
            writeln!(out, "removed {name}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
