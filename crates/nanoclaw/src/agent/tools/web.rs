//! The web tools, `web_fetch` and `http_request`: requests sent by the host's client through
//! the group's egress proxy (its allowlist, its `[[egress]]` rules, its credential injection),
//! the same single way out the sandbox has. Their results are outside content.

use std::collections::BTreeMap;
use std::sync::Arc;

use nanoclaw_core::GroupId;
use nanoclaw_egress::gate::EgressGate;

use super::{ToolOutcome, Tools};
use crate::agent::egress_gate::CallGate;

/// Bytes of a response body read at most by `web_fetch` and `http_request`.
const WEB_BODY_CAP: usize = 2 << 20;
/// Characters of a body returned by `http_request`.
const HTTP_REQUEST_CHARS: usize = 64_000;

/// How a call's network requests are named in the egress record and decided.
pub(super) struct CallNet<'a> {
    pub(super) tag: &'a str,
    pub(super) gate: Arc<CallGate>,
}

impl CallNet<'_> {
    /// Open the call on the group's proxy: served, named and decided as this call's.
    pub(super) fn open(
        &self,
        net: &crate::sandbox::egress::SandboxNet,
    ) -> nanoclaw_egress::proxy::ProxyCall {
        let gate: Arc<dyn EgressGate> = Arc::clone(&self.gate) as Arc<dyn EgressGate>;
        net.open_call(self.tag.to_owned(), Some(gate))
    }
}

impl Tools {
    /// Send a request through the group's proxy, the only network path the tools have.
    async fn web(
        &self,
        group: &GroupId,
        call_net: &CallNet<'_>,
        req: crate::sandbox::web::WebRequest,
        follow: bool,
    ) -> Result<crate::sandbox::web::WebResponse, ToolOutcome> {
        let net = self
            .egress
            .for_group(group)
            .map_err(|e| ToolOutcome::error(format!("no egress proxy for group {group}: {e:#}")))?;
        let _call = call_net.open(&net);
        crate::sandbox::web::send(
            &net.proxy_socket,
            self.egress.tool_tls(),
            req,
            follow,
            WEB_BODY_CAP,
            &|| call_net.gate.held_for(),
        )
        .await
        .map_err(|e| ToolOutcome::error(e.to_string()))
    }

    pub(super) async fn web_fetch(
        &self,
        group: &GroupId,
        call_net: &CallNet<'_>,
        url: String,
        max_chars: usize,
    ) -> ToolOutcome {
        let req = crate::sandbox::web::WebRequest {
            method: hyper::Method::GET,
            url,
            headers: vec![(
                "accept".into(),
                "text/html, text/plain;q=0.9, */*;q=0.5".into(),
            )],
            body: Vec::new(),
        };
        let resp = match self.web(group, call_net, req, true).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let raw = String::from_utf8_lossy(&resp.body);
        let html = resp
            .header("content-type")
            .is_some_and(|t| t.contains("html"));
        let text = if html {
            crate::sandbox::web::readable_text(&raw)
        } else {
            raw.into_owned()
        };
        let cap = max_chars;
        let mut content = format!("URL: {}\nStatus: {}\n\n", resp.url, resp.status);
        content.extend(text.chars().take(cap));
        if text.chars().nth(cap).is_some() || resp.truncated {
            content.push_str("\n[truncated]");
        }
        ToolOutcome {
            content,
            is_error: resp.status >= 400,
            outside: true,
        }
    }

    pub(super) async fn http_request(
        &self,
        group: &GroupId,
        call_net: &CallNet<'_>,
        method: hyper::Method,
        url: &str,
        headers: &BTreeMap<String, String>,
        body: &str,
    ) -> ToolOutcome {
        let expand = |text: &str| self.expand_secrets(group, text);
        let req = crate::sandbox::web::WebRequest {
            method,
            url: expand(url),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), expand(v)))
                .collect(),
            body: expand(body).into_bytes(),
        };
        let resp = match self.web(group, call_net, req, false).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let mut content = format!("HTTP {}\n", resp.status);
        for (k, v) in &resp.headers {
            content.push_str(&format!("{k}: {v}\n"));
        }
        content.push('\n');
        let body = String::from_utf8_lossy(&resp.body);
        content.extend(body.chars().take(HTTP_REQUEST_CHARS));
        if body.chars().nth(HTTP_REQUEST_CHARS).is_some() || resp.truncated {
            content.push_str("\n[truncated]");
        }
        ToolOutcome {
            content,
            is_error: resp.status >= 400,
            outside: true,
        }
    }

    /// `${NAME}` becomes the placeholder of secret NAME when this group may use it; anything
    /// else is left as written.
    fn expand_secrets(&self, group: &GroupId, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => match self.egress.placeholder(group, &after[..end]) {
                    Some(p) => {
                        out.push_str(&p);
                        rest = &after[end + 1..];
                    }
                    None => {
                        out.push_str("${");
                        rest = after;
                    }
                },
                None => {
                    out.push_str("${");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}
