//! The client behind the `web_fetch` and `http_request` tools. It has no network path of its
//! own: every request goes into the group's egress proxy socket, exactly as a program in the
//! group's sandbox would send it, so the same allowlist, address checks, secret handling and
//! record apply. Redirects are followed one hop at a time, each hop through the proxy.
//!
//! Responses are untrusted: bodies are size-capped and only ever treated as text.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;
/// Time allowed for one request, start to end of the body, besides any time the proxy held it
/// for a human's approval.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("bad URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("bad header {0:?}")]
    BadHeader(String),
    #[error("the egress proxy refused {url}: {message}")]
    Refused { url: String, message: String },
    #[error("{url}: {error}")]
    Failed { url: String, error: String },
    #[error("{url}: timed out after {REQUEST_TIMEOUT:?}")]
    TimedOut { url: String },
    #[error("more than {MAX_REDIRECTS} redirects, the last to {0}")]
    TooManyRedirects(String),
}

pub struct WebRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct WebResponse {
    pub url: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes beyond the cap that were not read.
    pub truncated: bool,
}

impl WebResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Send `req` through the proxy at `socket`, following redirects when `follow` (GET and HEAD
/// only; other methods return the 3xx as is). `max_body` caps the bytes read. `held_for` says
/// how long, in all, the call's requests have waited for approvers (it grows while one
/// waits): that time does not count against a request's timeout.
pub async fn send(
    socket: &Path,
    tls: &Arc<rustls::ClientConfig>,
    mut req: WebRequest,
    follow: bool,
    max_body: usize,
    held_for: &(dyn Fn() -> Duration + Sync),
) -> Result<WebResponse, WebError> {
    for _ in 0..=MAX_REDIRECTS {
        let url = req.url.clone();
        let resp = within_time(once(socket, tls, &req, max_body), held_for)
            .await
            .ok_or_else(|| WebError::TimedOut { url: url.clone() })??;
        let redirect = matches!(resp.status, 301 | 302 | 303 | 307 | 308);
        let followable = follow && (req.method == Method::GET || req.method == Method::HEAD);
        match resp.header("location") {
            Some(location) if redirect && followable => {
                req.url = resolve(&url, location)?;
                // A redirect elsewhere drops what was meant for the first host.
                req.headers.retain(|(k, _)| {
                    !k.eq_ignore_ascii_case("authorization") && !k.eq_ignore_ascii_case("cookie")
                });
            }
            _ => return Ok(resp),
        }
    }
    Err(WebError::TooManyRedirects(req.url))
}

/// `work`, unless it takes longer than [`REQUEST_TIMEOUT`] plus the time approvers kept it
/// waiting meanwhile.
async fn within_time<T>(
    work: impl std::future::Future<Output = T>,
    held_for: &(dyn Fn() -> Duration + Sync),
) -> Option<T> {
    let start = tokio::time::Instant::now();
    let held_before = held_for();
    let mut work = std::pin::pin!(work);
    loop {
        let held = held_for().saturating_sub(held_before);
        match tokio::time::timeout_at(start + REQUEST_TIMEOUT + held, &mut work).await {
            Ok(done) => return Some(done),
            // An approval kept it waiting past the deadline just taken: a later one stands.
            Err(_) if held_for().saturating_sub(held_before) > held => {}
            Err(_) => return None,
        }
    }
}

/// Whether `url` is one the web tools can send.
pub fn check_url(url: &str) -> Result<(), WebError> {
    parse(url).map(drop)
}

fn parse(url: &str) -> Result<(Uri, String, String, u16, bool), WebError> {
    let bad = |why: &str| WebError::BadUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("only http:// and https:// URLs")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not allowed; use a secret"));
    }
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    Ok((uri, host, path, port, https))
}

