//! The gate's answer for a tool call: an ordered enum, so combining decisions with `max()`
//! takes the strictest (`Deny` over `Ask` over `Allow`). The rules that produce it live in
//! [`crate::policy`].

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
