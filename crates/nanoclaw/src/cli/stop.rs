//! `nanoclaw stop`, `pause` and `resume`: the owner's brakes. `stop` goes to the running
//! daemon (only it has a turn to stop); `pause` and `resume` go through it when it runs (so a
//! resumed group is answered at once), and to the store when it does not.

use std::process::ExitCode;

use nanoclaw_core::GroupId;

use crate::channels::control_client;
use crate::config::home::Home;

pub async fn stop(home: &Home, group: &GroupId) -> anyhow::Result<ExitCode> {
    home.require_initialized()
        .map_err(|e| crate::exit::UsageError(e.to_string()))?;
    if !control_client::daemon_running(home).await {
        println!("no daemon runs, so no turn is running (nothing to stop)");
        return Ok(ExitCode::FAILURE);
    }
    if control_client::stop(home, group).await? {
        println!("stopped the running turn of group {group}; queued messages stay queued");
    } else {
        println!("group {group} has no turn running");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(home: &Home, group: &GroupId, paused: bool) -> anyhow::Result<ExitCode> {
    home.require_initialized()
        .map_err(|e| crate::exit::UsageError(e.to_string()))?;
    let changed = if control_client::daemon_running(home).await {
        control_client::pause(home, group, paused).await?
    } else {
        let store = crate::store::Store::open(&home.db_path())?;
        let changed = if paused {
            store.pause(group)?
        } else {
            store.resume(group)?
        };
        let audit =
            crate::audit::Audit::open(&home.db_path(), nanoclaw_core::secret::Replacer::default())?;
        audit.record(
            crate::audit::EventKind::GroupPaused,
            Some(group.as_str()),
            serde_json::json!({"paused": paused, "changed": changed}),
        );
        audit.close();
        changed
    };
    let state = if paused { "paused" } else { "running turns" };
    if changed {
        println!("group {group} is {state} now");
    } else {
        println!("group {group} was {state} already");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn reload(home: &Home) -> anyhow::Result<ExitCode> {
    home.require_initialized()
        .map_err(|e| crate::exit::UsageError(e.to_string()))?;
    if !control_client::daemon_running(home).await {
        println!("no daemon runs; the files are read when it starts");
        return Ok(ExitCode::FAILURE);
    }
    let done = control_client::reload(home).await?;
    println!("{}", done.as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
