//! Scheduled tasks end to end: the `task` commands, the daemon running due tasks as turns and
//! posting their results, catch-up after downtime, a run killed mid-way never repeated, a
//! failed run retried (across a restart too), and the agent's own task tools behind the policy
//! gate.

mod support;

use std::time::Duration;

use support::model_server::{ScriptedModel, Step};
use support::{TestHome, Wire, text};

struct Daemon {
    child: tokio::process::Child,
    port: u16,
    token: String,
}

fn home(model: &ScriptedModel) -> (TestHome, u16) {
    home_with_backoff(model, 1)
}

fn home_with_backoff(model: &ScriptedModel, backoff_secs: u32) -> (TestHome, u16) {
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[scheduler]\nretry_backoff_secs = {backoff_secs}\n"
        ),
    );
    (h, port)
}

async fn start(h: &TestHome, port: u16) -> Daemon {
    let child = h.daemon(port).await;
    let token = std::fs::read_to_string(h.path().join("api.token")).unwrap();
    Daemon { child, port, token }
}

impl Daemon {
    fn replies(&self) -> String {
        support::api_replies(self.port, &self.token, "main")
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// Add an hourly task and make its first slot due now. Returns now (ms since the epoch).
async fn add_due_now(h: &TestHome, name: &str, prompt: &str) -> i64 {
    let out = h
        .run(&[
            "task", "add", "--name", name, "--every", "1h", "--prompt", prompt,
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    db(h)
        .execute(
            "UPDATE tasks SET next_due = ?1 WHERE name = ?2",
            rusqlite::params![now, name],
        )
        .unwrap();
    now
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

fn db(h: &TestHome) -> rusqlite::Connection {
    rusqlite::Connection::open(h.path().join("nanoclaw.db")).unwrap()
}

fn runs(h: &TestHome, task: i64) -> Vec<(String, i64)> {
    let c = db(h);
    let mut stmt = c
        .prepare("SELECT status, slot FROM task_runs WHERE task_id = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([task], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn task_commands_add_list_pause_resume_and_remove() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let (h, _) = home(&model);
    let out = h
        .run(&[
            "task",
            "add",
            "--name",
            "brief",
            "--cron",
            "30 7 * * MON-FRI",
            "--tz",
            "Europe/Berlin",
            "--prompt",
            "morning briefing",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("task 1 added; first run at "),
        "{}",
        text(&out.stdout)
    );
    let out = h
        .run(&[
            "task",
            "add",
            "--name",
            "watch",
            "--every",
            "15m",
            "--prompt",
            "check the page",
            "--silent",
            "--isolated",
        ])
        .await;
    assert!(out.status.success());
    let list = text(&h.run(&["task", "list"]).await.stdout);
    assert!(
        list.contains("1 brief [active] group main: cron 30 7 * * MON-FRI (Europe/Berlin)"),
        "{list}"
    );
    assert!(
        list.contains("2 watch [active]") && list.contains("isolated; silent"),
        "{list}"
    );
    assert!(text(&h.run(&["task", "pause", "2"]).await.stdout).contains("paused"));
    assert!(text(&h.run(&["task", "list"]).await.stdout).contains("2 watch [paused]"));
    assert!(text(&h.run(&["task", "resume", "2"]).await.stdout).contains("resumed; next run at"));
    assert!(h.run(&["task", "rm", "1"]).await.status.success());
    assert!(!text(&h.run(&["task", "list"]).await.stdout).contains("brief"));
    // Bad input: exit 2 and the reason.
    for (args, want) in [
        (vec!["--cron", "0 9 * * 1-5"], "names"),
        (
            vec!["--cron", "0 9 * * MON", "--tz", "Mars/Base"],
            "unknown time zone",
        ),
        (vec!["--every", "0s"], "at least 1"),
        (vec!["--every", "5"], "no unit: say 5s, 5m, 5h or 5d"),
        (vec!["--at", "next tuesday"], "next tuesday"),
        (
            vec!["--every", "1h", "--at", "2030-01-01T00:00:00Z"],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["task", "add", "--name", "x", "--prompt", "p"];
        all.extend(args.iter());
        let out = h.run(&all).await;
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{all:?}: {}",
            text(&out.stderr)
        );
    }
    let out = h.run(&["task", "pause", "99"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no task 99"));
}

#[tokio::test]
async fn the_daemon_runs_due_tasks_and_posts_results_unless_silent() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Text("briefing ready".into()),
            Step::Text("quiet result".into()),
        ],
    )
    .await;
    let (h, port) = home(&model);
    let d = start(&h, port).await;
    // Added while the daemon runs: the command wakes it.
    let soon = |secs: i64| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + secs;
        format!("@{t}")
    };
    let at = |secs: i64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &soon(secs), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        text(&out.stdout).trim().to_owned()
    };
    let out = h
        .run(&[
            "task",
            "add",
            "--name",
            "brief",
            "--at",
            &at(2),
            "--prompt",
            "morning briefing",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    until("the task's reply is posted", async || {
        d.replies().contains("[task brief] briefing ready")
    })
    .await;
    let out = h
        .run(&[
            "task",
            "add",
            "--name",
            "quiet",
            "--at",
            &at(1),
            "--prompt",
            "quietly",
            "--silent",
        ])
        .await;
    assert!(out.status.success());
    until("the silent task ran", async || {
        runs(&h, 2).first().is_some_and(|r| r.0 == "ok")
    })
    .await;
    assert!(
        !d.replies().contains("quiet result"),
        "a silent task posted"
    );
    let log = text(&h.run(&["task", "runs", "2"]).await.stdout);
    assert!(
        log.contains(": ok in ") && log.contains("result: quiet result"),
        "{log}"
    );
    assert_eq!(runs(&h, 1).len(), 1);
    // The model saw the prompt as the turn's message, and the run is in the audit log.
    assert!(model.requests()[0].to_string().contains("morning briefing"));
    assert!(
        text(&h.run(&["audit", "show", "--kind", "task_run"]).await.stdout)
            .lines()
            .count()
            >= 2
    );
    d.kill().await;
}

#[tokio::test]
async fn missed_slots_run_once_on_catch_up_and_skipping_tasks_skip() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![Step::Text("caught up".into())]).await;
    let (h, port) = home(&model);
    for (name, extra) in [("catch", None), ("skip", Some("--skip-missed"))] {
        let mut args = vec![
            "task", "add", "--name", name, "--every", "1h", "--prompt", "hourly",
        ];
        args.extend(extra);
        assert!(h.run(&args).await.status.success());
    }
    // As if the daemon had been down for three hours and a bit.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    db(&h)
        .execute(
            "UPDATE tasks SET next_due = ?1, created_at = ?2",
            [now - 3 * 3_600_000 - 60_000, now - 4 * 3_600_000 - 60_000],
        )
        .unwrap();
    let d = start(&h, port).await;
    until("the catch-up run finished", async || {
        runs(&h, 1).first().is_some_and(|r| r.0 == "ok")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs(&h, 1).len(), 1, "more than one catch-up run");
    let skipped = runs(&h, 2);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, "skipped");
    assert_eq!(model.requests().len(), 1);
    // Both are due next in the future, on their hourly grid.
    let c = db(&h);
    let next: Vec<i64> = c
        .prepare("SELECT next_due FROM tasks ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for n in next {
        assert!(n > now && n <= now + 3_600_000, "{n} vs {now}");
    }
    d.kill().await;
}

#[tokio::test]
async fn a_run_killed_mid_way_is_never_repeated() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::SlowText(Duration::from_secs(30), "too late".into())],
    )
    .await;
    let (h, port) = home(&model);
    add_due_now(&h, "slow", "slow work").await;
    let d = start(&h, port).await;
    until("the run is in flight", async || model.requests().len() == 1).await;
    assert_eq!(runs(&h, 1)[0].0, "running");
    // kill -9: no chance to clean up.
    let pid = d.child.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut child = d.child;
    child.wait().await.unwrap();
    let d = start(&h, port).await;
    until("the interrupted run is abandoned", async || {
        runs(&h, 1)[0].0 == "abandoned"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs(&h, 1).len(), 1, "the slot ran again");
    assert_eq!(model.requests().len(), 1, "the prompt was sent again");
    // The task prompt did not come back as a chat message either.
    assert!(!d.replies().contains("too late"));
    d.kill().await;
}

#[tokio::test]
async fn the_agent_schedules_lists_and_cancels_its_own_tasks_through_the_gate() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Tools(vec![(
                "schedule_task".into(),
                r#"{"name": "report", "prompt": "weekly report", "cron": "0 9 * * MON", "tz": "Europe/Berlin"}"#.into(),
            )]),
            Step::EchoToolResult,
            Step::Tools(vec![("list_tasks".into(), "{}".into())]),
            Step::EchoToolResult,
            Step::Tools(vec![("cancel_task".into(), r#"{"id": 1}"#.into())]),
            Step::EchoToolResult,
        ],
    )
    .await;
    let (h, _) = home(&model);
    // By default scheduling asks a human; this policy allows it for the owner.
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"*_task\"\nsender = \"owner\"\naction = \"allow\"\n",
    )
    .unwrap();
    let out = h.run(&["ask", "schedule my weekly report"]).await;
    assert!(
        text(&out.stdout).contains("scheduled task 1 (report)"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = h.run(&["ask", "what is scheduled?"]).await;
    assert!(
        text(&out.stdout).contains("1 report [active] cron 0 9 * * MON"),
        "{}",
        text(&out.stdout)
    );
    let out = h.run(&["ask", "cancel it"]).await;
    assert!(
        text(&out.stdout).contains("task 1 removed"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&h.run(&["task", "list"]).await.stdout).contains("no tasks"));
    let decided = text(
        &h.run(&["audit", "show", "--kind", "policy_decision"])
            .await
            .stdout,
    );
    assert!(
        decided.contains("schedule_task") && decided.contains("\"decision\":\"allow\""),
        "{decided}"
    );
}

#[tokio::test]
async fn a_failed_run_is_tried_again_after_a_backoff() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            // A 4xx is not retried by the model client: the first attempt fails at once.
            Step::Status(400, "{\"error\": {\"message\": \"try later\"}}".into()),
            Step::Text("second time lucky".into()),
        ],
    )
    .await;
    let (h, port) = home(&model);
    add_due_now(&h, "flaky", "try").await;
    let d = start(&h, port).await;
    until("the second attempt succeeded", async || {
        runs(&h, 1).iter().any(|r| r.0 == "ok")
    })
    .await;
    let r = runs(&h, 1);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].0, "failed");
    assert_eq!(r[0].1, r[1].1, "both attempts are for the same slot");
    let log = text(&h.run(&["task", "runs", "1"]).await.stdout);
    assert!(
        log.contains("(attempt 2): ok") && log.contains("(attempt 1): failed"),
        "{log}"
    );
    assert!(log.contains("error:"), "{log}");
    d.kill().await;
}

