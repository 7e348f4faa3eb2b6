//! `nanoclaw mcp`: the configured MCP servers with their pinned tools, and trusting a server's
//! changed tool list.

use std::process::ExitCode;

use crate::cli::{McpCommand, UsageError};
use crate::config::home::Home;
use crate::display;
use crate::mcp::pins;

pub fn mcp_command(home: &Home, command: McpCommand) -> anyhow::Result<ExitCode> {
    let config = crate::app::load_config(home)?;
    let store = crate::store::Store::open(&home.db_path())?;
    match command {
        McpCommand::List => {
            if config.mcp.is_empty() {
                println!("no MCP servers are configured ([mcp.servers.NAME] in nanoclaw.toml)");
            }
            for (name, s) in &config.mcp {
                let hosts: Vec<String> = s.egress.rules.iter().map(|r| r.text.clone()).collect();
                println!(
                    "{name}: {}\n  groups: {}; hosts: {}; secrets: {}; timeout {}s",
                    display::one_line(&s.transport.to_string()),
                    s.groups
                        .iter()
                        .map(|g| g.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if hosts.is_empty() {
                        "none".to_owned()
                    } else {
                        hosts.join(", ")
                    },
                    if s.secrets.is_empty() {
                        "none".to_owned()
                    } else {
                        s.secrets.join(", ")
                    },
                    s.timeout.as_secs()
                );
                for pins::LastEvent {
                    group,
                    event,
                    error,
                    at,
                } in pins::last_events(&store, name)?
                {
                    let when = jiff::Timestamp::from_second(at / 1000)
                        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
                        .unwrap_or_default();
                    let error = error
                        .map(|e| format!(": {}", display::one_line(&e)))
                        .unwrap_or_default();
                    println!("  in {group}: last {event} {when}{error}");
                }
                let pinned = pins::pinned(&store, name)?;
                if pinned.is_empty() {
                    println!("  not seen yet: its tools are pinned when it first starts");
                } else {
                    println!(
                        "  pinned: {} tool(s), list sha256 {}: {}",
                        pinned.len(),
                        pins::list_hash(&pinned),
                        pinned
                            .iter()
                            .map(|(t, _)| display::one_line(t))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if let Some((hash, tools)) = pins::pending(&store, name)? {
                    let held: Vec<String> = tools
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|t| {
                            !pinned.iter().any(|(n, h)| {
                                Some(n.as_str()) == t["name"].as_str()
                                    && Some(h.as_str()) == t["hash"].as_str()
                            })
                        })
                        .map(|t| {
                            let name = t["name"].as_str().unwrap_or("?");
                            let kind = if pinned.iter().any(|(n, _)| n == name) {
                                "changed"
                            } else {
                                "new"
                            };
                            let about = t["definition"]["description"].as_str().unwrap_or("");
                            format!(
                                "{} ({kind}): {}",
                                display::one_line(name),
                                display::one_line(about)
                            )
                        })
                        .collect();
                    println!(
                        "  CHANGED: a new tool list (sha256 {hash}) holds back:\n    {}\n  review it, then `nanoclaw mcp trust {name} {}`",
                        held.join("\n    "),
                        &hash[..pins::MIN_HASH_PREFIX.min(hash.len())]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        McpCommand::Trust { server, list } => {
            if !config.mcp.contains_key(&server) {
                return Err(UsageError(format!(
                    "no MCP server {server:?} in nanoclaw.toml (servers: {})",
                    config.mcp.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
                .into());
            }
            let Some(list) = list else {
                return match pins::pending(&store, &server)? {
                    Some((hash, _)) => Err(UsageError(format!(
                        "name the list you reviewed: `nanoclaw mcp list` shows {server}'s waiting list (sha256 {hash}); \
                         trust it with `nanoclaw mcp trust {server} {}`",
                        &hash[..pins::MIN_HASH_PREFIX.min(hash.len())]
                    ))
                    .into()),
                    None => {
                        println!("{server} has no changed tool list waiting to be trusted");
                        Ok(ExitCode::SUCCESS)
                    }
                };
            };
            let audit = crate::audit::Audit::open(&home.db_path(), Default::default())?;
            let trusted = pins::trust_pending(
                &store,
                &audit,
                &server,
                &list,
                "the owner (nanoclaw mcp trust)",
            )?;
            audit.close();
            match trusted {
                pins::Trust::Pinned(hash) => {
                    println!(
                        "{server}'s tool list (sha256 {hash}) is trusted: its tools are offered again"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                pins::Trust::NothingPending => {
                    println!("{server} has no changed tool list waiting to be trusted");
                    Ok(ExitCode::SUCCESS)
                }
                pins::Trust::Other { pending } => Err(UsageError(format!(
                    "{server}'s tool list waiting to be trusted is sha256 {pending}, not {list:?}: \
                     nothing was trusted; review it with `nanoclaw mcp list`, then trust it by its hash"
                ))
                .into()),
            }
        }
    }
}
