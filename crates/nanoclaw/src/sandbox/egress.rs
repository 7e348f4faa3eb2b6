//! The egress proxies of this process: one per group, each listening on its own Unix socket in
//! the data dir's `run/` directory, started the first time the group needs it. The socket (and
//! only the socket) is mounted into the group's sandboxes, where the init's relay forwards to
//! it; the proxy knows the group from which socket a request arrives on.
//!
//! This module also turns the opened secrets into what each part may see: credentials for the
//! proxies, placeholders for a group's sandbox environment, and the redactor for tool output.
//! Secret values stay in this process's memory.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use nanoclaw_core::GroupId;
use nanoclaw_core::secret::Replacer;
use nanoclaw_egress::proxy::{GroupProxy, Interception, Recorder};
use nanoclaw_egress::tls::{Authority, upstream_config};
use nanoclaw_egress::{Credential, Credentials, HeaderInjection, Rule};

use crate::config::Config;
use crate::config::home::Home;
use crate::store::secrets::OpenSecret;

/// What a group's sandbox gets for the network: the proxy socket, the trust directory, and
/// the placeholders of the secrets it may use.
pub struct SandboxNet {
    pub proxy_socket: PathBuf,
    pub trust_dir: PathBuf,
    pub env: Vec<(String, String)>,
    proxy: Arc<GroupProxy>,
}

impl SandboxNet {
    /// How many requests the group's proxy has let through so far.
    pub fn requests_passed(&self) -> u64 {
        self.proxy.requests_passed()
    }

    /// Open a tool call on the group's proxy: only while it is open does the proxy serve
    /// connections, each recorded as the call's (`tag`) and decided by its `gate`.
    pub fn open_call(
        &self,
        tag: String,
        gate: Option<Arc<dyn nanoclaw_egress::gate::EgressGate>>,
    ) -> nanoclaw_egress::proxy::ProxyCall {
        self.proxy.open_call(tag, gate)
    }
}

/// What the opened secrets give each part, swapped whole when the secrets change.
struct SecretState {
    credentials: Vec<Credential>,
    /// Which groups may use each secret, by name.
    grants: Vec<(String, Vec<GroupId>)>,
    /// Secret values to `[redacted secret NAME]`, for everything headed to the model.
    redactor: Arc<Replacer>,
    /// Secret values and placeholders to `[withheld secret NAME]`, for replies.
    reply_guard: Arc<Replacer>,
}

impl SecretState {
    fn of(secrets: &[OpenSecret]) -> anyhow::Result<SecretState> {
        let mut credentials = Vec::new();
        let mut grants = Vec::new();
        for s in secrets {
            credentials.push(credential(s)?);
            grants.push((s.meta.name.clone(), s.meta.groups.clone()));
        }
        Ok(SecretState {
            credentials,
            grants,
            redactor: Arc::new(redactor(secrets)),
            reply_guard: Arc::new(reply_guard(secrets)),
        })
    }

