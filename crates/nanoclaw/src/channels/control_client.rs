//! The CLI's side of the control socket ([`super::control`]): whether a daemon runs, and the
//! requests `chat`, `ask` and `status` send it. Every failure names what went wrong; a daemon
//! that goes away mid-request is reported, and what it had accepted stays accepted.

use std::time::Duration;

use nanoclaw_core::GroupId;
use nanoclaw_core::approval::Vote;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::control::{Event, Line, MAX_LINE, Op, SOCKET};
use crate::agent::progress::Progress;
use crate::config::home::Home;
use crate::display::{self, Tone};

/// How long connecting may take before the daemon counts as not running.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the running daemon, or `None` when none runs (no socket, or a socket no one
/// listens on: a daemon that died).
pub async fn connect(home: &Home) -> Option<UnixStream> {
    let path = home.dir.join(SOCKET);
    if !path.exists() {
        return None;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&path)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Whether a daemon answers on the control socket.
pub async fn daemon_running(home: &Home) -> bool {
    connect(home).await.is_some()
}

/// Send one request; the events come back through the returned reader.
async fn request(home: &Home, op: Op) -> anyhow::Result<Events> {
    let Some(stream) = connect(home).await else {
        anyhow::bail!(
            "no daemon answers on {}: it stopped; start it again with `nanoclaw run`",
            home.dir.join(SOCKET).display()
        );
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(&Line {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        op,
    })?;
    line.push(b'\n');
    write.write_all(&line).await?;
    Ok(Events {
        lines: BufReader::new(read),
        _write: write,
    })
}

/// The events of one request, in order.
struct Events {
    lines: BufReader<tokio::net::unix::OwnedReadHalf>,
    /// Held so the daemon does not see the request end early.
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl Events {
    /// The next event; `None` when the daemon closed the connection.
    async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        let mut raw = Vec::new();
        let n = (&mut self.lines)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut raw)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("the daemon sent something that is not an event: {e}"))
    }

    /// The one `Done` answer of a request.
    async fn done(mut self) -> anyhow::Result<serde_json::Value> {
        match self.next().await? {
            Some(Event::Done { result }) => Ok(result),
            Some(Event::Error { message }) => Err(anyhow::anyhow!("{message}")),
            Some(other) => Err(anyhow::anyhow!(
                "unexpected answer from the daemon: {other:?}"
            )),
            None => Err(anyhow::anyhow!(
                "the daemon closed the connection without an answer (did it stop?)"
            )),
        }
    }
}

/// `ask` through the daemon: the reply to stdout (a failed turn's notice to stderr); the
/// group's approval requests and tool calls to stderr as they happen when `show_events` (`chat`
/// shows them from its watch instead). An interrupt (Ctrl-C) cancels the message or its turn.
pub async fn ask(
    home: &Home,
    group: &GroupId,
    text: &str,
    show_events: bool,
    interrupts: &mut super::terminal::Interrupts,
) -> anyhow::Result<Exchanged> {
    use std::io::Write;
    let mut events = request(
        home,
        Op::Ask {
            group: group.clone(),
            text: text.to_owned(),
        },
    )
    .await?;
    let mut accepted = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event?,
            _ = interrupts.recv() => {
                let Some(id) = accepted else {
                    anyhow::bail!("interrupted before the daemon took the message; it may still be answered");
                };
                let said = cancel(home, group, id).await?;
                display::tell(Tone::Problem, &format!("nanoclaw: {said}"));
                return Ok(Exchanged::Cancelled);
            }
        };
        match event {
            Some(Event::Accepted { id }) => accepted = Some(id),
            Some(Event::Approval { text }) if show_events => show_approval(&text),
            Some(Event::Progress { progress }) if show_events => show_progress(&progress),
            Some(Event::Approval { .. } | Event::Progress { .. }) => {}
            Some(Event::Reply { text, failed }) => {
                if failed {
                    display::tell(Tone::Problem, &format!("nanoclaw: {text}"));
                } else {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", display::for_terminal(&text))?;
                    out.flush()?;
                }
                return Ok(if failed {
                    Exchanged::Failed
                } else {
                    Exchanged::Answered
                });
            }
            Some(Event::Error { message }) => anyhow::bail!("{message}"),
            Some(Event::Done { .. }) => {}
            None => anyhow::bail!(
                "the daemon stopped before the reply; the message is kept and will be answered when it runs again"
            ),
        }
    }
}

/// How one message at the terminal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchanged {
    Answered,
    Failed,
    /// Cancelled with Ctrl-C.
    Cancelled,
}

