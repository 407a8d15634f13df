//! The CNB build phase as one action: the chosen group's `bin/build` in order, as the stack user in a
//! sandbox whose root is the build image, with `<layer>.toml` types, env dirs, launch.toml,
//! build.toml (`unmet`) and store.toml handled as the lifecycle does. Cached layers of the previous
//! build of the same target are restored first (the CNB way for buildpacks to skip work). Output:
//! one layer blob per launch layer, the app layer, the config layer and the merged metadata.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cnb_common::{self as common, Scratch};
use super::cnb_detect::{self, DetectResult};
use super::ctx::RunCtx;
use crate::cache::KeyBuilder;
use crate::cnb::buildpack_toml::{escape_id, BuildpackRef};
use crate::cnb::env::{
    apply_build_layer_confined, build_args, build_cnb_vars, buildpack_process_env, BuildVars, ConfinedEnvFs,
};
use crate::cnb::launch::{merge_launch, parse_build_toml, parse_launch_toml, LaunchToml, StoreToml};
use crate::cnb::layer_toml::{
    check_layer_name, layer_disposition, layer_name_of_file, parse_layer_toml, restore_action, restored_layer_toml,
    LayerDisposition, LayerTypes, RestoreAction,
};
use crate::execution::events::Event;
use crate::fs::confined::{Kind, Root};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput};
use crate::model::digest::{Blake3, Digest};
use crate::oci::layer::{Compression, LayerBlob};
use crate::oci::tar::{entries_from_dir, TarEntry};

/// A layer blob as stored in results and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl BlobRef {
    pub fn from_blob(b: &LayerBlob) -> BlobRef {
        BlobRef { diff_id: b.diff_id.clone(), digest: b.digest.clone(), size: b.size, media_type: b.media_type.clone() }
    }
    pub fn to_blob(&self) -> LayerBlob {
        LayerBlob {
            diff_id: self.diff_id.clone(),
            digest: self.digest.clone(),
            size: self.size,
            media_type: self.media_type.clone(),
            compression: Compression::from_media_type(&self.media_type).unwrap_or(Compression::Gzip),
        }
    }
}

/// One buildpack layer after the build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerResult {
    pub types: LayerTypes,
    /// `[metadata]` as JSON.
    pub data: serde_json::Value,
    /// The image layer (launch layers).
    pub launch_blob: Option<BlobRef>,
    /// The contents saved for the next build (cache layers).
    pub cache_blob: Option<BlobRef>,
    /// `<layer>.sbom.<ext>`: format (`cdx.json`, ...) → the file in the CAS; restored with the
    /// layer on the next build, as the lifecycle does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sbom: SbomFiles,
}

/// SBOM files of one owner (a buildpack's `launch`/`build`, or a layer): format → blob.
pub type SbomFiles = BTreeMap<String, Digest>;

/// One buildpack of the group after the build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildpackResult {
    pub id: String,
    pub version: String,
    pub layers: BTreeMap<String, LayerResult>,
    /// store.toml `[metadata]` as JSON.
    pub store: Option<serde_json::Value>,
    /// `launch.sbom.<ext>` (in the image's SBOM layer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub launch_sbom: SbomFiles,
    /// `build.sbom.<ext>` (kept with the build result; not in the image).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_sbom: SbomFiles,
}

impl BuildpackResult {
    /// Every SBOM blob of this buildpack (launch, build and its layers').
    pub fn sbom_blobs(&self) -> impl Iterator<Item = &Digest> {
        self.launch_sbom
            .values()
            .chain(self.build_sbom.values())
            .chain(self.layers.values().flat_map(|l| l.sbom.values()))
    }
}

/// The build phase's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildResult {
    pub group: Vec<crate::cnb::plan::GroupMember>,
    /// `<layers>/config/metadata.toml`.
    pub metadata_toml: String,
    pub buildpacks: Vec<BuildpackResult>,
    /// Image layers in export order: (buildpack id, layer name, blob).
    pub launch_layers: Vec<(String, String, BlobRef)>,
    /// App layers: one per non-empty slice (launch.toml `[[slices]]`, buildpack order), then the rest.
    pub app_layers: Vec<BlobRef>,
    pub config_layer: BlobRef,
    /// The SBOM layer (`/layers/sbom/launch/<escaped-id>/...`), when a buildpack of the group wrote
    /// a launch SBOM (`launch.sbom.<ext>` or one of a launch layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_layer: Option<BlobRef>,
}