#[tokio::test]
async fn a_retry_pending_when_the_daemon_stops_runs_after_the_restart() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Status(400, "{\"error\": {\"message\": \"try later\"}}".into()),
            Step::Text("after the restart".into()),
        ],
    )
    .await;
    let (h, port) = home_with_backoff(&model, 4);
    let now = add_due_now(&h, "flaky", "try").await;
    let d = start(&h, port).await;
    until("the first attempt failed", async || {
        runs(&h, 1).first().is_some_and(|r| r.0 == "failed")
    })
    .await;
    d.kill().await;
    let retry_at: Option<i64> = db(&h)
        .query_row("SELECT retry_at FROM task_runs WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let retry_at = retry_at.expect("the failed run names when to try again");
    assert!(retry_at > now, "{retry_at} <= {now}");
    let log = text(&h.run(&["task", "runs", "1"]).await.stdout);
    assert!(log.contains("tried again at"), "{log}");
    assert_eq!(model.requests().len(), 1);

    let d = start(&h, port).await;
    until("the retry ran after the restart", async || {
        runs(&h, 1).iter().any(|r| r.0 == "ok")
    })
    .await;
    let r = runs(&h, 1);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0].1, r[1].1, "both attempts are for the same slot");
    let started: i64 = db(&h)
        .query_row("SELECT started_at FROM task_runs WHERE id = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(started >= retry_at, "the retry ran before its time");
    let log = text(&h.run(&["task", "runs", "1"]).await.stdout);
    assert!(log.contains("(attempt 2): ok"), "{log}");
    assert!(!log.contains("tried again at"), "{log}");
    assert_eq!(model.requests().len(), 2);
    d.kill().await;
}

