//! Analysis: turns the loaded targets into a plain-data [`ActionGraph`], one rule at a time. Checks
//! what loading cannot (a `layer` listed where an image is expected, a bad mode), with the target's site.

use std::collections::{BTreeMap, BTreeSet};

use crate::loading::{LoadError, TargetGraph, TargetNode};
use crate::model::action::{ActionGraph, ActionId, ActionKind};
use crate::model::label::Label;

mod builder;
mod buildpack;
mod buildpack_package;
mod cnb_image;
mod common;
mod debian_image;
mod genrule;
mod image_test;
mod integration_test;
mod layer;
mod oci_image;
mod oci_import;
mod oci_pull;
mod stack;

pub use common::{string_map, Options};
use common::{Platform, Provided};

/// A configuration: the platform a target is analysed for (`None`: its default, see
/// [`Options::platform`]).
type Config = Option<Platform>;

/// Rule kinds analysed once per platform they are needed for. Their image dependencies get the same
/// platform; every other kind (files, layers, buildpacks, tests, imports) is analysed once, in
/// the default configuration, and shared by every platform.
const PER_PLATFORM: &[&str] = &["oci_image", "debian_image", "oci_pull", "stack", "builder", "cnb_image"];

fn per_platform(n: &TargetNode) -> bool {
    PER_PLATFORM.contains(&n.kind.as_str())
}

/// A target's own `platforms` attribute, parsed.
fn own_platforms(n: &TargetNode) -> Result<Vec<Platform>, String> {
    if !per_platform(n) {
        return Ok(Vec::new());
    }
    crate::model::platform::parse_list(&common::strings(n.attr("platforms"))).map_err(|e| format!("`platforms`: {e}"))
}

