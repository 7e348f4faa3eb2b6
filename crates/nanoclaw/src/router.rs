//! The router: which group a chat message belongs to, whether its sender may talk to the
//! agent at all, and whether it starts a turn or waits as context.
//!
//! - The owner's private chat (`main_chat`) is the main group; every other chat is a group of
//!   its own, named from the channel and the chat (`wh-team-room-1a2b3c4d`).
//! - Senders are the owner, known senders, or unknown; unknown senders are ignored or allowed,
//!   per channel.
//! - In the main group every message starts a turn. Elsewhere a message starts one only when
//!   it mentions the trigger (always, for channels without one, such as email); others are
//!   kept and given to the next turn as context.
//!
//! Pure: it decides from what it is handed and never touches the store.

use nanoclaw_core::GroupId;
use nanoclaw_core::policy::SenderRole;

/// What to do with senders nobody configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    Ignore,
    Allow,
    /// Keep the message, ask the approvers to admit the sender.
    Ask,
}

/// One channel's routing rules, from the config.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Short prefix for group names from this channel (`wh`, `tg`, `mail`).
    pub prefix: String,
    pub main_chat: Option<String>,
    pub owners: Vec<String>,
    pub senders: Vec<String>,
    pub unknown: Unknown,
    pub trigger: String,
    /// A group's own trigger (`[groups.NAME] trigger`), instead of the channel's.
    pub group_triggers: std::collections::BTreeMap<GroupId, String>,
}

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

/// The group of a chat.
pub fn group_for(rules: &Rules, chat: &str) -> GroupId {
    if rules.main_chat.as_deref() == Some(chat) {
        return GroupId::main();
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
    let slug: String = slug.chars().take(40).collect();
    // FNV-1a: distinct chats whose slugs collide still get distinct groups.
    let hash = chat.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let name = if slug.is_empty() {
        format!("{}-{:08x}", rules.prefix, hash as u32)
    } else {
        format!("{}-{slug}-{:08x}", rules.prefix, hash as u32)
    };
    name.parse().unwrap_or_else(|_| GroupId::main())
}

/// Route one message. `admitted` says whether an unknown sender was admitted since (asked
/// only on channels that ask).
pub fn route(
    rules: &Rules,
    chat: &str,
    sender: &str,
    text: &str,
    admitted: impl FnOnce() -> bool,
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
                let group = group_for(rules, chat);
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
    let group = group_for(rules, chat);
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
            route(&rules(Unknown::Allow), "owner-dm", "mallory", "hi", || {
                false
            }),
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
        ) else {
            panic!()
        };
        assert!(triggered);
        assert_ne!(
            group_for(&rules(Unknown::Ignore), "a/b"),
            group_for(&rules(Unknown::Ignore), "a b")
        );
        assert!(
            group_for(&rules(Unknown::Ignore), "日本")
                .as_str()
                .starts_with("wh-")
        );
    }

    #[test]
    fn a_group_may_have_its_own_trigger() {
        let mut r = rules(Unknown::Ignore);
        let room = group_for(&r, "room");
        r.group_triggers.insert(room, "!ai".into());
        let triggered = |text: &str| match route(&r, "room", "bob", text, || false) {
            Route::Deliver { triggered, .. } => triggered,
            other => panic!("{other:?}"),
        };
        assert!(triggered("!ai summarize"));
        assert!(!triggered("@nanoclaw summarize"));
    }

    #[test]
    fn unknown_senders_are_held_until_admitted_on_channels_that_ask() {
        let r = route(&rules(Unknown::Ask), "room", "eve", "@nanoclaw hi", || {
            false
        });
        assert!(matches!(r, Route::Hold { .. }), "{r:?}");
        let r = route(&rules(Unknown::Ask), "room", "eve", "@nanoclaw hi", || true);
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
            route(&rules(Unknown::Ask), "owner-dm", "eve", "hi", || true),
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
                || false
            ),
            Route::Ignore { .. }
        ));
        assert!(matches!(
            route(
                &rules(Unknown::Allow),
                "room",
                "eve",
                "@nanoclaw hi",
                || false
            ),
            Route::Deliver {
                role: SenderRole::Other,
                triggered: true,
                ..
            }
        ));
    }
}
