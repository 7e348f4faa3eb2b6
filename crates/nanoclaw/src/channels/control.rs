//! The control socket: how the CLI reaches a running daemon, so that `chat`, `ask` and
//! `status` work while `nanoclaw run` owns the data dir. A Unix socket at `run/control.sock` in
//! the data dir, mode 0600, serving only peers with the daemon's own uid (`SO_PEERCRED`); the
//! sandboxes never see it (the data dir is not mounted into them, and the proxy sockets beside
//! it are bound in one by one).
//!
//! Why a Unix socket and not the HTTP API: the peer's uid comes from the kernel, so no token
//! file has to be read or can leak, and nothing listens on the network.
//!
//! The protocol is JSON lines. A client sends one request line (at most [`MAX_LINE`] bytes,
//! within [`READ_TIMEOUT`]); the daemon answers with event lines and closes. Every request
//! carries the client's version; a mismatch is refused naming both. A message goes in through
//! [`super::accept`] on the `terminal` channel, as the owner's, like a line typed in `chat`.
//! This adapter decides nothing: the agent's turn, gate and approvals are the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoclaw_core::GroupId;
use nanoclaw_core::approval::Vote;
use nanoclaw_core::policy::SenderRole;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast};

use crate::agent::approvals::{Presenter, Request as ApprovalRequest};
use crate::agent::progress::Progress;
use crate::agent::queue::Queue;

/// The socket, under the data dir.
pub const SOCKET: &str = "run/control.sock";
/// The longest request line read.
pub const MAX_LINE: usize = 1024 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// How often a waiting `ask` looks for its reply in the store.
const REPLY_POLL: Duration = Duration::from_millis(20);
/// How often a `watch` looks for task results in the store.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// Approval requests kept for clients that are slow to read them.
const EVENT_BACKLOG: usize = 64;

/// What a client asks for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// The daemon's health and what it is doing.
    Status {},
    /// One message from the owner at this machine; the answer streams back.
    Ask { group: GroupId, text: String },
    /// Ctrl-C at the terminal during `ask` or `chat`: withdraw the message if no turn took it
    /// yet, or stop its turn if that is the one running.
    Cancel { group: GroupId, message: i64 },
    /// What `chat` shows between its own turns: the group's approval requests, its tool calls
    /// as they start and end, and task results posted to the terminal, until the client leaves.
    Watch { group: GroupId },
    /// Start a fresh session in a group (`/new` in `chat`).
    NewSession { group: GroupId },
    /// `nanoclaw sandbox exec`: one command in the group's sandbox, through the daemon's own
    /// proxy for the group (a second process must not take over the group's proxy socket).
    SandboxExec {
        group: GroupId,
        command: Vec<String>,
    },
    /// End the group's running turn now.
    Stop { group: GroupId },
    /// Read `policy.toml` and `nanoclaw.toml` again; a file that fails validation changes
    /// nothing.
    Reload {},
    /// Open the secrets file again (after `secret set`, `rm` or `rotate`): in force at once.
    ReloadSecrets {},
    /// Keep a group from starting turns, or let it again.
    Pause { group: GroupId, paused: bool },
    /// Answer an approval request as the terminal approver (or `as_approver`).
    Answer {
        code: String,
        approve: bool,
        always: bool,
        as_approver: Option<String>,
    },
}

/// One request line. (Unknown fields are refused by [`Op`]: serde cannot refuse them on a struct
/// that flattens another.)
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    pub version: String,
    #[serde(flatten)]
    pub op: Op,
}

/// One answer line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The asked message is committed, with this inbox id (what a cancel names).
    Accepted { id: i64 },
    /// A tool call of the group started or ended.
    Progress { progress: Progress },
    /// An approval request of the asked group, as its approvers see it.
    Approval { text: String },
    /// The reply to an `ask`; `failed` when the turn failed (the text says why).
    Reply { text: String, failed: bool },
    /// The answer to `status`, `new_session` or `answer`.
    Done { result: Value },
    /// The request was refused: the message says why.
    Error { message: String },
}

/// What a reload reads again.
pub enum ReloadWhat {
    /// `policy.toml` and `nanoclaw.toml`.
    Files,
    /// `secrets.json`.
    Secrets,
}

/// The daemon's side.
pub struct Control {
    pub queue: Arc<Queue>,
    pub started: Instant,
    /// Approval requests as they are opened, for the clients waiting on their group.
    pub approvals: broadcast::Sender<ApprovalRequest>,
    /// The daemon's status, assembled by the composition root.
    pub status: Box<dyn Fn(&Control) -> Value + Send + Sync>,
    /// Put edited files in force (the composition root knows how); `Err` says why not.
    pub reload: Box<dyn Fn(ReloadWhat) -> Result<Value, String> + Send + Sync>,
}

