//! MCP servers, as transport: each configured server runs, for each group it serves, as one
//! long-lived command in a sandbox of that group (the same backend and init as every command:
//! seccomp, Landlock, limits, the workspace, no secrets), its network only through a proxy of
//! its own that allows the server's hosts alone and serves it only while one of its calls is
//! open. The `rmcp` client speaks to it over the sandboxed command's stdio. A remote server is
//! spoken to over streamable HTTP ([`http`]) through the same kind of proxy of its own.
//!
//! This module starts servers, restarts them with backoff when they die, lists and pins their
//! tools ([`pins`]) and carries calls. It decides nothing: a call reaches it only from
//! `Tools::call`, after the gate, and what it returns is outside content.

pub mod http;
pub mod pins;
pub mod schema;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoclaw_core::GroupId;
use nanoclaw_sandbox::{Backend, ExecRequest, Limits, Program, Stream};
use rmcp::model::{CallToolRequestParams, Tool};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Value, json};

use crate::audit::{Audit, EventKind};
use crate::config::mcp::{McpServer, McpTransport};
use crate::sandbox::egress::SandboxNet;

/// How long a server may take to start and answer `initialize` and `tools/list`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server whose call ran out of time has to answer a ping before it is taken for
/// hung and stopped (to be started again on the next call).
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait before starting a server again after it died, doubled each time up to the most.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MOST_BACKOFF: Duration = Duration::from_secs(60);
/// Characters of a result given to the model; the rest is cut with a note.
const MAX_RESULT_CHARS: usize = 64 * 1024;
/// The longest a wire name may be (the providers' limit on tool names).
const MAX_WIRE_NAME: usize = 64;

/// Where a server runs in a group: the workspace, the group's limits, the server's own network,
/// and the TLS trust of the hosts its proxy intercepts (for a remote server's client).
pub struct Place {
    pub workspace: PathBuf,
    pub limits: Limits,
    pub net: SandboxNet,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Makes a server's [`Place`] in a group. The caller (the tools, which hold the egress)
/// provides it.
pub type Starter<'a> = dyn Fn(&McpServer) -> anyhow::Result<Place> + Sync + 'a;

/// One call, as the gate passed it.
pub struct Call<'a> {
    pub tool: &'a str,
    pub arguments: serde_json::Map<String, Value>,
    /// How the egress record names the call.
    pub tag: String,
    /// The policy's word on each request the server makes during the call.
    pub gate: Arc<dyn nanoclaw_egress::gate::EgressGate>,
}

/// The name a policy rule, the audit log and a person use for a server's tool.
pub fn policy_name(server: &str, tool: &str) -> String {
    format!("{server}.{tool}")
}

/// The name the model calls a server's tool by: providers take only `[A-Za-z0-9_-]`.
pub fn wire_name(server: &str, tool: &str) -> String {
    let tool: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("mcp__{}__{tool}", server.replace('-', "_"))
}

/// One tool of a server, as the model is offered it and the gate judges it.
#[derive(Clone, Debug)]
pub struct McpTool {
    pub server: String,
    /// The tool's own name, as the server knows it.
    pub tool: String,
    pub wire: String,
    pub description: String,
    pub schema: Value,
}

impl McpTool {
    pub fn policy_name(&self) -> String {
        policy_name(&self.server, &self.tool)
    }
}

/// What the client does with what a server sends unasked: a changed tool list marks the
/// server's tools to be listed (and judged against their pins) again before the next turn.
#[derive(Clone)]
struct Handler {
    changed: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientHandler for Handler {
    fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.changed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(())
    }
}

type Exec =
    tokio::task::JoinHandle<Result<nanoclaw_sandbox::ExecOutput, nanoclaw_sandbox::SandboxError>>;

/// A running server in one group.
struct Connection {
    /// The configuration it was started with: a reload that changes it stops the server.
    config: McpServer,
    service: RunningService<RoleClient, Handler>,
    /// A local server's sandboxed command; it ends when the server does (aborting it kills
    /// the sandbox). None for a remote server.
    exec: Option<Exec>,
    net: Arc<SandboxNet>,
    /// Its tools as last listed.
    tools: std::sync::Mutex<Vec<Tool>>,
    changed: Arc<std::sync::atomic::AtomicBool>,
}

