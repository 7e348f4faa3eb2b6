//! The composition root: build the agent (config, store, sandbox backend, secrets, policy,
//! model client, audit, egress, approvals, tools) and wire the daemon (API listener, channels,
//! scheduler) around it. Nothing here decides anything; it only connects the parts.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use nanoclaw_sandbox::Backend;

use crate::agent::{Agent, approvals, queue, tools};
use crate::audit;
use crate::channels::{api, email, telegram, webhook};
use crate::config::home::Home;
use crate::config::{Config, policy_file};
use crate::exit::UsageError;
use crate::model::ModelClient;
use crate::sandbox::{backend, egress};
use crate::scheduler;
use crate::store::{Store, secrets};

/// Every stored secret with its value, or a clear error when they cannot be opened.
pub fn open_secrets(home: &Home) -> anyhow::Result<Vec<secrets::OpenSecret>> {
    let store = secrets::Secrets::load(home)?;
    if store.is_empty() {
        return Ok(Vec::new());
    }
    store.check().map_err(|e| UsageError(format!("{e:#}")))?;
    let key = secrets::SecretsKey::locate(home, false)?;
    store.open_all(&key)
}

pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOCLAW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn runtime(multi_thread: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if multi_thread {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().context("starting the async runtime")
}

/// Load and validate the config; errors exit 2.
pub fn load_config(home: &Home) -> anyhow::Result<Config> {
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(Config::load(&home.config_path())?)
}

/// The model client, or the message that tells the user exactly what to set.
/// The API key is the secret named like the provider's variable (ANTHROPIC_API_KEY,
/// OPENAI_API_KEY); the environment variable of that name is the fallback.
pub fn model_client(
    home: &Home,
    config: &Config,
    secrets: &[secrets::OpenSecret],
) -> Result<ModelClient, String> {
    let m = &config.model;
    let name = m.provider.key_env();
    let stored = secrets.iter().find(|s| s.meta.name == name);
    if let Some(secret) = stored {
        secret
            .meta
            .may_go_to("model.base_url", &host_of_url(&m.base_url))?;
    }
    let key = stored
        .map(|s| s.value.clone())
        .or_else(|| std::env::var(name).ok())
        .filter(|k| !k.trim().is_empty());
    if key.is_none() && m.base_url == m.provider.default_base_url() {
        return Err(format!(
            "No model is configured: store your API key with `nanoclaw secret set {name} --host \
             <the API's host>` (or set the {name} environment variable), or point [model] provider \
             and base_url in {} at another server (OpenAI-compatible servers such as Ollama need \
             no key), then restart nanoclaw.",
            home.config_path().display()
        ));
    }
    // Only the host's model client speaks TLS; ring is the one crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ModelClient::new(m.clone(), key)
        .map_err(|e| format!("could not set up the model client: {e:#}"))
}

/// Everything a turn needs, for processes that run turns (run, chat, ask).
/// `long_lived` (run, chat) self-tests the sandbox and prints startup problems; `ask` reports
/// them in its one turn.
pub async fn build_agent(home: Home, long_lived: bool) -> anyhow::Result<(Agent, std::fs::File)> {
    let config = load_config(&home)?;
    let lock = home.lock_agent()?;
    let store = Store::open(&home.db_path())
        .with_context(|| format!("opening {}", home.db_path().display()))?;
    let requeued = store.recover_interrupted()?;
    if requeued > 0 {
        tracing::info!(requeued, "messages of interrupted turns are queued again");
    }
    let backend: Arc<dyn Backend> = match backend::choose(&home, &config, long_lived).await {
        Ok(b) => b,
        Err(reason) => {
            eprintln!("nanoclaw: no sandbox works, so no tool will run: {reason}");
            Arc::new(nanoclaw_sandbox::UnavailableBackend { reason })
        }
    };
    let secrets = open_secrets(&home)?;
    let policy = Arc::new(policy_file::load(&home, &vocabulary_for(&config))?);
    let model = model_client(&home, &config, &secrets);
    if let (Err(hint), true) = (&model, long_lived) {
        eprintln!("nanoclaw: {hint}");
    }
    let store = Arc::new(store);
    let audit = Arc::new(audit::Audit::open(
        &home.db_path(),
        egress::redactor(&secrets),
    )?);
    let egress = egress::Egress::new(
        &home,
        Arc::new(config.clone()),
        &secrets,
        Some(egress::audit_recorder(Arc::clone(&audit))),
    )?;
    // What configuration is in force: a change between runs shows in the audit log.
    let digest = |path: &std::path::Path| {
        std::fs::read(path).ok().map(|b| {
            nanoclaw_core::hex::encode(ring::digest::digest(&ring::digest::SHA256, &b).as_ref())
        })
    };
    audit.record(
        crate::audit::EventKind::ConfigLoaded,
        None,
        serde_json::json!({
            "config_sha256": digest(&home.config_path()),
            "policy_sha256": digest(&home.dir.join(policy_file::POLICY_FILE)),
            "secrets": secrets.iter().map(|s| &s.meta.name).collect::<Vec<_>>(),
            "process": if long_lived { "long-lived" } else { "one turn" },
        }),
    );
    let approvals = approvals::Approvals::new(
        Arc::clone(&store),
        Arc::clone(&audit),
        vec![(
            "stderr",
            Arc::new(crate::channels::approval_text::StderrPresenter)
                as Arc<dyn approvals::Presenter>,
        )],
    );
    let tools = tools::Tools::new(
        backend,
        egress,
        policy,
        approvals,
        audit,
        Arc::clone(&store),
    );
    Ok((Agent::new(home, config, store, model, tools), lock))
}

/// The value of the stored secret a channel's config names at `key`, or a usage error saying
/// how to store it.
/// The value of the secret a channel's `key` names, checked to be bound (`secret set --host`)
/// to every host in `sends_to` (config key, host) the channel sends it to: the binding holds
/// for nanoclaw's own clients as it does for the sandboxes' requests.
pub fn channel_secret<'a>(
    secrets: &'a [secrets::OpenSecret],
    key: &str,
    name: &str,
    host: &str,
    sends_to: &[(&str, &str)],
) -> anyhow::Result<&'a str> {
    let Some(secret) = secrets.iter().find(|s| s.meta.name == name) else {
        return Err(UsageError(format!(
            "{key} names {name:?}, which is not a stored secret (nanoclaw secret set {name} --host {host})"
        ))
        .into());
    };
    for (config_key, host) in sends_to {
        secret
            .meta
            .may_go_to(config_key, host)
            .map_err(UsageError)?;
    }
    Ok(&secret.value)
}

