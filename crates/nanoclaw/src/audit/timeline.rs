//! One turn's story from the audit log, as a person reads it: what the agent saw, how each call
//! was decided (and by which rule), who approved, what ran and with what result, what went out
//! to the network, and what was replied. `audit show --turn T` and `--group G --last` print it.
//!
//! It only reads (the database is opened read-only) and decides nothing. Every text it returns
//! is one line per event, but is not yet escaped: the caller shows it through `display`.

use std::path::Path;

use anyhow::Context;
use nanoclaw_core::audit::Stored;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{format_time, read_stored};

/// How much of a long text (a message, a result, a reply) a line shows.
const HEAD: usize = 160;

fn open(db: &Path) -> anyhow::Result<Connection> {
    Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", db.display()))
}

/// The newest turn of `group` the log knows of.
pub fn last_turn(db: &Path, group: &str) -> anyhow::Result<Option<i64>> {
    let conn = open(db)?;
    Ok(conn
        .query_row(
            "SELECT json_extract(body, '$.data.turn') FROM audit
             WHERE group_id = ?1 AND json_extract(body, '$.data.turn') IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
            [group],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}

/// Every event of `turn`, in order: those that name it, its calls' egress, and the events of its
/// group recorded while it ran that name no turn (approvals asked and answered, approvals used
/// or expired). A group runs one turn at a time, so those are its own.
pub fn turn_events(db: &Path, turn: i64) -> anyhow::Result<Vec<Stored>> {
    let conn = open(db)?;
    let mut stmt = conn.prepare(
        "WITH own AS (
             SELECT seq, kind, group_id FROM audit WHERE json_extract(body, '$.data.turn') = ?1
         ),
         span AS (
             SELECT MIN(seq) AS lo, MAX(CASE WHEN kind = 'message_sent' THEN NULL ELSE seq END) AS hi,
                    MIN(group_id) AS g
             FROM own
         )
         SELECT a.seq, a.at, a.kind, a.group_id, a.body, a.prev_hash, a.hash FROM audit a, span
         WHERE json_extract(a.body, '$.data.turn') = ?1
            OR json_extract(a.body, '$.data.call') LIKE ?2
            OR (a.group_id = span.g AND a.seq BETWEEN span.lo AND span.hi
                AND json_extract(a.body, '$.data.turn') IS NULL
                AND json_extract(a.body, '$.data.call') IS NULL
                AND a.kind IN ('approval_requested', 'approval_answered', 'approval_ignored',
                               'approval_used', 'approval_expired'))
         ORDER BY a.seq",
    )?;
    let rows = stmt.query_map(params![turn, format!("turn {turn} call %")], read_stored)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A text's head: its first [`HEAD`] characters, with how much more there was.
fn head(text: &str) -> String {
    let count = text.chars().count();
    if count <= HEAD {
        return text.to_owned();
    }
    let cut: String = text.chars().take(HEAD).collect();
    format!("{cut}… ({count} characters)")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// A call's arguments, compact.
fn args(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        other => head(&other.to_string()),
    }
}

/// One event as one line: the time, a verb, and what happened in words.
pub fn line(e: &Stored) -> String {
    let body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
    let d = &body["data"];
    let time = format_time(e.at);
    let time = time.get(11..19).unwrap_or(&time);
    let (verb, what) = match e.kind.as_str() {
        "message_received" => (
            "seen",
            format!(
                "{} from {} on {}{}: {}",
                str_of(d, "role"),
                str_of(d, "sender"),
                str_of(d, "channel"),
                if d["outside"].as_bool() == Some(true) {
                    " (outside content)"
                } else {
                    ""
                },
                head(str_of(d, "text"))
            ),
        ),
        "prompt" => {
            let messages = d["messages"].as_array().map_or(0, |m| m.len());
            let tools = d["tools"].as_array().map_or(0, |t| t.len());
            (
                "prompt",
                format!("{messages} message(s) to the model, {tools} tool(s) offered"),
            )
        }
        "model_response" => {
            let m = &d["message"];
            let calls: Vec<String> = m["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{} {}", str_of(c, "name"), args(&c["arguments"])))
                .collect();
            let text = str_of(m, "text").trim();
            let mut said = Vec::new();
            if !text.is_empty() {
                said.push(format!("said: {}", head(text)));
            }
            if !calls.is_empty() {
                said.push(format!("calls {}", calls.join("; ")));
            }
            if said.is_empty() {
                said.push("an empty answer".into());
            }
            ("model", said.join("; "))
        }
        "tool_call" => (
            "call",
            format!("{} {}", str_of(d, "tool"), args(&d["arguments"])),
        ),
        "tool_call_canonical" => (
            "judged as",
            format!("{} {}", str_of(d, "tool"), args(&d["arguments"])),
        ),
        "policy_decision" => {
            let taint = if d["tainted"].as_bool() == Some(true) {
                ", tainted turn"
            } else {
                ""
            };
            (
                "decided",
                format!(
                    "{} {}: {}{taint}",
                    str_of(d, "decision"),
                    str_of(d, "tool"),
                    str_of(d, "reason")
                ),
            )
        }
        "approval_requested" => (
            "asked",
            format!(
                "approval {} for {} {} ({}); approvers {}, expires {}",
                str_of(d, "code"),
                str_of(d, "tool"),
                args(&d["arguments"]),
                str_of(d, "reason"),
                d["approvers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                d["expires_at"]
                    .as_i64()
                    .map(format_time)
                    .unwrap_or_default()
            ),
        ),
        "approval_answered" | "approval_ignored" => (
            if e.kind == "approval_answered" {
                "answered"
            } else {
                "ignored"
            },
            format!(
                "{} by {} on {}: {}",
                str_of(d, "vote"),
                str_of(d, "approver"),
                str_of(d, "channel"),
                str_of(d, "result")
            ),
        ),
        "approval_used" => (
            "approved",
            format!(
                "{} runs{}",
                str_of(d, "tool"),
                if d["standing"].as_bool() == Some(true) {
                    " (a standing approval)"
                } else {
                    ""
                }
            ),
        ),
        "approval_expired" => (
            "expired",
            match d["withdrawn"].as_str() {
                Some(why) => format!("approval request {} withdrawn: {why}", d["request"]),
                None => format!("approval request {}: no answer in time", d["request"]),
            },
        ),
        "tool_result" => (
            if d["is_error"].as_bool() == Some(true) {
                "failed"
            } else {
                "result"
            },
            format!(
                "{} in {} ms, {} bytes: {}",
                str_of(d, "tool"),
                d["millis"].as_f64().map_or(0, |m| m.round() as i64),
                d["bytes"].as_u64().unwrap_or(0),
                head(str_of(d, "content").trim())
            ),
        ),
        "egress" => {
            let secrets: Vec<&str> = d["secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            let outcome = match (str_of(d, "decision"), d["status"].as_u64()) {
                ("refuse" | "deny", _) => format!("REFUSED ({})", str_of(d, "reason")),
                (_, Some(status)) => status.to_string(),
                (decision, None) => decision.to_owned(),
            };
            (
                "egress",
                format!(
                    "{} {}{} → {outcome}{}",
                    str_of(d, "method"),
                    str_of(d, "host"),
                    str_of(d, "path"),
                    if secrets.is_empty() {
                        String::new()
                    } else {
                        format!(", secrets injected: {}", secrets.join(", "))
                    }
                ),
            )
        }
        "egress_summary" => (
            "egress",
            format!(
                "{} request(s) in all for this call",
                d["requests"].as_u64().unwrap_or(0)
            ),
        ),
        "message_sent" => (
            "replied",
            format!("on {}: {}", str_of(d, "channel"), head(str_of(d, "text"))),
        ),
        "reply_withheld" => ("withheld", format!("a reply: {}", args(d))),
        "turn_stopped" => (
            "stopped",
            format!(
                "by {}{}",
                str_of(d, "by"),
                match d["approvals_denied"].as_u64() {
                    Some(n) if n > 0 => format!("; {n} approval request(s) denied"),
                    _ => String::new(),
                }
            ),
        ),
        other => (other, args(d)),
    };
    format!("{time} {verb:>9}  {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: Value) -> Stored {
        Stored {
            seq: 1,
            at: 1_700_000_000_000,
            kind: kind.into(),
            group: Some("main".into()),
            body: serde_json::json!({"data": data}).to_string(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }

    #[test]
    fn events_read_as_words() {
        let l = line(&event(
            "policy_decision",
            serde_json::json!({"tool": "shell", "decision": "ask", "reason": "rule 2 \"deploys ask\" (line 9)", "tainted": true}),
        ));
        assert!(
            l.ends_with("decided  ask shell: rule 2 \"deploys ask\" (line 9), tainted turn"),
            "{l}"
        );
        let l = line(&event(
            "egress",
            serde_json::json!({"method": "POST", "host": "evil.example", "path": "/x", "decision": "refuse", "reason": "not in the allowlist", "secrets": []}),
        ));
        assert!(
            l.contains("POST evil.example/x → REFUSED (not in the allowlist)"),
            "{l}"
        );
        let l = line(&event(
            "model_response",
            serde_json::json!({"message": {"role": "assistant", "text": "", "tool_calls": [{"id": "1", "name": "shell", "arguments": {"command": "ls"}}]}}),
        ));
        assert!(l.contains("calls shell {\"command\":\"ls\"}"), "{l}");
        let long = "x".repeat(500);
        let l = line(&event(
            "tool_result",
            serde_json::json!({"tool": "shell", "millis": 12.4, "bytes": 500, "content": long}),
        ));
        assert!(
            l.contains("shell in 12 ms, 500 bytes") && l.ends_with("… (500 characters)"),
            "{l}"
        );
        // Bad bodies still make a line.
        let mut bad = event("tool_call", Value::Null);
        bad.body = "not json".into();
        assert!(line(&bad).contains("call"));
    }
}
