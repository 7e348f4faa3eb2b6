//! The running daemon as the CLI's control plane: `ask`, `chat` and `status` work while
//! `nanoclaw run` owns the data dir (they go through its control socket), approvals asked by
//! such a turn reach the asking terminal, and the socket serves only its owner: not another
//! uid, not a sandbox, not a malformed or mismatched request.

mod support;

use std::time::Duration;

use support::model_server::{ScriptedModel, Step, shell};
use support::{TestHome, Wire, text};

fn home(model: &ScriptedModel) -> (TestHome, u16) {
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!("[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    (h, port)
}

/// Send one raw line to the control socket; the answer.
fn raw_request(h: &TestHome, line: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(h.path().join("run/control.sock"))
        .expect("connect to the control socket");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn ask_chat_and_status_work_while_the_daemon_runs() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("echo through-the-daemon"),
            Step::EchoToolResult,
            Step::Text("hello from chat".into()),
        ],
    )
    .await;
    let (h, port) = home(&model);
    // No daemon: status says so and fails.
    let out = h.run(&["status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("not running"),
        "{}",
        text(&out.stdout)
    );

    let mut daemon = h.daemon(port).await;
    let out = h.run(&["ask", "run it"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("through-the-daemon"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The turn ran in the daemon, as the owner's message on the terminal channel.
    let shown = text(
        &h.run(&["audit", "show", "--kind", "message_received"])
            .await
            .stdout,
    );
    assert!(
        shown.contains("\"channel\":\"terminal\"") && shown.contains("\"role\":\"owner\""),
        "{shown}"
    );
    let sent = text(
        &h.run(&["audit", "show", "--kind", "message_sent"])
            .await
            .stdout,
    );
    assert!(sent.contains("\"channel\":\"terminal\""), "{sent}");

    // chat: a line in, the reply out, /quit.
    let mut chat = h.command();
    chat.args(["chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = chat.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hi there\n/new\n/quit\n").await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("hello from chat"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("through the running daemon"));

    let out = h.run(&["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    for expected in [
        "daemon: running",
        "sandbox: bwrap",
        "approvals pending: 0",
        "secrets: 0",
    ] {
        assert!(shown.contains(expected), "{expected}: {shown}");
    }
    let json = text(&h.run(&["status", "--json"]).await.stdout);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["healthy"], true, "{json}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
    // A daemon that is gone (its socket file may be left) is not running.
    let out = h.run(&["status"]).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn an_approval_asked_by_a_turn_through_the_daemon_reaches_the_asking_terminal() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("echo deploy now"), Step::EchoToolResult],
    )
    .await;
    let (h, port) = home(&model);
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"shell\"\naction = \"ask\"\ntimeout_secs = 60\n",
    )
    .unwrap();
    let mut daemon = h.daemon(port).await;
    let mut ask = h.command();
    ask.args(["ask", "deploy"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = ask.spawn().unwrap();
    // The request is pending; the owner approves it from another terminal.
    let id = pending_id(&h).await;
    let out = h.run(&["approvals", "approve", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("approval needed"),
        "the asking terminal was not shown the request: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("deploy now"),
        "{}",
        text(&out.stdout)
    );
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn the_control_socket_serves_only_its_owner() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let (h, port) = home(&model);
    let mut daemon = h.daemon(port).await;
    let socket = h.path().join("run/control.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket is {mode:o}");

    // Malformed, oversized and mismatched requests are refused with the reason.
    let answer = raw_request(&h, "not json\n");
    assert!(answer.contains("malformed request"), "{answer}");
    let answer = raw_request(&h, "{\"version\": \"0.0.1\", \"op\": \"status\"}\n");
    assert!(
        answer.contains("this daemon is nanoclaw") && answer.contains("0.0.1"),
        "{answer}"
    );
    let answer = raw_request(
        &h,
        &format!(
            "{{\"version\": \"{}\", \"op\": \"status\", \"extra\": 1}}\n",
            env!("CARGO_PKG_VERSION")
        ),
    );
    assert!(answer.contains("malformed request"), "{answer}");
    let answer = raw_request(&h, &format!("{}\n", "x".repeat(1024 * 1024 + 10)));
    assert!(answer.contains("one line of at most"), "{answer}");

    // A sandboxed command cannot reach it: the data dir is not in the sandbox.
    let probe = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\n    print('CONNECTED')\nexcept OSError as e:\n    print('REFUSED', e)\n",
        socket.display().to_string()
    );
    let out = h
        .run(&["sandbox", "exec", "--", "python3", "-c", &probe])
        .await;
    assert!(
        text(&out.stdout).contains("REFUSED") && !text(&out.stdout).contains("CONNECTED"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Another uid is refused (by the file's mode, and by the peer check behind it).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import os, socket\nos.setgid(65534)\nos.setuid(65534)\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\n    s.sendall(b'{{\"version\": \"{}\", \"op\": \"status\"}}\\n')\n    print('ANSWER', s.recv(100))\nexcept OSError as e:\n    print('REFUSED', e)\n",
                socket.display().to_string(),
                env!("CARGO_PKG_VERSION")
            ))
            .output()
            .unwrap();
        let seen = text(&out.stdout);
        assert!(
            seen.contains("REFUSED") || seen.contains("ANSWER b''"),
            "another uid reached the daemon: {seen}{}",
            text(&out.stderr)
        );
    } else {
        support::skip("another uid's connection: needs root to switch uid");
    }
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// The id of the first pending approval request, once there is one.
async fn pending_id(h: &TestHome) -> String {
    for _ in 0..300 {
        let list = text(&h.run(&["approvals", "list"]).await.stdout);
        if let Some(first) = list.lines().next().filter(|l| !l.starts_with("no pending")) {
            return first
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no approval request was opened");
}

/// Start `ask TEXT` through the daemon in the background.
fn ask_in_background(h: &TestHome, text: &str) -> tokio::process::Child {
    let mut ask = h.command();
    ask.args(["ask", text])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    ask.spawn().unwrap()
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn stop_ends_a_turn_in_a_tool_run_an_approval_wait_and_a_model_stream() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            // 1. A tool run: the sandboxed command must die with the stop.
            // (A stopped turn asks the model nothing more: each next step is the next turn's.)
            shell("touch /workspace/started; sleep 31.7; touch /workspace/late"),
            // 2. An approval wait.
            shell("echo deploy now"),
            // 3. A model answer that takes long.
            Step::SlowText(Duration::from_secs(30), "too late".into()),
            // After the stops: the group answers again.
            Step::Text("back again".into()),
        ],
    )
    .await;
    let (h, port) = home(&model);
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"shell\"\nargs = { command = { glob = \"echo deploy*\" } }\naction = \"ask\"\ntimeout_secs = 120\n",
    )
    .unwrap();
    let mut daemon = h.daemon(port).await;
    let stop = async || {
        let out = h.run(&["stop"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("stopped the running turn"),
            "{}",
            text(&out.stdout)
        );
    };
    let finished = async |child: tokio::process::Child| {
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("the stopped ask did not end")
            .unwrap();
        assert!(
            text(&out.stderr).contains("stopped"),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };

    // 1. During a tool run.
    let ask = ask_in_background(&h, "one");
    let started = h.workspace("main").join("started");
    until("the command started", async || started.exists()).await;
    stop().await;
    finished(ask).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !h.workspace("main").join("late").exists(),
        "the command survived the stop"
    );
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    assert!(
        !text(&ps.stdout).contains("sleep 31.7"),
        "a process survived the stop"
    );

    // 2. During an approval wait: the request is denied.
    let ask = ask_in_background(&h, "two");
    until("the approval is asked", async || {
        !text(&h.run(&["approvals", "list"]).await.stdout).starts_with("no pending")
    })
    .await;
    stop().await;
    finished(ask).await;
    let all = text(&h.run(&["approvals", "list", "--all"]).await.stdout);
    assert!(all.contains("denied") && !all.contains("pending"), "{all}");

    // 3. During a slow model answer.
    let ask = ask_in_background(&h, "three");
    until("the model is asked", async || model.requests().len() >= 3).await;
    stop().await;
    finished(ask).await;

    // Nothing runs now; the next message is answered.
    let out = h.run(&["stop"]).await;
    assert!(
        text(&out.stdout).contains("no turn running"),
        "{}",
        text(&out.stdout)
    );
    let out = h.run(&["ask", "four"]).await;
    assert!(
        text(&out.stdout).contains("back again"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stops = text(
        &h.run(&["audit", "show", "--kind", "turn_stopped"])
            .await
            .stdout,
    );
    assert_eq!(stops.lines().count(), 3, "{stops}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_paused_group_starts_no_turn_until_resumed_and_the_owner_can_stop_from_chat() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::Text("answered after resume".into())],
    )
    .await;
    let (h, port) = home(&model);
    let mut daemon = h.daemon(port).await;
    let out = h.run(&["pause", "--group", "main"]).await;
    assert!(
        text(&out.stdout).contains("paused now"),
        "{}",
        text(&out.stdout)
    );
    let token = std::fs::read_to_string(h.path().join("api.token")).unwrap();
    let posted = support::api_post(port, &token, "main", r#"{"text": "while paused"}"#);
    assert!(posted.contains("\"id\""), "{posted}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(model.requests().is_empty(), "a paused group started a turn");
    // The owner's /stop with nothing running says so and stores nothing.
    let stopped = support::api_post(port, &token, "main", r#"{"text": "/stop"}"#);
    assert!(stopped.contains("\"stopped\":false"), "{stopped}");
    let out = h.run(&["resume", "--group", "main"]).await;
    assert!(
        text(&out.stdout).contains("running turns now"),
        "{}",
        text(&out.stdout)
    );
    until("the waiting message is answered", async || {
        support::api_replies(port, &token, "main").contains("answered after resume")
    })
    .await;
    let paused = text(
        &h.run(&["audit", "show", "--kind", "group_paused"])
            .await
            .stdout,
    );
    assert_eq!(paused.lines().count(), 2, "{paused}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn stop_typed_in_chat_ends_the_turn_without_a_daemon_too() {
    use tokio::io::AsyncWriteExt;
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("touch /workspace/started; sleep 31.9; touch /workspace/late"),
            Step::Text("next one".into()),
        ],
    )
    .await;
    let (h, _port) = home(&model);
    let mut chat = h.command();
    chat.args(["chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = chat.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let started = h.workspace("main").join("started");
    until("the command started", async || started.exists()).await;
    stdin.write_all(b"/stop\nagain\n/quit\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("chat did not end after /stop")
        .unwrap();
    assert!(
        text(&out.stderr).contains("stopped turn"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("next one"),
        "{}",
        text(&out.stdout)
    );
    assert!(!h.workspace("main").join("late").exists());
    let stops = text(
        &h.run(&["audit", "show", "--kind", "turn_stopped"])
            .await
            .stdout,
    );
    assert_eq!(stops.lines().count(), 1, "{stops}");
}

#[tokio::test]
async fn reload_puts_an_edited_policy_in_force_and_keeps_it_when_the_edit_is_bad() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("echo first-run"),
            Step::EchoToolResult,
            shell("echo second-run"),
            Step::EchoToolResult,
            shell("echo third-run"),
            Step::EchoToolResult,
            shell("echo fourth-run"),
            Step::EchoToolResult,
        ],
    )
    .await;
    let (h, port) = home(&model);
    let policy = h.path().join("policy.toml");
    let allow = "[approvers.owner]\nterminal = true\n";
    let deny = "[approvers.owner]\nterminal = true\n[[rule]]\nname = \"no shell now\"\ntool = \"shell\"\naction = \"deny\"\n";
    std::fs::write(&policy, allow).unwrap();
    let mut daemon = h.daemon(port).await;
    let ask = async |text: &str| text_of(&h.run(&["ask", text]).await);
    assert!(ask("one").await.contains("first-run"));

    std::fs::write(&policy, deny).unwrap();
    let out = h.run(&["reload"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("policy.toml is in force now"),
        "{}",
        text(&out.stdout)
    );
    let second = ask("two").await;
    assert!(
        second.contains("was refused") && second.contains("no shell now"),
        "{second}"
    );

    // A bad edit is refused, naming the line; the policy in force stays.
    std::fs::write(&policy, "[[rule]]\ntool = \"shell\"\naction = \"maybe\"\n").unwrap();
    let out = h.run(&["reload"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("policy.toml: line 1: rule[1].action")
            && text(&out.stderr).contains("stays"),
        "{}",
        text(&out.stderr)
    );
    assert!(ask("three").await.contains("no shell now"));

    // SIGHUP reloads too.
    std::fs::write(&policy, allow).unwrap();
    // SAFETY: sending a signal to the child this test started.
    unsafe { libc::kill(daemon.id().unwrap() as i32, libc::SIGHUP) };
    let mut ran = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let changes = text(
            &h.run(&["audit", "show", "--kind", "config_changed"])
                .await
                .stdout,
        );
        if changes.lines().count() >= 2 {
            ran = ask("four").await;
            break;
        }
    }
    assert!(ran.contains("fourth-run"), "{ran}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

fn text_of(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn sandbox_exec_runs_through_the_daemon_and_leaves_the_groups_proxy_to_it() {
    // Run in its own process, `sandbox exec` started a proxy on the group's socket path, took
    // the path over from the daemon, and left the daemon's sandboxes without a way out.
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell(
                "curl -s -o /dev/null -w 'code=%{http_code}' --max-time 5 http://blocked.example/",
            ),
            Step::EchoToolResult,
        ],
    )
    .await;
    let (h, port) = home(&model);
    let mut daemon = h.daemon(port).await;
    let out = h
        .run(&[
            "sandbox",
            "exec",
            "--",
            "sh",
            "-c",
            "echo from-the-sandbox; echo oops >&2; exit 3",
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from-the-sandbox\n");
    assert!(text(&out.stderr).contains("oops"));
    // The daemon's proxy still answers the group's sandboxes (a refusal: the host is not
    // allowed; a stolen socket would give no answer at all).
    let reply = text(&h.run(&["ask", "reach out"]).await.stdout);
    assert!(reply.contains("code=403"), "{reply}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn an_approval_given_after_a_reload_never_runs_what_the_new_policy_refuses() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("touch /workspace/ran"), Step::EchoToolResult],
    )
    .await;
    let (h, port) = home(&model);
    let policy = h.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"shell\"\naction = \"ask\"\ntimeout_secs = 60\n",
    )
    .unwrap();
    let mut daemon = h.daemon(port).await;
    let child = ask_in_background(&h, "do it");
    let id = pending_id(&h).await;
    std::fs::write(
        &policy,
        "[approvers.owner]\nterminal = true\n[[rule]]\nname = \"no shell\"\ntool = \"shell\"\naction = \"deny\"\n",
    )
    .unwrap();
    assert!(h.run(&["reload"]).await.status.success());
    assert!(h.run(&["approvals", "approve", &id]).await.status.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text(&out.stdout).contains("the policy reloaded since refuses it"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!h.workspace("main").join("ran").exists());
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// Send Ctrl-C (SIGINT) to a child process.
fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("the child runs") as i32;
    // SAFETY: signalling a child of this test.
    unsafe { libc::kill(pid, libc::SIGINT) };
}

/// What a person at the terminal sees and does: a line per tool call as it starts and as it
/// ends (in-process and through the daemon); Ctrl-C cancels a running turn (its command dies,
/// exit 130) or withdraws a message no turn took yet (it is never answered later); `chat`
/// through the daemon shows a task's result posted to the terminal between turns.
#[tokio::test]
async fn the_terminal_shows_each_tool_call_and_ctrl_c_cancels_the_turn() {
    use tokio::io::AsyncWriteExt;
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("echo in-process"),
            Step::EchoToolResult,
            shell("touch /workspace/begun; sleep 32.1; touch /workspace/later"),
            shell("echo via-daemon; exit 3"),
            Step::EchoToolResult,
            shell("touch /workspace/started; sleep 32.3; touch /workspace/late"),
            Step::Text("task says hi".into()),
        ],
    )
    .await;
    let (h, port) = home(&model);
    let shows_both = |out: &std::process::Output, command: &str, end: &str| {
        let err = text(&out.stderr);
        assert!(err.contains(&format!("▸ shell {command}")), "{err}");
        assert!(err.contains(end), "{err}");
    };
    // In this process (no daemon).
    let out = h.run(&["ask", "one"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    shows_both(&out, "echo in-process", "✓ shell");
    assert!(
        text(&out.stderr).contains(": exit status 0"),
        "{}",
        text(&out.stderr)
    );
    // Ctrl-C in this process: the turn is dropped and ended as stopped.
    let ask = ask_in_background(&h, "long");
    let begun = h.workspace("main").join("begun");
    until("the command started", async || begun.exists()).await;
    interrupt(&ask);
    let out = tokio::time::timeout(Duration::from_secs(20), ask.wait_with_output())
        .await
        .expect("the interrupted ask did not end")
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("stopped turn"),
        "{}",
        text(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!h.workspace("main").join("later").exists());

    let mut daemon = h.daemon(port).await;
    // Through the daemon: a failing command ends with ✗ and its exit.
    let out = h.run(&["ask", "two"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    shows_both(&out, "echo via-daemon; exit 3", "✗ shell");
    assert!(
        text(&out.stderr).contains("exit status 3"),
        "{}",
        text(&out.stderr)
    );
    // Not coloured: stderr is not a terminal.
    assert!(!text(&out.stderr).contains('\u{1b}'));

    // Ctrl-C during a tool run: the turn stops, its command dies, exit 130.
    let ask = ask_in_background(&h, "three");
    let started = h.workspace("main").join("started");
    until("the command started", async || started.exists()).await;
    interrupt(&ask);
    let out = tokio::time::timeout(Duration::from_secs(20), ask.wait_with_output())
        .await
        .expect("the interrupted ask did not end")
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cancelled") && text(&out.stderr).contains("Ctrl-C"),
        "{}",
        text(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!h.workspace("main").join("late").exists());
    assert!(!text(&h.run(&["status"]).await.stdout).contains("turn running"));

    // Ctrl-C while the message waits (the group is paused): it is withdrawn, never answered.
    h.run(&["pause", "--group", "main"]).await;
    let asked = model.requests().len();
    let ask = ask_in_background(&h, "four");
    until("the message is queued", async || {
        text(&h.run(&["status"]).await.stdout).contains("1 queued")
    })
    .await;
    interrupt(&ask);
    let out = tokio::time::timeout(Duration::from_secs(20), ask.wait_with_output())
        .await
        .expect("the interrupted ask did not end")
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        text(&out.stderr).contains("withdrawn"),
        "{}",
        text(&out.stderr)
    );
    h.run(&["resume", "--group", "main"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        model.requests().len(),
        asked,
        "a withdrawn message was answered"
    );
    let withdrawn = text(
        &h.run(&["audit", "show", "--kind", "message_withdrawn"])
            .await
            .stdout,
    );
    assert_eq!(withdrawn.lines().count(), 1, "{withdrawn}");

    // chat through the daemon shows a task's result as it arrives.
    let mut chat = h.command();
    chat.args(["chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = chat.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let soon = std::process::Command::new("date")
        .args(["-u", "-d", "now + 2 seconds", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let out = h
        .run(&[
            "task",
            "add",
            "--name",
            "greet",
            "--prompt",
            "say hi",
            "--at",
            text(&soon.stdout).trim(),
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    until("the task ran", async || {
        text(&h.run(&["task", "runs", "1"]).await.stdout).contains("): ok")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stdin.write_all(b"/quit\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("chat did not end")
        .unwrap();
    assert!(
        text(&out.stdout).contains("[task greet] task says hi"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// `nanoclaw.toml` edited under a running daemon: `reload` puts the egress allowlist, the
/// model settings and the limits in force at once (a sandbox reaches a host it could not
/// before; the next turn asks for the new model), names what needs a restart, and refuses a
/// bad edit naming the key, keeping what is in force.
#[tokio::test]
async fn reload_puts_an_edited_config_in_force_and_names_what_needs_a_restart() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::Text("first".into()), Step::Text("second".into())],
    )
    .await;
    let origin = support::http_origin("reached-the-origin".into()).await;
    let (h, port) = home(&model);
    let config = h.path().join("nanoclaw.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    let mut daemon = h.daemon(port).await;
    let fetch = async || {
        let out = h
            .run(&[
                "sandbox",
                "exec",
                "--",
                "sh",
                "-c",
                &format!(
                    // NO_PROXY names loopback, so the proxy is given explicitly.
                    "curl -s -w ' code=%{{http_code}}' --max-time 5 --noproxy '' -x \"$HTTP_PROXY\" http://127.0.0.1:{origin}/"
                ),
            ])
            .await;
        text(&out.stdout)
    };
    assert!(fetch().await.contains("code=403"));
    assert!(text(&h.run(&["ask", "one"]).await.stdout).contains("first"));
    assert!(model.requests()[0].to_string().contains("\"scripted\""));

    // Live: the allowlist and the model; for a restart: the sandbox section.
    let edited = original
        .replace(
            "[sandbox]\nbackend = \"bwrap\"\n",
            "[sandbox]\nbackend = \"bwrap\"\ndocker_idle_secs = 30\n",
        )
        .replace("name = \"scripted\"", "name = \"renamed-model\"")
        + &format!("[egress]\nallow = [{{ host = \"127.0.0.1:{origin}\", private = true }}]\n");
    std::fs::write(&config, &edited).unwrap();
    let out = h.run(&["reload"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("nanoclaw.toml is in force now (changed: egress.allow, model)"),
        "{said}"
    );
    assert!(
        said.contains("take effect when the daemon restarts: sandbox"),
        "{said}"
    );
    assert!(fetch().await.contains("reached-the-origin code=200"));
    assert!(text(&h.run(&["ask", "two"]).await.stdout).contains("second"));
    assert!(model.requests()[1].to_string().contains("renamed-model"));

    // A bad edit: refused, naming the key; the allowlist in force stays.
    std::fs::write(&config, format!("{edited}[limits]\nbogus_key = 1\n")).unwrap();
    let out = h.run(&["reload"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bogus_key")
            && text(&out.stderr).contains("nothing was reloaded"),
        "{}",
        text(&out.stderr)
    );
    assert!(fetch().await.contains("code=200"));
    let changes = text(
        &h.run(&["audit", "show", "--kind", "config_changed"])
            .await
            .stdout,
    );
    assert!(
        changes.contains("\"sections\":[\"egress.allow\",\"model\"]")
            && changes.contains("\"needs_restart\":[\"sandbox\"]"),
        "{changes}"
    );
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// The daemon dying while `ask` waits on it: the command says so and exits 1; the message it
/// had accepted is answered when the daemon runs again.
#[tokio::test]
async fn a_daemon_that_dies_mid_ask_is_reported_and_the_message_is_answered_after_restart() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::SlowText(Duration::from_secs(30), "never seen".into()),
            Step::Text("answered after the restart".into()),
        ],
    )
    .await;
    let (h, port) = home(&model);
    let mut daemon = h.daemon(port).await;
    let ask = ask_in_background(&h, "survive this");
    until("the model is asked", async || !model.requests().is_empty()).await;
    // SAFETY: killing the daemon this test started.
    unsafe { libc::kill(daemon.id().unwrap() as i32, libc::SIGKILL) };
    daemon.wait().await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), ask.wait_with_output())
        .await
        .expect("ask did not notice the daemon died")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the daemon stopped before the reply; the message is kept"),
        "{}",
        text(&out.stderr)
    );
    let mut daemon = h.daemon(port).await;
    until("the message is answered again", async || {
        model.requests().len() >= 2
    })
    .await;
    assert!(model.requests()[1].to_string().contains("survive this"));
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// The model, asked for real by the running daemon: a key the server refuses makes the daemon
/// unhealthy with "TOKEN REJECTED"; the right key, stored, is in force at once and checked
/// again.
#[tokio::test]
async fn status_reports_a_refused_model_key_until_the_right_one_is_stored() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let (h, _port) = home(&model);
    let mut c = h.command();
    c.arg("run")
        .env("ANTHROPIC_API_KEY", "wrong-key")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut daemon = c.spawn().unwrap();
    let shown = async || text(&h.run(&["status"]).await.stdout);
    until("the key is found refused", async || {
        shown().await.contains("model scripted: TOKEN REJECTED")
    })
    .await;
    assert_eq!(h.run(&["status"]).await.status.code(), Some(1));
    let out = h
        .set_secret("ANTHROPIC_API_KEY", "test-key", &["--host", "127.0.0.1"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    until("the stored key is accepted", async || {
        shown().await.contains("model scripted: connected since")
    })
    .await;
    assert_eq!(h.run(&["status"]).await.status.code(), Some(0));
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}
