//! The policy file, `policy.toml` in the data dir: who may approve, and the ordered rules the
//! gate applies to every tool call (`nanoclaw_core::policy`). Missing means the defaults; a
//! file that does not parse, or names an unknown approver, stops startup naming the file, the
//! line and the key.

use anyhow::Context;
use nanoclaw_core::Policy;

use crate::home::Home;

pub const POLICY_FILE: &str = "policy.toml";

/// Written by `nanoclaw init`.
pub const DEFAULT_POLICY: &str = r#"# nanoclaw policy: decides every tool call before it runs.
#
# Rules are checked in order; the first that matches decides, except that a matching "deny"
# anywhere wins. With no match: tools that run inside the sandbox are allowed, anything else
# asks an approver. `nanoclaw policy check --tool T --args JSON` shows what a call would get.

# People who may answer approval requests. `terminal = true`: the owner at this machine
# (answering with `nanoclaw approvals approve ID`, or /approve CODE through the HTTP API).
[approvers.owner]
terminal = true

# Examples (remove the leading # to use one):
#
# [[rule]]
# name = "no force pushes"
# tool = "shell"
# args = { command = { regex = "git\\s+push\\s.*--force" } }
# action = "deny"
#
# [[rule]]
# name = "writes to the web ask once the turn has read outside content"
# tool = "http_request"
# tainted = true
# args = { method = { one_of = ["POST", "PUT", "PATCH", "DELETE"] } }
# action = "ask"
# approvers = ["owner"]     # default: every approver above
# quorum = 1                # distinct approvers needed
# timeout_secs = 600        # no answer in time means deny
# scope = "once"            # or "always" for this exact tool, arguments and group
#
# Other keys: group, channel (globs), sender ("owner", "approver", "other"); argument matchers
# `equals`, `glob`, `regex`, `one_of` on a dotted path into the call's arguments.
"#;

/// Load the policy; the defaults when there is no file.
pub fn load(home: &Home) -> anyhow::Result<Policy> {
    let path = home.dir.join(POLICY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Policy::parse(&text).map_err(|e| crate::UsageError(format!("{}: {e}", path.display())).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_parses_and_has_the_owner() {
        let p = Policy::parse(DEFAULT_POLICY).unwrap();
        assert!(p.approver("owner").is_some_and(|a| a.terminal));
    }
}
