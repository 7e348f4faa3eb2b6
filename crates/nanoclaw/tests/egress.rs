//! The way out of a sandbox: real clients (curl, Python) inside a real bwrap sandbox, through
//! the init's relay, to the group's egress proxy, to an origin server on the host.

mod support;

use std::time::Duration;

use support::{TestHome, Wire, text};

/// An origin on the host's loopback that answers `hello from origin`.
async fn origin() -> u16 {
    support::http_origin("hello from origin".into()).await
}

/// A data dir whose `work` group may reach the origin (a loopback service, so `private`).
fn home(port: u16) -> TestHome {
    TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[egress.groups.work]\nallow = [{{ host = \"127.0.0.1:{port}\", private = true }}]\n"
        ),
    )
}

async fn sh(h: &TestHome, group: &str, script: &str) -> String {
    let out = h
        .run(&[
            "sandbox", "exec", "--group", group, "--", "bash", "-c", script,
        ])
        .await;
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// curl through the relay. NO_PROXY names loopback, so the proxy is given explicitly.
fn curl(args: &str) -> String {
    format!("curl -s -S --max-time 10 --noproxy '' -x \"$HTTP_PROXY\" {args}; echo \" exit=$?\"")
}

#[tokio::test]
async fn curl_reaches_an_allowed_host_through_the_proxy() {
    let port = origin().await;
    let h = home(port);
    let out = sh(&h, "work", &curl(&format!("http://127.0.0.1:{port}/x"))).await;
    assert!(
        out.contains("hello from origin") && out.contains("exit=0"),
        "{out}"
    );
}

#[tokio::test]
async fn curl_connect_tunnel_to_an_allowed_host() {
    let port = origin().await;
    let h = home(port);
    let out = sh(&h, "work", &curl(&format!("-p http://127.0.0.1:{port}/x"))).await;
    assert!(out.contains("hello from origin"), "{out}");
}

#[tokio::test]
async fn host_off_the_allowlist_gets_a_403_naming_it() {
    let port = origin().await;
    let h = home(port);
    let out = sh(&h, "work", &curl(&format!("-i http://127.0.0.2:{port}/"))).await;
    assert!(
        out.contains("403")
            && out.contains(&format!(
                "127.0.0.2:{port} is not on this group's egress allowlist"
            )),
        "{out}"
    );
    let out = sh(&h, "work", &curl("-p https://example.com/")).await;
    assert!(!out.contains("exit=0") && out.contains("403"), "{out}");
}

#[tokio::test]
async fn another_groups_sandbox_has_its_own_policy() {
    let port = origin().await;
    let h = home(port);
    let out = sh(&h, "main", &curl(&format!("http://127.0.0.1:{port}/x"))).await;
    assert!(
        !out.contains("hello from origin") && out.contains("not on this group's egress allowlist"),
        "{out}"
    );
}

#[tokio::test]
async fn python_urllib_uses_the_proxy() {
    let port = origin().await;
    let h = home(port);
    let script = format!(
        "NO_PROXY= no_proxy= python3 -c \"import os, urllib.request as u; p = os.environ['HTTP_PROXY']; \
         o = u.build_opener(u.ProxyHandler({{'http': p}})); print(o.open('http://127.0.0.1:{port}/', timeout=10).read().decode())\""
    );
    let out = sh(&h, "work", &script).await;
    assert!(out.contains("hello from origin"), "{out}");
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_without_private() {
    let port = origin().await;
    let h = TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        &format!("[sandbox]\nbackend = \"bwrap\"\n[egress]\nallow = [\"localhost:{port}\"]\n"),
    );
    let out = sh(&h, "main", &curl(&format!("-i http://localhost:{port}/"))).await;
    assert!(
        out.contains("403") && out.contains("a loopback address"),
        "{out}"
    );
    assert!(!out.contains("hello from origin"));
}

#[tokio::test]
async fn a_process_that_ignores_the_proxy_gets_nowhere() {
    let port = origin().await;
    let h = home(port);
    let out = sh(
        &h,
        "work",
        &format!("curl -s --max-time 5 --noproxy '*' http://127.0.0.1:{port}/; echo \" exit=$?\""),
    )
    .await;
    assert!(
        !out.contains("hello from origin") && !out.contains("exit=0"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// The red team's audit flood, as the agent runs it: one shell call loops refused requests
/// through its proxy. The call is stopped past its budget, the audit log grows by a bounded
/// number of events, and the next call of the turn runs normally (on Docker, in a fresh
/// container once the stopped one is gone).
#[tokio::test]
async fn a_refusal_flood_stops_its_call_with_a_bounded_record_and_the_next_call_runs() {
    use support::model_server::{ScriptedModel, Step};
    let flood = r#"python3 -c '
import socket
for i in range(1500):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
        s.sendall(b"GET http://not-allowed.example/%d HTTP/1.1\r\nHost: not-allowed.example\r\n\r\n" % i)
        s.recv(100); s.close()
    except OSError:
        pass
print("FLOOD-DONE")'"#;
    let mut backends = vec!["bwrap"];
    match support::docker_image() {
        Ok(()) => backends.push("docker"),
        Err(why) => support::skip(&format!("backend docker: {why}")),
    }
    for backend in backends {
        let tools = |cmd: &str| {
            Step::Tools(vec![(
                "shell".into(),
                serde_json::json!({ "command": cmd }).to_string(),
            )])
        };
        let model = ScriptedModel::start(
            Wire::Anthropic,
            vec![
                tools(flood),
                tools("echo NEXT-CALL-RAN"),
                Step::EchoToolResult,
            ],
        )
        .await;
        let h = TestHome::new(
            Wire::Anthropic,
            &model.url,
            &format!(
                "[sandbox]\nbackend = \"{backend}\"\ndocker_image = \"{}\"\n[limits]\ncommand_timeout_secs = 50\n",
                support::DOCKER_TEST_IMAGE
            ),
        );
        let out = h.run(&["ask", "flood"]).await;
        assert!(out.status.success(), "[{backend}] {}", text(&out.stderr));
        let first = model.requests()[1].to_string();
        assert!(
            first.contains("the command was stopped: it made more than 1000 requests"),
            "[{backend}] {first}"
        );
        assert!(
            text(&out.stdout).contains("NEXT-CALL-RAN"),
            "[{backend}] the next call did not run: {}",
            text(&out.stdout)
        );
        let egress = text(&h.run(&["audit", "show", "--kind", "egress"]).await.stdout);
        let events = egress.lines().filter(|l| l.contains("egress")).count();
        // 64 in full, and the stopped command's late connections, refused outside any call,
        // recorded for the 1st, 2nd, 4th, ... of them (on Docker it runs until its container
        // is gone).
        assert!(
            events <= 64 + 12,
            "[{backend}] {events} egress events for one flooding call:\n{egress}"
        );
        // The stopped command's late requests are never recorded as another call's.
        let late = (1001..1500).find(|i| egress.contains(&format!("not-allowed.example/{i}\"")));
        assert!(
            late.is_none(),
            "[{backend}] request {late:?} recorded after its call was stopped"
        );
        let summary = text(
            &h.run(&["audit", "show", "--kind", "egress_summary"])
                .await
                .stdout,
        );
        assert!(
            summary.contains("not-allowed.example"),
            "[{backend}] {summary}"
        );
    }
}
