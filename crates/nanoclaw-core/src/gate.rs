//! The gate's answer for a tool call or a network request: an ordered enum, `Allow < Ask <
//! Deny`, so where independent answers combine (a call's own decision and its network
//! requests', the approvals a call still needs) `max()` takes the strictest. Within one kind of
//! rule the policy combines differently, and on purpose: a `deny` that matches anywhere
//! decides, else the first match (`policy::combine`), so a narrow `allow` can sit above a broad
//! `ask`; every matched rule is kept in the verdict for the audit log.

/// What happens to a tool call. Ordered: a combination of decisions takes the strictest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Ask,
    Deny,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_over_ask_wins_over_allow() {
        assert_eq!(Decision::Allow.max(Decision::Ask), Decision::Ask);
        assert_eq!(Decision::Ask.max(Decision::Deny), Decision::Deny);
        assert_eq!(Decision::Allow.max(Decision::Deny), Decision::Deny);
    }
}
