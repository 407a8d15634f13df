//! One runner per action kind: how its key is made (the components `explain` shows) and how it runs.
//! Blocking work (tar, compression) runs on tokio's blocking pool; sandboxes are awaited.

pub mod app_dir;
pub mod buildpack;
pub mod cnb_build;
pub mod cnb_common;
pub mod cnb_detect;
pub mod cnb_export;
pub mod debian;
pub mod genrule;
pub mod image;
pub mod import;
pub mod layer;
pub mod pull;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::events::Reporter;
use crate::cache::{Cache, KeyBuilder};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, Input};
use crate::model::digest::Blake3;

/// What every runner may use.
pub struct RunCtx {
    pub root: PathBuf,
    pub cache: Arc<Cache>,
    /// blake3 of every source file, by workspace-relative path.
    pub sources: BTreeMap<String, Blake3>,
    /// How each source looked when it was hashed (checked again after an action ran).
    pub source_stamps: BTreeMap<String, super::scheduler::SourceStamp>,
    pub source_date_epoch: u64,
    pub reporter: Arc<dyn Reporter>,
    /// Registry settings; the client is made on first use.
    pub registry_options: crate::registry::ClientOptions,
    pub registry_client: std::sync::OnceLock<crate::registry::Client>,
    /// [`host_identity`], computed once per build on first use.
    pub host_identity: std::sync::OnceLock<String>,
    /// The Debian archive setting (`cbuild.toml [debian] archive`); else env, else sources.list.
    pub debian_archive: Option<String>,
    /// The shared remote cache, if configured.
    pub remote: Option<Arc<crate::remote::RemoteCache>>,
    /// Run records collected during the build, written in one transaction at its end.
    pub pending_runs: std::sync::Mutex<Vec<crate::cache::RunRecord>>,
}

impl RunCtx {
    /// The registry client (one per build, shared by every action).
    pub fn registry(&self) -> Result<&crate::registry::Client, String> {
        if let Some(c) = self.registry_client.get() {
            return Ok(c);
        }
        let c = crate::registry::Client::new(self.registry_options.clone()).map_err(|e| crate::execution::chain(&e))?;
        Ok(self.registry_client.get_or_init(|| c))
    }
}

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

/// What identifies the host's tools for a genrule (which runs on the host's `/usr`, `/bin`,
/// `/etc`, outside any key otherwise): a digest of the package database (`/var/lib/dpkg/status`,
/// else the rpm and apk databases) and `/etc/os-release`. Conservative on purpose: any package
/// installed or upgraded on the host reruns every genrule, so a changed host tool never leaves a
/// stale hit. The non-hermetic escape, documented in the README.
pub fn host_identity() -> String {
    host_identity_of(&["/var/lib/dpkg/status", "/var/lib/rpm/rpmdb.sqlite", "/lib/apk/db/installed", "/etc/os-release"])
}

fn host_identity_of(paths: &[&str]) -> String {
    let mut h = blake3::Hasher::new_derive_key("cbuild 2026 host identity for genrules");
    for p in paths {
        h.update(p.as_bytes());
        match std::fs::read(p) {
            Ok(b) => {
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(&b);
            }
            Err(_) => {
                h.update(b"-");
            }
        }
    }
    format!("blake3:{}", h.finalize().to_hex())
}

/// The digest text of an input: `blake3:…` for a source, the CAS digest for another action's file.
pub fn input_digest(i: &Input, deps: &BTreeMap<ActionId, Arc<ActionOutput>>, ctx: &RunCtx) -> Result<String, String> {
    match i {
        Input::Source(p) => ctx
            .sources
            .get(p)
            .map(|b| format!("blake3:{b}"))
            .ok_or_else(|| format!("internal: source `{p}` was not hashed")),
        Input::Output { action, path } => match deps.get(action).map(|o| o.as_ref()) {
            Some(ActionOutput::Files { files }) => files
                .get(path)
                .map(|f| format!("{}{}", f.digest, if f.executable { "+x" } else { "" }))
                .ok_or_else(|| format!("internal: output `{path}` missing")),
            _ => Err(format!("internal: input `{path}` is not a file output")),
        },
    }
}

/// A short, stable digest of a dependency's whole output (for keys of images built on it).
pub fn output_digest(o: &ActionOutput) -> String {
    format!("blake3:{}", Blake3::of_bytes(o.to_json().as_bytes()))
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

#[cfg(test)]
mod tests {
    #[test]
    fn host_identity_changes_with_the_package_database() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("status");
        let p = db.to_str().unwrap();
        std::fs::write(&db, "Package: busybox-static\nVersion: 1:1.35.0-4\n").unwrap();
        let a = super::host_identity_of(&[p, "/nonexistent"]);
        assert_eq!(a, super::host_identity_of(&[p, "/nonexistent"]), "deterministic");
        std::fs::write(&db, "Package: busybox-static\nVersion: 1:1.36.1-1\n").unwrap();
        assert_ne!(a, super::host_identity_of(&[p, "/nonexistent"]), "an upgraded host tool changes it");
        assert!(!super::host_identity().is_empty());
    }
}