/// The host a URL setting sends to, as the HTTP client reads it (empty when it has none: then
/// no binding matches).
pub fn host_of_url(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

pub async fn daemon(home: Home) -> anyhow::Result<ExitCode> {
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let token = home.api_token()?;
    let (agent, _lock) = build_agent(home, true).await?;
    let agent = Arc::new(agent);
    let config = agent.config();
    // The channels' keys, opened once here and again on each reload.
    let built = build_channels(&agent, &config, &open_secrets(&agent.home)?)?;
    let listen = config.api_listen;
    let queue = queue::Queue::new(Arc::clone(&agent), config.max_concurrent_turns);
    // Bound before the API listens: a client that sees the API up finds the control socket too.
    let control_listener = crate::channels::control::bind(&agent.home)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let health = crate::channels::health::Health::default();
    let api = Arc::new(api::Api {
        store: Arc::clone(&agent.store),
        queue: Arc::clone(&queue),
        token,
        audit: Arc::clone(agent.tools.audit()),
        tasks_changed: Arc::clone(agent.tools.tasks_changed()),
        webhook: std::sync::RwLock::new(built.webhook.clone()),
        status: std::sync::OnceLock::new(),
    });
    let channels = ChannelSet::start(built, &agent, &queue, &health);
    // The model server, asked at start, every few minutes, and after each reload.
    let model_recheck = Arc::new(tokio::sync::Notify::new());
    let model_watch = tokio::spawn(watch_model(
        Arc::clone(&agent),
        health.clone(),
        Arc::clone(&model_recheck),
    ));
    let scheduler = scheduler::Scheduler::new(
        Arc::clone(&queue),
        Arc::new(scheduler::SystemClock),
        config.scheduler,
        Arc::clone(agent.tools.tasks_changed()),
    );
    let runner = tokio::spawn(scheduler.run());
    eprintln!(
        "nanoclaw is running: HTTP API on http://{} (bearer token in {})",
        listener.local_addr()?,
        agent.home.token_path().display()
    );
    // Messages accepted before a crash or restart are answered now.
    for group in agent.store.groups_with_pending()? {
        queue.kick(group);
    }
    // The CLI's way in while this process owns the data dir.
    let reloader = Arc::new(Reloader::new(
        Arc::clone(&agent),
        Arc::clone(&queue),
        Arc::clone(&api),
        health.clone(),
        channels,
        model_recheck,
    ));
    let control = {
        let reloader = Arc::clone(&reloader);
        let health = health.clone();
        let names = Arc::clone(&reloader);
        Arc::new(crate::channels::control::Control::new(
            Arc::clone(&queue),
            Box::new(move |c| status(c, &names.channel_names(), &health)),
            Box::new(move |what| match what {
                crate::channels::control::ReloadWhat::Files => reloader.reload(),
                crate::channels::control::ReloadWhat::Secrets => reloader.reload_secrets(),
            }),
        ))
    };
    {
        let control = Arc::clone(&control);
        let _ = api.status.set(Box::new(move || (control.status)(&control)));
    }
    let server = tokio::spawn(api::serve(Arc::clone(&api), listener));
    // SIGHUP reloads too, as daemons do.
    let hangups = {
        let reloader = Arc::clone(&reloader);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                match reloader
                    .reload()
                    .and_then(|files| reloader.reload_secrets().map(|s| json_pair(files, s)))
                {
                    Ok(done) => tracing::info!(%done, "reloaded on SIGHUP"),
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: nothing reloaded"),
                }
            }
        })
    };
    agent.tools.approvals().set_presenter(
        "control",
        Some(Arc::new(crate::channels::control::ControlPresenter(
            control.approvals.clone(),
        ))),
    );
    let control_server = tokio::spawn(crate::channels::control::serve(control, control_listener));
    shutdown_signal().await;
    server.abort();
    control_server.abort();
    hangups.abort();
    let _ = std::fs::remove_file(agent.home.dir.join(crate::channels::control::SOCKET));
    runner.abort();
    model_watch.abort();
    reloader.stop_channels();
    agent.tools.shutdown().await;
    agent.tools.audit().close();
    eprintln!("nanoclaw: stopped");
    Ok(ExitCode::SUCCESS)
}

