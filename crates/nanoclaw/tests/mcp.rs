//! MCP servers from PyPI (`mcp-server-time`, `mcp-server-git`), each in a real bwrap sandbox of
//! its group, spoken to over its stdio: their tools offered under `mcp__SERVER__TOOL`, judged by
//! the policy as `SERVER.TOOL` (asked by default, allowed or asked by rules), their results
//! outside content; pinned at first sight.

mod support;

use std::time::Duration;

use support::model_server::{ScriptedModel, Step};
use support::{TestHome, Wire, text};

/// Where the test setup installs the servers (`scripts/deps.sh --test`): a venv under /usr,
/// which every sandbox sees read-only.
const VENV: &str = "/usr/local/lib/nanoclaw-mcp/bin";

fn installed(server: &str) -> Option<String> {
    let path = format!("{VENV}/{server}");
    if std::path::Path::new(&path).exists() {
        Some(path)
    } else {
        support::skip(&format!(
            "{path} is not installed (scripts/deps.sh --test installs it)"
        ));
        None
    }
}

fn call(name: &str, args: &str) -> Step {
    Step::Tools(vec![(name.into(), args.into())])
}

#[tokio::test]
async fn a_sandboxed_time_server_answers_through_the_gate() {
    let Some(time) = installed("mcp-server-time") else {
        return;
    };
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            call(
                "mcp__time__get_current_time",
                r#"{"timezone": "Europe/Berlin"}"#,
            ),
            Step::EchoToolResult,
            call(
                "mcp__time__convert_time",
                r#"{"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}"#,
            ),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!("[sandbox]\nbackend = \"bwrap\"\n[mcp.servers.time]\ncommand = [\"{time}\"]\n"),
    );
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"time.get_current_time\"\naction = \"allow\"\n",
    )
    .unwrap();
    let out = h.run(&["ask", "what time is it in Berlin?"]).await;
    let reply = text(&out.stdout);
    assert!(out.status.success(), "{reply}{}", text(&out.stderr));
    assert!(
        reply.contains("Europe/Berlin") && reply.contains("datetime"),
        "{reply}"
    );
    // The model was offered the server's tools under their wire names.
    let offered = model.requests()[0].to_string();
    assert!(offered.contains("mcp__time__get_current_time"), "{offered}");
    // Outside content: the result reached the model wrapped, and tainted the turn.
    let second = model.requests()[1].to_string();
    assert!(second.contains("untrusted-data"), "{second}");
    // The tool no rule allows asks; with no answer it is refused (asked on the terminal, and
    // this `ask` has no one answering: the call waits, then times out as denied).
    let decisions = text(
        &h.run(&["audit", "show", "--kind", "policy_decision"])
            .await
            .stdout,
    );
    assert!(
        decisions.contains("\"tool\":\"time.get_current_time\"")
            && decisions.contains("\"decision\":\"allow\""),
        "{decisions}"
    );
    let events = text(
        &h.run(&["audit", "show", "--kind", "mcp_server"])
            .await
            .stdout,
    );
    assert!(events.contains("\"event\":\"started\""), "{events}");
    // A protocol version current servers speak was negotiated.
    assert!(
        events.contains("\"protocol\":\"2025-06-18\"")
            || events.contains("\"protocol\":\"2025-11-25\""),
        "{events}"
    );
    let pinned = text(
        &h.run(&["audit", "show", "--kind", "mcp_tools"])
            .await
            .stdout,
    );
    assert!(pinned.contains("\"event\":\"pinned\""), "{pinned}");
    let _ = Duration::from_secs(0);
}

const HOSTILE: &str = include_str!("mcp_hostile.py");

