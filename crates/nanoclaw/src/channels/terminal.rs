//! The terminal channel: `nanoclaw chat` (a conversation on stdin/stdout) and `nanoclaw ask`
//! (one message, the reply on stdout). Each line is committed to the inbox before the turn runs,
//! and a reply is marked sent once it has been printed. With a daemon running, the same
//! conversation goes through it ([`Via::Daemon`], the control socket); without one, the turn
//! runs in this process ([`Via::Agent`]). The person at the terminal sees no difference.

use std::io::Write;
use std::process::ExitCode;

use nanoclaw_core::GroupId;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::control_client::Exchanged;
use crate::agent::{Agent, TurnResult};
use crate::config::home::Home;
use crate::display::{self, Tone};

/// Where the terminal's turns run.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// In this process (no daemon runs; this process holds the data dir).
    Agent(&'a Agent),
    /// In the running daemon, through its control socket.
    Daemon(&'a Home),
}

/// The channel name stored with messages from the terminal.
pub const CHANNEL: &str = "terminal";
/// The sender name for the person at the terminal: the owner.
const OWNER: &str = "owner";

/// `nanoclaw ask`: one message to `group`, its reply on stdout. Ctrl-C cancels it (exit 130).
pub async fn ask(via: Via<'_>, group: GroupId, text: String) -> anyhow::Result<ExitCode> {
    let mut interrupts = interrupts()?;
    Ok(
        match exchange(via, &group, &text, true, &mut interrupts).await? {
            Exchanged::Answered => ExitCode::SUCCESS,
            Exchanged::Failed => ExitCode::FAILURE,
            Exchanged::Cancelled => ExitCode::from(130),
        },
    )
}

/// `nanoclaw chat`: a conversation with `group` until /quit, Ctrl-D, or Ctrl-C between turns.
pub async fn chat(via: Via<'_>, group: GroupId) -> anyhow::Result<ExitCode> {
    let where_ = match via {
        Via::Agent(_) => "",
        Via::Daemon(_) => " (through the running daemon)",
    };
    eprintln!(
        "nanoclaw chat, group {group}{where_}. /new starts a fresh session, /stop or Ctrl-C stops a running turn, /quit or Ctrl-D leaves."
    );
    converse(via, &group).await.map(|()| ExitCode::SUCCESS)
}

/// Ctrl-C, and the signals that end a terminal's process (SIGTERM; SIGHUP, the terminal
/// closed), caught for the whole command: each cancels a turn rather than killing the process
/// mid-way, which would leave the turn running in the daemon or, in this process, an approval
/// request pending with nothing waiting on it.
pub struct Interrupts {
    signals: [Signal; 3],
}

impl Interrupts {
    /// The next of them.
    pub async fn recv(&mut self) -> Option<()> {
        let [int, term, hup] = &mut self.signals;
        tokio::select! {
            got = int.recv() => got,
            got = term.recv() => got,
            got = hup.recv() => got,
        }
    }
}

fn interrupts() -> anyhow::Result<Interrupts> {
    use anyhow::Context;
    let catch =
        |kind: SignalKind, what: &str| signal(kind).with_context(|| format!("catching {what}"));
    Ok(Interrupts {
        signals: [
            catch(SignalKind::interrupt(), "Ctrl-C")?,
            catch(SignalKind::terminate(), "SIGTERM")?,
            catch(SignalKind::hangup(), "SIGHUP")?,
        ],
    })
}

/// The next line typed, `None` at the end of input. A line that is not UTF-8 is refused with a
/// message and skipped, rather than ending the session.
async fn read_line(
    lines: &mut tokio::io::Split<BufReader<tokio::io::Stdin>>,
) -> std::io::Result<Option<String>> {
    loop {
        let Some(mut bytes) = lines.next_segment().await? else {
            return Ok(None);
        };
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        match String::from_utf8(bytes) {
            Ok(line) => return Ok(Some(line)),
            Err(_) => eprintln!("nanoclaw: that line is not UTF-8 text; it was not sent"),
        }
    }
}

/// Whether `line` is an approval command without its code (or with too much after it), or a
/// lone `/word` this chat does not know: said so, never sent to the model. A message that only
/// begins with a slash ("/tmp is full") is a message.
fn unknown_command(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("");
    let lone_command_word = first.len() > 1
        && first.starts_with('/')
        && first[1..].chars().all(|c| c.is_ascii_lowercase())
        && words.next().is_none();
    crate::channels::approval_text::malformed_command(line)
        || (lone_command_word && crate::channels::approval_text::parse_command(line).is_none())
}

/// Read lines until /quit, end of input or Ctrl-C; answer each. Through the daemon, the
/// group's approval requests, tool calls and task results show as they come, between turns too.
async fn converse(via: Via<'_>, group: &GroupId) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
    let mut interrupts = interrupts()?;
    let mut watch = match via {
        Via::Daemon(home) => Some(super::control_client::Watch::open(home, group).await?),
        Via::Agent(_) => None,
    };
    // Lines typed while a turn ran, other than approval answers: taken in order afterwards.
    let mut typed_ahead: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut input_open = true;
    loop {
        let line = match typed_ahead.pop_front() {
            Some(line) => line,
            None if !input_open => return Ok(()),
            None => {
                eprint!("> ");
                let _ = std::io::stderr().flush();
                let typed = loop {
                    tokio::select! {
                        line = read_line(&mut lines) => break line?,
                        _ = interrupts.recv() => {
                            eprintln!();
                            return Ok(());
                        }
                        shown = watched(&mut watch) => {
                            shown?;
                        }
                    }
                };
                match typed {
                    Some(line) => line,
                    None => return Ok(()),
                }
            }
        };
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => return Ok(()),
            "/stop" => eprintln!("(nothing is running)"),
            "/new" => {
                match via {
                    Via::Agent(agent) => agent.store.new_session(group)?,
                    Via::Daemon(home) => super::control_client::new_session(home, group).await?,
                }
                eprintln!("(new session: earlier history is no longer in the prompt)");
            }
            line if unknown_command(line) => eprintln!(
                "nanoclaw: commands are /new, /stop, /quit, /approve CODE [always] and /deny CODE; nothing was sent"
            ),
            // An answer to an approval request.
            line if crate::channels::approval_text::parse_command(line).is_some() => {
                if let Some((code, vote)) = crate::channels::approval_text::parse_command(line) {
                    answer(via, &code, vote).await;
                }
            }
            text => {
                // While the turn runs (perhaps waiting for an approval), keep reading: an
                // answer is recorded at once; anything else waits its turn.
                let show_events = watch.is_none();
                let mut turn = Box::pin(exchange(via, group, text, show_events, &mut interrupts));
                let mut stopped_here = false;
                loop {
                    tokio::select! {
                        done = &mut turn => {
                            done?;
                            break;
                        }
                        shown = watched(&mut watch) => shown?,
                        line = read_line(&mut lines), if input_open => match line? {
                            None => input_open = false,
                            Some(l) if l.trim() == "/stop" => match via {
                                // The daemon ends the turn; its notice comes back as the reply.
                                Via::Daemon(home) => {
                                    if let Err(e) = super::control_client::stop(home, group).await {
                                        eprintln!("nanoclaw: {e:#}");
                                    }
                                }
                                // Here: the turn's future is dropped, then ended as stopped.
                                Via::Agent(agent) => {
                                    agent.stopping(group, "the owner");
                                    stopped_here = true;
                                    break;
                                }
                            },
                            Some(l) => match crate::channels::approval_text::parse_command(&l) {
                                Some((code, vote)) => answer(via, &code, vote).await,
                                None => typed_ahead.push_back(l),
                            },
                        },
                    }
                }
                // A turn stopped here is dropped first (its sandboxed command dies with it).
                drop(turn);
                if stopped_here && let Via::Agent(agent) = via {
                    end_stopped(agent, group)?;
                }
            }
        }
    }
}