/// Shows approval requests to the control socket's clients.
pub struct ControlPresenter(pub broadcast::Sender<ApprovalRequest>);

impl Presenter for ControlPresenter {
    fn present(&self, request: &ApprovalRequest) {
        // No client listening is fine: the request stays open for every other surface.
        let _ = self.0.send(request.clone());
    }
}

impl Control {
    pub fn new(
        queue: Arc<Queue>,
        status: Box<dyn Fn(&Control) -> Value + Send + Sync>,
        reload: Box<dyn Fn(ReloadWhat) -> Result<Value, String> + Send + Sync>,
    ) -> Control {
        Control {
            queue,
            started: Instant::now(),
            approvals: broadcast::channel(EVENT_BACKLOG).0,
            status,
            reload,
        }
    }
}

/// Bind the socket in the data dir: any old file there is a dead daemon's (the agent lock is
/// held), so it is replaced; the socket is made 0600 before anything is accepted.
pub fn bind(home: &crate::config::home::Home) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let path = home.dir.join(SOCKET);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    Ok(listener)
}

/// Serve clients until the process ends.
pub async fn serve(control: Arc<Control>, listener: UnixListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // INVARIANT: only this uid's processes reach the daemon through here.
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "control socket: a peer of another uid refused"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket: the peer's uid is unknown; refused");
                continue;
            }
        }
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(&control, stream).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn send(out: &mut tokio::net::unix::OwnedWriteHalf, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    out.write_all(&line).await
}

async fn connection(control: &Control, stream: UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64 + 1));
    let mut raw = Vec::new();
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut raw)).await;
    let refuse = |message: String| Event::Error { message };
    let line: Line = match read {
        Err(_) => {
            return send(&mut write, &refuse("no request within 10 s".into())).await;
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if raw.len() > MAX_LINE || !raw.ends_with(b"\n") => {
            return send(
                &mut write,
                &refuse(format!(
                    "a request is one line of at most {MAX_LINE} bytes, ending in a newline"
                )),
            )
            .await;
        }
        Ok(Ok(_)) => match serde_json::from_slice(&raw) {
            Ok(line) => line,
            Err(e) => {
                return send(&mut write, &refuse(format!("malformed request: {e}"))).await;
            }
        },
    };
    let ours = env!("CARGO_PKG_VERSION");
    if line.version != ours {
        return send(
            &mut write,
            &refuse(format!(
                "this daemon is nanoclaw {ours}; the command is nanoclaw {}: use the same version for both",
                line.version
            )),
        )
        .await;
    }
    let agent = control.queue.agent();
    match line.op {
        Op::Status {} => {
            let result = (control.status)(control);
            send(&mut write, &Event::Done { result }).await
        }
        Op::NewSession { group } => {
            let event = match agent.store.new_session(&group) {
                Ok(()) => Event::Done {
                    result: json!({"group": group.as_str()}),
                },
                Err(e) => refuse(format!("could not start a new session: {e}")),
            };
            send(&mut write, &event).await
        }
        Op::Answer {
            code,
            approve,
            always,
            as_approver,
        } => {
            let vote = if approve {
                Vote::Approve { always }
            } else {
                Vote::Deny
            };
            let result = crate::agent::approvals::answer(
                &agent.store,
                agent.tools.audit(),
                &agent.tools.policy(),
                &code,
                &crate::agent::approvals::Answerer::AtTerminal {
                    channel: super::terminal::CHANNEL,
                    named: as_approver.as_deref(),
                },
                vote,
            );
            let event = match result {
                Ok(tally) => Event::Done {
                    result: json!(super::approval_text::describe_tally(&tally)),
                },
                Err(e) => refuse(e.to_string()),
            };
            send(&mut write, &event).await
        }
        Op::Ask { group, text } => ask(control, reader, &mut write, group, &text).await,
        Op::Watch { group } => watch(control, reader, &mut write, group).await,
        Op::Cancel { group, message } => {
            let event = match cancel(control, &group, message).await {
                Ok(text) => Event::Done {
                    result: json!(text),
                },
                Err(e) => refuse(format!("could not cancel: {e}")),
            };
            send(&mut write, &event).await
        }
        Op::SandboxExec { group, command } => {
            let event = match sandbox_exec(agent, &group, command).await {
                Ok(result) => Event::Done { result },
                Err(e) => refuse(format!("{e:#}")),
            };
            send(&mut write, &event).await
        }
        Op::ReloadSecrets {} => {
            let event = match (control.reload)(ReloadWhat::Secrets) {
                Ok(result) => Event::Done { result },
                Err(message) => refuse(message),
            };
            send(&mut write, &event).await
        }
        Op::Reload {} => {
            let event = match (control.reload)(ReloadWhat::Files) {
                Ok(result) => Event::Done { result },
                Err(message) => refuse(message),
            };
            send(&mut write, &event).await
        }
        Op::Stop { group } => {
            let was_running = control
                .queue
                .stop(&group, "the owner (nanoclaw stop)")
                .await;
            let result = json!({"group": group.as_str(), "stopped": was_running});
            send(&mut write, &Event::Done { result }).await
        }
        Op::Pause { group, paused } => {
            let event = match super::pause(agent, &group, paused) {
                Ok(changed) => {
                    if !paused {
                        // What waited while paused is answered now.
                        control.queue.kick(group.clone());
                    }
                    Event::Done {
                        result: json!({"group": group.as_str(), "paused": paused, "changed": changed}),
                    }
                }
                Err(e) => refuse(format!("could not change the group: {e}")),
            };
            send(&mut write, &event).await
        }
    }
}