impl BuildResult {
    pub fn blobs(&self) -> Vec<Digest> {
        let mut v: Vec<Digest> = vec![self.config_layer.digest.clone()];
        v.extend(self.app_layers.iter().map(|b| b.digest.clone()));
        v.extend(self.sbom_layer.iter().map(|b| b.digest.clone()));
        for b in &self.buildpacks {
            for l in b.layers.values() {
                v.extend(l.launch_blob.iter().chain(l.cache_blob.iter()).map(|x| x.digest.clone()));
            }
            v.extend(b.sbom_blobs().cloned());
        }
        v.sort();
        v.dedup();
        v
    }
}

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::CnbBuild { phase, detect } = &a.kind else { unreachable!() };
    let kb = cnb_detect::phase_key(kb, phase, deps, ctx)?;
    let d = deps.get(detect).ok_or("internal: detect result missing")?;
    // The build reads (and its sandbox sees) only the chosen group's buildpacks: a change to a
    // buildpack of the builder that detect did not choose reruns detect, not the build.
    let view = common::phase_view(phase, deps, ctx)?;
    let group = group_buildpacks(&view, d)?;
    let bps: Vec<String> = group.iter().map(|b| b.digest.clone()).collect();
    Ok(kb
        .component("detect", super::ctx::output_digest(d))
        .component("buildpacks", crate::cache::ComponentValue::list(bps))
        // Results from before SBOM files were read (no `sbom` fields) must not be reused: this
        // changes every build key once, without a kind version bump (which would move the output
        // fingerprint that pinned digests of non-CNB images are tied to; their bytes are the same).
        .component("outputs", "sbom-files"))
}

/// The buildpacks of the group detect chose, in the builder's buildpack order.
fn group_buildpacks(view: &common::PhaseView, detect: &ActionOutput) -> Result<Vec<common::Bp>, ActionError> {
    let det: DetectResult = match detect {
        ActionOutput::Data { json, .. } => serde_json::from_str(json).map_err(|e| ActionError::of(&e))?,
        _ => return Err("internal: detect result missing".into()),
    };
    let mut out: Vec<common::Bp> = Vec::new();
    for m in &det.group {
        let bp = view
            .find(&BuildpackRef::new(&m.id, &m.version))
            .ok_or_else(|| format!("internal: `{}` not found", m.key()))?;
        if !out.iter().any(|b| b.seq == bp.seq) {
            out.push(bp.clone());
        }
    }
    out.sort_by_key(|b| b.seq);
    Ok(out)
}

/// Where the previous successful build of a target keeps what the next one restores.
fn state_path(ctx: &RunCtx, label: &str) -> PathBuf {
    ctx.cache.dir().join("cnb-state").join(format!("{}.json", crate::model::digest::Blake3::of_bytes(label.as_bytes())))
}

/// The remote-cache key of a target's CNB cache state: the target and the builder's identity (its
/// stack and the buildpacks of the chosen group, with versions). Not an action key: the state is
/// what the next build restores, never a result that is used as is.
fn state_key(label: &str, stack_id: &str, group: &[crate::cnb::plan::GroupMember]) -> Blake3 {
    let members: Vec<String> = group.iter().map(|m| m.key()).collect();
    Blake3::of_bytes(format!("cbuild cnb cache state v1\n{label}\n{stack_id}\n{}", members.join(",")).as_bytes())
}

/// Every blob a state references (cache layers, and launch layers a later build may reuse).
fn state_blobs(state: &[BuildpackResult]) -> Vec<Digest> {
    let mut v: Vec<Digest> = state
        .iter()
        .flat_map(|b| b.layers.values())
        .flat_map(|l| [&l.cache_blob, &l.launch_blob])
        .flatten()
        .map(|b| b.digest.clone())
        .collect();
    v.extend(state.iter().flat_map(|b| b.layers.values()).flat_map(|l| l.sbom.values().cloned()));
    v.sort();
    v.dedup();
    v
}

/// Queues the upload of this target's cache state to the remote cache (read-write remotes), so a
/// runner with an empty cache restores the cache layers before `bin/build`. Last writer wins; the
/// entry is written after its blobs, so a reader never sees half of one.
fn upload_state(ctx: &RunCtx, key: &Blake3, state: &[BuildpackResult]) {
    let Some(up) = &ctx.uploads else { return };
    let Ok(json) = serde_json::to_string(state) else { return };
    let blobs = state_blobs(state);
    let out = ActionOutput::Data { json, blobs: blobs.clone() };
    up.submit(crate::execution::uploads::Job::new(*key, out.to_json(), "[]".into(), blobs, None, false));
}

