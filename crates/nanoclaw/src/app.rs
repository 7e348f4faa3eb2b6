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
    let policy = Arc::new(policy_file::load(&home, &vocabulary())?);
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
        vec![Arc::new(crate::channels::approval_text::StderrPresenter)],
    );
    let tools = tools::Tools::new(
        backend,
        egress,
        policy,
        approvals,
        audit,
        Arc::clone(&store),
    );
    Ok((
        Agent {
            home,
            config,
            store,
            model,
            tools,
            running: Default::default(),
        },
        lock,
    ))
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
    let token = home.api_token()?;
    let (agent, _lock) = build_agent(home, true).await?;
    // The channels' keys, opened once.
    let secrets = if agent.config.webhook.is_some()
        || agent.config.telegram.is_some()
        || agent.config.email.is_some()
    {
        open_secrets(&agent.home)?
    } else {
        Vec::new()
    };
    let webhook = match &agent.config.webhook {
        None => None,
        Some(w) => {
            // An HMAC key: it never leaves this machine, so no host is checked.
            let key = channel_secret(
                &secrets,
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
    let agent = Arc::new(agent);
    let listen = agent.config.api_listen;
    let queue = queue::Queue::new(Arc::clone(&agent), agent.config.max_concurrent_turns);
    // Bound before the API listens: a client that sees the API up finds the control socket too.
    let control_listener = crate::channels::control::bind(&agent.home)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let api = Arc::new(api::Api {
        store: Arc::clone(&agent.store),
        queue: Arc::clone(&queue),
        token,
        audit: Arc::clone(agent.tools.audit()),
        tasks_changed: Arc::clone(agent.tools.tasks_changed()),
        webhook: webhook.clone(),
    });
    // Every platform channel, behind the one trait.
    let mut channels: Vec<Arc<dyn crate::channels::Channel>> = Vec::new();
    if let Some(w) = webhook {
        channels.push(w);
    }
    if let Some(t) = &agent.config.telegram {
        let token = channel_secret(
            &secrets,
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
                let agent = Arc::clone(&agent);
                Arc::new(move || agent.tools.policy())
            },
            Arc::clone(agent.tools.audit()),
        )?);
        channels.push(bot);
    }
    if let Some(e) = &agent.config.email {
        let password = channel_secret(
            &secrets,
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
    let channel_names: Vec<&'static str> = channels.iter().map(|c| c.name()).collect();
    let mut channel_tasks = Vec::new();
    for channel in channels {
        tracing::info!(channel = channel.name(), "channel started");
        if let Some(presenter) = Arc::clone(&channel).presenter() {
            agent.tools.approvals().add_presenter(presenter);
        }
        channel_tasks.push(tokio::spawn(
            Arc::clone(&channel).receive(Arc::clone(&queue)),
        ));
        channel_tasks.push(tokio::spawn(
            channel.deliver(Arc::clone(&agent.store), Arc::clone(agent.tools.audit())),
        ));
    }
    let scheduler = scheduler::Scheduler::new(
        Arc::clone(&queue),
        Arc::new(scheduler::SystemClock),
        agent.config.scheduler,
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
    let server = tokio::spawn(api::serve(api, listener));
    // The CLI's way in while this process owns the data dir.
    let reloader = Arc::new(Reloader::new(Arc::clone(&agent)));
    let control = {
        let channel_names: Vec<&'static str> = channel_names.clone();
        let reloader = Arc::clone(&reloader);
        Arc::new(crate::channels::control::Control::new(
            Arc::clone(&queue),
            Box::new(move |c| status(c, &channel_names)),
            Box::new(move |what| match what {
                crate::channels::control::ReloadWhat::Files => reloader.reload(),
                crate::channels::control::ReloadWhat::Secrets => reloader.reload_secrets(),
            }),
        ))
    };
    // SIGHUP reloads too, as daemons do.
    let hangups = tokio::spawn(async move {
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
    });
    agent
        .tools
        .approvals()
        .add_presenter(Arc::new(crate::channels::control::ControlPresenter(
            control.approvals.clone(),
        )));
    let control_server = tokio::spawn(crate::channels::control::serve(control, control_listener));
    shutdown_signal().await;
    server.abort();
    control_server.abort();
    hangups.abort();
    let _ = std::fs::remove_file(agent.home.dir.join(crate::channels::control::SOCKET));
    runner.abort();
    for t in channel_tasks {
        t.abort();
    }
    agent.tools.shutdown().await;
    agent.tools.audit().close();
    eprintln!("nanoclaw: stopped");
    Ok(ExitCode::SUCCESS)
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
fn status(control: &crate::channels::control::Control, channels: &[&str]) -> serde_json::Value {
    use serde_json::json;
    let agent = control.queue.agent();
    let mut problems = Vec::new();
    let backend = agent.tools.backend().name();
    if backend == "none" {
        problems
            .push("no sandbox backend works: no tool can run (see `nanoclaw doctor`)".to_owned());
    }
    if let Some(why) = agent.tools.audit().failing() {
        problems.push(format!("the audit log cannot be written: {why}"));
    }
    if let Err(e) = &agent.model {
        problems.push(e.clone());
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

/// `nanoclaw reload` (and SIGHUP): `policy.toml` again, checked as at start; a policy that
/// fails is refused and the one in force stays. `nanoclaw.toml` is checked too, and a change to
/// it is reported as taking effect at the next start (its settings shape the proxies, limits
/// and channels this process runs). Each change is audited with the files' digests.
pub struct Reloader {
    agent: Arc<Agent>,
    /// The digests of (policy.toml, nanoclaw.toml) in force.
    in_force: std::sync::Mutex<(Option<String>, Option<String>)>,
}

impl Reloader {
    fn new(agent: Arc<Agent>) -> Reloader {
        let home = &agent.home;
        let in_force = (
            file_digest(&home.dir.join(policy_file::POLICY_FILE)),
            file_digest(&home.config_path()),
        );
        Reloader {
            agent,
            in_force: std::sync::Mutex::new(in_force),
        }
    }

    /// Open the secrets file again and put it in force: the proxies (connections that could
    /// carry a removed or changed secret are closed), new sandboxes' placeholders, and every
    /// redactor. A file that fails its checks changes nothing. The model client and the
    /// channels keep the keys they started with until the next start.
    fn reload_secrets(&self) -> Result<serde_json::Value, String> {
        let secrets = open_secrets(&self.agent.home)
            .map_err(|e| format!("{e:#}; the secrets in force stay"))?;
        // The audit log redacts the new values before anything could record them.
        self.agent
            .tools
            .audit()
            .set_redactor(egress::redactor(&secrets));
        self.agent
            .tools
            .replace_secrets(&secrets)
            .map_err(|e| format!("{e:#}; the secrets in force stay"))?;
        let names: Vec<&str> = secrets.iter().map(|s| s.meta.name.as_str()).collect();
        self.agent.tools.audit().record(
            audit::EventKind::ConfigChanged,
            None,
            serde_json::json!({"file": "secrets.json", "secrets": names, "applied": true}),
        );
        Ok(serde_json::json!(format!(
            "the daemon now uses {} secret(s): {}",
            names.len(),
            names.join(", ")
        )))
    }

    fn reload(&self) -> Result<serde_json::Value, String> {
        let home = &self.agent.home;
        let policy_path = home.dir.join(policy_file::POLICY_FILE);
        // Both files are checked before anything changes.
        let policy = policy_file::load(home, &vocabulary())
            .map_err(|e| format!("{e:#}; the policy in force stays"))?;
        load_config(home).map_err(|e| format!("{e:#}; nothing was reloaded"))?;
        let (policy_now, config_now) =
            (file_digest(&policy_path), file_digest(&home.config_path()));
        let mut in_force = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
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
        if config_now != in_force.1 {
            self.agent.tools.audit().record(
                audit::EventKind::ConfigChanged,
                None,
                serde_json::json!({"file": crate::config::CONFIG_FILE, "from_sha256": in_force.1, "to_sha256": config_now, "applied": false}),
            );
            in_force.1 = config_now;
            done.push(format!(
                "{} changed and is valid; its changes take effect when the daemon restarts",
                crate::config::CONFIG_FILE
            ));
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
