//! `cbuild build PATTERNS...` (and the shorthand `cbuild //pkg:name`): a [`session`](super::session)
//! build that writes each image target's layout, optionally pushes (`--push`), and prints the summary.

use std::process::ExitCode;

use clap::Args;

use super::session::{build, print_summary};
use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Targets to build: //pkg:name, //pkg, :name, //pkg/..., //...
    #[arg(required = true, value_name = "PATTERNS")]
    pub patterns: Vec<String>,
    /// Keep building independent targets after a failure.
    #[arg(short, long)]
    pub keep_going: bool,
    /// Push each built image to the references in its `tags` (only missing blobs are uploaded).
    #[arg(long)]
    pub push: bool,
}

pub fn run(g: &GlobalArgs, a: BuildArgs) -> Result<ExitCode, Failure> {
    // A build with nothing to do is answered from the last identical build's record
    // (`cli::noop`): every read from here on is stamped for the next one.
    let started = std::time::SystemTime::now();
    if !a.push {
        crate::fs::reads::start();
        crate::env::log_reads();
    }
    let s = Settings::resolve(g)?;
    if !a.push {
        if let Some(code) = crate::cli::noop::replay(&s, &a.patterns) {
            return Ok(code);
        }
    }
    let mut built = build(s, &a.patterns, a.keep_going)?;
    if a.push && built.report.ok() {
        // Pushes are not actions: reported as `pushed`, never added to `executed`.
        built.pushed = super::push::push_built(&built, &[])?;
    }
    print_summary(&built);
    if !a.push {
        crate::cli::noop::record(&built, started, crate::fs::reads::take(), crate::env::read_names());
    }
    Ok(exit_code(&built.report))
}

/// See [`crate::cli::output::report_exit_code`].
pub use crate::cli::output::report_exit_code as exit_code;
