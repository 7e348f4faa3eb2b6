//! The command line: the clap grammar (here) and one handler per subcommand (beside it). The
//! handlers are adapters: they reach the agent, the store and the sandbox only through the same
//! functions the daemon uses.

pub mod approvals;
pub mod audit;
pub mod doctor;
pub mod init;
pub mod mcp;
pub mod memory;
pub mod policy;
pub mod sandbox;
pub mod secret;
pub mod status;
pub mod stop;
pub mod task;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use nanoclaw_core::GroupId;

#[derive(Parser)]
#[command(
    name = "nanoclaw",
    version,
    about = "A self-hosted personal agent that runs every command in a sandbox."
)]
pub struct Cli {
    /// The data dir [default: $NANOCLAW_HOME, or ~/.nanoclaw]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Write the data dir: a commented config and policy, the API token, the local CA, and the
    /// secrets key (outside the data dir).
    Init,
    /// Run the daemon: the agent, its channels (HTTP API, Telegram, email, webhook) and the
    /// task scheduler.
    Run,
    /// Talk to the agent in this terminal (/new starts a fresh session, /stop or Ctrl-C stops a
    /// running turn, /quit or Ctrl-D leaves); each tool call shows as it starts and ends.
    Chat {
        /// The group to talk to.
        #[arg(long, default_value = "main")]
        group: GroupId,
    },
    /// Send one message, print the reply, exit (1 when the turn fails, 130 when Ctrl-C
    /// cancelled it); each tool call shows on stderr as it starts and ends.
    Ask {
        /// The group to talk to.
        #[arg(long, default_value = "main")]
        group: GroupId,
        /// The message.
        #[arg(required = true, num_args = 1.., value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Check the sandbox, the secrets, the model (its key, by asking for the model list) and
    /// each configured channel (Telegram's getMe, an IMAP login) for real; say what is wrong.
    Doctor,
    /// End a group's running turn now (its sandboxed commands are killed, its pending approvals
    /// denied); queued messages stay queued. Needs the daemon.
    Stop {
        #[arg(long, default_value = "main")]
        group: GroupId,
    },
    /// Have the running daemon read policy.toml and nanoclaw.toml again and put them in force
    /// (the sandbox, daemon, scheduler and api sections and egress.extra_roots at the next
    /// start, as it says); a file that fails validation changes nothing. SIGHUP does the same.
    Reload,
    /// Keep a group from starting turns (chat turns and task runs) until `resume`.
    Pause {
        #[arg(long)]
        group: GroupId,
    },
    /// Let a paused group start turns again; what waited is answered.
    Resume {
        #[arg(long)]
        group: GroupId,
    },
    /// Whether the daemon runs and what it is doing: version, uptime, sandbox, the model and
    /// each channel with its connection, groups at work, pending approvals, next tasks,
    /// secrets. Exit 0 when it runs healthy, 1 with the reasons otherwise.
    Status {
        /// The status as one JSON object.
        #[arg(long)]
        json: bool,
    },
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
    /// MCP servers: their settings, pinned tools and any changed tool list waiting to be trusted.
    Mcp {
        #[command(subcommand)]
        command: McpCommand,
    },
}

#[derive(Subcommand)]
pub enum McpCommand {
    /// Each configured server: command, groups, hosts, secrets, pinned tools, pending changes.
    List,
    /// Trust a server's changed tool list, named by the hash `mcp list` shows: its tools are
    /// pinned as listed and offered again. If the server changed its list since, nothing is
    /// trusted.
    Trust {
        /// The server's name in nanoclaw.toml.
        server: String,
        /// The hash of the list reviewed (`mcp list` shows it; at least its first 12 digits).
        /// Without it, the list waiting is named with its hash and nothing is trusted.
        list: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum MemoryCommand {
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
pub enum TaskCommand {
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
        /// A fixed interval with its unit: 30s, 15m, 2h, 1d.
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
pub struct TurnArgs {
    #[arg(long, default_value = "main")]
    pub group: GroupId,
    /// The channel the turn came from.
    #[arg(long, default_value = "terminal")]
    pub channel: String,
    /// Who sent the message: owner, approver or other.
    #[arg(long, default_value = "owner")]
    pub sender: nanoclaw_core::policy::SenderRole,
    /// The turn has read outside content.
    #[arg(long)]
    pub tainted: bool,
}

#[derive(Subcommand)]
pub enum PolicyCommand {
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
pub enum ApprovalsCommand {
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
pub enum AuditCommand {
    /// Check the hash chain; exit 1 naming the first broken event. Prints the newest event's
    /// SEQ:HASH: kept elsewhere, it later proves nothing up to it was changed or removed.
    Verify {
        /// A SEQ:HASH printed by an earlier verify: fail unless the log still holds that event
        /// with that hash.
        #[arg(long, value_name = "SEQ:HASH")]
        anchor: Option<crate::audit::Anchor>,
    },
    /// Events, oldest first; with --turn (or --group G --last), one turn as a timeline: what
    /// it saw, how each call was decided and by which rule, who approved, what ran, what went
    /// out, and the reply.
    Show {
        #[arg(long)]
        group: Option<GroupId>,
        /// One turn's timeline (its id, as `turn` in the events).
        #[arg(long, value_name = "TURN", conflicts_with_all = ["last", "kind", "since"])]
        turn: Option<i64>,
        /// The newest turn of --group as a timeline.
        #[arg(long, requires = "group", conflicts_with_all = ["kind", "since"])]
        last: bool,
        /// The events as JSON lines (the whole event bodies) instead of one line each.
        #[arg(long)]
        json: bool,
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
pub enum SecretCommand {
    /// Store (or replace) a secret. The value is read from stdin: one line, at least 8 bytes.
    /// A running daemon uses it from before this returns.
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
    /// Remove a secret. A running daemon stops using it before this returns: no new request
    /// carries it, and connections that could have carried it are closed.
    Rm {
        /// The secret's name.
        name: String,
    },
    /// Give a secret a new value (on stdin), keeping its bindings and placeholder; in force in
    /// a running daemon before this returns.
    Rotate {
        /// The secret's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum SandboxCommand {
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

pub use crate::exit::UsageError;
