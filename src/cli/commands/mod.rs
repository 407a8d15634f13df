//! One file per subcommand; each takes the global args and its own, resolves settings, and returns
//! an exit code or a [`super::Failure`].

pub mod affected;
pub mod build;
pub mod cache;
pub mod completions;
pub mod explain;
pub mod export;
pub mod inspect;
pub mod load_image;
pub mod lock;
pub mod man;
pub mod push;
pub mod query;
pub mod rebase;
pub mod run;
pub mod sbom;
pub mod session;
pub mod test;
pub mod verify;
pub mod watch;
pub mod worker;

use super::output::Failure;
use super::settings::Settings;
use crate::model::label::Pattern;

/// Parses command-line patterns relative to the current package.
pub fn parse_patterns(s: &Settings, raw: &[String]) -> Result<Vec<Pattern>, Failure> {
    let cur = s.current_package();
    raw.iter()
        .map(|p| {
            Pattern::parse(p, cur.as_ref()).map_err(|e| {
                Failure::user_hint(
                    e.to_string(),
                    "labels look like //services/api:image, //services/api, :image, //... or //services/...",
                )
            })
        })
        .collect()
}

/// Loads the graph for `patterns`, turning load errors into a located failure.
pub fn load(s: &Settings, patterns: &[Pattern]) -> Result<crate::loading::Loaded, Failure> {
    crate::loading::load_limited(s.root(), patterns, s.glob_limit, s.starlark_limits).map_err(Failure::Load)
}

/// Loads `patterns` and analyses every loaded target, for the file → target index of `query`'s
/// `set(file …)` and of `affected`.
pub fn load_indexed(
    s: &Settings,
    patterns: &[Pattern],
) -> Result<(crate::loading::Loaded, super::inputs::InputIndex), Failure> {
    let loaded = load(s, patterns)?;
    let all: Vec<_> = loaded.graph.nodes.keys().cloned().collect();
    let opts = s.analysis_options();
    let actions = crate::analysis::analyze(&loaded.graph, &all, &opts).map_err(Failure::Load)?;
    let index = super::inputs::InputIndex::build(s.root(), &loaded, &actions);
    Ok((loaded, index))
}
