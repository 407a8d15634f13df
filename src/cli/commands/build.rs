//! `cbuild build PATTERNS...` (and the shorthand `cbuild //pkg:name`).

use std::process::ExitCode;

use clap::Args;

use crate::cli::settings::Settings;
use crate::cli::{Failure, GlobalArgs};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Targets to build: //pkg:name, //pkg, :name, //pkg/..., //...
    #[arg(required = true, value_name = "PATTERNS")]
    pub patterns: Vec<String>,
    /// Keep building independent targets after a failure.
    #[arg(short, long)]
    pub keep_going: bool,
}

pub fn run(g: &GlobalArgs, a: BuildArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let pats = super::parse_patterns(&s, &a.patterns)?;
    let loaded = super::load(&s, &pats)?;
    let order = loaded.graph.topo_order();
    for l in order.iter().filter(|l| loaded.graph.deps(&loaded.requested).contains(l)) {
        println!("{} {}", loaded.graph.nodes[l].kind, l);
    }
    Ok(ExitCode::SUCCESS)
}
