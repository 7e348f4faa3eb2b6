//! One policy decision against 200 rules (globs on tools and groups, regex, glob, one-of and
//! equality matchers on arguments), for a call that matches only the last rule and for one
//! that matches none. Prints p50 and p99; asserts nothing.
//!
//! Run with `cargo bench -p nanoclaw-core --bench policy`.

use std::time::Instant;

use nanoclaw_core::policy::{Context, Policy, SenderRole};
use nanoclaw_core::tool::ToolEffect;
use serde_json::json;

const RULES: usize = 200;
const RUNS: usize = 200_000;

fn policy() -> Policy {
    let mut text = String::from("[approvers.owner]\nterminal = true\n");
    for i in 0..RULES - 1 {
        let rule = match i % 5 {
            0 => format!("tool = \"svc{i}.*\"\naction = \"ask\"\n"),
            1 => format!(
                "tool = \"shell\"\nargs = {{ command = {{ regex = \"^deploy-{i}\\\\s+--prod\" }} }}\naction = \"deny\"\n"
            ),
            2 => format!(
                "tool = \"http_request\"\nargs = {{ url = {{ glob = \"https://host{i}.example/*\" }}, method = {{ one_of = [\"POST\", \"PUT\"] }} }}\naction = \"ask\"\n"
            ),
            3 => format!("tool = \"write_file\"\ngroup = \"team-{i}*\"\naction = \"deny\"\n"),
            _ => format!(
                "tool = \"schedule_task\"\nargs = {{ \"when.every_secs\" = {{ equals = {i} }} }}\ntainted = true\naction = \"allow\"\n"
            ),
        };
        text.push_str(&format!("[[rule]]\nname = \"r{i}\"\n{rule}"));
    }
    text.push_str("[[rule]]\nname = \"last\"\ntool = \"shell\"\nargs = { command = { glob = \"*make release*\" } }\naction = \"ask\"\n");
    Policy::parse(&text).expect("bench policy")
}

fn measure(policy: &Policy, args: &serde_json::Value) -> (f64, f64) {
    let ctx = Context {
        tool: "shell",
        args,
        group: "main",
        channel: "terminal",
        sender: SenderRole::Owner,
        tainted: true,
        effect: ToolEffect::Sandboxed,
    };
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        std::hint::black_box(policy.decide(std::hint::black_box(&ctx)));
        times.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[RUNS / 2], times[RUNS * 99 / 100])
}

fn main() {
    let policy = policy();
    let last = json!({"command": "cd src && make release VERSION=1.2.3 && echo done"});
    let none = json!({"command": "ls -la /workspace/some/longer/path"});
    for (what, args) in [
        ("matches only the last rule", &last),
        ("matches no rule", &none),
    ] {
        let (p50, p99) = measure(&policy, args);
        println!("policy decision, {RULES} rules, call {what}: p50 {p50:.2} µs, p99 {p99:.2} µs");
    }
}
