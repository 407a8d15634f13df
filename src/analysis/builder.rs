//! `builder`: a stack and an ordered list of buildpack groups.

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
    _opts: &Options,
) -> Result<Provided, String> {
    let _l = &n.label;
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
