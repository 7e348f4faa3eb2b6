//! Pinning: the first tool list a server shows is recorded, each tool with the hash of its
//! name, description and input schema. A later list is judged against it: a tool that matches
//! its pin is offered; a new or changed one is held back (a server that rewrites a description
//! after it was trusted could steer the model) until the list is trusted again, by the
//! approvers or by `nanoclaw mcp trust SERVER HASH` (the hash of the list reviewed). Pins are per server, for every group.

use nanoclaw_core::GroupId;
use rmcp::model::Tool;
use serde_json::{Value, json};

use crate::audit::{Audit, EventKind};
use crate::store::{Store, StoreError};

/// The hash a tool is pinned by: of its name, description and input schema, as canonical JSON.
pub fn tool_hash(tool: &Tool) -> String {
    let canonical = json!({
        "name": tool.name,
        "description": tool.description,
        "inputSchema": Value::Object((*tool.input_schema).clone()),
    })
    .to_string();
    digest(&canonical)
}

fn digest(text: &str) -> String {
    nanoclaw_core::hex::encode(
        ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref(),
    )
}

/// The hash of a whole list: of its tools' names and hashes, in name order.
pub fn list_hash(tools: &[(String, String)]) -> String {
    let mut sorted = tools.to_vec();
    sorted.sort();
    digest(&json!(sorted).to_string())
}

