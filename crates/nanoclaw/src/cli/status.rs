//! `nanoclaw status`: the running daemon's own account of itself, through the control
//! socket; without a daemon, that it is not running, and what waits for it.

use std::process::ExitCode;

use crate::config::home::Home;

pub async fn status(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    home.require_initialized()
        .map_err(|e| crate::exit::UsageError(e.to_string()))?;
    let Some(status) = crate::channels::control_client::status(home).await? else {
        let store = crate::store::Store::open(&home.db_path())?;
        let approvals = crate::agent::approvals::list(&store, false)?.len();
        let queued: i64 = store.pending_counts()?.iter().map(|(_, n)| n).sum();
        if json {
            println!(
                "{}",
                serde_json::json!({"daemon": false, "healthy": false, "problems": ["the daemon is not running"], "approvals_pending": approvals, "queued": queued})
            );
        } else {
            println!("daemon: not running (start it with `nanoclaw run`)");
            println!("waiting for it: {queued} message(s), {approvals} approval request(s)");
        }
        return Ok(ExitCode::FAILURE);
    };
    let healthy = status["healthy"].as_bool().unwrap_or(false);
    if json {
        println!("{status}");
    } else {
        print!("{}", describe(&status));
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The status for a person, one fact per line.
fn describe(s: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "daemon: running, nanoclaw {}, pid {}, up {}s",
        s["version"].as_str().unwrap_or("?"),
        s["pid"],
        s["uptime_secs"]
    );
    let _ = writeln!(out, "sandbox: {}", s["sandbox"].as_str().unwrap_or("?"));
    let _ = writeln!(
        out,
        "model {}: {}",
        crate::display::one_line(s["model"]["name"].as_str().unwrap_or("?")),
        connection(&s["model"]["connection"])
    );
    let _ = writeln!(out, "channel api: listening (the HTTP API)");
    for c in s["channels"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "channel {}: {}",
            c["name"].as_str().unwrap_or("?"),
            connection(&c["connection"])
        );
    }
    for g in s["groups"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "group {}: {}, {} queued",
            g["group"].as_str().unwrap_or("?"),
            if g["running"].as_bool() == Some(true) {
                "turn running"
            } else {
                "idle"
            },
            g["queued"]
        );
    }
    for g in s["paused"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "group {}: paused (nanoclaw resume --group {0})",
            g.as_str().unwrap_or("?")
        );
    }
    let approvals = s["approvals"].as_array().map_or(0, Vec::len);
    let _ = writeln!(out, "approvals pending: {approvals}");
    for a in s["approvals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  [{}] group {} tool {}, until {}",
            a["code"].as_str().unwrap_or("?"),
            a["group"].as_str().unwrap_or("?"),
            crate::display::for_terminal(a["tool"].as_str().unwrap_or("?")),
            a["expires_at"].as_str().unwrap_or("?")
        );
    }
    for t in s["next_tasks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "next task: {} {} (group {}) at {}",
            t["id"],
            crate::display::for_terminal(t["name"].as_str().unwrap_or("?")),
            t["group"].as_str().unwrap_or("?"),
            t["next_due"].as_str().unwrap_or("?")
        );
    }
    let _ = writeln!(out, "secrets: {}", s["secrets"]);
    for p in s["problems"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "problem: {}", p.as_str().unwrap_or("?"));
    }
    out
}

/// A connection's state (as `channels::health` reports it) in words.
fn connection(state: &serde_json::Value) -> String {
    let since = state["since"].as_str().unwrap_or("?");
    let error = crate::display::one_line(state["error"].as_str().unwrap_or(""));
    match state["state"].as_str() {
        Some("connected") => format!("connected since {since}"),
        Some("starting") => format!("starting (since {since})"),
        Some("retrying") => format!(
            "retrying since {since} ({} attempts); last error: {error}",
            state["attempts"]
        ),
        Some("rejected") => format!(
            "TOKEN REJECTED at {since}: {error}; not retried until its secret changes (nanoclaw secret rotate)"
        ),
        _ => "not checked yet".to_owned(),
    }
}
