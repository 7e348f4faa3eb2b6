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

/// The secret's value from stdin: one line from a terminal, which does not echo it (a value
/// pasted on screen is a value leaked to the scrollback and to anyone looking); all of a pipe.
fn read_value(name: &str) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
    let mut value = String::new();
    if std::io::stdin().is_terminal() {
        eprint!("value of {name} (one line, then Enter; not shown): ");
        value = hidden::read_line().context("reading the value from the terminal")?;
        eprintln!();
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
        Some(said) => format!(
            "in force in the running daemon now ({})",
            said.as_str().unwrap_or_default()
        ),
        None => "no daemon runs; it takes effect when one starts".into(),
    })
}

/// Reading a line from the terminal with its echo off.
mod hidden {
    use std::sync::OnceLock;

    /// The terminal's settings before echo was turned off, for the Ctrl-C handler.
    static SAVED: OnceLock<libc::termios> = OnceLock::new();

    /// Ctrl-C while the value is typed: the terminal gets its echo back before the process ends.
    extern "C" fn restore_and_exit(_: libc::c_int) {
        if let Some(saved) = SAVED.get() {
            // SAFETY: tcsetattr and _exit are async-signal-safe; `saved` is a plain struct
            // written once before this handler was installed.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
        // SAFETY: as above.
        unsafe { libc::_exit(130) };
    }

    pub fn read_line() -> std::io::Result<String> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and a valid pointer.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let saved = *SAVED.get_or_init(|| saved);
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
        // SAFETY: installing a handler that only restores the terminal and exits.
        unsafe {
            libc::signal(
                libc::SIGINT,
                restore_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
        // SAFETY: a valid fd and settings read from it.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut line = String::new();
        let read = std::io::stdin().read_line(&mut line);
        // SAFETY: as above; the default Ctrl-C is back once echo is.
        unsafe {
            libc::tcsetattr(fd, libc::TCSANOW, &saved);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
        read.map(|_| line)
    }
}
