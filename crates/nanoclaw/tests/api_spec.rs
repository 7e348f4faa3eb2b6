//! `docs/openapi.json` against the running server: every documented operation is exercised,
//! each answer's status is one the document lists for it, and each JSON body carries every
//! property the document marks as required; an operation the server answers but the document
//! does not name fails the test too.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::model_server::{ScriptedModel, Step, shell};
use support::{TestHome, Wire};

const SPEC: &str = include_str!("../../../docs/openapi.json");

/// One request over a fresh connection: the status and the JSON body.
fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {}\r\n", t.trim()));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Follow a `$ref` inside the document.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            resolve(
                spec,
                spec.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => v,
    }
}

/// Where `body` misses what `schema` requires (empty when it has everything).
fn missing(spec: &Value, schema: &Value, body: &Value) -> Vec<String> {
    let schema = resolve(spec, schema);
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let fits: Vec<Vec<String>> = alternatives
            .iter()
            .map(|a| missing(spec, a, body))
            .collect();
        return if fits.iter().any(Vec::is_empty) {
            Vec::new()
        } else {
            fits.concat()
        };
    }
    let mut gaps = Vec::new();
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        if body.get(key).is_none() {
            gaps.push(key.to_owned());
        }
    }
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        let property = resolve(spec, property);
        if let (Some(items), Some(first)) = (
            property.get("items"),
            body.get(key)
                .and_then(Value::as_array)
                .and_then(|a| a.first()),
        ) {
            gaps.extend(
                missing(spec, items, first)
                    .into_iter()
                    .map(|g| format!("{key}[0].{g}")),
            );
        }
    }
    gaps
}

/// The document's path template that `path` (its query cut) is an instance of.
fn template<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.split('/').collect();
    spec["paths"]
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == parts.len()
                && ts
                    .iter()
                    .zip(&parts)
                    .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
        })
}

#[tokio::test]
async fn the_openapi_document_matches_the_server() {
    let spec: Value = serde_json::from_str(SPEC).expect("docs/openapi.json is JSON");
    let model = ScriptedModel::start(
        Wire::Anthropic,
        vec![shell("echo deploy now"), Step::EchoToolResult],
    )
    .await;
    let port = support::free_port();
    let h = TestHome::new(
        Wire::Anthropic,
        &model.url,
        &format!("[sandbox]\nbackend = \"bwrap\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    std::fs::write(
        h.path().join("policy.toml"),
        "[approvers.owner]\nterminal = true\n[[rule]]\ntool = \"shell\"\nargs = { command = { glob = \"echo deploy*\" } }\naction = \"ask\"\ntimeout_secs = 60\n",
    )
    .unwrap();
    let token = std::fs::read_to_string(h.path().join("api.token")).unwrap();
    let token = Some(token.as_str());
    let mut daemon = h.daemon(port).await;
    let mut exercised: BTreeSet<(String, String)> = BTreeSet::new();
    let mut check = |method: &str, path: &str, token: Option<&str>, body: Option<&str>| -> Value {
        let (status, answer) = call(port, method, path, token, body);
        let t = template(&spec, path).unwrap_or_else(|| panic!("{path} is not in the document"));
        let op = &spec["paths"][t][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {t} is not in the document");
        let response = op["responses"].get(status.to_string()).unwrap_or_else(|| {
            panic!("{method} {path} answered {status}, not documented: {answer}")
        });
        let response = resolve(&spec, response);
        if let Some(schema) = response.pointer("/content/application~1json/schema") {
            let gaps = missing(&spec, schema, &answer);
            assert!(
                gaps.is_empty(),
                "{method} {path} ({status}) lacks {gaps:?}: {answer}"
            );
        }
        exercised.insert((t.to_owned(), method.to_ascii_lowercase()));
        answer
    };

    check("GET", "/v1/health", None, None);
    check("GET", "/v1/status", None, None);
    let status = check("GET", "/v1/status", token, None);
    assert_eq!(status["daemon"], true);
    let posted = check(
        "POST",
        "/v1/groups/main/messages",
        token,
        Some(r#"{"text": "go"}"#),
    );
    let id = posted["id"].as_i64().expect("an id");
    let mut approvals = Value::Null;
    for _ in 0..200 {
        approvals = check("GET", "/v1/approvals", token, None);
        if approvals["approvals"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = approvals["approvals"][0]["code"]
        .as_str()
        .expect("a pending request")
        .to_owned();
    let answered = check(
        "POST",
        &format!("/v1/approvals/{code}"),
        token,
        Some(r#"{"vote": "approve"}"#),
    );
    assert!(
        answered["approval"]
            .as_str()
            .unwrap_or_default()
            .contains("approved")
    );
    let again = check(
        "POST",
        &format!("/v1/approvals/{}", code.to_ascii_lowercase()),
        token,
        Some(r#"{"vote": "deny"}"#),
    );
    assert!(again["error"].is_string(), "{again}");
    check(
        "POST",
        "/v1/approvals/ZZZZZZZZ",
        token,
        Some(r#"{"vote": "deny"}"#),
    );
    let bad = check(
        "POST",
        "/v1/approvals/1",
        token,
        Some(r#"{"vote": "maybe"}"#),
    );
    assert!(
        bad["error"].as_str().unwrap_or_default().contains("vote"),
        "{bad}"
    );
    let relayed = check(
        "POST",
        "/v1/groups/main/messages",
        token,
        Some(&json!({"text": format!("/approve {code}"), "sender": "eve"}).to_string()),
    );
    assert!(
        relayed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot answer"),
        "{relayed}"
    );
    // The reply says which message it answers.
    let mut replies = Value::Null;
    for _ in 0..200 {
        replies = check("GET", "/v1/groups/main/replies?after=0", token, None);
        if replies["replies"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = &replies["replies"][0];
    assert_eq!(reply["answers"], json!([id]), "{replies}");
    assert_eq!(reply["failed"], false);
    assert!(
        reply["text"]
            .as_str()
            .unwrap_or_default()
            .contains("deploy now"),
        "{reply}"
    );
    check("GET", "/v1/groups/main/replies?after=soon", token, None);
    check("GET", "/v1/groups/Not-A-Group/replies", token, None);
    let stopped = check(
        "POST",
        "/v1/groups/main/messages",
        token,
        Some(r#"{"text": "/stop"}"#),
    );
    assert_eq!(stopped["stopped"], false);
    check("POST", "/v1/tasks/wake", token, None);
    check("POST", "/v1/webhook", None, Some("{}"));

    // Every documented operation was exercised.
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    assert_eq!(
        documented, exercised,
        "documented operations not exercised, or the reverse"
    );
    daemon.start_kill().unwrap();
    daemon.wait().await.unwrap();
}
