//! The terminal channel: `nanoclaw chat` (a conversation on stdin/stdout) and `nanoclaw ask`
//! (one message, the reply on stdout). Each line is committed to the inbox before the turn runs,
//! and a reply is marked sent once it has been printed. With a daemon running, the same
//! conversation goes through it ([`Via::Daemon`], the control socket); without one, the turn
//! runs in this process ([`Via::Agent`]). The person at the terminal sees no difference.

use std::io::Write;
use std::process::ExitCode;

use nanoclaw_core::GroupId;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::agent::{Agent, TurnResult};
use crate::config::home::Home;

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

/// `nanoclaw ask`: one message to `group`, its reply on stdout.
pub async fn ask(via: Via<'_>, group: GroupId, text: String) -> anyhow::Result<ExitCode> {
    Ok(if exchange(via, &group, &text).await? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `nanoclaw chat`: a conversation with `group` until /quit or the end of input.
pub async fn chat(via: Via<'_>, group: GroupId) -> anyhow::Result<ExitCode> {
    let where_ = match via {
        Via::Agent(_) => "",
        Via::Daemon(_) => " (through the running daemon)",
    };
    eprintln!(
        "nanoclaw chat, group {group}{where_}. /new starts a fresh session, /quit or Ctrl-D leaves."
    );
    converse(via, &group).await.map(|()| ExitCode::SUCCESS)
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

/// Read lines until /quit or end of input; answer each.
async fn converse(via: Via<'_>, group: &GroupId) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).split(b'\n');
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
                match read_line(&mut lines).await? {
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
                let mut turn = Box::pin(exchange(via, group, text));
                loop {
                    tokio::select! {
                        done = &mut turn => {
                            done?;
                            break;
                        }
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
                if let Via::Agent(agent) = via
                    && let Some(turn) = agent.stopped(group)?
                {
                    eprintln!("nanoclaw: (stopped turn {turn}; queued messages stay queued)");
                }
            }
        }
    }
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
/// replies. Returns whether the last turn produced an answer (rather than a failure notice).
async fn exchange(via: Via<'_>, group: &GroupId, text: &str) -> anyhow::Result<bool> {
    let agent = match via {
        Via::Agent(agent) => agent,
        Via::Daemon(home) => return super::control_client::ask(home, group, text).await,
    };
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
    let results = agent.drain_group(group).await?;
    for reply in agent.store.unsent(group, CHANNEL)? {
        let failed = results
            .iter()
            .any(|(turn, r)| *turn == reply.turn_id && matches!(r, TurnResult::Failed(_)));
        let text = crate::display::for_terminal(&reply.text);
        if failed {
            eprintln!("nanoclaw: {text}");
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()?;
        }
        crate::channels::outbox::delivered(&agent.store, agent.tools.audit(), &[&reply])?;
    }
    Ok(!matches!(results.last(), Some((_, TurnResult::Failed(_)))))
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
