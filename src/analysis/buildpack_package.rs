//! `buildpack_package`: a buildpack as a buildpackage image (what `pack buildpack package`
//! makes), and with `format = "file"` also a `.cnb` file next to its layout.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `buildpack_package` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    _opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let bp = match n.attr("buildpack") {
        AttrValue::Label(b) => match provided.get(b) {
            Some(Provided::Buildpack(a)) => *a,
            _ => return Err(format!("`buildpack` is `{b}`, which is not a `buildpack` target")),
        },
        _ => return Err("`buildpack` is required".into()),
    };
    let all = buildpack_closure(ag, bp);
    let children: Vec<ActionId> = all.iter().copied().filter(|a| *a != bp).collect();
    let kind = ActionKind::Buildpackage {
        buildpack: bp,
        buildpacks: children,
        os: str_attr(n, "os")?.to_string(),
        architecture: str_attr(n, "architecture")?.to_string(),
    };
    let a = ag.add(l, kind, all);
    ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
    if str_attr(n, "format")? == "file" {
        ag.archives.push(l.clone());
    }
    Ok(Provided::Image(a))
}