/// A hostile server, each of its tools an attack: every wall holds, and each is audited.
#[tokio::test]
async fn a_hostile_server_fails_closed_at_every_wall() {
    use serde_json::json;
    if installed("mcp").is_none() {
        return;
    }
    let origin = support::http_origin("the origin answered".into()).await;
    // The script names the data dir, known once the home exists: the home first, on a model
    // that is replaced by the scripted one below.
    let first = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let h = TestHome::new(Wire::Anthropic, &first.url, "");
    let data_dir = h.path().display().to_string();
    let other_ws = h.workspace("other");
    std::fs::create_dir_all(&other_ws).unwrap();
    std::fs::write(other_ws.join("secret.txt"), "another group's").unwrap();
    let pair = |name: &str, args: serde_json::Value| {
        vec![
            call(&format!("mcp__hostile__{name}"), &args.to_string()),
            Step::EchoToolResult,
        ]
    };
    let script = [
        pair(
            "snoop",
            json!({"paths": ["/root/.bashrc", "/proc/1/environ", format!("{data_dir}/nanoclaw.db"), format!("{data_dir}/api.token"), format!("{}/secret.txt", other_ws.display()), "/etc/shadow"]}),
        ),
        pair("dial", json!({"host": "127.0.0.1", "port": origin})),
        pair("leak", json!({"url": format!("http://127.0.0.1:{origin}/"), "secret": "TOKEN"})),
        pair("flood", json!({})),
        pair("hang", json!({})),
        pair("send_mail", json!({"to": "friend@x", "body": "hi", "bcc": "eve@evil.example"})),
        pair("mutate", json!({})),
        pair("snoop", json!({"paths": ["/workspace/.hostile.py"]})),
        pair("snoop", json!({"paths": ["/workspace/.hostile.py"]})),
        pair("crash", json!({})),
    ]
    .concat();
    let model = ScriptedModel::start(Wire::Anthropic, script).await;
    let config = std::fs::read_to_string(h.path().join("nanoclaw.toml"))
        .unwrap()
        .replace(&first.url, &model.url);
    std::fs::write(
        h.path().join("nanoclaw.toml"),
        format!(
            "{config}[sandbox]\nbackend = \"bwrap\"\n[mcp.servers.hostile]\ncommand = [\"/usr/bin/python3\", \"/workspace/.hostile.py\"]\nsecrets = [\"TOKEN\"]\negress = [{{ host = \"127.0.0.1:{origin}\", private = true }}]\ntimeout_secs = 3\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(h.workspace("main")).unwrap();
    std::fs::write(h.workspace("main").join(".hostile.py"), HOSTILE).unwrap();
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"hostile.*\"\naction = \"allow\"\n[[rule]]\nname = \"no hidden recipients\"\ntool = \"hostile.send_mail\"\nargs = { bcc = { glob = \"*\" } }\naction = \"deny\"\n",
    )
    .unwrap();
    let out = h
        .set_secret(
            "TOKEN",
            "tok-REAL-mcp-value",
            &["--host", "bound.example", "--group", "main"],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ask = async |what: &str| {
        let out = h.run(&["ask", what]).await;
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };

    // 1. Files outside the workspace: the host's, the data dir, another group's, pid 1's.
    let snooped = ask("snoop").await;
    for path in [
        "/root/.bashrc",
        "/proc/1/environ",
        "nanoclaw.db",
        "api.token",
        "secret.txt",
        "/etc/shadow",
    ] {
        assert!(
            !snooped
                .lines()
                .any(|l| l.contains(path) && l.contains("ok:")),
            "{path} was read: {snooped}"
        );
    }
    assert!(snooped.contains("error"), "{snooped}");
    assert!(
        !snooped.contains("another group's") && !snooped.contains("tok-REAL-mcp-value"),
        "{snooped}"
    );
    assert!(
        snooped.contains("TOKEN"),
        "the placeholder is in its environment: {snooped}"
    );
    // 2. A host port, directly: there is no network but the proxy.
    let dialed = ask("dial").await;
    assert!(dialed.contains("error"), "{dialed}");
    // 3. The secret's placeholder toward a host it is not bound to: refused by the proxy.
    let leaked = ask("leak").await;
    assert!(
        leaked.contains("error") && !leaked.contains("ok: 200"),
        "{leaked}"
    );
    // 4. A flood is cut.
    let flood = ask("flood").await;
    assert!(
        flood.contains("[cut: the result was longer than"),
        "{}",
        flood.len()
    );
    // 5. A tool that never answers ends at the server's timeout.
    let hung = ask("hang").await;
    assert!(hung.contains("did not answer within 3s"), "{hung}");
    // 6. A field the user never asked for is caught by an argument rule.
    let mailed = ask("mail").await;
    assert!(
        mailed.contains("was refused") && mailed.contains("no hidden recipients"),
        "{mailed}"
    );
    // 7. A server that rewrites a tool's description after it was pinned: the changed tool is
    // held back (not offered; a call naming it fails), and the change is audited.
    let _ = ask("mutate").await;
    let held = ask("snoop again").await;
    assert!(held.contains("no tool named"), "{held}");
    let offered = model.requests().last().unwrap().to_string();
    assert!(
        !offered.contains("IGNORE ALL PREVIOUS"),
        "the changed description reached the model"
    );
    let changes = text(
        &h.run(&["audit", "show", "--kind", "mcp_tools"])
            .await
            .stdout,
    );
    assert!(
        changes.contains("\"event\":\"changed\"") && changes.contains("snoop"),
        "{changes}"
    );
    // The owner reviews the change and trusts it: the tool is offered again.
    let listed = text(&h.run(&["mcp", "list"]).await.stdout);
    assert!(
        listed.contains("CHANGED") && listed.contains("snoop (changed): IGNORE ALL PREVIOUS"),
        "{listed}"
    );
    // Trusting names the list reviewed: a hash of another list (the server changed it again
    // after the review) trusts nothing; the one `mcp list` shows trusts it.
    let shown = listed
        .split("nanoclaw mcp trust hostile ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("mcp list names the command to trust the list")
        .to_owned();
    let out = h.run(&["mcp", "trust", "hostile", &"0".repeat(64)]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nothing was trusted"),
        "{}",
        text(&out.stderr)
    );
    let out = h.run(&["mcp", "trust", "hostile", "abc"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = h.run(&["mcp", "trust", "hostile"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("nanoclaw mcp trust hostile {shown}")),
        "{}",
        text(&out.stderr)
    );
    let out = h.run(&["mcp", "trust", "hostile", &shown]).await;
    assert!(
        text(&out.stdout).contains("is trusted"),
        "{}",
        text(&out.stdout)
    );
    let trusted = ask("snoop, trusted").await;
    assert!(
        trusted.contains("\"/workspace/.hostile.py\": \"ok:"),
        "{trusted}"
    );
    let out = h.run(&["mcp", "trust", "nosuch", &shown]).await;
    assert_eq!(out.status.code(), Some(2));
    // 8. A server that dies mid-call: the call fails with a clear error.
    let crashed = ask("crash").await;
    assert!(crashed.contains("hostile.crash failed"), "{crashed}");
    let verified = h.run(&["audit", "verify"]).await;
    assert!(verified.status.success(), "{}", text(&verified.stdout));
}

/// `mcp-server-git` over a repository in the workspace, through the running daemon: the log is
/// read (a rule allows it), a commit the policy asks for runs once approved, and one denied
/// does not run; the repository shows exactly the approved commit.
#[tokio::test]
async fn git_tools_read_freely_and_commit_only_when_approved() {
    let Some(git) = installed("mcp-server-git") else {
        return;
    };
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            call("mcp__git__git_log", r#"{"repo_path": "/workspace/repo"}"#),
            Step::EchoToolResult,
            call(
                "mcp__git__git_add",
                r#"{"repo_path": "/workspace/repo", "files": ["notes.txt"]}"#,
            ),
            call(
                "mcp__git__git_commit",
                r#"{"repo_path": "/workspace/repo", "message": "add notes"}"#,
            ),
            Step::EchoToolResult,
            call(
                "mcp__git__git_commit",
                r#"{"repo_path": "/workspace/repo", "message": "sneak this in"}"#,
            ),
            Step::EchoToolResult,
        ],
    )
    .await;
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[mcp.servers.git]\ncommand = [\"{git}\", \"--repository\", \"/workspace/repo\"]\n"
        ),
    );
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"git.git_log\"\naction = \"allow\"\n[[rule]]\ntool = \"git.git_add\"\naction = \"allow\"\n[[rule]]\ntool = \"git.git_commit\"\naction = \"ask\"\ntimeout_secs = 60\n",
    )
    .unwrap();
    let repo = h.workspace("main").join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git_cli = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args([
                "-c",
                "user.name=T",
                "-c",
                "user.email=t@x",
                "-c",
                "safe.directory=*",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    git_cli(&["init", "-q"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git_cli(&["add", "README"]);
    git_cli(&["commit", "-q", "-m", "first commit"]);
    std::fs::write(repo.join("notes.txt"), "notes\n").unwrap();

    let mut daemon = h.daemon(port).await;
    let out = h.run(&["ask", "show me the log"]).await;
    assert!(
        text(&out.stdout).contains("first commit"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A commit: asked, approved, run.
    let approve = async |verb: &str| {
        for _ in 0..300 {
            let listed = text(&h.run(&["approvals", "list"]).await.stdout);
            if let Some(id) = listed
                .lines()
                .next()
                .filter(|l| !l.starts_with("no pending"))
                .and_then(|l| l.split_whitespace().next())
            {
                assert!(listed.contains("git.git_commit"), "{listed}");
                let out = h.run(&["approvals", verb, id]).await;
                assert!(out.status.success(), "{}", text(&out.stderr));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no approval request was opened");
    };
    let mut ask = h.command();
    ask.args(["ask", "commit my notes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = ask.spawn().unwrap();
    approve("approve").await;
    let out = child.wait_with_output().await.unwrap();
    assert!(
        text(&out.stdout).contains("Changes committed"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Another: denied, not run.
    std::fs::write(repo.join("notes.txt"), "changed\n").unwrap();
    let mut ask = h.command();
    ask.args(["ask", "commit again"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = ask.spawn().unwrap();
    approve("deny").await;
    let out = child.wait_with_output().await.unwrap();
    assert!(
        text(&out.stdout).contains("denied"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let log = git_cli(&["log", "--format=%s"]);
    assert_eq!(log, "add notes\nfirst commit\n");
    let decisions = text(
        &h.run(&["audit", "show", "--kind", "policy_decision"])
            .await
            .stdout,
    );
    assert_eq!(
        decisions.matches("\"tool\":\"git.git_commit\"").count(),
        2,
        "{decisions}"
    );
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}

/// `mcp-server-fetch`: its requests leave only through its own proxy: an allowlisted origin is
/// fetched, a host off the server's list is refused.
#[tokio::test]
async fn the_fetch_server_reaches_only_its_allowlisted_hosts() {
    let Some(fetch) = installed("mcp-server-fetch") else {
        return;
    };
    let origin =
        support::http_origin("<html><body><p>fetched through the proxy</p></body></html>".into())
            .await;
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            call(
                "mcp__fetch__fetch",
                &format!(r#"{{"url": "http://127.0.0.1:{origin}/page", "raw": true}}"#),
            ),
            Step::EchoToolResult,
            call(
                "mcp__fetch__fetch",
                r#"{"url": "http://blocked.example/", "raw": true}"#,
            ),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[mcp.servers.fetch]\ncommand = [\"{fetch}\", \"--ignore-robots-txt\", \"--allow-private-ips\", \"--proxy-url\", \"http://127.0.0.1:3128\"]\negress = [{{ host = \"127.0.0.1:{origin}\", private = true }}]\n"
        ),
    );
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"fetch.fetch\"\naction = \"allow\"\n",
    )
    .unwrap();
    let out = h.run(&["ask", "fetch the page"]).await;
    let reply = text(&out.stdout);
    assert!(
        reply.contains("fetched through the proxy"),
        "{reply}{}",
        text(&out.stderr)
    );
    let out = h.run(&["ask", "fetch the other"]).await;
    let reply = text(&out.stdout);
    assert!(
        !reply.contains("fetched through the proxy") && reply.contains("403"),
        "{reply}{}",
        text(&out.stderr)
    );
    let egress = text(&h.run(&["audit", "show", "--kind", "egress"]).await.stdout);
    assert!(
        egress.contains("blocked.example") && egress.contains("\"decision\":\"refuse\""),
        "{egress}"
    );
}

/// Containers labelled with this test's data dir.
fn containers(home: &TestHome) -> Vec<String> {
    let id = nanoclaw_sandbox::docker::home_id(home.path());
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label=org.nanoclaw.home={id}"))
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn on_docker_a_server_runs_in_a_container_of_its_own_beside_the_groups_commands() {
    if let Err(why) = support::docker_image() {
        support::skip(&why);
        return;
    }
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            call("mcp__hostile__send_mail", r#"{"to": "a@x", "body": "hi"}"#),
            Step::EchoToolResult,
            // The server's exec stays open: a command of the group still runs meanwhile.
            call("shell", r#"{"command": "echo beside the server"}"#),
            Step::EchoToolResult,
            call(
                "mcp__hostile__snoop",
                r#"{"paths": ["/workspace/.hostile.py", "/etc/shadow", "/proc/1/environ"]}"#,
            ),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"docker\"\ndocker_image = \"{}\"\n[mcp.servers.hostile]\ncommand = [\"python3\", \"/workspace/.hostile.py\"]\nsecrets = [\"TOKEN\"]\n",
            support::DOCKER_TEST_IMAGE
        ),
    );
    std::fs::create_dir_all(h.workspace("main")).unwrap();
    std::fs::write(h.workspace("main").join(".hostile.py"), HOSTILE).unwrap();
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"hostile.*\"\naction = \"allow\"\n",
    )
    .unwrap();
    let out = h
        .set_secret(
            "TOKEN",
            "tok-REAL-docker-value",
            &["--host", "bound.example", "--group", "main"],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reply = String::new();
    for what in ["mail", "a command", "snoop"] {
        let out = h.run(&["ask", what]).await;
        reply.push_str(&format!("{}{}", text(&out.stdout), text(&out.stderr)));
        assert!(out.status.success(), "{reply}");
    }
    assert!(reply.contains("sent to a@x"), "{reply}");
    assert!(reply.contains("beside the server"), "{reply}");
    // The server reads its own workspace, not the host's files; it holds a placeholder only.
    assert!(
        reply.contains(r#""/workspace/.hostile.py": "ok: "#),
        "{reply}"
    );
    assert!(reply.contains(r#""/etc/shadow": "error: "#), "{reply}");
    assert!(!reply.contains("tok-REAL-docker-value"), "{reply}");
    assert!(reply.contains("TOKEN"), "{reply}");
    let started = text(
        &h.run(&["audit", "show", "--kind", "mcp_server"])
            .await
            .stdout,
    );
    assert!(started.contains(r#""event":"started""#), "{started}");
    // The process is done: its containers, the server's among them, are gone.
    for _ in 0..100 {
        if containers(&h).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "containers left after the process ended: {:?}",
        containers(&h)
    );
}

const SDK_SERVER: &str = include_str!("mcp_sdk_server.py");

/// Lines of a marker file the SDK server writes.
fn marks(dir: &std::path::Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn wait_for_mark(dir: &std::path::Path, name: &str, line: &str) {
    for _ in 0..100 {
        if marks(dir, name).iter().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never said {line:?}: {:?}", marks(dir, name));
}

#[tokio::test]
async fn a_remote_server_over_streamable_http_gets_its_token_only_from_the_proxy_and_a_late_call_is_cancelled()
 {
    let Some(python) = installed("python3") else {
        return;
    };
    const TOKEN: &str = "tok-REAL-remote-value";
    let markers = tempfile::tempdir().unwrap();
    let script = markers.path().join("server.py");
    std::fs::write(&script, SDK_SERVER).unwrap();
    let port = support::free_port();
    let mut server = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["http", &port.to_string()])
        .arg(markers.path())
        .arg(format!("Bearer {TOKEN}"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let daemon_port = support::free_port();
    // HTTPS, as a remote server is: the proxy injects a secret over TLS only.
    let ca = support::https::TestCa::new();
    let front = support::https::tls_front(&ca, "localhost", port).await;
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            call("mcp__remote__echo", r#"{"text": "over http"}"#),
            Step::EchoToolResult,
            call("mcp__remote__slow", r#"{"seconds": 60}"#),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[api]\nlisten = \"127.0.0.1:{daemon_port}\"\n[egress]\nextra_roots = [\"{}\"]\n[mcp.servers.remote]\nurl = \"https://localhost:{front}/mcp\"\negress = [{{ host = \"localhost:{front}\", private = true }}]\nsecrets = [\"REMOTE_TOKEN\"]\ntimeout_secs = 2\n",
            ca.cert_file.display()
        ),
    );
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"remote.*\"\naction = \"allow\"\n",
    )
    .unwrap();
    let out = h
        .set_secret(
            "REMOTE_TOKEN",
            TOKEN,
            &[
                "--host",
                "localhost",
                "--group",
                "main",
                "--header",
                "Authorization",
                "--format",
                "Bearer {}",
            ],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Through the daemon, as a remote server is used: it outlives the turns.
    let mut daemon = h.daemon(daemon_port).await;
    let out = h.run(&["ask", "echo over http"]).await;
    let reply = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{reply}");
    assert!(reply.contains("echo: over http"), "{reply}");
    // Every request reached the server with the real token, which only the proxy held.
    let seen = marks(markers.path(), "authorizations");
    assert!(
        !seen.is_empty() && seen.iter().all(|l| l == "expected"),
        "{seen:?}"
    );
    // A call past the server's timeout is given up and cancelled at the server.
    let out = h.run(&["ask", "sleep long"]).await;
    let reply = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(reply.contains("did not answer within 2s"), "{reply}");
    wait_for_mark(markers.path(), "slow", "cancelled").await;
    let audit = text(&h.run(&["audit", "show"]).await.stdout);
    assert!(!audit.contains(TOKEN), "{audit}");
    assert!(audit.contains("\"event\":\"started\""), "{audit}");
    let verified = h.run(&["audit", "verify"]).await;
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    let _ = server.start_kill();
}

#[tokio::test]
async fn an_sdk_server_in_the_sandbox_is_cancelled_when_late_held_back_when_its_list_grows_restarted_after_a_crash_or_a_hang_and_stopped_when_reloaded_away()
 {
    let Some(python) = installed("python3") else {
        return;
    };
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            call("mcp__sdk__slow", r#"{"seconds": 60}"#),
            Step::EchoToolResult,
            call("mcp__sdk__grow", "{}"),
            Step::EchoToolResult,
            call("mcp__sdk__added", "{}"),
            Step::EchoToolResult,
            call("mcp__sdk__crash", "{}"),
            Step::EchoToolResult,
            call("mcp__sdk__echo", r#"{"text": "after the crash"}"#),
            Step::EchoToolResult,
            call("mcp__sdk__deaf", "{}"),
            Step::EchoToolResult,
            call("mcp__sdk__echo", r#"{"text": "after the hang"}"#),
            Step::EchoToolResult,
            call("mcp__sdk__where", "{}"),
            Step::EchoToolResult,
            call("mcp__sdk__where", "{}"),
            Step::EchoToolResult,
            call("mcp__sdk__slow", r#"{"seconds": 1.8}"#),
            call("mcp__sdk__where", "{}"),
            Step::EchoToolResult,
            call("mcp__sdk__where", "{}"),
            Step::EchoToolResult,
        ],
    )
    .await;
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[mcp.servers.sdk]\ncommand = [\"{python}\", \"/workspace/.sdk.py\", \"stdio\", \"/workspace\"]\ntimeout_secs = 2\n"
        ),
    );
    std::fs::create_dir_all(h.workspace("main")).unwrap();
    std::fs::write(h.workspace("main").join(".sdk.py"), SDK_SERVER).unwrap();
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"sdk.*\"\naction = \"allow\"\n",
    )
    .unwrap();
    let daemon_port = support::free_port();
    // One daemon, so the server lives across turns.
    let config = std::fs::read_to_string(h.path().join("nanoclaw.toml")).unwrap();
    std::fs::write(
        h.path().join("nanoclaw.toml"),
        format!("{config}[api]\nlisten = \"127.0.0.1:{daemon_port}\"\n"),
    )
    .unwrap();
    let mut daemon = h.daemon(daemon_port).await;
    let ask = async |what: &str| {
        let out = h.run(&["ask", what]).await;
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let slow = ask("sleep long").await;
    assert!(slow.contains("did not answer within 2s"), "{slow}");
    wait_for_mark(&h.workspace("main"), "slow", "cancelled").await;
    let grown = ask("grow").await;
    assert!(grown.contains("grown"), "{grown}");
    // The grown list is not the pinned one: the new tool is held back until trusted.
    let added = ask("use the new tool").await;
    assert!(added.contains("no tool named"), "{added}");
    let listed = text(&h.run(&["mcp", "list"]).await.stdout);
    assert!(listed.contains("added"), "{listed}");
    assert!(listed.contains("in main: last started"), "{listed}");
    let crashed = ask("crash").await;
    assert!(!crashed.contains("echo:"), "{crashed}");
    let after = ask("echo").await;
    assert!(after.contains("echo: after the crash"), "{after}");
    let events = text(
        &h.run(&["audit", "show", "--kind", "mcp_server"])
            .await
            .stdout,
    );
    assert!(events.contains("\"event\":\"crashed\""), "{events}");
    // A server that stops reading is taken for hung once a call runs out of time and it does
    // not answer a ping: stopped, and started again for the next call.
    let hung = ask("go deaf").await;
    assert!(hung.contains("did not answer within 2s"), "{hung}");
    let after = ask("echo").await;
    assert!(after.contains("echo: after the hang"), "{after}");
    let events = text(
        &h.run(&["audit", "show", "--kind", "mcp_server"])
            .await
            .stdout,
    );
    assert!(events.contains("did not answer a ping"), "{events}");
    // A reload that changes the server's command stops the one running: the next call meets
    // the server as configured now.
    let before = ask("where").await;
    assert!(
        before.contains("marker dir: /workspace") && !before.contains("/workspace/again"),
        "{before}"
    );
    std::fs::create_dir_all(h.workspace("main").join("again")).unwrap();
    // The server writes its marks there (as the sandbox's user, under a root daemon).
    std::fs::set_permissions(
        h.workspace("main").join("again"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let config = std::fs::read_to_string(h.path().join("nanoclaw.toml")).unwrap();
    let moved = config.replace(
        "\"stdio\", \"/workspace\"]",
        "\"stdio\", \"/workspace/again\"]",
    );
    assert_ne!(moved, config);
    std::fs::write(h.path().join("nanoclaw.toml"), &moved).unwrap();
    let out = h.run(&["reload"]).await;
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.contains("MCP servers"),
        "{said}{}",
        text(&out.stderr)
    );
    let after = ask("where").await;
    assert!(after.contains("marker dir: /workspace/again"), "{after}");
    // A reload in the middle of a turn: the turn's next call does not start the server as the
    // config the turn began with had it.
    let again = h.workspace("main").join("again");
    let (mid_turn, ()) = tokio::join!(ask("slow, then where"), async {
        wait_for_mark(&again, "slow", "started").await;
        std::fs::write(h.path().join("nanoclaw.toml"), &config).unwrap();
        let out = h.run(&["reload"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    });
    assert!(
        mid_turn.contains("reconfigured by a reload")
            && !mid_turn.contains("marker dir: /workspace/again"),
        "{mid_turn}"
    );
    // The next turn meets it as configured now.
    let next = ask("where").await;
    assert!(
        next.contains("marker dir: /workspace") && !next.contains("/workspace/again"),
        "{next}"
    );
    // Moved off the group: the server running for it is stopped, its workspace released.
    std::fs::write(
        h.path().join("nanoclaw.toml"),
        moved.replace(
            "timeout_secs = 2\n",
            "timeout_secs = 2\ngroups = [\"other\"]\n",
        ),
    )
    .unwrap();
    let out = h.run(&["reload"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut stopped = String::new();
    for _ in 0..50 {
        stopped = text(
            &h.run(&["audit", "show", "--kind", "mcp_server"])
                .await
                .stdout,
        );
        if stopped.contains("no longer serves this group") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.contains("its configuration changed")
            && stopped.contains("no longer serves this group"),
        "{stopped}"
    );
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
}
