//! The audit log: sustained appends through the writer (events of a realistic size, batched
//! into transactions), then `nanoclaw audit verify` over 1,000,000 events. Prints both;
//! asserts nothing.
//!
//! Run with `cargo bench -p nanoclaw --bench audit`.

#[path = "../src/audit/log.rs"]
#[allow(dead_code)]
mod audit;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use serde_json::json;
use support::{TestHome, Wire, text};

const TOTAL: u64 = 1_000_000;
const MEASURED: u64 = 200_000;

fn main() {
    let h = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Creates the store and its audit table.
    let out = rt.block_on(h.run(&["audit", "verify"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let db = h.path().join("nanoclaw.db");
    let log = audit::Audit::open(&db, nanoclaw_core::secret::Replacer::default()).expect("audit");
    let event = |i: u64| {
        json!({
            "turn": i / 10,
            "call_id": format!("toolu_{i:016x}"),
            "tool": "shell",
            "arguments": {"command": format!("grep -rn 'pattern {i}' src/ | head -20")},
            "decision": "allow",
            "reason": "default: tools that run inside the sandbox are allowed",
        })
    };
    let started = Instant::now();
    for i in 0..MEASURED {
        log.record(
            crate::audit::EventKind::PolicyDecision,
            Some("main"),
            event(i),
        );
    }
    log.flush();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "audit append: {MEASURED} events in {secs:.2} s: {:.0} events/s sustained (recording, batching, hashing, committing)",
        MEASURED as f64 / secs
    );
    for i in MEASURED..TOTAL {
        log.record(
            crate::audit::EventKind::PolicyDecision,
            Some("main"),
            event(i),
        );
    }
    log.close();
    let started = Instant::now();
    let out = rt.block_on(h.run(&["audit", "verify"]));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "audit verify over {TOTAL} events: {secs:.2} s ({})",
        text(&out.stdout).trim()
    );
}
