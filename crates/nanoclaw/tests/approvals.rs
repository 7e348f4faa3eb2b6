//! The policy gate and approvals end to end: `policy check`, bad policies stopping startup,
//! a turn waiting for a human, replay of an approval on other arguments, approvers who are not
//! configured, timeouts, quorum, standing approvals, and a restart while a turn waits.

mod support;

use std::time::Duration;

use support::model_server::{ScriptedModel, Step, shell};
use support::{TestHome, Wire, text};

const POLICY: &str = r#"
[approvers.owner]
terminal = true
[approvers.alice]
terminal = true
[approvers.bob]
terminal = true
[approvers.remote]
ids = { telegram = ["42"] }

[[rule]]
name = "deploys need the owner"
tool = "shell"
args = { command = { glob = "echo deploy*" } }
action = "ask"
approvers = ["owner"]
timeout_secs = 30

[[rule]]
name = "releases need two"
tool = "shell"
args = { command = { glob = "echo release*" } }
action = "ask"
approvers = ["alice", "bob"]
quorum = 2
timeout_secs = 30

[[rule]]
name = "quick timeout"
tool = "shell"
args = { command = { glob = "echo hurry*" } }
action = "ask"
approvers = ["owner"]
timeout_secs = 1

[[rule]]
name = "never"
tool = "shell"
args = { command = { regex = "rm\\s+-rf" } }
action = "deny"

[[rule]]
name = "posts ask"
tool = "http_request"
args = { method = { equals = "POST" } }
action = "ask"
approvers = ["owner"]
"#;

fn home(model: &ScriptedModel, extra: &str) -> TestHome {
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!("[sandbox]\nbackend = \"bwrap\"\n{extra}"),
    );
    std::fs::write(h.path().join("policy.toml"), POLICY).unwrap();
    h
}

/// Wait for a pending request and return its id. `ask`, when given, is the process that
/// should be waiting; if it ends first, its output says why.
async fn pending_id_of(h: &TestHome, ask: Option<&mut tokio::process::Child>) -> String {
    let mut ask = ask;
    for _ in 0..300 {
        let out = text(&h.run(&["approvals", "list"]).await.stdout);
        if let Some(first) = out.lines().next()
            && !first.starts_with("no pending")
        {
            return first.split_whitespace().next().unwrap().to_owned();
        }
        if let Some(child) = ask.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            use tokio::io::AsyncReadExt;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out).await;
            }
            panic!("ask ended ({status}) before asking for approval:\n{out}\n{err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = text(&h.run(&["audit", "show"]).await.stdout);
    panic!("no pending approval request appeared; audit so far:\n{shown}");
}

async fn pending_id(h: &TestHome) -> String {
    pending_id_of(h, None).await
}

