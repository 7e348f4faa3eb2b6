//! The audit log end to end: a turn leaves every kind of event in a chain that verifies, and
//! each kind of tampering with the stored chain (edit, delete, insert, reorder) is found at its
//! position by `nanoclaw audit verify`, and events cut from the end are found against an
//! anchor kept from an earlier verify.

mod support;

use rusqlite::{Connection, params};
use support::model_server::{ScriptedModel, Step};
use support::{TestHome, Wire, text};

async fn home_with_a_turn() -> (ScriptedModel, TestHome) {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Tools(vec![(
                "shell".into(),
                r#"{"command": "echo audited"}"#.into(),
            )]),
            Step::Text("all done".into()),
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        "[sandbox]\nbackend = \"bwrap\"\n",
    );
    let out = h.run(&["ask", "please audit this"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    (model, h)
}

fn db(h: &TestHome) -> Connection {
    let c = Connection::open(h.path().join("nanoclaw.db")).unwrap();
    // An attacker with the file can drop the append-only triggers; the chain still tells.
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    c
}

async fn verify(h: &TestHome) -> (Option<i32>, String) {
    let out = h.run(&["audit", "verify"]).await;
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[tokio::test]
async fn a_turn_is_recorded_in_full_and_verifies() {
    let (_model, h) = home_with_a_turn().await;
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(0), "{out}");
    let shown = text(&h.run(&["audit", "show"]).await.stdout);
    for kind in [
        "message_received",
        "prompt",
        "model_response",
        "tool_call",
        "policy_decision",
        "tool_result",
        "message_sent",
    ] {
        assert!(
            shown.contains(&format!(" {kind} main ")),
            "{kind} missing:\n{shown}"
        );
    }
    assert!(shown.contains("please audit this") && shown.contains("all done"));
    // The decision names its rule and every rule that matched; the message its sender's role.
    let decision = text(
        &h.run(&["audit", "show", "--kind", "policy_decision"])
            .await
            .stdout,
    );
    assert!(
        decision.contains("\"matched\":[]") && decision.contains("\"sender\":\"owner\""),
        "{decision}"
    );
    let received = text(
        &h.run(&["audit", "show", "--kind", "message_received"])
            .await
            .stdout,
    );
    assert!(
        received.contains("\"role\":\"owner\"") && received.contains("\"outside\":false"),
        "{received}"
    );
    // Filters.
    let tools = text(
        &h.run(&["audit", "show", "--kind", "tool_result"])
            .await
            .stdout,
    );
    assert_eq!(tools.lines().count(), 1, "{tools}");
    assert!(tools.contains("audited"), "{tools}");
    assert!(text(&h.run(&["audit", "show", "--group", "other"]).await.stdout).is_empty());
    assert!(
        text(&h.run(&["audit", "show", "--since", "1h"]).await.stdout)
            .lines()
            .count()
            >= 7
    );
    assert!(
        text(
            &h.run(&["audit", "show", "--since", "2099-01-01"])
                .await
                .stdout
        )
        .is_empty()
    );
    let bad = h.run(&["audit", "show", "--since", "yesterday"]).await;
    assert_eq!(bad.status.code(), Some(2));
    // A kind that does not exist is a typo, not an empty log.
    let bad = h.run(&["audit", "show", "--kind", "tool_resutl"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("\"tool_resutl\" is no event kind"),
        "{}",
        text(&bad.stderr)
    );
    // Export: one JSON object per event, with the hashes an outside tool can check.
    let export = text(&h.run(&["audit", "export", "--jsonl"]).await.stdout);
    let lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), shown.lines().count());
    assert_eq!(lines[0]["event"]["seq"], 1);
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
}

#[tokio::test]
async fn an_edited_event_is_found() {
    let (_m, h) = home_with_a_turn().await;
    db(&h)
        .execute(
            "UPDATE audit SET body = replace(body, 'please audit this', 'something else') WHERE kind = 'message_received'",
            [],
        )
        .unwrap();
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("broken at event 2: its content does not match its hash"),
        "{out}"
    );
}

#[tokio::test]
async fn a_deleted_event_is_found() {
    let (_m, h) = home_with_a_turn().await;
    db(&h)
        .execute("DELETE FROM audit WHERE seq = 4", [])
        .unwrap();
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("broken at event 4: event 4 is missing"),
        "{out}"
    );
}

