//! One runner per action kind, behind one seam, [`Runner`]: what the action reads (its workspace
//! sources: hashed before it runs, checked unchanged after), how its key is made (the components
//! `explain` shows), whether its result may be cached, and how it runs. The executor knows actions
//! only through [`runner`]. Blocking work (tar, compression) runs on tokio's blocking pool
//! ([`blocking`]); sandboxes are awaited.
//!
//! Adding an action kind: an `ActionKind` variant (`model::action`), one file here implementing
//! [`Runner`], and its line in [`runner`] and [`RUNNERS`].

pub mod app_dir;
pub mod builder_image;
pub mod buildpack;
pub mod buildpackage;
pub mod cnb_bindings;
pub mod cnb_build;
pub mod cnb_common;
pub mod cnb_detect;
pub mod cnb_dist;
pub mod cnb_export;
pub mod ctx;
pub mod debian;
pub mod genrule;
pub mod image;
pub mod image_test;
pub mod import;
pub mod index;
pub mod integration_test;
pub mod layer;
pub mod pull;
pub mod read_builder;
pub mod read_buildpackage;
pub mod run_image;
pub mod seam;

use crate::cache::KeyBuilder;
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind};
pub use ctx::{host_identity, input_digest, output_digest, RunCtx};
pub use seam::{blocking, source_paths, Deps, RunFuture, Runner};

/// Every runner, in the order of [`output_fingerprint`].
pub const RUNNERS: &[&dyn Runner] = &[
    &genrule::Genrule,
    &layer::LayerRunner,
    &import::Import,
    &image::ImageRunner,
    &buildpack::BuildpackRunner,
    &pull::Pull,
    &debian::Debian,
    &cnb_detect::Detect,
    &cnb_build::Build,
    &cnb_export::Export,
    &image_test::ImageTestRunner,
    &integration_test::IntegrationTestRunner,
    &read_builder::ReadBuilderRunner,
    &read_buildpackage::ReadBuildpackageRunner,
    &run_image::RunImageRunner,
    &builder_image::BuilderImageRunner,
    &buildpackage::BuildpackageRunner,
    &index::IndexRunner,
];

/// The one dispatch from an action kind to its runner.
pub fn runner(kind: &ActionKind) -> &'static dyn Runner {
    match kind {
        ActionKind::Genrule { .. } => &genrule::Genrule,
        ActionKind::Layer { .. } => &layer::LayerRunner,
        ActionKind::ImportImage { .. } => &import::Import,
        ActionKind::Image { .. } => &image::ImageRunner,
        ActionKind::Buildpack { .. } => &buildpack::BuildpackRunner,
        ActionKind::PullImage { .. } => &pull::Pull,
        ActionKind::DebianImage(_) => &debian::Debian,
        ActionKind::CnbDetect(_) => &cnb_detect::Detect,
        ActionKind::CnbBuild { .. } => &cnb_build::Build,
        ActionKind::CnbExport(_) => &cnb_export::Export,
        ActionKind::ImageTest { integration: Some(_), .. } => &integration_test::IntegrationTestRunner,
        ActionKind::ImageTest { .. } => &image_test::ImageTestRunner,
        ActionKind::ReadBuilder { .. } => &read_builder::ReadBuilderRunner,
        ActionKind::ReadBuildpackage { .. } => &read_buildpackage::ReadBuildpackageRunner,
        ActionKind::BuilderRunImage { .. } => &run_image::RunImageRunner,
        ActionKind::BuilderImage(_) => &builder_image::BuilderImageRunner,
        ActionKind::Buildpackage { .. } => &buildpackage::BuildpackageRunner,
        ActionKind::ImageIndex { .. } => &index::IndexRunner,
    }
}

/// The version of a kind (see [`Runner::version`]).
pub fn kind_version(k: &ActionKind) -> u32 {
    runner(k).version()
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
    let kinds: Vec<String> =
        RUNNERS.iter().filter(|r| r.makes_image_bytes()).map(|r| format!("{}={}", r.mnemonic(), r.version())).collect();
    format!("{};{}", kinds.join(","), output_format())
}

/// The cache key of an action, with readable components.
pub fn key(a: &Action, deps: &Deps, ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
    let r = runner(&a.kind);
    let kb = KeyBuilder::new(r.mnemonic(), r.version()).component("output_format", output_format());
    r.key(kb, a, deps, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runner_is_listed_once_with_its_kinds_mnemonic() {
        let names: Vec<&str> = RUNNERS.iter().map(|r| r.mnemonic()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for n in [
            "genrule",
            "layer",
            "import",
            "image",
            "buildpack",
            "pull",
            "debian",
            "detect",
            "build",
            "export",
            "image_test",
            "integration_test",
            "read_builder",
            "read_buildpackage",
            "run_image",
            "builder_image",
            "buildpackage",
        ] {
            assert!(names.contains(&n), "{n} has no runner");
        }
    }
}
