//! One runner per action kind: how its key is made (the components `explain` shows) and how it runs.
//! Blocking work (tar, compression) runs on tokio's blocking pool; sandboxes are awaited.

pub mod app_dir;
pub mod buildpack;
pub mod cnb_build;
pub mod cnb_common;
pub mod cnb_detect;
pub mod cnb_export;
pub mod ctx;
pub mod debian;
pub mod genrule;
pub mod image;
pub mod import;
pub mod layer;
pub mod pull;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::KeyBuilder;
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput};
pub use ctx::{host_identity, input_digest, output_digest, RunCtx};

/// Each kind's version, bumped when its runner's output for the same inputs would change (so old
/// entries, local or in a shared remote cache, are not reused). Pinned-digest tests are tied to
/// [`output_fingerprint`], so a changed digest without a bump here (or of a codec id) fails.
pub const KIND_VERSIONS: &[(&str, u32)] = &[
    ("genrule", 1),
    ("layer", 2),
    ("import", 1),
    ("image", 3),
    ("buildpack", 1),
    ("pull", 1),
    ("debian", 2),
    ("detect", 2),
    ("build", 3),
    ("export", 2),
];

/// The version of a kind (see [`KIND_VERSIONS`]).
pub fn kind_version(k: &ActionKind) -> u32 {
    let m = k.mnemonic();
    KIND_VERSIONS.iter().find(|(n, _)| *n == m).map(|(_, v)| *v).expect("every kind has a version")
}

/// The encoders whose bytes end up in outputs (layer codecs). A component of every key: a new
/// codec is a new key, so a cache filled by another cbuild never serves the old bytes.
pub fn output_format() -> String {
    use crate::oci::layer::Compression;
    format!(
        "gzip={};zstd={};none={}",
        layer::compression_name(Compression::Gzip),
        layer::compression_name(Compression::Zstd),
        layer::compression_name(Compression::None)
    )
}

/// Every kind version and the output format in one line: what a pinned image digest depends on
/// besides its inputs.
pub fn output_fingerprint() -> String {
    let kinds: Vec<String> = KIND_VERSIONS.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!("{};{}", kinds.join(","), output_format())
}

/// Actions whose result depends on something outside every input (an unpinned registry tag): the
/// executor always runs them and never stores their result (one row per build would pile up).
pub fn uncacheable(k: &ActionKind) -> bool {
    matches!(k, ActionKind::PullImage { digest: None, .. })
}

/// The cache key of an action, with readable components.
pub fn key(a: &Action, deps: &BTreeMap<ActionId, Arc<ActionOutput>>, ctx: &RunCtx) -> Result<KeyBuilder, String> {
    let kb = KeyBuilder::new(a.kind.mnemonic(), kind_version(&a.kind)).component("output_format", output_format());
    match &a.kind {
        ActionKind::Genrule { .. } => genrule::key(kb, a, deps, ctx),
        ActionKind::Layer { .. } => layer::key(kb, a, deps, ctx),
        ActionKind::ImportImage { .. } => import::key(kb, a, ctx),
        ActionKind::Image { .. } => image::key(kb, a, deps, ctx),
        ActionKind::Buildpack { .. } => buildpack::key(kb, a, deps, ctx),
        ActionKind::PullImage { .. } => pull::key(kb, a, deps, ctx),
        ActionKind::DebianImage(_) => debian::key(kb, a, deps, ctx),
        ActionKind::CnbDetect(_) => cnb_detect::key(kb, a, deps, ctx),
        ActionKind::CnbBuild { .. } => cnb_build::key(kb, a, deps, ctx),
        ActionKind::CnbExport(_) => cnb_export::key(kb, a, deps, ctx),
    }
}

/// Runs an action (after a cache miss).
pub async fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<ActionOutput, String> {
    match &a.kind {
        ActionKind::Genrule { .. } => genrule::run(a, deps, ctx).await,
        ActionKind::CnbDetect(_) => cnb_detect::run(a, deps, ctx).await,
        ActionKind::PullImage { .. } => pull::run(a, ctx).await,
        ActionKind::CnbBuild { .. } => cnb_build::run(a, deps, ctx).await,
        _ => {
            let (a2, deps2, ctx2) = (a.clone(), deps.clone(), ctx.clone());
            tokio::task::spawn_blocking(move || match &a2.kind {
                ActionKind::Layer { .. } => layer::run(&a2, &deps2, &ctx2),
                ActionKind::ImportImage { .. } => import::run(&a2, &ctx2),
                ActionKind::Image { .. } => image::run(&a2, &deps2, &ctx2),
                ActionKind::Buildpack { .. } => buildpack::run(&a2, &deps2, &ctx2),
                ActionKind::CnbExport(_) => cnb_export::run(&a2, &deps2, &ctx2),
                ActionKind::DebianImage(_) => debian::run(&a2, &ctx2),
                ActionKind::Genrule { .. }
                | ActionKind::CnbDetect(_)
                | ActionKind::CnbBuild { .. }
                | ActionKind::PullImage { .. } => unreachable!("runs async"),
            })
            .await
            .map_err(|e| format!("internal: runner task failed: {e}"))?
        }
    }
}
