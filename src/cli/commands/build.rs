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
    let s = Settings::resolve(g)?;
    let mut built = build(s, &a.patterns, a.keep_going)?;
    if a.push && built.report.ok() {
        // Pushes are not actions: reported as `pushed`, never added to `executed`.
        built.pushed = super::push::push_built(&built, &[])?;
    }
    print_summary(&built);
    Ok(exit_code(&built.report))
}

/// 0 when everything built; else the code of the worst error's kind (README › Exit codes), or 8
/// when Ctrl-C stopped the build.
pub fn exit_code(r: &crate::execution::BuildReport) -> ExitCode {
    if r.ok() {
        ExitCode::SUCCESS
    } else if let Some(kind) = r.error_kind() {
        ExitCode::from(kind.exit_code())
    } else {
        ExitCode::from(crate::model::error::EXIT_INTERRUPTED)
    }
}
