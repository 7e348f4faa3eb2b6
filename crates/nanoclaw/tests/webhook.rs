//! The webhook channel through the real daemon: signatures checked before anything is stored,
//! routing (the owner's chat is main; other chats need the trigger and keep context), unknown
//! senders ignored, redeliveries stored once, and replies posted, signed, to the callback.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use support::model_server::{ScriptedModel, Step};
use support::{TestHome, Wire, text};

const KEY: &str = "webhook-key-0123456789";

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

/// A callback endpoint recording (signature, body) of each post.
async fn callback() -> (u16, Arc<Mutex<Vec<(String, String)>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (port, callback_on(l))
}

fn callback_on(l: tokio::net::TcpListener) -> Arc<Mutex<Vec<(String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let s = Arc::clone(&s);
                        async move {
                            let sig = req
                                .headers()
                                .get("x-nanoclaw-signature")
                                .map(|v| v.to_str().unwrap_or_default().to_owned())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            s.lock()
                                .unwrap()
                                .push((sig, String::from_utf8_lossy(&body).into_owned()));
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    seen
}

fn post(port: u16, body: &str, signature: Option<&str>) -> (u16, String) {
    let mut args = vec![
        "-s".to_owned(),
        "-o".into(),
        "-".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        "POST".into(),
        "-H".into(),
        "content-type: application/json".into(),
        "-d".into(),
        body.into(),
    ];
    if let Some(sig) = signature {
        args.extend(["-H".into(), format!("x-nanoclaw-signature: {sig}")]);
    }
    args.push(format!("http://127.0.0.1:{port}/v1/webhook"));
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap();
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap_or((&all, "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test]
async fn signed_messages_are_routed_answered_and_replies_posted_signed() {
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Text("hello alice".into()),
            Step::Text("you said lunch".into()),
        ],
    )
    .await;
    let (cb_port, posted) = callback().await;
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[channels.webhook]\nkey_secret = \"WEBHOOK_KEY\"\ncallback_url = \"http://127.0.0.1:{cb_port}/replies\"\nmain_chat = \"alice-dm\"\nowners = [\"alice\"]\nsenders = [\"bob\", \"api\"]\n"
        ),
    );
    let out = h
        .set_secret("WEBHOOK_KEY", KEY, &["--host", "hooks.invalid"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut daemon = h.daemon(port).await;

    // Refused before anything is stored: no signature, a wrong one, a signed malformed body.
    let hello = r#"{"id": "m1", "chat": "alice-dm", "sender": "alice", "text": "hi"}"#;
    assert_eq!(post(port, hello, None).0, 401);
    assert_eq!(post(port, hello, Some(&sign("something else"))).0, 401);
    assert_eq!(post(port, hello, Some("sha256=nothex")).0, 401);
    let bad = r#"{"chat": 5}"#;
    let (code, body) = post(port, bad, Some(&sign(bad)));
    assert_eq!(code, 400, "{body}");
    assert!(model.requests().is_empty());

    // The owner in the main chat: a turn, and the reply posted, signed, to the callback.
    let (code, body) = post(port, hello, Some(&sign(hello)));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"group\":\"main\""), "{body}");
    for _ in 0..200 {
        if !posted.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (sig, reply) = posted
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("a reply was posted");
    assert!(
        reply.contains("hello alice") && reply.contains("\"chat\":\"alice-dm\""),
        "{reply}"
    );
    assert_eq!(sig, sign(&reply), "the reply's signature");
    // A redelivery is acknowledged and stored once.
    let (code, body) = post(port, hello, Some(&sign(hello)));
    assert_eq!(code, 200);
    assert!(body.contains("duplicate"), "{body}");

    // Someone nobody configured: ignored.
    // Without an id, a signed request could be replayed as new messages: refused.
    let no_id = r#"{"chat": "room", "sender": "bob", "text": "@nanoclaw hi"}"#;
    let (code, body) = post(port, no_id, Some(&sign(no_id)));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("id"), "{body}");
    let eve = r#"{"id": "e0", "chat": "room", "sender": "eve", "text": "@nanoclaw obey"}"#;
    let (_, body) = post(port, eve, Some(&sign(eve)));
    assert!(body.contains("ignored"), "{body}");

    // A shared room: without the trigger the message waits as context; with it, a turn sees
    // both, marked as coming from someone other than the owner.
    let first = r#"{"id": "r1", "chat": "team room", "sender": "bob", "text": "lunch at noon"}"#;
    let (_, body) = post(port, first, Some(&sign(first)));
    assert!(body.contains("\"triggered\":false"), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        model.requests().len(),
        1,
        "an untriggered message started a turn"
    );
    // A sender who calls itself "api" (a name the HTTP API's owner goes by) is still someone
    // else: the webhook names its senders by channel.
    let second = r#"{"id": "r2", "chat": "team room", "sender": "api", "text": "@nanoclaw what did I say?"}"#;
    let (_, body) = post(port, second, Some(&sign(second)));
    assert!(
        body.contains("\"triggered\":true") && body.contains("wh-team-room-"),
        "{body}"
    );
    model.wait_for_requests(2, Duration::from_secs(20)).await;
    let request = model.requests()[1].to_string();
    assert!(
        request.contains("lunch at noon") && request.contains("what did I say?"),
        "{request}"
    );
    assert!(request.contains("untrusted-data"), "{request}");
    assert!(request.contains("message from webhook:api"), "{request}");
    for _ in 0..200 {
        if posted.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, reply) = posted.lock().unwrap()[1].clone();
    assert!(
        reply.contains("you said lunch") && reply.contains("\"chat\":\"team room\""),
        "{reply}"
    );
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
}

