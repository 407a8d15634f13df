//! `debian_image`: a root filesystem from the Debian packages a lock file pins.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::TargetNode;
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `debian_image` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    _provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let lock = str_attr(n, "lock")?;
    let rel = crate::fs::normalize_relative(std::path::Path::new(lock))
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| format!("`lock` `{lock}` must be a path inside the package"))?;
    let lock = l.package.join(rel.to_str().unwrap_or(lock));
    let id = |k: &str| n.attr(k).as_int().filter(|v| *v > 0 && *v <= u32::MAX as i64).map(|v| v as u32);
    let spec = crate::model::action::DebianSpec {
        lock,
        packages: strings(n.attr("packages")),
        suite: str_attr(n, "suite")?.to_string(),
        architecture: match &opts.platform {
            Some(p) if p.variant.is_some() => {
                return Err(format!(
                    "platform {p}: Debian architectures have no variants (use linux/arm64, linux/amd64, ...)"
                ))
            }
            Some(p) => p.debian_arch().to_string(),
            None => str_attr(n, "architecture")?.to_string(),
        },
        uid: id("user_id").ok_or("`user_id` must be a positive number")?,
        gid: id("group_id").ok_or("`group_id` must be a positive number")?,
        user_name: str_attr(n, "user_name")?.to_string(),
        stack_id: n.attr("stack_id").as_str().unwrap_or_default().to_string(),
        env: string_map(n.attr("env")),
        labels: string_map(n.attr("labels")),
    };
    ag.image_tags.insert(l.clone(), strings(n.attr("tags")));
    let a = ag.add(l, ActionKind::DebianImage(spec), vec![]);
    Ok(Provided::Image(a))
}
