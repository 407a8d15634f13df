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
    // Built as the key's own map (not a map of strings converted afterwards: one copy of the
    // file list, not two, for a layer of 100,000 files).
    // Collected, not inserted one by one: files come sorted by destination, so the map is built
    // in bulk instead of comparing long common prefixes per insert (a later duplicate wins, as
    // with `insert`).
    let m = files
        .iter()
        .map(|f| {
            let mut d = input_digest(&f.input, deps, ctx)?;
            if mode.is_none() {
                if let Input::Source(p) = &f.input {
                    // The mode as stat'ed when the source was hashed (the same snapshot as its
                    // digest; a later change is caught by the end-of-action source check), so a
                    // no-op build stats each source once, not twice.
                    if source_executable(p, ctx) {
                        d.push_str("+x");
                    }
                }
            }
            Ok((f.dest.clone(), ComponentValue::Text(d)))
        })
        .collect::<Result<BTreeMap<String, ComponentValue>, ActionError>>()?;
    Ok(kb
        .component("files", ComponentValue::Map(m))
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

/// Whether the workspace source `p` is executable: from its stamp taken when it was hashed (what
/// the key says), else from a stat now.
fn source_executable(p: &str, ctx: &RunCtx) -> bool {
    match ctx.sources.stamp(p) {
        Some(st) if !st.is_kept_link() => st.executable(),
        _ => is_executable(&ctx.root.join(p)),
    }
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
    let (entries, c) = entries_of(a, deps, ctx)?;
    write_entries(entries, c, ctx)
}

/// The layer's entries: cheap (no file is opened or resolved here), so [`LayerRunner::run`] makes
/// them on the calling task and hands only them to the blocking pool, not a clone of the action
/// (a second copy of a 100,000-file list).
fn entries_of(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<(Vec<TarEntry>, Compression), ActionError> {
    let ActionKind::Layer { files, mode, uid, gid, symlinks, dirs, compression } = &a.kind else { unreachable!() };
    let mut entries = Vec::with_capacity(files.len() + symlinks.len() + dirs.len());
    for f in files {
        let (src, exec) = match &f.input {
            // Kept as the workspace-relative name; resolved right before it is read (below), so a
            // layer of N files holds N short names, not N resolved absolute paths.
            Input::Source(p) => {
                if !std::path::Path::new(p).is_relative() {
                    return Err(ActionError::internal(format!("source `{p}` is not workspace-relative")));
                }
                (std::path::PathBuf::from(p), source_executable(p, ctx))
            }
            Input::Output { action, path } => match deps.get(action).map(|o| o.as_ref()) {
                Some(ActionOutput::Files { files }) => match files.get(path) {
                    Some(o) => {
                        let blob = std::path::absolute(ctx.cache.cas().path(&o.digest))
                            .map_err(|e| ActionError::env(format!("the cache's blob of `{path}`: {e}")))?;
                        (blob, o.executable)
                    }
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
    Ok((entries, compression_of(compression)))
}

/// Writes the layer of `entries` (from [`entries_of`]) into the CAS.
fn write_entries(entries: Vec<TarEntry>, c: Compression, ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    // A relative source is a workspace file: resolved with every symlink followed, refused if
    // that leads outside the workspace (`scheduler::hash_sources` refused such a source before
    // any action ran; this applies the rule again at read time, so a link changed during the
    // build is not followed out either). An absolute one is a CAS blob, opened as it is.
    let root = ctx.root.clone();
    let canon_root = crate::execution::sources::canonical_root(&root)?;
    let resolve: Arc<crate::oci::tar::SourceResolver> = Arc::new(move |src: &std::path::Path| {
        if src.is_absolute() {
            return Ok(src.to_path_buf());
        }
        let rel = src
            .to_str()
            .ok_or_else(|| crate::oci::OciError::Source(format!("source `{}` is not UTF-8", src.display())))?;
        crate::execution::sources::resolve_source_in(&root, &canon_root, rel).map_err(crate::oci::OciError::Source)
    });
    let entries = LayerEntries::with_resolver(entries, resolve).map_err(|e| ActionError::of(&e))?;
    // This action runs only when a file, mode or owner changed (all in its key): a new tar.
    let blob = write_entries_cached(&entries, c, ctx, false)?;
    Ok(ActionOutput::Layer { diff_id: blob.diff_id, digest: blob.digest, size: blob.size, media_type: blob.media_type })
}

/// Writes a layer of `entries` into the CAS, reusing an earlier compression of the same
/// uncompressed tar (diff_id → blob mapping kept by the cache) and, for gzip, every chunk of the
/// tar that an earlier layer already compressed (`gzip_chunks`).
pub fn write_layer_cached(entries: Vec<TarEntry>, c: Compression, ctx: &RunCtx) -> Result<LayerBlob, ActionError> {
    let entries = LayerEntries::new(entries).map_err(|e| ActionError::of(&e))?;
    write_entries_cached(&entries, c, ctx, true)
}

/// [`write_layer_cached`] for content expected to be new (no earlier compression looked for
/// first: see [`LayerOptions::probe`]); the same blob.
pub fn write_new_layer_cached(entries: Vec<TarEntry>, c: Compression, ctx: &RunCtx) -> Result<LayerBlob, ActionError> {
    let entries = LayerEntries::new(entries).map_err(|e| ActionError::of(&e))?;
    write_entries_cached(&entries, c, ctx, false)
}

/// [`write_layer_cached`] for entries already prepared.
fn write_entries_cached(
    entries: &LayerEntries,
    c: Compression,
    ctx: &RunCtx,
    probe: bool,
) -> Result<LayerBlob, ActionError> {
    let opts = LayerOptions { compression: c, mtime: ctx.source_date_epoch, probe };
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
    let blob = write_prepared_layer(entries, &opts, cache.cas(), &known, index).map_err(|e| ActionError::of(&e))?;
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
        let ctx = ctx.clone();
        let entries = entries_of(a, deps, &ctx);
        Box::pin(async move {
            let (entries, c) = entries?;
            tokio::task::spawn_blocking(move || write_entries(entries, c, &ctx))
                .await
                .map_err(|e| ActionError::internal(format!("runner task failed: {e}")))?
        })
    }
}