/// How often a running daemon asks the model server whether it takes the key.
const MODEL_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Keep the model's entry in `health` current: its models list asked with the key at start,
/// every [`MODEL_CHECK_EVERY`], and whenever `recheck` is told (a reload).
async fn watch_model(
    agent: Arc<Agent>,
    health: crate::channels::health::Health,
    recheck: Arc<tokio::sync::Notify>,
) {
    use crate::model::ModelCheck;
    loop {
        let model = agent.model();
        let rejected = match model.as_ref() {
            Ok(client) => match client.check().await {
                ModelCheck::Reachable(_) => {
                    health.connected(MODEL);
                    false
                }
                ModelCheck::Rejected(why) => {
                    health.rejected(MODEL, &why);
                    true
                }
                ModelCheck::Failed(why) => {
                    health.retrying(MODEL, &why);
                    false
                }
            },
            // Not configured: the status says what to set.
            Err(_) => {
                health.forget(MODEL);
                true
            }
        };
        // A refused key is asked again only once the key (or the config) changed.
        if rejected {
            recheck.notified().await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(MODEL_CHECK_EVERY) => {}
            () = recheck.notified() => {}
        }
    }
}

/// The model server's name in the health registry.
const MODEL: &str = "model";

/// The platform channels a config names, each holding its key from `secrets`.
struct Built {
    channels: Vec<Arc<dyn crate::channels::Channel>>,
    /// Also served by the HTTP API's listener.
    webhook: Option<Arc<webhook::Webhook>>,
}

