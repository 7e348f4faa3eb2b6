//! `nanoclaw audit`: verify the chain, show and export events.

use std::process::ExitCode;

use anyhow::Context;

use crate::audit;
use crate::cli::*;
use crate::config::home::Home;
use crate::display;
use crate::store::{self, Store};

pub fn audit_command(home: &Home, command: AuditCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let db = home.db_path();
    // Reading the log never creates it: a missing or emptied database is reported, not
    // replaced by a fresh one whose empty chain would verify.
    match std::fs::metadata(&db) {
        Ok(m) if m.len() > 0 => {}
        Ok(_) => {
            return Err(anyhow::anyhow!(
                "{} is empty: the database and its audit log are gone",
                db.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!(
                "{} does not exist: there is no audit log yet (the daemon, chat and ask write it)",
                db.display()
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", db.display())),
    }
    // Opening the store runs its migrations, so an older data dir has the audit table.
    drop(Store::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match command {
        AuditCommand::Verify { anchor } => match audit::verify(&db, anchor.as_ref())? {
            Ok(verified) => {
                writeln!(out, "ok: {} events, hash chain intact", verified.events)?;
                writeln!(
                    out,
                    "{} anchors of {} hold",
                    verified.anchors,
                    audit::ANCHORS_FILE
                )?;
                if let Some(anchor) = anchor {
                    writeln!(out, "anchor {anchor} holds")?;
                }
                if let Some(head) = verified.head {
                    writeln!(out, "newest: {head}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                out.flush()?;
                eprintln!("nanoclaw: {broken}");
                Ok(ExitCode::FAILURE)
            }
        },
        AuditCommand::Show {
            group,
            turn,
            last,
            json,
            kind,
            since,
        } => {
            let turn = match (turn, last, &group) {
                (Some(t), _, _) => Some(t),
                (None, true, Some(g)) => {
                    Some(audit::timeline::last_turn(&db, g.as_str())?.ok_or_else(|| {
                        UsageError(format!("the audit log holds no turn of group {g}"))
                    })?)
                }
                _ => None,
            };
            if let Some(turn) = turn {
                let events = audit::timeline::turn_events(&db, turn)?;
                if events.is_empty() {
                    return Err(UsageError(format!("the audit log holds no turn {turn}")).into());
                }
                if !json {
                    let group = events[0].group.as_deref().unwrap_or("-");
                    writeln!(out, "turn {turn} of group {}", display::one_line(group))?;
                }
                for e in &events {
                    if json {
                        writeln!(out, "{}", e.body)?;
                    } else {
                        writeln!(out, "{}", display::one_line(&audit::timeline::line(e)))?;
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let since = match since {
                Some(s) => Some(
                    audit::parse_since(&s, store::now())
                        .ok_or_else(|| UsageError(format!("--since {s:?}: expected unix seconds, YYYY-MM-DD, an RFC 3339 time such as 2026-11-18T09:00:00Z, or an age such as 30m, 2h, 7d")))?,
                ),
                None => None,
            };
            if let Some(k) = &kind
                && audit::EventKind::named(k).is_none()
            {
                let all: Vec<&str> = audit::EventKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(UsageError(format!(
                    "--kind {k:?} is no event kind (kinds: {})",
                    all.join(", ")
                ))
                .into());
            }
            let filter = audit::Filter {
                group: group.map(|g| g.to_string()),
                kind,
                since,
            };
            audit::export(&db, &filter, |e| {
                if json {
                    writeln!(out, "{}", e.body)?;
                    return Ok(());
                }
                let data = serde_json::from_str::<serde_json::Value>(&e.body)
                    .ok()
                    .and_then(|v| v.get("data").map(|d| d.to_string()))
                    .unwrap_or_default();
                let shown: String = data.chars().take(300).collect();
                writeln!(
                    out,
                    "{} {} {} {} {}{}",
                    e.seq,
                    audit::format_time(e.at),
                    e.kind,
                    e.group.as_deref().unwrap_or("-"),
                    display::for_terminal(&shown),
                    if shown.len() < data.len() { "…" } else { "" }
                )?;
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { .. } => {
            audit::export(&db, &audit::Filter::default(), |e| {
                let hex = nanoclaw_core::hex::encode;
                writeln!(
                    out,
                    "{{\"event\":{},\"prev_hash\":\"{}\",\"hash\":\"{}\"}}",
                    e.body,
                    hex(&e.prev_hash),
                    hex(&e.hash)
                )?;
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