/// The next event of the chat's watch, shown; never resolves without one.
async fn watched(watch: &mut Option<super::control_client::Watch>) -> anyhow::Result<()> {
    match watch {
        Some(w) => w.show_next().await,
        None => std::future::pending().await,
    }
}

/// End the turn this process dropped as stopped, and say so (its stop notice, in the outbox
/// for this channel, is handed over with it).
fn end_stopped(agent: &Agent, group: &GroupId) -> anyhow::Result<()> {
    let Some(turn) = agent.stopped(group)? else {
        return Ok(());
    };
    for reply in agent.store.unsent(group, CHANNEL)? {
        if reply.turn_id == turn {
            display::tell(Tone::Problem, &format!("nanoclaw: {}", reply.text));
            crate::channels::outbox::delivered(&agent.store, agent.tools.audit(), &[&reply])?;
        }
    }
    display::tell(
        Tone::Problem,
        &format!("nanoclaw: (stopped turn {turn}; queued messages stay queued)"),
    );
    Ok(())
}

async fn answer(via: Via<'_>, code: &str, vote: nanoclaw_core::approval::Vote) {
    let result = match via {
        Via::Agent(agent) => crate::agent::approvals::answer(
            &agent.store,
            agent.tools.audit(),
            &agent.tools.policy(),
            code,
            &crate::agent::approvals::Answerer::AtTerminal {
                channel: CHANNEL,
                named: None,
            },
            vote,
        )
        .map(|tally| crate::channels::approval_text::describe_tally(&tally))
        .map_err(anyhow::Error::from),
        Via::Daemon(home) => super::control_client::answer(home, code, vote, None).await,
    };
    match result {
        Ok(tally) => eprintln!("({tally})"),
        Err(e) => eprintln!("nanoclaw: {e:#}"),
    }
}