async fn finish(child: tokio::process::Child) -> (bool, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ask finished")
        .unwrap();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn spawn_ask(h: &TestHome, message: &str) -> tokio::process::Child {
    let mut c = h.command();
    c.args(["ask", message])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c.spawn().unwrap()
}

#[tokio::test]
async fn policy_check_prints_the_decision_and_the_rule() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let h = home(&model, "");
    let out = h
        .run(&[
            "policy",
            "check",
            "--tool",
            "shell",
            "--args",
            r#"{"command": "rm -rf /"}"#,
        ])
        .await;
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(s.starts_with("deny: policy rule 4 (\"never\""), "{s}");
    let s = text(
        &h.run(&[
            "policy",
            "check",
            "--tool",
            "shell",
            "--args",
            r#"{"command": "echo release 1"}"#,
        ])
        .await
        .stdout,
    );
    assert!(
        s.starts_with("ask: policy rule 2") && s.contains("alice, bob (2 needed)"),
        "{s}"
    );
    let s = text(&h.run(&["policy", "check", "--tool", "shell"]).await.stdout);
    assert!(s.starts_with("allow: default"), "{s}");
    // Judged as the gate judges: "post" is the POST the tool sends.
    let s = text(
        &h.run(&[
            "policy",
            "check",
            "--tool",
            "http_request",
            "--args",
            r#"{"method": "post", "url": "https://api.example/x"}"#,
        ])
        .await
        .stdout,
    );
    assert!(s.starts_with("ask: policy rule 5 (\"posts ask\""), "{s}");
    let s = text(&h.run(&["policy", "check", "--tool", "nope"]).await.stdout);
    assert!(s.starts_with("deny: no tool"), "{s}");
    let out = h
        .run(&["policy", "check", "--tool", "shell", "--args", "{not json"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--args is not valid JSON"));
}

#[tokio::test]
async fn a_bad_policy_stops_startup_naming_file_line_and_key() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let h = home(&model, "");
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n\n[[rule]]\ntool = \"shell\"\naction = \"ask\"\napprovers = [\"mallory\"]\n",
    )
    .unwrap();
    for args in [
        &["ask", "hi"][..],
        &["policy", "check", "--tool", "shell"][..],
    ] {
        let out = h.run(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = text(&out.stderr);
        assert!(
            e.contains("policy.toml: line 4: rule[1].approvers: unknown approver \"mallory\""),
            "{e}"
        );
    }
    assert!(
        model.requests().is_empty(),
        "a turn ran under a broken policy"
    );
}

#[tokio::test]
async fn a_turn_waits_for_approval_and_the_model_learns_the_outcome() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("echo deploy v1"), Step::EchoToolResult],
    )
    .await;
    let h = home(&model, "");
    let mut ask = spawn_ask(&h, "deploy it");
    let id = pending_id_of(&h, Some(&mut ask)).await;
    let listed = text(&h.run(&["approvals", "list"]).await.stdout);
    assert!(
        listed.contains("echo deploy v1") && listed.contains("deploys need the owner"),
        "{listed}"
    );
    // Someone who is not an approver for it: recorded, ignored; the request stays pending.
    let out = h
        .run(&["approvals", "approve", &id, "--as", "remote"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a terminal approver"),
        "{}",
        text(&out.stderr)
    );
    let out = h.run(&["approvals", "approve", &id, "--as", "alice"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("alice is not an approver for request"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&h.run(&["approvals", "list"]).await.stdout).contains(&id));
    // The owner approves: the command runs and the model sees its output.
    let out = h.run(&["approvals", "approve", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "approved");
    let (ok, reply, err) = finish(ask).await;
    assert!(ok, "{err}");
    assert!(
        reply.contains("deploy v1") && reply.contains("exit status 0"),
        "{reply}"
    );
    assert!(
        err.contains("approval needed"),
        "the request was not shown: {err}"
    );
    // Answering again is refused: it is decided.
    let out = h.run(&["approvals", "deny", &id]).await;
    assert!(!out.status.success());
    // The audit log holds the request, the ignored answers and the approval.
    let audit = text(
        &h.run(&["audit", "show", "--kind", "approval_ignored"])
            .await
            .stdout,
    );
    assert_eq!(audit.lines().count(), 2, "{audit}");
    let answered = text(
        &h.run(&["audit", "show", "--kind", "approval_answered"])
            .await
            .stdout,
    );
    assert!(answered.contains("\"approver\":\"owner\""), "{answered}");
    // The same story as one turn's timeline, in words: seen, decided by its rule, asked,
    // ignored twice, answered, approved, ran, replied.
    let story = text(
        &h.run(&["audit", "show", "--group", "main", "--last"])
            .await
            .stdout,
    );
    let order = [
        "seen  owner from",
        "model  calls shell {\"command\":\"echo deploy v1\"}",
        "decided  ask shell: policy rule 1 (\"deploys need the owner\"",
        "asked  approval",
        "ignored  approve by remote",
        "answered  approve by owner on cli: approved once",
        "approved  shell runs",
        "result  shell in",
        "replied  on terminal: tool said: exit status 0",
    ];
    let mut from = 0;
    for step in order {
        match story[from..].find(step) {
            Some(at) => from += at + step.len(),
            None => panic!("{step:?} is not in order in the timeline:\n{story}"),
        }
    }
    assert!(!story.contains("Approved {"), "{story}");
    let turn: String = story
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("turn "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    let by_id = text(&h.run(&["audit", "show", "--turn", &turn]).await.stdout);
    assert_eq!(by_id, story);
    let raw = text(
        &h.run(&["audit", "show", "--turn", &turn, "--json"])
            .await
            .stdout,
    );
    assert!(
        raw.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{raw}"
    );
    let out = h.run(&["audit", "show", "--turn", "999999"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no turn 999999"),
        "{}",
        text(&out.stderr)
    );
    let out = h.run(&["audit", "show", "--last"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_denial_reaches_the_model_and_nothing_runs() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("echo deploy > ran.txt"), Step::EchoToolResult],
    )
    .await;
    let h = home(&model, "");
    let mut ask = spawn_ask(&h, "deploy");
    let id = pending_id_of(&h, Some(&mut ask)).await;
    // By code, case-insensitively, as a chat command would give it.
    let code = text(&h.run(&["approvals", "list"]).await.stdout)
        .split('[')
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    let out = h.run(&["approvals", "deny", &code]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, reply, _) = finish(ask).await;
    assert!(reply.contains("the approver owner denied it"), "{reply}");
    assert!(!h.workspace("main").join("ran.txt").exists());
    let _ = id;
}

#[tokio::test]
async fn an_approval_for_one_set_of_arguments_never_covers_another() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("echo deploy A"),
            Step::EchoToolResult,
            shell("echo deploy B"),
            Step::EchoToolResult,
            shell("echo deploy A"),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = home(&model, "");
    // A, approved once.
    let mut ask = spawn_ask(&h, "a");
    let id_a = pending_id_of(&h, Some(&mut ask)).await;
    assert!(
        h.run(&["approvals", "approve", &id_a])
            .await
            .status
            .success()
    );
    assert!(finish(ask).await.1.contains("deploy A"));
    // B: a new request, not covered by A's approval.
    let mut ask = spawn_ask(&h, "b");
    let id_b = pending_id_of(&h, Some(&mut ask)).await;
    assert_ne!(id_a, id_b);
    assert!(
        h.run(&["approvals", "approve", &id_b, "--always"])
            .await
            .status
            .success()
    );
    assert!(finish(ask).await.1.contains("deploy B"));
    // A again: "once" was used up, so it asks again.
    let mut ask = spawn_ask(&h, "a again");
    let id_a2 = pending_id_of(&h, Some(&mut ask)).await;
    assert_ne!(id_a, id_a2);
    assert!(h.run(&["approvals", "deny", &id_a2]).await.status.success());
    assert!(finish(ask).await.1.contains("denied"));
}

#[tokio::test]
async fn an_always_approval_stands_for_the_exact_call() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("echo deploy X"),
            Step::EchoToolResult,
            shell("echo deploy X"),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = home(&model, "");
    let mut ask = spawn_ask(&h, "x");
    let id = pending_id_of(&h, Some(&mut ask)).await;
    let out = h.run(&["approvals", "approve", &id, "--always"]).await;
    assert!(text(&out.stdout).contains("every later identical call"));
    assert!(finish(ask).await.1.contains("deploy X"));
    // The same call again runs without a new request.
    let out = h.run(&["ask", "x again"]).await;
    assert!(
        text(&out.stdout).contains("deploy X"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("approval needed"));
}

#[tokio::test]
async fn no_answer_in_time_is_a_denial() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("echo hurry up"), Step::EchoToolResult],
    )
    .await;
    let h = home(&model, "");
    let out = h.run(&["ask", "hurry"]).await;
    let reply = text(&out.stdout);
    assert!(
        reply.contains("no approval came within 1s, which counts as a denial"),
        "{reply}"
    );
    let all = text(&h.run(&["approvals", "list", "--all"]).await.stdout);
    assert!(all.contains("expired"), "{all}");
}

