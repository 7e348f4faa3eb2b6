//! `nanoclaw memory`: show a group's MEMORY.md (read through the sandbox) and vouch for it.

use std::process::ExitCode;

use crate::agent::memory;
use crate::app::load_config;
use crate::cli::*;
use crate::config::home::Home;
use crate::display;
use crate::sandbox::backend;
use crate::store::Store;

pub async fn memory_command(home: Home, command: MemoryCommand) -> anyhow::Result<ExitCode> {
    let group = match &command {
        MemoryCommand::Show { group } | MemoryCommand::Trust { group, .. } => group.clone(),
    };
    let config = load_config(&home)?;
    let store = Store::open(&home.db_path())?;
    // A group is known once it has a workspace, is configured or has been spoken to (`main`
    // always is): a typo must not create one.
    let known = group == nanoclaw_core::GroupId::main()
        || home.dir.join("workspaces").join(group.as_str()).is_dir()
        || config.group_limits.contains_key(&group)
        || store.group_known(&group)?;
    if !known {
        return Err(UsageError(format!(
            "no group {group}: no message, task or workspace has named it, and nanoclaw.toml does not"
        ))
        .into());
    }
    // Read through the sandbox, as the agent does: the host never opens a workspace path.
    let backend = backend::choose(&home, &config, false)
        .await
        .map_err(anyhow::Error::msg)?;
    let read = memory::read(
        backend.as_ref(),
        &home.workspace(&group)?,
        config.limits_for(&group),
    )
    .await;
    backend.shutdown().await;
    let text = read.map_err(|e| anyhow::anyhow!("reading {}'s MEMORY.md: {e}", group))?;
    let hash = memory::hash(&text);
    match command {
        MemoryCommand::Show { .. } => {
            print!("{}", display::for_terminal(&text));
            if !text.is_empty() && !text.ends_with('\n') {
                println!();
            }
            let judged = match store.memory_judgement(&group)? {
                Some((judged, true)) if judged == hash => {
                    "outside content: written while a turn had read outside content; turns that see it are tainted"
                }
                Some((judged, false)) if judged == hash => "trusted",
                _ => "not judged yet (the next turn judges it)",
            };
            println!("-- {} of group {group}: {hash}; {judged}", memory::FILE);
            Ok(ExitCode::SUCCESS)
        }
        MemoryCommand::Trust { hash: reviewed, .. } => {
            let reviewed = reviewed.trim().to_ascii_lowercase();
            if nanoclaw_core::hex::decode(&reviewed).is_none_or(|bytes| bytes.len() != 32) {
                return Err(UsageError(format!(
                    "{reviewed:?} is not a hash: give the 64 hex digits `nanoclaw memory show --group {group}` prints"
                ))
                .into());
            }
            if reviewed != hash {
                return Err(UsageError(format!(
                    "{}'s MEMORY.md has hash {hash} now, not {}: it changed since it was reviewed; look again with `nanoclaw memory show --group {group}`",
                    group,
                    reviewed.trim()
                ))
                .into());
            }
            store.trust_memory(&group, &hash)?;
            println!("{}'s MEMORY.md ({hash}) is trusted", group);
            Ok(ExitCode::SUCCESS)
        }
    }
}