async fn once(
    socket: &Path,
    tls: &Arc<rustls::ClientConfig>,
    req: &WebRequest,
    max_body: usize,
) -> Result<WebResponse, WebError> {
    let url = req.url.clone();
    let (uri, ..) = parse(&url)?;
    let fail = |e: &dyn std::fmt::Display| WebError::Failed {
        url: url.clone(),
        error: e.to_string(),
    };
    let mut builder = Request::builder()
        .method(req.method.clone())
        .uri(uri.clone())
        .header(hyper::header::USER_AGENT, "nanoclaw-web/0.1");
    for (k, v) in &req.headers {
        let name: hyper::header::HeaderName =
            k.parse().map_err(|_| WebError::BadHeader(k.clone()))?;
        let value: hyper::header::HeaderValue =
            v.parse().map_err(|_| WebError::BadHeader(k.clone()))?;
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| fail(&e))?;
    let response = exchange(socket, tls, request).await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let (body, truncated) = read_capped(response.into_body(), max_body).await;
    Ok(WebResponse {
        url,
        status,
        headers,
        body,
        truncated,
    })
}

/// Send one request (its URI absolute) through the proxy at `socket`, on a connection of its
/// own: `http://` in absolute form, `https://` through a CONNECT tunnel and TLS verified
/// against `tls` (which trusts the proxy's CA, for hosts it intercepts). The response's body is
/// left to the caller to read, as it streams.
pub async fn exchange(
    socket: &Path,
    tls: &Arc<rustls::ClientConfig>,
    mut request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, WebError> {
    let url = request.uri().to_string();
    let (uri, host, path, port, https) = parse(&url)?;
    let fail = |e: &dyn std::fmt::Display| WebError::Failed {
        url: url.clone(),
        error: e.to_string(),
    };
    let unix = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| fail(&format!("cannot reach the egress proxy: {e}")))?;
    let authority = if (https && port == 443) || (!https && port == 80) {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let host_header = hyper::header::HeaderValue::from_str(&authority).map_err(|e| fail(&e))?;
    request
        .headers_mut()
        .insert(hyper::header::HOST, host_header);
    if !https {
        *request.uri_mut() = uri;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(unix))
            .await
            .map_err(|e| fail(&e))?;
        tokio::spawn(conn);
        return sender.send_request(request).await.map_err(|e| fail(&e));
    }
    *request.uri_mut() = path.parse().map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(unix))
        .await
        .map_err(|e| fail(&e))?;
    let conn = tokio::spawn(conn.with_upgrades());
    let connect = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("{host}:{port}"))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| fail(&e))?;
    let answer = sender.send_request(connect).await.map_err(|e| fail(&e))?;
    if !answer.status().is_success() {
        let body = read_capped(answer.into_body(), 4096).await.0;
        return Err(WebError::Refused {
            url,
            message: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    drop(sender);
    let upgraded = hyper::upgrade::on(answer).await.map_err(|e| fail(&e))?;
    drop(conn);
    let name = rustls::pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|e| fail(&e))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, TokioIo::new(upgraded))
        .await
        .map_err(|e| fail(&format!("TLS: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(conn);
    sender.send_request(request).await.map_err(|e| fail(&e))
}

/// Read at most `cap` bytes of a body; the rest is left unread.
async fn read_capped(mut body: hyper::body::Incoming, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = cap.saturating_sub(out.len());
            if data.len() > room {
                out.extend_from_slice(&data[..room]);
                return (out, true);
            }
            out.extend_from_slice(&data);
        }
    }
    (out, false)
}

/// The absolute URL a `Location` names, relative to `base`.
pub fn resolve(base: &str, location: &str) -> Result<String, WebError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let (uri, ..) = parse(base)?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let path = uri.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok(format!("{scheme}://{authority}{dir}{location}"))
}

