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
            "tool_call",
            Some("main"),
            json!({"i": i, "arg": "pw=hunter2-secret"}),
        );
    }
    a.close();
    assert_eq!(verify(&db).unwrap(), Ok(100));
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
        a.record("x", None, json!(i));
        b.record("y", None, json!(i));
    }
    a.close();
    b.close();
    assert_eq!(verify(&db).unwrap(), Ok(400));
}

#[test]
fn the_table_refuses_updates_and_deletes() {
    let (_dir, db) = open();
    let a = Audit::open(&db, Replacer::default()).unwrap();
    a.record("x", None, json!(1));
    a.close();
    let conn = Connection::open(&db).unwrap();
    assert!(conn.execute("UPDATE audit SET kind = 'y'", []).is_err());
    assert!(conn.execute("DELETE FROM audit", []).is_err());
}
