//! Secrets end to end: the `secret` CLI and the store on disk; real clients (curl, Python
//! urllib and requests, git) inside a real bwrap sandbox getting a secret injected by the
//! egress proxy toward its bound host only; exfiltration refused; SSRF refused in every
//! spelling and through redirects; the web tools; redaction before the model.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::https::{Origin, TestCa};
use support::model_server::{ScriptedModel, Step};
use support::{TestHome, Wire, text};

/// The value of the secret bound to `localhost`. Never seen by a sandbox or the model.
const TOKEN: &str = "tok-REAL-VALUE-0123456789";
/// A second secret on `localhost`, injected as a header by the proxy itself.
const APIKEY: &str = "key-REAL-VALUE-9876543210";
/// A secret bound to another host.
const OTHER: &str = "other-REAL-VALUE-555555";

struct Setup {
    home: TestHome,
    /// HTTPS on `localhost`: the bound host (intercepted).
    bound: Origin,
    /// HTTPS on `127.0.0.1`: allowed, no secret bound (a plain tunnel).
    unbound: Origin,
    _ca: TestCa,
    _git: tempfile::TempDir,
}

fn placeholder_of(list: &str, name: &str) -> String {
    let start = list.find(name).expect("secret listed");
    let line = list[start..]
        .lines()
        .find(|l| l.trim_start().starts_with("placeholder:"))
        .expect("placeholder line");
    line.trim_start()["placeholder:".len()..].trim().to_owned()
}

/// A bare repository with one commit, served under `/git/repo.git`.
fn git_repo() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
    run(root.path(), &["init", "-q", "--bare", "repo.git"]);
    std::fs::write(work.path().join("README"), "cloned through the proxy\n").unwrap();
    run(work.path(), &["init", "-q"]);
    run(work.path(), &["add", "README"]);
    run(work.path(), &["commit", "-q", "-m", "one"]);
    let bare = root.path().join("repo.git");
    run(
        work.path(),
        &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/heads/main"],
    );
    run(&bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    root
}

async fn setup(model_url: &str, extra_allow: &str) -> Setup {
    let ca = TestCa::new();
    let git = git_repo();
    let bound = Origin::start(&ca, "localhost", Some((git.path(), TOKEN))).await;
    let unbound = Origin::start(&ca, "127.0.0.1", None).await;
    let config = format!(
        "[sandbox]\nbackend = \"bwrap\"\n[egress]\nextra_roots = [\"{}\"]\n[egress.groups.work]\nallow = [{{ host = \"localhost:{}\", private = true }}, {{ host = \"127.0.0.1:{}\", private = true }}{extra_allow}]\n",
        ca.cert_file.display(),
        bound.port,
        unbound.port,
    );
    let home = TestHome::new(Wire::Anthropic, model_url, &config);
    for (name, value, args) in [
        (
            "TOKEN",
            TOKEN,
            vec!["--host", "localhost", "--group", "work"],
        ),
        (
            "APIKEY",
            APIKEY,
            vec![
                "--host",
                "localhost",
                "--group",
                "work",
                "--header",
                "x-api-key",
            ],
        ),
        (
            "OTHER",
            OTHER,
            vec!["--host", "elsewhere.example", "--group", "work"],
        ),
    ] {
        let out = home.set_secret(name, value, &args).await;
        assert!(
            out.status.success(),
            "secret set {name}: {}",
            text(&out.stderr)
        );
    }
    Setup {
        home,
        bound,
        unbound,
        _ca: ca,
        _git: git,
    }
}

