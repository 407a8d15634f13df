//! `builder`: a stack and an ordered list of buildpack groups, or a builder image read as the
//! lifecycle reads it (`image`), which `stack` and `order` may override. A workspace builder whose
//! run image has a registry reference also builds to a builder image (distribution spec).

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `builder` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let stack = match n.attr("stack") {
        AttrValue::Label(s) => match provided.get(s) {
            Some(Provided::Stack(st)) => Some(st.clone()),
            _ => return Err(format!("`stack` is `{s}`, which is not a `stack` target")),
        },
        _ => None,
    };
    let image = match n.attr("image") {
        AttrValue::Label(i) => Some(image_of(provided, i).ok_or_else(|| {
            format!("`image` is `{i}`, which is not an image (an oci_pull or oci_import of a builder image)")
        })?),
        _ => None,
    };
    let mut order = Vec::new();
    let mut all = Vec::new();
    for g in n.attr("order").as_list() {
        let mut group = Vec::new();
        for m in g.as_list() {
            let (bl, optional) = match m {
                AttrValue::Label(b) => (b, false),
                AttrValue::Optional(b) => (b, true),
                _ => continue,
            };
            match provided.get(bl) {
                Some(Provided::Buildpack(a)) => {
                    group.push((*a, optional));
                    // Composite children (and theirs) are reachable through the buildpack's deps.
                    all.extend(buildpack_closure(ag, *a));
                }
                _ => return Err(format!("order lists `{bl}`, which is not a `buildpack` target")),
            }
        }
        order.push(group);
    }
    all.sort_unstable();
    all.dedup();
    let Some((img, name)) = image else {
        let stack = stack.ok_or("`stack` is required (or `image`, a builder image)")?;
        if order.iter().all(|g| g.is_empty()) {
            return Err("`order` is required (or `image`, a builder image)".into());
        }
        let (output, note) = builder_image(n, provided, ag, opts, &stack, &order, &all)?;
        return Ok(Provided::Builder { stack, order, buildpacks: all, image: None, output, note });
    };
    if matches!(n.attr("lifecycle"), AttrValue::Label(_)) || !strings(n.attr("tags")).is_empty() {
        return Err("`lifecycle` and `tags` make a builder image of a workspace builder; with `image`, the builder is that image".into());
    }
    let read = ag.add(l, ActionKind::ReadBuilder { image: img, name }, vec![img]);
    let (stack, from_image) = match stack {
        // The stack gives run image, user and stack id; the builder image stays the build image.
        Some(mut st) => {
            st.build_image = img;
            (st, false)
        }
        None => {
            let run = ag.add(l, ActionKind::BuilderRunImage { builder: read }, vec![read]);
            let st = StackInfo {
                id: String::new(),
                build_image: img,
                run_image: run,
                run_image_name: String::new(),
                mirrors: Vec::new(),
                uid: 0,
                gid: 0,
            };
            (st, true)
        }
    };
    Ok(Provided::Builder { stack, order, buildpacks: all, image: Some((read, from_image)), output: None, note: None })
}

/// The builder image of a workspace builder: an action when the run image has a registry
/// reference (run.toml and the labels name it; a workspace label means nothing to pack), else a
/// note saying why there is none.
fn builder_image(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
    stack: &StackInfo,
    order: &[Vec<(ActionId, bool)>],
    all: &[ActionId],
) -> Result<(Option<ActionId>, Option<String>), String> {
    let l = &n.label;
    // An app using the builder needs no builder image.
    if !opts.requested.contains(l) {
        return Ok((None, None));
    }
    if stack.run_image_name.is_empty() {
        return Ok((
            None,
            Some(format!(
                "`{l}` builds to no builder image: its stack's run image has no registry reference for /cnb/run.toml \
                 (give the run image `tags`, or use an oci_pull); its apps build as usual"
            )),
        ));
    }
    let lifecycle = match n.attr("lifecycle") {
        AttrValue::Label(i) => {
            Some(image_of(provided, i).ok_or_else(|| format!("`lifecycle` is `{i}`, which is not an image"))?.0)
        }
        _ => None,
    };
    let spec = BuilderImageSpec {
        build_image: stack.build_image,
        order: order.to_vec(),
        buildpacks: all.to_vec(),
        run_image: stack.run_image_name.clone(),
        run_image_mirrors: stack.mirrors.clone(),
        stack_id: stack.id.clone(),
        uid: stack.uid,
        gid: stack.gid,
        lifecycle,
        description: str_attr(n, "description")?.to_string(),
    };
    let mut deps = vec![stack.build_image];
    deps.extend(all.iter().copied());
    deps.extend(lifecycle);
    let a = ag.add(l, ActionKind::BuilderImage(spec), deps);
    ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
    let note = lifecycle.is_none().then(|| {
        format!(
            "`{l}`: the builder image has no lifecycle (/cnb/lifecycle): `pack build` needs `--lifecycle-image` with it \
             (or give the builder `lifecycle = \"<an image target holding a lifecycle>\"`); cbuild needs none"
        )
    });
    Ok((Some(a), note))
}