    /// Names of the secrets `group` may use.
    fn granted(&self, group: &GroupId) -> Vec<String> {
        self.grants
            .iter()
            .filter(|(_, groups)| groups.contains(group))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

pub struct Egress {
    dir: PathBuf,
    /// The allowlists come from here; [`Egress::replace_config`] swaps it. A std RwLock: held
    /// only to clone or swap the Arc.
    config: std::sync::RwLock<Arc<Config>>,
    /// The secrets in force; [`Egress::replace_secrets`] swaps them. A std RwLock: held only
    /// to clone or swap the Arc.
    secrets: std::sync::RwLock<Arc<SecretState>>,
    interception: Interception,
    /// The roots the host's own web tools trust: the upstream roots plus the local CA.
    tool_tls: Arc<rustls::ClientConfig>,
    trust_dir: PathBuf,
    /// Where every egress record goes besides the log (the audit log).
    recorder: Option<Recorder>,
    /// Proxies already running, and their sockets. A std Mutex: nothing async happens under
    /// it.
    running: Mutex<HashMap<String, RunningProxy>>,
}

/// A proxy serving a group's sandboxes, or one MCP server's in a group.
struct RunningProxy {
    group: GroupId,
    /// The MCP server it serves, if it is one's.
    server: Option<String>,
    path: PathBuf,
    proxy: Arc<GroupProxy>,
}

impl Egress {
    /// Set up from the config and the opened secrets: the CA (made if missing), the trust
    /// directory for sandboxes, and the upstream TLS roots.
    pub fn new(
        home: &Home,
        config: Arc<Config>,
        secrets: &[OpenSecret],
        recorder: Option<Recorder>,
    ) -> anyhow::Result<Egress> {
        let (ca_pem, ca_key) = home.ca()?;
        let trust_dir = home.trust_dir(&ca_pem)?;
        let mut extra = Vec::new();
        for path in &config.extra_roots {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading egress.extra_roots file {}", path.display()))?;
            nanoclaw_egress::tls::pem_certificates(&pem)
                .with_context(|| format!("egress.extra_roots file {}", path.display()))?;
            extra.push(pem);
        }
        let upstream = upstream_config(&extra).context("setting up upstream TLS roots")?;
        extra.push(ca_pem.into_bytes());
        let tool_tls = upstream_config(&extra).context("setting up the web tools' TLS roots")?;
        let authority = Authority::load(&ca_key).context("loading the local CA")?;
        Ok(Egress {
            dir: home.dir.join("run"),
            config: std::sync::RwLock::new(config),
            secrets: std::sync::RwLock::new(Arc::new(SecretState::of(secrets)?)),
            interception: Interception {
                authority: Arc::new(authority),
                upstream,
            },
            tool_tls,
            trust_dir,
            recorder,
            running: Mutex::new(HashMap::new()),
        })
    }

    fn state(&self) -> Arc<SecretState> {
        Arc::clone(&self.secrets.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Put `secrets` in force: new requests of every group's proxy see only these, and every
    /// connection that could carry one of the old ones is closed; new sandboxes get the new
    /// placeholders. A secret that fails its checks changes nothing.
    pub fn replace_secrets(&self, secrets: &[OpenSecret]) -> anyhow::Result<()> {
        let state = Arc::new(SecretState::of(secrets)?);
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&state);
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let config = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for r in running.values() {
            let mut granted = state.granted(&r.group);
            if let Some(server) = &r.server {
                let named = config
                    .mcp
                    .get(server)
                    .map(|s| s.secrets.clone())
                    .unwrap_or_default();
                granted.retain(|name| named.contains(name));
            }
            r.proxy
                .replace_credentials(Credentials::new(state.credentials.clone(), &granted));
        }
        Ok(())
    }

    /// Put a new config's allowlists in force: every running proxy's, and every proxy started
    /// from now on.
    pub fn replace_config(&self, config: Arc<Config>) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for r in running.values() {
            let allow = match &r.server {
                None => config.egress_for(&r.group),
                // A server no longer configured reaches nothing.
                Some(server) => config
                    .mcp
                    .get(server)
                    .map(|s| s.egress.clone())
                    .unwrap_or_default(),
            };
            r.proxy.replace_policy(allow);
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The placeholder of secret `name`, if `group` may use it.
    pub fn placeholder(&self, group: &GroupId, name: &str) -> Option<String> {
        let state = self.state();
        let granted = state.granted(group);
        state
            .credentials
            .iter()
            .find(|c| c.name == name && granted.contains(&c.name))
            .map(|c| c.placeholder.clone())
    }

    /// Replaces secret values in text headed to the model or a log.
    pub fn redactor(&self) -> Arc<Replacer> {
        Arc::clone(&self.state().redactor)
    }

    /// Withholds secret values and placeholders from a reply.
    pub fn reply_guard(&self) -> Arc<Replacer> {
        Arc::clone(&self.state().reply_guard)
    }

    /// TLS roots for the host's web tools, which reach the web only through a group's proxy.
    pub fn tool_tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.tool_tls
    }

    /// The group's network for its sandbox, starting its proxy if needed. Needs a tokio
    /// runtime.
    pub fn for_group(&self, group: &GroupId) -> anyhow::Result<SandboxNet> {
        let state = self.state();
        let granted = state.granted(group);
        let env = state
            .credentials
            .iter()
            .filter(|c| granted.contains(&c.name))
            .map(|c| (c.name.clone(), c.placeholder.clone()))
            .collect();
        let allow = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .egress_for(group);
        let (proxy_socket, proxy) = self.proxy_for(group, None, allow, &state, granted)?;
        Ok(SandboxNet {
            proxy_socket,
            trust_dir: self.trust_dir.clone(),
            env,
            proxy,
        })
    }

    /// The network of one MCP server's sandbox in `group`: a proxy of its own, allowing only
    /// the server's hosts, holding only the secrets the server names that the group may use.
    /// It serves the server's connections only while one of its tool calls is open.
    pub fn for_server(
        &self,
        group: &GroupId,
        server: &crate::config::mcp::McpServer,
    ) -> anyhow::Result<SandboxNet> {
        let state = self.state();
        let granted: Vec<String> = state
            .granted(group)
            .into_iter()
            .filter(|name| server.secrets.contains(name))
            .collect();
        let env = state
            .credentials
            .iter()
            .filter(|c| granted.contains(&c.name))
            .map(|c| (c.name.clone(), c.placeholder.clone()))
            .collect();
        let (proxy_socket, proxy) = self.proxy_for(
            group,
            Some(&server.name),
            server.egress.clone(),
            &state,
            granted,
        )?;
        Ok(SandboxNet {
            proxy_socket,
            trust_dir: self.trust_dir.clone(),
            env,
            proxy,
        })
    }

    /// The proxy of `group`'s sandboxes, or of MCP `server`'s in the group, started if needed.
    fn proxy_for(
        &self,
        group: &GroupId,
        server: Option<&str>,
        allow: nanoclaw_egress::Policy,
        state: &SecretState,
        granted: Vec<String>,
    ) -> anyhow::Result<(PathBuf, Arc<GroupProxy>)> {
        // Server names cannot hold "--", so no server's key is a group's.
        let key = match server {
            None => group.to_string(),
            Some(server) => format!("{group}--mcp-{server}"),
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.get(&key) {
            return Ok((r.path.clone(), Arc::clone(&r.proxy)));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.dir.join(format!("egress-{key}.sock"));
        let api = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .api_listen;
        let proxy = Arc::new(
            GroupProxy::new(
                group.to_string(),
                allow,
                Credentials::new(state.credentials.clone(), &granted),
                Some(self.interception.clone()),
                self.recorder.clone(),
            )
            .never_reaching(vec![api]),
        );
        nanoclaw_egress::proxy::spawn(&path, Arc::clone(&proxy))
            .with_context(|| format!("starting the egress proxy on {}", path.display()))?;
        running.insert(
            key,
            RunningProxy {
                group: group.clone(),
                server: server.map(str::to_owned),
                path: path.clone(),
                proxy: Arc::clone(&proxy),
            },
        );
        Ok((path, proxy))
    }
}

/// Secret values, and the encodings of them a script reaches for first, to
/// `[redacted secret NAME]`.
pub fn redactor(secrets: &[OpenSecret]) -> Replacer {
    Replacer::new(secrets.iter().flat_map(|s| {
        let shown = format!("[redacted secret {}]", s.meta.name).into_bytes();
        let value = s.value.as_bytes();
        std::iter::once(value.to_vec())
            .chain(nanoclaw_core::secret::encodings(value))
            .map(move |form| (form, shown.clone()))
    }))
}

/// How a reply shows a secret value or placeholder it was not allowed to carry.
const WITHHELD: &str = "[withheld secret ";

/// The secret's name in a replacement the reply guard made (`[withheld secret NAME]`).
pub fn withheld_name(shown: &[u8]) -> String {
    let shown = String::from_utf8_lossy(shown);
    shown
        .strip_prefix(WITHHELD)
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(&shown)
        .to_owned()
}

/// Secret values and placeholders to `[withheld secret NAME]`.
fn reply_guard(secrets: &[OpenSecret]) -> Replacer {
    Replacer::new(secrets.iter().flat_map(|s| {
        let shown = format!("{WITHHELD}{}]", s.meta.name).into_bytes();
        let (value, placeholder) = (s.value.as_bytes(), s.meta.placeholder.as_bytes());
        std::iter::once(value.to_vec())
            .chain(nanoclaw_core::secret::encodings(value))
            .chain([placeholder.to_vec(), placeholder.to_ascii_lowercase()])
            .map(move |form| (form, shown.clone()))
    }))
}

/// Egress records into the audit log.
pub fn audit_recorder(audit: Arc<crate::audit::Audit>) -> Recorder {
    use nanoclaw_egress::proxy::Event;
    Arc::new(move |event: &Event<'_>| match event {
        Event::Request(r) => audit.record(
            crate::audit::EventKind::Egress,
            Some(r.group),
            serde_json::json!({
                "call": r.call.map(|c| c.tag.as_str()),
                "method": r.method, "host": r.host, "path": r.path, "status": r.status,
                "bytes_out": r.bytes_out, "bytes_in": r.bytes_in, "secrets": r.secrets,
                "decision": r.decision, "reason": r.reason.map(|x| x.to_string()),
            }),
        ),
        Event::CallSummary(group, s) => {
            let kinds: Vec<_> = s
                .coalesced
                .iter()
                .map(|((decision, method, host), k)| {
                    serde_json::json!({"decision": decision, "method": method, "host": host,
                        "count": k.count, "samples": k.samples})
                })
                .collect();
            audit.record(
 crate::audit::EventKind::EgressSummary,
                Some(group),
                serde_json::json!({
                    "call": s.call, "requests": s.requests, "in_full": nanoclaw_egress::calls::RECORDS_IN_FULL,
                    "exhausted": s.exhausted, "coalesced": kinds,
                }),
            );
        }
    })
}

/// A stored secret as the proxy holds it. Hosts and headers were checked by `secret set`;
/// a file edited by hand is checked again here.
fn credential(s: &OpenSecret) -> anyhow::Result<Credential> {
    let m = &s.meta;
    // The same check `secret set` makes: a hand-edited file gets no further than it would.
    m.binding()
        .check()
        .map_err(|e| anyhow::anyhow!("secret {}: {e}", m.name))?;
    let hosts = m
        .hosts
        .iter()
        .map(|h| Rule::parse(h, None, false).map(|r| r.pattern))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("secret {}: bad host", m.name))?;
    let header = match &m.header {
        None => None,
        Some(h) => Some(HeaderInjection {
            name: h
                .parse()
                .with_context(|| format!("secret {}: bad header name {h:?}", m.name))?,
            format: m.format.clone().unwrap_or_else(|| "{}".into()),
        }),
    };
    Ok(Credential {
        name: m.name.clone(),
        value: s.value.clone(),
        placeholder: m.placeholder.clone(),
        hosts,
        header,
        in_query: m.in_query,
        in_body: m.in_body,
    })
}
