//! nanoclaw: a self-hosted personal agent whose every command runs in a sandbox.
//!
//! The crate map, in the order one message travels (the trust path is marked ★; everything
//! else is an adapter that reaches the sandbox only through the gate):
//!
//! 1. [`channels`]: the adapters (HTTP API, terminal, Telegram, email, webhook) hand each
//!    inbound message to ★`channels::accept`, which routes it (★[`channels::router`]: which
//!    group, which sender role) and commits it to the store before it is acknowledged.
//! 2. ★[`agent::queue`]: one turn at a time per group, a global cap on concurrent turns.
//! 3. ★[`agent::turn`]: the turn: prompt (memory, history, new messages) → [`model`] → tool
//!    calls → reply into the outbox.
//! 4. ★[`agent::tools`]: each tool call is parsed into typed arguments, decided by the policy
//!    gate (`nanoclaw_core::policy`), approved when asked (★[`agent::approvals`]), audited
//!    durably, and only then run in the group's sandbox (`nanoclaw_sandbox`, chosen in
//!    ★[`sandbox::backend`]); its network requests pass the group's egress proxy
//!    (`nanoclaw_egress`, set up in ★[`sandbox::egress`]) and the gate again
//!    (★[`agent::egress_gate`]).
//! 5. ★[`audit`]: the hash-chained log of what the agent saw, decided and attempted.
//! 6. ★[`store`]: the SQLite store (inbox, turns, history, outbox, approvals, tasks) and the
//!    encrypted secrets file.
//!
//! The CLI reaches a running daemon through [`channels::control`] (its socket); without one,
//! `chat` and `ask` run the turn in their own process.
//!
//! MCP servers ([`mcp`]) are an adapter too: each runs in a sandbox of its group, its calls
//! reach it only from `agent::tools` after the gate, and what it answers is outside content.
//!
//! Beside the path: [`config`] (raw TOML becomes typed config once; the data dir; policy.toml),
//! [`scheduler`] (tasks run as turns of their group), [`cli`] (the grammar and one handler per
//! subcommand), and [`app`] (the composition root that wires the parts together).
//!
//! `main` parses the command line and hands off; exit codes are 0 success, 1 failure, 2 bad
//! usage or config.

mod agent;
mod app;
mod audit;
mod channels;
mod cli;
mod config;
mod display;
mod exit;
mod mcp;
mod model;
mod sandbox;
mod scheduler;
mod store;

use std::process::ExitCode;

use crate::cli::{Cli, Command, PolicyCommand, SandboxCommand, UsageError};
use crate::config::ConfigError;
use crate::config::home::Home;
use clap::Parser;

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
    // Commands that print local data end quietly on a closed pipe (`nanoclaw audit export |
    // head`), as Unix tools do, instead of failing to print. The daemon, chat, ask, doctor and
    // sandbox exec keep SIGPIPE ignored: they write to sockets and pipes and handle the errors.
    if matches!(
        cli.command,
        Command::Init
            | Command::Secret { .. }
            | Command::Policy { .. }
            | Command::Approvals { .. }
            | Command::Audit { .. }
            | Command::Task { .. }
            | Command::Memory { .. }
            | Command::Mcp { .. }
    ) {
        // SAFETY: setting a signal's disposition to its default; no handler runs our code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let home = Home::locate(cli.home)?;
    let default_log = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    };
    app::init_logging(default_log);
    match cli.command {
        Command::Init => cli::init::init(&home),
        Command::Run => app::runtime(true)?.block_on(app::daemon(home)),
        Command::Chat { group } => app::runtime(false)?.block_on(app::chat(home, group)),
        Command::Ask { group, text } => {
            let text = text.join(" ");
            if text.trim().is_empty() {
                return Err(UsageError("the message is empty".into()).into());
            }
            app::runtime(false)?.block_on(app::ask(home, group, text))
        }
        Command::Doctor => app::runtime(false)?.block_on(cli::doctor::run(home)),
        Command::Reload => app::runtime(false)?.block_on(cli::stop::reload(&home)),
        Command::Stop { group } => app::runtime(false)?.block_on(cli::stop::stop(&home, &group)),
        Command::Pause { group } => {
            app::runtime(false)?.block_on(cli::stop::pause(&home, &group, true))
        }
        Command::Resume { group } => {
            app::runtime(false)?.block_on(cli::stop::pause(&home, &group, false))
        }
        Command::Status { json } => app::runtime(false)?.block_on(cli::status::status(&home, json)),
        Command::Sandbox {
            command: SandboxCommand::Exec { group, command },
        } => app::runtime(false)?.block_on(cli::sandbox::sandbox_exec(home, group, command)),
        Command::Secret { command } => cli::secret::secret_command(&home, command),
        Command::Policy {
            command: PolicyCommand::Check { tool, args, turn },
        } => cli::policy::policy_check(&home, &tool, &args, &turn),
        Command::Policy {
            command:
                PolicyCommand::CheckEgress {
                    url,
                    method,
                    body,
                    header,
                    tool,
                    turn,
                },
        } => cli::policy::check_egress(&home, &url, &method, body, &header, &tool, &turn),
        Command::Approvals { command } => cli::approvals::approvals_command(&home, command),
        Command::Audit { command } => cli::audit::audit_command(&home, command),
        Command::Task { command } => cli::task::task_command(&home, command),
        Command::Memory { command } => {
            app::runtime(false)?.block_on(cli::memory::memory_command(home, command))
        }
        Command::Mcp { command } => cli::mcp::mcp_command(&home, command),
    }
}
