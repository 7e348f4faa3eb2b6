//! Test support: a scripted model server and a disposable nanoclaw data dir.
#![allow(dead_code)]

pub mod https;
pub mod model_server;
pub mod telegram;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

#[allow(unused_imports)]
pub use model_server::{ScriptedModel, Step, Wire};

/// A loopback port free a moment ago (the listener is closed again), for a server to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET /v1/groups/{group}/replies?after=0` from a daemon's API: the response body.
pub fn api_replies(port: u16, token: &str, group: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("authorization: Bearer {}", token.trim()),
        ])
        .arg(format!(
            "http://127.0.0.1:{port}/v1/groups/{group}/replies?after=0"
        ))
        .output()
        .unwrap();
    text(&out.stdout)
}

/// `POST /v1/groups/{group}/messages` with `body` (JSON) to a daemon's API: the response body.
pub fn api_post(port: u16, token: &str, group: &str, body: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("authorization: Bearer {}", token.trim()),
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!(
            "http://127.0.0.1:{port}/v1/groups/{group}/messages"
        ))
        .output()
        .unwrap();
    text(&out.stdout)
}

/// A plain-HTTP origin on the host's loopback that answers every request with `body`.
pub async fn http_origin(body: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let body = std::sync::Arc::clone(&body);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

/// Say why a test (or one backend of it) is skipped. Where `NANOCLAW_TEST_NO_SKIP` is set (CI,
/// on a machine that has everything), a skip is a failure instead, so a missing service can
/// never make the suite pass by saying nothing.
pub fn skip(why: &str) {
    if std::env::var_os("NANOCLAW_TEST_NO_SKIP").is_some() {
        panic!("would skip, but NANOCLAW_TEST_NO_SKIP is set: {why}");
    }
    eprintln!("SKIP {why}");
}

/// The agent image the Docker-backend tests use, built from this host's binaries.
pub const DOCKER_TEST_IMAGE: &str = "nanoclaw-agent:test";

/// Make sure the Docker test image exists (built once per test binary), or say why the Docker
/// backend cannot be tested here.
pub fn docker_image() -> Result<(), String> {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let info = std::process::Command::new("docker").arg("info").output();
            match info {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Err(format!(
                        "the Docker engine does not answer: {}",
                        text(&o.stderr).trim()
                    ));
                }
                Err(e) => return Err(format!("no docker client: {e}")),
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../scripts/build-test-base-image.sh");
            let out = std::process::Command::new("bash")
                .arg(script)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "building the test image failed: {}",
                    text(&out.stderr)
                ))
            }
        })
        .clone()
}

/// The nanoclaw binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nanoclaw")
}

/// A data dir with a config pointing at a scripted model server.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    /// Holds the secrets key file, outside the data dir as nanoclaw requires.
    pub key_dir: tempfile::TempDir,
}

impl TestHome {
    /// `nanoclaw init`, then `[model]` pointed at `model_url` with the given wire format, plus
    /// any extra config text.
    pub fn new(wire: Wire, model_url: &str, extra: &str) -> TestHome {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(bin())
            .arg("--home")
            .arg(dir.path())
            .env(
                "NANOCLAW_SECRETS_KEY_FILE",
                key_dir.path().join("secrets.key"),
            )
            .env_remove("NANOCLAW_SECRETS_KEY")
            .arg("init")
            .output()
            .expect("run init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let provider = match wire {
            Wire::Anthropic => "anthropic",
            Wire::Openai => "openai",
        };
        let base = match wire {
            Wire::Anthropic => model_url.to_owned(),
            Wire::Openai => format!("{model_url}/v1"),
        };
        let config = format!(
            "[model]\nprovider = \"{provider}\"\nname = \"scripted\"\nbase_url = \"{base}\"\nmax_retries = 2\nrequest_timeout_secs = 20\n{extra}"
        );
        std::fs::write(dir.path().join("nanoclaw.toml"), config).expect("write config");
        TestHome { dir, key_dir }
    }

    pub fn key_file(&self) -> PathBuf {
        self.key_dir.path().join("secrets.key")
    }

    /// `nanoclaw secret set NAME ARGS...` with `value` on stdin.
    pub async fn set_secret(&self, name: &str, value: &str, args: &[&str]) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut c = self.command();
        c.args(["secret", "set", name])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("run nanoclaw secret set");
        let mut stdin = child.stdin.take().expect("stdin");
        // A command that fails on its arguments exits before reading: a broken pipe is fine.
        let _ = stdin.write_all(value.as_bytes()).await;
        drop(stdin);
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("secret set timed out")
            .expect("secret set")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn workspace(&self, group: &str) -> PathBuf {
        self.path().join("workspaces").join(group)
    }

    pub fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(bin());
        c.arg("--home").arg(self.path());
        c.env_remove("NANOCLAW_HOME")
            .env_remove("NANOCLAW_SECRETS_KEY")
            .env("NANOCLAW_SECRETS_KEY_FILE", self.key_file())
            .env("ANTHROPIC_API_KEY", "test-key")
            .env("OPENAI_API_KEY", "test-key");
        c.kill_on_drop(true);
        c
    }

    /// Start `nanoclaw run` (output discarded) and wait until its API listens on `port`.
    pub async fn daemon(&self, port: u16) -> tokio::process::Child {
        let mut c = self.command();
        c.arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = c.spawn().expect("start nanoclaw run");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        child
    }

    /// Run `nanoclaw ARGS...` to completion.
    pub async fn run(&self, args: &[&str]) -> Output {
        let fut = self.command().args(args).output();
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .expect("nanoclaw timed out")
            .expect("run nanoclaw")
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