fn build_channels(
    agent: &Arc<Agent>,
    config: &Config,
    secrets: &[secrets::OpenSecret],
) -> anyhow::Result<Built> {
    let webhook = match &config.webhook {
        None => None,
        Some(w) => {
            // An HMAC key: it never leaves this machine, so no host is checked.
            let key = channel_secret(
                secrets,
                "channels.webhook.key_secret",
                &w.key_secret,
                "hooks.invalid",
                &[],
            )?;
            Some(Arc::new(webhook::Webhook {
                rules: w.rules.clone(),
                key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes()),
                callback_url: w.callback_url.clone(),
            }))
        }
    };
    // Every platform channel, behind the one trait.
    let mut channels: Vec<Arc<dyn crate::channels::Channel>> = Vec::new();
    if let Some(w) = &webhook {
        channels.push(Arc::clone(w) as Arc<dyn crate::channels::Channel>);
    }
    if let Some(t) = &config.telegram {
        let token = channel_secret(
            secrets,
            "channels.telegram.token_secret",
            &t.token_secret,
            "api.telegram.org",
            &[("channels.telegram.api_base", &host_of_url(&t.api_base))],
        )?;
        let bot = Arc::new(telegram::Telegram::new(
            t,
            token,
            Arc::clone(&agent.store),
            {
                let agent = Arc::clone(agent);
                Arc::new(move || agent.tools.policy())
            },
            Arc::clone(agent.tools.audit()),
        )?);
        channels.push(bot);
    }
    if let Some(e) = &config.email {
        let password = channel_secret(
            secrets,
            "channels.email.password_secret",
            &e.password_secret,
            "<the mail server>",
            &[
                ("channels.email.imap", &e.imap.host),
                ("channels.email.smtp", &e.smtp.host),
            ],
        )?;
        let mail = Arc::new(email::Email::new(
            e.clone(),
            password.to_owned(),
            Arc::clone(&agent.store),
        ));
        channels.push(mail);
    }
    Ok(Built { channels, webhook })
}

/// The platform channels running now; replaced whole when their config or keys change.
struct ChannelSet {
    names: Vec<&'static str>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ChannelSet {
    fn start(
        built: Built,
        agent: &Arc<Agent>,
        queue: &Arc<queue::Queue>,
        health: &crate::channels::health::Health,
    ) -> ChannelSet {
        let mut names = Vec::new();
        let mut tasks = Vec::new();
        for channel in built.channels {
            tracing::info!(channel = channel.name(), "channel started");
            names.push(channel.name());
            agent
                .tools
                .approvals()
                .set_presenter(channel.name(), Arc::clone(&channel).presenter());
            tasks.push(tokio::spawn(
                Arc::clone(&channel).receive(Arc::clone(queue), health.clone()),
            ));
            tasks.push(tokio::spawn(channel.deliver(
                Arc::clone(&agent.store),
                Arc::clone(agent.tools.audit()),
            )));
        }
        ChannelSet { names, tasks }
    }

