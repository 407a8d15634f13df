//! Analysis: turns the loaded targets into a plain-data [`ActionGraph`], one rule at a time. Checks
//! what loading cannot (a `layer` listed where an image is expected, a bad mode), with the target's site.

use std::collections::BTreeMap;

use crate::loading::{LoadError, TargetGraph, TargetNode};
use crate::model::action::ActionGraph;
use crate::model::label::Label;

mod builder;
mod buildpack;
mod buildpack_package;
mod cnb_image;
mod common;
mod debian_image;
mod genrule;
mod image_test;
mod layer;
mod oci_image;
mod oci_import;
mod oci_pull;
mod stack;

use common::Provided;
pub use common::{string_map, Options};

pub fn analyze(g: &TargetGraph, labels: &[Label], opts: &Options) -> Result<ActionGraph, Vec<LoadError>> {
    let mut ag = ActionGraph::default();
    let mut provided: BTreeMap<Label, Provided> = BTreeMap::new();
    let mut errors = Vec::new();
    let wanted = g.deps(&labels.iter().cloned().collect());
    let opts = &Options { requested: labels.iter().cloned().collect(), ..opts.clone() };
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
                    Provided::Test(a) => {
                        ag.target_outputs.insert(l.clone(), *a);
                        ag.test_targets.push(l.clone());
                    }
                    Provided::Builder { output, note, .. } => {
                        if let Some(a) = output {
                            ag.target_outputs.insert(l.clone(), *a);
                            ag.image_targets.push(l.clone());
                        }
                        if let Some(m) = note.as_ref().filter(|_| labels.contains(&l)) {
                            ag.notes.push(m.clone());
                        }
                    }
                    Provided::Stack(_) => {}
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
