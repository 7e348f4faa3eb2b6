//! nanoclaw: a self-hosted personal agent whose every command runs in a sandbox.
//!
//! Map of the binary (one message's journey, top to bottom):
//! - [`api`] and [`terminal`]: channels. They commit each inbound message to the [`store`]
//!   before acknowledging it.
//! - [`queue`]: one turn at a time per group, a global cap on concurrent turns.
//! - [`agent`]: the turn: prompt → [`model`] → tool calls → reply into the outbox.
//! - [`tools`]: every tool call passes the gate (`nanoclaw_core::gate`) in one function, then
//!   runs inside the group's sandbox (`nanoclaw_sandbox`).
//! - [`backend`]: which sandbox backend runs commands (`nanoclaw_sandbox`).
//! - [`egress`]: each group's egress proxy (`nanoclaw_egress`), its sandbox's only way out.
//! - [`config`] and [`home`]: the validated config and the data dir.
//! - [`doctor`]: what works and what does not, and what to do about it.
//!
//! `main` parses the command line and hands off; exit codes are 0 success, 1 failure, 2 bad
//! usage or config.

mod agent;
mod api;
mod backend;
mod config;
mod doctor;
mod egress;
mod home;
mod model;
mod queue;
mod store;
mod terminal;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nanoclaw_core::GroupId;
use nanoclaw_sandbox::{Backend, ExitState};

use crate::agent::Agent;
use crate::config::{Config, ConfigError};
use crate::home::Home;
use crate::model::ModelClient;
use crate::store::Store;

#[derive(Parser)]
#[command(
    name = "nanoclaw",
    version,
    about = "A self-hosted personal agent that runs every command in a sandbox."
)]
struct Cli {
    /// The data dir [default: $NANOCLAW_HOME, or ~/.nanoclaw]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented default config, the data dir and the API token.
    Init,
    /// Run the daemon: the local HTTP API and the agent.
    Run,
    /// Talk to the agent in this terminal (/new starts a fresh session, /quit leaves).
    Chat {
        /// The group to talk to.
        #[arg(long, default_value = "main")]
        group: GroupId,
    },
    /// Send one message, print the reply, exit (1 when the turn fails).
    Ask {
        /// The group to talk to.
        #[arg(long, default_value = "main")]
        group: GroupId,
        /// The message.
        #[arg(required = true, num_args = 1.., value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Check the sandbox, the model and the API; say what is wrong.
    Doctor,
    /// Run commands in a group's sandbox.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Run one command in a group's sandbox, exactly as the agent's shell tool would, and exit
    /// with its status (124 when it hit the time limit).
    Exec {
        /// The group whose sandbox and workspace to use.
        #[arg(long, default_value = "main")]
        group: GroupId,
        /// The command and its arguments (after `--`).
        #[arg(required = true, num_args = 1.., last = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

/// A failure that is the caller's fault: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == nanoclaw_sandbox::INIT_ARG) {
        let rest: Option<Vec<String>> = args.map(|a| a.into_string().ok()).collect();
        let code = match rest {
            Some(rest) => nanoclaw_sandbox::init::main(&rest),
            None => {
                eprintln!("nanoclaw init: arguments must be UTF-8");
                2
            }
        };
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nanoclaw: {e:#}");
            let usage = e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = Home::locate(cli.home)?;
    let default_log = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    };
    init_logging(default_log);
    match cli.command {
        Command::Init => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for line in home.init()? {
                writeln!(out, "{line}")?;
            }
            writeln!(
                out,
                "next: set ANTHROPIC_API_KEY (or configure [model] in the file above), then `nanoclaw run` or `nanoclaw chat`"
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => runtime(true)?.block_on(daemon(home)),
        Command::Chat { group } => runtime(false)?.block_on(terminal::chat(home, group)),
        Command::Ask { group, text } => {
            runtime(false)?.block_on(terminal::ask(home, group, text.join(" ")))
        }
        Command::Doctor => runtime(false)?.block_on(doctor::run(home)),
        Command::Sandbox {
            command: SandboxCommand::Exec { group, command },
        } => runtime(false)?.block_on(sandbox_exec(home, group, command)),
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOCLAW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime(multi_thread: bool) -> anyhow::Result<tokio::runtime::Runtime> {
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
fn load_config(home: &Home) -> anyhow::Result<Config> {
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(Config::load(&home.config_path())?)
}

/// The model client, or the message that tells the user exactly what to set.
fn model_client(home: &Home, config: &Config) -> Result<ModelClient, String> {
    let m = &config.model;
    let key = std::env::var(m.provider.key_env())
        .ok()
        .filter(|k| !k.trim().is_empty());
    if key.is_none() && m.base_url == m.provider.default_base_url() {
        return Err(format!(
            "No model is configured: set the {} environment variable to your API key, or point \
             [model] provider and base_url in {} at another server (OpenAI-compatible servers such \
             as Ollama need no key), then restart nanoclaw.",
            m.provider.key_env(),
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
async fn build_agent(home: Home, long_lived: bool) -> anyhow::Result<(Agent, std::fs::File)> {
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
    let model = model_client(&home, &config);
    if let (Err(hint), true) = (&model, long_lived) {
        eprintln!("nanoclaw: {hint}");
    }
    let egress = egress::Egress::new(&home, Arc::new(config.clone()));
    let tools = tools::Tools::new(backend, egress);
    Ok((
        Agent {
            home,
            config,
            store: Arc::new(store),
            model,
            tools,
        },
        lock,
    ))
}

async fn daemon(home: Home) -> anyhow::Result<ExitCode> {
    let token = home.api_token()?;
    let (agent, _lock) = build_agent(home, true).await?;
    let agent = Arc::new(agent);
    let listen = agent.config.api_listen;
    let queue = queue::Queue::new(Arc::clone(&agent), agent.config.max_concurrent_turns);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let api = Arc::new(api::Api {
        store: Arc::clone(&agent.store),
        queue: Arc::clone(&queue),
        token,
    });
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
    shutdown_signal().await;
    server.abort();
    agent.tools.shutdown().await;
    eprintln!("nanoclaw: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
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

async fn sandbox_exec(
    home: Home,
    group: GroupId,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let config = load_config(&home)?;
    let backend = backend::choose(&home, &config, false)
        .await
        .map_err(anyhow::Error::msg)?;
    let req = nanoclaw_sandbox::ExecRequest {
        workspace: home.workspace(&group)?,
        program: nanoclaw_sandbox::Program::Command(command),
        stdin: Vec::new(),
        limits: config.limits_for(&group),
        proxy_socket: Some(
            egress::Egress::new(&home, Arc::new(config.clone())).socket_for(&group)?,
        ),
    };
    let result = backend.exec(&req).await;
    backend.shutdown().await;
    let out = result?;
    std::io::stdout().write_all(&out.stdout.bytes)?;
    std::io::stderr().write_all(&out.stderr.bytes)?;
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if stream.dropped > 0 {
            eprintln!(
                "nanoclaw: [truncated: {} more bytes of {name} were dropped]",
                stream.dropped
            );
        }
    }
    if let Some(hit) = out.limit {
        eprintln!("nanoclaw: limit hit: {}", hit.describe(&req.limits));
    }
    let code = match out.state {
        ExitState::Exited(c) => c,
        ExitState::Signaled(s) => 128 + s,
        ExitState::TimedOut => 124,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