/// Readable text from HTML: scripts, styles and tags dropped, block ends as line breaks, the
/// common entities decoded, blank runs collapsed. Not a browser; enough for a model to read.
pub fn readable_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() / 2);
    let mut i = 0;
    while i < html.len() {
        let Some(rel) = html[i..].find('<') else {
            out.push_str(&decode_entities(&html[i..]));
            break;
        };
        out.push_str(&decode_entities(&html[i..i + rel]));
        i += rel;
        if lower[i..].starts_with("<!--") {
            i = lower[i + 4..]
                .find("-->")
                .map_or(html.len(), |p| i + 4 + p + 3);
            continue;
        }
        let tag_end = match html[i..].find('>') {
            Some(e) => i + e + 1,
            None => break,
        };
        let tag = &lower[i + 1..tag_end - 1];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        i = tag_end;
        if !tag.starts_with('/')
            && matches!(name.as_str(), "script" | "style" | "noscript" | "template")
        {
            let close = format!("</{name}");
            i = lower[i..].find(&close).map_or(html.len(), |p| {
                let at = i + p;
                lower[at..].find('>').map_or(html.len(), |e| at + e + 1)
            });
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p"
                | "div"
                | "li"
                | "tr"
                | "h1"
                | "h2"
                | "h3"
                | "h4"
                | "h5"
                | "h6"
                | "title"
                | "section"
                | "article"
                | "header"
                | "footer"
                | "pre"
                | "table"
                | "ul"
                | "ol"
        ) {
            out.push('\n');
        }
    }
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        text.push_str(&line);
        text.push('\n');
    }
    text.trim().to_owned()
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // An entity is short: look for its `;` within 12 bytes (cut on a character boundary;
        // the text is anyone's).
        let window = &rest[..rest.floor_char_boundary(12)];
        let Some(semi) = window.find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn time_waiting_for_approvers_does_not_count_against_a_request() {
        use tokio::time::{Instant, sleep};
        let start = Instant::now();
        // Held by an approval from 10 s to 50 s; done at 55 s.
        let held = || {
            start
                .elapsed()
                .saturating_sub(Duration::from_secs(10))
                .min(Duration::from_secs(40))
        };
        let slow = async {
            sleep(Duration::from_secs(55)).await;
            7
        };
        assert_eq!(within_time(slow, &held).await, Some(7));
        // Without a hold, 31 s is too long.
        let none = || Duration::ZERO;
        let slow = sleep(Duration::from_secs(31));
        assert_eq!(within_time(slow, &none).await, None);
    }

    use super::*;

    #[test]
    fn html_becomes_readable_text() {
        let html = "<html><head><title>T &amp; U</title><style>p{}</style><script>alert('x<y')</script></head>\
<body><h1>Head</h1><p>One&nbsp;two &lt;3&gt; &#65;&#x42;</p><!-- hidden --><ul><li>a</li><li>b</li></ul></body></html>";
        let text = readable_text(html);
        assert_eq!(text, "T & U\n\nHead\n\nOne two <3> AB\n\na\n\nb");
        assert!(!text.contains("alert") && !text.contains("hidden"));
    }

    #[test]
    fn broken_html_never_panics() {
        for html in [
            "<",
            "<p",
            "&",
            "&#xZZ;",
            "<script>",
            "<!--",
            "a</",
            "<é>ü&#1114112;",
            "&日本語です",
            "&abcdefghijé;",
            "&#x;",
        ] {
            let _ = readable_text(html);
        }
        // Many strings of markup pieces and multi-byte characters, `&` anywhere among them.
        let pieces = [
            "&", "é", "日", ";", "<", ">", "a", "#", "x", "<!--", "-->", "p", "<script>", "😀",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            let mut html = String::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                html.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            state = state.wrapping_add(1);
            let _ = readable_text(&html);
        }
    }

    #[test]
    fn redirects_resolve_against_the_base() {
        let base = "https://a.example/dir/page?q=1";
        assert_eq!(
            resolve(base, "https://b.example/x").unwrap(),
            "https://b.example/x"
        );
        assert_eq!(resolve(base, "/root").unwrap(), "https://a.example/root");
        assert_eq!(resolve(base, "next").unwrap(), "https://a.example/dir/next");
        assert_eq!(
            resolve(base, "//c.example/y").unwrap(),
            "https://c.example/y"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse("ftp://x/").is_err());
        assert!(parse("https://user:pw@x/").is_err());
        assert!(parse("not a url").is_err());
        let (_, host, path, port, https) = parse("https://x.example:8443/p?q").unwrap();
        assert_eq!(
            (host.as_str(), path.as_str(), port, https),
            ("x.example", "/p?q", 8443, true)
        );
    }
}
