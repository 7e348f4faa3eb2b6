//! How approvals look to people and how they type them: a request described for a terminal
//! or a chat (outside text escaped), a tally in words, and the `/approve CODE [always]` and
//! `/deny CODE` commands. Answers go to `agent::approvals::answer`; nothing here decides.

use nanoclaw_core::approval::{Tally, Vote};

use crate::agent::approvals::{Presenter, Request};

/// One paragraph for a terminal or a chat message. The arguments and the reason come from
/// the model: their control characters and bidi overrides are shown as escapes, so what
/// an approver reads is what they approve.
pub fn describe(request: &Request) -> String {
    format!(
        "approval needed [{code}] (request {id}): group {group} wants to run {tool} with {args}\nwhy: {reason}\napprovers: {approvers} ({quorum} needed); answer with /approve {code} [always] or /deny {code}, or `nanoclaw approvals approve {id}`",
        code = request.code,
        id = request.id,
        group = request.group,
        tool = request.tool,
        args = crate::display::for_terminal(&request.arguments.to_string()),
        reason = crate::display::for_terminal(&request.reason),
        approvers = request.approvers.join(", "),
        quorum = request.quorum,
    )
}

/// Shows requests on this process's stderr (the terminal, `ask`, the daemon's console).
pub struct StderrPresenter;

impl Presenter for StderrPresenter {
    fn present(&self, request: &Request) {
        crate::display::tell(
            crate::display::Tone::Approval,
            &format!("nanoclaw: {}", describe(request)),
        );
    }
}

/// Whether `text` starts as an approval answer (`/approve`, `/deny`) but is not a whole one: a
/// mistyped answer is refused, never sent to the model as a message.
pub fn malformed_command(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or("");
    matches!(first, "/approve" | "/deny") && parse_command(text).is_none()
}

/// Parse `/approve CODE [always]` or `/deny CODE`.
pub fn parse_command(text: &str) -> Option<(String, Vote)> {
    let mut words = text.split_whitespace();
    let vote = match words.next()? {
        "/approve" => Vote::Approve { always: false },
        "/deny" => Vote::Deny,
        _ => return None,
    };
    let code = words.next()?.to_owned();
    let vote = match (vote, words.next()) {
        (Vote::Approve { .. }, Some("always")) => Vote::Approve { always: true },
        (v, None) => v,
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some((code, vote))
}

/// A tally as the approver reads it.
pub fn describe_tally(t: &Tally) -> String {
    match t {
        Tally::Approved { always: true } => "approved, for every later identical call".into(),
        Tally::Approved { always: false } => "approved".into(),
        Tally::Denied { by } => format!("denied by {by}"),
        Tally::Pending { approvals } => {
            format!("recorded: {approvals} approval(s) so far; more are needed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_commands_parse() {
        assert_eq!(
            parse_command("/approve AB12CD34"),
            Some(("AB12CD34".into(), Vote::Approve { always: false }))
        );
        assert_eq!(
            parse_command(" /approve x always "),
            Some(("x".into(), Vote::Approve { always: true }))
        );
        assert_eq!(parse_command("/deny x"), Some(("x".into(), Vote::Deny)));
        assert_eq!(parse_command("/deny x always"), None);
        assert_eq!(parse_command("/approve"), None);
        assert_eq!(parse_command("approve x"), None);
        assert_eq!(parse_command("/approve x y z"), None);
    }
}
