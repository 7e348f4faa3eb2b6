//! The router: which group a chat message belongs to, whether its sender may talk to the
//! agent at all, and whether it starts a turn or waits as context.
//!
//! - The owner's private chat (`main_chat`) is the main group; every other chat is a group of
//!   its own, named from the channel and the chat (`wh-team-room-` and 20 hex digits of the
//!   chat's SHA-256).
//! - Senders are the owner, known senders, or unknown; unknown senders are ignored, allowed,
//!   or held while the approvers are asked to admit them, per channel.
//! - In the main group every message starts a turn. Elsewhere a message starts one only when
//!   it mentions the trigger (always, for channels without one, such as email); others are
//!   kept and given to the next turn as context.
//!
//! Pure: it decides from what it is handed and never touches the store.

use nanoclaw_core::GroupId;
use nanoclaw_core::policy::SenderRole;

pub use crate::config::channels::{Rules, Unknown};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Deliver {
        group: GroupId,
        triggered: bool,
        role: SenderRole,
    },
    Ignore {
        why: String,
    },
    /// An unknown sender on a channel that asks: keep the message (starting no turn) and ask
    /// the approvers to admit them.
    Hold {
        group: GroupId,
    },
}

/// Hex digits of the chat's SHA-256 in its group's name: 80 bits, so a sender choosing chat
/// ids cannot find one that lands in another chat's group.
const GROUP_HASH_HEX: usize = 20;
/// Characters of the chat's name kept in its group's name, for people reading it.
const GROUP_SLUG_CHARS: usize = 32;

/// The group of a chat: `PREFIX-SLUG-HASH`. `None` when no valid name comes out (never for
/// the channels' own prefixes; the message is then ignored, never sent to `main`).
pub fn group_for(rules: &Rules, chat: &str) -> Option<GroupId> {
    if rules.main_chat.as_deref() == Some(chat) {
        return Some(GroupId::main());
    }
    let slug: String = chat
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug: String = slug.chars().take(GROUP_SLUG_CHARS).collect();
    let slug = slug.trim_end_matches('-');
    // Distinct chats whose slugs are the same still get distinct groups.
    let digest = ring::digest::digest(&ring::digest::SHA256, chat.as_bytes());
    let hash = nanoclaw_core::hex::encode(&digest.as_ref()[..GROUP_HASH_HEX / 2]);
    let name = if slug.is_empty() {
        format!("{}-{hash}", rules.prefix)
    } else {
        format!("{}-{slug}-{hash}", rules.prefix)
    };
    name.parse().ok()
}

fn no_group(chat: &str) -> Route {
    Route::Ignore {
        why: format!("no group name can be made for chat {chat:?}"),
    }
}

/// A chat seen before keeps the group it was given then (the naming may change between
/// versions, a chat's history must not); only the configured main chat is ever `main`.
fn chat_group(rules: &Rules, chat: &str, known: Option<&GroupId>) -> Option<GroupId> {
    if rules.main_chat.as_deref() == Some(chat) {
        return Some(GroupId::main());
    }
    match known {
        Some(group) if *group != GroupId::main() => Some(group.clone()),
        _ => group_for(rules, chat),
    }
}

