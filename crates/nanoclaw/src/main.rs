//! nanoclaw: a self-hosted personal agent whose every command runs in a sandbox.
//!
//! Map of the binary (one message's journey, top to bottom):
//! - [`api`] and [`terminal`]: channels. They commit each inbound message to the [`store`]
//!   before acknowledging it.
//! - [`queue`]: one turn at a time per group, a global cap on concurrent turns.
//! - [`agent`]: the turn: prompt → [`model`] → tool calls → reply into the outbox.
//! - [`tools`]: every tool call passes the policy gate (`nanoclaw_core::policy`, the rules in
//!   [`policy_file`]) in one function, waits for [`approvals`] when asked to, then runs inside
//!   the group's sandbox (`nanoclaw_sandbox`).
//! - [`audit`]: the hash-chained audit log of what the agent saw, decided and attempted.
//! - [`backend`]: which sandbox backend runs commands (`nanoclaw_sandbox`).
//! - [`egress`]: each group's egress proxy (`nanoclaw_egress`), its sandbox's only way out.
//! - [`secrets`]: the encrypted secrets store; [`web`]: the web tools' client (through the
//!   proxy).
//! - [`config`] and [`home`]: the validated config and the data dir.
//! - [`doctor`]: what works and what does not, and what to do about it.
//! - [`display`]: outside text made safe to print on a terminal.
//!
//! `main` parses the command line and hands off; exit codes are 0 success, 1 failure, 2 bad
//! usage or config.

