//! `nanoclaw task`: add, list, pause, resume and remove scheduled tasks, and read their run log.

use std::process::ExitCode;

use anyhow::Context;

use crate::app::load_config;
use crate::audit;
use crate::cli::*;
use crate::config::Config;
use crate::config::home::Home;
use crate::display;
use crate::store::tasks;
use crate::store::{self, Store};

pub fn task_command(home: &Home, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(home)?;
    let store = Store::open(&home.db_path())
        .with_context(|| format!("opening {}", home.db_path().display()))?;
    let now = store::now();
    let time = |t: Option<i64>| t.map(audit::format_time).unwrap_or_else(|| "-".into());
    let usage = |e: tasks::TaskError| -> anyhow::Error {
        match e {
            tasks::TaskError::Store(e) => e.into(),
            other => UsageError(other.to_string()).into(),
        }
    };
    let changed = match command {
        TaskCommand::Add {
            group,
            name,
            prompt,
            cron,
            tz,
            every,
            at,
            isolated,
            silent,
            skip_missed,
        } => {
            if tz.is_some() && cron.is_none() {
                return Err(UsageError("--tz goes with --cron only".into()).into());
            }
            let when = match (cron, every, at) {
                (Some(expr), _, _) => tasks::When::Cron {
                    expr,
                    tz: tz.unwrap_or_else(|| "UTC".into()),
                },
                (_, Some(e), _) => tasks::When::Every(e),
                (_, _, Some(a)) => tasks::When::At(a),
                _ => return Err(UsageError("give one of --cron, --every, --at".into()).into()),
            };
            let new = tasks::NewTask {
                group: group.to_string(),
                name,
                when,
                prompt,
                isolated,
                post: !silent,
                catch_up: !skip_missed,
                // Added at this machine, by the owner.
                role: nanoclaw_core::policy::SenderRole::Owner,
                tainted: false,
            };
            let task = tasks::add(&store, &new, now).map_err(usage)?;
            println!(
                "task {} added; first run at {}",
                task.id,
                time(task.next_due)
            );
            true
        }
        TaskCommand::List { group } => {
            let list = tasks::list(&store, group.as_ref().map(|g| g.as_str()))?;
            if list.is_empty() {
                println!("no tasks");
            }
            for t in list {
                println!(
                    "{} {} [{}] group {}: {} {}{}; next {}{}{}\n  prompt: {}",
                    t.id,
                    display::one_line(&t.name),
                    t.status,
                    t.group,
                    t.kind,
                    t.spec,
                    if t.kind == "cron" {
                        format!(" ({})", t.tz)
                    } else {
                        String::new()
                    },
                    if t.status == "paused" {
                        "none while paused".to_owned()
                    } else {
                        time(t.next_due)
                    },
                    if t.isolated { "; isolated" } else { "" },
                    if t.post { "" } else { "; silent" },
                    display::one_line(&t.prompt)
                );
            }
            false
        }
        TaskCommand::Pause { id } => {
            let t = tasks::set_status(&store, id, "paused", None, now).map_err(usage)?;
            println!("task {} paused", t.id);
            true
        }
        TaskCommand::Resume { id } => {
            let t = tasks::set_status(&store, id, "active", None, now).map_err(usage)?;
            println!("task {} resumed; next run at {}", t.id, time(t.next_due));
            true
        }
        TaskCommand::Rm { id } => {
            tasks::set_status(&store, id, "removed", None, now).map_err(usage)?;
            println!("task {id} removed");
            true
        }
        TaskCommand::Runs { id, limit } => {
            if tasks::get(&store, id)?.is_none() {
                return Err(UsageError(format!("no task {id}")).into());
            }
            let runs = tasks::runs(&store, id, limit)?;
            if runs.is_empty() {
                println!("task {id} has not run yet");
            }
            for r in runs {
                let took = r
                    .finished_at
                    .map(|f| format!(" in {:.1}s", (f - r.started_at) as f64 / 1000.0))
                    .unwrap_or_default();
                println!(
                    "run {} for {} (attempt {}): {}{}, started {}{}",
                    r.id,
                    audit::format_time(r.slot),
                    r.attempt,
                    r.status,
                    took,
                    audit::format_time(r.started_at),
                    match (&r.error, &r.result) {
                        (Some(e), _) => format!(
                            "\n  error: {}{}",
                            display::for_terminal(e),
                            r.retry_at
                                .map(|at| format!("\n  tried again at {}", audit::format_time(at)))
                                .unwrap_or_default()
                        ),
                        (None, Some(res)) => format!(
                            "\n  result: {}",
                            display::for_terminal(&res.chars().take(200).collect::<String>())
                        ),
                        _ => String::new(),
                    }
                );
            }
            false
        }
    };
    if changed {
        wake_daemon(home, &config);
    }
    Ok(ExitCode::SUCCESS)
}

/// Tell a running daemon the schedule changed, so it need not wait for its next look. Best
/// effort: with no daemon listening, nothing happens.
pub fn wake_daemon(home: &Home, config: &Config) {
    use std::io::{Read, Write};
    let Ok(token) = home.api_token() else { return };
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(
        &config.api_listen,
        std::time::Duration::from_millis(300),
    ) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let request = format!(
        "POST /v1/tasks/wake HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        config.api_listen
    );
    if conn.write_all(request.as_bytes()).is_ok() {
        let mut sink = [0u8; 256];
        let _ = conn.read(&mut sink);
    }
}