impl Connection {
    fn is_up(&self) -> bool {
        !self.exec.as_ref().is_some_and(|e| e.is_finished()) && !self.service.is_transport_closed()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(exec) = &self.exec {
            exec.abort();
        }
    }
}

/// A server that could not be started, and when to try again.
struct Down {
    /// The configuration that failed: a changed one is tried at once.
    config: McpServer,
    error: String,
    retry_at: Instant,
    backoff: Duration,
}

enum Slot {
    Up(Arc<Connection>),
    Down(Down),
}

impl Slot {
    fn config(&self) -> &McpServer {
        match self {
            Slot::Up(conn) => &conn.config,
            Slot::Down(down) => &down.config,
        }
    }
}

/// What a server's tools look like to one group now.
pub struct Listed {
    /// Tools the model is offered: pinned and unchanged.
    pub tools: Vec<McpTool>,
    /// Servers that are down, with why (the turn's model is not offered their tools).
    pub down: Vec<(String, String)>,
    /// Servers whose tool list changed from its pins just now, with the new list's hash: the
    /// approvers are to be asked to trust it.
    pub changed: Vec<(String, String)>,
}

/// A call's result, for the model (outside content).
pub struct CallResult {
    pub text: String,
    pub is_error: bool,
}

/// Every server's connections, by (server, group).
pub struct Servers {
    backend: Arc<dyn Backend>,
    audit: Arc<Audit>,
    store: Arc<crate::store::Store>,
    slots: tokio::sync::Mutex<HashMap<(String, GroupId), Slot>>,
    /// The servers as the config in force has them, once a reload put one in force: a turn
    /// that began before it holds the older config, and must not start, or call, a server
    /// as that config had it.
    in_force: std::sync::RwLock<Option<std::collections::BTreeMap<String, McpServer>>>,
}

impl Servers {
    pub fn new(
        backend: Arc<dyn Backend>,
        audit: Arc<Audit>,
        store: Arc<crate::store::Store>,
    ) -> Servers {
        Servers {
            backend,
            audit,
            store,
            slots: tokio::sync::Mutex::new(HashMap::new()),
            in_force: std::sync::RwLock::new(None),
        }
    }

    /// Put a reloaded config's servers in force: from now on a server is started and called
    /// only as they say (synchronously, before the reload answers), and those running
    /// otherwise are stopped ([`Servers::retire`]).
    pub fn put_in_force(&self, configured: std::collections::BTreeMap<String, McpServer>) {
        *self.in_force.write().unwrap_or_else(|p| p.into_inner()) = Some(configured);
    }

    /// Why `server` may not serve `group` now, if a reload changed it since the caller's
    /// config was read.
    fn outdated(&self, server: &McpServer, group: &GroupId) -> Option<String> {
        let in_force = self.in_force.read().unwrap_or_else(|p| p.into_inner());
        let now = in_force.as_ref()?;
        match now.get(&server.name) {
            Some(now) if now == server => None,
            Some(now) if !now.serves(group) => Some(format!(
                "MCP server {} no longer serves group {group} (the config was reloaded)",
                server.name
            )),
            Some(_) => Some(format!(
                "MCP server {} was reconfigured by a reload; its tools are offered as configured from the next turn",
                server.name
            )),
            None => Some(format!(
                "MCP server {} was removed by a reload",
                server.name
            )),
        }
    }