/// The cache state of this target from the remote cache, when the local cache has none: checked
/// (its blobs downloaded and verified, its buildpacks those of the group) or discarded with a
/// warning. Never changes an image digest: cache layers are not in images.
async fn remote_state(
    ctx: &Arc<RunCtx>,
    key: &Blake3,
    label: &str,
    group: &[crate::cnb::plan::GroupMember],
) -> Vec<BuildpackResult> {
    let Some(remote) = ctx.remote.clone() else { return Vec::new() };
    if !remote.reading() {
        return Vec::new();
    }
    let (ctx2, key2) = (ctx.clone(), *key);
    let r =
        tokio::task::spawn_blocking(move || remote.lookup(&key2, &crate::remote::Expected::data(), ctx2.cache.cas()))
            .await;
    let Some(remote) = ctx.remote.as_ref() else { return Vec::new() };
    if let Some(w) = remote.take_warning() {
        ctx.reporter.event(&Event::Warning { message: w });
    }
    let json = match r {
        Ok(Ok(Some(hit))) => match hit.output {
            ActionOutput::Data { json, .. } => json,
            _ => return Vec::new(),
        },
        Ok(Err(e)) => {
            if e.is_entry_problem() || remote.reading() {
                remote.note(&e, &format!("cache state of `{label}`"));
            }
            return Vec::new();
        }
        _ => return Vec::new(),
    };
    let ids: std::collections::BTreeSet<&str> = group.iter().map(|m| m.id.as_str()).collect();
    match serde_json::from_str::<Vec<BuildpackResult>>(&json) {
        Ok(v) if v.iter().all(|b| ids.contains(b.id.as_str())) => {
            ctx.reporter.event(&Event::Output {
                label: label.to_string(),
                action: "build".into(),
                stream: "cbuild".into(),
                line: format!("restoring the buildpack cache layers from remote cache `{}`", remote.url()),
            });
            v.into_iter()
                .map(|mut b| {
                    for l in b.layers.values_mut() {
                        l.cache_blob = l.cache_blob.take().filter(|x| ctx.cache.cas().contains(&x.digest));
                        l.launch_blob = l.launch_blob.take().filter(|x| ctx.cache.cas().contains(&x.digest));
                        l.sbom.retain(|_, d| ctx.cache.cas().contains(d));
                    }
                    b
                })
                .collect()
        }
        _ => {
            ctx.reporter.event(&Event::Warning {
                message: format!(
                    "`{label}`: the cache state in remote cache `{}` is not one of this builder's; ignored",
                    remote.url()
                ),
            });
            Vec::new()
        }
    }
}