#[tokio::test]
async fn a_webhook_naming_a_missing_secret_stops_startup() {
    let h = TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{}\"\n[channels.webhook]\nkey_secret = \"NOPE\"\n",
            support::free_port()
        ),
    );
    let out = h.run(&["run"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("\"NOPE\", which is not a stored secret"),
        "{}",
        text(&out.stderr)
    );
    let out = h.run(&["doctor"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("channel webhook: SECRET NOPE IS NOT STORED"),
        "{}",
        text(&out.stdout)
    );
    let h = TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        "[channels.webhook]\nkey_secret = \"K\"\nunknown_senders = \"maybe\"\n",
    );
    let out = h.run(&["run"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("channels.webhook.unknown_senders"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_unknown_sender_waits_until_the_owner_admits_them() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![Step::Text("hello eve".into())]).await;
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[channels.webhook]\nkey_secret = \"WEBHOOK_KEY\"\nmain_chat = \"alice-dm\"\nowners = [\"alice\"]\nunknown_senders = \"ask\"\n"
        ),
    );
    let out = h
        .set_secret("WEBHOOK_KEY", KEY, &["--host", "hooks.invalid"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut daemon = h.daemon(port).await;
    let first =
        r#"{"id": "e1", "chat": "room", "sender": "eve", "text": "@nanoclaw I am new here"}"#;
    let (code, body) = post(port, first, Some(&sign(first)));
    assert_eq!(code, 200);
    assert!(body.contains("held"), "{body}");
    let again = r#"{"id": "e2", "chat": "room", "sender": "eve", "text": "@nanoclaw hello?"}"#;
    assert!(post(port, again, Some(&sign(again))).1.contains("held"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(model.requests().is_empty(), "a held message started a turn");
    // One request for the sender, however many messages they send.
    let list = text(&h.run(&["approvals", "list"]).await.stdout);
    assert_eq!(list.matches("admit_sender").count(), 1, "{list}");
    assert!(list.contains("\"sender\":\"eve\""), "{list}");
    let id = list.split_whitespace().next().unwrap().to_owned();
    assert!(h.run(&["approvals", "approve", &id]).await.status.success());
    // Admitted: the next message starts a turn, with the held ones as context.
    let third = r#"{"id": "e3", "chat": "room", "sender": "eve", "text": "@nanoclaw can you hear me now?"}"#;
    let (_, body) = post(port, third, Some(&sign(third)));
    assert!(body.contains("\"triggered\":true"), "{body}");
    model.wait_for_requests(1, Duration::from_secs(20)).await;
    let request = model.requests()[0].to_string();
    assert!(
        request.contains("I am new here") && request.contains("can you hear me now?"),
        "{request}"
    );
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
}

#[tokio::test]
async fn reading_replies_through_the_api_does_not_take_them_from_the_webhook() {
    let model =
        ScriptedModel::start(Wire::Anthropic, vec![Step::Text("for the webhook".into())]).await;
    // Nothing listens on the callback port yet: delivery fails and is retried.
    let (port, cb_port) = (support::free_port(), support::free_port());
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[channels.webhook]\nkey_secret = \"WEBHOOK_KEY\"\ncallback_url = \"http://127.0.0.1:{cb_port}/replies\"\nmain_chat = \"alice-dm\"\nowners = [\"alice\"]\n"
        ),
    );
    let out = h
        .set_secret("WEBHOOK_KEY", KEY, &["--host", "hooks.invalid"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut daemon = h.daemon(port).await;
    let hello = r#"{"id": "m1", "chat": "alice-dm", "sender": "alice", "text": "hi"}"#;
    assert_eq!(post(port, hello, Some(&sign(hello))).0, 200);

    // The API shows the reply, with its channel...
    let token = std::fs::read_to_string(h.path().join("api.token")).unwrap();
    let mut shown = String::new();
    for _ in 0..200 {
        shown = support::api_replies(port, &token, "main");
        if shown.contains("for the webhook") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shown.contains("\"channel\":\"webhook\""), "{shown}");
    // ...and the webhook still gets it once its endpoint is up.
    let posted = callback_on(
        tokio::net::TcpListener::bind(("127.0.0.1", cb_port))
            .await
            .unwrap(),
    );
    for _ in 0..600 {
        if !posted.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = posted.lock().unwrap().clone();
    assert_eq!(
        delivered.len(),
        1,
        "the reply read through the API never reached the webhook"
    );
    assert!(delivered[0].1.contains("for the webhook"));
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
}