/// The rest of a client's connection after its request: it sends nothing more, so anything
/// read (or the end) means it is gone.
type Rest = BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>;

/// Resolves when the client has closed its end.
async fn gone(rest: &mut Rest) {
    let mut byte = [0u8; 1];
    let _ = rest.read(&mut byte).await;
}

/// Commit the owner's message, wake the group, and stream its group's approval requests and
/// tool calls until the reply to it is in the outbox; then hand the reply over (marking it
/// sent). A client that leaves ends the stream (its message stays committed).
async fn ask(
    control: &Control,
    mut rest: Rest,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    group: GroupId,
    text: &str,
) -> std::io::Result<()> {
    let agent = control.queue.agent();
    if text.trim().is_empty() {
        return send(
            write,
            &Event::Error {
                message: "the message is empty".into(),
            },
        )
        .await;
    }
    // Subscribed before the message goes in, so no request of this turn is missed.
    let mut approvals = control.approvals.subscribe();
    let mut progress = agent.tools.announcer().watch();
    let inbound = super::Inbound {
        channel: super::terminal::CHANNEL,
        text,
        external_id: None,
        from: super::From::Authenticated {
            group: group.clone(),
            sender: "owner",
            role: SenderRole::Owner,
        },
    };
    let id = match super::accept(agent, Some(&control.queue), &inbound, |_| Ok(())) {
        Ok(super::Accepted::Stored { id: Some(id), .. }) => id,
        Ok(super::Accepted::Stopped { was_running, .. }) => {
            let text = if was_running {
                "(stopped the running turn; queued messages stay queued)"
            } else {
                "(nothing was running)"
            };
            return send(
                write,
                &Event::Reply {
                    text: text.into(),
                    failed: false,
                },
            )
            .await;
        }
        Ok(other) => {
            let message = format!("the message was not stored: {other:?}");
            return send(write, &Event::Error { message }).await;
        }
        Err(e) => {
            let message = format!("could not store the message: {e}");
            return send(write, &Event::Error { message }).await;
        }
    };
    send(write, &Event::Accepted { id }).await?;
    loop {
        tokio::select! {
            () = gone(&mut rest) => return Ok(()),
            request = approvals.recv() => match request {
                Ok(r) if r.group == group.as_str() => {
                    let text = super::approval_text::describe(&r);
                    send(write, &Event::Approval { text }).await?;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            told = progress.recv() => match told {
                Ok(p) if p.group() == group.as_str() => {
                    send(write, &Event::Progress { progress: p }).await?;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep(REPLY_POLL) => {
                let reply = match agent.store.reply_to(id, super::terminal::CHANNEL) {
                    Ok(reply) => reply,
                    Err(e) => {
                        let message = format!("could not read the reply: {e}");
                        return send(write, &Event::Error { message }).await;
                    }
                };
                match reply {
                    crate::store::ReplyTo::Waiting => {}
                    crate::store::ReplyTo::Here { reply, failed } => {
                        let event = Event::Reply { text: reply.text.clone(), failed };
                        send(write, &event).await?;
                        // Handed over: sent.
                        if let Err(e) =
                            super::outbox::delivered(&agent.store, agent.tools.audit(), &[&reply])
                        {
                            tracing::error!(error = %e, "could not mark a reply sent");
                        }
                        return Ok(());
                    }
                    crate::store::ReplyTo::Elsewhere { channel } => {
                        // A later message of another channel joined the turn: it answers there.
                        let message = format!("the turn that took this message answered on {channel}");
                        return send(write, &Event::Error { message }).await;
                    }
                }
            }
        }
    }
}

/// Stream the group's approval requests, tool calls and the task results posted to the
/// terminal until the client leaves.
async fn watch(
    control: &Control,
    mut rest: Rest,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    group: GroupId,
) -> std::io::Result<()> {
    let agent = control.queue.agent();
    let mut approvals = control.approvals.subscribe();
    let mut progress = agent.tools.announcer().watch();
    loop {
        tokio::select! {
            () = gone(&mut rest) => return Ok(()),
            request = approvals.recv() => match request {
                Ok(r) if r.group == group.as_str() => {
                    let text = super::approval_text::describe(&r);
                    send(write, &Event::Approval { text }).await?;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            told = progress.recv() => match told {
                Ok(p) if p.group() == group.as_str() => {
                    send(write, &Event::Progress { progress: p }).await?;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep(WATCH_POLL) => {
                let posted = match agent.store.unsent_unasked(&group, super::terminal::CHANNEL) {
                    Ok(posted) => posted,
                    Err(e) => {
                        let message = format!("could not read the outbox: {e}");
                        return send(write, &Event::Error { message }).await;
                    }
                };
                for reply in posted {
                    send(write, &Event::Reply { text: reply.text.clone(), failed: false }).await?;
                    if let Err(e) = super::outbox::delivered(&agent.store, agent.tools.audit(), &[&reply]) {
                        tracing::error!(error = %e, "could not mark a reply sent");
                    }
                }
            }
        }
    }
}

/// Ctrl-C at the terminal: withdraw message `id` if no turn has taken it, else stop its turn
/// if that is the group's running one (and hand over the stop notice, which the client shows).
/// What was done, in words.
async fn cancel(control: &Control, group: &GroupId, id: i64) -> anyhow::Result<String> {
    let agent = control.queue.agent();
    match agent.store.withdraw(id)? {
        crate::store::Withdrawal::Withdrawn => {
            agent.tools.audit().record(
                crate::audit::EventKind::MessageWithdrawn,
                Some(group.as_str()),
                json!({"inbox_id": id, "by": "the owner (Ctrl-C)"}),
            );
            Ok("(cancelled: the message was withdrawn before a turn took it)".into())
        }
        crate::store::Withdrawal::Taken(turn) if agent.running_turn(group) == Some(turn) => {
            control.queue.stop(group, "the owner (Ctrl-C)").await;
            // The stop notice is what the client shows now, whoever took it first.
            if let crate::store::ReplyTo::Here { reply, .. } =
                agent.store.reply_to(id, super::terminal::CHANNEL)?
            {
                super::outbox::delivered(&agent.store, agent.tools.audit(), &[&reply])?;
            }
            Ok(format!(
                "(cancelled with Ctrl-C: stopped turn {turn}; its pending approval requests are denied, queued messages stay queued)"
            ))
        }
        crate::store::Withdrawal::Taken(turn) => Ok(format!(
            "(nothing to cancel: turn {turn} had already ended)"
        )),
        crate::store::Withdrawal::Unknown => Ok(format!("(nothing to cancel: no message {id})")),
    }
}

/// Run the owner's command as `sandbox exec` does in its own process, with the daemon's backend
/// and the group's proxy (held to the allowlist alone, as the owner's own command).
async fn sandbox_exec(
    agent: &crate::agent::Agent,
    group: &GroupId,
    command: Vec<String>,
) -> anyhow::Result<Value> {
    use nanoclaw_core::secret::base64_padded;
    if command.is_empty() {
        anyhow::bail!("no command to run");
    }
    let limits = agent.config().limits_for(group);
    let workspace = agent.home.workspace(group)?;
    let out = agent
        .tools
        .owner_exec(group, &workspace, limits, command)
        .await?;
    let (state, code) = match out.state {
        nanoclaw_sandbox::ExitState::Exited(c) => ("exited", c),
        nanoclaw_sandbox::ExitState::Signaled(s) => ("signaled", 128 + s),
        nanoclaw_sandbox::ExitState::TimedOut => ("timed out", 124),
    };
    Ok(json!({
        "stdout": base64_padded(&out.stdout.bytes),
        "stderr": base64_padded(&out.stderr.bytes),
        "stdout_dropped": out.stdout.dropped,
        "stderr_dropped": out.stderr.dropped,
        "state": state,
        "code": code,
        "limit": out.limit.map(|hit| hit.describe(&limits)),
    }))
}
