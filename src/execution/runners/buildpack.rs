//! The `buildpack` runner: copies a buildpack's tree into the CAS (never hard-linked: sources are
//! files a user edits) and checks its buildpack.toml, so a malformed one fails here, named.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::ctx::{input_digest, RunCtx};
use crate::cache::{ComponentValue, KeyBuilder};
use crate::cnb::buildpack_toml::BuildpackDescriptor;
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, Input, OutFile};

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::Buildpack { files, .. } = &a.kind else { unreachable!() };
    let mut m = BTreeMap::new();
    for (rel, i) in files {
        let mut d = input_digest(i, deps, ctx)?;
        if let Input::Source(p) = i {
            if is_executable(&ctx.root.join(p)) {
                d.push_str("+x");
            }
        }
        m.insert(rel.clone(), d);
    }
    Ok(kb.component("files", ComponentValue::map(m)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Copies `src` into the CAS, hashing on the way; returns the digest.
pub fn copy_into_cas(ctx: &RunCtx, src: &Path) -> Result<crate::model::digest::Digest, ActionError> {
    let f = std::fs::File::open(src).map_err(|e| format!("reading `{}`: {e}", src.display()))?;
    let (d, _) = ctx
        .cache
        .cas()
        .put_stream::<crate::cas::CasError>(|w| {
            std::io::copy(&mut std::io::BufReader::new(f), w)
                .map(|_| ())
                .map_err(|source| crate::cas::CasError::Io { path: src.to_path_buf(), source })
        })
        .map_err(|e| ActionError::of(&e))?;
    Ok(d)
}

pub fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<ActionOutput, ActionError> {
    let ActionKind::Buildpack { root, files } = &a.kind else { unreachable!() };
    let mut out = BTreeMap::new();
    for (rel, i) in files {
        let f = match i {
            // Resolved like every source read (see `scheduler::hash_sources`).
            Input::Source(p) => {
                let src = crate::execution::sources::resolve_source(&ctx.root, p)?;
                OutFile { digest: copy_into_cas(ctx, &src)?, executable: is_executable(&src) }
            }
            Input::Output { action, path } => match deps.get(action).map(|o| o.as_ref()) {
                Some(ActionOutput::Files { files }) => files[path].clone(),
                _ => return Err(ActionError::internal(format!("`{path}` is not an output"))),
            },
        };
        out.insert(rel.clone(), f);
    }
    let toml = out.get("buildpack.toml").ok_or("no buildpack.toml")?;
    let text = String::from_utf8(ctx.cache.cas().read_verified(&toml.digest).map_err(|e| ActionError::of(&e))?)
        .map_err(|_| format!("`{}`: buildpack.toml is not UTF-8", a.label))?;
    let shown = if root.is_empty() { "buildpack.toml".to_string() } else { format!("{root}/buildpack.toml") };
    let desc = BuildpackDescriptor::parse(&text, Path::new(&shown)).map_err(|e| ActionError::of(&e))?;
    if !desc.is_composite() {
        for bin in ["bin/detect", "bin/build"] {
            match out.get(bin) {
                None => {
                    return Err(ActionError::user(format!(
                        "buildpack `{}@{}` has no `{bin}`",
                        desc.info.id, desc.info.version
                    )))
                }
                Some(f) if !f.executable => {
                    return Err(ActionError::user(format!(
                        "buildpack `{}@{}`: `{bin}` is not executable",
                        desc.info.id, desc.info.version
                    ))
                    .hint(format!("make it executable: chmod +x {bin}")))
                }
                _ => {}
            }
        }
    }
    Ok(ActionOutput::Files { files: out })
}

/// The `buildpack` action kind's [`Runner`](super::seam::Runner).
pub struct BuildpackRunner;

impl super::seam::Runner for BuildpackRunner {
    fn mnemonic(&self) -> &'static str {
        "buildpack"
    }
    fn version(&self) -> u32 {
        1
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        let ActionKind::Buildpack { files, .. } = &a.kind else { return Vec::new() };
        super::seam::source_paths(files.iter().map(|(_, i)| i)).into_iter().map(|p| (p, true)).collect()
    }
    fn key(
        &self,
        kb: KeyBuilder,
        a: &Action,
        deps: &super::seam::Deps,
        ctx: &RunCtx,
    ) -> Result<KeyBuilder, ActionError> {
        key(kb, a, deps, ctx)
    }
    fn run<'a>(
        &'a self,
        a: &'a Action,
        deps: &'a super::seam::Deps,
        ctx: &'a Arc<RunCtx>,
    ) -> super::seam::RunFuture<'a> {
        super::seam::blocking(a, deps, ctx, run)
    }
}
