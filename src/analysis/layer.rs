//! `layer`: files (sources or genrule outputs) into one reproducible tar layer.

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::TargetNode;
use crate::model::action::*;
use crate::model::label::Label;

/// Analyses one `layer` target: its actions, and what it provides to its dependents.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let l = &n.label;
    let (srcs, deps) = sources(n, "srcs", provided)?;
    let prefix = str_attr(n, "prefix")?.trim_matches('/').to_string();
    let strip = str_attr(n, "strip_prefix")?.trim_matches('/').to_string();
    let mut files = Vec::with_capacity(srcs.len());
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
    let owner = str_attr(n, "owner")?;
    let (uid, gid) = owner
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| format!("owner `{owner}` must be numeric `uid:gid`, e.g. \"1000:1000\""))?;
    let symlinks =
        string_map(n.attr("symlinks")).into_iter().map(|(k, v)| (k.trim_start_matches('/').to_string(), v)).collect();
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
    let compression = n.attr("compression").as_str().filter(|c| !c.is_empty()).unwrap_or(&opts.compression).to_string();
    let a = ag.add(l, ActionKind::Layer { files, mode, uid, gid, symlinks, dirs, compression }, deps);
    Ok(Provided::Layer(a))
}
