//! Analysis: turns the loaded targets into a plain-data [`ActionGraph`], one rule at a time. Checks
//! what loading cannot (a `layer` listed where an image is expected, a bad mode), with the target's site.

use std::collections::BTreeMap;

use crate::loading::{AttrValue, LoadError, TargetGraph, TargetNode};
use crate::model::action::{ActionGraph, ActionId, ActionKind, ImageConfigSpec, Input, LayerFile};
use crate::model::label::Label;

/// What a target provides to its dependents after analysis.
#[derive(Clone, Debug)]
enum Provided {
    Files {
        action: ActionId,
        outs: Vec<String>,
    },
    Layer(ActionId),
    Image(ActionId),
    /// An image pulled from a registry: its action and the reference it came from.
    Pulled(ActionId, String),
    /// A buildpack tree in the CAS.
    Buildpack(ActionId),
    Stack(StackInfo),
    Builder {
        stack: StackInfo,
        order: Vec<Vec<(ActionId, bool)>>,
        buildpacks: Vec<ActionId>,
    },
    /// A target with no actions of its own (yet).
    Declared,
}

#[derive(Clone, Debug)]
struct StackInfo {
    id: String,
    build_image: ActionId,
    run_image: ActionId,
    run_image_name: String,
    mirrors: Vec<String>,
    uid: u32,
    gid: u32,
}

/// Workspace-wide choices analysis applies where a target does not say.
#[derive(Clone, Debug)]
pub struct Options {
    /// Layer compression when a `layer` has no `compression` attribute (`gzip` or `zstd`).
    pub compression: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { compression: "gzip".into() }
    }
}

/// Analyses every target in `labels` (and their dependencies) into one action graph.
pub fn analyze(g: &TargetGraph, labels: &[Label], opts: &Options) -> Result<ActionGraph, Vec<LoadError>> {
    let mut ag = ActionGraph::default();
    let mut provided: BTreeMap<Label, Provided> = BTreeMap::new();
    let mut errors = Vec::new();
    let wanted = g.deps(&labels.iter().cloned().collect());
    for l in g.topo_order() {
        if !wanted.contains(&l) {
            continue;
        }
        let n = &g.nodes[&l];
        match analyze_target(n, &provided, &mut ag, opts) {
            Ok(p) => {
                match &p {
                    Provided::Image(a) | Provided::Pulled(a, _) => {
                        ag.target_outputs.insert(l.clone(), *a);
                        ag.image_targets.push(l.clone());
                    }
                    Provided::Layer(a) | Provided::Files { action: a, .. } | Provided::Buildpack(a) => {
                        ag.target_outputs.insert(l.clone(), *a);
                    }
                    Provided::Stack(_) | Provided::Builder { .. } => {}
                    Provided::Declared => {
                        ag.not_buildable.push((l.clone(), n.kind.clone()));
                    }
                }
                provided.insert(l, p);
            }
            Err(m) => {
                errors.push(LoadError::new(format!("`{l}`: {m}")).at(n.site.clone()));
                provided.insert(l, Provided::Declared);
            }
        }
    }
    if errors.is_empty() {
        Ok(ag)
    } else {
        Err(errors)
    }
}

fn strings(v: &AttrValue) -> Vec<String> {
    v.as_list().iter().filter_map(|x| x.as_str().map(String::from)).collect()
}