    /// End every channel's work; their presenters go too.
    fn stop(self, agent: &Agent, health: &crate::channels::health::Health) {
        for t in self.tasks {
            t.abort();
        }
        for name in self.names {
            agent.tools.approvals().set_presenter(name, None);
            health.forget(name);
        }
    }
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `nanoclaw chat`: through the running daemon, or in this process when none runs.
pub async fn chat(home: Home, group: nanoclaw_core::GroupId) -> anyhow::Result<ExitCode> {
    use crate::channels::terminal::{self, Via};
    if crate::channels::control_client::daemon_running(&home).await {
        return terminal::chat(Via::Daemon(&home), group).await;
    }
    let (agent, _lock) = build_agent(home, true).await?;
    let result = terminal::chat(Via::Agent(&agent), group).await;
    agent.tools.shutdown().await;
    agent.tools.audit().flush();
    result
}

/// `nanoclaw ask`: through the running daemon, or in this process when none runs.
pub async fn ask(
    home: Home,
    group: nanoclaw_core::GroupId,
    text: String,
) -> anyhow::Result<ExitCode> {
    use crate::channels::terminal::{self, Via};
    if crate::channels::control_client::daemon_running(&home).await {
        return terminal::ask(Via::Daemon(&home), group, text).await;
    }
    let (agent, _lock) = build_agent(home, false).await?;
    let result = terminal::ask(Via::Agent(&agent), group, text).await;
    agent.tools.shutdown().await;
    agent.tools.audit().flush();
    result
}

/// The channels messages arrive on (a scheduled task's turn comes from `task`).
const CHANNELS: &[&str] = &[
    crate::channels::terminal::CHANNEL,
    crate::channels::api::CHANNEL,
    crate::channels::telegram::CHANNEL,
    crate::channels::email::CHANNEL,
    crate::channels::webhook::CHANNEL,
    "task",
];

/// What rules may name: the tools offered to the model with their arguments, the channels, and
/// the channels that present approval requests to approvers by id.
/// The built-in tools' vocabulary, and each configured MCP server's `NAME.` as an open prefix.
pub fn vocabulary_for(config: &Config) -> nanoclaw_core::policy::Vocabulary {
    let mut v = vocabulary();
    v.open_prefixes = config.mcp.keys().map(|name| format!("{name}.")).collect();
    v
}

/// The built-in tools' vocabulary.
pub fn vocabulary() -> nanoclaw_core::policy::Vocabulary {
    let tools = crate::agent::tools::specs()
        .into_iter()
        .map(|spec| {
            let args = spec.schema["properties"]
                .as_object()
                .map(|props| props.keys().cloned().collect())
                .unwrap_or_default();
            (spec.name.to_owned(), args)
        })
        .collect();
    nanoclaw_core::policy::Vocabulary {
        tools,
        open_prefixes: Vec::new(),
        network_tools: crate::agent::tools::network_tools()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        channels: CHANNELS.iter().map(|c| (*c).to_owned()).collect(),
        approver_channels: vec![crate::channels::telegram::CHANNEL.to_owned()],
    }
}

/// What `nanoclaw status` shows of a running daemon: its version and uptime, the sandbox
/// backend, the channels, the groups at work, pending approvals, the next tasks, the secrets'
/// count and whether the audit log is being written. `healthy` is false with the reasons.
fn status(
    control: &crate::channels::control::Control,
    channels: &[&'static str],
    health: &crate::channels::health::Health,
) -> serde_json::Value {
    use serde_json::json;
    let agent = control.queue.agent();
    let mut problems = Vec::new();
    let states = health.snapshot();
    let channels: Vec<serde_json::Value> = channels
        .iter()
        .map(|name| {
            let state = states.get(name);
            if let Some(state) = state.filter(|s| s.is_problem()) {
                problems.push(format!("channel {name}: {}", state.describe()));
            }
            json!({"name": name, "connection": state})
        })
        .collect();
    let backend = agent.tools.backend().name();
    if backend == "none" {
        problems
            .push("no sandbox backend works: no tool can run (see `nanoclaw doctor`)".to_owned());
    }
    if let Some(why) = agent.tools.audit().failing() {
        problems.push(format!("the audit log cannot be written: {why}"));
    }
    let model = states.get(MODEL);
    match agent.model().as_ref() {
        Err(e) => problems.push(e.clone()),
        Ok(_) => {
            if let Some(state) = model.filter(|s| s.is_problem()) {
                problems.push(format!("model: {}", state.describe()));
            }
        }
    }
    let mut running = control.queue.running();
    running.extend(agent.running_groups());
    let pending = agent.store.pending_counts().unwrap_or_else(|e| {
        problems.push(format!("the store cannot be read: {e}"));
        Vec::new()
    });
    let mut groups: std::collections::BTreeMap<String, (bool, i64)> = Default::default();
    for g in &running {
        groups.entry(g.to_string()).or_default().0 = true;
    }
    for (g, n) in pending {
        groups.entry(g).or_default().1 = n;
    }
    let approvals = approvals::list(&agent.store, false).unwrap_or_default();
    let mut tasks = crate::store::tasks::list(&agent.store, None).unwrap_or_default();
    tasks.retain(|t| t.status == "active" && t.next_due.is_some());
    tasks.sort_by_key(|t| t.next_due);
    let secrets = secrets::Secrets::load(&agent.home)
        .map(|s| s.list().len())
        .unwrap_or(0);
    json!({
        "daemon": true,
        "healthy": problems.is_empty(),
        "problems": problems,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_secs": control.started.elapsed().as_secs(),
        "sandbox": backend,
        "model": {"name": agent.config().model.name, "connection": model},
        "channels": channels,
        "groups": groups.iter().map(|(g, (running, queued))| json!({"group": g, "running": running, "queued": queued})).collect::<Vec<_>>(),
        "approvals": approvals.iter().map(|r| json!({"id": r.id, "code": r.code, "group": r.group, "tool": r.tool, "expires_at": crate::audit::format_time(r.expires_at)})).collect::<Vec<_>>(),
        "next_tasks": tasks.iter().take(5).map(|t| json!({"id": t.id, "name": t.name, "group": t.group, "next_due": t.next_due.map(crate::audit::format_time)})).collect::<Vec<_>>(),
        "secrets": secrets,
        "paused": agent.store.paused_groups().unwrap_or_default(),
    })
}

fn file_digest(path: &std::path::Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| {
        nanoclaw_core::hex::encode(ring::digest::digest(&ring::digest::SHA256, &b).as_ref())
    })
}

/// `nanoclaw reload` (and SIGHUP): `policy.toml` and `nanoclaw.toml` again, each checked as
/// at start; a file that fails is refused and what is in force stays. Of `nanoclaw.toml`, the
/// model, agent, limits, groups, egress allowlists, MCP servers and channels take effect at
/// once (channels by restarting them, MCP servers by stopping those changed or removed); the sections that shape what this process set up at start (the sandbox
/// backend, the API's address, the scheduler, the turn cap, extra TLS roots) are named as
/// needing a restart. Each change is audited with the files' digests and the sections changed.
pub struct Reloader {
    agent: Arc<Agent>,
    queue: Arc<queue::Queue>,
    api: Arc<api::Api>,
    health: crate::channels::health::Health,
    /// The channels running (`None` once stopped for good).
    channels: std::sync::Mutex<Option<ChannelSet>>,
    /// The digest of `policy.toml` and the text of `nanoclaw.toml` in force.
    in_force: std::sync::Mutex<(Option<String>, String)>,
    /// The digest of the channels' keys they run with.
    channel_keys: std::sync::Mutex<String>,
    /// Told after a reload: the model server is asked again.
    model_recheck: Arc<tokio::sync::Notify>,
}

/// Sections of `nanoclaw.toml` a running daemon cannot change: what it set up at start.
const RESTART_SECTIONS: &[&str] = &[
    "sandbox",
    "daemon",
    "scheduler",
    "api",
    "egress.extra_roots",
];

/// The sections (top-level tables, and `egress.KEY`) whose text differs between two configs.
fn changed_sections(old: &str, new: &str) -> Vec<String> {
    let table = |text: &str| text.parse::<toml::Table>().unwrap_or_default();
    let (old, new) = (table(old), table(new));
    let mut changed = Vec::new();
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key), new.get(key));
        if a == b {
            continue;
        }
        if key == "egress" {
            let sub =
                |v: Option<&toml::Value>| v.and_then(|v| v.as_table()).cloned().unwrap_or_default();
            let (a, b) = (sub(a), sub(b));
            let inner: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in inner {
                if a.get(k) != b.get(k) {
                    changed.push(format!("egress.{k}"));
                }
            }
        } else {
            changed.push(key.clone());
        }
    }
    changed
}

