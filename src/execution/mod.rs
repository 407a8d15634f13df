//! Execution: the scheduler, the sandbox and one runner per action kind. Takes a plain
//! [`ActionGraph`](crate::model::action::ActionGraph), so it is testable without Starlark.

pub mod container;
pub mod emulation;
pub mod error;
pub mod events;
pub mod lazy;
pub mod probe;
pub mod remote_exec;
pub mod runners;
pub mod sandbox;
pub mod scheduler;
pub mod scratch_gc;
pub mod sources;
pub mod structure_test;
pub mod uploads;
pub mod worker;

pub use error::ActionError;
pub use events::{Event, Outcome, Reporter};
pub use scheduler::{execute, fetch_remote_layers, BuildReport, ExecConfig};

pub use crate::model::error::chain;
