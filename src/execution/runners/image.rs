//! The `image` runner: base (or scratch) + layers + config → an image in the CAS, `created` fixed
//! (1980-01-01T00:00:01Z or `SOURCE_DATE_EPOCH`) so the same inputs give the same digest anywhere.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::ctx::{output_digest, RunCtx};
use crate::cache::{ComponentValue, KeyBuilder};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, RemoteBlob};
use crate::oci::image::{append_layer, with_config, with_created, ConfigPatch, Image};
use crate::oci::layer::{Compression, LayerBlob};

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::Image { base, layers, layer_labels, config } = &a.kind else { unreachable!() };
    let base_d = match base {
        Some(b) => image_manifest(deps, *b)?.to_string(),
        None => "scratch".into(),
    };
    let mut ls = Vec::new();
    for l in layers {
        ls.push(output_digest(deps.get(l).ok_or("internal: missing layer")?));
    }
    let cfg = serde_json::to_string(config).map_err(|e| ActionError::of(&e))?;
    Ok(kb
        .component("base", base_d)
        .component("layers", ComponentValue::list(ls))
        .component("layer_labels", ComponentValue::list(layer_labels.clone()))
        .component("config", cfg)
        .component("created", created(config.created.as_deref(), ctx.source_date_epoch)))
}

fn image_manifest(
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    id: ActionId,
) -> Result<&crate::model::digest::Digest, String> {
    match deps.get(&id).map(|o| o.as_ref()) {
        Some(ActionOutput::Image { manifest, .. }) => Ok(manifest),
        _ => Err("internal: base is not an image".into()),
    }
}

/// The image `created` time: the target's `created`, else the SOURCE_DATE_EPOCH instant.
pub fn created(explicit: Option<&str>, epoch: u64) -> String {
    match explicit {
        Some(c) => c.to_string(),
        None => rfc3339(epoch),
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    if m <= 2 {
        y += 1;
    }
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<ActionOutput, ActionError> {
    let ActionKind::Image { base, layers, layer_labels, config } = &a.kind else { unreachable!() };
    let blobs = ctx.cache.cas();
    let mut img: Image = match base {
        Some(b) => Image::load(blobs, image_manifest(deps, *b)?).map_err(|e| ActionError::of(&e))?,
        None => crate::oci::image::scratch_for(&config.os, &config.architecture, config.variant.as_deref())
            .map_err(|e| ActionError::of(&e))?,
    };
    for (i, l) in layers.iter().enumerate() {
        match deps.get(l).map(|o| o.as_ref()) {
            Some(ActionOutput::Layer { diff_id, digest, size, media_type }) => {
                let blob = LayerBlob {
                    diff_id: diff_id.clone(),
                    digest: digest.clone(),
                    size: *size,
                    media_type: media_type.clone(),
                    compression: Compression::from_media_type(media_type).unwrap_or(Compression::Gzip),
                };
                img = append_layer(
                    &img,
                    &blob,
                    &format!("cbuild layer {}", layer_labels.get(i).map(String::as_str).unwrap_or("?")),
                )
                .map_err(|e| ActionError::of(&e))?;
            }
            _ => return Err("internal: a layer dependency has no layer output".into()),
        }
    }
    // Like a Dockerfile's ENTRYPOINT, a new entrypoint drops the base image's Cmd unless one is given.
    let cmd = match (&config.entrypoint, &config.cmd) {
        (Some(_), None) => Some(Vec::new()),
        (_, c) => c.clone(),
    };
    let patch = ConfigPatch {
        entrypoint: config.entrypoint.clone(),
        cmd,
        env: config.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        user: config.user.clone(),
        workdir: config.workdir.clone(),
        labels: config.labels.clone(),
        exposed_ports: config.exposed_ports.clone(),
    };
    img = with_config(&img, &patch).map_err(|e| ActionError::of(&e))?;
    img = with_created(&img, &created(config.created.as_deref(), ctx.source_date_epoch))
        .map_err(|e| ActionError::of(&e))?;
    let (manifest, manifest_size) = img.write_to(blobs).map_err(|e| ActionError::of(&e))?;
    let remote = base.and_then(|b| deps.get(&b)).map(|o| remote_of(o)).unwrap_or_default();
    Ok(image_output(&img, manifest, manifest_size, remote))
}

/// The action output describing a stored image.
/// `remote` lists layers that stay in a registry (from a shallow base); all others must be local.
pub fn image_output(
    img: &Image,
    manifest: crate::model::digest::Digest,
    manifest_size: u64,
    remote: Vec<RemoteBlob>,
) -> ActionOutput {
    ActionOutput::Image {
        manifest,
        manifest_size,
        config: img.config_digest().clone(),
        blobs: img
            .layers()
            .iter()
            .map(|l| l.digest.clone())
            .filter(|d| !remote.iter().any(|r| &r.digest == d))
            .collect(),
        remote,
    }
}

/// Remote layers of an image dependency (empty for local images).
pub fn remote_of(o: &ActionOutput) -> Vec<RemoteBlob> {
    match o {
        ActionOutput::Image { remote, .. } => remote.clone(),
        _ => Vec::new(),
    }
}

/// The `image` action kind's [`Runner`](super::seam::Runner).
pub struct ImageRunner;

impl super::seam::Runner for ImageRunner {
    fn mnemonic(&self) -> &'static str {
        "image"
    }
    fn version(&self) -> u32 {
        3
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

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(315_532_801), "1980-01-01T00:00:01Z");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
