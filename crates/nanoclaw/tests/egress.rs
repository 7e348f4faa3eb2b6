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
