//! Inbound messages committed and routed per second: signed webhook messages from 100 chats
//! (100 groups) posted to the daemon over 8 kept-alive connections, none triggering a turn (no
//! model involved): each is verified, routed and committed before its 200. Prints the rate;
//! asserts nothing.
//!
//! Run with `cargo bench -p nanoclaw --bench channels`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use support::{TestHome, Wire, text};

const KEY: &str = "bench-webhook-key-0123456789";
const MESSAGES: usize = 20_000;
const CONNECTIONS: usize = 8;
const CHATS: usize = 100;

fn sign(body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY.as_bytes());
    let tag = ring::hmac::sign(&key, body.as_bytes());
    format!(
        "sha256={}",
        tag.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let h = TestHome::new(
            Wire::Anthropic,
            "http://127.0.0.1:9",
            &format!(
                "[api]\nlisten = \"127.0.0.1:{port}\"\n[channels.webhook]\nkey_secret = \"WEBHOOK_KEY\"\nmain_chat = \"owner-dm\"\nowners = [\"alice\"]\nunknown_senders = \"allow\"\n"
            ),
        );
        let out = h.set_secret("WEBHOOK_KEY", KEY, &["--host", "hooks.invalid"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut c = h.command();
        c.arg("run").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut daemon = c.spawn().expect("daemon");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let started = Instant::now();
        let mut workers = Vec::new();
        for w in 0..CONNECTIONS {
            workers.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("http");
                tokio::spawn(conn);
                for i in (w..MESSAGES).step_by(CONNECTIONS) {
                    let body = format!(
                        r#"{{"id": "m{i}", "chat": "room-{}", "sender": "user{}", "text": "message {i} about nothing in particular"}}"#,
                        i % CHATS,
                        i % 7
                    );
                    let req = hyper::Request::post("/v1/webhook")
                        .header("host", "127.0.0.1")
                        .header("content-type", "application/json")
                        .header("x-nanoclaw-signature", sign(&body))
                        .body(Full::new(Bytes::from(body)))
                        .expect("request");
                    let resp = sender.send_request(req).await.expect("response");
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    assert!(status.is_success(), "status {status}");
                }
            }));
        }
        for w in workers {
            w.await.expect("worker");
        }
        let secs = started.elapsed().as_secs_f64();
        let c = rusqlite::Connection::open(h.path().join("nanoclaw.db")).expect("db");
        let stored: i64 = c.query_row("SELECT count(*) FROM inbox", [], |r| r.get(0)).expect("count");
        let groups: i64 = c.query_row("SELECT count(DISTINCT group_id) FROM inbox", [], |r| r.get(0)).expect("groups");
        println!(
            "{MESSAGES} webhook messages over {CONNECTIONS} connections, {groups} groups: {secs:.2} s, {:.0} messages/s committed and routed ({stored} stored)",
            MESSAGES as f64 / secs
        );
        daemon.start_kill().expect("kill");
        let _ = daemon.wait().await;
    });
}