/// Run a script in the `work` group's sandbox. Loopback names are on NO_PROXY by default;
/// these tests reach loopback origins through the proxy, so it is cleared.
async fn sh(h: &TestHome, script: &str) -> String {
    let script = format!("export NO_PROXY= no_proxy=\n{script}");
    let out = h
        .run(&[
            "sandbox", "exec", "--group", "work", "--", "bash", "-c", &script,
        ])
        .await;
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn assert_no_value(out: &str) {
    for v in [TOKEN, APIKEY, OTHER] {
        assert!(
            !out.contains(v),
            "a secret value reached the sandbox: {out}"
        );
    }
}

#[tokio::test]
async fn secret_cli_stores_sealed_and_lists_without_values() {
    let h = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    let out = h
        .set_secret(
            "GITHUB_TOKEN",
            "ghp_abcdefghijklmnop\n",
            &[
                "--host",
                "api.github.com",
                "--group",
                "main",
                "--header",
                "Authorization",
                "--format",
                "token {}",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = h.path().join("secrets.json");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        !stored.contains("ghp_abcdefghijklmnop"),
        "value in the clear: {stored}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = h.key_file();
    assert!(!key.starts_with(h.path()));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let list = text(&h.run(&["secret", "list"]).await.stdout);
    assert!(
        list.contains("GITHUB_TOKEN") && list.contains("api.github.com"),
        "{list}"
    );
    assert!(list.contains("NANOCLAW_SECRET_GITHUB_TOKEN_"), "{list}");
    assert!(list.contains("header Authorization: token {}"), "{list}");
    assert!(!list.contains("ghp_abcdefghijklmnop"), "{list}");

    // The sandbox sees the placeholder, never the value.
    let env = text(
        &h.run(&["sandbox", "exec", "--", "printenv", "GITHUB_TOKEN"])
            .await
            .stdout,
    );
    assert_eq!(env.trim(), placeholder_of(&list, "GITHUB_TOKEN"));
    // Other groups get nothing.
    let other = h
        .run(&[
            "sandbox",
            "exec",
            "--group",
            "work",
            "--",
            "printenv",
            "GITHUB_TOKEN",
        ])
        .await;
    assert!(!other.status.success());

    let rm = h.run(&["secret", "rm", "GITHUB_TOKEN"]).await;
    assert!(rm.status.success());
    assert!(text(&h.run(&["secret", "list"]).await.stdout).contains("no secrets"));
    let again = h.run(&["secret", "rm", "GITHUB_TOKEN"]).await;
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stderr));
}

#[tokio::test]
async fn bad_secret_input_is_refused_with_the_reason() {
    let h = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    for (name, value, args, expect) in [
        (
            "lower",
            "long-enough-value",
            vec!["--host", "x.example"],
            "lower",
        ),
        ("SHORT", "abc", vec!["--host", "x.example"], "at least 8"),
        ("EMPTY", "", vec!["--host", "x.example"], "no value"),
        (
            "PORTED",
            "long-enough-value",
            vec!["--host", "x.example:8443"],
            "not ports",
        ),
        (
            "BADHOST",
            "long-enough-value",
            vec!["--host", "bad host"],
            "bad host",
        ),
        (
            "HDR",
            "long-enough-value",
            vec!["--host", "x.example", "--header", "bad header"],
            "not a valid header",
        ),
        (
            "FMT",
            "long-enough-value",
            vec![
                "--host",
                "x.example",
                "--header",
                "x",
                "--format",
                "no slot",
            ],
            "exactly once",
        ),
        (
            "PATH",
            "long-enough-value",
            vec!["--host", "x.example", "--group", "main"],
            "the sandbox sets itself",
        ),
        (
            "LD_PRELOAD",
            "long-enough-value",
            vec!["--host", "x.example"],
            "the sandbox sets itself",
        ),
        (
            "HOSTHDR",
            "long-enough-value",
            vec!["--host", "x.example", "--header", "Host"],
            "the proxy sets that header itself",
        ),
        (
            "CRLF",
            "long-enough-value",
            vec![
                "--host",
                "x.example",
                "--header",
                "x",
                "--format",
                "Bearer {}\r\nX-Other: y",
            ],
            "control character",
        ),
        (
            "SPACED",
            " long-enough-value",
            vec!["--host", "x.example"],
            "whitespace",
        ),
        (
            "NUL",
            "long-enough\u{0}value",
            vec!["--host", "x.example"],
            "control character",
        ),
        ("TLD", "long-enough-value", vec!["--host", "*.com"], "*.com"),
        (
            "URL",
            "long-enough-value",
            vec!["--host", "https://x.example"],
            "not a URL",
        ),
    ] {
        let out = h.set_secret(name, value, &args).await;
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(expect),
            "{name}: {}",
            text(&out.stderr)
        );
    }
    let out = h.run(&["secret", "set", "NOHOST"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error_and_an_env_key_works() {
    let h = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    let out = h
        .set_secret("TOKEN", "a-long-secret-value", &["--host", "x.example"])
        .await;
    assert!(out.status.success());
    std::fs::write(h.key_file(), "22".repeat(32)).unwrap();
    let out = h.run(&["sandbox", "exec", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot decrypt secret TOKEN"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("a-long-secret-value"));
    // With secrets stored, init never makes a new key in place of a missing one.
    std::fs::remove_file(h.key_file()).unwrap();
    let out = h.run(&["init"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no secrets key"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !h.key_file().exists(),
        "init made a new key beside sealed secrets"
    );
    // A key given in the environment is used instead of the file.
    let h2 = TestHome::new(Wire::Anthropic, "http://127.0.0.1:9", "");
    let mut c = h2.command();
    c.env("NANOCLAW_SECRETS_KEY", "ab".repeat(32))
        .args(["secret", "list"]);
    assert!(c.output().await.unwrap().status.success());
}

#[tokio::test]
async fn curl_gets_the_secret_injected_toward_its_bound_host_only() {
    let s = setup("http://127.0.0.1:9", "").await;
    let out = sh(
        &s.home,
        &format!(
            "echo \"env=$TOKEN\"\n\
             curl -sS --max-time 10 -H \"Authorization: Bearer $TOKEN\" https://localhost:{}/echo; echo \" exit=$?\"\n\
             curl -sS -k --max-time 10 -H \"Authorization: Bearer $TOKEN\" https://127.0.0.1:{}/echo; echo \" exit=$?\"",
            s.bound.port, s.unbound.port
        ),
    )
    .await;
    assert_no_value(&out);
    assert!(out.contains("env=NANOCLAW_SECRET_TOKEN_"), "{out}");
    assert_eq!(out.matches("exit=0").count(), 2, "{out}");
    // The bound host got the value, in the header and as the injected x-api-key.
    let seen = s.bound.seen();
    let last = seen.last().expect("a request reached the bound host");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(last.header("x-api-key"), Some(APIKEY));
    // The echo of that request came back with placeholders, not values.
    assert!(
        out.contains("authorization: Bearer NANOCLAW_SECRET_TOKEN_"),
        "{out}"
    );
    // The host with no binding was tunnelled untouched: it saw only the placeholder.
    let seen = s.unbound.seen();
    let last = seen.last().expect("a request reached the unbound host");
    let auth = last.header("authorization").unwrap_or_default();
    assert!(auth.starts_with("Bearer NANOCLAW_SECRET_TOKEN_"), "{auth}");
    assert!(last.header("x-api-key").is_none());
}

#[tokio::test]
async fn python_urllib_and_requests_get_the_secret_injected() {
    let s = setup("http://127.0.0.1:9", "").await;
    let script = format!(
        r#"python3 - <<'EOF'
import os, urllib.request, requests
url = "https://localhost:{port}/echo"
auth = {{"Authorization": "Bearer " + os.environ["TOKEN"]}}
r = urllib.request.urlopen(urllib.request.Request(url + "?via=urllib", headers=auth), timeout=10)
print("urllib", r.status)
r = requests.get(url + "?via=requests", headers=auth, timeout=10)
print("requests", r.status_code)
EOF"#,
        port = s.bound.port
    );
    let out = sh(&s.home, &script).await;
    assert_no_value(&out);
    assert!(
        out.contains("urllib 200") && out.contains("requests 200"),
        "{out}"
    );
    let seen = s.bound.seen();
    for via in ["urllib", "requests"] {
        let req = seen
            .iter()
            .find(|r| r.path.ends_with(&format!("via={via}")))
            .unwrap_or_else(|| panic!("{via} request did not arrive: {out}"));
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{via}"
        );
    }
}

#[tokio::test]
async fn git_clones_over_https_with_the_token_injected() {
    let s = setup("http://127.0.0.1:9", "").await;
    let out = sh(
        &s.home,
        &format!(
            "git -c http.extraHeader=\"Authorization: Bearer $TOKEN\" clone -q https://localhost:{}/git/repo.git /tmp/c && cat /tmp/c/README",
            s.bound.port
        ),
    )
    .await;
    assert_no_value(&out);
    assert!(out.contains("cloned through the proxy"), "{out}");
    // Without the header the server refuses: the token really came from the proxy.
    let out = sh(
        &s.home,
        &format!(
            "git clone -q https://localhost:{}/git/repo.git /tmp/d 2>&1; echo exit=$?",
            s.bound.port
        ),
    )
    .await;
    assert!(!out.contains("exit=0"), "{out}");
}

#[tokio::test]
async fn exfiltration_attempts_are_refused() {
    let s = setup("http://127.0.0.1:9", "").await;
    let (b, u) = (s.bound.port, s.unbound.port);
    let cases = [
        // A placeholder of a secret bound elsewhere, toward an intercepted host.
        (
            format!("-H \"X-Leak: $OTHER\" https://localhost:{b}/echo"),
            "exfiltration",
        ),
        // A placeholder in plain HTTP toward a host with no binding.
        (
            format!("\"http://127.0.0.1:{u}/?t=$TOKEN\""),
            "exfiltration",
        ),
        // A raw value, in a body toward its own host, and in a plain-HTTP query.
        (
            format!("-d leak={TOKEN} https://localhost:{b}/echo"),
            "raw value of secret TOKEN",
        ),
        (
            format!("\"http://127.0.0.1:{u}/?k={APIKEY}\""),
            "raw value of secret APIKEY",
        ),
        // A placeholder in the body, which TOKEN does not allow.
        (
            format!("-d \"t=$TOKEN\" https://localhost:{b}/echo"),
            "request body",
        ),
    ];
    let before = s.bound.seen().len();
    for (args, expect) in &cases {
        let out = sh(&s.home, &format!("curl -sS -i --max-time 10 {args}")).await;
        assert!(out.contains("403"), "{args}: {out}");
        assert!(out.contains(expect), "{args}: {out}");
    }
    assert_eq!(
        s.bound.seen().len(),
        before,
        "a refused request reached the origin"
    );
    for seen in s.bound.seen().iter().chain(s.unbound.seen().iter()) {
        assert_no_value(&format!("{seen:?}"));
    }
}

#[tokio::test]
async fn a_bound_host_cannot_be_steered_by_host_headers_or_compression() {
    let s = setup("http://127.0.0.1:9", "").await;
    let (b, u) = (s.bound.port, s.unbound.port);
    // Another Host on a connection intercepted for the bound host: the front end would route
    // the request, and the secret, by it.
    let out = sh(
        &s.home,
        &format!(
            "curl -sS -i --max-time 10 -H \"Host: 127.0.0.1:{u}\" -H \"Authorization: Bearer $TOKEN\" https://localhost:{b}/echo"
        ),
    )
    .await;
    assert!(
        out.contains("403") && out.contains("request for 127.0.0.1"),
        "{out}"
    );
    // Two Host headers, the first one right (Python's http.client sends them as given).
    let script = format!(
        r#"import http.client, os, ssl
c = http.client.HTTPSConnection("127.0.0.1", 3128, context=ssl.create_default_context())
c.set_tunnel("localhost", {b})
c.putrequest("GET", "/echo", skip_host=True)
c.putheader("Host", "localhost:{b}")
c.putheader("Host", "other.example")
c.putheader("Authorization", "Bearer " + os.environ["TOKEN"])
c.endheaders()
r = c.getresponse()
print(r.status, r.read().decode())
"#
    );
    let out = sh(&s.home, &format!("python3 -c '{script}'")).await;
    assert!(
        out.contains("403") && out.contains("request for other.example"),
        "{out}"
    );
    let before = s.bound.seen().len();
    // The right Host is fine; a client asking for gzip gets the body unencoded, so the echo
    // of the injected value comes back redacted.
    let out = sh(
        &s.home,
        &format!(
            "curl -sS --max-time 10 -H \"Host: localhost:{b}\" -H 'Accept-Encoding: gzip' -H \"Authorization: Bearer $TOKEN\" https://localhost:{b}/echo"
        ),
    )
    .await;
    assert_no_value(&out);
    assert!(
        out.contains("authorization: Bearer NANOCLAW_SECRET_TOKEN_"),
        "{out}"
    );
    let seen = s.bound.seen();
    assert_eq!(
        seen.len(),
        before + 1,
        "a refused request reached the origin"
    );
    let last = seen.last().unwrap();
    assert_eq!(last.header("accept-encoding"), Some("identity"));
    assert_eq!(last.header("host"), Some(format!("localhost:{b}").as_str()));
    // A bound host that compresses anyway is refused: its body could not be redacted.
    let out = sh(
        &s.home,
        &format!("curl -sS -i --max-time 10 https://localhost:{b}/gzip"),
    )
    .await;
    assert!(
        out.contains("502") && out.contains("Content-Encoding \"gzip\""),
        "{out}"
    );
}

#[tokio::test]
async fn ssrf_is_refused_in_every_spelling_and_through_redirects() {
    // Each of these is even on the allowlist (without `private`): the address check refuses.
    let spellings = [
        "localhost:9",
        "127.0.0.1:9",
        "0.0.0.0:9",
        "[::1]:9",
        "[::ffff:127.0.0.1]:9",
        "2130706433:9",
        "0177.0.0.1:9",
    ];
    let extra: String = spellings.iter().map(|h| format!(", \"{h}\"")).collect();
    let s = setup("http://127.0.0.1:9", &extra).await;
    for host in spellings {
        let out = sh(
            &s.home,
            &format!("curl -sS -i --max-time 10 http://{host}/"),
        )
        .await;
        assert!(
            out.contains("403") && out.contains("refused"),
            "{host}: {out}"
        );
    }
    // The metadata address cannot even be put on an allowlist (the config refuses it); asked
    // for anyway, it is refused.
    let out = sh(&s.home, "curl -sS -i --max-time 10 http://169.254.169.254/").await;
    assert!(out.contains("403"), "{out}");
    // A name that resolves to a private address, with no `private` rule for it.
    let out = sh(
        &s.home,
        "curl -sS -i --max-time 10 https://localhost:9/ 2>&1",
    )
    .await;
    assert!(out.contains("403"), "{out}");
    // Redirects from an allowed host to loopback and to the metadata address.
    for to in [
        "http://127.0.0.1:9/",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let out = sh(
            &s.home,
            &format!(
                "curl -sS -i -L --max-time 10 'https://localhost:{}/redirect?to={to}'",
                s.bound.port
            ),
        )
        .await;
        assert!(out.contains("302") && out.contains("403"), "{to}: {out}");
    }
}

#[tokio::test]
async fn web_tools_go_through_the_proxy_and_the_model_never_sees_a_value() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let s = setup(&model.url, "").await;
    let port = s.bound.port;
    let tools = |name: &str, args: String| Step::Tools(vec![(name.to_owned(), args)]);
    // Each `ask` below remembers the fetch before it, so its turn is tainted: the owner lets
    // the test's origin take what the tools send, as an owner who trusts a host would.
    let policy = s.home.path().join("policy.toml");
    let mut text_of_policy = std::fs::read_to_string(&policy).unwrap();
    text_of_policy.push_str(
        "\n[[egress]]\nname = \"the test origin takes what the tools send\"\nhost = \"localhost\"\naction = \"allow\"\n",
    );
    std::fs::write(&policy, text_of_policy).unwrap();

    // web_fetch: readable text, scripts dropped.
    model.push(vec![
        tools(
            "web_fetch",
            format!(r#"{{"url": "https://localhost:{port}/page"}}"#),
        ),
        Step::EchoToolResult,
    ]);
    let out = s.home.run(&["ask", "--group", "work", "fetch"]).await;
    let reply = text(&out.stdout);
    assert!(
        reply.contains("Hello & welcome") && reply.contains("The answer is 42."),
        "{reply}{}",
        text(&out.stderr)
    );
    assert!(!reply.contains("hidden"), "{reply}");

    // http_request with ${TOKEN}: the origin gets the value; the echo reaches the model redacted.
    model.push(vec![
        tools(
            "http_request",
            format!(r#"{{"method": "POST", "url": "https://localhost:{port}/echo?via=tool", "headers": {{"Authorization": "Bearer ${{TOKEN}}"}}, "body": "hello"}}"#),
        ),
        Step::EchoToolResult,
    ]);
    let out = s.home.run(&["ask", "--group", "work", "post"]).await;
    let reply = text(&out.stdout);
    assert!(reply.contains("HTTP 200"), "{reply}{}", text(&out.stderr));
    assert_no_value(&reply);
    let seen = s.bound.seen();
    let req = seen
        .iter()
        .find(|r| r.path.ends_with("via=tool"))
        .expect("tool request arrived");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(req.body, b"hello");

    // A redirect to a private address: refused by the proxy, hop by hop.
    model.push(vec![
        tools(
            "web_fetch",
            format!(r#"{{"url": "https://localhost:{port}/redirect?to=http://127.0.0.1:9/"}}"#),
        ),
        Step::EchoToolResult,
    ]);
    let out = s.home.run(&["ask", "--group", "work", "follow"]).await;
    let reply = text(&out.stdout);
    assert!(
        reply.contains("403") && reply.contains("refused"),
        "{reply}"
    );

    // A value that reaches tool output some other way is redacted before the model sees it.
    std::fs::write(
        s.home.workspace("work").join("leak.txt"),
        format!("found {TOKEN}\n"),
    )
    .unwrap();
    model.push(vec![
        tools("shell", r#"{"command": "cat leak.txt"}"#.into()),
        Step::EchoToolResult,
    ]);
    let out = s.home.run(&["ask", "--group", "work", "cat"]).await;
    let reply = text(&out.stdout);
    assert!(reply.contains("found [redacted secret TOKEN]"), "{reply}");
    assert_no_value(&reply);
    for req in model.requests() {
        assert_no_value(&req.to_string());
    }

    // One more turn with debug logging: no value in the logs, none anywhere in the audit log,
    // which still verifies and holds the egress records with the secret names injected.
    model.push(vec![
        tools(
            "http_request",
            format!(r#"{{"method": "GET", "url": "https://localhost:{port}/echo?via=logged", "headers": {{"Authorization": "Bearer ${{TOKEN}}"}}}}"#),
        ),
        Step::EchoToolResult,
    ]);
    let mut c = s.home.command();
    c.env("NANOCLAW_LOG", "debug")
        .args(["ask", "--group", "work", "logged"]);
    let out = c.output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_value(&text(&out.stderr));
    assert_no_value(&text(&out.stdout));
    let export = text(&s.home.run(&["audit", "export", "--jsonl"]).await.stdout);
    assert_no_value(&export);
    let mut db = std::fs::read(s.home.path().join("nanoclaw.db")).unwrap();
    db.extend(std::fs::read(s.home.path().join("nanoclaw.db-wal")).unwrap_or_default());
    for v in [TOKEN, APIKEY, OTHER] {
        assert!(
            !db.windows(v.len()).any(|w| w == v.as_bytes()),
            "a secret value is in the database or its log"
        );
    }
    assert!(export.contains("\"kind\":\"egress\""), "no egress records");
    assert!(
        export.contains("\"secrets\":[\"TOKEN\",\"APIKEY\"]")
            || export.contains("\"secrets\":[\"APIKEY\",\"TOKEN\"]"),
        "no injected names recorded"
    );
    let verify = s.home.run(&["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[tokio::test]
async fn the_model_key_never_follows_a_redirect_to_another_host() {
    let elsewhere = ScriptedModel::start(Wire::Anthropic, vec![Step::Text("got it".into())]).await;
    let to = elsewhere.url.replace("127.0.0.1", "localhost");
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::Redirect(format!("{to}/v1/messages"))],
    )
    .await;
    let h = TestHome::new(Wire::Anthropic, &model.url, "");
    let out = h.run(&["ask", "hello"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        elsewhere.requests().is_empty(),
        "the key and the prompt followed the redirect"
    );
}

#[tokio::test]
async fn the_model_key_is_a_secret_used_by_the_host_only() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![Step::Text("hi from the model".into())],
    )
    .await;
    let h = TestHome::new(Wire::Anthropic, &model.url, "");
    // Bound to another host than base_url's: nanoclaw refuses to send it there.
    let out = h
        .set_secret(
            "ANTHROPIC_API_KEY",
            "test-key",
            &["--host", "api.anthropic.com"],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut c = h.command();
    c.env_remove("ANTHROPIC_API_KEY").args(["ask", "hello"]);
    let out = c.output().await.unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "secret ANTHROPIC_API_KEY is bound to api.anthropic.com, but model.base_url would send it to 127.0.0.1"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(
        model.requests().is_empty(),
        "the key went to an unbound host"
    );
    let out = h
        .set_secret("ANTHROPIC_API_KEY", "test-key", &["--host", "127.0.0.1"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut c = h.command();
    c.env_remove("ANTHROPIC_API_KEY").args(["ask", "hello"]);
    let out = c.output().await.unwrap();
    assert!(
        text(&out.stdout).contains("hi from the model"),
        "{}",
        text(&out.stderr)
    );
    // No group was granted it: no sandbox sees even its placeholder.
    let env = h
        .run(&["sandbox", "exec", "--", "printenv", "ANTHROPIC_API_KEY"])
        .await;
    assert!(!env.status.success());
}

// A reply is an egress path too: a chat platform fetches the URLs in it for link previews,
// past every allowlist. A hostile model puts a placeholder, or a value it was shown some
// other way, into its answer.
#[tokio::test]
async fn a_reply_carrying_a_placeholder_or_a_value_is_withheld_and_audited() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let s = setup(&model.url, "").await;
    model.push(vec![
        Step::Tools(vec![(
            "shell".into(),
            r#"{"command": "echo $TOKEN"}"#.into(),
        )]),
        Step::EchoToolResult,
    ]);
    let out = s.home.run(&["ask", "--group", "work", "show it"]).await;
    let reply = text(&out.stdout);
    assert!(!reply.contains("NANOCLAW_SECRET_TOKEN"), "{reply}");
    assert!(reply.contains("[withheld secret TOKEN]"), "{reply}");
    assert!(reply.contains("nanoclaw withheld secrets"), "{reply}");

    model.push(vec![Step::Text(format!(
        "see https://anywhere.example/?d={TOKEN}"
    ))]);
    let out = s.home.run(&["ask", "--group", "work", "again"]).await;
    let reply = text(&out.stdout);
    assert_no_value(&reply);
    assert!(reply.contains("?d=[withheld secret TOKEN]"), "{reply}");

    let events = s
        .home
        .run(&["audit", "show", "--kind", "reply_withheld"])
        .await;
    let events = text(&events.stdout);
    assert_eq!(events.matches("reply_withheld").count(), 2, "{events}");
}

#[tokio::test]
async fn secret_rm_revokes_at_once_closing_a_kept_alive_connection_that_carried_it() {
    // A real client in a sandbox holds one intercepted connection open across the removal:
    // after `secret rm` returns, that connection is closed, and a new request carries only
    // the placeholder.
    let s = setup("http://127.0.0.1:9", "").await;
    let port = support::free_port();
    let config = s.home.path().join("nanoclaw.toml");
    let mut text_of_config = std::fs::read_to_string(&config).unwrap();
    text_of_config.push_str(&format!("[api]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&config, text_of_config).unwrap();
    let mut daemon = s.home.daemon(port).await;
    let script = format!(
        r#"import http.client, os, ssl, time
c = http.client.HTTPSConnection("127.0.0.1", 3128, context=ssl.create_default_context(), timeout=10)
c.set_tunnel("localhost", {port})
h = {{"Authorization": "Bearer " + os.environ["TOKEN"]}}
c.request("GET", "/echo?n=1", headers=h); r = c.getresponse(); r.read(); print("first", r.status, flush=True)
open("/workspace/first", "w").close()
for _ in range(300):
    if os.path.exists("/workspace/go"):
        break
    time.sleep(0.1)
try:
    c.request("GET", "/echo?n=2", headers=h); r = c.getresponse(); r.read(); print("second", r.status)
except Exception as e:
    print("CLOSED", type(e).__name__)
"#,
        port = s.bound.port
    );
    let mut exec = s.home.command();
    exec.args([
        "sandbox", "exec", "--group", "work", "--", "python3", "-c", &script,
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = exec.spawn().unwrap();
    let first = s.home.workspace("work").join("first");
    for _ in 0..300 {
        if first.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first.exists(),
        "the client's first request did not come back"
    );
    let started = std::time::Instant::now();
    let out = s.home.run(&["secret", "rm", "TOKEN"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("in force in the running daemon now"),
        "{}",
        text(&out.stdout)
    );
    println!("secret rm returned in {:?}", started.elapsed());
    std::fs::write(s.home.workspace("work").join("go"), "").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let seen_by_client = text(&out.stdout);
    assert!(
        seen_by_client.contains("first 200") && seen_by_client.contains("CLOSED"),
        "the kept-alive connection outlived the secret: {seen_by_client}{}",
        text(&out.stderr)
    );
    // A new connection now carries only the placeholder.
    let after = sh(
        &s.home,
        &format!(
            "curl -sS --max-time 10 -H \"Authorization: Bearer $TOKEN\" https://localhost:{}/echo?n=3",
            s.bound.port
        ),
    )
    .await;
    let seen = s.bound.seen();
    let with_value = seen
        .iter()
        .filter(|r| r.header("authorization") == Some(format!("Bearer {TOKEN}").as_str()))
        .count();
    assert_eq!(
        with_value, 1,
        "the value went out after its removal: {after}"
    );
    assert!(seen.iter().any(|r| r.path.ends_with("n=3")), "{after}");
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// A value typed at a terminal is not echoed back to it (nor printed by nanoclaw), and is
/// stored as typed.
#[tokio::test]
async fn a_secret_typed_at_a_terminal_is_not_shown() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let h = TestHome::new(Wire::Anthropic, &model.url, "");
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pty_secret.py"))
        .arg(env!("CARGO_BIN_EXE_nanoclaw"))
        .arg(h.path())
        .env_remove("NANOCLAW_HOME")
        .env_remove("NANOCLAW_SECRETS_KEY")
        .env("NANOCLAW_SECRETS_KEY_FILE", h.key_file())
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert!(
        out.status.success(),
        "the value showed, or set failed:\n{screen}"
    );
    assert!(screen.contains("not shown"), "{screen}");
    let listed = text(&h.run(&["secret", "list"]).await.stdout);
    assert!(listed.contains("PTYTEST"), "{listed}");
}