#[tokio::test]
async fn quorum_needs_distinct_approvers() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("echo release 2"), Step::EchoToolResult],
    )
    .await;
    let h = home(&model, "");
    let mut ask = spawn_ask(&h, "release");
    let id = pending_id_of(&h, Some(&mut ask)).await;
    let out = h.run(&["approvals", "approve", &id, "--as", "alice"]).await;
    assert!(
        text(&out.stdout).contains("1 approval(s) so far"),
        "{}",
        text(&out.stdout)
    );
    let out = h.run(&["approvals", "approve", &id, "--as", "alice"]).await;
    assert!(
        text(&out.stdout).contains("1 approval(s) so far"),
        "alice counted twice"
    );
    // Several terminal approvers: the CLI needs --as.
    let out = h.run(&["approvals", "approve", &id]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = h.run(&["approvals", "approve", &id, "--as", "bob"]).await;
    assert_eq!(text(&out.stdout).trim(), "approved");
    assert!(finish(ask).await.1.contains("release 2"));
}

#[tokio::test]
async fn a_turn_waiting_for_approval_survives_a_restart() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("echo deploy after restart"),
            // The daemon dies while waiting; after the restart the turn runs again and asks
            // for the same call: it finds the same request.
            shell("echo deploy after restart"),
            Step::EchoToolResult,
        ],
    )
    .await;
    let port = support::free_port();
    let h = home(&model, &format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"));
    let token = std::fs::read_to_string(h.path().join("api.token")).unwrap();
    let start = || {
        let mut c = h.command();
        c.arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.spawn().unwrap()
    };
    let post = |text: &str| {
        let body = serde_json::json!({ "text": text }).to_string();
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                "-H",
                &format!("authorization: Bearer {token}"),
                "-H",
                "content-type: application/json",
                "-d",
                &body,
            ])
            .arg(format!("http://127.0.0.1:{port}/v1/groups/main/messages"))
            .output()
            .unwrap();
        text_of(&out.stdout)
    };
    fn text_of(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }
    let mut daemon = start();
    let mut posted = String::new();
    for _ in 0..100 {
        posted = post("deploy please");
        if posted.contains("\"id\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(posted.contains("\"id\""), "{posted}");
    let id = pending_id(&h).await;
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
    let mut daemon = start();
    // The restarted turn asks again and waits on the same request.
    model.wait_for_requests(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = text(&h.run(&["approvals", "list"]).await.stdout);
    assert_eq!(
        listed.lines().filter(|l| !l.starts_with(' ')).count(),
        1,
        "{listed}"
    );
    assert!(listed.starts_with(&format!("{id} ")), "{listed}");
    // Approve through the HTTP API with the chat command.
    let code = listed
        .split('[')
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .to_owned();
    let answered = post(&format!("/approve {code}"));
    assert!(answered.contains("approved"), "{answered}");
    let mut reply = String::new();
    for _ in 0..200 {
        reply = support::api_replies(port, &token, "main");
        if reply.contains("deploy after restart") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
    assert!(reply.contains("deploy after restart"), "{reply}");
}

#[tokio::test]
async fn chat_takes_an_answer_while_its_own_turn_waits() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("echo deploy from chat"), Step::EchoToolResult],
    )
    .await;
    let h = home(&model, "");
    let mut c = h.command();
    c.args(["chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin.write_all(b"deploy it\n").await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = err.next_line().await {
            if let Some(rest) = line.split("approval needed [").nth(1) {
                return rest.split(']').next().unwrap().to_owned();
            }
        }
        panic!("chat ended without asking");
    })
    .await
    .expect("the request was shown");
    stdin
        .write_all(format!("/approve {code}\n").as_bytes())
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = out.next_line().await {
            if line.contains("deploy from chat") {
                return line;
            }
        }
        panic!("no reply");
    })
    .await
    .expect("the approved command ran");
    assert!(reply.contains("deploy from chat"), "{reply}");
    stdin.write_all(b"/quit\n").await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

