//! `oci_pull`: a registry image, resolved (and pinned by digest when given).

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::TargetNode;
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `oci_pull` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    _provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let image = str_attr(n, "image")?.to_string();
    crate::model::reference::Reference::parse(&image).map_err(|e| format!("`image`: {e}"))?;
    let digest = opt_string(n.attr("digest"));
    if let Some(d) = &digest {
        crate::model::digest::Digest::parse(d).map_err(|e| format!("`digest`: {e}"))?;
    }
    let a = ag.add(
        l,
        ActionKind::PullImage {
            image: image.clone(),
            digest,
            platform: match &opts.platform {
                Some(p) => Some(p.to_string()),
                None => opt_string(n.attr("platform")),
            },
        },
        vec![],
    );
    Ok(Provided::Pulled(a, image))
}
