//! Unit tests of the audit writer and readers (kept apart from `audit.rs`, which the audit
//! benchmark builds on its own).

use crate::audit::*;
use nanoclaw_core::secret::Replacer;
use rusqlite::Connection;
#[test]
fn times_format_and_parse() {
    assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_time(1_795_000_000_000), "2026-11-18T11:06:40Z");
    assert_eq!(
        parse_since("2026-11-18T11:06:40Z", 0),
        Some(1_795_000_000_000)
    );
    assert_eq!(parse_since("1970-01-02", 0), Some(86_400_000));
    assert_eq!(parse_since("1795000000", 0), Some(1_795_000_000_000));
    assert_eq!(parse_since("2h", 10_000_000), Some(10_000_000 - 7_200_000));
    assert_eq!(
        parse_since("2026-11-18T13:06:40+02:00", 0),
        Some(1_795_000_000_000)
    );
    for bad in [
        "",
        "yesterday",
        "2026-13-01",
        "2026-11-18T25:00:00Z",
        "5w",
        "2026-11-18T08:26:40",
        "2026-02-30",
        "99999999999999999",
        "99999999999999999d",
    ] {
        assert_eq!(parse_since(bad, 0), None, "{bad}");
    }
}

use serde_json::json;

fn open() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    crate::store::Store::open(&db).unwrap();
    (dir, db)
}