    /// The group's tools of `servers` (those serving it), each server started if it is not
    /// running and not waiting out a backoff. Tools not matching their pins are left out
    /// (and reported, once, by [`pins::judge`]).
    pub async fn list(
        &self,
        servers: &[&McpServer],
        group: &GroupId,
        start: &Starter<'_>,
    ) -> Listed {
        let mut listed = Listed {
            tools: Vec::new(),
            down: Vec::new(),
            changed: Vec::new(),
        };
        for server in servers {
            match self.connection(server, group, start).await {
                Ok(conn) => {
                    let tools = conn.tools.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let judged = pins::judge(&self.store, &self.audit, &server.name, group, &tools);
                    if let Some(hash) = judged.newly_changed {
                        listed.changed.push((server.name.clone(), hash));
                    }
                    for tool in judged.offered {
                        let wire = wire_name(&server.name, &tool.name);
                        if wire.len() > MAX_WIRE_NAME {
                            tracing::warn!(server = %server.name, tool = %tool.name, "an MCP tool's name is too long to offer; left out");
                            continue;
                        }
                        listed.tools.push(McpTool {
                            server: server.name.clone(),
                            tool: tool.name.to_string(),
                            wire,
                            description: tool.description.as_deref().unwrap_or("").to_owned(),
                            schema: Value::Object((*tool.input_schema).clone()),
                        });
                    }
                }
                Err(e) => listed.down.push((server.name.clone(), e)),
            }
        }
        // Two tools whose wire names collide are both left out: a call could not say which.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in &listed.tools {
            *seen.entry(t.wire.clone()).or_default() += 1;
        }
        listed.tools.retain(|t| seen[&t.wire] == 1);
        listed
    }

    /// The running connection of `server` in `group`, started (or started again, after its
    /// backoff) if needed.
    async fn connection(
        &self,
        server: &McpServer,
        group: &GroupId,
        start: &Starter<'_>,
    ) -> Result<Arc<Connection>, String> {
        let key = (server.name.clone(), group.clone());
        let mut slots = self.slots.lock().await;
        // Under the lock: a reload may have come while it was awaited.
        if let Some(why) = self.outdated(server, group) {
            return Err(why);
        }
        let backoff = match slots.get(&key) {
            // Started with a configuration since reloaded (a call raced the reload's retiring):
            // stopped now, started as configured.
            Some(slot) if slot.config() != server => {
                if let Slot::Up(_) = slot {
                    self.stopped(server, group, "its configuration changed");
                }
                FIRST_BACKOFF
            }
            Some(Slot::Up(conn)) if conn.is_up() => {
                if conn
                    .changed
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    // The server said its tools changed: list them again (pins judge them).
                    match tokio::time::timeout(START_TIMEOUT, conn.service.list_all_tools()).await {
                        Ok(Ok(tools)) => {
                            *conn.tools.lock().unwrap_or_else(|p| p.into_inner()) = tools;
                        }
                        _ => {
                            tracing::warn!(server = %server.name, "could not list a server's changed tools; keeping the last list");
                        }
                    }
                }
                return Ok(Arc::clone(conn));
            }
            Some(Slot::Up(_)) => {
                self.audit.record(
                    EventKind::McpServer,
                    Some(group.as_str()),
                    json!({"server": server.name, "event": "crashed"}),
                );
                FIRST_BACKOFF
            }
            Some(Slot::Down(down)) if Instant::now() < down.retry_at => {
                return Err(down.error.clone());
            }
            Some(Slot::Down(down)) => (down.backoff * 2).min(MOST_BACKOFF),
            None => FIRST_BACKOFF,
        };
        match self.start(server, group, start).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                slots.insert(key, Slot::Up(Arc::clone(&conn)));
                Ok(conn)
            }
            Err(error) => {
                self.audit.record(
                    EventKind::McpServer,
                    Some(group.as_str()),
                    json!({"server": server.name, "event": "failed to start", "error": error}),
                );
                slots.insert(
                    key,
                    Slot::Down(Down {
                        config: server.clone(),
                        error: error.clone(),
                        retry_at: Instant::now() + backoff,
                        backoff,
                    }),
                );
                Err(error)
            }
        }
    }

    async fn start(
        &self,
        server: &McpServer,
        group: &GroupId,
        start: &Starter<'_>,
    ) -> Result<Connection, String> {
        let place = start(server).map_err(|e| format!("{e:#}"))?;
        let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = Handler {
            changed: Arc::clone(&changed),
        };
        let net = Arc::new(place.net);
        let (service, tools, exec) = match &server.transport {
            McpTransport::Stdio { command } => {
                let (stream, to_server, from_server) = Stream::pair();
                let req = ExecRequest {
                    workspace: place.workspace,
                    program: Program::Command(command.clone()),
                    stdin: Vec::new(),
                    limits: server_limits(place.limits),
                    proxy_socket: Some(net.proxy_socket.clone()),
                    trust_dir: Some(net.trust_dir.clone()),
                    env: net.env.clone(),
                    stream: Some(stream),
                };
                let backend = Arc::clone(&self.backend);
                let exec = tokio::spawn(async move { backend.exec(&req).await });
                match handshake(server, handler, (from_server, to_server)).await {
                    Ok((service, tools)) => (service, tools, Some(exec)),
                    Err(Handshake::TimedOut(e)) => {
                        exec.abort();
                        return Err(e);
                    }
                    Err(Handshake::Failed(e)) => return Err(self.why_down(server, exec, e).await),
                }
            }
            McpTransport::Http { url } => {
                let client = http::ProxiedClient {
                    server: server.name.clone(),
                    socket: net.proxy_socket.clone(),
                    tls: place.tls,
                    net: Arc::clone(&net),
                };
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                let transport = StreamableHttpClientTransport::with_client(client, config);
                match handshake(server, handler, transport).await {
                    Ok((service, tools)) => (service, tools, None),
                    Err(Handshake::TimedOut(e) | Handshake::Failed(e)) => {
                        return Err(format!("MCP server {}: {e}", server.name));
                    }
                }
            }
        };
        let protocol = service
            .peer_info()
            .map(|i| i.protocol_version.to_string())
            .unwrap_or_default();
        self.audit.record(
            EventKind::McpServer,
            Some(group.as_str()),
            json!({"server": server.name, "event": "started", "protocol": protocol, "tools": tools.len()}),
        );
        Ok(Connection {
            config: server.clone(),
            service,
            exec,
            net,
            tools: std::sync::Mutex::new(tools),
            changed,
        })
    }

    /// Why a server that failed its handshake is down: its own stderr, if it died.
    async fn why_down(&self, server: &McpServer, exec: Exec, error: String) -> String {
        match tokio::time::timeout(Duration::from_secs(2), exec).await {
            Ok(Ok(Ok(out))) => {
                let stderr = out.stderr.text_lossy();
                let last: Vec<&str> = stderr.lines().rev().take(3).collect();
                format!(
                    "MCP server {} ended ({}): {}",
                    server.name,
                    out.state,
                    last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )
            }
            Ok(Ok(Err(e))) => format!("MCP server {} could not run: {e}", server.name),
            _ => format!("MCP server {}: {error}", server.name),
        }
    }

    /// Call `tool` of `server` in `group` with `arguments` (validated against its schema by
    /// the caller), within the server's timeout, its network served for `gate` while it runs.
    pub async fn call(
        &self,
        server: &McpServer,
        group: &GroupId,
        call: Call<'_>,
        start: &Starter<'_>,
    ) -> CallResult {
        let Call {
            tool,
            arguments,
            tag,
            gate,
        } = call;
        let conn = match self.connection(server, group, start).await {
            Ok(conn) => conn,
            Err(e) => {
                return CallResult {
                    text: format!("{} is down: {e}", server.name),
                    is_error: true,
                };
            }
        };
        // The server's proxy serves it only while this call is open.
        let open_call = conn.net.open_call(tag, Some(gate));
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let started = Instant::now();
        let answer = tokio::time::timeout(server.timeout, conn.service.call_tool(params)).await;
        let result = match answer {
            Err(_) => {
                drop(open_call);
                self.stop_if_hung(server, group, &conn).await;
                CallResult {
                    text: format!(
                        "{} did not answer within {}s",
                        policy_name(&server.name, tool),
                        server.timeout.as_secs()
                    ),
                    is_error: true,
                }
            }
            Ok(Err(e)) => CallResult {
                text: format!("{} failed: {e}", policy_name(&server.name, tool)),
                is_error: true,
            },
            Ok(Ok(result)) => {
                let value = serde_json::to_value(&result).unwrap_or(Value::Null);
                CallResult {
                    text: render(&value),
                    is_error: value["isError"].as_bool().unwrap_or(false),
                }
            }
        };
        tracing::debug!(server = %server.name, tool, elapsed_ms = started.elapsed().as_millis() as u64, "MCP call done");
        result
    }

    /// After a call ran out of time: a server that does not answer a ping either has stopped
    /// reading and would make every later call wait out its timeout. It is stopped, to be
    /// started again by the next call.
    async fn stop_if_hung(&self, server: &McpServer, group: &GroupId, conn: &Arc<Connection>) {
        let ping = rmcp::model::ClientRequest::PingRequest(rmcp::model::PingRequest {
            method: Default::default(),
            extensions: Default::default(),
        });
        let answered = tokio::time::timeout(PING_TIMEOUT, conn.service.send_request(ping)).await;
        if matches!(answered, Ok(Ok(_))) {
            return;
        }
        let mut slots = self.slots.lock().await;
        let key = (server.name.clone(), group.clone());
        if matches!(slots.get(&key), Some(Slot::Up(c)) if Arc::ptr_eq(c, conn)) {
            slots.remove(&key);
            self.stopped(
                server,
                group,
                "it did not answer a ping after a call ran out of time",
            );
        }
    }

    /// Stop the servers a reloaded configuration no longer runs as they run: removed, no
    /// longer serving the group, or configured otherwise (command, endpoint, hosts, secrets,
    /// timeout). Each starts again, as configured now, when its group next needs it. A call
    /// already under way finishes on the server it started on.
    pub async fn retire(&self, configured: &std::collections::BTreeMap<String, McpServer>) {
        let mut slots = self.slots.lock().await;
        let keys: Vec<(String, GroupId)> = slots.keys().cloned().collect();
        for key in keys {
            let (name, group) = &key;
            let why = match configured.get(name) {
                None => "it was removed from the configuration",
                Some(now) if !now.serves(group) => "it no longer serves this group",
                Some(now) if slots.get(&key).is_some_and(|s| s.config() != now) => {
                    "its configuration changed"
                }
                Some(_) => continue,
            };
            if let Some(Slot::Up(conn)) = slots.remove(&key) {
                self.stopped(&conn.config, group, why);
            }
        }
    }

    fn stopped(&self, server: &McpServer, group: &GroupId, why: &str) {
        self.audit.record(
            EventKind::McpServer,
            Some(group.as_str()),
            json!({"server": server.name, "event": "stopped", "why": why}),
        );
    }

    /// Stop every server (the process is done).
    pub async fn shutdown(&self) {
        self.slots.lock().await.clear();
    }
}

