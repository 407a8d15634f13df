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
    let image = match n.attr("image") {
        AttrValue::Label(i) => Some(image_of(provided, i).ok_or_else(|| {
            format!("`image` is `{i}`, which is not an image (an oci_pull or oci_import of a buildpackage)")
        })?),
        _ => None,
    };
    let archive = match n.attr("archive") {
        AttrValue::File(f) => Some(f.file.clone()),
        _ => None,
    };
    match (!srcs.is_empty(), image, archive) {
        (true, None, None) => {}
        (false, Some((img, name)), None) => {
            let a = ag.add(l, ActionKind::ReadBuildpackage { image: img, name }, vec![img]);
            return Ok(Provided::Buildpack(a));
        }
        (false, None, Some(path)) => {
            // A .cnb is an OCI layout tar: imported like oci_import (a tar that is not one is an
            // error naming it), then read as a buildpackage.
            let img = ag.add(l, ActionKind::ImportImage { path: path.clone(), tag: None, files: Vec::new() }, vec![]);
            let a = ag.add(l, ActionKind::ReadBuildpackage { image: img, name: path }, vec![img]);
            return Ok(Provided::Buildpack(a));
        }
        (false, None, None) => {
            return Err("give the buildpack `srcs` (its tree), `image` (a buildpackage) or `archive` (a .cnb)".into())
        }
        _ => return Err("`srcs`, `image` and `archive` are exclusive: give one".into()),
    }
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
