//! The Docker backend's container lifecycle, through the real daemon: one container per group,
//! removed when idle, and containers left by a killed daemon removed at the next start.
//! Skipped, with the reason printed, where no Docker engine is available.

mod support;

use std::time::Duration;

use support::model_server::shell;
use support::{ScriptedModel, Step, TestHome, Wire, text};

/// Containers labelled with this test's data dir.
fn containers(home: &TestHome) -> Vec<String> {
    let id = nanoclaw_sandbox::docker::home_id(home.path());
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=org.nanoclaw.home={id}"),
        ])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_owned).collect()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

fn shell_turn() -> Vec<Step> {
    vec![
        Step::Tools(vec![(
            "shell".into(),
            r#"{"command": "echo from-docker; id -u"}"#.into(),
        )]),
        Step::EchoToolResult,
    ]
}

#[tokio::test]
async fn daemon_keeps_one_container_per_group_removes_it_when_idle_and_cleans_up_after_a_crash() {
    if let Err(why) = support::docker_image() {
        support::skip(&why);
        return;
    }
    let mut script = shell_turn();
    script.extend(shell_turn());
    script.extend(shell_turn());
    let model = ScriptedModel::start(Wire::Anthropic, script).await;
    let port = support::free_port();
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"docker\"\ndocker_image = \"{}\"\ndocker_idle_secs = 2\n[api]\nlisten = \"127.0.0.1:{port}\"\n",
            support::DOCKER_TEST_IMAGE
        ),
    );
    let token = || std::fs::read_to_string(home.path().join("api.token")).unwrap();
    let post = |text: &'static str| {
        let token = token();
        async move {
            let body = format!("{{\"text\": \"{text}\"}}");
            let req = format!(
                "POST /v1/groups/main/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).await.unwrap();
            assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
        }
    };
    let start = || {
        home.command()
            .arg("run")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let up = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();

    // A turn runs its shell command in the group's container.
    let mut daemon = start();
    wait_until("the daemon listens", up).await;
    post("one").await;
    model.wait_for_requests(2, Duration::from_secs(30)).await;
    let second = model.requests()[1].to_string();
    assert!(second.contains("from-docker"), "{second}");
    assert_eq!(containers(&home).len(), 1, "one container for the group");

    // Idle for longer than docker_idle_secs: the container goes, the workspace stays.
    wait_until("the idle container is removed", || {
        containers(&home).is_empty()
    })
    .await;

    // A new turn gets a new container; then the daemon dies with it running.
    post("two").await;
    model.wait_for_requests(4, Duration::from_secs(30)).await;
    assert_eq!(containers(&home).len(), 1);
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
    assert_eq!(
        containers(&home).len(),
        1,
        "the killed daemon's container is still there"
    );

    // The next start finds it by its labels and removes it.
    let mut daemon = start();
    wait_until("the daemon listens again", up).await;
    wait_until("the stale container is removed", || {
        containers(&home).is_empty()
    })
    .await;
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

#[tokio::test]
async fn a_command_cannot_kill_its_init_and_leaves_nothing_running() {
    if let Err(why) = support::docker_image() {
        support::skip(&why);
        return;
    }
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            shell("sleep 1000 & kill -9 $PPID; sleep 5"),
            shell("cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo END"),
            Step::EchoToolResult,
        ],
    )
    .await;
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"docker\"\ndocker_image = \"{}\"\n",
            support::DOCKER_TEST_IMAGE
        ),
    );
    let out = home.run(&["ask", "go"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The init is outside the command's Landlock domain: the signal is refused.
    let first = model.requests()[1].to_string();
    assert!(first.contains("Operation not permitted"), "{first}");
    let listing = text(&out.stdout);
    assert!(listing.contains("END"), "{listing}");
    assert!(
        !listing.contains("sleep 1000"),
        "a process outlived the init that started it: {listing}"
    );
}

#[tokio::test]
async fn doctor_reports_the_docker_backends_isolation() {
    if let Err(why) = support::docker_image() {
        support::skip(&why);
        return;
    }
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"docker\"\ndocker_image = \"{}\"\n",
            support::DOCKER_TEST_IMAGE
        ),
    );
    let out = home.run(&["doctor"]).await;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("sandbox: docker works"), "{report}");
    for feature in [
        "capabilities dropped",
        "no_new_privs",
        "unprivileged uid",
        "network namespace",
        "seccomp filter",
        "cgroup limits",
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
    assert!(
        containers(&home).is_empty(),
        "doctor left a container behind"
    );
}

#[tokio::test]
async fn a_docker_sandbox_gets_placeholders_the_ca_and_injection_through_the_handoff() {
    if let Err(why) = support::docker_image() {
        support::skip(&why);
        return;
    }
    const VALUE: &str = "docker-secret-value-123456";
    let ca = support::https::TestCa::new();
    let origin = support::https::Origin::start(&ca, "localhost", None).await;
    let home = TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        &format!(
            "[sandbox]\nbackend = \"docker\"\ndocker_image = \"{}\"\n[egress]\nextra_roots = [\"{}\"]\nallow = [{{ host = \"localhost:{}\", private = true }}]\n",
            support::DOCKER_TEST_IMAGE,
            ca.cert_file.display(),
            origin.port
        ),
    );
    let out = home
        .set_secret("TOKEN", VALUE, &["--host", "localhost", "--group", "main"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = format!(
        r#"NO_PROXY= no_proxy= python3 - <<'EOF'
import os, urllib.request
print("env", os.environ["TOKEN"])
req = urllib.request.Request("https://localhost:{}/echo", headers={{"Authorization": "Bearer " + os.environ["TOKEN"]}})
print(urllib.request.urlopen(req, timeout=10).read().decode())
EOF"#,
        origin.port
    );
    let out = home
        .run(&["sandbox", "exec", "--", "bash", "-c", &script])
        .await;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(all.contains("env NANOCLAW_SECRET_TOKEN_"), "{all}");
    assert!(
        !all.contains(VALUE),
        "the value reached the container: {all}"
    );
    let seen = origin.seen();
    let last = seen.last().expect("the request reached the origin");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
}
