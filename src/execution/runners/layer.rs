//! The `layer` runner: files (sources or other actions' outputs) into one reproducible tar layer,
//! compressed once per diff_id (the cache remembers diff_id → compressed blob).

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::ctx::{input_digest, RunCtx};
use crate::cache::{CacheChunkIndex, ComponentValue, CompressedLayer, KeyBuilder};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, Input};
use crate::oci::layer::{write_prepared_layer, Compression, LayerBlob, LayerOptions};
use crate::oci::tar::{LayerEntries, TarEntry};

pub fn compression_of(s: &str) -> Compression {
    match s {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => Compression::Gzip,
    }
}

/// The compressor identity used as the key of the diff_id → compressed-blob mapping. It names the
/// encoder and its settings, not only the format: a blob from another encoder is valid gzip but has
/// another digest, and reusing it would make this cache's images differ from a fresh machine's.
pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => crate::oci::compress::GZIP_CODEC,
        Compression::Zstd => "zstd/l3-mt",
        Compression::None => "none",
    }
}

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::Layer { files, mode, uid, gid, symlinks, dirs, compression } = &a.kind else { unreachable!() };
    let mut m = BTreeMap::new();
    for f in files {
        let mut d = input_digest(&f.input, deps, ctx)?;
        if mode.is_none() {
            if let Input::Source(p) = &f.input {
                // The mode as stat'ed when the source was hashed (the same snapshot as its
                // digest; a later change is caught by the end-of-action source check), so a
                // no-op build stats each source once, not twice.
                let x = match ctx.source_stamps.get(p) {
                    Some(st) if !st.is_kept_link() => st.executable(),
                    _ => is_executable(&ctx.root.join(p)),
                };
                if x {
                    d.push_str("+x");
                }
            }
        }
        m.insert(f.dest.clone(), d);
    }
    Ok(kb
        .component("files", ComponentValue::map(m))
        .component("mode", mode.map(|m| format!("{m:o}")).unwrap_or_else(|| "auto".into()))
        .component("owner", format!("{uid}:{gid}"))
        .component("symlinks", ComponentValue::map(symlinks.clone()))
        .component(
            "dirs",
            ComponentValue::map(
                dirs.iter().map(|(p, (m, u, g))| (p.clone(), format!("{m:o}:{u}:{g}"))).collect::<BTreeMap<_, _>>(),
            ),
        )
        .component("compression", compression.as_str())
        .component("mtime", ctx.source_date_epoch.to_string()))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

pub fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<ActionOutput, ActionError> {
    let ActionKind::Layer { files, mode, uid, gid, symlinks, dirs, compression } = &a.kind else { unreachable!() };
    let mut entries = Vec::new();
    for f in files {
        let (src, exec) = match &f.input {
            // The resolved path: a link inside the workspace is read as before; one leading out
            // was refused by `scheduler::hash_sources` (and is again here).
            Input::Source(p) => {
                let src = crate::execution::sources::resolve_source(&ctx.root, p)?;
                let exec = is_executable(&src);
                (src, exec)
            }
            Input::Output { action, path } => match deps.get(action).map(|o| o.as_ref()) {
                Some(ActionOutput::Files { files }) => match files.get(path) {
                    Some(o) => (ctx.cache.cas().path(&o.digest), o.executable),
                    None => return Err(ActionError::internal(format!("output `{path}` missing"))),
                },
                _ => return Err(ActionError::internal(format!("`{path}` is not an output"))),
            },
        };
        let m = mode.unwrap_or(if exec { 0o755 } else { 0o644 });
        let mut e = TarEntry::file(f.dest.clone(), src, m);
        e.uid = *uid;
        e.gid = *gid;
        entries.push(e);
    }
    for (path, target) in symlinks {
        let mut e = TarEntry::symlink(path.clone(), target.clone());
        e.uid = *uid;
        e.gid = *gid;
        entries.push(e);
    }
    for (path, (m, u, g)) in dirs {
        let mut e = TarEntry::dir(path.clone(), *m);
        e.uid = *u;
        e.gid = *g;
        entries.push(e);
    }
    let blob = write_layer_cached(entries, compression_of(compression), ctx)?;
    Ok(ActionOutput::Layer { diff_id: blob.diff_id, digest: blob.digest, size: blob.size, media_type: blob.media_type })
}

/// Writes a layer of `entries` into the CAS, reusing an earlier compression of the same
/// uncompressed tar (diff_id → blob mapping kept by the cache) and, for gzip, every chunk of the
/// tar that an earlier layer already compressed (`gzip_chunks`).
pub fn write_layer_cached(entries: Vec<TarEntry>, c: Compression, ctx: &RunCtx) -> Result<LayerBlob, ActionError> {
    let opts = LayerOptions { compression: c, mtime: ctx.source_date_epoch };
    let cache = &ctx.cache;
    let known = |diff_id: &crate::model::digest::Digest, c: Compression| -> Option<LayerBlob> {
        let hit = cache.get_layer_compression(diff_id, compression_name(c)).ok().flatten()?;
        Some(LayerBlob {
            diff_id: hit.diff_id,
            digest: hit.digest,
            size: hit.size,
            media_type: hit.media_type,
            compression: c,
        })
    };
    let index: Option<Arc<dyn crate::oci::compress::BlockIndex>> = (c == Compression::Gzip)
        .then(|| Arc::new(CacheChunkIndex { cache: cache.clone(), codec: compression_name(c) }) as _);
    let entries = LayerEntries::new(entries).map_err(|e| ActionError::of(&e))?;
    let blob = write_prepared_layer(&entries, &opts, cache.cas(), &known, index).map_err(|e| ActionError::of(&e))?;
    let _ = cache.put_layer_compression(&CompressedLayer {
        diff_id: blob.diff_id.clone(),
        compression: compression_name(c).to_string(),
        digest: blob.digest.clone(),
        size: blob.size,
        media_type: blob.media_type.clone(),
    });
    Ok(blob)
}

/// The `layer` action kind's [`Runner`](super::seam::Runner).
pub struct LayerRunner;

impl super::seam::Runner for LayerRunner {
    fn mnemonic(&self) -> &'static str {
        "layer"
    }
    fn version(&self) -> u32 {
        2
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        let ActionKind::Layer { files, .. } = &a.kind else { return Vec::new() };
        super::seam::source_paths(files.iter().map(|f| &f.input)).into_iter().map(|p| (p, true)).collect()
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
