//! What a running turn is doing, told as it happens to whoever watches its group (the terminal,
//! the control socket's clients): a line per tool call as it starts and as it ends, and the
//! answer to an approval it waited for. These are announcements only: nothing is decided on
//! them, and no one listening is fine.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// The longest short form of a call's arguments or of its result's first line.
const SHORT: usize = 72;
/// Announcements kept for a watcher that is slow to read them.
const BACKLOG: usize = 256;

/// One announcement about a group's running turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Progress {
    /// A tool call passed its parse and goes to the gate.
    Started {
        group: String,
        tool: String,
        /// A short form of its arguments.
        args: String,
    },
    /// An approval the call waited for was answered (or ran out).
    Answered {
        group: String,
        tool: String,
        /// "approved by …", "denied by …", "no answer within …".
        answer: String,
    },
    /// The call is done.
    Ended {
        group: String,
        tool: String,
        millis: u64,
        ok: bool,
        /// The result's first line, short ("exited 0", "killed: …", the refusal).
        status: String,
    },
}

impl Progress {
    pub fn group(&self) -> &str {
        match self {
            Progress::Started { group, .. }
            | Progress::Answered { group, .. }
            | Progress::Ended { group, .. } => group,
        }
    }

    /// One line for a person (not yet escaped for a terminal).
    pub fn describe(&self) -> String {
        match self {
            Progress::Started { tool, args, .. } => format!("▸ {tool} {args}"),
            Progress::Answered { tool, answer, .. } => format!("  {tool}: {answer}"),
            Progress::Ended {
                tool,
                millis,
                ok,
                status,
                ..
            } => format!(
                "{} {tool} {:.1}s: {status}",
                if *ok { "✓" } else { "✗" },
                Duration::from_millis(*millis).as_secs_f64()
            ),
        }
    }
}

/// The sender every turn of this process announces through.
#[derive(Clone)]
pub struct Announcer(broadcast::Sender<Progress>);

impl Default for Announcer {
    fn default() -> Self {
        Announcer(broadcast::channel(BACKLOG).0)
    }
}

impl Announcer {
    pub fn tell(&self, progress: Progress) {
        // No one watching is fine.
        let _ = self.0.send(progress);
    }

    pub fn watch(&self) -> broadcast::Receiver<Progress> {
        self.0.subscribe()
    }
}

/// A short, one-line form of a call's arguments: the field a person recognises the call by
/// (the command, the URL, the path, the name), else the arguments as JSON, cut to [`SHORT`].
pub fn short_args(args: &serde_json::Value) -> String {
    let named = ["command", "url", "path", "name", "pattern", "id"]
        .iter()
        .find_map(|k| args.get(k))
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    short(&named.unwrap_or_else(|| args.to_string()))
}

/// The first line of `text`, cut to [`SHORT`] characters.
pub fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() <= SHORT {
        return line.to_owned();
    }
    let cut: String = line.chars().take(SHORT - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_shown_by_the_field_a_person_knows_them_by() {
        assert_eq!(short_args(&json!({"command": "ls -la\nrm x"})), "ls -la");
        assert_eq!(
            short_args(&json!({"url": "https://example.com/", "max_chars": 5})),
            "https://example.com/"
        );
        assert_eq!(short_args(&json!({"id": 4})), "4");
        assert_eq!(short_args(&json!({})), "{}");
        let long = "x".repeat(500);
        let s = short_args(&json!({ "command": long }));
        assert_eq!(s.chars().count(), SHORT);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn lines_say_what_happened() {
        let ended = Progress::Ended {
            group: "main".into(),
            tool: "shell".into(),
            millis: 1300,
            ok: false,
            status: "exited 2".into(),
        };
        assert_eq!(ended.describe(), "✗ shell 1.3s: exited 2");
        assert_eq!(ended.group(), "main");
    }
}