/// The `policy_decision` events of the turn whose prompt held `marker`, as (tool, tainted).
fn decisions_after(h: &TestHome, marker: &str) -> Vec<(String, bool)> {
    let c = db(h);
    let mut stmt = c
        .prepare("SELECT kind, body FROM audit ORDER BY seq")
        .unwrap();
    let events: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut turn = None;
    let mut found = Vec::new();
    for (kind, body) in events {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let body = &v["data"];
        if kind == "message_received" && body["text"].as_str().is_some_and(|t| t.contains(marker)) {
            turn = body["turn"].as_i64();
        }
        if kind == "policy_decision" && turn.is_some() && body["turn"].as_i64() == turn {
            found.push((
                body["tool"].as_str().unwrap_or_default().to_owned(),
                body["tainted"].as_bool().unwrap(),
            ));
        }
    }
    found
}

#[tokio::test]
async fn task_runs_are_not_tainted_by_their_own_prompt() {
    // A run of the owner's task speaks as the owner: its prompt is not outside content and its
    // turn starts untainted. A task a tainted turn scheduled carries that taint into every run.
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            // 1. The owner's task (added with `task add`) runs.
            support::model_server::shell("echo owner-task"),
            Step::Text("owner task done".into()),
            // 2. Someone other than the owner asks, through the API, for a task.
            Step::Tools(vec![(
                "schedule_task".into(),
                r#"{"name": "theirs", "prompt": "their-task-prompt", "every": "1h"}"#.into(),
            )]),
            Step::Text("scheduled".into()),
            // 3. That task runs.
            support::model_server::shell("echo their-task"),
            Step::Text("their task done".into()),
        ],
    )
    .await;
    let (h, port) = home(&model);
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"*_task\"\naction = \"allow\"\n",
    )
    .unwrap();
    add_due_now(&h, "mine", "owner-task-prompt").await;
    let d = start(&h, port).await;
    until("the owner's task ran", async || {
        d.replies().contains("owner task done")
    })
    .await;
    assert_eq!(
        decisions_after(&h, "owner-task-prompt"),
        vec![("shell".to_owned(), false)],
        "the owner's task run was tainted by its own prompt"
    );
    let first = model.requests()[0].to_string();
    assert!(
        first.contains("owner-task-prompt")
            && !first.contains("untrusted-data source=\\\"message from task:"),
        "the owner's task prompt was wrapped as outside content: {first}"
    );

    let answer = support::api_post(
        port,
        &d.token,
        "main",
        r#"{"text": "schedule-something please", "sender": "bob"}"#,
    );
    assert!(answer.contains("\"id\""), "{answer}");
    until("the task was scheduled", async || {
        d.replies().contains("scheduled")
    })
    .await;
    let (role, tainted): (String, bool) = db(&h)
        .query_row(
            "SELECT role, tainted FROM tasks WHERE name = 'theirs'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((role.as_str(), tainted), ("other", true));
    db(&h)
        .execute("UPDATE tasks SET next_due = 0 WHERE name = 'theirs'", [])
        .unwrap();
    // Wake the scheduler, as `nanoclaw task …` does.
    let woke = std::process::Command::new("curl")
        .args(["-s", "-X", "POST", "-H"])
        .arg(format!("authorization: Bearer {}", d.token.trim()))
        .arg(format!("http://127.0.0.1:{port}/v1/tasks/wake"))
        .status()
        .unwrap();
    assert!(woke.success());
    until("their task ran", async || {
        d.replies().contains("their task done")
    })
    .await;
    assert_eq!(
        decisions_after(&h, "their-task-prompt"),
        vec![("shell".to_owned(), true)],
        "a task scheduled by a tainted turn ran untainted"
    );
    d.kill().await;
}
