//! The policy file, `policy.toml` in the data dir: who may approve, and the ordered rules the
//! gate applies to every tool call (`nanoclaw_core::policy`). A file that is missing, does not
//! parse, names an unknown approver, or has a rule naming a tool, channel or argument that does
//! not exist (a rule that could never match) stops startup naming the file, the line and the
//! key: a typo must never turn a `deny` off.

use anyhow::Context;
use nanoclaw_core::Policy;
use nanoclaw_core::policy::Vocabulary;

use crate::config::ConfigError;
use crate::config::home::Home;

pub const POLICY_FILE: &str = "policy.toml";

/// Written by `nanoclaw init`.
pub const DEFAULT_POLICY: &str = include_str!("default-policy.toml");

/// Load the policy and hold it to `vocabulary` (what rules may name: see `app::vocabulary`).
pub fn load(home: &Home, vocabulary: &Vocabulary) -> anyhow::Result<Policy> {
    let path = home.dir.join(POLICY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing {
                path,
                hint: "every tool call is checked against it (`nanoclaw init` writes the default \
                       one and keeps existing files)"
                    .into(),
            }
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&text, vocabulary).map_err(|e| {
        ConfigError::Parse {
            path,
            message: e.to_string(),
        }
        .into()
    })
}

/// Parse and check a policy file's text.
pub fn parse(
    text: &str,
    vocabulary: &Vocabulary,
) -> Result<Policy, nanoclaw_core::policy::PolicyError> {
    let policy = Policy::parse(text)?;
    policy.check(vocabulary)?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_parses_and_has_the_owner() {
        let p = parse(DEFAULT_POLICY, &crate::app::vocabulary()).unwrap();
        assert!(p.approver("owner").is_some_and(|a| a.terminal));
    }

    /// Each mistake that would leave a rule unable to match, or an approver unable to answer,
    /// is refused with the line and key.
    #[test]
    fn rules_that_could_never_match_are_refused() {
        let owner = "[approvers.owner]\nterminal = true\n";
        for (body, expected) in [
            (
                "[[rule]]\ntool = \"shel\"\naction = \"deny\"\n",
                "line 3: rule[1].tool: \"shel\" names no tool (tools: shell,",
            ),
            (
                "[[rule]]\ntool = \"SHELL\"\naction = \"deny\"\n",
                "rule[1].tool: \"SHELL\" names no tool",
            ),
            (
                "[[rule]]\ntool = \"shell\"\nchannel = \"telegarm\"\naction = \"deny\"\n",
                "rule[1].channel: \"telegarm\" names no channel (channels: terminal, api, telegram, email, webhook, task)",
            ),
            (
                "[[rule]]\ntool = \"shell\"\nargs = { cmd = { regex = \"rm\" } }\naction = \"deny\"\n",
                "rule[1].args.cmd: no tool this rule matches has an argument \"cmd\" (shell takes command, timeout_secs)",
            ),
            (
                "[[rule]]\ntool = \"http_request\"\nargs = { method = { one_of = [] } }\naction = \"deny\"\n",
                "rule[1].args.method: one_of needs at least one value",
            ),
            (
                "[[rule]]\ntool = \"*\"\nargs = { command = { glob = \"*\" }, url = { glob = \"*\" } }\naction = \"deny\"\n",
                "rule[1].args: no one tool this rule matches takes all of command, url",
            ),
            (
                "[approvers.bob]\nids = { slack = [\"1\"] }\n",
                "line 3: approvers.\"bob\".ids: approvers cannot be reached on \"slack\"",
            ),
            (
                "[approvers.bob]\nids = { telegram = [\"\"] }\n",
                "approvers.\"bob\": an empty id in ids.telegram",
            ),
            (
                "[approvers.bob]\n",
                "approvers.\"bob\": can never answer a request",
            ),
            (
                "[approvers.\"\"]\nterminal = true\n",
                "an approver needs a name",
            ),
        ] {
            let text = format!("{owner}{body}");
            let e = parse(&text, &crate::app::vocabulary())
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{body}: {e}");
        }
        // Globs that name something are fine, arguments of any tool a glob matches too.
        parse(
            &format!(
                "{owner}[[rule]]\ntool = \"*_file\"\nchannel = \"tele*\"\nargs = {{ path = {{ glob = \"/etc/*\" }} }}\naction = \"deny\"\n"
            ),
            &crate::app::vocabulary(),
        )
        .unwrap();
    }
}
