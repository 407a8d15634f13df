//! Events the scheduler reports while it works, and the [`Reporter`] trait the CLI implements
//! (progress bars, plain lines, JSON lines). Execution never prints by itself.

use std::time::Duration;

use serde::Serialize;

/// How an action's result was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Executed,
    CachedLocal,
    CachedRemote,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::CachedLocal => "cached_local",
            Outcome::CachedRemote => "cached_remote",
            Outcome::Failed => "failed",
        }
    }
}

/// One thing that happened during execution.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The build starts with this many actions.
    Plan { actions: usize },
    /// An action starts running (after a cache miss).
    Started { label: String, action: String },
    /// An action finished (ran or came from a cache).
    Finished {
        label: String,
        action: String,
        outcome: Outcome,
        #[serde(serialize_with = "ms")]
        duration: Duration,
    },
    /// An action failed; `error` says why.
    Failed { label: String, action: String, error: String },
    /// A line of output of a sandboxed command, prefixed for humans by the reporter.
    Output { label: String, action: String, stream: String, line: String },
    /// A warning that does not fail the build (cache discarded, remote unreachable, ...).
    Warning { message: String },
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Receives events; implementations must be cheap and thread-safe.
pub trait Reporter: Send + Sync {
    fn event(&self, e: &Event);
}

/// A reporter that drops everything (tests, `--quiet` machinery).
pub struct NullReporter;

impl Reporter for NullReporter {
    fn event(&self, _e: &Event) {}
}

/// A reporter that keeps every event (tests).
#[derive(Default)]
pub struct RecordingReporter(pub std::sync::Mutex<Vec<Event>>);

impl Reporter for RecordingReporter {
    fn event(&self, e: &Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(e.clone());
    }
}