/// Commit one message, run the group's turns (here or in the daemon), print this channel's
/// replies; tool calls show on stderr as they start and end (`show_events`). Ctrl-C stops
/// the turn.
async fn exchange(
    via: Via<'_>,
    group: &GroupId,
    text: &str,
    show_events: bool,
    interrupts: &mut Interrupts,
) -> anyhow::Result<Exchanged> {
    let agent = match via {
        Via::Agent(agent) => agent,
        Via::Daemon(home) => {
            return super::control_client::ask(home, group, text, show_events, interrupts).await;
        }
    };
    let mut progress = agent.tools.announcer().watch();
    // The local user at the data dir is the owner.
    let inbound = crate::channels::Inbound {
        channel: CHANNEL,
        text,
        external_id: None,
        from: crate::channels::From::Authenticated {
            group: group.clone(),
            sender: OWNER,
            role: nanoclaw_core::policy::SenderRole::Owner,
        },
    };
    crate::channels::accept(agent, None, &inbound, |_| Ok(()))?;
    let mut drain = Box::pin(agent.drain_group(group));
    let results = loop {
        tokio::select! {
            results = &mut drain => break Some(results?),
            told = progress.recv() => {
                if let Ok(p) = told
                    && p.group() == group.as_str()
                    && show_events
                {
                    super::control_client::show_progress(&p);
                }
            }
            _ = interrupts.recv() => {
                agent.stopping(group, "the owner (Ctrl-C)");
                break None;
            }
        }
    };
    drop(drain);
    let Some(results) = results else {
        end_stopped(agent, group)?;
        return Ok(Exchanged::Cancelled);
    };
    for reply in agent.store.unsent(group, CHANNEL)? {
        let failed = results
            .iter()
            .any(|(turn, r)| *turn == reply.turn_id && matches!(r, TurnResult::Failed(_)));
        if failed {
            display::tell(Tone::Problem, &format!("nanoclaw: {}", reply.text));
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", display::for_terminal(&reply.text))?;
            out.flush()?;
        }
        crate::channels::outbox::delivered(&agent.store, agent.tools.audit(), &[&reply])?;
    }
    Ok(match results.last() {
        Some((_, TurnResult::Failed(_))) => Exchanged::Failed,
        _ => Exchanged::Answered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_commands_and_answers_without_a_code_are_caught() {
        for line in ["/approve", "/deny 1 extra", "/bogus", "/approve ABC never"] {
            assert!(unknown_command(line), "{line}");
        }
        for line in [
            "/approve ABC",
            "/deny ABC",
            "/etc/hosts: what is in it?",
            "/tmp is full, clean it",
            "hello",
            "/",
        ] {
            assert!(!unknown_command(line), "{line}");
        }
    }
}
