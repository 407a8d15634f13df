//! `oci_image`: a base plus layers and config.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `oci_image` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
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
        // Built for a platform: that platform (on scratch; a base brings its own). By default the
        // `os`/`architecture` attributes.
        os: match &opts.platform {
            Some(p) => p.os.clone(),
            None => str_attr(n, "os")?.to_string(),
        },
        architecture: match &opts.platform {
            Some(p) => p.architecture.clone(),
            None => str_attr(n, "architecture")?.to_string(),
        },
        variant: opts.platform.as_ref().and_then(|p| p.variant.clone()),
    };
    ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
    let a = ag.add(l, ActionKind::Image { base, layers, layer_labels, config }, deps);
    Ok(Provided::Image(a))
}
