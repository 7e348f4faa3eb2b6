//! The proxy against real sockets: an origin server on loopback, requests written by hand
//! over the group's Unix socket, as the in-sandbox relay forwards them.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_egress::policy::{Policy, Rule};
use nanoclaw_egress::{Credential, Credentials, proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin that answers every request with `hello from origin`.
async fn origin() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "hello from origin";
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

/// Start the proxy for a group with `rules` (`private` marks rules allowing loopback).
fn start(rules: &[(&str, bool)]) -> (tempfile::TempDir, std::path::PathBuf) {
    start_with(rules, Credentials::default())
}

fn start_with(
    rules: &[(&str, bool)],
    credentials: Credentials,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("g.sock");
    let policy = Policy {
        rules: rules
            .iter()
            .map(|(r, p)| Rule::parse(r, None, *p).unwrap())
            .collect(),
    };
    let group = proxy::GroupProxy::new("g".into(), policy, credentials, None, None);
    // One call open for the whole test: the proxy serves nothing outside a call.
    std::mem::forget(group.open_call("test".into(), None));
    proxy::spawn(&sock, Arc::new(group)).unwrap();
    (dir, sock)
}

async fn send(sock: &std::path::Path, raw: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A GET of an absolute `http://` URL, with the Host header a client sends for it.
fn get(url: &str) -> String {
    let host = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("x");
    format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn allowed_host_is_forwarded() {
    let port = origin().await;
    let (_d, sock) = start(&[(&format!("127.0.0.1:{port}"), true)]);
    let resp = send(&sock, &get(&format!("http://127.0.0.1:{port}/x"))).await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("hello from origin"),
        "{resp}"
    );
}

#[tokio::test]
async fn host_off_the_list_is_refused_with_a_403_naming_it() {
    let port = origin().await;
    let (_d, sock) = start(&[("api.example.com", false)]);
    let resp = send(&sock, &get(&format!("http://localhost:{port}/"))).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains(&format!(
            "localhost:{port} is not on this group's egress allowlist"
        )),
        "{resp}"
    );
}

#[tokio::test]
async fn a_reserved_listener_is_refused_in_every_spelling_even_for_private_rules() {
    let port = origin().await;
    let other = origin().await;
    let reserved: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("g.sock");
    let spellings = [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("[::ffff:7f00:1]:{port}"),
        format!("127.0.0.1:{other}"),
    ];
    let policy = Policy {
        rules: spellings
            .iter()
            .map(|r| Rule::parse(r, None, true).unwrap())
            .collect(),
    };
    let group = proxy::GroupProxy::new("g".into(), policy, Credentials::default(), None, None)
        .never_reaching(vec![reserved]);
    std::mem::forget(group.open_call("test".into(), None));
    proxy::spawn(&sock, Arc::new(group)).unwrap();
    for host in &spellings[..5] {
        let resp = send(&sock, &get(&format!("http://{host}/"))).await;
        assert!(
            resp.starts_with("HTTP/1.1 403") && resp.contains("nanoclaw's own API"),
            "{host}: {resp}"
        );
    }
    // Another port of the same host is what the private rule allows.
    let resp = send(&sock, &get(&format!("http://127.0.0.1:{other}/"))).await;
    assert!(resp.contains("hello from origin"), "{resp}");
}

#[tokio::test]
async fn allowed_name_resolving_to_loopback_is_refused_without_private() {
    let port = origin().await;
    let (_d, sock) = start(&[(&format!("localhost:{port}"), false)]);
    let resp = send(&sock, &get(&format!("http://localhost:{port}/"))).await;
    assert!(
        resp.starts_with("HTTP/1.1 403") && resp.contains("a loopback address"),
        "{resp}"
    );
}

#[tokio::test]
async fn ssrf_spellings_are_refused() {
    let port = origin().await;
    let (_d, sock) = start(&[("*.example.com", false)]);
    for host in [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0177.0.0.1",
        "0x7f000001",
        "169.254.169.254",
    ] {
        let resp = send(&sock, &get(&format!("http://{host}:{port}/"))).await;
        assert!(
            resp.starts_with("HTTP/1.1 403") || resp.starts_with("HTTP/1.1 400"),
            "{host}: {resp}"
        );
        assert!(
            !resp.contains("hello from origin"),
            "{host} reached the origin"
        );
    }
}

#[tokio::test]
async fn connect_tunnels_to_an_allowed_host_and_refuses_others() {
    let port = origin().await;
    let (_d, sock) = start(&[(&format!("127.0.0.1:{port}"), true)]);
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    s.write_all(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 19];
    s.read_exact(&mut head).await.unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Through the tunnel: a plain request to the origin.
    let mut rest = vec![0u8; 2];
    s.read_exact(&mut rest).await.unwrap(); // the header block's end
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).contains("hello from origin"));

    let resp = send(
        &sock,
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 403") && resp.contains("evil.example:443"),
        "{resp}"
    );
}

