//! `cnb_image`: an app built by a builder: detect, build and export actions.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `cnb_image` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let (app, mut deps) = sources(n, "srcs", provided)?;
    let (stack, order, buildpacks) = match n.attr("builder") {
        AttrValue::Label(b) => match provided.get(b) {
            Some(Provided::Builder { stack, order, buildpacks }) => (stack.clone(), order.clone(), buildpacks.clone()),
            _ => return Err(format!("`builder` is `{b}`, which is not a `builder` target")),
        },
        _ => return Err("`builder` is required".into()),
    };
    deps.extend(buildpacks.iter().copied());
    deps.push(stack.build_image);
    deps.push(stack.run_image);
    let phase = crate::model::action::CnbPhase {
        app,
        order,
        buildpacks,
        build_image: stack.build_image,
        run_image: Some(stack.run_image),
        stack_id: stack.id.clone(),
        uid: stack.uid,
        gid: stack.gid,
        env: {
            let mut env = string_map(n.attr("env"));
            env.extend(opts.env.clone());
            env
        },
        network: bool_attr(n, "network")?,
        bindings: {
            let mut b = BTreeMap::new();
            for (name, dir) in string_map(n.attr("bindings")) {
                b.insert(name.clone(), binding_dir(&name, &dir)?);
            }
            b.extend(opts.bindings.clone());
            b
        },
    };
    let detect = ag.add(l, ActionKind::CnbDetect(phase.clone()), deps.clone());
    let mut bdeps = deps;
    bdeps.push(detect);
    let build = ag.add(l, ActionKind::CnbBuild { phase, detect }, bdeps);
    let spec = crate::model::action::CnbExportSpec {
        build,
        run_image: stack.run_image,
        run_image_name: stack.run_image_name.clone(),
        run_image_mirrors: stack.mirrors.clone(),
        stack_id: stack.id.clone(),
        uid: stack.uid,
        gid: stack.gid,
        process: opt_string(n.attr("process")),
        labels: string_map(n.attr("labels")),
    };
    ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
    let export = ag.add(l, ActionKind::CnbExport(spec), vec![build, stack.run_image]);
    Ok(Provided::Image(export))
}

/// A binding's directory as written in BUILD: absolute, `~/...` (the user's home) or `$VAR` (an
/// environment variable naming it, e.g. a CI secret mount). Checked when the build starts.
fn binding_dir(name: &str, v: &str) -> Result<String, String> {
    let resolved = if let Some(var) = v.strip_prefix('$') {
        crate::env::var(var).ok_or_else(|| {
            format!("`bindings[\"{name}\"]` is `{v}`, but the environment variable `{var}` is not set")
        })?
    } else if let Some(rest) = v.strip_prefix("~/") {
        let home =
            crate::env::var("HOME").ok_or_else(|| format!("`bindings[\"{name}\"]` uses `~`, but HOME is not set"))?;
        format!("{home}/{rest}")
    } else {
        v.to_string()
    };
    if !resolved.starts_with('/') {
        return Err(format!(
            "`bindings[\"{name}\"]` is `{v}`: a binding must be an absolute path outside the workspace (or `~/...`, `$VAR`)"
        ));
    }
    Ok(resolved)
}