fn list(ps: &[Platform]) -> String {
    ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

/// The configuration `n` is analysed in when a dependent asks for `c`: a target with its own
/// `platforms` answers the default configuration with the host's platform (else its first), and
/// refuses a platform it does not list.
fn normalize(n: &TargetNode, own: &[Platform], c: Config) -> Result<Config, String> {
    match c {
        _ if own.is_empty() => Ok(c),
        None => Ok(Some(own.iter().find(|p| **p == Platform::host()).unwrap_or(&own[0]).clone())),
        Some(p) if own.contains(&p) => Ok(Some(p)),
        Some(p) => Err(format!("`{}` has no image for platform {p} (its platforms: {})", n.label, list(own))),
    }
}

pub fn analyze(g: &TargetGraph, labels: &[Label], opts: &Options) -> Result<ActionGraph, Vec<LoadError>> {
    let mut ag = ActionGraph::default();
    let mut errors = Vec::new();
    let wanted = g.deps(&labels.iter().cloned().collect());
    let opts = &Options { requested: labels.iter().cloned().collect(), ..opts.clone() };
    let order: Vec<Label> = g.topo_order().into_iter().filter(|l| wanted.contains(l)).collect();
    let mut own: BTreeMap<Label, Vec<Platform>> = BTreeMap::new();
    for l in &order {
        let n = &g.nodes[l];
        match own_platforms(n) {
            Ok(v) => {
                own.insert(l.clone(), v);
            }
            Err(m) => {
                errors.push(LoadError::new(format!("`{l}`: {m}")).at(n.site.clone()));
                own.insert(l.clone(), Vec::new());
            }
        }
    }
    // The configurations each target is needed in: the requested ones' own (or `--platform`),
    // then down the graph (dependents before dependencies).
    let mut configs: BTreeMap<Label, BTreeSet<Config>> = BTreeMap::new();
    let mut top: BTreeMap<Label, Vec<Config>> = BTreeMap::new();
    for l in labels.iter().filter(|l| wanted.contains(*l)) {
        let n = &g.nodes[l];
        let mine = &own[l];
        let cs: Vec<Config> = if !per_platform(n) {
            vec![None]
        } else if opts.platforms.is_empty() {
            if mine.is_empty() {
                vec![None]
            } else {
                mine.iter().cloned().map(Some).collect()
            }
        } else if mine.is_empty() {
            opts.platforms.iter().cloned().map(Some).collect()
        } else {
            let v: Vec<Config> = opts.platforms.iter().filter(|p| mine.contains(p)).cloned().map(Some).collect();
            if v.is_empty() {
                errors.push(
                    LoadError::new(format!(
                        "`{l}` is not built for {} (its platforms: {})",
                        list(&opts.platforms),
                        list(mine)
                    ))
                    .at(n.site.clone()),
                );
            }
            v
        };
        configs.entry(l.clone()).or_default().extend(cs.iter().cloned());
        top.insert(l.clone(), cs);
    }
    for l in order.iter().rev() {
        let n = &g.nodes[l];
        let cs: Vec<Config> = configs.get(l).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        for d in g.direct_deps(l) {
            let Some(dn) = g.nodes.get(&d) else { continue };
            for c in &cs {
                let asked = if per_platform(n) && per_platform(dn) { c.clone() } else { None };
                match normalize(dn, &own[&d], asked) {
                    Ok(dc) => {
                        configs.entry(d.clone()).or_default().insert(dc);
                    }
                    Err(m) => {
                        let e = format!("`{l}`: {m}");
                        if !errors.iter().any(|x: &LoadError| x.message == e) {
                            errors.push(LoadError::new(e).at(n.site.clone()));
                        }
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Analysis proper: each target once per configuration, seeing its dependencies' results in
    // the same configuration (shared targets are in every one).
    let all: BTreeSet<Config> = configs.values().flatten().cloned().chain([None]).collect();
    let mut provided: BTreeMap<Config, BTreeMap<Label, Provided>> =
        all.iter().map(|c| (c.clone(), BTreeMap::new())).collect();
    let mut results: BTreeMap<Label, Vec<(Config, Provided)>> = BTreeMap::new();
    for l in &order {
        let n = &g.nodes[l];
        let cs: Vec<Config> = configs.get(l).map(|s| s.iter().cloned().collect()).unwrap_or_else(|| vec![None]);
        for c in cs {
            let o = Options { platform: c.clone(), ..opts.clone() };
            let p = match analyze_target(n, &provided[&c], &mut ag, &o) {
                Ok(p) => p,
                Err(m) => {
                    let m = match &c {
                        Some(p) => format!("`{l}` (for {p}): {m}"),
                        None => format!("`{l}`: {m}"),
                    };
                    errors.push(LoadError::new(m).at(n.site.clone()));
                    Provided::Declared
                }
            };
            if !per_platform(n) {
                for m in provided.values_mut() {
                    m.insert(l.clone(), p.clone());
                }
            } else {
                provided.get_mut(&c).expect("every configuration has a map").insert(l.clone(), p.clone());
                // Dependents in the default configuration see this platform's result.
                if c.is_some() && normalize(n, &own[l], None).ok().flatten() == c {
                    provided.get_mut(&None).expect("the default configuration").insert(l.clone(), p.clone());
                }
            }
            results.entry(l.clone()).or_default().push((c, p));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for l in &order {
        let n = &g.nodes[l];
        let rs = &results[l];
        // The configurations that make the target's own output: what it was requested for, else
        // the one its default-configuration dependents use.
        let want: Vec<Config> = match top.get(l) {
            Some(t) => t.clone(),
            None => vec![normalize(n, &own[l], None).unwrap_or(None)],
        };
        let chosen: Vec<&Provided> =
            want.iter().filter_map(|c| rs.iter().find(|(rc, _)| rc == c).or(rs.first()).map(|(_, p)| p)).collect();
        let Some(first) = chosen.first() else { continue };
        if chosen.len() > 1 {
            let images: Vec<ActionId> = chosen
                .iter()
                .filter_map(|p| match p {
                    Provided::Image(a) | Provided::Pulled(a, _) => Some(*a),
                    _ => None,
                })
                .collect();
            if images.len() == chosen.len() {
                let platforms = want.iter().flatten().map(|p| p.to_string()).collect();
                let idx = ag.add(l, ActionKind::ImageIndex { images: images.clone(), platforms }, images);
                ag.target_outputs.insert(l.clone(), idx);
                ag.image_targets.push(l.clone());
                continue;
            }
        }
        record(&mut ag, l, n, first, labels);
    }
    Ok(ag)
}

/// Records what a target provides in the graph's per-target tables.
fn record(ag: &mut ActionGraph, l: &Label, n: &TargetNode, p: &Provided, labels: &[Label]) {
    match p {
        Provided::Image(a) | Provided::Pulled(a, _) => {
            ag.target_outputs.insert(l.clone(), *a);
            ag.image_targets.push(l.clone());
        }
        Provided::Layer(a) | Provided::Files { action: a, .. } | Provided::Buildpack(a) => {
            ag.target_outputs.insert(l.clone(), *a);
        }
        Provided::Test(a) => {
            ag.target_outputs.insert(l.clone(), *a);
            ag.test_targets.push(l.clone());
        }
        Provided::Builder { output, note, .. } => {
            if let Some(a) = output {
                ag.target_outputs.insert(l.clone(), *a);
                ag.image_targets.push(l.clone());
            }
            if let Some(m) = note.as_ref().filter(|_| labels.contains(l)) {
                if !ag.notes.contains(m) {
                    ag.notes.push(m.clone());
                }
            }
        }
        Provided::Stack(_) => {}
        Provided::Declared => {
            ag.not_buildable.push((l.clone(), n.kind.clone()));
        }
    }
}

/// The one dispatch from a rule kind to its analysis module.
fn analyze_target(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    match n.kind.as_str() {
        "genrule" => genrule::analyze(n, provided, ag, opts),
        "layer" => layer::analyze(n, provided, ag, opts),
        "oci_import" => oci_import::analyze(n, provided, ag, opts),
        "debian_image" => debian_image::analyze(n, provided, ag, opts),
        "oci_pull" => oci_pull::analyze(n, provided, ag, opts),
        "oci_image" => oci_image::analyze(n, provided, ag, opts),
        "buildpack" => buildpack::analyze(n, provided, ag, opts),
        "stack" => stack::analyze(n, provided, ag, opts),
        "builder" => builder::analyze(n, provided, ag, opts),
        "buildpack_package" => buildpack_package::analyze(n, provided, ag, opts),
        "cnb_image" => cnb_image::analyze(n, provided, ag, opts),
        "image_test" => image_test::analyze(n, provided, ag, opts),
        "integration_test" => integration_test::analyze(n, provided, ag, opts),
        // Declared now; their actions arrive with later issues.
        _ => Ok(Provided::Declared),
    }
}

/// Analysis of small workspaces written to a temp dir (loading is real; nothing runs).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::action::ActionKind;
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
        analyze(&loaded.graph, &wanted, &Options { root: d.path().to_path_buf(), ..Options::default() })
    }

    /// A workspace with a tagged (or untagged) run image, a buildpack and a builder.
    const STACK: &str = "layer(name = \"l\", srcs = [\"f\"])\n\
        oci_image(name = \"run\", layers = [\":l\"], tags = [\"registry.example.com/base/run:1\"])\n\
        oci_image(name = \"build\", base = \":run\")\n\
        stack(name = \"s\", id = \"x\", build_image = \":build\", run_image = \":run\")\n\
        buildpack(name = \"bp\", srcs = [\"bp/buildpack.toml\"])\n";
    const BP: (&str, &str) = ("bp/buildpack.toml", "api = \"0.10\"\n[buildpack]\nid = \"t/bp\"\nversion = \"1\"\n");

    #[test]
    fn a_builder_image_is_read_and_its_run_image_resolved_unless_a_stack_overrides() {
        let build = format!(
            "{STACK}oci_import(name = \"bi\", layout = \"bi\")\n\
             builder(name = \"b\", image = \":bi\")\n\
             builder(name = \"b2\", image = \":bi\", stack = \":s\", order = [[\":bp\"]])\n\
             cnb_image(name = \"app\", srcs = [\"f\"], builder = \":b\")\n\
             cnb_image(name = \"app2\", srcs = [\"f\"], builder = \":b2\")\n"
        );
        let files = [("BUILD.star", build.as_str()), ("f", "x"), BP, ("bi/index.json", "{}")];
        let g = analyze_ws(&files, "//...").unwrap();
        let b = kind_of(&g, "//:b");
        assert!(matches!(b[0], ActionKind::ReadBuilder { name, .. } if name == "//:bi"), "{b:?}");
        assert!(matches!(b[1], ActionKind::BuilderRunImage { .. }), "{b:?}");
        for k in kind_of(&g, "//:app") {
            match k {
                ActionKind::CnbDetect(p) => {
                    assert!(p.builder.is_some() && p.identity_from_builder && p.order.is_empty())
                }
                ActionKind::CnbExport(s) => assert!(s.builder.is_some()),
                _ => {}
            }
        }
        assert_eq!(kind_of(&g, "//:b2").len(), 1, "a stack gives the run image: nothing to resolve");
        for k in kind_of(&g, "//:app2") {
            match k {
                ActionKind::CnbDetect(p) => {
                    assert!(p.builder.is_some() && !p.identity_from_builder && p.order.len() == 1);
                    assert_eq!(
                        p.build_image,
                        g.target_outputs[&Label::parse("//:bi", None).unwrap()],
                        "the builder image builds"
                    );
                }
                ActionKind::CnbExport(s) => assert!(s.builder.is_none()),
                _ => {}
            }
        }
    }

    #[test]
    fn a_builder_builds_to_a_builder_image_only_when_asked_and_its_run_image_is_named() {
        let build = format!(
            "{STACK}builder(name = \"b\", stack = \":s\", order = [[\":bp\"]])\n\
             cnb_image(name = \"app\", srcs = [\"f\"], builder = \":b\")\n"
        );
        let files = [("BUILD.star", build.as_str()), ("f", "x"), BP];
        let g = analyze_ws(&files, "//:app").unwrap();
        assert!(kind_of(&g, "//:b").is_empty(), "an app needs no builder image");
        let g = analyze_ws(&files, "//:b").unwrap();
        let s = kind_of(&g, "//:b").into_iter().find_map(|k| match k {
            ActionKind::BuilderImage(s) => Some(s.clone()),
            _ => None,
        });
        let s = s.expect("a builder image");
        assert_eq!(s.run_image, "registry.example.com/base/run:1");
        assert!(g.image_targets.iter().any(|l| l.to_string() == "//:b"));
        assert!(g.notes.iter().any(|n| n.contains("--lifecycle-image")), "{:?}", g.notes);
        let untagged = build.replace(", tags = [\"registry.example.com/base/run:1\"]", "");
        let files = [("BUILD.star", untagged.as_str()), ("f", "x"), BP];
        let g = analyze_ws(&files, "//:b").unwrap();
        assert!(kind_of(&g, "//:b").is_empty());
        assert!(g.notes.iter().any(|n| n.contains("no registry reference")), "{:?}", g.notes);
    }

    #[test]
    fn project_toml_filters_the_app_and_sets_env_groups_and_metadata() {
        let build = format!(
            "{STACK}builder(name = \"b\", stack = \":s\", order = [[\":bp\"]])\n\
             cnb_image(name = \"app\", srcs = glob([\"app/**\"]), builder = \":b\", env = {{\"B\": \"build\"}}, \
             project_toml = \"app/project.toml\", buildpacks = [\":bp\"])\n"
        );
        let project = "[_]\nschema-version = \"0.2\"\nversion = \"3\"\n[io.buildpacks]\nexclude = [\"*.log\"]\n\
            [[io.buildpacks.group]]\nuri = \"//:bp\"\n[[io.buildpacks.build.env]]\nname = \"A\"\nvalue = \"p\"\n\
            [[io.buildpacks.build.env]]\nname = \"B\"\nvalue = \"p\"\n";
        let files = [
            ("BUILD.star", build.as_str()),
            ("f", "x"),
            BP,
            ("app/project.toml", project),
            ("app/a.txt", "a"),
            ("app/x.log", "l"),
        ];
        let g = analyze_ws(&files, "//:app").unwrap();
        for k in kind_of(&g, "//:app") {
            match k {
                ActionKind::CnbDetect(p) => {
                    let app: Vec<&str> = p.app.iter().map(|(r, _)| r.as_str()).collect();
                    assert_eq!(app, ["app/a.txt", "app/project.toml"]);
                    assert_eq!(
                        (p.env["A"].as_str(), p.env["B"].as_str()),
                        ("p", "build"),
                        "BUILD env over project.toml's"
                    );
                    let pg = p.project.as_ref().unwrap();
                    assert_eq!(pg.file, "app/project.toml");
                    assert!(pg.group[0].action.is_some());
                }
                ActionKind::CnbExport(s) => {
                    assert!(s.project_metadata.as_deref().unwrap().contains("\"declared\":\"3\""))
                }
                _ => {}
            }
        }
        let bad = project.replace("\"0.2\"", "\"1.0\"");
        let files = [("BUILD.star", build.as_str()), ("f", "x"), BP, ("app/project.toml", bad.as_str())];
        let e = analyze_ws(&files, "//:app").unwrap_err();
        assert!(e[0].render().contains("`app/project.toml`: `_.schema-version` (line 2"), "{}", e[0].render());
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
    fn an_integration_test_depends_on_every_image_and_refuses_a_shared_port() {
        let base = "layer(name = \"l\", srcs = [\"f\"])\n\
            oci_image(name = \"a\", layers = [\":l\"])\n\
            oci_image(name = \"b\", layers = [\":l\"], user = \"1000\")\n";
        let t = |ready: &str| {
            format!(
                "{base}integration_test(name = \"t\", images = {{\"api\": \":a\", \"site-x\": \":b\"}}, \
                 ready = {ready}, env = {{\"api\": {{\"PORT\": \"81\"}}}}, test = \"curl $API_ADDR\")\n"
            )
        };
        let build = t("{\"api\": 81, \"site-x\": {\"port\": 82, \"http\": \"/health\"}}");
        let g = analyze_ws(&[("BUILD.star", build.as_str()), ("f", "x")], "//:t").unwrap();
        let a = g.actions.iter().find(|a| a.label.to_string() == "//:t").unwrap();
        let (img_a, img_b) = (
            g.target_outputs[&Label::parse("//:a", None).unwrap()],
            g.target_outputs[&Label::parse("//:b", None).unwrap()],
        );
        assert_eq!(a.deps, vec![img_a, img_b]);
        assert_eq!(a.kind.mnemonic(), "integration_test");
        let ActionKind::ImageTest { integration: Some(it), .. } = &a.kind else { panic!("{:?}", a.kind) };
        assert_eq!(it.services[1].env_prefix(), "SITE_X");
        assert_eq!(it.services[1].http_path.as_deref(), Some("/health"));
        assert_eq!(it.services[0].env["PORT"], "81");
        assert_eq!(it.test.argv, ["/bin/sh", "-ec", "curl $API_ADDR"]);
        assert!(g.test_targets.iter().any(|l| l.to_string() == "//:t"));
        let build = t("{\"api\": 81, \"site-x\": 81}");
        let e = analyze_ws(&[("BUILD.star", build.as_str()), ("f", "x")], "//:t").unwrap_err();
        assert!(e[0].render().contains("`api` and `site-x` both use port 81"), "{}", e[0].render());
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
