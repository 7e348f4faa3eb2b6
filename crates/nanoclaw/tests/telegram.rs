//! The Telegram channel against a fake Bot API with Telegram's real shapes: the owner's chat,
//! group triggers and context, unknown senders, long replies split within the limit, 429s
//! waited out, unreadable updates skipped, offsets committed only after storing, and approval
//! buttons checked against the pending request and the pressing user.

mod support;

use std::time::Duration;

use support::model_server::{ScriptedModel, Step};
use support::telegram::{FakeTelegram, TOKEN};
use support::{TestHome, Wire, text};

const OWNER: i64 = 1001;
const FRIEND: i64 = 2002;
const STRANGER: i64 = 3003;
const ROOM: i64 = -500;

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

fn sent_to(tg: &FakeTelegram, chat: i64) -> Vec<String> {
    tg.sent()
        .iter()
        .filter(|m| m["chat_id"].as_str() == Some(&chat.to_string()))
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn telegram_end_to_end() {
    let long = format!(
        "{}\n\n{}\n\n{}",
        "a".repeat(3000),
        "b".repeat(3000),
        "c".repeat(3000)
    );
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![
            Step::Text("hello owner".into()),
            Step::Text(long.clone()),
            Step::Text("the room said lunch".into()),
            Step::Tools(vec![(
                "shell".into(),
                r#"{"command": "echo deploy now"}"#.into(),
            )]),
            Step::EchoToolResult,
        ],
    )
    .await;
    let tg = FakeTelegram::start().await;
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[channels.telegram]\ntoken_secret = \"TELEGRAM_BOT_TOKEN\"\napi_base = \"{}\"\npoll_timeout_secs = 1\nmain_chat = \"{OWNER}\"\nowners = [\"{OWNER}\"]\nsenders = [\"{FRIEND}\"]\ntrigger = \"@nano_bot\"\n",
            tg.url
        ),
    );
    std::fs::write(
        h.path().join("policy.toml"),
        format!("[approvers.owner]\nterminal = true\nids = {{ telegram = [\"{OWNER}\"] }}\n[[rule]]\ntool = \"shell\"\nargs = {{ command = {{ glob = \"echo deploy*\" }} }}\naction = \"ask\"\ntimeout_secs = 60\n"),
    )
    .unwrap();
    let out = h
        .set_secret("TELEGRAM_BOT_TOKEN", TOKEN, &["--host", "127.0.0.1"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let start = || {
        let mut c = h.command();
        c.arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let mut daemon = start();

    // The owner's private chat: a turn, and the reply.
    tg.message(OWNER, OWNER, "hi", false);
    until("the owner is answered", || {
        sent_to(&tg, OWNER).iter().any(|t| t == "hello owner")
    })
    .await;

    // A long reply arrives in pieces within the limit, through a 429.
    tg.rate_limit_next(1);
    tg.message(OWNER, OWNER, "tell me a lot", false);
    until("the long reply arrived", || sent_to(&tg, OWNER).len() >= 4).await;
    let pieces = sent_to(&tg, OWNER);
    assert_eq!(
        pieces[1..4].concat(),
        long.replace("\n\n", ""),
        "pieces: {:?}",
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    assert!(pieces.iter().all(|p| p.chars().count() <= 4096));
    // Spaced as Telegram asks: at least a second between messages to one chat.
    let times: Vec<u64> = tg
        .sent()
        .iter()
        .filter(|m| m["chat_id"].as_str() == Some(&OWNER.to_string()))
        .map(|m| m["_received_ms"].as_u64().unwrap_or(0))
        .collect();
    assert!(times.windows(2).all(|w| w[1] >= w[0] + 950), "{times:?}");

    // Unreadable updates and strangers are skipped; the room waits for the trigger.
    tg.garbage();
    tg.message(ROOM, STRANGER, "@nano_bot obey me", false);
    tg.message(ROOM, FRIEND, "lunch at noon", false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        model.requests().len(),
        2,
        "a turn started without the trigger"
    );
    tg.message(ROOM, FRIEND, "@nano_bot what did we say?", false);
    until("the room is answered", || {
        sent_to(&tg, ROOM)
            .iter()
            .any(|t| t == "the room said lunch")
    })
    .await;
    let request = model.requests()[2].to_string();
    assert!(
        request.contains("lunch at noon") && !request.contains("obey me"),
        "{request}"
    );

    // An approval with buttons: a stranger's press and a stale code do not count.
    tg.message(OWNER, OWNER, "deploy please", false);
    until("the approval request is sent with buttons", || {
        tg.sent()
            .iter()
            .any(|m| m["reply_markup"]["inline_keyboard"].is_array())
    })
    .await;
    let request = tg
        .sent()
        .into_iter()
        .find(|m| m["reply_markup"].is_object())
        .unwrap();
    let approve = request["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_owned();
    let (id, code) = {
        let mut p = approve.split(':').skip(1);
        (p.next().unwrap().to_owned(), p.next().unwrap().to_owned())
    };
    tg.press(STRANGER, &approve);
    tg.press(OWNER, &format!("approve:{id}:WRONGCODE"));
    until("both presses are answered", || tg.answered().len() >= 2).await;
    let answers: Vec<String> = tg
        .answered()
        .iter()
        .map(|a| a["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(answers[0].contains("not an approver"), "{answers:?}");
    assert!(answers[1].contains("does not match"), "{answers:?}");
    // A stranger typing the command gets no answer; neither attempt is stored.
    let before = tg.sent().len();
    tg.message(ROOM, STRANGER, &format!("/approve {code}"), false);
    tg.message(ROOM, STRANGER, &format!("/approve {id}"), false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        tg.sent().len(),
        before,
        "a stranger was answered: {:?}",
        tg.sent()
    );
    let votes: i64 = rusqlite::Connection::open(h.path().join("nanoclaw.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM approval_votes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(votes, 0, "a stranger's attempt was stored");
    assert!(text(&h.run(&["approvals", "list"]).await.stdout).contains(&code));
    tg.press(OWNER, &approve);
    until("the approved command's output reaches the owner", || {
        sent_to(&tg, OWNER)
            .iter()
            .any(|t| t.contains("deploy now") && t.contains("exit status 0"))
    })
    .await;

    // A restart: updates already stored are not taken again; polling resumes after them.
    let last_offset = *tg.offsets().last().unwrap();
    daemon.start_kill().unwrap();
    let out = daemon.wait_with_output().await.unwrap();
    assert!(
        !text(&out.stderr).contains(TOKEN),
        "the bot token was logged"
    );
    let before = model.requests().len();
    let polls_before = tg.offsets().len();
    let mut daemon = start();
    until("polling resumes", || tg.offsets().len() > polls_before).await;
    // The restarted bot asks from its stored offset, not from the beginning.
    assert_eq!(tg.offsets()[polls_before], last_offset);
    assert!(last_offset > 100);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        model.requests().len(),
        before,
        "an update was processed twice"
    );
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
}

#[tokio::test]
async fn a_missing_token_secret_stops_startup() {
    let h = TestHome::new(
        Wire::Anthropic,
        "http://127.0.0.1:9",
        &format!(
            "[api]\nlisten = \"127.0.0.1:{}\"\n[channels.telegram]\ntoken_secret = \"NOPE\"\n",
            support::free_port()
        ),
    );
    let out = h.run(&["run"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("\"NOPE\", which is not a stored secret"));
}

/// A token the Bot API rejects is reported (doctor: TOKEN REJECTED naming the host; status:
/// unhealthy, the channel rejected) and not retried; `secret rotate` restarts the channel with
/// the new token, and it connects.
#[tokio::test]
async fn a_rejected_token_is_reported_not_retried_and_a_rotated_one_connects() {
    let model = ScriptedModel::start(Wire::Anthropic, vec![]).await;
    let tg = FakeTelegram::start().await;
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!(
            "[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[channels.telegram]\ntoken_secret = \"TELEGRAM_BOT_TOKEN\"\napi_base = \"{}\"\npoll_timeout_secs = 1\nmain_chat = \"{OWNER}\"\nowners = [\"{OWNER}\"]\n",
            tg.url
        ),
    );
    let out = h
        .set_secret("TELEGRAM_BOT_TOKEN", "999:wrong", &["--host", "127.0.0.1"])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = h.run(&["doctor"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("TOKEN REJECTED by 127.0.0.1"),
        "{}",
        text(&out.stdout)
    );

    let mut daemon = h.daemon(port).await;
    let mut shown = String::new();
    for _ in 0..100 {
        shown = text(&h.run(&["status"]).await.stdout);
        if shown.contains("TOKEN REJECTED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shown.contains("channel telegram: TOKEN REJECTED"),
        "{shown}"
    );
    assert_eq!(h.run(&["status"]).await.status.code(), Some(1));
    // Not retried.
    let refused = tg.rejected();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(tg.rejected(), refused, "a rejected token was tried again");

    // The right token, rotated in: the channel restarts and connects.
    let mut rotate = h.command();
    rotate
        .args(["secret", "rotate", "TELEGRAM_BOT_TOKEN"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = rotate.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(TOKEN.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("channels restarted"),
        "{}",
        text(&out.stdout)
    );
    for _ in 0..100 {
        shown = text(&h.run(&["status"]).await.stdout);
        if shown.contains("channel telegram: connected") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shown.contains("channel telegram: connected since"),
        "{shown}"
    );
    let out = h.run(&["doctor"]).await;
    assert!(
        text(&out.stdout).contains("knows the bot as @nano_bot"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("daemon: running"));
    daemon.start_kill().unwrap();
    let _ = daemon.wait().await;
}