fn load_state(ctx: &RunCtx, label: &str) -> Vec<BuildpackResult> {
    std::fs::read(state_path(ctx, label))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<BuildpackResult>>(&b).ok())
        // Only blobs still in the CAS can be restored.
        .map(|v| {
            v.into_iter()
                .map(|mut b| {
                    for l in b.layers.values_mut() {
                        l.cache_blob = l.cache_blob.take().filter(|x| ctx.cache.cas().contains(&x.digest));
                        l.launch_blob = l.launch_blob.take().filter(|x| ctx.cache.cas().contains(&x.digest));
                        l.sbom.retain(|_, d| ctx.cache.cas().contains(d));
                    }
                    b
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Largest `<layer>.toml`, `launch.toml`, `build.toml` or `store.toml` cbuild reads.
const MAX_TOML_BYTES: u64 = 16 << 20;

/// Tar entries of one directory placed at `dest` (e.g. `layers/acme_go/go`), owned by the stack
/// user, with its parent directories owned by the user too (like the lifecycle's exporter).
fn dir_entries(dir: &Path, dest: &str, uid: u32, gid: u32) -> Result<Vec<TarEntry>, ActionError> {
    let mut v = entries_from_dir(dir, dest, uid, gid, None).map_err(|e| ActionError::of(&e))?;
    let mut parent = String::new();
    for seg in dest.split('/') {
        parent = if parent.is_empty() { seg.to_string() } else { format!("{parent}/{seg}") };
        if !v.iter().any(|e| e.path == parent) {
            let mut d = TarEntry::dir(parent.clone(), 0o755);
            d.uid = uid;
            d.gid = gid;
            v.push(d);
        }
    }
    Ok(v)
}

/// Reads the SBOM files a buildpack left in its layers dir (lifecycle `processSBOMFiles`) into the
/// CAS: its `launch` and `build` SBOMs (returned) and its layers' (into `layers`; a layer SBOM
/// counts only for a layer the buildpack described in a `<layer>.toml`). Each counted file must
/// be a declared format of the Buildpack API; every read is confined (a symlink is an error).
fn read_sboms(
    root: &Root,
    bp_layers: &Path,
    entries: &[std::ffi::OsString],
    layers: &mut BTreeMap<String, LayerResult>,
    declared: &[String],
    bpname: &str,
    ctx: &RunCtx,
) -> Result<(SbomFiles, SbomFiles), ActionError> {
    use crate::cnb::sbom::{check, classify, SbomOwner, MAX_SBOM_BYTES};
    let (mut launch, mut build) = (SbomFiles::new(), SbomFiles::new());
    for f in entries.iter().filter_map(|f| f.to_str()) {
        let Some(c) = classify(f) else { continue };
        if let SbomOwner::Layer(l) = &c.owner {
            if !layers.contains_key(l) {
                continue;
            }
        }
        let file = bp_layers.join(f);
        let shown = Path::new("/layers").join(&file);
        check(&c, declared, bpname, &shown).map_err(|e| ActionError::of(&e))?;
        let bytes = root
            .read(&file, MAX_SBOM_BYTES)
            .map_err(|e| ActionError::of(&e).context(format!("reading `{}`", shown.display())))?;
        let d = ctx.cache.cas().put_bytes(&bytes).map_err(|e| ActionError::of(&e))?;
        let ext = c.ext.unwrap_or_default().to_string();
        match c.owner {
            SbomOwner::Launch => {
                launch.insert(ext, d);
            }
            SbomOwner::Build => {
                build.insert(ext, d);
            }
            SbomOwner::Layer(l) => {
                if let Some(x) = layers.get_mut(&l) {
                    x.sbom.insert(ext, d);
                }
            }
        }
    }
    Ok((launch, build))
}

/// The SBOM layer's entries (lifecycle: `<layers>/sbom/launch`): `layers/sbom/launch/<escaped-id>/
/// sbom.<ext>` for a buildpack's launch SBOM and `…/<escaped-id>/<layer>/sbom.<ext>` for each of
/// its launch layers', owned by the stack user like the other layers' files. `None` when no
/// buildpack wrote a launch SBOM: the image then has no SBOM layer (and keeps its digest).
fn sbom_layer_entries(
    results: &[BuildpackResult],
    uid: u32,
    gid: u32,
    cas: &crate::cas::BlobDir,
) -> Option<Vec<TarEntry>> {
    use crate::cnb::sbom::sbom_dir_path;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for b in results {
        let esc = escape_id(&b.id);
        for (ext, d) in &b.launch_sbom {
            files.push((sbom_dir_path(&esc, None, ext), cas.path(d)));
        }
        for (name, l) in b.layers.iter().filter(|(_, l)| l.types.launch) {
            for (ext, d) in &l.sbom {
                files.push((sbom_dir_path(&esc, Some(name), ext), cas.path(d)));
            }
        }
    }
    if files.is_empty() {
        return None;
    }
    let mut dirs = std::collections::BTreeSet::new();
    let mut entries = Vec::new();
    for (rel, src) in files {
        let path = format!("layers/sbom/launch/{rel}");
        let mut p = path.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            dirs.insert(p.to_string());
        }
        entries.push(TarEntry::file(path, src, 0o644).owned_by(uid, gid));
    }
    entries.extend(dirs.into_iter().map(|d| TarEntry::dir(d, 0o755).owned_by(uid, gid)));
    Some(entries)
}

/// Splits the app's tar entries into one list per slice (files matching any of its globs, relative
/// to the app dir, Go `filepath.Match` style: `*` stays within a directory; a matching directory
/// takes its whole tree), skipping files an earlier slice took, then the remainder. Empty slices
/// make no layer. Each list carries the directories its files need.
fn slice_entries(all: Vec<TarEntry>, slices: &[Vec<String>]) -> Result<Vec<Vec<TarEntry>>, ActionError> {
    use crate::oci::tar::EntryKind;
    let rel = |p: &str| p.strip_prefix("workspace/").map(String::from);
    let dirs: Vec<&TarEntry> = all.iter().filter(|e| matches!(e.kind, EntryKind::Dir)).collect();
    let with_dirs = |files: Vec<TarEntry>| -> Vec<TarEntry> {
        let mut out: Vec<TarEntry> = dirs
            .iter()
            .filter(|d| d.path == "workspace" || files.iter().any(|f| f.path.starts_with(&format!("{}/", d.path))))
            .map(|d| (*d).clone())
            .collect();
        out.extend(files);
        out
    };
    let mut claimed = std::collections::HashSet::new();
    let mut layers = Vec::new();
    for globs in slices {
        let mut b = globset::GlobSetBuilder::new();
        for g in globs {
            let g = g.trim_start_matches("./");
            b.add(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("slice glob `{g}`: {e}"))?,
            );
        }
        let set = b.build().map_err(|e| ActionError::of(&e))?;
        let matches = |r: &str| {
            // The file itself or any of its parent directories.
            let mut p = r.to_string();
            loop {
                if set.is_match(&p) {
                    return true;
                }
                match p.rfind('/') {
                    Some(i) => p.truncate(i),
                    None => return false,
                }
            }
        };
        let files: Vec<TarEntry> = all
            .iter()
            .filter(|e| !matches!(e.kind, EntryKind::Dir) && !claimed.contains(&e.path))
            .filter(|e| rel(&e.path).is_some_and(|r| matches(&r)))
            .cloned()
            .collect();
        if files.is_empty() {
            continue;
        }
        claimed.extend(files.iter().map(|f| f.path.clone()));
        layers.push(with_dirs(files));
    }
    let rest: Vec<TarEntry> =
        all.iter().filter(|e| !matches!(e.kind, EntryKind::Dir) && !claimed.contains(&e.path)).cloned().collect();
    let mut last = with_dirs(rest);
    // The remainder keeps every directory (empty ones too).
    for d in &dirs {
        if !last.iter().any(|e| e.path == d.path) {
            last.push((*d).clone());
        }
    }
    layers.push(last);
    Ok(layers)
}

pub async fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<ActionOutput, ActionError> {
    let ActionKind::CnbBuild { phase: p, detect } = &a.kind else { unreachable!() };
    let label = a.label.to_string();
    let det: DetectResult = match deps.get(detect).map(|o| o.as_ref()) {
        Some(ActionOutput::Data { json, .. }) => serde_json::from_str(json).map_err(|e| ActionError::of(&e))?,
        _ => return Err("internal: detect result missing".into()),
    };
    let view = common::phase_view(p, deps, ctx)?;
    let bps = group_buildpacks(&view, deps.get(detect).ok_or("internal: detect result missing")?)?;
    let (img, rootfs) = cnb_detect::build_image(p, deps, ctx).await?;
    let mut scratch = Scratch::new("build-")?;
    let (uid, gid) = (view.uid, view.gid);
    let (huid, hgid) = crate::execution::sandbox::host_ids(uid, gid);
    // The writable /workspace: this target's kept app dir brought up to date (held until the app
    // layer is written), or a fresh copy in the scratch dir.
    let (workspace, _app_dir, _) =
        common::materialize_app(&p.app, deps, ctx, &label, &scratch.workspace, huid, hgid, true)?;
    scratch.workspace = workspace;
    scratch.write_platform_env(&p.env)?;
    scratch.write_bindings(p, ctx, (huid, hgid))?;
    common::materialize_buildpacks(&bps, ctx, &scratch.cnb)?;
    let build_config = scratch.write_build_config(&view.build_config_env)?;
    let (base, target) = cnb_detect::base_env(&img, &rootfs, p, &view, deps, ctx)?;

    // Restore: per the Layer Types table, from the previous build of this target. Everything under
    // `/layers` is touched only through `layers_root` (crate::fs::confined): buildpacks write there.
    let layers_root = Root::open(&scratch.layers).map_err(|e| ActionError::of(&e))?;
    let skey = state_key(&label, &view.stack_id, &det.group);
    let mut prev = load_state(ctx, &label);
    if prev.is_empty() {
        prev = remote_state(ctx, &skey, &label, &det.group).await;
    }
    for m in &det.group {
        let esc = escape_id(&m.id);
        layers_root.create_dir_all(Path::new(&esc), 0o755).map_err(|e| ActionError::of(&e))?;
        let Some(pb) = prev.iter().find(|b| b.id == m.id) else { continue };
        for (name, l) in &pb.layers {
            // Names come from the state file of an earlier (hostile) build: one path component.
            if check_layer_name(name, &m.key(), Path::new(name)).is_err() {
                continue;
            }
            let toml_rel = Path::new(&esc).join(format!("{name}.toml"));
            let meta = crate::cnb::launch::json_to_toml(&l.data);
            match restore_action(l.types) {
                RestoreAction::MetadataAndContents => {
                    let Some(blob) = &l.cache_blob else { continue };
                    let f = ctx.cache.cas().open_blob(&blob.digest).map_err(|e| ActionError::of(&e))?;
                    crate::oci::extract::extract_layer(
                        f,
                        &blob.digest,
                        scratch.layers.parent().unwrap(),
                        // A buildpack wrote these files: no set-id bit (a set-uid binary of the
                        // build user left on the host) and nothing group/other-writable comes back.
                        &crate::oci::extract::ExtractOptions {
                            sanitize: true,
                            id_shift: crate::execution::sandbox::id_shift(),
                            ..Default::default()
                        },
                    )
                    .map_err(|e| format!("restoring cached layer `{name}` of `{}`: {e}", m.id))?;
                    layers_root
                        .write_file(&toml_rel, restored_layer_toml(&meta).as_bytes(), 0o644)
                        .map_err(|e| ActionError::of(&e))?;
                }
                RestoreAction::MetadataOnly => {
                    layers_root
                        .write_file(&toml_rel, restored_layer_toml(&meta).as_bytes(), 0o644)
                        .map_err(|e| ActionError::of(&e))?;
                }
                RestoreAction::Nothing => {}
            }
            // `<layer>.sbom.<ext>` of cached and launch layers come back (lifecycle
            // `RestoreToBuildpackLayers`, from the cache's and the previous image's SBOMs).
            if l.types.cache || l.types.launch {
                for (ext, d) in &l.sbom {
                    // Keys of a state file from elsewhere: only the Buildpack API's formats.
                    if crate::cnb::sbom::media_type(ext).is_none() {
                        continue;
                    }
                    let Ok(bytes) = ctx.cache.cas().read_verified(d) else { continue };
                    layers_root
                        .write_file(
                            &Path::new(&esc).join(crate::cnb::sbom::restored_file_name(name, ext)),
                            &bytes,
                            0o644,
                        )
                        .map_err(|e| ActionError::of(&e))?;
                }
            }
        }
        if let Some(store) = &pb.store {
            let st = StoreToml { metadata: crate::cnb::launch::json_to_toml(store) };
            layers_root
                .write_file(&Path::new(&esc).join("store.toml"), st.to_toml().as_bytes(), 0o644)
                .map_err(|e| ActionError::of(&e))?;
        }
    }
    layers_root.create_dir_all(Path::new(".cbuild"), 0o755).map_err(|e| ActionError::of(&e))?;
    layers_root.chown_tree(Path::new(""), huid, hgid).map_err(|e| ActionError::of(&e))?;

    let mut plan = det.plan.clone();
    let mut acc = base.clone();
    let mut launches: Vec<LaunchToml> = Vec::new();
    let mut results: Vec<BuildpackResult> = Vec::new();
    let mut dispositions: Vec<Vec<(String, LayerDisposition)>> = Vec::new();
    for m in &det.group {
        let bp = common::find(&bps, &BuildpackRef::new(&m.id, &m.version))
            .ok_or_else(|| format!("internal: `{}` not found", m.key()))?;
        let esc = escape_id(&m.id);
        let bp_layers = Path::new(&esc);
        let bp_plan = plan.buildpack_plan(&m.id);
        // An earlier buildpack of the group could have planted links here: the confined writes
        // refuse a symlinked directory and replace (never write through) a planted file.
        let plan_dir = Path::new(".cbuild").join(&esc);
        layers_root.create_dir_all(&plan_dir, 0o755).map_err(|e| ActionError::of(&e))?;
        layers_root
            .write_file(&plan_dir.join("plan.toml"), bp_plan.to_toml().as_bytes(), 0o644)
            .map_err(|e| ActionError::of(&e))?;
        layers_root.chown_tree(Path::new(".cbuild"), huid, hgid).map_err(|e| ActionError::of(&e))?;
        let plan_sb = format!("/layers/.cbuild/{esc}/plan.toml");
        let layers_sb = format!("/layers/{esc}");
        let mut vars = build_cnb_vars(&BuildVars {
            api: bp.desc.api,
            buildpack_dir: Path::new(&bp.sandbox_dir()),
            layers_dir: Path::new(&layers_sb),
            platform_dir: Path::new("/platform"),
            bp_plan_path: Path::new(&plan_sb),
            target: Some(&target),
            exec_env: None,
        });
        vars.extend(common::binding_vars(p));
        let env =
            buildpack_process_env(&acc, bp.desc.info.clear_env, &scratch.platform, build_config.as_deref(), &vars)
                .map_err(|e| ActionError::of(&e))?;
        let mut argv = vec![format!("{}/bin/build", bp.sandbox_dir())];
        argv.extend(build_args(Path::new(&layers_sb), Path::new("/platform"), Path::new(&plan_sb)));
        let code = common::run_buildpack(
            ctx,
            &label,
            "build",
            bp,
            &rootfs,
            scratch.mounts(true),
            &scratch.tmp,
            argv,
            env,
            uid,
            gid,
            p.network,
        )
        .await?;
        if code != 0 {
            return Err(ActionError::build(format!(
                "build: buildpack `{}` exited with status {code} (lifecycle exit 51)",
                bp.label()
            )));
        }
        // What the buildpack left in its layers dir.
        let bpname = bp.label();
        let mut layers = BTreeMap::new();
        let mut disp = Vec::new();
        // Every name and byte read here was written by the buildpack: confined reads, size limits,
        // and a symlink where a file or layer directory belongs is an error naming it.
        let sb = |rel: &Path| Path::new("/layers").join(rel);
        let read_toml = |rel: &Path| -> Result<Option<String>, ActionError> {
            layers_root
                .read_to_string_opt(rel, MAX_TOML_BYTES)
                .map_err(|e| ActionError::of(&e).context(format!("reading `{}`", sb(rel).display())))
        };
        let entries = layers_root.read_dir(bp_layers).map_err(|e| ActionError::of(&e))?;
        for f in entries.iter().filter_map(|f| f.to_str()) {
            let Some(name) = layer_name_of_file(f) else { continue };
            let file = bp_layers.join(f);
            let shown = sb(&file);
            check_layer_name(name, &bpname, &shown).map_err(|e| ActionError::of(&e))?;
            let text = read_toml(&file)?.ok_or_else(|| format!("reading `{}`: it vanished", shown.display()))?;
            let lt = parse_layer_toml(&text, &bpname, &shown).map_err(|e| ActionError::of(&e))?;
            let dir = bp_layers.join(name);
            let has_dir = match layers_root.meta(&dir).map_err(|e| ActionError::of(&e))? {
                Some(m) if m.kind == Kind::Dir => true,
                None => false,
                Some(_) => {
                    return Err(ActionError::build(format!(
                        "build: buildpack `{bpname}`: layer `{}` is not a directory (a symlink or file); \
                         cbuild does not follow it",
                        sb(&dir).display()
                    )))
                }
            };
            let d = layer_disposition(name, lt.types, has_dir, &bpname, &shown).map_err(|e| ActionError::of(&e))?;
            if d == LayerDisposition::Ignore {
                if has_dir {
                    let _ = layers_root.rename(&dir, &bp_layers.join(format!("{name}.ignore")));
                }
                continue;
            }
            if lt.types.build && has_dir {
                let fs = ConfinedEnvFs { root: &layers_root, mount: Path::new("/layers") };
                apply_build_layer_confined(&mut acc, &fs, &sb(&dir)).map_err(|e| ActionError::of(&e))?;
            }
            layers.insert(
                name.to_string(),
                LayerResult {
                    types: lt.types,
                    data: crate::cnb::launch::toml_to_json(&lt.metadata),
                    launch_blob: None,
                    cache_blob: None,
                    sbom: SbomFiles::new(),
                },
            );
            disp.push((name.to_string(), d));
        }
        let (launch_sbom, build_sbom) =
            read_sboms(&layers_root, bp_layers, &entries, &mut layers, &bp.desc.info.sbom_formats, &bpname, ctx)?;
        let launch = match read_toml(&bp_layers.join("launch.toml"))? {
            Some(t) => parse_launch_toml(&t, bp.desc.api, &bpname, &Path::new(&layers_sb).join("launch.toml"))
                .map_err(|e| ActionError::of(&e))?,
            None => LaunchToml::default(),
        };
        if let Some(t) = read_toml(&bp_layers.join("build.toml"))? {
            let bt = parse_build_toml(&t, &bpname, &Path::new(&layers_sb).join("build.toml"))
                .map_err(|e| ActionError::of(&e))?;
            plan = plan
                .after_build(&bp_plan, &bt.unmet, &bpname, &Path::new(&layers_sb).join("build.toml"))
                .map_err(|e| ActionError::of(&e))?;
        } else {
            plan =
                plan.after_build(&bp_plan, &[], &bpname, Path::new("build.toml")).map_err(|e| ActionError::of(&e))?;
        }
        let store = match read_toml(&bp_layers.join("store.toml"))? {
            Some(t) => Some(
                StoreToml::parse(&t, &bpname, &Path::new(&layers_sb).join("store.toml"))
                    .map_err(|e| ActionError::of(&e))?,
            ),
            None => None,
        };
        launches.push(launch);
        results.push(BuildpackResult {
            id: m.id.clone(),
            version: m.version.clone(),
            layers,
            store: store.map(|s| crate::cnb::launch::toml_to_json(&s.metadata)),
            launch_sbom,
            build_sbom,
        });
        dispositions.push(disp);
    }
    let metadata = merge_launch(&det.group, &launches, None);
    let metadata_toml = metadata.to_toml();
    let slices: Vec<Vec<String>> = metadata.slices.iter().map(|s| s.paths.clone()).collect();

    // Layers: tar + compress on the blocking pool.
    let ctx2 = ctx.clone();
    let layers_dir = scratch.layers.clone();
    let workspace = scratch.workspace.clone();
    let group = det.group.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<BuildResult, ActionError> {
        let mut results = results;
        let mut launch_layers = Vec::new();
        for (bi, (m, disp)) in group.iter().zip(&dispositions).enumerate() {
            let esc = escape_id(&m.id);
            for (name, d) in disp {
                let types = results[bi].layers[name].types;
                let dest = format!("layers/{esc}/{name}");
                let blob = match d {
                    LayerDisposition::Export => Some(super::layer::write_layer_cached(dir_entries(&layers_dir.join(&esc).join(name), &dest, uid, gid)?, Compression::Gzip, &ctx2)?),
                    LayerDisposition::ReusePrevious => {
                        let prev = load_state(&ctx2, &label);
                        let b = prev
                            .iter()
                            .find(|b| b.id == m.id)
                            .and_then(|b| b.layers.get(name))
                            .and_then(|l| l.launch_blob.clone())
                            .ok_or_else(|| format!("build: buildpack `{}`: launch layer `{name}` has no contents and the previous image has no such layer to reuse", m.key()))?;
                        Some(b.to_blob())
                    }
                    LayerDisposition::NotInImage if types.cache => Some(super::layer::write_layer_cached(dir_entries(&layers_dir.join(&esc).join(name), &dest, uid, gid)?, Compression::Gzip, &ctx2)?),
                    _ => None,
                };
                let l = results[bi].layers.get_mut(name).unwrap();
                if let Some(b) = &blob {
                    if types.launch {
                        l.launch_blob = Some(BlobRef::from_blob(b));
                        launch_layers.push((m.id.clone(), name.clone(), BlobRef::from_blob(b)));
                    }
                    if types.cache && *d != LayerDisposition::ReusePrevious {
                        l.cache_blob = Some(BlobRef::from_blob(b));
                    }
                }
            }
        }
        let sbom_layer = match sbom_layer_entries(&results, uid, gid, ctx2.cache.cas()) {
            Some(entries) => Some(BlobRef::from_blob(&super::layer::write_layer_cached(entries, Compression::Gzip, &ctx2)?)),
            None => None,
        };
        // One app layer (no slices): this build ran because the app changed, almost always, so
        // its tar is new; a slice is often the unchanged part (a vendored dir) and is looked up.
        let mut app_layers = Vec::new();
        let parts = slice_entries(dir_entries(&workspace, "workspace", uid, gid)?, &slices)?;
        let one = parts.len() == 1;
        for entries in parts {
            let blob = if one {
                super::layer::write_new_layer_cached(entries, Compression::Gzip, &ctx2)?
            } else {
                super::layer::write_layer_cached(entries, Compression::Gzip, &ctx2)?
            };
            app_layers.push(BlobRef::from_blob(&blob));
        }
        let cfg_dir = tempfile::Builder::new().prefix(&crate::cas::temp_prefix("cnb-")).tempdir_in(ctx2.cache.tmp_dir()).map_err(|e| ActionError::of(&e))?;
        std::fs::create_dir_all(cfg_dir.path().join("config")).map_err(|e| ActionError::of(&e))?;
        std::fs::write(cfg_dir.path().join("config/metadata.toml"), &metadata_toml).map_err(|e| ActionError::of(&e))?;
        common::set_mode(&cfg_dir.path().join("config/metadata.toml"), 0o644);
        common::set_mode(&cfg_dir.path().join("config"), 0o755);
        let config = super::layer::write_layer_cached(dir_entries(&cfg_dir.path().join("config"), "layers/config", uid, gid)?, Compression::Gzip, &ctx2)?;
        Ok(BuildResult {
            group,
            metadata_toml,
            buildpacks: std::mem::take(&mut results),
            launch_layers,
            app_layers,
            config_layer: BlobRef::from_blob(&config),
            sbom_layer,
        })
    })
    .await
    .map_err(|e| ActionError::of(&e))??;
    // The next build of this target restores from this one.
    let state = serde_json::to_vec(&out.buildpacks).map_err(|e| ActionError::of(&e))?;
    let sp = state_path(ctx, &a.label.to_string());
    let _ = crate::fs::write_atomic(&sp, &state);
    upload_state(ctx, &skey, &out.buildpacks);
    let blobs = out.blobs();
    Ok(ActionOutput::Data { json: serde_json::to_string(&out).map_err(|e| ActionError::of(&e))?, blobs })
}

/// The `build` action kind's [`Runner`](super::seam::Runner).
pub struct Build;

impl super::seam::Runner for Build {
    fn mnemonic(&self) -> &'static str {
        "build"
    }
    fn version(&self) -> u32 {
        3
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        let ActionKind::CnbBuild { phase: p, .. } = &a.kind else { return Vec::new() };
        super::seam::source_paths(p.app.iter().map(|(_, i)| i)).into_iter().map(|p| (p, false)).collect()
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
        Box::pin(run(a, deps, ctx))
    }
}