/// A digest of the values of the secrets the config's channels hold.
fn channel_keys(config: &Config, secrets: &[secrets::OpenSecret]) -> String {
    let mut named: Vec<&str> = Vec::new();
    if let Some(w) = &config.webhook {
        named.push(&w.key_secret);
    }
    if let Some(t) = &config.telegram {
        named.push(&t.token_secret);
    }
    if let Some(e) = &config.email {
        named.push(&e.password_secret);
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for name in named {
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        if let Some(s) = secrets.iter().find(|s| s.meta.name == name) {
            ctx.update(s.value.as_bytes());
        }
        ctx.update(&[0]);
    }
    nanoclaw_core::hex::encode(ctx.finish().as_ref())
}

impl Reloader {
    fn new(
        agent: Arc<Agent>,
        queue: Arc<queue::Queue>,
        api: Arc<api::Api>,
        health: crate::channels::health::Health,
        channels: ChannelSet,
        model_recheck: Arc<tokio::sync::Notify>,
    ) -> Reloader {
        let home = &agent.home;
        let in_force = (
            file_digest(&home.dir.join(policy_file::POLICY_FILE)),
            std::fs::read_to_string(home.config_path()).unwrap_or_default(),
        );
        let keys = open_secrets(home)
            .map(|s| channel_keys(&agent.config(), &s))
            .unwrap_or_default();
        Reloader {
            agent,
            queue,
            api,
            health,
            channels: std::sync::Mutex::new(Some(channels)),
            in_force: std::sync::Mutex::new(in_force),
            channel_keys: std::sync::Mutex::new(keys),
            model_recheck,
        }
    }

    /// The names of the channels running now.
    fn channel_names(&self) -> Vec<&'static str> {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.names.clone())
            .unwrap_or_default()
    }

    /// Stop the channels for good (the daemon is ending).
    fn stop_channels(&self) {
        if let Some(set) = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            set.stop(&self.agent, &self.health);
        }
    }

    /// Replace the running channels with `built`.
    fn restart_channels(&self, built: Built) {
        let mut slot = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            old.stop(&self.agent, &self.health);
        }
        *self.api.webhook.write().unwrap_or_else(|p| p.into_inner()) = built.webhook.clone();
        *slot = Some(ChannelSet::start(
            built,
            &self.agent,
            &self.queue,
            &self.health,
        ));
    }

    /// Open the secrets file again and put it in force: the proxies (connections that could
    /// carry a removed or changed secret are closed), new sandboxes' placeholders, every
    /// redactor, the model client's key, and the channels (restarted when a key they hold
    /// changed). A file that fails its checks, or leaves a channel without its key, changes
    /// nothing.
    fn reload_secrets(&self) -> Result<serde_json::Value, String> {
        let keep = |e: anyhow::Error| format!("{e:#}; the secrets in force stay");
        let secrets = open_secrets(&self.agent.home).map_err(keep)?;
        let config = self.agent.config();
        let keys = channel_keys(&config, &secrets);
        let channels_changed = keys != *self.channel_keys.lock().unwrap_or_else(|p| p.into_inner());
        let built = if channels_changed {
            Some(build_channels(&self.agent, &config, &secrets).map_err(keep)?)
        } else {
            None
        };
        // The audit log redacts the new values before anything could record them.
        self.agent
            .tools
            .audit()
            .set_redactor(egress::redactor(&secrets));
        self.agent.tools.replace_secrets(&secrets).map_err(keep)?;
        let model = model_client(&self.agent.home, &config, &secrets);
        self.agent.set_config(Arc::clone(&config), model);
        self.model_recheck.notify_one();
        if let Some(built) = built {
            self.restart_channels(built);
            *self.channel_keys.lock().unwrap_or_else(|p| p.into_inner()) = keys;
        }
        let names: Vec<&str> = secrets.iter().map(|s| s.meta.name.as_str()).collect();
        self.agent.tools.audit().record(
            audit::EventKind::ConfigChanged,
            None,
            serde_json::json!({"file": "secrets.json", "secrets": names, "applied": true, "channels_restarted": channels_changed}),
        );
        Ok(serde_json::json!(format!(
            "the daemon now uses {} secret(s): {}{}",
            names.len(),
            names.join(", "),
            if channels_changed {
                "; the channels restarted with their new keys"
            } else {
                ""
            }
        )))
    }

    fn reload(&self) -> Result<serde_json::Value, String> {
        let home = &self.agent.home;
        let policy_path = home.dir.join(policy_file::POLICY_FILE);
        // Both files are checked, and the channels of the new config built, before anything
        // changes.
        let config_text = std::fs::read_to_string(home.config_path()).unwrap_or_default();
        let config =
            Arc::new(load_config(home).map_err(|e| format!("{e:#}; nothing was reloaded"))?);
        let policy = policy_file::load(home, &vocabulary_for(&config))
            .map_err(|e| format!("{e:#}; the policy in force stays"))?;
        let policy_now = file_digest(&policy_path);
        let mut in_force = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        let sections = changed_sections(&in_force.1, &config_text);
        let (restart, live): (Vec<&String>, Vec<&String>) = sections
            .iter()
            .partition(|s| RESTART_SECTIONS.contains(&s.as_str()));
        let mut prepared = None;
        if !live.is_empty() {
            let secrets = open_secrets(home).map_err(|e| format!("{e:#}; nothing was reloaded"))?;
            let built = if live.iter().any(|s| *s == "channels") {
                Some(
                    build_channels(&self.agent, &config, &secrets)
                        .map_err(|e| format!("{e:#}; nothing was reloaded"))?,
                )
            } else {
                None
            };
            prepared = Some((
                model_client(home, &config, &secrets),
                built,
                channel_keys(&config, &secrets),
            ));
        }
        let mut done = Vec::new();
        if policy_now != in_force.0 {
            self.agent.tools.set_policy(Arc::new(policy));
            self.agent.tools.audit().record(
                audit::EventKind::ConfigChanged,
                None,
                serde_json::json!({"file": policy_file::POLICY_FILE, "from_sha256": in_force.0, "to_sha256": policy_now, "applied": true}),
            );
            in_force.0 = policy_now;
            done.push(format!("{} is in force now", policy_file::POLICY_FILE));
        }
        if !sections.is_empty() {
            if let Some((model, built, keys)) = prepared {
                self.agent.tools.replace_config(Arc::clone(&config));
                self.agent.set_config(Arc::clone(&config), model);
                self.model_recheck.notify_one();
                if let Some(built) = built {
                    self.restart_channels(built);
                    *self.channel_keys.lock().unwrap_or_else(|p| p.into_inner()) = keys;
                }
            }
            let digest = |text: &str| {
                nanoclaw_core::hex::encode(
                    ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref(),
                )
            };
            self.agent.tools.audit().record(
                audit::EventKind::ConfigChanged,
                None,
                serde_json::json!({"file": crate::config::CONFIG_FILE, "from_sha256": digest(&in_force.1), "to_sha256": digest(&config_text), "applied": !live.is_empty(), "sections": live, "needs_restart": restart}),
            );
            in_force.1 = config_text;
            let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            if !live.is_empty() {
                done.push(format!(
                    "{} is in force now (changed: {})",
                    crate::config::CONFIG_FILE,
                    list(&live)
                ));
            }
            if live.iter().any(|s| *s == "mcp") {
                done.push(
                    "MCP servers removed or changed are stopped; each starts again as configured when its group next needs it"
                        .into(),
                );
            }
            if !restart.is_empty() {
                done.push(format!(
                    "these changes of {} take effect when the daemon restarts: {}",
                    crate::config::CONFIG_FILE,
                    list(&restart)
                ));
            }
        }
        if done.is_empty() {
            done.push("nothing changed".into());
        }
        Ok(serde_json::json!(done.join("; ")))
    }
}

fn json_pair(a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    serde_json::json!([a, b])
}
