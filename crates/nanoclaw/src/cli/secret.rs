//! `nanoclaw secret`: store, list and remove secrets (values are read from stdin, never printed).

use std::process::ExitCode;

use anyhow::Context;
use nanoclaw_core::GroupId;

use crate::cli::*;
use crate::config::home::Home;
use crate::store::secrets;

pub fn secret_command(home: &Home, command: SecretCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write;
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
            let binding = secrets::Binding {
                hosts: hosts
                    .iter()
                    .map(|h| nanoclaw_egress::policy::normalize_host(h))
                    .collect(),
                groups: Vec::new(),
                header,
                format,
                in_query,
                in_body,
            };
            // The binding is checked before the value is asked for.
            binding
                .check()
                .map_err(|e| UsageError(format!("{name}: {e}")))?;
            // A group named twice is granted once.
            let groups: Vec<GroupId> = groups.into_iter().fold(Vec::new(), |mut kept, g| {
                if !kept.contains(&g) {
                    kept.push(g);
                }
                kept
            });
            let value = read_value(&name)?;
            let binding = secrets::Binding { groups, ..binding };
            let key = secrets::SecretsKey::locate(home, store.is_empty())?;
            // Opening the others first proves the key is the one they were sealed with.
            store.open_all(&key)?;

            store
                .set(&key, &name, &value, binding)
                .map_err(|e| UsageError(format!("{e:#}")))?;
            store.save()?;
            writeln!(out, "stored {name}; {}", tell_daemon(home)?)?;
        }
        SecretCommand::Rotate { name } => {
            let Some(old) = store.list().iter().find(|s| s.name == name) else {
                return Err(UsageError(format!("no secret named {name:?}")).into());
            };
            // Same bindings, same placeholder (`set` keeps it): only the value changes.
            let binding = old.binding();
            let value = read_value(&name)?;
            let key = secrets::SecretsKey::locate(home, false)?;
            store.open_all(&key)?;
            store
                .set(&key, &name, &value, binding)
                .map_err(|e| UsageError(format!("{e:#}")))?;
            store.save()?;
            writeln!(out, "rotated {name}; {}", tell_daemon(home)?)?;
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
            writeln!(out, "removed {name}; {}", tell_daemon(home)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The secret's value from stdin: one line (a terminal is asked, and nothing typed is echoed
/// back by nanoclaw).
fn read_value(name: &str) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
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
        .unwrap_or(&value)
        .to_owned();
    if value.is_empty() {
        return Err(UsageError(format!("no value for {name} on stdin")).into());
    }
    Ok(value)
}

/// Put the changed file in force in a running daemon before returning: after `secret rm`
/// returns, no new request carries the secret and no connection that carried it is open.
fn tell_daemon(home: &Home) -> anyhow::Result<String> {
    let told = crate::app::runtime(false)?
        .block_on(crate::channels::control_client::reload_secrets(home))
        .context("the file is saved, but the running daemon could not take it")?;
    Ok(match told {
        Some(_) => "in force in the running daemon now".into(),
        None => "no daemon runs; it takes effect when one starts".into(),
    })
}
