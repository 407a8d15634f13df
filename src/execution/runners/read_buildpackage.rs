//! The `read_buildpackage` runner: a buildpackage image (distribution.md › Buildpackage) or a
//! `.cnb` imported as one — `io.buildpacks.buildpackage.metadata` names the buildpack it stands for,
//! `io.buildpacks.buildpack.layers` the layer of each buildpack in it (a composite's children
//! too). Each tree is read from its own layer and checked against the label.

use std::sync::Arc;

use super::cnb_dist::{self, BuildpackSet};
use super::ctx::RunCtx;
use crate::cache::KeyBuilder;
use crate::cnb::buildpack_toml::{same_id, BuildpackRef};
use crate::cnb::distribution::{
    self as dist, BuildpackageMetadata, DistError, BUILDPACKAGE_METADATA, BUILDPACK_LAYERS,
};
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::model::digest::Digest;
use crate::oci::Image;

pub async fn run(a: &Action, deps: &super::seam::Deps, ctx: &Arc<RunCtx>) -> Result<ActionOutput, ActionError> {
    let ActionKind::ReadBuildpackage { image, name } = &a.kind else { unreachable!() };
    let out = deps.get(image).ok_or("internal: buildpackage image missing")?.clone();
    let ActionOutput::Image { manifest, .. } = out.as_ref() else {
        return Err("internal: buildpackage image missing".into());
    };
    let img = Image::load(ctx.cache.cas(), manifest).map_err(|e| ActionError::of(&e))?;
    let subject = format!("buildpackage `{name}`");
    let labels = cnb_dist::labels(&img);
    let missing = |l: &str| {
        ActionError::of(&DistError::new(&subject, l, "", "missing: this is not a buildpackage"))
            .hint("a buildpackage is made by `pack buildpack package` or cbuild's `buildpack_package`")
    };
    let meta: BuildpackageMetadata =
        serde_json::from_str(labels.get(BUILDPACKAGE_METADATA).ok_or_else(|| missing(BUILDPACKAGE_METADATA))?)
            .map_err(|e| {
                ActionError::of(&DistError::new(&subject, BUILDPACKAGE_METADATA, "", format!("not valid: {e}")))
            })?;
    let layers =
        dist::parse_layers_label(&subject, labels.get(BUILDPACK_LAYERS).ok_or_else(|| missing(BUILDPACK_LAYERS))?)
            .map_err(|e| ActionError::of(&e))?;
    let top = BuildpackRef::new(&meta.id, &meta.version);
    if !layers.iter().any(|(id, v)| same_id(id, &meta.id) && v.contains_key(&meta.version)) {
        return Err(ActionError::of(&DistError::new(
            &subject,
            BUILDPACKAGE_METADATA,
            "id",
            format!("names `{}`, which its `{BUILDPACK_LAYERS}` label does not list", top.key()),
        )));
    }
    let wanted = cnb_dist::layer_of_each(&img, &layers, &subject).map_err(|e| ActionError::of(&e))?;
    let digests: Vec<Digest> = wanted.iter().map(|(_, _, d)| d.clone()).collect();
    super::pull::ensure_blobs(&out, &digests, ctx).await?;
    let ctx2 = ctx.clone();
    let subj = subject.clone();
    let buildpacks = tokio::task::spawn_blocking(move || cnb_dist::read_trees(&ctx2, &wanted, &subj))
        .await
        .map_err(|e| ActionError::of(&e))??;
    cnb_dist::check_composites(ctx, &buildpacks, &subject)?;
    let set = BuildpackSet { top, buildpacks };
    let blobs = cnb_dist::tree_blobs(&set.buildpacks);
    let json = serde_json::to_string(&set).map_err(|e| ActionError::of(&e))?;
    Ok(ActionOutput::Data { json, blobs })
}

/// The `read_buildpackage` action kind's [`Runner`](super::seam::Runner).
pub struct ReadBuildpackageRunner;

impl super::seam::Runner for ReadBuildpackageRunner {
    fn mnemonic(&self) -> &'static str {
        "read_buildpackage"
    }
    fn version(&self) -> u32 {
        1
    }
    fn key(
        &self,
        kb: KeyBuilder,
        a: &Action,
        deps: &super::seam::Deps,
        _ctx: &RunCtx,
    ) -> Result<KeyBuilder, ActionError> {
        let ActionKind::ReadBuildpackage { image, name } = &a.kind else { unreachable!() };
        let img = deps.get(image).ok_or("internal: buildpackage image missing")?;
        Ok(kb.component("image", super::ctx::image_identity(img)).component("name", name.as_str()))
    }
    fn run<'a>(
        &'a self,
        a: &'a Action,
        deps: &'a super::seam::Deps,
        ctx: &'a Arc<RunCtx>,
    ) -> super::seam::RunFuture<'a> {
        Box::pin(run(a, deps, ctx))
    }
}
