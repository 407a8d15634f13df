//! The `import` runner: an image from an OCI layout directory or an OCI/docker-archive `.tar` in the
//! workspace, every blob verified on the way into the CAS.

use crate::execution::ActionError;
use std::path::Path;

use super::ctx::RunCtx;
use crate::cache::{ComponentValue, KeyBuilder};
use crate::model::action::{Action, ActionKind, ActionOutput};

/// Every file of the layout (or the archive itself), workspace-relative, so their digests key the import.
pub fn layout_files(root: &Path, path: &str) -> Vec<String> {
    let full = root.join(path);
    if full.is_file() {
        return vec![path.to_string()];
    }
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(&full).sort_by_file_name().into_iter().flatten() {
        // Symlinks are listed too (walkdir does not follow them): the layout reader follows them by
        // path, so the source check must see them (one leading outside the workspace is refused).
        if e.file_type().is_file() || e.file_type().is_symlink() {
            if let Some(rel) = e.path().strip_prefix(root).ok().and_then(|r| r.to_str()) {
                out.push(rel.to_string());
            }
        }
    }
    out
}

pub fn key(kb: KeyBuilder, a: &Action, ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
    let ActionKind::ImportImage { path, tag, files } = &a.kind else { unreachable!() };
    let mut m = std::collections::BTreeMap::new();
    for f in files {
        let d = ctx.sources.digest(f).ok_or_else(|| format!("internal: `{f}` not hashed"))?;
        m.insert(f.clone(), format!("blake3:{d}"));
    }
    Ok(kb
        .component("path", path.as_str())
        .component("tag", tag.clone().unwrap_or_default())
        .component("files", ComponentValue::map(m))
        // A multi-platform layout resolves to the host's platform (Selector platform: None).
        .component("platform", {
            let (os, arch) = crate::oci::layout::host_platform();
            format!("{os}/{arch}")
        }))
}

pub fn run(a: &Action, ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    let ActionKind::ImportImage { path, tag, .. } = &a.kind else { unreachable!() };
    let full = ctx.root.join(path);
    let img = import_image(&full, tag.as_deref(), ctx)?;
    let (manifest, size) = img.write_to(ctx.cache.cas()).map_err(|e| ActionError::of(&e))?;
    Ok(super::image::image_output(&img, manifest, size, Vec::new()))
}

fn import_image(full: &Path, tag: Option<&str>, ctx: &RunCtx) -> Result<crate::oci::Image, ActionError> {
    let sel = crate::oci::layout::Selector { ref_name: tag.map(String::from), platform: None };
    let r = if full.is_dir() {
        crate::oci::layout::read_layout(full, &sel, ctx.cache.cas())
    } else {
        crate::oci::docker_archive::read_archive(full, &sel, ctx.cache.cas())
    };
    // The layout or archive is a workspace input: whatever is wrong with it (a blob that does not
    // match its digest, a size that lies, JSON that is not a manifest) is the workspace's to fix,
    // exit 2; only the cache's own failures are the machine's.
    r.map_err(|e| {
        let mut err = ActionError::of(&e);
        if !matches!(e, crate::oci::OciError::Cas(_) | crate::oci::OciError::LayerWrite { .. }) {
            err.kind = crate::model::error::ErrorKind::User;
        }
        err
    })
}

/// The `import` action kind's [`Runner`](super::seam::Runner).
pub struct Import;

impl super::seam::Runner for Import {
    fn mnemonic(&self) -> &'static str {
        "import"
    }
    fn version(&self) -> u32 {
        1
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        let ActionKind::ImportImage { files, .. } = &a.kind else { return Vec::new() };
        files.iter().map(|p| (p.clone(), true)).collect()
    }
    fn key(
        &self,
        kb: KeyBuilder,
        a: &Action,
        _deps: &super::seam::Deps,
        ctx: &RunCtx,
    ) -> Result<KeyBuilder, ActionError> {
        key(kb, a, ctx)
    }
    fn run<'a>(
        &'a self,
        a: &'a Action,
        deps: &'a super::seam::Deps,
        ctx: &'a std::sync::Arc<RunCtx>,
    ) -> super::seam::RunFuture<'a> {
        super::seam::blocking(a, deps, ctx, |a, _, ctx| run(a, ctx))
    }
}
