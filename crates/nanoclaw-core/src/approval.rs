//! Approvals: the fingerprint an approval is bound to, the short code approvers type, and the
//! count of answers that decides a request.
//!
//! The fingerprint is the SHA-256 of the canonical JSON of (tool, arguments, group): an approval
//! for one set of arguments never authorizes another. Only the approvers a request names count;
//! each counts once however often they answer; any one of them denying denies.

use serde_json::{Value, json};

/// Crockford's base32: digits and capitals, without I, L, O and U, so a code read aloud or
/// typed on a phone has no look-alikes and no punctuation ([`normalize_code`] maps the
/// look-alikes back).
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The fingerprint of a call, as lowercase hex.
pub fn fingerprint(tool: &str, args: &Value, group: &str) -> String {
    // `json!` builds sorted maps, and `Value`'s maps are sorted: the text is canonical.
    let canonical = json!({ "tool": tool, "arguments": args, "group": group }).to_string();
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    crate::hex::encode(digest.as_ref())
}

/// An 8-character code (40 bits) from random bytes the caller draws.
pub fn code(random: &[u8; 8]) -> String {
    random
        .iter()
        .map(|b| CODE_ALPHABET[(*b & 31) as usize] as char)
        .collect()
}

/// A code as typed, in the form codes are stored: capitals, with O read as 0 and I or L as 1.
pub fn normalize_code(typed: &str) -> String {
    typed
        .trim()
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

/// One answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    Approve { always: bool },
    Deny,
}

/// Where a request stands after its answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tally {
    /// This many distinct approvers have approved; more are needed.
    Pending {
        approvals: usize,
    },
    Approved {
        always: bool,
    },
    Denied {
        by: String,
    },
}

/// Count `votes` (approver, vote), in order, for a request naming `approvers` with `quorum`.
/// Votes from anyone not named are ignored.
pub fn tally(approvers: &[String], quorum: usize, votes: &[(String, Vote)]) -> Tally {
    let mut approved: Vec<&str> = Vec::new();
    let mut always = false;
    for (who, vote) in votes {
        if !approvers.contains(who) {
            continue;
        }
        match vote {
            Vote::Deny => return Tally::Denied { by: who.clone() },
            Vote::Approve { always: a } => {
                if !approved.contains(&who.as_str()) {
                    approved.push(who);
                }
                always |= a;
            }
        }
        if approved.len() >= quorum.max(1) {
            return Tally::Approved { always };
        }
    }
    Tally::Pending {
        approvals: approved.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn v(who: &str, vote: Vote) -> (String, Vote) {
        (who.into(), vote)
    }

    const YES: Vote = Vote::Approve { always: false };

    #[test]
    fn fingerprints_bind_tool_arguments_and_group() {
        let a = fingerprint("shell", &json!({"command": "ls"}), "main");
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint("shell", &json!({"command": "ls"}), "main"));
        assert_ne!(
            a,
            fingerprint("shell", &json!({"command": "ls -a"}), "main")
        );
        assert_ne!(a, fingerprint("shell", &json!({"command": "ls"}), "work"));
        assert_ne!(a, fingerprint("grep", &json!({"command": "ls"}), "main"));
        // Key order in the model's JSON does not matter.
        let x: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
        let y: Value = serde_json::from_str(r#"{"a":2,"b":1}"#).unwrap();
        assert_eq!(fingerprint("t", &x, "g"), fingerprint("t", &y, "g"));
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        let c = code(&[0, 1, 31, 32, 255, 7, 8, 9]);
        assert_eq!(c.len(), 8);
        assert!(c.chars().all(|ch| CODE_ALPHABET.contains(&(ch as u8))));
        assert!(!c.contains('_'));
        // Every code survives being typed in lower case or with look-alikes.
        assert_eq!(normalize_code(&c.to_ascii_lowercase()), c);
        assert_eq!(normalize_code(" o1l0 "), "0110");
    }

    #[test]
    fn quorum_counts_distinct_named_approvers() {
        let ab = names(&["alice", "bob"]);
        assert_eq!(
            tally(&ab, 2, &[v("alice", YES)]),
            Tally::Pending { approvals: 1 }
        );
        assert_eq!(
            tally(&ab, 2, &[v("alice", YES), v("alice", YES)]),
            Tally::Pending { approvals: 1 }
        );
        assert_eq!(
            tally(&ab, 2, &[v("alice", YES), v("eve", YES)]),
            Tally::Pending { approvals: 1 }
        );
        assert_eq!(
            tally(
                &ab,
                2,
                &[v("alice", YES), v("bob", Vote::Approve { always: true })]
            ),
            Tally::Approved { always: true }
        );
        assert_eq!(
            tally(&ab, 1, &[v("bob", YES)]),
            Tally::Approved { always: false }
        );
    }

    #[test]
    fn a_named_approvers_deny_wins_and_strangers_cannot_deny() {
        let ab = names(&["alice", "bob"]);
        assert_eq!(
            tally(&ab, 2, &[v("alice", YES), v("bob", Vote::Deny)]),
            Tally::Denied { by: "bob".into() }
        );
        assert_eq!(
            tally(&ab, 1, &[v("eve", Vote::Deny), v("alice", YES)]),
            Tally::Approved { always: false }
        );
    }
}