/// Why a handshake did not complete.
enum Handshake {
    TimedOut(String),
    Failed(String),
}

/// `initialize`, then the whole tool list, within [`START_TIMEOUT`].
async fn handshake<T, E, A>(
    server: &McpServer,
    handler: Handler,
    transport: T,
) -> Result<(RunningService<RoleClient, Handler>, Vec<Tool>), Handshake>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = tokio::time::timeout(START_TIMEOUT, async {
        let service = handler
            .serve(transport)
            .await
            .map_err(|e| format!("the server did not complete the MCP handshake: {e}"))?;
        let tools = service
            .list_all_tools()
            .await
            .map_err(|e| format!("the server did not list its tools: {e}"))?;
        Ok::<_, String>((service, tools))
    })
    .await;
    match started {
        Ok(Ok(up)) => Ok(up),
        Ok(Err(e)) => Err(Handshake::Failed(e)),
        Err(_) => Err(Handshake::TimedOut(format!(
            "MCP server {} did not start within {}s",
            server.name,
            START_TIMEOUT.as_secs()
        ))),
    }
}

/// A server's limits: the group's, but for as long as it runs, with its stdout streamed
/// rather than kept, and CPU time for a long life.
fn server_limits(group: Limits) -> Limits {
    Limits {
        wall_time: Duration::from_secs(30 * 24 * 3600),
        output_bytes: usize::MAX / 2,
        cpu_time: Duration::from_secs(24 * 3600),
        ..group
    }
}

/// A tool result as text for the model: its text blocks, other blocks named, structured
/// content as JSON; cut at [`MAX_RESULT_CHARS`].
fn render(result: &Value) -> String {
    let mut out = String::new();
    for block in result["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => out.push_str(block["text"].as_str().unwrap_or("")),
            Some(other) => out.push_str(&format!("[{other} content]")),
            None => out.push_str("[content]"),
        }
        out.push('\n');
    }
    if let Some(structured) = result.get("structuredContent")
        && out.trim().is_empty()
    {
        out.push_str(&structured.to_string());
    }
    if out.chars().count() > MAX_RESULT_CHARS {
        let cut: String = out.chars().take(MAX_RESULT_CHARS).collect();
        return format!("{cut}\n[cut: the result was longer than {MAX_RESULT_CHARS} characters]");
    }
    out
}