#[tokio::test]
async fn metadata_is_refused_even_for_private_rules() {
    // A rule cannot name the metadata address itself; its decimal spelling is a name to the
    // rule parser, and resolves to 169.254.169.254: the address check still refuses it.
    assert!(Rule::parse("169.254.169.254", None, true).is_err());
    let (_d, sock) = start(&[("2852039166", true)]);
    let resp = send(&sock, &get("http://2852039166/latest/meta-data/")).await;
    assert!(
        resp.starts_with("HTTP/1.1 403") && resp.contains("metadata"),
        "{resp}"
    );
}

#[tokio::test]
async fn https_urls_must_use_connect_and_origin_form_is_not_a_proxy_request() {
    let (_d, sock) = start(&[("example.com", false)]);
    let resp = send(&sock, &get("https://example.com/")).await;
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("CONNECT"),
        "{resp}"
    );
    let resp = send(
        &sock,
        "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("not a proxy request"),
        "{resp}"
    );
}

#[tokio::test]
async fn a_host_header_naming_another_host_is_refused() {
    let port = origin().await;
    let (_d, sock) = start(&[(&format!("127.0.0.1:{port}"), true)]);
    let url = format!("http://127.0.0.1:{port}/");
    let resp = send(&sock, &get(&url)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    for hosts in [
        "Host: evil.example\r\n".to_owned(),
        format!("Host: 127.0.0.1:{}\r\n", port + 1),
        format!("Host: 127.0.0.1:{port}\r\nHost: evil.example\r\n"),
    ] {
        let resp = send(
            &sock,
            &format!("GET {url} HTTP/1.1\r\n{hosts}Connection: close\r\n\r\n"),
        )
        .await;
        assert!(
            resp.starts_with("HTTP/1.1 403") && resp.contains("request for"),
            "{hosts}: {resp}"
        );
    }
}

/// With capitals: the host is lower-cased on its way, and the value must not come out so.
const VALUE: &str = "tok-Real-Value-0123456789";

fn token() -> Credentials {
    let credential = Credential {
        name: "TOKEN".into(),
        value: VALUE.into(),
        placeholder: "NANOCLAW_SECRET_TOKEN_00".into(),
        hosts: vec![Rule::parse("api.example", None, false).unwrap().pattern],
        header: None,
        in_query: false,
        in_body: false,
    };
    Credentials::new(vec![credential], &["TOKEN".into()])
}

#[tokio::test]
async fn a_secret_value_in_the_host_or_method_is_refused_before_the_name_is_looked_up() {
    // `*.test.example` is allowed: were the name looked up first, the refusal would be that it
    // does not resolve (the lookup having carried the value out).
    let (_d, sock) = start_with(&[("*.test.example", false)], token());
    for request in [
        get(&format!("http://{VALUE}.test.example/")),
        format!(
            "CONNECT {VALUE}.test.example:443 HTTP/1.1\r\nHost: {VALUE}.test.example:443\r\nConnection: close\r\n\r\n"
        ),
        // An extension method is any token: this one is the value itself.
        format!(
            "{VALUE} http://api.test.example/ HTTP/1.1\r\nHost: api.test.example\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let resp = send(&sock, &request).await;
        assert!(
            resp.starts_with("HTTP/1.1 403") && resp.contains("raw value of secret TOKEN"),
            "{request}: {resp}"
        );
        assert!(
            !resp.to_lowercase().contains(&VALUE.to_lowercase()),
            "the refusal repeats the value: {resp}"
        );
        if !request.starts_with(VALUE) {
            assert!(
                resp.to_lowercase()
                    .contains("nanoclaw_secret_token_00.test.example"),
                "{resp}"
            );
        }
    }
}

/// An origin that keeps each connection open until its client closes it.
async fn holding_origin() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn open_tunnel(sock: &std::path::Path, port: u16) -> Option<tokio::net::UnixStream> {
    let mut s = tokio::net::UnixStream::connect(sock).await.ok()?;
    s.write_all(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 200") => Some(s),
        _ => None,
    }
}

#[tokio::test]
async fn open_tunnels_count_against_the_connection_limit_until_they_close() {
    let port = holding_origin().await;
    let (_d, sock) = start(&[(&format!("127.0.0.1:{port}"), true)]);
    let mut tunnels = Vec::new();
    for i in 0..256 {
        let t = open_tunnel(&sock, port).await;
        tunnels.push(t.unwrap_or_else(|| panic!("tunnel {i} was refused below the limit")));
    }
    assert!(
        open_tunnel(&sock, port).await.is_none(),
        "a 257th connection was served while 256 tunnels were open"
    );
    drop(tunnels.pop());
    let mut reopened = None;
    for _ in 0..50 {
        reopened = open_tunnel(&sock, port).await;
        if reopened.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a closed tunnel did not free its slot");
}

#[tokio::test]
async fn stalled_bodies_are_refused_in_time_and_give_their_scan_places_back() {
    let port = origin().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("g.sock");
    let policy = Policy {
        rules: vec![Rule::parse(&format!("127.0.0.1:{port}"), None, true).unwrap()],
    };
    // With a secret in use every body is scanned, four at a time per group.
    let group = proxy::GroupProxy::new("g".into(), policy, token(), None, None)
        .with_body_timeout(Duration::from_secs(1));
    std::mem::forget(group.open_call("test".into(), None));
    proxy::spawn(&sock, Arc::new(group)).unwrap();
    let stalled = format!(
        "POST http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100\r\n\r\nten bytes."
    );
    // Five uploads that never finish: four hold the scan places, the fifth waits for one.
    let started = std::time::Instant::now();
    let mut uploads = Vec::new();
    for _ in 0..5 {
        let (sock, stalled) = (sock.clone(), stalled.clone());
        uploads.push(tokio::spawn(async move { send(&sock, &stalled).await }));
    }
    for upload in uploads {
        let resp = upload.await.unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 400") && resp.contains("did not arrive within 1s"),
            "{resp}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The places are free again: a whole body goes through.
    let whole = format!(
        "POST http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let resp = send(&sock, &whole).await;
    // Chunked: the response body is scanned for secret values on its way back.
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("hello from origin"),
        "{resp}"
    );
}

/// A proxy for `127.0.0.1:port` that counts what it records, with no call open.
fn counted(
    port: u16,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<proxy::GroupProxy>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("g.sock");
    let policy = Policy {
        rules: vec![Rule::parse(&format!("127.0.0.1:{port}"), None, true).unwrap()],
    };
    let records = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&records);
    let recorder: proxy::Recorder = Arc::new(move |_event: &proxy::Event<'_>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let group = Arc::new(proxy::GroupProxy::new(
        "g".into(),
        policy,
        Credentials::new(vec![], &[]),
        None,
        Some(recorder),
    ));
    proxy::spawn(&sock, Arc::clone(&group)).unwrap();
    (dir, sock, group, records)
}

#[tokio::test]
async fn a_connection_outside_any_tool_call_is_refused() {
    let port = origin().await;
    let (_d, sock, group, records) = counted(port);
    // A process left behind by an earlier command connects between calls.
    for _ in 0..100 {
        let resp = send(
            &sock,
            &get(&format!("http://127.0.0.1:{port}/leak?d=secret")),
        )
        .await;
        assert!(resp.is_empty(), "served outside a call: {resp}");
    }
    // Recorded, but not once per attempt: the 1st, 2nd, 4th, ... 64th.
    let n = records.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(n, 7, "{n} records for 100 refused connections");
    // While a call is open, the same request goes through.
    let call = group.open_call("turn 1 call a".into(), None);
    let resp = send(&sock, &get(&format!("http://127.0.0.1:{port}/x"))).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    drop(call);
}

#[tokio::test]
async fn a_kept_alive_connection_is_cut_when_its_call_ends() {
    let port = origin().await;
    let (_d, sock, group, _records) = counted(port);
    let call = group.open_call("turn 1 call a".into(), None);
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let keep = format!("GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(keep.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The call ends; the connection it opened must not carry a request after it.
    drop(call);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = s.write_all(keep.as_bytes()).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "served after its call ended"
    );
}

#[tokio::test]
async fn a_refusal_loop_makes_a_bounded_record_and_exhausts_the_call() {
    let port = origin().await;
    let (_d, sock, group, records) = counted(port);
    let call = group.open_call("turn 1 call a".into(), None);
    // The red team's flood: refused requests in a loop, on one kept-alive connection.
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let refused = "GET http://not-allowed.example/ HTTP/1.1\r\nHost: not-allowed.example\r\n\r\n";
    let mut statuses = String::new();
    for _ in 0..1100 {
        if s.write_all(refused.as_bytes()).await.is_err() {
            break;
        }
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => statuses.push_str(&String::from_utf8_lossy(&buf[..12])),
            _ => break,
        }
    }
    assert!(statuses.contains("HTTP/1.1 403"));
    assert!(
        statuses.contains("HTTP/1.1 429"),
        "the call was never exhausted"
    );
    // Work run as the call's is stopped: the call is past its budget.
    let stopped = call
        .bounded(tokio::time::sleep(Duration::from_secs(5)))
        .await;
    assert!(stopped.is_err(), "the caller was not told to stop the call");
    drop(call);
    // 64 requests in full and one summary.
    let n = records.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        n,
        nanoclaw_egress::calls::RECORDS_IN_FULL + 1,
        "{n} records"
    );
}

// A value in a response header's *name* reached the sandbox unredacted (values in bodies and
// header values were redacted).
#[tokio::test]
async fn a_secret_value_in_a_response_header_name_never_reaches_the_sandbox() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nx-{VALUE}: 1\r\nx-echo: {VALUE}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let (_d, sock) = start_with(&[(&format!("127.0.0.1:{port}"), true)], token());
    let resp = send(&sock, &get(&format!("http://127.0.0.1:{port}/"))).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        !resp
            .to_ascii_lowercase()
            .contains(&VALUE.to_ascii_lowercase()),
        "{resp}"
    );
    assert!(
        resp.contains("NANOCLAW_SECRET_TOKEN_00"),
        "the header value is redacted: {resp}"
    );
}
