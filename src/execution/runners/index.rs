//! The `index` runner: an OCI image index over the images a multi-platform target built, one per
//! platform, each checked to be for the platform it was built for (a base that is one image for
//! every platform would otherwise give an index of copies).

use std::sync::Arc;

use super::ctx::RunCtx;
use super::seam::Deps;
use crate::cache::{ComponentValue, KeyBuilder};
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::model::platform::Platform;
use crate::oci::index::{platform_of, Index};
use crate::oci::Image;

fn images<'a>(a: &'a Action, deps: &'a Deps) -> Result<Vec<&'a ActionOutput>, ActionError> {
    let ActionKind::ImageIndex { images, .. } = &a.kind else { unreachable!() };
    images
        .iter()
        .map(|i| match deps.get(i).map(|o| o.as_ref()) {
            Some(o @ ActionOutput::Image { .. }) => Ok(o),
            _ => Err(ActionError::internal("an image of the index has no image output")),
        })
        .collect()
}

pub fn key(kb: KeyBuilder, a: &Action, deps: &Deps, _ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
    let ActionKind::ImageIndex { platforms, .. } = &a.kind else { unreachable!() };
    let manifests: Vec<String> = images(a, deps)?
        .iter()
        .map(|o| match o {
            ActionOutput::Image { manifest, .. } => manifest.to_string(),
            _ => unreachable!(),
        })
        .collect();
    Ok(kb
        .component("manifests", ComponentValue::list(manifests))
        .component("platforms", ComponentValue::list(platforms.clone())))
}

pub fn run(a: &Action, deps: &Deps, ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    let ActionKind::ImageIndex { platforms, .. } = &a.kind else { unreachable!() };
    let blobs = ctx.cache.cas();
    let outs = images(a, deps)?;
    let mut imgs = Vec::new();
    for (o, want) in outs.iter().zip(platforms) {
        let ActionOutput::Image { manifest, .. } = o else { unreachable!() };
        let img = Image::load(blobs, manifest).map_err(|e| ActionError::of(&e))?;
        let have = platform_of(&img);
        let same = match (Platform::parse(&have), Platform::parse(want)) {
            (Ok(h), Ok(w)) => h == w,
            _ => have == *want,
        };
        if !same {
            return Err(ActionError::user(format!(
                "its image for {want} is a {have} image: its base is the same image for every platform"
            ))
            .hint("give the base `platforms` (or use a multi-platform oci_pull / debian_image) so each platform gets its own"));
        }
        imgs.push(img);
    }
    let idx = Index::of(imgs).map_err(|e| ActionError::of(&e))?;
    idx.write_to(blobs).map_err(|e| ActionError::of(&e))?;
    Ok(ActionOutput::Index {
        index: idx.digest.clone(),
        index_size: idx.bytes.len() as u64,
        images: outs.into_iter().cloned().collect(),
    })
}

/// The `index` action kind's [`Runner`](super::seam::Runner).
pub struct IndexRunner;

impl super::seam::Runner for IndexRunner {
    fn mnemonic(&self) -> &'static str {
        "index"
    }
    fn version(&self) -> u32 {
        1
    }
    fn key(&self, kb: KeyBuilder, a: &Action, deps: &Deps, ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
        key(kb, a, deps, ctx)
    }
    fn run<'a>(&'a self, a: &'a Action, deps: &'a Deps, ctx: &'a Arc<RunCtx>) -> super::seam::RunFuture<'a> {
        super::seam::blocking(a, deps, ctx, run)
    }
}