#[tokio::test]
async fn events_cut_from_the_end_are_found_against_an_anchor() {
    let (_m, h) = home_with_a_turn().await;
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(0), "{out}");
    let newest = out
        .lines()
        .find_map(|l| l.strip_prefix("newest: "))
        .unwrap_or_else(|| panic!("no newest event printed: {out}"))
        .to_owned();
    let c = db(&h);
    let last: i64 = c
        .query_row("SELECT max(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert!(newest.starts_with(&format!("{last}:")), "{newest}");
    let anchored = h.run(&["audit", "verify", "--anchor", &newest]).await;
    assert!(anchored.status.success(), "{}", text(&anchored.stderr));
    assert!(text(&anchored.stdout).contains("holds"));

    c.execute("DELETE FROM audit WHERE seq = ?1", [last])
        .unwrap();
    // The chain alone cannot tell; the anchors the daemon kept beside it can, unasked.
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("events were removed from its end"), "{out}");
    std::fs::remove_file(h.path().join("audit.anchors")).unwrap();
    assert_eq!(
        verify(&h).await.0,
        Some(0),
        "without its anchors, a cut tail chains"
    );
    let anchored = h.run(&["audit", "verify", "--anchor", &newest]).await;
    assert_eq!(anchored.status.code(), Some(1));
    assert!(
        text(&anchored.stderr).contains(&format!(
            "ends at event {}, before the anchor's event {last}: events were removed",
            last - 1
        )),
        "{}",
        text(&anchored.stderr)
    );

    let bad = h.run(&["audit", "verify", "--anchor", "12:abc"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("HASH is not 64 hex digits"),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test]
async fn an_inserted_event_is_found_even_with_a_well_formed_hash() {
    let (_m, h) = home_with_a_turn().await;
    let c = db(&h);
    let n: i64 = c
        .query_row("SELECT max(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    for seq in (3..=n).rev() {
        c.execute("UPDATE audit SET seq = seq + 1 WHERE seq = ?1", [seq])
            .unwrap();
    }
    // A forged event 3 that chains correctly onto event 2: the break shows at the next one.
    let prev: Vec<u8> = c
        .query_row("SELECT hash FROM audit WHERE seq = 2", [], |r| r.get(0))
        .unwrap();
    let event = nanoclaw_core::audit::Event {
        seq: 3,
        at: 1,
        kind: "tool_call".into(),
        group: Some("main".into()),
        data: serde_json::json!({"tool": "shell", "arguments": {"command": "forged"}}),
    };
    let body = event.body();
    let mut p = [0u8; 32];
    p.copy_from_slice(&prev);
    let hash = nanoclaw_core::audit::hash(&p, &body);
    c.execute(
        "INSERT INTO audit (seq, at, kind, group_id, body, prev_hash, hash) VALUES (3, 1, 'tool_call', 'main', ?1, ?2, ?3)",
        params![body, prev, &hash[..]],
    )
    .unwrap();
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("broken at event 4: it does not follow"),
        "{out}"
    );
}

#[tokio::test]
async fn reordered_events_are_found() {
    let (_m, h) = home_with_a_turn().await;
    let c = db(&h);
    c.execute_batch(
        "UPDATE audit SET seq = -1 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = -1;",
    )
    .unwrap();
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("broken at event 3"), "{out}");
}

// The red team's truncation: with the append-only triggers dropped, every event deleted, and
// the anchors removed too, verify said "0 events, hash chain intact" while the store held turns.
#[tokio::test]
async fn deleting_every_event_is_found_by_the_stores_turns() {
    let (_m, h) = home_with_a_turn().await;
    let c = db(&h);
    c.execute("DELETE FROM audit", []).unwrap();
    // The turn is a minute old (a turn of the last seconds may still have events in flight).
    c.execute("UPDATE turns SET started_at = started_at - 60000", [])
        .unwrap();
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("events were removed from its end"), "{out}");
    std::fs::remove_file(h.path().join("audit.anchors")).unwrap();
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the store holds turn 1, but the audit log has no event of it"),
        "{out}"
    );
}

#[tokio::test]
async fn the_daemon_keeps_anchors_outside_the_database() {
    let (_m, h) = home_with_a_turn().await;
    let anchors = std::fs::read_to_string(h.path().join("audit.anchors")).unwrap();
    let last = anchors.lines().last().unwrap_or_default().to_owned();
    let (code, out) = verify(&h).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("newest: {last}")), "{last} vs {out}");
    // A line that is not an anchor is named with its file and line.
    std::fs::write(
        h.path().join("audit.anchors"),
        format!("{anchors}garbage\n"),
    )
    .unwrap();
    let (code, out) = verify(&h).await;
    assert_ne!(code, Some(0));
    assert!(out.contains("audit.anchors line"), "{out}");
}

#[tokio::test]
async fn tool_does_not_run_when_its_decision_is_not_durable() {
    // The audit log refuses the decision (a full disk, a broken database: here a trigger):
    // the call must not run, and the model is told why.
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Tools(vec![(
                "shell".into(),
                r#"{"command": "touch /workspace/ran"}"#.into(),
            )]),
            Step::EchoToolResult,
            Step::Text("a second turn".into()),
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        "[sandbox]\nbackend = \"bwrap\"\n",
    );
    // The store exists once any command has opened it.
    assert!(h.run(&["task", "list"]).await.status.success());
    Connection::open(h.path().join("nanoclaw.db"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_decisions BEFORE INSERT ON audit WHEN NEW.kind = 'policy_decision'
             BEGIN SELECT RAISE(ABORT, 'the disk is full'); END;",
        )
        .unwrap();
    let out = h.run(&["ask", "touch a file"]).await;
    let reply = text(&out.stdout);
    assert!(
        reply.contains("shell was not run: its decision could not be recorded")
            && reply.contains("the disk is full"),
        "{reply}{}",
        text(&out.stderr)
    );
    assert!(
        !h.workspace("main").join("ran").exists(),
        "the command ran though its decision was never recorded"
    );
}
