//! The `pull` runner: resolves an `oci_pull` reference to a manifest and config (verified, stored
//! in the CAS). Shallow: layers stay in the registry until something needs their bytes
//! ([`ensure_local`]). A reference without a `digest` pin is resolved on every build, with a warning.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::ctx::RunCtx;
use crate::cache::KeyBuilder;
use crate::execution::events::Event;
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, RemoteBlob};
use crate::model::reference::Reference;

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    _deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    _ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::PullImage { image, digest, platform } = &a.kind else { unreachable!() };
    // No `platform`: the host's is picked from an index, so the host's is what the key names.
    let plat = platform.clone().unwrap_or_else(|| {
        let (os, arch) = crate::oci::layout::host_platform();
        format!("{os}/{arch}")
    });
    let kb = kb.component("image", image.as_str()).component("platform", plat);
    Ok(match digest {
        Some(d) => kb.component("digest", d.as_str()),
        // A tag can move: an unpinned pull is never answered from the cache nor stored in it
        // ([`super::uncacheable`]); the key only names it for `explain`.
        None => kb.component("unpinned", "resolved on every build"),
    })
}

fn platform(p: &Option<String>) -> Result<Option<(String, String)>, ActionError> {
    match p {
        None => Ok(None),
        Some(s) => {
            let (os, arch) =
                s.split_once('/').ok_or_else(|| format!("platform `{s}` must be os/arch, e.g. linux/amd64"))?;
            Ok(Some((os.to_string(), arch.to_string())))
        }
    }
}

pub async fn run(a: &Action, ctx: &Arc<RunCtx>) -> Result<ActionOutput, ActionError> {
    let ActionKind::PullImage { image, digest, platform: plat } = &a.kind else { unreachable!() };
    let client = ctx.registry()?;
    let mut r = Reference::parse(image).map_err(|e| ActionError::of(&e))?;
    if let Some(d) = digest {
        r = r.with_digest(crate::model::digest::Digest::parse(d).map_err(|e| ActionError::of(&e))?);
    }
    let resolved = client.resolve(&r, platform(plat)?).await.map_err(|e| ActionError::of(&e))?;
    if let Some(d) = digest {
        if &resolved.digest.to_string() != d {
            return Err(ActionError::user(format!(
                "`{image}` resolved to `{}`, not the pinned `{d}`",
                resolved.digest
            ))
            .hint("the tag moved: update the pinned digest, or pin the reference by digest alone"));
        }
    } else {
        ctx.reporter.event(&Event::Warning {
            message: format!(
                "`{}`: `{image}` is not pinned; it resolved to {} — add `digest = \"{}\"` to make builds reproducible",
                a.label, resolved.digest, resolved.digest
            ),
        });
    }
    shallow_output(resolved, ctx)
}

/// The output of a resolved reference: manifest and config in the CAS, every layer not already
/// there left in its registry (fetched when something needs its bytes, [`ensure_local`]).
pub fn shallow_output(resolved: crate::registry::Resolved, ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    let img = resolved.image;
    let (manifest, size) = img.write_to(ctx.cache.cas()).map_err(|e| ActionError::of(&e))?;
    let source = resolved.reference.to_string();
    let remote: Vec<RemoteBlob> = img
        .layers()
        .iter()
        .filter(|l| !ctx.cache.cas().contains(&l.digest))
        .map(|l| RemoteBlob { digest: l.digest.clone(), source: source.clone() })
        .collect();
    Ok(super::image::image_output(&img, manifest, size, remote))
}

/// Fetches an image output's remote layers into the CAS (verified); a no-op for local images.
pub async fn ensure_local(out: &ActionOutput, ctx: &RunCtx) -> Result<(), ActionError> {
    for rb in out.remote_blobs() {
        if ctx.cache.cas().contains(&rb.digest) {
            continue;
        }
        let r = Reference::parse(&rb.source).map_err(|e| ActionError::of(&e))?;
        ctx.registry()?
            .fetch_blob(&r, &rb.digest, ctx.cache.cas())
            .await
            .map_err(|e| format!("fetching layer `{}` of `{}`: {e}", rb.digest, rb.source))?;
    }
    Ok(())
}

/// Fetches the layers `wanted` of an image output into the CAS when they are remote (verified):
/// what reading a few layers of a shallow image needs, without the rest.
pub async fn ensure_blobs(
    out: &ActionOutput,
    wanted: &[crate::model::digest::Digest],
    ctx: &RunCtx,
) -> Result<(), ActionError> {
    let ActionOutput::Image { remote, .. } = out else { return Ok(()) };
    for rb in remote.iter().filter(|r| wanted.contains(&r.digest)) {
        if ctx.cache.cas().contains(&rb.digest) {
            continue;
        }
        let r = Reference::parse(&rb.source).map_err(|e| ActionError::of(&e))?;
        ctx.registry()?
            .fetch_blob(&r, &rb.digest, ctx.cache.cas())
            .await
            .map_err(|e| format!("fetching layer `{}` of `{}`: {e}", rb.digest, rb.source))?;
    }
    Ok(())
}

/// The `pull` action kind's [`Runner`](super::seam::Runner).
pub struct Pull;

impl super::seam::Runner for Pull {
    fn mnemonic(&self) -> &'static str {
        "pull"
    }
    fn version(&self) -> u32 {
        1
    }
    fn cacheable(&self, a: &Action) -> bool {
        // A tag can move: an unpinned pull is resolved on every build and never stored.
        !matches!(a.kind, ActionKind::PullImage { digest: None, .. })
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
        _deps: &'a super::seam::Deps,
        ctx: &'a Arc<RunCtx>,
    ) -> super::seam::RunFuture<'a> {
        Box::pin(run(a, ctx))
    }
}