/// Route one message. `admitted` says whether an unknown sender was admitted since (asked
/// only on channels that ask); `known` is the group the chat was stored under before, if any.
pub fn route(
    rules: &Rules,
    chat: &str,
    sender: &str,
    text: &str,
    admitted: impl FnOnce() -> bool,
    known: Option<&GroupId>,
) -> Route {
    let role = if rules.owners.iter().any(|o| o == sender) {
        SenderRole::Owner
    } else if rules.senders.iter().any(|s| s == sender) {
        SenderRole::Other
    } else {
        match rules.unknown {
            Unknown::Allow => SenderRole::Other,
            Unknown::Ask if admitted() => SenderRole::Other,
            Unknown::Ask => {
                let Some(group) = chat_group(rules, chat, known) else {
                    return no_group(chat);
                };
                if group == GroupId::main() {
                    return Route::Ignore {
                        why: format!(
                            "only the owner talks in the main chat; {sender:?} is not the owner"
                        ),
                    };
                }
                return Route::Hold { group };
            }
            Unknown::Ignore => {
                return Route::Ignore {
                    why: format!("sender {sender:?} is not known on this channel"),
                };
            }
        }
    };
    let Some(group) = chat_group(rules, chat, known) else {
        return no_group(chat);
    };
    if group == GroupId::main() && role != SenderRole::Owner {
        return Route::Ignore {
            why: format!("only the owner talks in the main chat; {sender:?} is not the owner"),
        };
    }
    let trigger = rules
        .group_triggers
        .get(&group)
        .unwrap_or(&rules.trigger)
        .to_lowercase();
    // No trigger: every message is addressed to the agent (mail sent to its address).
    let triggered =
        group == GroupId::main() || trigger.is_empty() || text.to_lowercase().contains(&trigger);
    Route::Deliver {
        group,
        triggered,
        role,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(unknown: Unknown) -> Rules {
        Rules {
            prefix: "wh".into(),
            main_chat: Some("owner-dm".into()),
            owners: vec!["alice".into()],
            senders: vec!["bob".into()],
            unknown,
            trigger: "@nanoclaw".into(),
            group_triggers: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn the_owners_private_chat_is_main_and_always_triggers() {
        let r = route(
            &rules(Unknown::Ignore),
            "owner-dm",
            "alice",
            "hello",
            || false,
            None,
        );
        assert_eq!(
            r,
            Route::Deliver {
                group: GroupId::main(),
                triggered: true,
                role: SenderRole::Owner
            }
        );
        assert!(matches!(
            route(
                &rules(Unknown::Allow),
                "owner-dm",
                "mallory",
                "hi",
                || false,
                None
            ),
            Route::Ignore { .. }
        ));
    }

    #[test]
    fn other_chats_are_their_own_groups_and_need_the_trigger() {
        let r = route(
            &rules(Unknown::Ignore),
            "Team Room #1",
            "bob",
            "lunch?",
            || false,
            None,
        );
        let Route::Deliver {
            group,
            triggered,
            role,
        } = r
        else {
            panic!("{r:?}")
        };
        assert!(group.as_str().starts_with("wh-team-room-1-"), "{group}");
        assert!(!triggered);
        assert_eq!(role, SenderRole::Other);
        let Route::Deliver { triggered, .. } = route(
            &rules(Unknown::Ignore),
            "Team Room #1",
            "bob",
            "@NanoClaw summarize",
            || false,
            None,
        ) else {
            panic!()
        };
        assert!(triggered);
        let r = rules(Unknown::Ignore);
        assert_ne!(group_for(&r, "a/b"), group_for(&r, "a b"));
        let group = |chat: &str| group_for(&r, chat).unwrap().as_str().to_owned();
        assert!(group("日本").starts_with("wh-"), "{}", group("日本"));
        assert_eq!(group("日本").len(), "wh-".len() + 20);
        // The longest chat name still makes a valid id: slug cut, hash whole.
        let long = group(&"Room ".repeat(40));
        assert!(
            long.starts_with("wh-room-room-") && long.len() <= 64,
            "{long}"
        );
        assert_eq!(group("Team Room #1"), group("Team Room #1"));
        assert_ne!(group("Team Room #1"), group("Team Room #1!"));
    }

    #[test]
    fn a_group_may_have_its_own_trigger() {
        let mut r = rules(Unknown::Ignore);
        let room = group_for(&r, "room").unwrap();
        r.group_triggers.insert(room, "!ai".into());
        let triggered = |text: &str| match route(&r, "room", "bob", text, || false, None) {
            Route::Deliver { triggered, .. } => triggered,
            other => panic!("{other:?}"),
        };
        assert!(triggered("!ai summarize"));
        assert!(!triggered("@nanoclaw summarize"));
    }

    #[test]
    fn unknown_senders_are_held_until_admitted_on_channels_that_ask() {
        let r = route(
            &rules(Unknown::Ask),
            "room",
            "eve",
            "@nanoclaw hi",
            || false,
            None,
        );
        assert!(matches!(r, Route::Hold { .. }), "{r:?}");
        let r = route(
            &rules(Unknown::Ask),
            "room",
            "eve",
            "@nanoclaw hi",
            || true,
            None,
        );
        assert!(
            matches!(
                r,
                Route::Deliver {
                    triggered: true,
                    role: SenderRole::Other,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(matches!(
            route(&rules(Unknown::Ask), "owner-dm", "eve", "hi", || true, None),
            Route::Ignore { .. }
        ));
    }

    #[test]
    fn unknown_senders_follow_the_channel_policy() {
        assert!(matches!(
            route(
                &rules(Unknown::Ignore),
                "room",
                "eve",
                "@nanoclaw hi",
                || false,
                None,
            ),
            Route::Ignore { .. }
        ));
        assert!(matches!(
            route(
                &rules(Unknown::Allow),
                "room",
                "eve",
                "@nanoclaw hi",
                || false,
                None,
            ),
            Route::Deliver {
                role: SenderRole::Other,
                triggered: true,
                ..
            }
        ));
    }

    #[test]
    fn a_chat_seen_before_keeps_its_group_but_never_main() {
        let r = rules(Unknown::Ignore);
        let old: GroupId = "wh-team-room-1a2b3c4d".parse().unwrap();
        let group = |known: Option<&GroupId>| match route(
            &r,
            "Team Room #1",
            "bob",
            "@nanoclaw hi",
            || false,
            known,
        ) {
            Route::Deliver { group, .. } => group,
            other => panic!("{other:?}"),
        };
        assert_eq!(group(Some(&old)), old);
        assert_eq!(group(None), group_for(&r, "Team Room #1").unwrap());
        // A chat once stored as main (the main chat was another then) is not main now.
        assert_ne!(group(Some(&GroupId::main())), GroupId::main());
    }
}
