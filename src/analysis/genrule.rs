//! `genrule`: a command in a sandbox over declared sources, declared outputs kept.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `genrule` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
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
    let cmd = str_attr(n, "cmd")?.to_string();
    let mut env = string_map(n.attr("env"));
    env.extend(opts.env.clone());
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
