//! What every runner gets: the build's context ([`RunCtx`]) and the digests runners put in keys.
//! Below the runners and the dispatch in `runners/mod.rs`, so no runner imports its dispatcher.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::{Cache, ShownText};
use crate::execution::events::Reporter;
use crate::model::action::{ActionId, ActionOutput, Input};
use crate::model::digest::Blake3;

/// What every runner may use.
pub struct RunCtx {
    pub root: PathBuf,
    pub cache: Arc<Cache>,
    /// blake3 of every source file, and how it looked when it was hashed (checked again after an
    /// action ran), by workspace-relative path.
    pub sources: crate::execution::sources::Sources,
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
    /// Service bindings read in this build (detect and build share the bytes).
    pub bindings: super::cnb_bindings::Loaded,
    /// Background uploads to the remote cache (read-write remotes only).
    pub uploads: Option<crate::execution::uploads::Uploader>,
    /// Run records collected during the build, written in one transaction at its end.
    pub pending_runs: std::sync::Mutex<Vec<crate::cache::RunRecord>>,
    /// App dirs a detect left, locked, for its target's build phase (`cnb_common::materialize_app`).
    pub held_apps: super::app_dir::HeldApps,
}

impl RunCtx {
    /// The registry client (one per build, shared by every action).
    pub fn registry(&self) -> Result<&crate::registry::Client, ActionError> {
        if let Some(c) = self.registry_client.get() {
            return Ok(c);
        }
        let c = crate::registry::Client::new(self.registry_options.clone()).map_err(|e| ActionError::of(&e))?;
        Ok(self.registry_client.get_or_init(|| c))
    }
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

/// The digest text of an input: `blake3:…` for a source, the CAS digest for another action's file
/// (`+x` when it is executable), compact (no hex string is made).
pub fn input_digest(
    i: &Input,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<ShownText, ActionError> {
    match i {
        Input::Source(p) => ctx
            .sources
            .digest(p)
            .map(|b| ShownText::hash(false, b.0))
            .ok_or_else(|| ActionError::internal(format!("source `{p}` was not hashed"))),
        Input::Output { action, path } => match deps.get(action).map(|o| o.as_ref()) {
            Some(ActionOutput::Files { files }) => files
                .get(path)
                .map(|f| {
                    let mut bytes = [0u8; 32];
                    let mut t = match hex::decode_to_slice(f.digest.hex(), &mut bytes) {
                        Ok(()) => ShownText::hash(true, bytes),
                        Err(_) => ShownText::new(f.digest.to_string()),
                    };
                    if f.executable {
                        t.push_str("+x");
                    }
                    t
                })
                .ok_or_else(|| ActionError::internal(format!("output `{path}` missing"))),
            _ => Err(ActionError::internal(format!("input `{path}` is not a file output"))),
        },
    }
}

/// A short, stable digest of a dependency's whole output (for keys of images built on it).
pub fn output_digest(o: &ActionOutput) -> String {
    format!("blake3:{}", Blake3::of_bytes(o.to_json().as_bytes()))
}

/// What identifies an image input in a key: its manifest digest (an image output), else the
/// output's digest.
pub fn image_identity(o: &ActionOutput) -> String {
    match o {
        ActionOutput::Image { manifest, .. } => manifest.to_string(),
        other => output_digest(other),
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