mod admission;
mod agent;
mod api;
mod approvals;
mod audit;
#[cfg(test)]
mod audit_test;
mod backend;
mod config;
mod display;
mod doctor;
mod egress;
mod egress_gate;
mod email;
mod home;
mod memory;
mod model;
mod outbox;
mod policy_file;
mod queue;
mod router;
mod schedule;
mod scheduler;
mod secrets;
mod store;
mod tasks;
mod telegram;
mod terminal;
mod tools;
mod web;
mod webhook;

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
    /// Write the data dir: a commented config and policy, the API token, the local CA, and the
    /// secrets key (outside the data dir).
    Init,
    /// Run the daemon: the agent, its channels (HTTP API, Telegram, email, webhook) and the
    /// task scheduler.
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
    /// Check the sandbox, the model and the API token; say what is wrong.
    Doctor,
    /// Run commands in a group's sandbox.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Manage secrets: stored encrypted, seen by sandboxes only as placeholders, inserted by
    /// the egress proxy toward the hosts each is bound to.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// The policy gate: see what a call would get.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Approval requests: list them, answer them.
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// The audit log: verify its hash chain, show or export events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Scheduled tasks: prompts the daemon runs as turns of a group, on a schedule.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// A group's memory (MEMORY.md, in every prompt): review it, vouch for it.
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// Print MEMORY.md, its hash, and whether it counts as outside content (written while a
    /// turn had read outside content).
    Show {
        #[arg(long, default_value = "main")]
        group: GroupId,
    },
    /// Vouch for the memory with this hash (as `memory show` prints it): turns that begin
    /// with exactly that content take it as the owner's.
    Trust {
        hash: String,
        #[arg(long, default_value = "main")]
        group: GroupId,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Add a task with exactly one of --cron, --every, --at.
    #[command(group(clap::ArgGroup::new("when").required(true).args(["cron", "every", "at"])))]
    Add {
        /// The group the task runs in.
        #[arg(long, default_value = "main")]
        group: GroupId,
        /// A short name, shown with its results.
        #[arg(long)]
        name: String,
        /// What the agent should do when it runs.
        #[arg(long)]
        prompt: String,
        /// Cron: 5 fields (or 6, seconds first); days of the week as names, e.g. "30 7 * * MON-FRI".
        #[arg(long, value_name = "EXPR")]
        cron: Option<String>,
        /// The cron expression's time zone (IANA name) [default: UTC].
        #[arg(long, value_name = "ZONE", requires = "cron")]
        tz: Option<String>,
        /// A fixed interval: seconds, or 30s, 15m, 2h, 1d.
        #[arg(long, value_name = "DURATION")]
        every: Option<String>,
        /// Once, at an instant such as 2026-12-24T18:00:00+01:00.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Run without the group's conversation history.
        #[arg(long)]
        isolated: bool,
        /// Keep the result in the run log only; post nothing to the chat.
        #[arg(long)]
        silent: bool,
        /// Skip slots missed while the daemon was down (default: run one of them on catch-up).
        #[arg(long)]
        skip_missed: bool,
    },
    /// Tasks, with their next due time.
    List {
        #[arg(long)]
        group: Option<GroupId>,
    },
    /// Stop running a task until it is resumed.
    Pause { id: i64 },
    /// Run a paused task again from its next slot (paused slots are not caught up).
    Resume { id: i64 },
    /// Remove a task (its run log stays).
    Rm { id: i64 },
    /// A task's run log: status, duration, error, newest first.
    Runs {
        id: i64,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// The turn a `policy check` is made for.
#[derive(clap::Args)]
struct TurnArgs {
    #[arg(long, default_value = "main")]
    group: GroupId,
    /// The channel the turn came from.
    #[arg(long, default_value = "terminal")]
    channel: String,
    /// Who sent the message: owner, approver or other.
    #[arg(long, default_value = "owner", value_parser = ["owner", "approver", "other"])]
    sender: String,
    /// The turn has read outside content.
    #[arg(long)]
    tainted: bool,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the decision for one network request (and, for https, its tunnel) that the
    /// allowlist let through, and the rule that made it.
    CheckEgress {
        /// The request's URL (http or https).
        url: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request has a body.
        #[arg(long)]
        body: bool,
        /// A request header, "Name: value" (repeat for more). Every header but the plain
        /// reading ones counts as data here, even one holding only a secret's placeholder.
        #[arg(long, value_name = "NAME: VALUE")]
        header: Vec<String>,
        /// The tool making it: shell, web_fetch or http_request.
        #[arg(long, default_value = "shell")]
        tool: String,
        #[command(flatten)]
        turn: TurnArgs,
    },
    /// Print the decision for one call and the rule that made it.
    Check {
        /// The tool's name.
        #[arg(long)]
        tool: String,
        /// The call's arguments as a JSON object.
        #[arg(long, default_value = "{}", value_name = "JSON")]
        args: String,
        #[command(flatten)]
        turn: TurnArgs,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Pending requests (all recent ones with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Approve a request (by id or code).
    Approve {
        id: String,
        /// Approve every later call with exactly these arguments too.
        #[arg(long)]
        always: bool,
        /// Answer as this approver (one with `terminal = true`) [default: the only one].
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
    },
    /// Deny a request (by id or code).
    Deny {
        id: String,
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 1 naming the first broken event. Prints the newest event's
    /// SEQ:HASH: kept elsewhere, it later proves nothing up to it was changed or removed.
    Verify {
        /// A SEQ:HASH printed by an earlier verify: fail unless the log still holds that event
        /// with that hash.
        #[arg(long, value_name = "SEQ:HASH")]
        anchor: Option<audit::Anchor>,
    },
    /// Events, oldest first.
    Show {
        #[arg(long)]
        group: Option<GroupId>,
        /// An event kind (message_received, prompt, model_response, tool_call,
        /// policy_decision, approval_requested, approval_answered, tool_result, egress, ...);
        /// one that does not exist is an error listing them all.
        #[arg(long)]
        kind: Option<String>,
        /// Only events since: unix seconds, YYYY-MM-DD, an RFC 3339 time such as 2026-11-18T09:00:00Z, or an age such as 30m, 2h, 7d.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
    /// Every event as JSON lines: the hashed event, its previous hash and its hash.
    Export {
        /// JSON lines (the only format).
        #[arg(long, required = true)]
        jsonl: bool,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Store (or replace) a secret. The value is read from stdin: one line, at least 8 bytes.
    /// Takes effect at the next start of the daemon.
    Set {
        /// The secret's name; it becomes an environment variable in the granted groups'
        /// sandboxes, holding the placeholder (A-Z, 0-9, '_').
        name: String,
        /// A host the value may be sent to: a name, or *.suffix for any name under it. Holds
        /// for the sandboxes' requests and for nanoclaw's own clients (model, Telegram, mail).
        #[arg(long = "host", required = true, value_name = "HOST")]
        hosts: Vec<String>,
        /// A group whose sandbox gets the placeholder (repeatable). None: only nanoclaw itself
        /// uses the secret (the model API key).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<GroupId>,
        /// A header the proxy sets on every request to the bound hosts, e.g. Authorization.
        #[arg(long, value_name = "NAME")]
        header: Option<String>,
        /// The header's value, with {} for the secret [default: {}].
        #[arg(long, requires = "header", value_name = "FORMAT")]
        format: Option<String>,
        /// Also replace the placeholder in URLs (path and query string).
        #[arg(long)]
        in_query: bool,
        /// Also replace the placeholder in request bodies.
        #[arg(long)]
        in_body: bool,
    },
    /// List secrets: names, hosts, groups and placeholders. Never values.
    List,
    /// Remove a secret.
    Rm {
        /// The secret's name.
        name: String,
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
                "next: store your model key with `nanoclaw secret set ANTHROPIC_API_KEY --host api.anthropic.com` (value on stdin), or configure [model] in the file above; then `nanoclaw run` or `nanoclaw chat`"
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => runtime(true)?.block_on(daemon(home)),
        Command::Chat { group } => runtime(false)?.block_on(terminal::chat(home, group)),
        Command::Ask { group, text } => {
            let text = text.join(" ");
            if text.trim().is_empty() {
                return Err(UsageError("the message is empty".into()).into());
            }
            runtime(false)?.block_on(terminal::ask(home, group, text))
        }
        Command::Doctor => runtime(false)?.block_on(doctor::run(home)),
        Command::Sandbox {
            command: SandboxCommand::Exec { group, command },
        } => runtime(false)?.block_on(sandbox_exec(home, group, command)),
        Command::Secret { command } => secret_command(&home, command),
        Command::Policy {
            command: PolicyCommand::Check { tool, args, turn },
        } => policy_check(&home, &tool, &args, &turn),
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
        } => {
            home.require_initialized()
                .map_err(|e| UsageError(e.to_string()))?;
            let policy = policy_file::load(&home)?;
            let turn = policy_file::TurnOf {
                group: &turn.group,
                channel: &turn.channel,
                sender: sender_role_named(&turn.sender),
                tainted: turn.tainted,
                tool: &tool,
            };
            policy_file::check_egress(&policy, &turn, &url, &method, body, &header)
                .map_err(UsageError)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { command } => approvals_command(&home, command),
        Command::Audit { command } => audit_command(&home, command),
        Command::Task { command } => task_command(&home, command),
        Command::Memory { command } => runtime(false)?.block_on(memory_command(home, command)),
    }
}

fn task_command(home: &Home, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(home)?;
    let store = Store::open(&home.db_path())
        .with_context(|| format!("opening {}", home.db_path().display()))?;
    let now = store::now();
    let time = |t: Option<i64>| t.map(audit::format_time).unwrap_or_else(|| "-".into());
    let usage = |e: tasks::TaskError| -> anyhow::Error {
        match e {
            tasks::TaskError::Store(e) => e.into(),
            other => UsageError(other.to_string()).into(),
        }
    };
    let changed = match command {
        TaskCommand::Add {
            group,
            name,
            prompt,
            cron,
            tz,
            every,
            at,
            isolated,
            silent,
            skip_missed,
        } => {
            let when = match (cron, every, at) {
                (Some(expr), _, _) => tasks::When::Cron {
                    expr,
                    tz: tz.unwrap_or_else(|| "UTC".into()),
                },
                (_, Some(e), _) => tasks::When::Every(e),
                (_, _, Some(a)) => tasks::When::At(a),
                _ => return Err(UsageError("give one of --cron, --every, --at".into()).into()),
            };
            let new = tasks::NewTask {
                group: group.to_string(),
                name,
                when,
                prompt,
                isolated,
                post: !silent,
                catch_up: !skip_missed,
            };
            let task = tasks::add(&store, &new, now).map_err(usage)?;
            println!(
                "task {} added; first run at {}",
                task.id,
                time(task.next_due)
            );
            true
        }
        TaskCommand::List { group } => {
            let list = tasks::list(&store, group.as_ref().map(|g| g.as_str()))?;
            if list.is_empty() {
                println!("no tasks");
            }
            for t in list {
                println!(
                    "{} {} [{}] group {}: {} {}{}; next {}{}{}\n  prompt: {}",
                    t.id,
                    display::for_terminal(&t.name),
                    t.status,
                    t.group,
                    t.kind,
                    t.spec,
                    if t.kind == "cron" {
                        format!(" ({})", t.tz)
                    } else {
                        String::new()
                    },
                    time(t.next_due),
                    if t.isolated { "; isolated" } else { "" },
                    if t.post { "" } else { "; silent" },
                    display::for_terminal(&t.prompt)
                );
            }
            false
        }
        TaskCommand::Pause { id } => {
            let t = tasks::set_status(&store, id, "paused", None, now).map_err(usage)?;
            println!("task {} paused", t.id);
            true
        }
        TaskCommand::Resume { id } => {
            let t = tasks::set_status(&store, id, "active", None, now).map_err(usage)?;
            println!("task {} resumed; next run at {}", t.id, time(t.next_due));
            true
        }
        TaskCommand::Rm { id } => {
            tasks::set_status(&store, id, "removed", None, now).map_err(usage)?;
            println!("task {id} removed");
            true
        }
        TaskCommand::Runs { id, limit } => {
            if tasks::get(&store, id)?.is_none() {
                return Err(UsageError(format!("no task {id}")).into());
            }
            for r in tasks::runs(&store, id, limit)? {
                let took = r
                    .finished_at
                    .map(|f| format!(" in {:.1}s", (f - r.started_at) as f64 / 1000.0))
                    .unwrap_or_default();
                println!(
                    "run {} for {} (attempt {}): {}{}, started {}{}",
                    r.id,
                    audit::format_time(r.slot),
                    r.attempt,
                    r.status,
                    took,
                    audit::format_time(r.started_at),
                    match (&r.error, &r.result) {
                        (Some(e), _) => format!(
                            "\n  error: {}{}",
                            display::for_terminal(e),
                            r.retry_at
                                .map(|at| format!("\n  tried again at {}", audit::format_time(at)))
                                .unwrap_or_default()
                        ),
                        (None, Some(res)) => format!(
                            "\n  result: {}",
                            display::for_terminal(&res.chars().take(200).collect::<String>())
                        ),
                        _ => String::new(),
                    }
                );
            }
            false
        }
    };
    if changed {
        wake_daemon(home, &config);
    }
    Ok(ExitCode::SUCCESS)
}

/// Tell a running daemon the schedule changed, so it need not wait for its next look. Best
/// effort: with no daemon listening, nothing happens.
fn wake_daemon(home: &Home, config: &Config) {
    use std::io::{Read, Write};
    let Ok(token) = home.api_token() else { return };
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(
        &config.api_listen,
        std::time::Duration::from_millis(300),
    ) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let request = format!(
        "POST /v1/tasks/wake HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        config.api_listen
    );
    if conn.write_all(request.as_bytes()).is_ok() {
        let mut sink = [0u8; 256];
        let _ = conn.read(&mut sink);
    }
}

/// The role `--sender` names (clap has checked it is one of the three).
fn sender_role_named(sender: &str) -> nanoclaw_core::policy::SenderRole {
    use nanoclaw_core::policy::SenderRole;
    match sender {
        "approver" => SenderRole::Approver,
        "other" => SenderRole::Other,
        _ => SenderRole::Owner,
    }
}

fn policy_check(home: &Home, tool: &str, args: &str, turn: &TurnArgs) -> anyhow::Result<ExitCode> {
    use nanoclaw_core::policy::Context;
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let policy = policy_file::load(home)?;
    let args: serde_json::Value = serde_json::from_str(args)
        .map_err(|e| UsageError(format!("--args is not valid JSON: {e}")))?;
    if !args.is_object() {
        return Err(UsageError("--args must be a JSON object".into()).into());
    }
    // Judged as the gate judges it: in the form the tool reads.
    let call = tools::canonical(&nanoclaw_core::tool::ToolCall {
        id: String::new(),
        name: tool.to_owned(),
        arguments: args,
    });
    let verdict = policy.decide(&Context {
        tool,
        args: &call.arguments,
        group: turn.group.as_str(),
        channel: &turn.channel,
        sender: sender_role_named(&turn.sender),
        tainted: turn.tainted,
        effect: tools::effect_of(tool),
    });
    policy_file::print_verdict(None, &verdict);
    Ok(ExitCode::SUCCESS)
}

/// Who is answering at this machine (the CLI, or the HTTP API, both behind the owner's own
/// access): `named` if given and an approver with `terminal = true`; otherwise the one terminal
/// approver among the request's approvers (or the only terminal approver at all). A name that
/// is not a terminal approver is recorded as given, and does not count.
pub fn terminal_approver(
    policy: &nanoclaw_core::Policy,
    named: Option<&str>,
    request: Option<&approvals::Request>,
) -> Result<String, String> {
    let terminal: Vec<&str> = policy
        .approvers()
        .iter()
        .filter(|a| a.terminal)
        .map(|a| a.name.as_str())
        .collect();
    if let Some(name) = named {
        return Ok(if terminal.contains(&name) {
            name.to_owned()
        } else {
            format!("{name} (not a terminal approver)")
        });
    }
    let for_request: Vec<&str> = match request {
        Some(r) => terminal
            .iter()
            .copied()
            .filter(|t| r.approvers.iter().any(|a| a == t))
            .collect(),
        None => Vec::new(),
    };
    match (for_request.as_slice(), terminal.as_slice()) {
        ([one], _) | ([], [one]) => Ok((*one).to_owned()),
        ([], []) => Err("no approver has terminal = true in policy.toml".into()),
        (several, _) if several.len() > 1 => Err(format!(
            "several approvers of this request answer at this terminal ({}); pick one with --as NAME",
            several.join(", ")
        )),
        _ => Err(format!(
            "several approvers answer at this terminal ({}); pick one with --as NAME",
            terminal.join(", ")
        )),
    }
}

pub fn describe_tally(t: &nanoclaw_core::approval::Tally) -> String {
    use nanoclaw_core::approval::Tally;
    match t {
        Tally::Approved { always: true } => "approved, for every later identical call".into(),
        Tally::Approved { always: false } => "approved".into(),
        Tally::Denied { by } => format!("denied by {by}"),
        Tally::Pending { approvals } => {
            format!("recorded: {approvals} approval(s) so far; more are needed")
        }
    }
}

fn approvals_command(home: &Home, command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    use nanoclaw_core::approval::Vote;
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let policy = policy_file::load(home)?;
    let store = Store::open(&home.db_path())
        .with_context(|| format!("opening {}", home.db_path().display()))?;
    let (key, approver, vote) = match command {
        ApprovalsCommand::List { all } => {
            let requests = approvals::list(&store, all)?;
            if requests.is_empty() {
                println!(
                    "{}",
                    if all {
                        "no requests"
                    } else {
                        "no pending requests"
                    }
                );
            }
            for r in requests {
                println!(
                    "{} [{}] {}: group {} tool {} {}
  why: {}
  approvers: {} ({} needed)",
                    r.id,
                    r.code,
                    r.status,
                    r.group,
                    r.tool,
                    display::for_terminal(&r.arguments.to_string()),
                    display::for_terminal(&r.reason),
                    r.approvers.join(", "),
                    r.quorum
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Approve {
            id,
            always,
            approver,
        } => (id, approver, Vote::Approve { always }),
        ApprovalsCommand::Deny { id, approver } => (id, approver, Vote::Deny),
    };
    let request = approvals::find(&store, &key)?;
    let who =
        terminal_approver(&policy, approver.as_deref(), request.as_ref()).map_err(UsageError)?;
    let audit = audit::Audit::open(&home.db_path(), nanoclaw_core::secret::Replacer::default())?;
    let result = approvals::answer(&store, &audit, &key, &who, "cli", vote);
    audit.close();
    match result {
        Ok(tally) => {
            println!("{}", describe_tally(&tally));
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ approvals::AnswerError::NotFound(_)) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

fn audit_command(home: &Home, command: AuditCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let db = home.db_path();
    // Reading the log never creates it: a missing or emptied database is reported, not
    // replaced by a fresh one whose empty chain would verify.
    match std::fs::metadata(&db) {
        Ok(m) if m.len() > 0 => {}
        Ok(_) => {
            return Err(anyhow::anyhow!(
                "{} is empty: the database and its audit log are gone",
                db.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow::anyhow!(
                "{} does not exist: there is no audit log yet (the daemon, chat and ask write it)",
                db.display()
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", db.display())),
    }
    // Opening the store runs its migrations, so an older data dir has the audit table.
    drop(Store::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match command {
        AuditCommand::Verify { anchor } => match audit::verify(&db, anchor.as_ref())? {
            Ok(verified) => {
                writeln!(out, "ok: {} events, hash chain intact", verified.events)?;
                writeln!(
                    out,
                    "{} anchors of {} hold",
                    verified.anchors,
                    audit::ANCHORS_FILE
                )?;
                if let Some(anchor) = anchor {
                    writeln!(out, "anchor {anchor} holds")?;
                }
                if let Some(head) = verified.head {
                    writeln!(out, "newest: {head}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                out.flush()?;
                eprintln!("nanoclaw: {broken}");
                Ok(ExitCode::FAILURE)
            }
        },
        AuditCommand::Show { group, kind, since } => {
            let since = match since {
                Some(s) => Some(
                    audit::parse_since(&s, store::now())
                        .ok_or_else(|| UsageError(format!("--since {s:?}: expected unix seconds, YYYY-MM-DD, an RFC 3339 time such as 2026-11-18T09:00:00Z, or an age such as 30m, 2h, 7d")))?,
                ),
                None => None,
            };
            if let Some(k) = &kind
                && !audit::KINDS.contains(&k.as_str())
            {
                return Err(UsageError(format!(
                    "--kind {k:?} is no event kind (kinds: {})",
                    audit::KINDS.join(", ")
                ))
                .into());
            }
            let filter = audit::Filter {
                group: group.map(|g| g.to_string()),
                kind,
                since,
            };
            audit::export(&db, &filter, |e| {
                let data = serde_json::from_str::<serde_json::Value>(&e.body)
                    .ok()
                    .and_then(|v| v.get("data").map(|d| d.to_string()))
                    .unwrap_or_default();
                let shown: String = data.chars().take(300).collect();
                writeln!(
                    out,
                    "{} {} {} {} {}{}",
                    e.seq,
                    audit::format_time(e.at),
                    e.kind,
                    e.group.as_deref().unwrap_or("-"),
                    display::for_terminal(&shown),
                    if shown.len() < data.len() { "…" } else { "" }
                )?;
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { .. } => {
            audit::export(&db, &audit::Filter::default(), |e| {
                let hex = nanoclaw_core::hex::encode;
                writeln!(
                    out,
                    "{{\"event\":{},\"prev_hash\":\"{}\",\"hash\":\"{}\"}}",
                    e.body,
                    hex(&e.prev_hash),
                    hex(&e.hash)
                )?;
                Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn secret_command(home: &Home, command: SecretCommand) -> anyhow::Result<ExitCode> {
    use std::io::{IsTerminal, Read, Write};
    home.require_initialized()
        .map_err(|e| UsageError(e.to_string()))?;
    let _lock = secrets::Secrets::lock(home)?;
    let mut store = secrets::Secrets::load(home)?;
    let mut out = std::io::stdout().lock();
    match command {
        SecretCommand::Set {
            name,
            hosts,
            groups,
            header,
            format,
            in_query,
            in_body,
        } => {
            nanoclaw_core::secret::check_name(&name).map_err(|e| UsageError(e.to_string()))?;
            for h in &hosts {
                let rule = nanoclaw_egress::Rule::parse(h, None, false)
                    .map_err(|e| UsageError(format!("--host {h:?}: {e}")))?;
                if rule.ports != nanoclaw_egress::policy::DEFAULT_PORTS {
                    return Err(UsageError(format!(
                        "--host {h:?}: a secret is bound to host names, not ports"
                    ))
                    .into());
                }
            }
            if let Some(h) = &header {
                if h.parse::<hyper::header::HeaderName>().is_err() {
                    return Err(
                        UsageError(format!("--header {h:?} is not a valid header name")).into(),
                    );
                }
                // The proxy owns these: they frame the request or steer where it goes.
                const FRAMING: &[&str] = &[
                    "host",
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "keep-alive",
                    "upgrade",
                    "te",
                    "trailer",
                    "proxy-authorization",
                    "proxy-connection",
                ];
                if FRAMING.contains(&h.to_ascii_lowercase().as_str()) {
                    return Err(UsageError(format!(
                        "--header {h:?}: the proxy sets that header itself; a secret cannot"
                    ))
                    .into());
                }
            }
            if let Some(f) = &format {
                if f.matches("{}").count() != 1 {
                    return Err(UsageError(format!(
                        "--format {f:?} must hold {{}} exactly once, where the value goes"
                    ))
                    .into());
                }
                if f.chars().any(char::is_control) {
                    return Err(UsageError(format!(
                        "--format {f:?} holds a control character (a line break would end the header)"
                    ))
                    .into());
                }
            }
            // A group named twice is granted once.
            let groups: Vec<GroupId> = groups.into_iter().fold(Vec::new(), |mut kept, g| {
                if !kept.contains(&g) {
                    kept.push(g);
                }
                kept
            });
            let mut value = String::new();
            if std::io::stdin().is_terminal() {
                eprint!("value of {name} (one line, then Enter): ");
                std::io::stdin().read_line(&mut value)?;
            } else {
                std::io::stdin()
                    .read_to_string(&mut value)
                    .context("reading the value from stdin")?;
            }
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            if value.is_empty() {
                return Err(UsageError(format!("no value for {name} on stdin")).into());
            }
            let key = secrets::SecretsKey::locate(home, store.is_empty())?;
            // Opening the others first proves the key is the one they were sealed with.
            store.open_all(&key)?;
            let binding = secrets::Binding {
                hosts: hosts
                    .iter()
                    .map(|h| nanoclaw_egress::policy::normalize_host(h))
                    .collect(),
                groups,
                header,
                format,
                in_query,
                in_body,
            };
            store
                .set(&key, &name, value, binding)
                .map_err(|e| UsageError(format!("{e:#}")))?;
            store.save()?;
            writeln!(
                out,
                "stored {name}; restart `nanoclaw run` for it to take effect"
            )?;
        }
        SecretCommand::List => {
            if store.is_empty() {
                writeln!(out, "no secrets")?;
            }
            for s in store.list() {
                let groups: Vec<String> = s.groups.iter().map(|g| g.to_string()).collect();
                let mut extras = Vec::new();
                if let Some(h) = &s.header {
                    extras.push(format!(
                        "header {h}: {}",
                        s.format.as_deref().unwrap_or("{}")
                    ));
                }
                if s.in_query {
                    extras.push("in URLs".into());
                }
                if s.in_body {
                    extras.push("in bodies".into());
                }
                writeln!(
                    out,
                    "{}\n  hosts: {}\n  groups: {}\n  placeholder: {}{}",
                    s.name,
                    s.hosts.join(", "),
                    if groups.is_empty() {
                        "(none: used by nanoclaw itself only)".into()
                    } else {
                        groups.join(", ")
                    },
                    s.placeholder,
                    if extras.is_empty() {
                        String::new()
                    } else {
                        format!("\n  also: {}", extras.join("; "))
                    }
                )?;
            }
        }
        SecretCommand::Rm { name } => {
            if !store.remove(&name) {
                return Err(UsageError(format!("no secret named {name:?}")).into());
            }
            store.save()?;
            writeln!(out, "removed {name}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every stored secret with its value, or a clear error when they cannot be opened.
fn open_secrets(home: &Home) -> anyhow::Result<Vec<secrets::OpenSecret>> {
    let store = secrets::Secrets::load(home)?;
    if store.is_empty() {
        return Ok(Vec::new());
    }
    store.check().map_err(|e| UsageError(format!("{e:#}")))?;
    let key = secrets::SecretsKey::locate(home, false)?;
    store.open_all(&key)
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
/// The API key is the secret named like the provider's variable (ANTHROPIC_API_KEY,
/// OPENAI_API_KEY); the environment variable of that name is the fallback.
fn model_client(
    home: &Home,
    config: &Config,
    secrets: &[secrets::OpenSecret],
) -> Result<ModelClient, String> {
    let m = &config.model;
    let name = m.provider.key_env();
    let stored = secrets.iter().find(|s| s.meta.name == name);
    if let Some(secret) = stored {
        check_binding(&secret.meta, "model.base_url", &host_of_url(&m.base_url))?;
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
    let secrets = open_secrets(&home)?;
    let policy = Arc::new(policy_file::load(&home)?);
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
        "config_loaded",
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
        vec![Arc::new(approvals::StderrPresenter)],
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
        },
        lock,
    ))
}

/// The value of the stored secret a channel's config names at `key`, or a usage error saying
/// how to store it.
/// The value of the secret a channel's `key` names, checked to be bound (`secret set --host`)
/// to every host in `sends_to` (config key, host) the channel sends it to: the binding holds
/// for nanoclaw's own clients as it does for the sandboxes' requests.
fn channel_secret<'a>(
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
        check_binding(&secret.meta, config_key, host).map_err(UsageError)?;
    }
    Ok(&secret.value)
}

/// Whether `secret` may go to `host`, which the setting `config_key` names; the refusal says
/// how to bind it.
fn check_binding(
    secret: &secrets::StoredSecret,
    config_key: &str,
    host: &str,
) -> Result<(), String> {
    let host = nanoclaw_egress::policy::normalize_host(host);
    let bound = secret.hosts.iter().any(|h| {
        nanoclaw_egress::Rule::parse(h, None, false).is_ok_and(|r| r.pattern.matches(&host))
    });
    if bound {
        return Ok(());
    }
    Err(format!(
        "secret {} is bound to {}, but {config_key} would send it to {host}: store it again with \
         --host {host} (nanoclaw secret set {} --host {host} ...), or change {config_key}",
        secret.name,
        secret.hosts.join(", "),
        secret.name
    ))
}

/// The host of a `host:port` setting (brackets kept around an IPv6 address, as rules write it).
fn host_of_address(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

/// The host a URL setting sends to, as the HTTP client reads it (empty when it has none: then
/// no binding matches).
fn host_of_url(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn daemon(home: Home) -> anyhow::Result<ExitCode> {
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
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let api = Arc::new(api::Api {
        store: Arc::clone(&agent.store),
        queue: Arc::clone(&queue),
        token,
        audit: Arc::clone(agent.tools.audit()),
        policy: Arc::clone(agent.tools.policy()),
        tasks_changed: Arc::clone(agent.tools.tasks_changed()),
        webhook: webhook.clone(),
    });
    let delivery = webhook.map(|w| tokio::spawn(w.deliver(Arc::clone(&agent.store))));
    let mut channel_tasks = Vec::new();
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
            Arc::clone(agent.tools.policy()),
            Arc::clone(agent.tools.audit()),
        )?);
        agent
            .tools
            .approvals()
            .add_presenter(Arc::new(telegram::TelegramPresenter {
                telegram: Arc::clone(&bot),
            }));
        channel_tasks.push(tokio::spawn(Arc::clone(&bot).poll(Arc::clone(&queue))));
        channel_tasks.push(tokio::spawn(bot.deliver()));
    }
    if let Some(e) = &agent.config.email {
        let password = channel_secret(
            &secrets,
            "channels.email.password_secret",
            &e.password_secret,
            "<the mail server>",
            &[
                ("channels.email.imap", host_of_address(&e.imap)),
                ("channels.email.smtp", host_of_address(&e.smtp)),
            ],
        )?;
        let mail = Arc::new(email::Email::new(
            e.clone(),
            password.to_owned(),
            Arc::clone(&agent.store),
        ));
        channel_tasks.push(tokio::spawn(Arc::clone(&mail).receive(Arc::clone(&queue))));
        channel_tasks.push(tokio::spawn(mail.deliver()));
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
    shutdown_signal().await;
    server.abort();
    runner.abort();
    if let Some(d) = delivery {
        d.abort();
    }
    for t in channel_tasks {
        t.abort();
    }
    agent.tools.shutdown().await;
    agent.tools.audit().close();
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

async fn memory_command(home: Home, command: MemoryCommand) -> anyhow::Result<ExitCode> {
    let group = match &command {
        MemoryCommand::Show { group } | MemoryCommand::Trust { group, .. } => group.clone(),
    };
    let config = load_config(&home)?;
    let store = Store::open(&home.db_path())?;
    // Read through the sandbox, as the agent does: the host never opens a workspace path.
    let backend = backend::choose(&home, &config, false)
        .await
        .map_err(anyhow::Error::msg)?;
    let read = memory::read(
        backend.as_ref(),
        &home.workspace(&group)?,
        config.limits_for(&group),
    )
    .await;
    backend.shutdown().await;
    let text = read.map_err(|e| anyhow::anyhow!("reading {}'s MEMORY.md: {e}", group))?;
    let hash = memory::hash(&text);
    match command {
        MemoryCommand::Show { .. } => {
            print!("{}", display::for_terminal(&text));
            if !text.is_empty() && !text.ends_with('\n') {
                println!();
            }
            let judged = match store.memory_judgement(&group)? {
                Some((judged, true)) if judged == hash => {
                    "outside content: written while a turn had read outside content; turns that see it are tainted"
                }
                Some((judged, false)) if judged == hash => "trusted",
                _ => "not judged yet (the next turn judges it)",
            };
            println!("-- {} of group {group}: {hash}; {judged}", memory::FILE);
            Ok(ExitCode::SUCCESS)
        }
        MemoryCommand::Trust { hash: reviewed, .. } => {
            let reviewed = reviewed.trim().to_ascii_lowercase();
            if nanoclaw_core::hex::decode(&reviewed).is_none_or(|bytes| bytes.len() != 32) {
                return Err(UsageError(format!(
                    "{reviewed:?} is not a hash: give the 64 hex digits `nanoclaw memory show --group {group}` prints"
                ))
                .into());
            }
            if reviewed != hash {
                return Err(UsageError(format!(
                    "{}'s MEMORY.md has hash {hash} now, not {}: it changed since it was reviewed; look again with `nanoclaw memory show --group {group}`",
                    group,
                    reviewed.trim()
                ))
                .into());
            }
            store.trust_memory(&group, &hash)?;
            println!("{}'s MEMORY.md ({hash}) is trusted", group);
            Ok(ExitCode::SUCCESS)
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
    let secrets = open_secrets(&home)?;
    let net =
        egress::Egress::new(&home, Arc::new(config.clone()), &secrets, None)?.for_group(&group)?;
    // The owner's own command, not a turn's: held to the allowlist alone.
    let call = net.open_call("sandbox exec".into(), None);
    let req = nanoclaw_sandbox::ExecRequest {
        workspace: home.workspace(&group)?,
        program: nanoclaw_sandbox::Program::Command(command),
        stdin: Vec::new(),
        limits: config.limits_for(&group),
        proxy_socket: Some(net.proxy_socket.clone()),
        trust_dir: Some(net.trust_dir.clone()),
        env: net.env.clone(),
    };
    // As the shell tool: a command past its egress budget is stopped.
    let result = call.bounded(backend.exec(&req)).await;
    drop(call);
    backend.shutdown().await;
    let out = result??;
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
