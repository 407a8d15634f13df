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
    let (stack, order, mut buildpacks, image, config) = match n.attr("builder") {
        AttrValue::Label(b) => match provided.get(b) {
            Some(Provided::Builder { stack, order, buildpacks, image, config, .. }) => {
                (stack.clone(), order.clone(), buildpacks.clone(), *image, config.as_deref().cloned())
            }
            _ => return Err(format!("`builder` is `{b}`, which is not a `builder` target")),
        },
        _ => return Err("`builder` is required".into()),
    };
    // project.toml: which app files the build sees, build env, groups, metadata.
    let project = project_descriptor(n, &app, opts)?;
    let app = match &project {
        Some((_, d)) => d.filter(app, |(rel, _)| rel.as_str()),
        None => app,
    };
    let mut extra = Vec::new();
    for b in n.attr("buildpacks").as_list() {
        if let AttrValue::Label(bl) = b {
            match provided.get(bl) {
                Some(Provided::Buildpack(a)) => extra.extend(buildpack_closure(ag, *a)),
                _ => return Err(format!("`buildpacks` lists `{bl}`, which is not a `buildpack` target")),
            }
        }
    }
    let groups = match &project {
        Some((file, d)) => Some(project_groups(file, d, n, provided, &mut extra)?),
        None => None,
    };
    buildpacks.extend(extra);
    buildpacks.sort_unstable();
    buildpacks.dedup();
    deps.extend(buildpacks.iter().copied());
    deps.push(stack.build_image);
    deps.push(stack.run_image);
    deps.extend(image.map(|(read, _)| read));
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
            // project.toml < BUILD `env` < `--env` (README › project.toml).
            let mut env = project.as_ref().map(|(_, d)| d.env.clone()).unwrap_or_default();
            env.extend(string_map(n.attr("env")));
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
        builder: image.map(|(read, _)| read),
        identity_from_builder: image.is_some_and(|(_, from)| from),
        project: groups,
        config,
    };
    let detect = ag.add(l, ActionKind::CnbDetect(phase.clone()), deps.clone());
    let mut bdeps = deps;
    bdeps.push(detect);
    let build = ag.add(l, ActionKind::CnbBuild { phase, detect }, bdeps);
    let from_image = image.filter(|(_, from)| *from).map(|(read, _)| read);
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
        builder: from_image,
        project_metadata: project.as_ref().and_then(|(_, d)| d.metadata_label.clone()),
    };
    for w in project.iter().flat_map(|(_, d)| &d.warnings) {
        ag.notes.push(format!("`{l}`: {w}"));
    }
    ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
    let mut edeps = vec![build, stack.run_image];
    edeps.extend(from_image);
    let export = ag.add(l, ActionKind::CnbExport(spec), edeps);
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

/// Largest project.toml read.
const MAX_PROJECT_TOML: u64 = 4 << 20;

/// The project descriptor of the app, if any: the `project_toml` file (default `project.toml`)
/// among the app's sources, or, when the attribute names another file of the package, that file.
/// Read here, before anything runs, so its errors are located load errors and nothing is built.
fn project_descriptor(
    n: &TargetNode,
    app: &[(String, Input)],
    opts: &Options,
) -> Result<Option<(String, crate::cnb::project::ProjectDescriptor)>, String> {
    let want = str_attr(n, "project_toml")?;
    if want.is_empty() {
        return Ok(None);
    }
    let rel = want.trim_start_matches("./");
    let file = match app.iter().find(|(r, _)| r == rel) {
        Some((_, Input::Source(ws))) => ws.clone(),
        // A genrule's output: not read at analysis time.
        Some((_, Input::Output { .. })) => return Ok(None),
        // The default is read only as part of the app (as pack reads the app dir's); a file
        // named explicitly is read from the package even when `srcs` leaves it out.
        None if want == "project.toml" => return Ok(None),
        None => n.label.package.join(rel),
    };
    crate::fs::reads::note(&opts.root.join(&file), false);
    let path =
        crate::execution::sources::resolve_source(&opts.root, &file).map_err(|e| format!("`project_toml`: {e}"))?;
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if len > MAX_PROJECT_TOML {
        return Err(format!("`project_toml`: `{file}` is {len} bytes; at most {MAX_PROJECT_TOML} are read"));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("`project_toml`: reading `{file}`: {e}"))?;
    let d = crate::cnb::project::ProjectDescriptor::parse(&text, &file).map_err(|e| e.to_string())?;
    Ok(Some((file, d)))
}

/// The groups of a project.toml as plain data: ids are resolved when the phase runs (against the
/// builder's buildpacks), labels now (they must be `buildpack` targets in `buildpacks` or the
/// builder); a label's buildpack joins the phase's buildpacks.
fn project_groups(
    file: &str,
    d: &crate::cnb::project::ProjectDescriptor,
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    extra: &mut Vec<ActionId>,
) -> Result<ProjectGroups, String> {
    let mut one = |e: &crate::cnb::project::GroupEntry| -> Result<ProjectRef, String> {
        let key = format!("{} (line {}, column {})", e.key, e.at.0, e.at.1);
        let action = match &e.label {
            None => None,
            Some(text) => {
                let bl = Label::parse(text, Some(&n.label.package))
                    .map_err(|err| format!("`{file}`: `{key}`: `{text}`: {err}"))?;
                match provided.get(&bl) {
                    Some(Provided::Buildpack(a)) => {
                        extra.push(*a);
                        Some(*a)
                    }
                    _ => {
                        return Err(format!(
                            "`{file}`: `{key}`: `{bl}` is not a buildpack this target knows: list it in the cnb_image's `buildpacks`"
                        ))
                    }
                }
            }
        };
        Ok(ProjectRef { id: e.id.clone(), version: e.version.clone(), action, optional: e.optional, key })
    };
    let mut list = |v: &[crate::cnb::project::GroupEntry]| v.iter().map(&mut one).collect::<Result<Vec<_>, _>>();
    Ok(ProjectGroups { file: file.to_string(), group: list(&d.group)?, pre: list(&d.pre)?, post: list(&d.post)? })
}