fn string_map(v: &AttrValue) -> BTreeMap<String, String> {
    v.as_dict()
        .map(|d| d.iter().filter_map(|(k, x)| x.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

fn opt_string(v: &AttrValue) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(String::from)
}

/// Source inputs of a `source_list` attribute (path relative to the package, input) and the
/// actions they come from.
type SourceInputs = (Vec<(String, Input)>, Vec<ActionId>);

/// Source inputs of a `source_list` attribute: (path relative to the package, input).
fn sources(n: &TargetNode, attr: &str, provided: &BTreeMap<Label, Provided>) -> Result<SourceInputs, String> {
    let pkg_prefix = if n.label.package.is_root() { String::new() } else { format!("{}/", n.label.package) };
    let mut out = Vec::new();
    let mut deps = Vec::new();
    for v in n.attr(attr).as_list() {
        match v {
            AttrValue::File(f) => {
                let rel = f.file.strip_prefix(&pkg_prefix).unwrap_or(&f.file).to_string();
                out.push((rel, Input::Source(f.file.clone())));
            }
            AttrValue::Label(l) => match provided.get(l) {
                Some(Provided::Files { action, outs }) => {
                    deps.push(*action);
                    for o in outs {
                        out.push((o.clone(), Input::Output { action: *action, path: o.clone() }));
                    }
                }
                _ => {
                    return Err(format!(
                        "`{attr}` lists `{l}`, which produces no files (only genrule outputs can be sources)"
                    ))
                }
            },
            _ => {}
        }
    }
    Ok((out, deps))
}

fn analyze_target(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    match n.kind.as_str() {
        "genrule" => {
            let (srcs, deps) = sources(n, "srcs", provided)?;
            let outs = strings(n.attr("outs"));
            if outs.is_empty() {
                return Err("`outs` is empty; a genrule must declare the files it creates".into());
            }
            for o in &outs {
                if crate::fs::normalize_relative(std::path::Path::new(o)).is_none_or(|p| p.as_os_str().is_empty()) {
                    return Err(format!("output `{o}` must be a relative path inside the scratch dir"));
                }
            }
            let cmd = n.attr("cmd").as_str().unwrap_or_default().to_string();
            let env = string_map(n.attr("env"));
            let mut deps = deps;
            let image = match n.attr("image") {
                AttrValue::Label(b) => match provided.get(b) {
                    Some(Provided::Image(a) | Provided::Pulled(a, _)) => {
                        deps.push(*a);
                        Some(*a)
                    }
                    _ => return Err(format!("`image` is `{b}`, which is not an image")),
                },
                _ => None,
            };
            let a = ag.add(l, ActionKind::Genrule { srcs, outs: outs.clone(), cmd, env, image }, deps);
            Ok(Provided::Files { action: a, outs })
        }
        "layer" => {
            let (srcs, deps) = sources(n, "srcs", provided)?;
            let prefix = n.attr("prefix").as_str().unwrap_or("/").trim_matches('/').to_string();
            let strip = n.attr("strip_prefix").as_str().unwrap_or("").trim_matches('/').to_string();
            let mut files = Vec::new();
            for (rel, input) in srcs {
                let rest = if strip.is_empty() {
                    rel.clone()
                } else {
                    match rel.strip_prefix(&format!("{strip}/")) {
                        Some(r) => r.to_string(),
                        None => return Err(format!("source `{rel}` does not start with strip_prefix `{strip}`")),
                    }
                };
                let dest = if prefix.is_empty() { rest } else { format!("{prefix}/{rest}") };
                files.push(LayerFile { input, dest });
            }
            let mode = match n.attr("mode").as_str().filter(|s| !s.is_empty()) {
                None => None,
                Some(m) => Some(
                    u32::from_str_radix(m.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|v| *v <= 0o7777)
                        .ok_or_else(|| format!("mode `{m}` is not an octal file mode such as \"0755\""))?,
                ),
            };
            let owner = n.attr("owner").as_str().unwrap_or("0:0");
            let (uid, gid) = owner
                .split_once(':')
                .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
                .ok_or_else(|| format!("owner `{owner}` must be numeric `uid:gid`, e.g. \"1000:1000\""))?;
            let symlinks = string_map(n.attr("symlinks"))
                .into_iter()
                .map(|(k, v)| (k.trim_start_matches('/').to_string(), v))
                .collect();
            let mut dirs = BTreeMap::new();
            for (path, spec) in string_map(n.attr("dirs")) {
                let parts: Vec<&str> = spec.split(':').collect();
                let parsed = match parts.as_slice() {
                    [m] => u32::from_str_radix(m, 8).ok().map(|m| (m, uid, gid)),
                    [m, u, g] => (|| Some((u32::from_str_radix(m, 8).ok()?, u.parse().ok()?, g.parse().ok()?)))(),
                    _ => None,
                };
                let p = path.trim_matches('/').to_string();
                match parsed {
                    Some(v) if !p.is_empty() && v.0 <= 0o7777 => {
                        dirs.insert(p, v);
                    }
                    _ => return Err(format!("`dirs` entry `{path}`: `{spec}` must be \"MODE\" or \"MODE:UID:GID\" (octal mode), for a path other than `/`")),
                }
            }
            let compression =
                n.attr("compression").as_str().filter(|c| !c.is_empty()).unwrap_or(&opts.compression).to_string();
            let a = ag.add(l, ActionKind::Layer { files, mode, uid, gid, symlinks, dirs, compression }, deps);
            Ok(Provided::Layer(a))
        }
        "oci_import" => {
            let path = match n.attr("layout") {
                AttrValue::File(f) => f.file.clone(),
                _ => return Err("`layout` is required".into()),
            };
            let a =
                ag.add(l, ActionKind::ImportImage { path, tag: opt_string(n.attr("tag")), files: Vec::new() }, vec![]);
            Ok(Provided::Image(a))
        }
        "debian_image" => {
            let lock = n.attr("lock").as_str().unwrap_or_default();
            let rel = crate::fs::normalize_relative(std::path::Path::new(lock))
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| format!("`lock` `{lock}` must be a path inside the package"))?;
            let lock = l.package.join(rel.to_str().unwrap_or(lock));
            let id = |k: &str| n.attr(k).as_int().filter(|v| *v > 0 && *v <= u32::MAX as i64).map(|v| v as u32);
            let spec = crate::model::action::DebianSpec {
                lock,
                packages: strings(n.attr("packages")),
                suite: n.attr("suite").as_str().unwrap_or("bookworm").to_string(),
                architecture: n.attr("architecture").as_str().unwrap_or("amd64").to_string(),
                uid: id("user_id").ok_or("`user_id` must be a positive number")?,
                gid: id("group_id").ok_or("`group_id` must be a positive number")?,
                user_name: n.attr("user_name").as_str().unwrap_or("cnb").to_string(),
                stack_id: n.attr("stack_id").as_str().unwrap_or_default().to_string(),
                env: string_map(n.attr("env")),
                labels: string_map(n.attr("labels")),
            };
            ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
            let a = ag.add(l, ActionKind::DebianImage(spec), vec![]);
            Ok(Provided::Image(a))
        }
        "oci_pull" => {
            let image = n.attr("image").as_str().unwrap_or_default().to_string();
            crate::model::reference::Reference::parse(&image).map_err(|e| format!("`image`: {e}"))?;
            let digest = opt_string(n.attr("digest"));
            if let Some(d) = &digest {
                crate::model::digest::Digest::parse(d).map_err(|e| format!("`digest`: {e}"))?;
            }
            let a = ag.add(
                l,
                ActionKind::PullImage { image: image.clone(), digest, platform: opt_string(n.attr("platform")) },
                vec![],
            );
            Ok(Provided::Pulled(a, image))
        }
        "oci_image" => {
            let mut deps = Vec::new();
            let base = match n.attr("base") {
                AttrValue::Label(b) => match provided.get(b) {
                    Some(Provided::Image(a) | Provided::Pulled(a, _)) => {
                        deps.push(*a);
                        Some(*a)
                    }
                    _ => return Err(format!("`base` is `{b}`, which is not an image")),
                },
                _ => None,
            };
            let mut layers = Vec::new();
            let mut layer_labels = Vec::new();
            for v in n.attr("layers").as_list() {
                if let AttrValue::Label(ll) = v {
                    match provided.get(ll) {
                        Some(Provided::Layer(a)) => {
                            deps.push(*a);
                            layers.push(*a);
                            layer_labels.push(ll.to_string());
                        }
                        _ => return Err(format!("`layers` lists `{ll}`, which is not a `layer` target")),
                    }
                }
            }
            let list = |k: &str| -> Option<Vec<String>> {
                match n.attr(k) {
                    AttrValue::None => None,
                    v => Some(strings(v)),
                }
            };
            let config = ImageConfigSpec {
                entrypoint: list("entrypoint").filter(|v| !v.is_empty()),
                cmd: list("cmd").filter(|v| !v.is_empty()),
                env: string_map(n.attr("env")),
                user: opt_string(n.attr("user")),
                workdir: opt_string(n.attr("workdir")),
                labels: string_map(n.attr("labels")),
                exposed_ports: strings(n.attr("exposed_ports")),
                created: opt_string(n.attr("created")),
                os: n.attr("os").as_str().unwrap_or("linux").to_string(),
                architecture: n.attr("architecture").as_str().unwrap_or("amd64").to_string(),
            };
            ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
            let a = ag.add(l, ActionKind::Image { base, layers, layer_labels, config }, deps);
            Ok(Provided::Image(a))
        }
        "buildpack" => {
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
        "stack" => {
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
            let uid = n.attr("user_id").as_int().unwrap_or(1000);
            let gid = n.attr("group_id").as_int().unwrap_or(1000);
            if uid <= 0 || gid <= 0 || uid > u32::MAX as i64 || gid > u32::MAX as i64 {
                return Err("`user_id` and `group_id` must be positive: buildpacks never run as root".into());
            }
            Ok(Provided::Stack(StackInfo {
                id: n.attr("id").as_str().unwrap_or_default().to_string(),
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
        "builder" => {
            let stack = match n.attr("stack") {
                AttrValue::Label(s) => match provided.get(s) {
                    Some(Provided::Stack(st)) => st.clone(),
                    _ => return Err(format!("`stack` is `{s}`, which is not a `stack` target")),
                },
                _ => return Err("`stack` is required".into()),
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
                            all.push(*a);
                            // Composite children (and theirs) are reachable through the buildpack's deps.
                            let mut stack_ = vec![*a];
                            while let Some(x) = stack_.pop() {
                                for d in &ag.actions[x].deps {
                                    if matches!(ag.actions[*d].kind, ActionKind::Buildpack { .. }) {
                                        all.push(*d);
                                        stack_.push(*d);
                                    }
                                }
                            }
                        }
                        _ => return Err(format!("order lists `{bl}`, which is not a `buildpack` target")),
                    }
                }
                order.push(group);
            }
            all.sort_unstable();
            all.dedup();
            Ok(Provided::Builder { stack, order, buildpacks: all })
        }
        "cnb_image" => {
            let (app, mut deps) = sources(n, "srcs", provided)?;
            let (stack, order, buildpacks) = match n.attr("builder") {
                AttrValue::Label(b) => match provided.get(b) {
                    Some(Provided::Builder { stack, order, buildpacks }) => {
                        (stack.clone(), order.clone(), buildpacks.clone())
                    }
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
                env: string_map(n.attr("env")),
                network: n.attr("network").as_bool().unwrap_or(false),
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
        // Declared now; their actions arrive with the registry and Debian-stack issues.
        _ => Ok(Provided::Declared),
    }
}

/// `registry/repo:tag` of a reference without its `@digest` pin.
fn strip_pin(image: &str) -> String {
    image.split('@').next().unwrap_or(image).to_string()
}

/// Analysis of small workspaces written to a temp dir (loading is real; nothing runs).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::label::Pattern;

    fn analyze_ws(files: &[(&str, &str)], target: &str) -> Result<ActionGraph, Vec<LoadError>> {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cbuild.toml"), "").unwrap();
        for (p, t) in files {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, t).unwrap();
        }
        let pats = vec![Pattern::parse(target, None).unwrap()];
        let loaded = crate::loading::load(d.path(), &pats, 1000)?;
        let wanted: Vec<Label> = loaded.requested.iter().cloned().collect();
        analyze(&loaded.graph, &wanted, &Options::default())
    }

    fn kind_of<'a>(g: &'a ActionGraph, label: &str) -> Vec<&'a ActionKind> {
        g.actions.iter().filter(|a| a.label.to_string() == label).map(|a| &a.kind).collect()
    }

    #[test]
    fn a_genrule_image_is_a_dependency_and_a_non_image_is_refused() {
        let base = "layer(name = \"l\", srcs = [\"f\"])\noci_image(name = \"img\", layers = [\":l\"])\n";
        let g = analyze_ws(
            &[
                (
                    "BUILD.star",
                    &format!("{base}genrule(name = \"g\", outs = [\"o\"], cmd = \"true\", image = \":img\")\n"),
                ),
                ("f", "x"),
            ],
            "//:g",
        )
        .unwrap();
        let gen = g.actions.iter().find(|a| a.label.to_string() == "//:g").unwrap();
        let img = g.target_outputs[&Label::parse("//:img", None).unwrap()];
        assert!(matches!(gen.kind, ActionKind::Genrule { image: Some(i), .. } if i == img));
        assert!(gen.deps.contains(&img), "the image is a dependency of the genrule");
        let e = analyze_ws(
            &[
                (
                    "BUILD.star",
                    &format!("{base}genrule(name = \"g\", outs = [\"o\"], cmd = \"true\", image = \":l\")\n"),
                ),
                ("f", "x"),
            ],
            "//:g",
        )
        .unwrap_err();
        assert!(e[0].render().contains("not an image"), "{}", e[0].render());
    }

    #[test]
    fn a_tagged_graph_run_image_is_recorded_by_its_tag() {
        let stack = "layer(name = \"l\", srcs = [\"f\"])\n\
            oci_image(name = \"run\", layers = [\":l\"], tags = [\"registry.example.com/base/run:1\", \"mirror.example.com/run:1\"])\n\
            oci_image(name = \"build\", base = \":run\")\n\
            stack(name = \"s\", id = \"x\", build_image = \":build\", run_image = \":run\")\n\
            buildpack(name = \"bp\", srcs = [\"bp/buildpack.toml\"])\n\
            builder(name = \"b\", stack = \":s\", order = [[\":bp\"]])\n\
            cnb_image(name = \"app\", srcs = [\"f\"], builder = \":b\")\n";
        let g = analyze_ws(
            &[
                ("BUILD.star", stack),
                ("f", "x"),
                ("bp/buildpack.toml", "api = \"0.10\"\n[buildpack]\nid = \"t/bp\"\nversion = \"1\"\n"),
            ],
            "//:app",
        )
        .unwrap();
        let export = kind_of(&g, "//:app").into_iter().find_map(|k| match k {
            ActionKind::CnbExport(s) => Some(s.clone()),
            _ => None,
        });
        let s = export.expect("an export action");
        assert_eq!(s.run_image_name, "registry.example.com/base/run:1");
        assert_eq!(s.run_image_mirrors, vec!["mirror.example.com/run:1".to_string()]);
        // Detect and build know the run image (its target is what buildpacks match).
        let run = g.target_outputs[&Label::parse("//:run", None).unwrap()];
        for k in kind_of(&g, "//:app") {
            if let ActionKind::CnbDetect(p) | ActionKind::CnbBuild { phase: p, .. } = k {
                assert_eq!(p.run_image, Some(run));
            }
        }
    }
}
