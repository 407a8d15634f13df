//! The `buildpackage` runner: a buildpack as a buildpackage image (distribution.md ›
//! Buildpackage), what `pack buildpack package` makes: no base, one layer per buildpack (a
//! composite's children too) at `/cnb/buildpacks/<id>/<version>/`, and the
//! `io.buildpacks.buildpackage.metadata` and `io.buildpacks.buildpack.layers` labels. With
//! `format = "file"` the session also writes it as a `.cnb` (an OCI layout tar).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cnb_dist;
use super::ctx::{output_digest, RunCtx};
use crate::cache::{ComponentValue, KeyBuilder};
use crate::cnb::distribution::{self as dist, BuildpackageMetadata, LayersLabel};
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::oci::image::{append_layer, with_config, ConfigPatch};

pub fn key(kb: KeyBuilder, a: &Action, deps: &super::seam::Deps, ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
    let ActionKind::Buildpackage { buildpack, buildpacks, os, architecture } = &a.kind else { unreachable!() };
    let d = |id: &usize| deps.get(id).map(|o| output_digest(o)).ok_or("internal: missing buildpack");
    let all = buildpacks.iter().map(d).collect::<Result<Vec<_>, _>>()?;
    Ok(kb
        .component("buildpack", d(buildpack)?)
        .component("buildpacks", ComponentValue::list(all))
        .component("platform", format!("{os}/{architecture}"))
        .component("source_date_epoch", ctx.source_date_epoch.to_string()))
}

pub fn run(a: &Action, deps: &super::seam::Deps, ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    let ActionKind::Buildpackage { buildpack, buildpacks, os, architecture } = &a.kind else { unreachable!() };
    let mut ids = vec![*buildpack];
    ids.extend(buildpacks.iter().copied());
    let (trees, tops) = cnb_dist::trees_of(&ids, deps, ctx)?;
    let top = tops.get(buildpack).ok_or("internal: the packaged buildpack has no tree")?;
    let (top_desc, _) = trees
        .iter()
        .find(|(d, _)| d.info.id == top.id && d.info.version == top.version)
        .ok_or("internal: the packaged buildpack has no tree")?;
    let created = super::image::created(None, ctx.source_date_epoch);
    let mut img = crate::oci::image::scratch(os, architecture).map_err(|e| ActionError::of(&e))?;
    img = crate::oci::image::with_created(&img, &created).map_err(|e| ActionError::of(&e))?;
    let mut layers = LayersLabel::new();
    for (desc, files) in &trees {
        let blob = cnb_dist::buildpack_layer(desc, files, ctx)?;
        img = append_layer(&img, &blob, &format!("buildpack:{}", desc.key())).map_err(|e| ActionError::of(&e))?;
        layers
            .entry(desc.info.id.clone())
            .or_default()
            .insert(desc.info.version.clone(), dist::layer_info(desc, &blob.diff_id.to_string()));
    }
    let mut labels = BTreeMap::new();
    labels.insert(dist::BUILDPACKAGE_METADATA.to_string(), dist::to_json(&BuildpackageMetadata::of(top_desc)));
    labels.insert(dist::BUILDPACK_LAYERS.to_string(), dist::to_json(&layers));
    img = with_config(&img, &ConfigPatch { labels, ..Default::default() }).map_err(|e| ActionError::of(&e))?;
    let (manifest, size) = img.write_to(ctx.cache.cas()).map_err(|e| ActionError::of(&e))?;
    Ok(super::image::image_output(&img, manifest, size, Vec::new()))
}

/// The `buildpackage` action kind's [`Runner`](super::seam::Runner).
pub struct BuildpackageRunner;

impl super::seam::Runner for BuildpackageRunner {
    fn mnemonic(&self) -> &'static str {
        "buildpackage"
    }
    fn version(&self) -> u32 {
        1
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
