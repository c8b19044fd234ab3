//! Errors of the domain model: what is wrong with a value, said so that a
//! user can correct it.

use thiserror::Error;

/// A value that breaks a rule of the domain model.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("{field} is {len} long, more than the limit of {max}")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} contains the character {found:?}, which is not allowed there")]
    BadCharacter { field: &'static str, found: char },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Text that could not be parsed into a domain value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("expected text starting with {expected:?}, got {found:?}")]
    WrongPrefix { expected: &'static str, found: String },
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// A rule broken by an update or a message at a given moment.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    #[error("version {offered} is not newer than the version {current} already held")]
    StaleVersion { current: u64, offered: u64 },
    #[error("expired at {expiry} ms, now is {now} ms")]
    Expired { expiry: u64, now: u64 },
    #[error("created at {created} ms, which is more than {skew_ms} ms ahead of now ({now} ms)")]
    FromTheFuture { created: u64, now: u64, skew_ms: u64 },
}
