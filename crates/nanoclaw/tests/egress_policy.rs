//! Egress as a decision of the policy: once a turn has read outside content, its requests
//! that send data out (a body, a query, a data header, any method but GET and HEAD) wait for a
//! human, whether the shell, `web_fetch` or `http_request` makes them, over plain HTTP or
//! inside a TLS tunnel to an allowlisted host. Each bypass an outside attack used is here: a
//! GET with a body or a query, PROPFIND, OPTIONS, `web_fetch` with a query, `curl -X POST`.

mod support;

use std::time::Duration;

use support::https::{Origin, TestCa};
use support::model_server::{ScriptedModel, Step, shell};
use support::{TestHome, Wire, text};

/// `curl` through the proxy (loopback is on NO_PROXY by default), printing the status and
/// the body, so the model's view shows what the proxy answered.
fn curl(args: &str) -> String {
    format!("export NO_PROXY= no_proxy=; curl -sS -w ' [%{{http_code}}]' {args}")
}

struct Setup {
    home: TestHome,
    origin: Origin,
    _ca: TestCa,
}

/// An HTTPS origin at `localhost` the `main` group may reach, and `policy` as policy.toml.
async fn setup(model: &ScriptedModel, policy: &str) -> Setup {
    setup_on("bwrap", model, policy).await
}

async fn setup_on(backend: &str, model: &ScriptedModel, policy: &str) -> Setup {
    let ca = TestCa::new();
    let origin = Origin::start(&ca, "localhost", None).await;
    let home = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"{backend}\"\ndocker_image = \"{}\"\n[egress]\nextra_roots = [\"{}\"]\nallow = [{{ host = \"localhost:{}\", private = true }}]\n",
            support::DOCKER_TEST_IMAGE,
            ca.cert_file.display(),
            origin.port
        ),
    );
    std::fs::write(home.path().join("policy.toml"), policy).unwrap();
    Setup {
        home,
        origin,
        _ca: ca,
    }
}

fn tool(name: &str, args: String) -> Step {
    Step::Tools(vec![(name.to_owned(), args)])
}

