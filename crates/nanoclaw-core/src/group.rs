//! Group identifiers: the unit of isolation. Each group has its own sandbox workspace, history
//! and queue. A group id is used as a directory name on the host, so it is validated once here
//! and nothing downstream ever sees a raw string.

use std::fmt;
use std::str::FromStr;

/// Longest accepted group id, in bytes. Short enough for any file system's name limit.
pub const MAX_GROUP_ID_LEN: usize = 64;

/// A validated group id: 1 to 64 characters of `a-z`, `0-9`, `-` and `_`, starting with a
/// letter or digit. It can never be `.`/`..`, contain a separator, or be empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct GroupId(String);

/// Why a string is not a group id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupIdError {
    /// group id is empty
    #[error("group id is empty")]
    Empty,
    /// longer than the limit
    #[error("group id {0:?} is longer than {MAX_GROUP_ID_LEN} bytes")]
    TooLong(String),
    /// bad character
    #[error(
        "group id {0:?} may only hold a-z, 0-9, '-' and '_', and must start with a letter or digit"
    )]
    BadCharacter(String),
}

impl GroupId {
    /// The group a message goes to when none is named.
    pub fn main() -> Self {
        GroupId("main".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for GroupId {
    type Err = GroupIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(GroupIdError::Empty);
        }
        if s.len() > MAX_GROUP_ID_LEN {
            return Err(GroupIdError::TooLong(s.to_owned()));
        }
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let first_ok = s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !first_ok || !s.chars().all(allowed) {
            return Err(GroupIdError::BadCharacter(s.to_owned()));
        }
        Ok(GroupId(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for GroupId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["main", "a", "work-2", "x_y", "0abc"] {
            assert_eq!(ok.parse::<GroupId>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_path_traversal_and_separators() {
        for bad in [
            "..", ".", "a/b", "../etc", "a\\b", "-x", "_x", "Main", "a b", "a\0b", "é",
        ] {
            assert!(bad.parse::<GroupId>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rejects_empty_and_overlong() {
        assert_eq!("".parse::<GroupId>(), Err(GroupIdError::Empty));
        let long = "a".repeat(MAX_GROUP_ID_LEN + 1);
        assert!(matches!(
            long.parse::<GroupId>(),
            Err(GroupIdError::TooLong(_))
        ));
        assert!("a".repeat(MAX_GROUP_ID_LEN).parse::<GroupId>().is_ok());
    }

    #[test]
    fn deserialize_validates() {
        let r: Result<GroupId, _> = serde_json::from_str("\"../x\"");
        assert!(r.is_err());
    }
}
