//! MCP servers from PyPI (`mcp-server-time`, `mcp-server-git`), each in a real bwrap sandbox of
//! its group, spoken to over its stdio: their tools offered under `mcp__SERVER__TOOL`, judged by
//! the policy as `SERVER.TOOL` (asked by default, allowed or asked by rules), their results
//! outside content; pinned at first sight.

mod support;

use std::time::Duration;

use support::model_server::{ScriptedModel, Step};
use support::{TestHome, Wire, text};

/// Where the test setup installs the servers (`scripts/deps.sh --test`): a venv under /usr,
/// which every sandbox sees read-only.
const VENV: &str = "/usr/local/lib/nanoclaw-mcp/bin";

fn installed(server: &str) -> Option<String> {
    let path = format!("{VENV}/{server}");
    if std::path::Path::new(&path).exists() {
        Some(path)
    } else {
        support::skip(&format!(
            "{path} is not installed (scripts/deps.sh --test installs it)"
        ));
        None
    }
}

fn call(name: &str, args: &str) -> Step {
    Step::Tools(vec![(name.into(), args.into())])
}

#[tokio::test]
async fn a_sandboxed_time_server_answers_through_the_gate() {
    let Some(time) = installed("mcp-server-time") else {
        return;
    };
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            call(
                "mcp__time__get_current_time",
                r#"{"timezone": "Europe/Berlin"}"#,
            ),
            Step::EchoToolResult,
            call(
                "mcp__time__convert_time",
                r#"{"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}"#,
            ),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!("[sandbox]\nbackend = \"bwrap\"\n[mcp.servers.time]\ncommand = [\"{time}\"]\n"),
    );
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"time.get_current_time\"\naction = \"allow\"\n",
    )
    .unwrap();
    let out = h.run(&["ask", "what time is it in Berlin?"]).await;
    let reply = text(&out.stdout);
    assert!(out.status.success(), "{reply}{}", text(&out.stderr));
    assert!(
        reply.contains("Europe/Berlin") && reply.contains("datetime"),
        "{reply}"
    );
    // The model was offered the server's tools under their wire names.
    let offered = model.requests()[0].to_string();
    assert!(offered.contains("mcp__time__get_current_time"), "{offered}");
    // Outside content: the result reached the model wrapped, and tainted the turn.
    let second = model.requests()[1].to_string();
    assert!(second.contains("untrusted-data"), "{second}");
    // The tool no rule allows asks; with no answer it is refused (asked on the terminal, and
    // this `ask` has no one answering: the call waits, then times out as denied).
    let decisions = text(
        &h.run(&["audit", "show", "--kind", "policy_decision"])
            .await
            .stdout,
    );
    assert!(
        decisions.contains("\"tool\":\"time.get_current_time\"")
            && decisions.contains("\"decision\":\"allow\""),
        "{decisions}"
    );
    let events = text(
        &h.run(&["audit", "show", "--kind", "mcp_server"])
            .await
            .stdout,
    );
    assert!(events.contains("\"event\":\"started\""), "{events}");
    let pinned = text(
        &h.run(&["audit", "show", "--kind", "mcp_tools"])
            .await
            .stdout,
    );
    assert!(pinned.contains("\"event\":\"pinned\""), "{pinned}");
    let _ = Duration::from_secs(0);
}