#[tokio::test]
async fn a_tainted_turn_sends_nothing_out_by_any_of_the_known_bypasses() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    // No approvers: the default's `ask` is refused at once, with the reason.
    let s = setup(&model, "# no approvers\n").await;
    let p = s.origin.port;
    let url = |path: &str| format!("https://localhost:{p}{path}");
    let bypasses: Vec<(&str, Step)> = vec![
        (
            "PROPFIND",
            shell(&curl(&format!("-X PROPFIND {}", url("/dav-leak1")))),
        ),
        (
            "OPTIONS",
            shell(&curl(&format!("-X OPTIONS {}", url("/opt-leak2")))),
        ),
        (
            "GET with a query",
            shell(&curl(&format!("-G --data-urlencode d=leak3 {}", url("/q")))),
        ),
        (
            "GET with a body",
            shell(&curl(&format!("-X GET --data leak4 {}", url("/b")))),
        ),
        (
            "curl -X POST",
            shell(&curl(&format!("-X POST --data leak5 {}", url("/post")))),
        ),
        (
            "a data header",
            shell(&curl(&format!("-H 'X-Data: leak6' {}", url("/h")))),
        ),
        (
            "web_fetch with a query",
            tool(
                "web_fetch",
                format!(r#"{{"url": "{}"}}"#, url("/page?d=leak7")),
            ),
        ),
        (
            "http_request POST",
            tool(
                "http_request",
                format!(
                    r#"{{"method": "POST", "url": "{}", "body": "leak8"}}"#,
                    url("/echo")
                ),
            ),
        ),
        (
            "plain HTTP POST",
            shell(&curl(&format!(
                "-X POST --data leak9 http://localhost:{p}/plain"
            ))),
        ),
    ];
    // Until the turn is tainted its tunnels are relayed unopened, so the sandbox meets the
    // origin's own certificate (from a test CA only nanoclaw trusts): `-k` for those two.
    let mut script = vec![
        // Before anything outside was read: a POST goes out as before.
        shell(&curl(&format!("-k -X POST --data fine0 {}", url("/echo")))),
        // Reading the page taints the turn.
        shell(&curl(&format!("-k {}", url("/page")))),
    ];
    script.extend(bypasses.iter().map(|(_, step)| step.clone()));
    // A plain read still works in the tainted turn.
    script.push(shell(&curl(&url("/page"))));
    script.push(Step::Text("done".into()));
    model.push(script);

    let out = s.home.run(&["ask", "go"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requests = model.requests();
    let result = |i: usize| requests[i].to_string();
    assert!(
        result(1).contains("fine0") && result(1).contains("[200]"),
        "an untainted POST: {}",
        result(1)
    );
    assert!(result(2).contains("Hello"), "the read: {}", result(2));
    for (i, (name, _)) in bypasses.iter().enumerate() {
        let seen = result(3 + i);
        assert!(
            seen.contains("refused by policy") && seen.contains("sends data out"),
            "{name} was not refused by the default: {seen}"
        );
    }
    let last = result(3 + bypasses.len());
    assert!(
        last.contains("Hello") && last.contains("[200]"),
        "a tainted turn's plain read: {last}"
    );
    let arrived = s.origin.seen();
    for leak in (1..=9).map(|n| format!("leak{n}")) {
        assert!(
            !arrived.iter().any(|r| r.path.contains(&leak)
                || String::from_utf8_lossy(&r.body).contains(&leak)
                || r.headers.iter().any(|(_, v)| v.contains(&leak))),
            "{leak} reached the origin: {arrived:?}"
        );
    }
    assert!(
        arrived
            .iter()
            .all(|r| r.method == "GET" || r.body == b"fine0"),
        "{arrived:?}"
    );
    // The audit names the refusals and the rule (here the default) that made them.
    let audit = text(
        &s.home
            .run(&["audit", "show", "--kind", "egress"])
            .await
            .stdout,
    );
    assert!(
        audit.contains("\"deny\"") && audit.contains("PROPFIND"),
        "{audit}"
    );
}

#[tokio::test]
async fn one_call_that_reads_then_sends_is_stopped_at_the_send() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let s = setup(&model, "# no approvers\n").await;
    let p = s.origin.port;
    // An untainted turn: the first request goes out; what it read could steer the rest of
    // the call (`curl …/script | sh`), so the call's next request is judged as tainted.
    model.push(vec![
        shell(&format!(
            "{}; echo; {}",
            curl(&format!("-k https://localhost:{p}/page")),
            curl(&format!(
                "-X POST --data samecall1 https://localhost:{p}/echo"
            ))
        )),
        Step::Text("done".into()),
    ]);
    let out = s.home.run(&["ask", "go"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result = model.requests()[1].to_string();
    assert!(
        result.contains("Hello") && result.contains("refused by policy"),
        "{result}"
    );
    assert!(!s.origin.seen().iter().any(|r| r.body == b"samecall1"));
}

const ASK_POLICY: &str = r#"
[approvers.owner]
terminal = true

[[egress]]
name = "tainted sends ask the owner"
tainted = true
sends = true
action = "ask"
timeout_secs = 60
"#;

/// The id of the first pending approval, once there is one; its listing line too.
async fn pending(h: &TestHome, ask: &mut tokio::process::Child) -> (String, String) {
    for _ in 0..300 {
        let out = text(&h.run(&["approvals", "list"]).await.stdout);
        if let Some(first) = out.lines().next()
            && !first.starts_with("no pending")
        {
            return (
                first.split_whitespace().next().unwrap().to_owned(),
                out.clone(),
            );
        }
        if let Ok(Some(status)) = ask.try_wait() {
            panic!("ask ended ({status}) before asking");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no approval request appeared");
}

#[tokio::test]
async fn a_request_that_needs_approval_waits_for_it_and_a_denial_ends_the_calls_asking() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let s = setup(&model, ASK_POLICY).await;
    let p = s.origin.port;
    model.push(vec![
        shell(&curl(&format!("-k https://localhost:{p}/page"))),
        shell(&curl(&format!(
            "-X POST --data approved1 https://localhost:{p}/echo"
        ))),
        // Denied, then a second request of the same call is refused without asking.
        shell(&curl(&format!(
            "-X POST --data denied2 https://localhost:{p}/echo; {}",
            curl(&format!(
                "-X POST --data denied3 https://localhost:{p}/echo"
            ))
        ))),
        Step::Text("done".into()),
    ]);
    let mut ask = s
        .home
        .command()
        .args(["ask", "go"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let (id, listing) = pending(&s.home, &mut ask).await;
    assert!(
        listing.contains("egress") && listing.contains("/echo"),
        "the request shows what would be sent: {listing}"
    );
    let out = s.home.run(&["approvals", "approve", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (id2, _) = loop {
        let (id2, listing) = pending(&s.home, &mut ask).await;
        if id2 != id {
            break (id2, listing);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = s.home.run(&["approvals", "deny", &id2]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = tokio::time::timeout(Duration::from_secs(60), ask.wait_with_output())
        .await
        .expect("ask finished")
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requests = model.requests();
    let approved = requests[2].to_string();
    assert!(
        approved.contains("approved1") && approved.contains("[200]"),
        "{approved}"
    );
    let denied = requests[3].to_string();
    assert!(
        denied.contains("denied it") && denied.contains("no more are asked"),
        "{denied}"
    );
    let arrived = s.origin.seen();
    assert!(arrived.iter().any(|r| r.body == b"approved1"));
    assert!(
        !arrived
            .iter()
            .any(|r| r.body == b"denied2" || r.body == b"denied3"),
        "{arrived:?}"
    );
    let listing = text(&s.home.run(&["approvals", "list"]).await.stdout);
    assert!(listing.starts_with("no pending"), "{listing}");
}

#[tokio::test]
async fn a_rule_can_let_a_tainted_turn_send_to_one_host_and_refuse_a_tool() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let s = setup(
        &model,
        r#"
[[egress]]
name = "the tracker may take posts"
host = "localhost"
path = "/echo"
methods = ["POST"]
action = "allow"

[[egress]]
name = "web_fetch only reads"
tool = "web_fetch"
sends = true
action = "deny"
"#,
    )
    .await;
    let p = s.origin.port;
    model.push(vec![
        shell(&curl(&format!("-k https://localhost:{p}/page"))),
        shell(&curl(&format!(
            "-X POST --data allowed1 https://localhost:{p}/echo"
        ))),
        tool(
            "web_fetch",
            format!(r#"{{"url": "https://localhost:{p}/page?q=x"}}"#),
        ),
        // Dot segments do not step out of the rule's path.
        shell(&curl(&format!(
            "--path-as-is -X POST --data dotted1 'https://localhost:{p}/echo/%2e%2e/leak'"
        ))),
        Step::Text("done".into()),
    ]);
    let out = s.home.run(&["ask", "go"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requests = model.requests();
    assert!(
        requests[2].to_string().contains("allowed1"),
        "{}",
        requests[2]
    );
    let dotted = requests[4].to_string();
    assert!(dotted.contains("refused by policy"), "{dotted}");
    assert!(!s.origin.seen().iter().any(|r| r.body == b"dotted1"));
    let refused = requests[3].to_string();
    assert!(
        refused.contains("web_fetch only reads") && refused.contains("refused by policy"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_policy_whose_egress_rule_names_a_tool_off_the_network_stops_startup() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let s = setup(
        &model,
        "[[egress]]\ntool = \"read_file\"\naction = \"deny\"\n",
    )
    .await;
    let out = s.home.run(&["ask", "go"]).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("policy.toml") && err.contains("line 1") && err.contains("egress[1].tool"),
        "{err}"
    );
}

#[tokio::test]
async fn policy_check_egress_prints_what_the_proxy_would_decide() {
    let h = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    let out = h
        .run(&[
            "policy",
            "check-egress",
            "https://api.example.com/items?q=1",
            "--tainted",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("tunnel api.example.com:443: opened")
            && said.contains("sends data: yes")
            && said.contains("GET https://api.example.com/items?q=1: ask")
            && said.contains("approvers: owner"),
        "{said}"
    );
    let out = h
        .run(&["policy", "check-egress", "https://api.example.com/items"])
        .await;
    let said = text(&out.stdout);
    assert!(
        said.contains("tunnel api.example.com:443: allow") && said.contains("sends data: no"),
        "{said}"
    );
    for (args, named) in [
        (vec!["ftp://x.org/"], "http:// or https://"),
        (vec!["https://x.org/", "--method", "PO ST"], "--method"),
        (vec!["https://x.org/", "--header", "novalue"], "--header"),
        (vec!["https://x.org/", "--tool", "read_file"], "--tool"),
        (vec!["https://x.org:99999/"], "bad port \"99999\""),
        (vec!["https://u:p@x.org:0/"], "bad port \"0\""),
    ] {
        let mut all = vec!["policy", "check-egress"];
        all.extend(args);
        let out = h.run(&all).await;
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        assert!(
            text(&out.stderr).contains(named),
            "{all:?}: {}",
            text(&out.stderr)
        );
    }
}

/// A request from Python's urllib through the proxy (the Docker test image has no curl),
/// printing the status and the body's head.
fn python_request(method: &str, url: &str, data: &str) -> String {
    format!(
        r#"export NO_PROXY= no_proxy=; python3 -c '
import sys, urllib.request, urllib.error
m, u, d = sys.argv[1:4]
r = urllib.request.Request(u, data=d.encode() or None, method=m)
try:
    print(urllib.request.urlopen(r, timeout=20).read()[:300].decode(), "[200]")
except urllib.error.HTTPError as e:
    print(e.read().decode(), "[%d]" % e.code)
except Exception as e:
    print("failed:", e)
' {method} '{url}' '{data}'"#
    )
}

#[tokio::test]
async fn a_tainted_turn_sends_nothing_out_from_a_docker_sandbox_either() {
    if let Err(why) = support::docker_image() {
        support::skip(&format!("backend docker: {why}"));
        return;
    }
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let s = setup_on("docker", &model, "# no approvers\n").await;
    let p = s.origin.port;
    let url = |path: &str| format!("https://localhost:{p}{path}");
    model.push(vec![
        // Taints the turn (the tunnel is relayed unopened, so the origin's test certificate is
        // not trusted in here; the request still went out).
        shell(&python_request("GET", &url("/page"), "")),
        shell(&python_request("POST", &url("/post"), "dleak1")),
        shell(&python_request("GET", &url("/q?d=dleak2"), "")),
        shell(&python_request("PROPFIND", &url("/dav-dleak3"), "")),
        shell(&python_request("GET", &url("/page"), "")),
        Step::Text("done".into()),
    ]);
    let out = s.home.run(&["ask", "go"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requests = model.requests();
    for (i, request) in requests.iter().enumerate().take(5).skip(2) {
        let seen = request.to_string();
        assert!(
            seen.contains("refused by policy") && seen.contains("[403]"),
            "call {i}: {seen}"
        );
    }
    let read = requests[5].to_string();
    assert!(read.contains("Hello") && read.contains("[200]"), "{read}");
    let arrived = s.origin.seen();
    assert!(
        !arrived.iter().any(|r| r.path.contains("dleak")
            || String::from_utf8_lossy(&r.body).contains("dleak")),
        "{arrived:?}"
    );
}
