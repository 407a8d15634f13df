//! `oci_import`: an image from an OCI layout or archive in the workspace.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `oci_import` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    _provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    _opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let path = match n.attr("layout") {
        AttrValue::File(f) => f.file.clone(),
        _ => return Err("`layout` is required".into()),
    };
    let a = ag.add(l, ActionKind::ImportImage { path, tag: opt_string(n.attr("tag")), files: Vec::new() }, vec![]);
    Ok(Provided::Image(a))
}
