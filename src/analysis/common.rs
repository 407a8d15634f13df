//! What the per-rule analysis modules share: what a target provides to its dependents, the
//! workspace-wide options, and attribute helpers. Kept apart from `analysis/mod.rs` (which
//! dispatches to the rule modules) so rule modules depend on this file only.

use std::collections::BTreeMap;

use crate::loading::{AttrValue, TargetNode};
use crate::model::action::{ActionId, Input};
use crate::model::label::Label;
pub use crate::model::platform::Platform;

/// What a target provides to its dependents after analysis.
#[derive(Clone, Debug)]
pub enum Provided {
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
        /// `builder(image = ...)`: the `read_builder` action, and whether the image gives the run
        /// image, user and stack id (no `stack` override).
        image: Option<(ActionId, bool)>,
        /// The builder image a workspace builder builds to (`None`: none, see `note`).
        output: Option<ActionId>,
        /// Why it builds to no builder image, or what pack will need (said when it is requested).
        note: Option<String>,
        /// A builder.toml's order, build env and system buildpacks (`builder(config = ...)`).
        config: Option<Box<crate::model::action::BuilderConfig>>,
    },
    /// A test (`image_test`): its action's pass is its result.
    Test(ActionId),
    /// A target with no actions of its own (yet).
    Declared,
}

#[derive(Clone, Debug)]
pub struct StackInfo {
    pub id: String,
    pub build_image: ActionId,
    pub run_image: ActionId,
    pub run_image_name: String,
    pub mirrors: Vec<String>,
    pub uid: u32,
    pub gid: u32,
}

/// Workspace-wide choices analysis applies where a target does not say.
#[derive(Clone, Debug)]
pub struct Options {
    /// Layer compression when a `layer` has no `compression` attribute (`gzip` or `zstd`).
    pub compression: String,
    /// `--env`/`--env-file`: platform env of every `cnb_image` and env of every `genrule`,
    /// over the BUILD file's.
    pub env: BTreeMap<String, String>,
    /// `--binding NAME=DIR`: service bindings of every `cnb_image`, over the BUILD file's.
    pub bindings: BTreeMap<String, String>,
    /// The workspace root: analysis reads a `cnb_image`'s project.toml from it (like `glob()`
    /// reads directories, before any action runs).
    pub root: std::path::PathBuf,
    /// The targets asked for (set by [`analyze`](super::analyze)): a builder builds to a builder
    /// image only when it is one of them, not when an app merely uses it.
    pub requested: std::collections::BTreeSet<Label>,
    /// `--platform`: build the requested targets for these platforms only (empty: each target's own
    /// `platforms`, else its default).
    pub platforms: Vec<Platform>,
    /// The platform the target at hand is analysed for (set by [`analyze`](super::analyze)):
    /// `None` is a target's default configuration (its own attributes say), as before platforms.
    pub platform: Option<Platform>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compression: "gzip".into(),
            env: BTreeMap::new(),
            bindings: BTreeMap::new(),
            root: std::path::PathBuf::from("."),
            requested: Default::default(),
            platforms: Vec::new(),
            platform: None,
        }
    }
}

/// An image target's action and a name for it in messages (its registry reference when pulled,
/// else its label).
pub fn image_of(provided: &BTreeMap<Label, Provided>, l: &Label) -> Option<(ActionId, String)> {
    match provided.get(l) {
        Some(Provided::Image(a)) => Some((*a, l.to_string())),
        Some(Provided::Pulled(a, image)) => Some((*a, image.clone())),
        _ => None,
    }
}

/// The buildpack actions reachable from `a` (composite children through `deps`, and theirs).
pub fn buildpack_closure(ag: &crate::model::action::ActionGraph, a: ActionId) -> Vec<ActionId> {
    use crate::model::action::ActionKind;
    let mut out = vec![a];
    let mut todo = vec![a];
    while let Some(x) = todo.pop() {
        for d in &ag.actions[x].deps {
            if matches!(ag.actions[*d].kind, ActionKind::Buildpack { .. } | ActionKind::ReadBuildpackage { .. })
                && !out.contains(d)
            {
                out.push(*d);
                todo.push(*d);
            }
        }
    }
    out
}

/// Analyses every target in `labels` (and their dependencies) into one action graph.
pub fn strings(v: &AttrValue) -> Vec<String> {
    v.as_list().iter().filter_map(|x| x.as_str().map(String::from)).collect()
}

pub fn string_map(v: &AttrValue) -> BTreeMap<String, String> {
    v.as_dict()
        .map(|d| d.iter().filter_map(|(k, x)| x.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

pub fn opt_string(v: &AttrValue) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(String::from)
}

/// Source inputs of a `source_list` attribute (path relative to the package, input) and the
/// actions they come from.
pub type SourceInputs = (Vec<(String, Input)>, Vec<ActionId>);

/// Source inputs of a `source_list` attribute: (path relative to the package, input).
pub fn sources(n: &TargetNode, attr: &str, provided: &BTreeMap<Label, Provided>) -> Result<SourceInputs, String> {
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

/// `registry/repo:tag` of a reference without its `@digest` pin.
pub fn strip_pin(image: &str) -> String {
    image.split('@').next().unwrap_or(image).to_string()
}

/// A string attribute the prelude declares with a default or as mandatory: loading fills defaults
/// in and checks mandatory ones, so the value is always there; defaults live only in the prelude.
pub fn str_attr<'a>(n: &'a TargetNode, name: &str) -> Result<&'a str, String> {
    n.attr(name).as_str().ok_or_else(|| missing(n, name))
}

/// An integer attribute with a prelude default (see [`str_attr`]).
pub fn int_attr(n: &TargetNode, name: &str) -> Result<i64, String> {
    n.attr(name).as_int().ok_or_else(|| missing(n, name))
}

/// A boolean attribute with a prelude default (see [`str_attr`]).
pub fn bool_attr(n: &TargetNode, name: &str) -> Result<bool, String> {
    n.attr(name).as_bool().ok_or_else(|| missing(n, name))
}

fn missing(n: &TargetNode, name: &str) -> String {
    format!("internal: `{}` has no value for `{name}` (the prelude declares its default)", n.kind)
}