/// The pinned tools of `server`: (tool, hash).
pub fn pinned(store: &Store, server: &str) -> Result<Vec<(String, String)>, StoreError> {
    store.with_conn(|c| {
        let mut stmt =
            c.prepare("SELECT tool, hash FROM mcp_pins WHERE server = ?1 ORDER BY tool")?;
        let rows = stmt
            .query_map([server], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// A server's last audited event in one group.
pub struct LastEvent {
    pub group: String,
    /// `started`, `crashed`, `failed to start` or `stopped`.
    pub event: String,
    /// Why it failed or was stopped.
    pub error: Option<String>,
    /// Milliseconds since the epoch.
    pub at: i64,
}

/// Each group's last start, crash, failure or stop of `server`, as audited, by group.
pub fn last_events(store: &Store, server: &str) -> Result<Vec<LastEvent>, StoreError> {
    store.with_conn(|c| {
        let mut stmt = c.prepare(
            "SELECT group_id, json_extract(body, '$.data.event'), COALESCE(json_extract(body, '$.data.error'), json_extract(body, '$.data.why')), MAX(at)
             FROM audit WHERE kind = 'mcp_server' AND json_extract(body, '$.data.server') = ?1
             GROUP BY group_id ORDER BY group_id",
        )?;
        let rows = stmt
            .query_map([server], |r| {
                Ok(LastEvent {
                    group: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    event: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    error: r.get(2)?,
                    at: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
}

/// A list seen but not trusted: its hash and its tools, (name, hash, definition).
pub fn pending(store: &Store, server: &str) -> Result<Option<(String, Value)>, StoreError> {
    store.with_conn(|c| Ok(pending_in(c, server)?))
}

fn pending_in(c: &rusqlite::Connection, server: &str) -> rusqlite::Result<Option<(String, Value)>> {
    use rusqlite::OptionalExtension;
    let row: Option<(String, String)> = c
        .query_row(
            "SELECT list_hash, tools FROM mcp_pending WHERE server = ?1",
            [server],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(h, t)| (h, serde_json::from_str(&t).unwrap_or(Value::Null))))
}

/// Replace `server`'s pins with `tools` (name, hash, definition) and clear what was pending,
/// within the caller's transaction.
fn pin_all_in(
    tx: &rusqlite::Transaction<'_>,
    server: &str,
    tools: &[(String, String, Value)],
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM mcp_pins WHERE server = ?1", [server])?;
    for (name, hash, definition) in tools {
        tx.execute(
            "INSERT INTO mcp_pins (server, tool, hash, definition, pinned_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![server, name, hash, definition.to_string(), crate::store::now()],
        )?;
    }
    tx.execute("DELETE FROM mcp_pending WHERE server = ?1", [server])?;
    Ok(())
}

fn pin_all(
    store: &Store,
    server: &str,
    tools: &[(String, String, Value)],
) -> Result<(), StoreError> {
    store.with_conn(|c| {
        let tx = c.unchecked_transaction()?;
        pin_all_in(&tx, server, tools)?;
        tx.commit()?;
        Ok(())
    })
}

/// The fewest leading hex digits of a list's hash that name it when trusting.
pub const MIN_HASH_PREFIX: usize = 12;

/// What trusting a list came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Trust {
    /// The list named was pending and is pinned now: its full hash.
    Pinned(String),
    /// No list of the server waits to be trusted.
    NothingPending,
    /// The list waiting is another one (the server changed its tools again since the list
    /// was reviewed): nothing is pinned.
    Other { pending: String },
}

/// Trust the list of `server` that is pending (`nanoclaw mcp trust`, or an approval), if it is
/// the one `expected` names (its hash, or at least [`MIN_HASH_PREFIX`] leading digits of it):
/// its tools are pinned as they are. Checked and pinned in one transaction, so a list the
/// server sends between the review and the trust is never the one trusted.
pub fn trust_pending(
    store: &Store,
    audit: &Audit,
    server: &str,
    expected: &str,
    by: &str,
) -> Result<Trust, StoreError> {
    let outcome = store.with_conn(|c| {
        let tx = c.unchecked_transaction()?;
        let Some((hash, tools)) = pending_in(&tx, server)? else {
            return Ok((Trust::NothingPending, Vec::new()));
        };
        let named =
            expected.len() >= MIN_HASH_PREFIX && hash.starts_with(&expected.to_ascii_lowercase());
        if !named {
            return Ok((Trust::Other { pending: hash }, Vec::new()));
        }
        let tools: Vec<(String, String, Value)> = tools
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some((
                    t["name"].as_str()?.to_owned(),
                    t["hash"].as_str()?.to_owned(),
                    t["definition"].clone(),
                ))
            })
            .collect();
        pin_all_in(&tx, server, &tools)?;
        tx.commit()?;
        Ok((Trust::Pinned(hash), tools))
    })?;
    if let (Trust::Pinned(hash), tools) = &outcome {
        audit.record(
            EventKind::McpTools,
            None,
            json!({"server": server, "event": "trusted", "list_hash": hash, "by": by, "tools": tools.iter().map(|t| &t.0).collect::<Vec<_>>()}),
        );
    }
    Ok(outcome.0)
}

/// What a list looked like against its pins.
pub struct Judged {
    /// The tools to offer: pinned and unchanged (all of a server's first list).
    pub offered: Vec<Tool>,
    /// A new list that differs from the pins, first seen now (it waits to be trusted).
    pub newly_changed: Option<String>,
}

/// Judge `tools` of `server` (seen in `group`) against the pins: pin a first list whole; hold
/// back new and changed tools, recording the list as pending (once per distinct list).
pub fn judge(
    store: &Store,
    audit: &Audit,
    server: &str,
    group: &GroupId,
    tools: &[Tool],
) -> Judged {
    let hashed: Vec<(String, String, Value)> = tools
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                tool_hash(t),
                serde_json::to_value(t).unwrap_or(Value::Null),
            )
        })
        .collect();
    let pairs: Vec<(String, String)> = hashed
        .iter()
        .map(|(n, h, _)| (n.clone(), h.clone()))
        .collect();
    let hash = list_hash(&pairs);
    let failed = |e: StoreError| {
        // Without the pins, nothing can be judged: offer nothing.
        tracing::error!(server, error = %e, "could not read or write the MCP pins; its tools are held back");
        Judged {
            offered: Vec::new(),
            newly_changed: None,
        }
    };
    let pins = match pinned(store, server) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    if pins.is_empty() {
        if let Err(e) = pin_all(store, server, &hashed) {
            return failed(e);
        }
        audit.record(
            EventKind::McpTools,
            Some(group.as_str()),
            json!({"server": server, "event": "pinned", "list_hash": hash, "tools": pairs.iter().map(|p| &p.0).collect::<Vec<_>>()}),
        );
        return Judged {
            offered: tools.to_vec(),
            newly_changed: None,
        };
    }
    let offered: Vec<Tool> = tools
        .iter()
        .zip(&hashed)
        .filter(|(_, (name, h, _))| pins.iter().any(|(pn, ph)| pn == name && ph == h))
        .map(|(t, _)| t.clone())
        .collect();
    let changed: Vec<&String> = hashed
        .iter()
        .filter(|(name, h, _)| !pins.iter().any(|(pn, ph)| pn == name && ph == h))
        .map(|(n, _, _)| n)
        .collect();
    if changed.is_empty() {
        return Judged {
            offered,
            newly_changed: None,
        };
    }
    let already = matches!(pending(store, server), Ok(Some((h, _))) if h == hash);
    if already {
        return Judged {
            offered,
            newly_changed: None,
        };
    }
    let listed: Vec<Value> = hashed
        .iter()
        .map(|(n, h, d)| json!({"name": n, "hash": h, "definition": d}))
        .collect();
    let recorded = store.with_conn(|c| {
        c.execute(
            "INSERT INTO mcp_pending (server, list_hash, tools, seen_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (server) DO UPDATE SET list_hash = ?2, tools = ?3, seen_at = ?4",
            rusqlite::params![server, hash, json!(listed).to_string(), crate::store::now()],
        )?;
        Ok(())
    });
    if let Err(e) = recorded {
        return failed(e);
    }
    audit.record(
        EventKind::McpTools,
        Some(group.as_str()),
        json!({"server": server, "event": "changed", "list_hash": hash, "held_back": changed}),
    );
    Judged {
        offered,
        newly_changed: Some(hash),
    }
}
