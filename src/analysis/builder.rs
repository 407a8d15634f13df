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
    for b in n.attr("buildpacks").as_list() {
        if let AttrValue::Label(bl) = b {
            match provided.get(bl) {
                Some(Provided::Buildpack(a)) => all.extend(buildpack_closure(ag, *a)),
                _ => return Err(format!("`buildpacks` lists `{bl}`, which is not a `buildpack` target")),
            }
        }
    }
    all.sort_unstable();
    all.dedup();
    let config_file = match n.attr("config") {
        AttrValue::File(f) => Some(f.file.clone()),
        _ => None,
    };
    let Some((img, name)) = image else {
        let mut stack = stack.ok_or("`stack` is required (or `image`, a builder image)")?;
        let mut config = None;
        let mut description = str_attr(n, "description")?.to_string();
        if let Some(file) = &config_file {
            let (c, toml) = builder_config(file, opts, order.iter().all(|g| g.is_empty()))?;
            // The run image pack would record: builder.toml's, a registry reference.
            if let Some(run) = toml.run_images.first() {
                stack.run_image_name = run.image.clone();
                stack.mirrors = run.mirrors.clone();
            }
            if description.is_empty() {
                description = toml.description.clone();
            }
            if !toml.ignored.is_empty() && opts.requested.contains(l) {
                ag.notes.push(format!(
                    "`{l}`: `{file}`: {} not applied (give the builder `lifecycle`; image extensions are not supported)",
                    toml.ignored.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ));
            }
            config = Some(c);
        }
        if order.iter().all(|g| g.is_empty()) && config.is_none() {
            return Err("`order` is required (or `config`, a builder.toml, or `image`, a builder image)".into());
        }
        let (output, note) = builder_image(n, provided, ag, opts, &stack, &order, &all, &description, config.as_ref())?;
        return Ok(Provided::Builder {
            stack,
            order,
            buildpacks: all,
            image: None,
            output,
            note,
            config: config.map(Box::new),
        });
    };
    if config_file.is_some() {
        return Err(
            "`config` (a builder.toml) describes a workspace builder; with `image`, the builder is that image".into()
        );
    }
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
    Ok(Provided::Builder {
        stack,
        order,
        buildpacks: all,
        image: Some((read, from_image)),
        output: None,
        note: None,
        config: None,
    })
}

/// Largest builder.toml read.
const MAX_BUILDER_TOML: u64 = 4 << 20;

/// Reads pack's builder.toml (analysis time, like a project.toml: its errors are load errors) into
/// what the phases and the builder image use. `needs_order`: the BUILD file gives no `order`.
fn builder_config(
    file: &str,
    opts: &Options,
    needs_order: bool,
) -> Result<(BuilderConfig, crate::cnb::distribution::BuilderToml), String> {
    crate::fs::reads::note(&opts.root.join(file), false);
    let path = crate::execution::sources::resolve_source(&opts.root, file).map_err(|e| format!("`config`: {e}"))?;
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if len > MAX_BUILDER_TOML {
        return Err(format!("`config`: `{file}` is {len} bytes; at most {MAX_BUILDER_TOML} are read"));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("`config`: reading `{file}`: {e}"))?;
    let t = crate::cnb::distribution::BuilderToml::parse(&text, file).map_err(|e| e.to_string())?;
    if needs_order && t.order.is_empty() {
        return Err(format!("`{file}`: `order`: no `[[order]]` groups (and the builder has no `order`)"));
    }
    let refs = |v: &[crate::cnb::buildpack_toml::BuildpackRef], key: &str| -> Result<Vec<ProjectRef>, String> {
        v.iter()
            .enumerate()
            .map(|(i, r)| {
                if r.id.is_empty() {
                    return Err(format!("`{file}`: `{key}[{i}]`: no `id`"));
                }
                Ok(ProjectRef {
                    id: r.id.clone(),
                    version: r.version.clone(),
                    action: None,
                    optional: r.optional,
                    key: format!("{key}[{i}]"),
                })
            })
            .collect()
    };
    let mut order = Vec::new();
    for (gi, g) in t.order.iter().enumerate() {
        order.push(refs(&g.group, &format!("order[{gi}].group"))?);
    }
    let config = BuilderConfig {
        file: file.to_string(),
        order,
        build_env: t.build_env.clone(),
        system_pre: refs(&t.system.pre.buildpacks, "system.pre.buildpacks")?,
        system_post: refs(&t.system.post.buildpacks, "system.post.buildpacks")?,
    };
    Ok((config, t))
}

/// The builder image of a workspace builder: an action when the run image has a registry
/// reference (run.toml and the labels name it; a workspace label means nothing to pack), else a
/// note saying why there is none.
#[allow(clippy::too_many_arguments)]
fn builder_image(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
    stack: &StackInfo,
    order: &[Vec<(ActionId, bool)>],
    all: &[ActionId],
    description: &str,
    config: Option<&BuilderConfig>,
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
        description: description.to_string(),
        config: config.cloned(),
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
