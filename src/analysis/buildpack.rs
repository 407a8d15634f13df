//! `buildpack`: a buildpack tree (the directory holding `buildpack.toml`).

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `buildpack` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    _opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let (srcs, deps) = sources(n, "srcs", provided)?;
    // The buildpack's root is the shallowest directory holding a buildpack.toml.
    let root = srcs
        .iter()
        .filter(|(rel, _)| rel == "buildpack.toml" || rel.ends_with("/buildpack.toml"))
        .map(|(rel, _)| rel.trim_end_matches("buildpack.toml").trim_end_matches('/').to_string())
        .min_by_key(|r| (r.matches('/').count(), r.len(), r.clone()))
        .ok_or("`srcs` has no buildpack.toml (a buildpack is the directory holding it)")?;
    let prefix = if root.is_empty() { String::new() } else { format!("{root}/") };
    let files: Vec<(String, Input)> =
        srcs.into_iter().filter_map(|(rel, i)| rel.strip_prefix(&prefix).map(|r| (r.to_string(), i))).collect();
    let mut deps = deps;
    for d in n.attr("deps").as_list() {
        if let Some(AttrValue::Label(dl)) = Some(d) {
            match provided.get(dl) {
                Some(Provided::Buildpack(a)) => deps.push(*a),
                _ => return Err(format!("`deps` lists `{dl}`, which is not a buildpack")),
            }
        }
    }
    let root = if root.is_empty() { l.package.to_string() } else { l.package.join(&root) };
    let a = ag.add(l, ActionKind::Buildpack { root, files }, deps);
    Ok(Provided::Buildpack(a))
}
