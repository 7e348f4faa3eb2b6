//! The bubblewrap sandbox, attacked through `nanoclaw sandbox exec` (the same path as the
//! agent's shell tool) and through the file tools. Each test is an escape a compromised agent
//! would try; each must fail.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::{ScriptedModel, Step, TestHome, Wire, text};

async fn home() -> TestHome {
    TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        "[limits]\ncommand_timeout_secs = 3\noutput_limit_bytes = 4096\n",
    )
}

async fn sh(home: &TestHome, group: &str, script: &str) -> Output {
    home.run(&[
        "sandbox", "exec", "--group", group, "--", "bash", "-c", script,
    ])
    .await
}

#[tokio::test]
async fn exit_status_and_output_pass_through() {
    let h = home().await;
    let out = sh(&h, "main", "echo out; echo err >&2; exit 7").await;
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
}

#[tokio::test]
async fn runs_unprivileged_in_workspace_with_empty_environment() {
    let h = home().await;
    let out = sh(
        &h,
        "main",
        "pwd; id -u; env | sort | cut -d= -f1 | tr '\\n' ' '",
    )
    .await;
    let o = text(&out.stdout);
    let mut lines = o.lines();
    assert_eq!(lines.next(), Some("/workspace"));
    assert_eq!(lines.next(), Some("1000"));
    let vars = lines.next().unwrap_or("");
    for leaked in [
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "NANOCLAW_HOME",
        "CARGO",
    ] {
        assert!(
            !vars.contains(leaked),
            "{leaked} leaked into the sandbox: {vars}"
        );
    }
}

#[tokio::test]
async fn host_secrets_and_data_dir_are_invisible() {
    let h = home().await;
    let data = h.path().display().to_string();
    let script = format!(
        "for p in /etc/shadow /root {data} {data}/nanoclaw.toml {data}/api.token {data}/nanoclaw.db /home; do \
         if [ -e \"$p\" ]; then echo \"VISIBLE $p\"; fi; done; echo checked"
    );
    let out = sh(&h, "main", &script).await;
    assert_eq!(text(&out.stdout), "checked\n", "{}", text(&out.stdout));
}

#[tokio::test]
async fn system_directories_are_read_only() {
    let h = home().await;
    let out = sh(
        &h,
        "main",
        "for d in /usr /etc /bin /; do touch $d/x 2>/dev/null && echo WROTE $d; done; echo done",
    )
    .await;
    assert_eq!(text(&out.stdout), "done\n");
}

#[tokio::test]
async fn no_network_but_loopback() {
    let h = home().await;
    // A server on the host's loopback must be unreachable from the sandbox's own loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = sh(
        &h,
        "main",
        &format!(
            "ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; \
             (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo HOST-LOOPBACK-REACHED; \
             (exec 3<>/dev/tcp/1.1.1.1/53) 2>/dev/null && echo OUTSIDE-REACHED; echo done"
        ),
    )
    .await;
    let o = text(&out.stdout);
    assert!(!o.contains("REACHED"), "{o}");
    assert!(o.lines().filter(|l| *l != "done").all(|l| l == "lo"), "{o}");
}

