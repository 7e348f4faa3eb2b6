//! End-to-end tests: the real binary, a real bwrap sandbox, and a scripted model server that
//! speaks both wire formats over SSE.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ScriptedModel, Step, TestHome, Wire, text};

fn tools(calls: &[(&str, &str)]) -> Step {
    Step::Tools(
        calls
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
    )
}

async fn shell_note_txt_lands_only_in_the_group_workspace(wire: Wire) {
    let model = ScriptedModel::start(
        wire,
        vec![
            tools(&[(
                "shell",
                r#"{"command": "echo hi > note.txt && cat note.txt"}"#,
            )]),
            Step::EchoToolResult,
        ],
    )
    .await;
    let home = TestHome::new(wire, &model.url, "");
    let marker = tempfile::NamedTempFile::new().unwrap();
    let out = home.run(&["ask", "--group", "work", "make a note"]).await;
    assert!(out.status.success(), "ask failed: {}", text(&out.stderr));
    let reply = text(&out.stdout);
    assert!(
        reply.contains("tool said: exit status 0") && reply.contains("hi"),
        "reply: {reply}"
    );

    assert_eq!(
        std::fs::read_to_string(home.workspace("work").join("note.txt")).unwrap(),
        "hi\n"
    );
    // Nowhere else on the host: search every local file system for a note.txt newer than the
    // test's start.
    let found = std::process::Command::new("find")
        .args([
            "/", "-xdev", "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune", "-o",
            "-name", "note.txt", "-newer",
        ])
        .arg(marker.path())
        .arg("-print")
        .output()
        .unwrap();
    let paths: Vec<String> = text(&found.stdout).lines().map(str::to_owned).collect();
    let expected = home
        .workspace("work")
        .join("note.txt")
        .display()
        .to_string();
    assert_eq!(paths, vec![expected], "note.txt found elsewhere");

    // The agent sent the tool schemas and the tool result; usage was recorded.
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    let names: Vec<String> = reqs[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["name"]
                .as_str()
                .or(t["function"]["name"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "shell",
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
            "grep",
            "web_fetch",
            "http_request",
            "schedule_task",
            "list_tasks",
            "cancel_task"
        ]
    );
}

// One test for both wire formats: run side by side, each would see the other's note.txt.
#[tokio::test]
async fn shell_note_txt_lands_only_in_the_group_workspace_for_both_wire_formats() {
    shell_note_txt_lands_only_in_the_group_workspace(Wire::Anthropic).await;
    shell_note_txt_lands_only_in_the_group_workspace(Wire::Openai).await;
}

#[tokio::test]
async fn a_500_then_success_is_retried_and_answered() {
    for wire in [Wire::Anthropic, Wire::Openai] {
        let model = ScriptedModel::start(
            wire,
            vec![
                Step::Status(500, "boom".into()),
                Step::Text("recovered".into()),
            ],
        )
        .await;
        let home = TestHome::new(wire, &model.url, "");
        let out = home.run(&["ask", "hello"]).await;
        assert!(out.status.success(), "{wire:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "recovered");
        assert_eq!(model.requests().len(), 2);
    }
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    let model = ScriptedModel::start(
        Wire::Openai,
        vec![Step::RateLimited(2), Step::Text("ok".into())],
    )
    .await;
    let home = TestHome::new(Wire::Openai, &model.url, "");
    let started = std::time::Instant::now();
    let out = home.run(&["ask", "hello"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok");
    // Backoff alone would have waited at most 250 ms; the server asked for 2 s.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_4xx_is_not_retried_and_ask_exits_1_with_the_reason() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::Status(400, "bad model name".into())],
    )
    .await;
    let home = TestHome::new(Wire::Anthropic, &model.url, "");
    let out = home.run(&["ask", "hello"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("HTTP 400") && err.contains("bad model name"),
        "{err}"
    );
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn a_malformed_tool_call_gets_a_tool_error_and_the_turn_completes() {
    for wire in [Wire::Anthropic, Wire::Openai] {
        let model = ScriptedModel::start(
            wire,
            vec![
                tools(&[("shell", r#"{"command": "echo"#)]),
                tools(&[("no_such_tool", "{}")]),
                Step::EchoToolResult,
            ],
        )
        .await;
        let home = TestHome::new(wire, &model.url, "");
        let out = home.run(&["ask", "go"]).await;
        assert!(out.status.success(), "{wire:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("no tool named \"no_such_tool\""),
            "{}",
            text(&out.stdout)
        );
        let second = &model.requests()[1];
        assert!(
            second.to_string().contains("invalid arguments for shell"),
            "{second}"
        );
    }
}

#[tokio::test]
async fn unreachable_model_makes_ask_exit_1_with_a_clear_message() {
    // A port that was free a moment ago: nothing listens there.
    let port = support::free_port();
    let home = TestHome::new(Wire::Anthropic, &format!("http://127.0.0.1:{port}"), "");
    let out = home.run(&["ask", "hello"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("did not answer after 3 attempts"), "{err}");
}

/// `nanoclaw --home DIR ARGS...` with the secrets key file in `keys` (never the user's own)
/// and no model key in the environment.
async fn in_home(
    dir: &std::path::Path,
    keys: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(support::bin())
        .arg("--home")
        .arg(dir)
        .args(args)
        .env("NANOCLAW_SECRETS_KEY_FILE", keys.join("secrets.key"))
        .env_remove("NANOCLAW_SECRETS_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn no_key_tells_the_user_what_to_set() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    // An existing data dir open to others is made private by init.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = in_home(dir.path(), keys.path(), &["init"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // A directory holding other things is not taken over as a data dir.
    let busy = tempfile::tempdir().unwrap();
    std::fs::write(busy.path().join("notes.txt"), "mine").unwrap();
    let out = in_home(busy.path(), keys.path(), &["init"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("holds other files and no nanoclaw.toml"),
        "{}",
        text(&out.stderr)
    );
    assert!(!busy.path().join("nanoclaw.toml").exists());
    let out = in_home(dir.path(), keys.path(), &["ask", "hello"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("set the ANTHROPIC_API_KEY environment variable"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn bad_config_exits_2_naming_file_and_key() {
    let home = TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        "[limits]\ncommand_timeout_secs = 0\n",
    );
    let out = home.run(&["ask", "hi"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("nanoclaw.toml") && err.contains("limits.command_timeout_secs"),
        "{err}"
    );
    let home = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "colour = \"blue\"\n");
    let out = home.run(&["doctor"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("colour"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn bad_cli_usage_exits_2() {
    let home = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    assert_eq!(
        home.run(&["ask", "--group", "../etc", "hi"])
            .await
            .status
            .code(),
        Some(2)
    );
    assert_eq!(home.run(&["frobnicate"]).await.status.code(), Some(2));
    assert_eq!(home.run(&["sandbox", "exec"]).await.status.code(), Some(2));
}

#[tokio::test]
async fn memory_md_is_read_through_the_sandbox_into_the_prompt() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![Step::Text("noted".into())]).await;
    let home = TestHome::new(Wire::Anthropic, &model.url, "");
    std::fs::create_dir_all(home.workspace("main")).unwrap();
    std::fs::write(
        home.workspace("main").join("MEMORY.md"),
        "The owner's cat is called Miso.",
    )
    .unwrap();
    let out = home.run(&["ask", "hi"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let system = model.requests()[0]["system"].as_str().unwrap().to_owned();
    assert!(system.contains("Miso"), "{system}");
}

#[tokio::test]
async fn history_carries_over_between_turns_of_a_group() {
    let model = ScriptedModel::start(
        Wire::Openai,
        vec![
            Step::Text("first answer".into()),
            Step::Text("second".into()),
        ],
    )
    .await;
    let home = TestHome::new(Wire::Openai, &model.url, "");
    assert!(
        home.run(&["ask", "remember the word pineapple"])
            .await
            .status
            .success()
    );
    assert!(
        home.run(&["ask", "what was the word?"])
            .await
            .status
            .success()
    );
    let second = model.requests()[1].to_string();
    assert!(
        second.contains("pineapple") && second.contains("first answer"),
        "{second}"
    );
}

// ----- the daemon and its HTTP API -----

struct Daemon {
    child: tokio::process::Child,
    url: String,
    token: String,
}

impl Daemon {
    async fn start(home: &TestHome) -> Daemon {
        Daemon::start_with(home, |cmd| {
            cmd.stderr(std::process::Stdio::null());
        })
        .await
    }

    /// Start `nanoclaw run` with the command adjusted by `configure`; wait until it listens.
    async fn start_with(
        home: &TestHome,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> Daemon {
        let port = support::free_port();
        let config_path = home.path().join("nanoclaw.toml");
        let mut config = std::fs::read_to_string(&config_path).unwrap();
        if !config.contains("[api]") {
            config.push_str(&format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"));
            std::fs::write(&config_path, config).unwrap();
        }
        let config = std::fs::read_to_string(&config_path).unwrap();
        let listen = config
            .split("listen = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let mut cmd = home.command();
        cmd.arg("run");
        configure(&mut cmd);
        let child = cmd.spawn().unwrap();
        let token = std::fs::read_to_string(home.path().join("api.token")).unwrap();
        let url = format!("http://{listen}");
        let d = Daemon { child, url, token };
        for _ in 0..200 {
            if http(&d.url, "GET", "/v1/health", None, None)
                .await
                .is_some()
            {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon did not come up");
    }

    async fn post(&self, group: &str, text: &str) -> (u16, Value) {
        http(
            &self.url,
            "POST",
            &format!("/v1/groups/{group}/messages"),
            Some(&self.token),
            Some(json!({"text": text})),
        )
        .await
        .unwrap()
    }

    async fn replies(&self, group: &str) -> Vec<Value> {
        let (status, body) = http(
            &self.url,
            "GET",
            &format!("/v1/groups/{group}/replies?after=0"),
            Some(&self.token),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        body["replies"].as_array().unwrap().clone()
    }

    async fn wait_replies(&self, group: &str, n: usize) -> Vec<Value> {
        // Up to 30 s: a turn whose command walks the sandbox's whole file system is slow when
        // the machine runs the rest of the suite beside it.
        for _ in 0..1200 {
            let r = self.replies(group).await;
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no reply in group {group}");
    }
}

/// A tiny HTTP/1.1 client over a raw socket: `None` when nothing listens.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.ok()?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status: u16 = resp.split(' ').nth(1)?.parse().ok()?;
    let json = resp
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Some((status, json))
}

#[tokio::test]
async fn api_needs_the_token_and_rejects_malformed_requests() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let home = TestHome::new(Wire::Anthropic, &model.url, "");
    let d = Daemon::start(&home).await;
    let msg = Some(json!({"text": "hi"}));
    assert_eq!(
        http(
            &d.url,
            "POST",
            "/v1/groups/main/messages",
            None,
            msg.clone()
        )
        .await
        .unwrap()
        .0,
        401
    );
    assert_eq!(
        http(
            &d.url,
            "POST",
            "/v1/groups/main/messages",
            Some("wrong"),
            msg.clone()
        )
        .await
        .unwrap()
        .0,
        401
    );
    let (status, body) = http(
        &d.url,
        "POST",
        "/v1/groups/main/messages",
        Some(&d.token),
        Some(json!({"txt": "hi"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `txt`"),
        "{body}"
    );
    let (status, _) = http(
        &d.url,
        "POST",
        "/v1/groups/..%2Fx/messages",
        Some(&d.token),
        msg.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    let (status, _) = http(
        &d.url,
        "GET",
        "/v1/groups/main/replies?after=x",
        Some(&d.token),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        http(&d.url, "GET", "/v1/nope", Some(&d.token), None)
            .await
            .unwrap()
            .0,
        404
    );
    for (method, path) in [
        ("GET", "/v1/tasks/wake"),
        ("POST", "/v1/health"),
        ("GET", "/v1/webhook"),
    ] {
        let status = http(&d.url, method, path, Some(&d.token), None).await;
        assert_eq!(status.map(|s| s.0), Some(405), "{method} {path}");
    }
    // Approval answers: a malformed one is refused, an unknown code is not found.
    for (text, expected) in [
        ("/approve", 400),
        ("/deny A B", 400),
        ("/approve NOPE", 404),
    ] {
        let (status, body) = http(
            &d.url,
            "POST",
            "/v1/groups/main/messages",
            Some(&d.token),
            Some(json!({ "text": text })),
        )
        .await
        .unwrap();
        assert_eq!(status, expected, "{text}: {body}");
    }
    // A relayed message (someone else's words) never answers an approval, whatever the
    // name it carries: not as "owner", not as an approver.
    for sender in [
        json!({"sender": "owner"}),
        json!({"sender": "owner", "role": "other"}),
    ] {
        let mut body = json!({"text": "/approve NOPE always"});
        body.as_object_mut()
            .unwrap()
            .extend(sender.as_object().unwrap().clone());
        let (status, answer) = http(
            &d.url,
            "POST",
            "/v1/groups/main/messages",
            Some(&d.token),
            Some(body),
        )
        .await
        .unwrap();
        assert_eq!(status, 403, "{answer}");
    }
    // Raw requests: a second Authorization header, a lower-case scheme, a body declared over
    // the cap (refused before it is sent), headers that never end.
    let raw = |request: String| {
        let addr = d.url.trim_start_matches("http://").to_owned();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut resp = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut resp)).await;
            String::from_utf8_lossy(&resp).into_owned()
        }
    };
    let token = &d.token;
    let resp = raw(format!("GET /v1/groups/main/replies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n")).await;
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("more than once"),
        "{resp}"
    );
    let resp = raw(format!("GET /v1/groups/main/replies HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {token}\r\nConnection: close\r\n\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let started = std::time::Instant::now();
    let resp = raw(format!("POST /v1/groups/main/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited for the body"
    );
    let started = std::time::Instant::now();
    let resp = raw("GET /v1/health HTTP/1.1\r\nHost: x\r\n".into()).await;
    assert!(!resp.contains("\"ok\""), "{resp}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a connection that never finished its headers was kept"
    );
    assert!(model.requests().is_empty(), "no message was accepted");
}

#[tokio::test]
async fn kill_9_after_accept_before_reply_answers_exactly_once() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Delay(Duration::from_secs(30)),
            Step::Text("the answer".into()),
        ],
    )
    .await;
    let home = TestHome::new(Wire::Anthropic, &model.url, "");
    let mut d = Daemon::start(&home).await;
    let (status, _) = d.post("main", "are you there?").await;
    assert_eq!(status, 202);
    // The turn is under way: the model has the request and is taking its time.
    model.wait_for_requests(1, Duration::from_secs(10)).await;
    d.child.start_kill().unwrap(); // SIGKILL
    d.child.wait().await.unwrap();

    // The delayed step was consumed by the killed request; the restarted daemon gets the next.
    let d = Daemon::start(&home).await;
    let replies = d.wait_replies("main", 1).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["text"], "the answer");
    // No second answer turns up later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.replies("main").await.len(), 1);
}

#[tokio::test]
async fn two_groups_never_see_each_others_workspace_or_history() {
    let model = ScriptedModel::start(
        Wire::Openai,
        vec![
            tools(&[("shell", r#"{"command": "echo alpha-secret > secret.txt"}"#)]),
            Step::Text("stored".into()),
            tools(&[(
                "shell",
                r#"{"command": "ls -a /workspace; ls /workspace/.. ; cat ../a/secret.txt; cat /workspace/../a/secret.txt; find / -name secret.txt 2>/dev/null; echo end"}"#,
            )]),
            Step::EchoToolResult,
        ],
    )
    .await;
    let home = TestHome::new(Wire::Openai, &model.url, "");
    let d = Daemon::start(&home).await;
    assert_eq!(d.post("a", "remember alpha-secret").await.0, 202);
    d.wait_replies("a", 1).await;
    assert_eq!(d.post("b", "look around").await.0, 202);
    let replies = d.wait_replies("b", 1).await;
    let seen = replies[0]["text"].as_str().unwrap();
    assert!(seen.contains("end"), "{seen}");
    assert!(
        !seen.contains("alpha-secret"),
        "group b saw group a's file: {seen}"
    );
    // Group b's prompts never carried group a's history.
    let reqs = model.requests();
    for r in &reqs[2..] {
        assert!(
            !r.to_string().contains("alpha-secret"),
            "group b's prompt held group a's history: {r}"
        );
    }
    assert!(d.replies("a").await.iter().all(|r| r["text"] == "stored"));
}

#[tokio::test]
async fn daemon_without_a_model_replies_with_what_to_set() {
    let home = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    // Back to the default base URL, and no key in the environment.
    std::fs::write(home.path().join("nanoclaw.toml"), "").unwrap();
    let d = Daemon::start_with(&home, |cmd| {
        cmd.env_remove("ANTHROPIC_API_KEY")
            .stderr(std::process::Stdio::piped());
    })
    .await;
    assert_eq!(d.post("main", "hi").await.0, 202);
    let replies = d.wait_replies("main", 1).await;
    let reply = replies[0]["text"].as_str().unwrap();
    assert!(reply.contains("ANTHROPIC_API_KEY"), "{reply}");
    let mut child = d.child;
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        text(&out.stderr).contains("ANTHROPIC_API_KEY"),
        "the terminal was not told"
    );
}

#[tokio::test]
async fn malformed_model_responses_fail_the_turn_with_a_clear_error() {
    let cases = [
        (Step::Raw("application/json".into(), "{}".into()), "expected an event stream"),
        (Step::Raw("text/event-stream".into(), "data: {not json\n\n".into()), "is not JSON"),
        (
            Step::Raw("text/event-stream".into(), "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":4,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n".into()),
            "never started",
        ),
    ];
    for (step, expected) in cases {
        let model = ScriptedModel::start(Wire::Anthropic, vec![step]).await;
        let home = TestHome::new(Wire::Anthropic, &model.url, "");
        let out = home.run(&["ask", "hi"]).await;
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("invalid response") && err.contains(expected),
            "{err}"
        );
        assert_eq!(
            model.requests().len(),
            1,
            "an invalid response is not retried"
        );
    }
}

#[tokio::test]
async fn turns_run_one_at_a_time_per_group_and_within_the_global_cap() {
    let slow = |t: &str| Step::SlowText(Duration::from_millis(400), t.into());
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![slow("1"), slow("2"), slow("3"), slow("4")],
    )
    .await;
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        "[daemon]\nmax_concurrent_turns = 2\n",
    );
    let d = Daemon::start(&home).await;
    for group in ["g1", "g2", "g3"] {
        assert_eq!(d.post(group, "hello").await.0, 202);
    }
    for group in ["g1", "g2", "g3"] {
        d.wait_replies(group, 1).await;
    }
    assert_eq!(
        model.max_in_flight(),
        2,
        "the cap of 2 concurrent turns was not used or was exceeded"
    );

    // Two messages to one group: never two turns of that group at once.
    let model = ScriptedModel::start(Wire::Anthropic, vec![slow("a"), slow("b")]).await;
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        "[daemon]\nmax_concurrent_turns = 4\n",
    );
    let d = Daemon::start(&home).await;
    assert_eq!(d.post("solo", "first").await.0, 202);
    assert_eq!(d.post("solo", "second").await.0, 202);
    let mut answered = 0;
    for _ in 0..200 {
        let all = d.replies("solo").await;
        let texts: Vec<&str> = all.iter().filter_map(|r| r["text"].as_str()).collect();
        answered = texts.len();
        if model
            .requests()
            .iter()
            .any(|r| r.to_string().contains("second"))
            && answered == model.requests().len()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(answered >= 1);
    assert_eq!(model.max_in_flight(), 1);
}

#[tokio::test]
async fn chat_answers_each_line_and_new_starts_a_fresh_session() {
    use tokio::io::AsyncWriteExt;
    let model = ScriptedModel::start(
        Wire::Openai,
        vec![
            Step::Text("one".into()),
            Step::Text("two".into()),
            Step::Text("three".into()),
        ],
    )
    .await;
    let home = TestHome::new(Wire::Openai, &model.url, "");
    let mut child = home
        .command()
        .args(["chat", "--group", "talk"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"my name is Ada\nwhat is my name?\n/new\nand now?\n/quit\n")
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\nthree\n");
    let reqs = model.requests();
    assert!(
        reqs[1].to_string().contains("Ada"),
        "history was not carried within the session"
    );
    assert!(
        !reqs[2].to_string().contains("Ada"),
        "history leaked past /new"
    );
}

#[tokio::test]
async fn doctor_reports_isolation_and_a_reachable_model() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let home = TestHome::new(Wire::Anthropic, &model.url, "");
    let out = home.run(&["doctor"]).await;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}");
    for line in ["sandbox: bwrap works", "all checks passed"] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
    for feature in [
        "capabilities dropped",
        "no_new_privs",
        "network namespace (loopback only)",
        "pid namespace",
        "seccomp filter",
        "Landlock",
        "init out of the command's reach",
        "no setuid files or device nodes",
        "proxy relay",
    ] {
        let line = report.lines().find(|l| l.trim_start().starts_with(feature));
        assert!(
            line.is_some_and(|l| l.contains(" active")),
            "{feature} not active in:\n{report}"
        );
    }
    assert!(report.contains("key accepted"), "{report}");
    // A key the server refuses is said so, and is unhealthy.
    let mut refused = home.command();
    refused.arg("doctor").env("ANTHROPIC_API_KEY", "wrong-key");
    let out = refused.output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("TOKEN REJECTED (HTTP 401"),
        "{}",
        text(&out.stdout)
    );
    let port = support::free_port();
    let home = TestHome::new(Wire::Anthropic, &format!("http://127.0.0.1:{port}"), "");
    let out = home.run(&["doctor"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("UNREACHABLE"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn without_a_working_sandbox_tools_refuse_and_say_why() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            tools(&[("shell", r#"{"command": "echo should-not-run"}"#)]),
            Step::EchoToolResult,
        ],
    )
    .await;
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        "[sandbox]\nbackend = \"docker\"\ndocker_socket = \"unix:///nonexistent/docker.sock\"\n",
    );
    let out = home.run(&["ask", "run it"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply = text(&out.stdout);
    assert!(
        reply.contains("no sandbox backend works") && !reply.contains("should-not-run\n"),
        "{reply}"
    );
    let out = home.run(&["doctor"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("NONE WORKS"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn a_sender_named_owner_through_the_api_is_not_the_owner() {
    // The API's caller holds the token, but a message it relays from someone named "owner"
    // (or "api") is theirs, not the owner's: roles are said, never taken from names.
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::Text("one".into()), Step::Text("two".into())],
    )
    .await;
    let home = TestHome::new(Wire::Anthropic, &model.url, "");
    let d = Daemon::start(&home).await;
    let body = serde_json::json!({"text": "relayed words", "sender": "owner"});
    let (status, _) = http(
        &d.url,
        "POST",
        "/v1/groups/main/messages",
        Some(&d.token),
        Some(body),
    )
    .await
    .unwrap();
    assert_eq!(status, 202);
    d.wait_replies("main", 1).await;
    let first = model.requests()[0].to_string();
    assert!(
        first.contains("untrusted-data source=\\\"message from owner\\\""),
        "a relayed sender named owner was taken for the owner: {first}"
    );
    // The owner's own message (no sender named) is the owner's.
    assert_eq!(d.post("main", "my own words").await.0, 202);
    d.wait_replies("main", 2).await;
    let second = model.requests()[1].to_string();
    assert!(
        !second.contains("message from api"),
        "the owner's own message was marked as outside content: {second}"
    );
}
