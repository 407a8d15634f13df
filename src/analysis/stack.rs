//! `stack`: a build image and a run image with the user buildpacks run as.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `stack` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    _opts: &Options,
) -> Result<Provided, String> {
    let _l = &n.label;
    let img = |attr: &str| -> Result<(ActionId, String), String> {
        match n.attr(attr) {
            AttrValue::Label(b) => match provided.get(b) {
                // An image built in the graph is recorded by where it is pushed (its first
                // tag; the others become mirrors below), never by its workspace label,
                // which no registry rebase can resolve. Untagged: no name is recorded.
                Some(Provided::Image(a)) => {
                    Ok((*a, ag.image_tags.get(b).and_then(|t| t.first()).cloned().unwrap_or_default()))
                }
                // A pulled run image is recorded by its registry name, so a registry rebase
                // can check the new run image against it.
                Some(Provided::Pulled(a, image)) => Ok((*a, strip_pin(image))),
                _ => Err(format!("`{attr}` is `{b}`, which is not an image")),
            },
            _ => Err(format!("`{attr}` is required")),
        }
    };
    let (build_image, _) = img("build_image")?;
    let (run_image, run_label) = img("run_image")?;
    let uid = int_attr(n, "user_id")?;
    let gid = int_attr(n, "group_id")?;
    if uid <= 0 || gid <= 0 || uid > u32::MAX as i64 || gid > u32::MAX as i64 {
        return Err("`user_id` and `group_id` must be positive: buildpacks never run as root".into());
    }
    Ok(Provided::Stack(StackInfo {
        id: str_attr(n, "id")?.to_string(),
        build_image,
        run_image,
        mirrors: {
            // A graph-built run image's other tags are mirrors too.
            let tags = match n.attr("run_image") {
                AttrValue::Label(b) if matches!(provided.get(b), Some(Provided::Image(_))) => {
                    ag.image_tags.get(b).cloned().unwrap_or_default()
                }
                _ => Vec::new(),
            };
            let mut m: Vec<String> = tags.into_iter().skip(1).collect();
            m.extend(strings(n.attr("run_image_mirrors")));
            m
        },
        run_image_name: run_label,
        uid: uid as u32,
        gid: gid as u32,
    }))
}
