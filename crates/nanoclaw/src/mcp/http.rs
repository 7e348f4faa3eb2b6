//! The streamable HTTP client of a remote MCP server: rmcp's transport drives the protocol,
//! this carries each of its HTTP requests into the server's egress proxy (the same proxy kind a
//! local server's sandbox gets: the server's hosts only, its secrets injected toward their
//! bound hosts, every request recorded), one connection per request, as the web tools do.
//!
//! It must never open a connection of its own around the proxy, and never hold a secret: what
//! reaches the server's host carrying one was put there by the proxy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Error as SseError, Sse, SseStream};

use crate::sandbox::egress::SandboxNet;
use crate::sandbox::web;

const SESSION_ID: &str = "mcp-session-id";
const LAST_EVENT_ID: &str = "last-event-id";
/// The most a response may carry (a JSON body, or all the events of one stream).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of an error response quoted in the error.
const ERROR_HEAD: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Web(#[from] web::WebError),
    #[error("bad request to the server: {0}")]
    Request(String),
}

/// A remote server's client in one group: its proxy and the TLS trust of its intercepted hosts.
#[derive(Clone)]
pub struct ProxiedClient {
    pub server: String,
    pub socket: PathBuf,
    pub tls: Arc<rustls::ClientConfig>,
    pub net: Arc<SandboxNet>,
}

impl ProxiedClient {
    /// One request through the proxy, served as the server's own (the proxy's allowlist and
    /// secret rules alone decide it: the tool call was judged before it reached the server).
    /// The returned lease keeps the proxy serving it while the body streams.
    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, Lease), StreamableHttpError<HttpError>>
    {
        let lease = Lease(Arc::new(
            self.net.open_call(format!("mcp {}", self.server), None),
        ));
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| client(HttpError::Request(e.to_string())))?;
        let response = web::exchange(&self.socket, &self.tls, request)
            .await
            .map_err(|e| client(e.into()))?;
        Ok((response, lease))
    }
}

/// An open call on the server's proxy, held by a response until its body is read.
#[derive(Clone)]
struct Lease(#[allow(dead_code)] Arc<nanoclaw_egress::proxy::ProxyCall>);

fn client(e: HttpError) -> StreamableHttpError<HttpError> {
    StreamableHttpError::Client(e)
}

/// The headers every request carries: rmcp's (protocol version, session), then ours.
fn headers(
    session: Option<&str>,
    auth: Option<String>,
    custom: HashMap<HeaderName, HeaderValue>,
    accept: &'static str,
) -> Result<Vec<(HeaderName, HeaderValue)>, StreamableHttpError<HttpError>> {
    let bad = |what: &str| client(HttpError::Request(format!("bad header value for {what}")));
    let mut out: Vec<(HeaderName, HeaderValue)> = custom.into_iter().collect();
    out.push((hyper::header::ACCEPT, HeaderValue::from_static(accept)));
    if let Some(session) = session {
        out.push((
            HeaderName::from_static(SESSION_ID),
            HeaderValue::from_str(session).map_err(|_| bad(SESSION_ID))?,
        ));
    }
    if let Some(token) = auth {
        out.push((
            hyper::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| bad("authorization"))?,
        ));
    }
    Ok(out)
}

fn content_type(response: &hyper::Response<hyper::body::Incoming>) -> Option<String> {
    response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
}

/// The body as a stream of chunks, cut off with an error past [`MAX_RESPONSE_BYTES`]; the
/// lease lives as long as the stream.
fn capped(
    body: hyper::body::Incoming,
    lease: Lease,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(
        (body, 0usize, lease, false),
        |(mut body, seen, lease, done)| async move {
            if done {
                return None;
            }
            loop {
                match body.frame().await? {
                    Err(e) => {
                        return Some((Err(std::io::Error::other(e)), (body, seen, lease, true)));
                    }
                    Ok(frame) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        let seen = seen + data.len();
                        if seen > MAX_RESPONSE_BYTES {
                            let e = std::io::Error::other(format!(
                                "the server's response passed {MAX_RESPONSE_BYTES} bytes"
                            ));
                            return Some((Err(e), (body, seen, lease, true)));
                        }
                        return Some((Ok(data), (body, seen, lease, false)));
                    }
                }
            }
        },
    )
}

/// A whole body, within the cap.
async fn read_all(
    body: hyper::body::Incoming,
    lease: Lease,
) -> Result<Vec<u8>, StreamableHttpError<HttpError>> {
    let mut out = Vec::new();
    let mut chunks = std::pin::pin!(capped(body, lease));
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A refused or failed request, as rmcp's error (the proxy's refusal text included).
async fn failure(
    response: hyper::Response<hyper::body::Incoming>,
    lease: Lease,
) -> StreamableHttpError<HttpError> {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = response
            .headers()
            .get(hyper::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        return StreamableHttpError::AuthRequired(AuthRequiredError::new(challenge));
    }
    let body = read_all(response.into_body(), lease)
        .await
        .unwrap_or_default();
    let head: String = String::from_utf8_lossy(&body)
        .chars()
        .take(ERROR_HEAD)
        .collect();
    StreamableHttpError::UnexpectedServerResponse(
        format!("HTTP {status}: {}", crate::display::one_line(head.trim())).into(),
    )
}

fn events(body: hyper::body::Incoming, lease: Lease) -> BoxStream<'static, Result<Sse, SseError>> {
    SseStream::from_bytes_stream(capped(body, lease)).boxed()
}

impl StreamableHttpClient for ProxiedClient {
    type Error = HttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let body = serde_json::to_vec(&message)?;
        let mut headers = headers(
            session_id.as_deref(),
            auth_header,
            custom_headers,
            "application/json, text/event-stream",
        )?;
        headers.push((
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        let (response, lease) = self
            .send(Method::POST, &uri, headers, Bytes::from(body))
            .await?;
        let status = response.status();
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            return Err(failure(response, lease).await);
        }
        let session = response
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match content_type(&response) {
            Some(t) if t.starts_with("text/event-stream") => Ok(StreamableHttpPostResponse::Sse(
                events(response.into_body(), lease),
                session,
            )),
            Some(t) if t.starts_with("application/json") => {
                let body = read_all(response.into_body(), lease).await?;
                let message: ServerJsonRpcMessage = serde_json::from_slice(&body)?;
                Ok(StreamableHttpPostResponse::Json(message, session))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        let headers = headers(Some(&session_id), auth_header, custom_headers, "*/*")?;
        let (response, lease) = self
            .send(Method::DELETE, &uri, headers, Bytes::new())
            .await?;
        match response.status() {
            StatusCode::METHOD_NOT_ALLOWED => {
                Err(StreamableHttpError::ServerDoesNotSupportDeleteSession)
            }
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(failure(response, lease).await),
        }
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let mut headers = headers(
            session_id.as_deref(),
            auth_header,
            custom_headers,
            "text/event-stream",
        )?;
        if let Some(id) = last_event_id {
            headers.push((
                HeaderName::from_static(LAST_EVENT_ID),
                HeaderValue::from_str(&id)
                    .map_err(|_| client(HttpError::Request("bad last event id".into())))?,
            ));
        }
        let (response, lease) = self.send(Method::GET, &uri, headers, Bytes::new()).await?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if status == StatusCode::NOT_FOUND && session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        if !status.is_success() {
            return Err(failure(response, lease).await);
        }
        match content_type(&response) {
            Some(t) if t.starts_with("text/event-stream") => {
                Ok(events(response.into_body(), lease))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }
}
