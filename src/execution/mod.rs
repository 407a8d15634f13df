//! Execution: the scheduler, the sandbox and one runner per action kind. Takes a plain
//! [`ActionGraph`](crate::model::action::ActionGraph), so it is testable without Starlark.

pub mod error;
pub mod events;
pub mod runners;
pub mod sandbox;
pub mod scheduler;
pub mod sources;

pub use error::ActionError;
pub use events::{Event, Outcome, Reporter};
pub use scheduler::{execute, fetch_remote_layers, BuildReport, ExecConfig};

/// An error with its whole `source()` chain (`cannot write layer …: … : No space left on device`),
/// so the cause reaches the user instead of only the outermost context.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