/// A tool call's start or end, on stderr.
pub fn show_progress(progress: &Progress) {
    display::tell(Tone::Progress, &progress.describe());
}

/// An approval request, on stderr.
pub fn show_approval(text: &str) {
    display::tell(Tone::Approval, &format!("nanoclaw: {text}"));
}

/// Withdraw message `id` or stop its turn; what the daemon did, in words.
pub async fn cancel(home: &Home, group: &GroupId, id: i64) -> anyhow::Result<String> {
    let result = request(
        home,
        Op::Cancel {
            group: group.clone(),
            message: id,
        },
    )
    .await?
    .done()
    .await?;
    Ok(result.as_str().unwrap_or_default().to_owned())
}

/// The group's events between turns, for `chat`.
pub struct Watch(Events);

impl Watch {
    pub async fn open(home: &Home, group: &GroupId) -> anyhow::Result<Watch> {
        Ok(Watch(
            request(
                home,
                Op::Watch {
                    group: group.clone(),
                },
            )
            .await?,
        ))
    }

    /// Show the next event; `Err` when the daemon went away.
    pub async fn show_next(&mut self) -> anyhow::Result<()> {
        use std::io::Write;
        match self.0.next().await? {
            Some(Event::Approval { text }) => show_approval(&text),
            Some(Event::Progress { progress }) => show_progress(&progress),
            Some(Event::Reply { text, .. }) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", display::for_terminal(&text))?;
                out.flush()?;
            }
            Some(Event::Error { message }) => anyhow::bail!("{message}"),
            Some(Event::Accepted { .. } | Event::Done { .. }) => {}
            None => anyhow::bail!("the daemon stopped; start it again with `nanoclaw run`"),
        }
        Ok(())
    }
}

/// Answer an approval request through the daemon; the tally in words.
pub async fn answer(
    home: &Home,
    code: &str,
    vote: Vote,
    as_approver: Option<&str>,
) -> anyhow::Result<String> {
    let (approve, always) = match vote {
        Vote::Approve { always } => (true, always),
        Vote::Deny => (false, false),
    };
    let result = request(
        home,
        Op::Answer {
            code: code.to_owned(),
            approve,
            always,
            as_approver: as_approver.map(str::to_owned),
        },
    )
    .await?
    .done()
    .await?;
    Ok(result.as_str().unwrap_or_default().to_owned())
}

/// Start a new session of `group` through the daemon.
pub async fn new_session(home: &Home, group: &GroupId) -> anyhow::Result<()> {
    request(
        home,
        Op::NewSession {
            group: group.clone(),
        },
    )
    .await?
    .done()
    .await
    .map(drop)
}

/// Stop `group`'s running turn; whether one was running.
pub async fn stop(home: &Home, group: &GroupId) -> anyhow::Result<bool> {
    let result = request(
        home,
        Op::Stop {
            group: group.clone(),
        },
    )
    .await?
    .done()
    .await?;
    Ok(result["stopped"].as_bool().unwrap_or(false))
}

/// Pause or resume `group`; whether that changed anything.
pub async fn pause(home: &Home, group: &GroupId, paused: bool) -> anyhow::Result<bool> {
    let result = request(
        home,
        Op::Pause {
            group: group.clone(),
            paused,
        },
    )
    .await?
    .done()
    .await?;
    Ok(result["changed"].as_bool().unwrap_or(false))
}

/// Have the daemon read its files again; what it did, in words.
pub async fn reload(home: &Home) -> anyhow::Result<serde_json::Value> {
    request(home, Op::Reload {}).await?.done().await
}

/// `sandbox exec` through the daemon: what the command wrote and how it ended.
pub async fn sandbox_exec(
    home: &Home,
    group: &GroupId,
    command: Vec<String>,
) -> anyhow::Result<serde_json::Value> {
    request(
        home,
        Op::SandboxExec {
            group: group.clone(),
            command,
        },
    )
    .await?
    .done()
    .await
}

/// Have a running daemon open the secrets file again. `None` when no daemon runs.
pub async fn reload_secrets(home: &Home) -> anyhow::Result<Option<serde_json::Value>> {
    if !daemon_running(home).await {
        return Ok(None);
    }
    request(home, Op::ReloadSecrets {})
        .await?
        .done()
        .await
        .map(Some)
}

/// The daemon's status, or `None` when no daemon runs.
pub async fn status(home: &Home) -> anyhow::Result<Option<serde_json::Value>> {
    if !daemon_running(home).await {
        return Ok(None);
    }
    request(home, Op::Status {}).await?.done().await.map(Some)
}