#[tokio::test]
async fn other_groups_workspaces_are_invisible() {
    let h = home().await;
    assert!(
        sh(&h, "alpha", "echo private > mine.txt")
            .await
            .status
            .success()
    );
    let out = sh(&h, "beta", "ls /workspace/..; cat ../alpha/mine.txt 2>/dev/null; find / -name mine.txt 2>/dev/null; echo done").await;
    assert!(
        !text(&out.stdout).contains("private") && !text(&out.stdout).contains("mine.txt"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_tree_and_nothing_outlives_the_command() {
    let h = home().await;
    let marker = format!("nanoclaw-test-{}", std::process::id());
    let started = Instant::now();
    let out = sh(
        &h,
        "main",
        &format!("(exec -a {marker}-bg sleep 300) & exec -a {marker}-fg sleep 300"),
    )
    .await;
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(text(&out.stderr).contains("wall-time limit"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "processes outlived the sandbox: {}",
        text(&ps.stdout)
    );

    // A background process of a command that exits normally is gone too.
    let out = sh(
        &h,
        "main",
        &format!("(exec -a {marker}-orphan sleep 300) & echo started"),
    )
    .await;
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "a background process outlived its command: {}",
        text(&ps.stdout)
    );
}

#[tokio::test]
async fn output_flood_is_capped_with_a_note() {
    let h = home().await;
    let out = sh(&h, "main", "head -c 1000000 /dev/zero | tr '\\0' x").await;
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 4096);
    assert!(
        text(&out.stderr).contains("995904 more bytes of stdout were dropped"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn no_capabilities_and_no_new_privileges() {
    let h = home().await;
    let out = sh(
        &h,
        "main",
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
    )
    .await;
    let o = text(&out.stdout);
    assert!(o.contains("CapEff:\t0000000000000000"), "{o}");
    assert!(o.contains("CapBnd:\t0000000000000000"), "{o}");
    assert!(o.contains("NoNewPrivs:\t1"), "{o}");
}

// ----- the file tools, driven by a scripted model through the agent -----

fn call(name: &str, args: serde_json::Value) -> (String, String) {
    (name.to_owned(), args.to_string())
}

/// Run one turn whose single step is `calls`, and return the tool results the model received.
async fn tool_results(h_extra: &str, setup: &str, calls: Vec<(String, String)>) -> Vec<String> {
    let n = calls.len();
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::Tools(calls), Step::Text("done".into())],
    )
    .await;
    let h = TestHome::new(Wire::Anthropic, &model.url, h_extra);
    if !setup.is_empty() {
        assert!(sh(&h, "main", setup).await.status.success());
    }
    let out = h.run(&["ask", "go"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = &model.requests()[1];
    let blocks = second["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(blocks.len(), n);
    blocks
        .iter()
        .map(|b| {
            format!(
                "{}{}",
                if b["is_error"] == true { "ERR " } else { "" },
                b["content"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn file_tools_write_read_edit_list_grep() {
    use serde_json::json;
    let r = tool_results(
        "",
        "",
        vec![
            call(
                "write_file",
                json!({"path": "notes/a.md", "content": "one\ntwo\nthree\n"}),
            ),
            call(
                "read_file",
                json!({"path": "notes/a.md", "offset": 2, "limit": 1}),
            ),
            call(
                "edit_file",
                json!({"path": "notes/a.md", "old_text": "two", "new_text": "TWO"}),
            ),
            call(
                "edit_file",
                json!({"path": "notes/a.md", "old_text": "zzz", "new_text": "x"}),
            ),
            call("write_file", json!({"path": "dup.txt", "content": "ab ab"})),
            call(
                "edit_file",
                json!({"path": "dup.txt", "old_text": "ab", "new_text": "x"}),
            ),
            call("list_files", json!({"pattern": "**/*.md"})),
            call("grep", json!({"pattern": "^T", "ignore_case": false})),
            call("read_file", json!({"path": "missing.txt"})),
        ],
    )
    .await;
    assert!(r[0].starts_with("wrote 14 bytes"), "{}", r[0]);
    assert_eq!(r[1], "two\n");
    assert_eq!(r[2], "edited /workspace/notes/a.md: replaced 1 occurrence");
    assert!(r[3].starts_with("ERR old text not found"), "{}", r[3]);
    assert!(r[5].starts_with("ERR old text occurs 2 times"), "{}", r[5]);
    assert_eq!(r[6], "notes/a.md");
    assert_eq!(r[7], "notes/a.md:2:TWO");
    assert_eq!(
        r[8],
        "ERR /workspace/missing.txt: no such file or directory"
    );
}

#[tokio::test]
async fn symlink_to_host_file_is_resolved_inside_the_sandbox_only() {
    use serde_json::json;
    // The agent plants symlinks to host secrets; the file tools follow them inside the sandbox,
    // where those files do not exist, and the host never opens them.
    let r = tool_results(
        "",
        "ln -s /etc/shadow shadow; ln -s /root rootdir; ln -s /proc/1/environ env1",
        vec![
            call("read_file", json!({"path": "shadow"})),
            call("list_files", json!({"pattern": "**", "path": "rootdir"})),
            call("write_file", json!({"path": "/etc/evil", "content": "x"})),
            call("read_file", json!({"path": "env1"})),
        ],
    )
    .await;
    assert!(r[0].starts_with("ERR"), "{}", r[0]);
    assert!(r[1].starts_with("ERR"), "{}", r[1]);
    assert!(r[2].starts_with("ERR"), "{}", r[2]);
    assert!(
        !r[3].contains("ANTHROPIC_API_KEY") && !r[3].contains("test-key"),
        "{}",
        r[3]
    );
}

#[tokio::test]
async fn shell_tool_reports_timeout_and_truncation_to_the_model() {
    use serde_json::json;
    let r = tool_results(
        "[limits]\ncommand_timeout_secs = 2\noutput_limit_bytes = 1024\nmemory_mb = 64\ncpu_time_secs = 1\n",
        "",
        vec![
            call("shell", json!({"command": "sleep 30"})),
            call("shell", json!({"command": "yes | head -c 5000"})),
            call("shell", json!({"command": "true", "timeout_secs": 0})),
            call("shell", json!({"command": "python3 -c 'x = bytearray(300 * 1024 * 1024)'"})),
            call("shell", json!({"command": "timeout 10 sh -c 'while :; do :; done'"})),
        ],
    )
    .await;
    assert!(
        r[3].starts_with("ERR")
            && r[3].contains("limit hit: the sandbox hit its memory limit of 64 MiB"),
        "{}",
        r[3]
    );
    assert!(
        r[4].starts_with("ERR") && r[4].contains("CPU-time limit of 1 s"),
        "{}",
        r[4]
    );
    assert!(
        r[0].starts_with("ERR killed: the command hit its wall-time limit of 2 s"),
        "{}",
        r[0]
    );
    assert!(
        r[1].contains("[truncated: 3976 more bytes of stdout were dropped"),
        "{}",
        r[1]
    );
    assert!(
        r[2].starts_with("ERR invalid arguments for shell"),
        "{}",
        r[2]
    );
}

/// `rename(2)` between two directories where the command may write (git moves its objects so,
/// and Python's `os.rename`); `mv` hid the refusal by copying.
#[tokio::test]
async fn a_file_moves_between_directories_of_the_workspace_and_tmp() {
    let h = home().await;
    let out = sh(
        &h,
        "main",
        "python3 -c 'import os\nfor d in (\"/workspace\", \"/tmp\"):\n    os.makedirs(d + \"/a/b\", exist_ok=True)\n    open(d + \"/a/f\", \"w\").write(\"1\")\n    os.rename(d + \"/a/f\", d + \"/a/b/f\")\n    os.link(d + \"/a/b/f\", d + \"/a/g\")\nprint(\"moved\")'",
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("moved"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Out of the writable places it is still refused.
    let out = sh(
        &h,
        "main",
        "python3 -c 'import os; os.rename(\"/workspace/a/b/f\", \"/usr/f\")'",
    )
    .await;
    assert!(!out.status.success());
}
