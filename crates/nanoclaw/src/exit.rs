//! What an error means for the exit status: [`UsageError`] (and a config error) is the
//! caller's fault, status 2; anything else is a failure, status 1.

/// A failure that is the caller's fault: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