#[test]
fn events_chain_redact_and_verify() {
    let (_dir, db) = open();
    let redactor = Replacer::new([(b"hunter2-secret".to_vec(), b"[redacted secret PW]".to_vec())]);
    let a = Audit::open(&db, redactor).unwrap();
    for i in 0..100 {
        a.record(
            crate::audit::EventKind::ToolCall,
            Some("main"),
            json!({"i": i, "arg": "pw=hunter2-secret"}),
        );
    }
    a.close();
    assert_eq!(verify(&db, None).unwrap().unwrap().events, 100);
    let mut bodies = Vec::new();
    export(&db, &Filter::default(), |s| {
        bodies.push(s.body.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(bodies.len(), 100);
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("hunter2") && b.contains("[redacted secret PW]"))
    );
}

#[test]
fn two_writers_share_one_chain() {
    let (_dir, db) = open();
    let a = Audit::open(&db, Replacer::default()).unwrap();
    let b = Audit::open(&db, Replacer::default()).unwrap();
    for i in 0..200 {
        a.record(EventKind::Prompt, None, json!(i));
        b.record(EventKind::ToolResult, None, json!(i));
    }
    a.close();
    b.close();
    assert_eq!(verify(&db, None).unwrap().unwrap().events, 400);
}

#[test]
fn the_table_refuses_updates_and_deletes() {
    let (_dir, db) = open();
    let a = Audit::open(&db, Replacer::default()).unwrap();
    a.record(EventKind::Prompt, None, json!(1));
    a.close();
    let conn = Connection::open(&db).unwrap();
    assert!(conn.execute("UPDATE audit SET kind = 'y'", []).is_err());
    assert!(conn.execute("DELETE FROM audit", []).is_err());
}

#[test]
fn anchors_parse_and_print_the_same() {
    let text = format!("42:{}", "ab".repeat(32));
    let anchor: Anchor = text.parse().unwrap();
    assert_eq!((anchor.seq, anchor.hash.len()), (42, 32));
    assert_eq!(anchor.to_string(), text);
    let hex = "ab".repeat(32);
    for bad in [
        String::new(),
        "42".into(),
        "x:ab".into(),
        format!("0:{hex}"),
        format!("-1:{hex}"),
        format!("42:{}", "ab".repeat(31)),
        format!("42:{}", "zz".repeat(32)),
        format!("42:{}", "é".repeat(32)),
    ] {
        let err = bad.parse::<Anchor>().unwrap_err();
        assert!(err.contains("not an anchor"), "{bad}: {err}");
    }
}

#[test]
fn an_anchor_finds_a_cut_and_a_recomputed_chain() {
    let (_dir, db) = open();
    let a = Audit::open(&db, Replacer::default()).unwrap();
    for i in 0..10 {
        a.record(EventKind::Prompt, None, json!(i));
    }
    a.close();
    let verified = verify(&db, None).unwrap().unwrap();
    let head = verified.head.unwrap();
    assert_eq!(head.seq, 10);
    assert!(verify(&db, Some(&head)).unwrap().is_ok());
    let early = Anchor {
        seq: 3,
        hash: Connection::open(&db)
            .unwrap()
            .query_row("SELECT hash FROM audit WHERE seq = 3", [], |r| r.get(0))
            .unwrap(),
    };
    assert!(verify(&db, Some(&early)).unwrap().is_ok());

    // Someone with the file drops the guards and cuts the newest two events: the anchors file
    // finds it unasked; without it, the chain alone still verifies, and the anchor does not.
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > 8;",
    )
    .unwrap();
    assert!(matches!(
        verify(&db, None).unwrap().unwrap_err(),
        Unverified::Cut {
            last: 8,
            anchored: 10
        }
    ));
    std::fs::remove_file(crate::audit::anchors_path(&db)).unwrap();
    assert_eq!(verify(&db, None).unwrap().unwrap().events, 8);
    let cut = verify(&db, Some(&head)).unwrap().unwrap_err();
    assert!(
        matches!(
            cut,
            Unverified::Cut {
                last: 8,
                anchored: 10
            }
        ),
        "{cut}"
    );
    assert!(cut.to_string().contains("removed"), "{cut}");

    // Then rewrites event 2 and recomputes every hash after it: the chain verifies again, the
    // anchor at event 3 does not.
    let rows: Vec<(i64, String)> = conn
        .prepare("SELECT seq, body FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = nanoclaw_core::audit::GENESIS;
    for (seq, body) in rows {
        let body = if seq == 2 {
            body.replace("\"data\":1", "\"data\":7")
        } else {
            body
        };
        let hash = nanoclaw_core::audit::hash(&prev, &body);
        conn.execute(
            "UPDATE audit SET body = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            rusqlite::params![seq, body, &prev[..], &hash[..]],
        )
        .unwrap();
        prev = hash;
    }
    assert_eq!(verify(&db, None).unwrap().unwrap().events, 8);
    let rewritten = verify(&db, Some(&early)).unwrap().unwrap_err();
    assert!(matches!(rewritten, Unverified::Rewritten(3)), "{rewritten}");
}

#[tokio::test]
async fn a_durable_event_the_log_refuses_is_an_error_and_is_written_once_it_can_be() {
    let (_dir, db) = open();
    let a = Audit::open(&db, Replacer::default()).unwrap();
    a.record(EventKind::Prompt, None, json!("before"));
    a.flush();
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'no space'); END;",
    )
    .unwrap();
    let refused = a
        .durable(EventKind::PolicyDecision, None, json!("decision"))
        .await;
    assert!(
        matches!(&refused, Err(AuditError::NotWritten(why)) if why.contains("no space")),
        "{refused:?}"
    );
    assert!(a.failing().is_some_and(|why| why.contains("no space")));
    // The disk frees up: what was refused is written with the next batch, in order.
    conn.execute_batch("DROP TRIGGER refuse;").unwrap();
    a.durable(EventKind::ToolResult, None, json!("after"))
        .await
        .unwrap();
    assert!(a.failing().is_none());
    a.close();
    let verified = verify(&db, None).unwrap().unwrap();
    assert_eq!(verified.events, 3);
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kinds, ["prompt", "policy_decision", "tool_result"]);
}

#[tokio::test]
async fn a_row_dropped_quietly_is_not_durable() {
    let (_dir, db) = open();
    let a = Audit::open(&db, Replacer::default()).unwrap();
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER drop_decisions BEFORE INSERT ON audit WHEN NEW.kind = 'policy_decision'
         BEGIN SELECT RAISE(IGNORE); END;",
    )
    .unwrap();
    let dropped = a
        .durable(EventKind::PolicyDecision, None, json!("decision"))
        .await;
    assert!(
        matches!(&dropped, Err(AuditError::NotWritten(why)) if why.contains("was not stored")),
        "{dropped:?}"
    );
    conn.execute_batch("DROP TRIGGER drop_decisions;").unwrap();
    a.durable(EventKind::ToolResult, None, json!("after"))
        .await
        .unwrap();
    a.close();
    assert_eq!(verify(&db, None).unwrap().unwrap().events, 2);
}