#[tokio::test]
async fn malformed_arguments_never_reach_an_approver() {
    // Each call would ask (a deploy, a POST, a schedule), but each is malformed: it is refused
    // with what is wrong before the gate, and no approver is ever asked about it.
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Tools(vec![
                (
                    "shell".into(),
                    r#"{"command": "echo deploy v1", "timeout_secs": 0}"#.into(),
                ),
                (
                    "http_request".into(),
                    r#"{"method": "POST", "url": "https://api.example.com", "extra": 1}"#.into(),
                ),
                (
                    "schedule_task".into(),
                    r#"{"name": "n", "prompt": "p", "cron": "99 * * * *"}"#.into(),
                ),
            ]),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = home(&model, "");
    let out = h.run(&["ask", "do three things"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&h.run(&["approvals", "list", "--all"]).await.stdout);
    assert_eq!(list.trim(), "no requests", "an approver was asked: {list}");
    let sent = model.requests()[1].to_string();
    for expected in [
        "timeout_secs must be at least 1",
        "unknown field `extra`",
        "invalid arguments for schedule_task",
    ] {
        assert!(sent.contains(expected), "{expected}: {sent}");
    }
    assert!(
        !text(&out.stderr).contains("approval needed"),
        "{}",
        text(&out.stderr)
    );
}
