//! The proxy against real sockets: an origin server on loopback, requests written by hand
//! over the group's Unix socket, as the in-sandbox relay forwards them.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_egress::policy::{Policy, Rule};
use nanoclaw_egress::proxy;
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
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("g.sock");
    let policy = Policy {
        rules: rules
            .iter()
            .map(|(r, p)| Rule::parse(r, None, *p).unwrap())
            .collect(),
    };
    let group = proxy::GroupProxy {
        group: "g".into(),
        policy,
        credentials: Default::default(),
        tls: None,
        recorder: None,
    };
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

fn get(url: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
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
    let (_d, sock) = start(&[("169.254.169.254", true)]);
    let resp = send(&sock, &get("http://169.254.169.254/latest/meta-data/")).await;
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
