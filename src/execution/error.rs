//! The execution module's error: an action's (or the scheduler's) failure with its [`ErrorKind`]
//! and `hint:` lines, so a failed action keeps who-can-fix-it up to the exit code.

use crate::model::error::{ErrorKind, Kinded};

/// A failure of an action or of the executor around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionError {
    pub kind: ErrorKind,
    pub message: String,
    pub hints: Vec<String>,
}

impl ActionError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ActionError {
        ActionError { kind, message: message.into(), hints: Vec::new() }
    }
    /// The action failed on its inputs (exit 1).
    pub fn build(message: impl Into<String>) -> ActionError {
        ActionError::new(ErrorKind::Build, message)
    }
    /// The workspace is wrong (exit 2).
    pub fn user(message: impl Into<String>) -> ActionError {
        ActionError::new(ErrorKind::User, message)
    }
    /// The machine or a service is missing or failing (exit 36).
    pub fn env(message: impl Into<String>) -> ActionError {
        ActionError::new(ErrorKind::Environment, message)
    }
    /// A bug in cbuild (exit 37).
    pub fn internal(message: impl Into<String>) -> ActionError {
        ActionError::new(ErrorKind::Internal, message)
    }
    /// Adds a `hint:` line.
    pub fn hint(mut self, h: impl Into<String>) -> ActionError {
        self.hints.push(h.into());
        self
    }
    /// Prefixes the message with context (`staging sources: …`), keeping kind and hints.
    pub fn context(mut self, c: impl std::fmt::Display) -> ActionError {
        self.message = format!("{c}: {}", self.message);
        self
    }
    /// From a module error: its message with the whole cause chain, its kind and hints.
    pub fn of<E: Kinded + std::error::Error>(e: &E) -> ActionError {
        ActionError { kind: e.kind(), message: super::chain(e), hints: e.hints() }
    }
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ActionError {}

impl Kinded for ActionError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
    fn hints(&self) -> Vec<String> {
        self.hints.clone()
    }
}

/// An untyped message is an action failure: the common case (a command failed, an input was
/// malformed). Places that know better construct the kind explicitly.
impl From<String> for ActionError {
    fn from(message: String) -> ActionError {
        ActionError::build(message)
    }
}

impl From<&str> for ActionError {
    fn from(message: &str) -> ActionError {
        ActionError::build(message)
    }
}

/// A blocking task that panicked or was cancelled: a bug (or an interrupted build).
impl Kinded for tokio::task::JoinError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// A glob pattern from a BUILD file or a buildpack that does not compile.
impl Kinded for globset::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}
