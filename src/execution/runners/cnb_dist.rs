//! What the distribution runners share: buildpack trees read out of image layers (a builder's
//! `/cnb/buildpacks/<id>/<version>/`, a buildpackage's layers) into the CAS, found through the
//! `io.buildpacks.buildpack.layers` label so only those layers are fetched and read, and the data
//! `read_builder` and `read_buildpackage` hand to the CNB phases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ctx::RunCtx;
use crate::cnb::buildpack_toml::{escape_id, BuildpackDescriptor, BuildpackRef, OrderGroup};
use crate::cnb::distribution::{DistError, LayersLabel, RunImage, BUILDPACK_LAYERS};
use crate::execution::ActionError;
use crate::model::action::{ActionOutput, OutFile};
use crate::model::digest::Digest;
use crate::oci::tree::{ImageTree, NodeKind};
use crate::oci::Image;

/// Largest single buildpack file read out of a layer.
const MAX_FILE: u64 = 4 << 30;

/// One buildpack read from an image: its tree (paths relative to its directory) in the CAS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuildpack {
    pub id: String,
    pub version: String,
    pub files: BTreeMap<String, OutFile>,
}

impl ImageBuildpack {
    /// The tree as a `buildpack` action would output it (same digest for the same files).
    pub fn as_output(&self) -> ActionOutput {
        ActionOutput::Files { files: self.files.clone() }
    }
}

/// What `read_buildpackage` outputs: the buildpack the package stands for and every tree in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackSet {
    pub top: BuildpackRef,
    pub buildpacks: Vec<ImageBuildpack>,
}

/// What `read_builder` outputs: a builder image as the lifecycle sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuilderInfo {
    /// The image as named in errors (reference or label).
    pub name: String,
    pub buildpacks: Vec<ImageBuildpack>,
    /// `/cnb/order.toml` (or the order labels).
    pub order: Vec<OrderGroup>,
    /// `/cnb/run.toml` (or `/cnb/stack.toml`, or the builder metadata label).
    pub run_images: Vec<RunImage>,
    pub stack_id: String,
    /// `CNB_USER_ID` / `CNB_GROUP_ID` of the image config.
    pub uid: u32,
    pub gid: u32,
    /// `/cnb/build-config/env/<file>` → contents (`[[build.env]]` of pack's builder.toml).
    pub build_env: BTreeMap<String, String>,
    /// `/cnb/system.toml`.
    pub system_pre: Vec<BuildpackRef>,
    pub system_post: Vec<BuildpackRef>,
}

/// Every CAS blob of some buildpack trees (kept by the cache with the action's result).
pub fn tree_blobs<'a>(bps: impl IntoIterator<Item = &'a ImageBuildpack>) -> Vec<Digest> {
    let mut v: Vec<Digest> = bps.into_iter().flat_map(|b| b.files.values().map(|f| f.digest.clone())).collect();
    v.sort();
    v.dedup();
    v
}

/// Reads a `Data` output of one of the distribution runners.
pub fn from_output<T: serde::de::DeserializeOwned>(o: &ActionOutput, what: &str) -> Result<T, ActionError> {
    match o {
        ActionOutput::Data { json, .. } => {
            serde_json::from_str(json).map_err(|e| ActionError::internal(format!("{what}: unreadable result: {e}")))
        }
        _ => Err(ActionError::internal(format!("{what}: not a data result"))),
    }
}

/// The labels of an image's config.
pub fn labels(img: &Image) -> BTreeMap<String, String> {
    img.config().config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default().into_iter().collect()
}

/// The config env of an image as a map.
pub fn env(img: &Image) -> BTreeMap<String, String> {
    img.config()
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// Where each buildpack of `label` lives: (id, version, layer blob digest), in label order. A
/// `layerDiffID` that is not a layer of the image is the label disagreeing with the layers.
pub fn layer_of_each(
    img: &Image,
    label: &LayersLabel,
    subject: &str,
) -> Result<Vec<(String, String, Digest)>, DistError> {
    let diff_ids: Vec<String> = img.diff_ids().iter().map(|d| d.to_string()).collect();
    let mut out = Vec::new();
    for (id, versions) in label {
        for (version, info) in versions {
            let i = diff_ids.iter().position(|d| *d == info.layer_diff_id).ok_or_else(|| {
                DistError::new(
                    subject,
                    BUILDPACK_LAYERS,
                    format!("{id}.{version}.layerDiffID"),
                    format!("`{}` is not a layer of the image", info.layer_diff_id),
                )
            })?;
            out.push((id.clone(), version.clone(), img.layers()[i].digest.clone()));
        }
    }
    Ok(out)
}

/// Reads the trees of `wanted` (id, version, layer) into the CAS: every file below
/// `cnb/buildpacks/<escaped id>/<version>/` of its layer (symlinks inside resolved to their file, as a
/// workspace buildpack's are), then checks that each tree's buildpack.toml is the buildpack the label
/// says. The layers must be local.
pub fn read_trees(
    ctx: &RunCtx,
    wanted: &[(String, String, Digest)],
    subject: &str,
) -> Result<Vec<ImageBuildpack>, ActionError> {
    let cas = ctx.cache.cas();
    let mut trees: BTreeMap<Digest, ImageTree> = BTreeMap::new();
    let mut out = Vec::new();
    for (id, version, layer) in wanted {
        if !trees.contains_key(layer) {
            let t = ImageTree::read(cas, std::slice::from_ref(layer)).map_err(|e| ActionError::of(&e))?;
            trees.insert(layer.clone(), t);
        }
        let tree = &trees[layer];
        let dir = format!("cnb/buildpacks/{}/{version}", escape_id(id));
        let mut files: Vec<(String, String, bool)> = Vec::new(); // (rel, path holding the bytes, +x)
        for (path, node) in tree.below(&dir) {
            let rel = path[dir.len() + 1..].to_string();
            // A layer's names are the image's: one relative path below the buildpack's directory.
            crate::oci::tar::check_entry_path(&rel).map_err(|why| {
                ActionError::of(&DistError::new(
                    subject,
                    &format!("/{path}"),
                    "",
                    format!("not a buildpack file: {why}"),
                ))
            })?;
            match &node.kind {
                NodeKind::File | NodeKind::Hardlink(_) => files.push((rel, path.to_string(), node.mode & 0o111 != 0)),
                NodeKind::Symlink(_) => {
                    if let Some((p, n)) = tree.resolve(path).filter(|(_, n)| n.kind == NodeKind::File) {
                        files.push((rel, p, n.mode & 0o111 != 0));
                    }
                }
                _ => {}
            }
        }
        let where_ = format!("{BUILDPACK_LAYERS}` → layer `{layer}");
        if !files.iter().any(|(r, _, _)| r == "buildpack.toml") {
            return Err(ActionError::of(&DistError::new(
                subject,
                &where_,
                format!("{id}.{version}"),
                format!("the layer has no `/{dir}/buildpack.toml`"),
            )));
        }
        let paths: Vec<String> = files.iter().map(|(_, p, _)| p.clone()).collect();
        let bytes = tree.contents(cas, &paths, MAX_FILE).map_err(|e| ActionError::of(&e))?;
        let mut tree_files = BTreeMap::new();
        for (rel, p, x) in files {
            let b = bytes.get(&p).map(Vec::as_slice).unwrap_or_default();
            let digest = cas.put_bytes(b).map_err(|e| ActionError::of(&e))?;
            tree_files.insert(rel, OutFile { digest, executable: x });
        }
        let toml_bytes = cas.read_verified(&tree_files["buildpack.toml"].digest).map_err(|e| ActionError::of(&e))?;
        let shown = format!("/{dir}/buildpack.toml");
        let text = String::from_utf8(toml_bytes)
            .map_err(|_| ActionError::of(&DistError::new(subject, &shown, "", "not UTF-8")))?;
        let desc = BuildpackDescriptor::parse(&text, std::path::Path::new(&shown))
            .map_err(|e| ActionError::of(&e).context(subject))?;
        if !crate::cnb::buildpack_toml::same_id(&desc.info.id, id) || desc.info.version != *version {
            return Err(ActionError::of(&DistError::new(
                subject,
                BUILDPACK_LAYERS,
                format!("{id}.{version}"),
                format!("its layer holds `{}` (`{shown}`): the label disagrees with the layers", desc.key()),
            )));
        }
        out.push(ImageBuildpack { id: id.clone(), version: version.clone(), files: tree_files });
    }
    Ok(out)
}

/// Checks every composite's own order among `bps` names buildpacks of `bps` (`label`'s file).
pub fn check_composites(ctx: &RunCtx, bps: &[ImageBuildpack], subject: &str) -> Result<(), ActionError> {
    let descs = descriptors(ctx, bps)?;
    let provided = |r: &BuildpackRef| {
        descs.iter().any(|d| {
            crate::cnb::buildpack_toml::same_id(&d.info.id, &r.id)
                && (r.version.is_empty() || d.info.version == r.version)
        })
    };
    for d in descs.iter().filter(|d| d.is_composite()) {
        let file = format!("/cnb/buildpacks/{}/{}/buildpack.toml", escape_id(&d.info.id), d.info.version);
        crate::cnb::distribution::check_order(subject, &file, &d.order, &provided).map_err(|e| ActionError::of(&e))?;
    }
    Ok(())
}

/// The parsed buildpack.toml of each tree.
pub fn descriptors(ctx: &RunCtx, bps: &[ImageBuildpack]) -> Result<Vec<BuildpackDescriptor>, ActionError> {
    bps.iter()
        .map(|b| {
            let f = b.files.get("buildpack.toml").ok_or("internal: a buildpack tree without buildpack.toml")?;
            let text = String::from_utf8(ctx.cache.cas().read_verified(&f.digest).map_err(|e| ActionError::of(&e))?)
                .map_err(|_| ActionError::internal("buildpack.toml is not UTF-8"))?;
            BuildpackDescriptor::parse(&text, std::path::Path::new("buildpack.toml")).map_err(|e| ActionError::of(&e))
        })
        .collect()
}

/// The buildpack trees of `ids` (workspace `buildpack` actions and read buildpackages), parsed,
/// deduplicated by id@version and sorted by it; plus the buildpack each buildpackage action stands
/// for.
#[allow(clippy::type_complexity)]
pub fn trees_of(
    ids: &[crate::model::action::ActionId],
    deps: &super::seam::Deps,
    ctx: &RunCtx,
) -> Result<
    (Vec<(BuildpackDescriptor, BTreeMap<String, OutFile>)>, BTreeMap<crate::model::action::ActionId, BuildpackRef>),
    ActionError,
> {
    let mut trees: Vec<BTreeMap<String, OutFile>> = Vec::new();
    let mut tops = BTreeMap::new();
    for id in ids {
        match deps.get(id).map(|o| o.as_ref()) {
            Some(ActionOutput::Files { files }) => trees.push(files.clone()),
            Some(o @ ActionOutput::Data { .. }) => {
                let set: BuildpackSet = from_output(o, "read_buildpackage")?;
                trees.extend(set.buildpacks.iter().map(|b| b.files.clone()));
                tops.insert(*id, set.top);
            }
            _ => return Err(ActionError::internal("a buildpack dependency has no tree")),
        }
    }
    let as_bps: Vec<ImageBuildpack> =
        trees.into_iter().map(|files| ImageBuildpack { id: String::new(), version: String::new(), files }).collect();
    let descs = descriptors(ctx, &as_bps)?;
    let mut out: Vec<(BuildpackDescriptor, BTreeMap<String, OutFile>)> = Vec::new();
    for (d, b) in descs.into_iter().zip(as_bps) {
        if !out.iter().any(|(o, _)| o.key() == d.key()) {
            out.push((d, b.files));
        }
    }
    out.sort_by(|a, b| (&a.0.info.id, &a.0.info.version).cmp(&(&b.0.info.id, &b.0.info.version)));
    // A workspace buildpack's order member is its own id@version.
    for id in ids {
        if let Some(ActionOutput::Files { files }) = deps.get(id).map(|o| o.as_ref()) {
            if let Some((d, _)) = out.iter().find(|(_, f)| f == files) {
                tops.insert(*id, BuildpackRef::new(&d.info.id, &d.info.version));
            }
        }
    }
    Ok((out, tops))
}

/// One buildpack's layer as pack writes it: `/cnb/buildpacks/<escaped id>/<version>/` with its
/// tree, directories 0755 and files 0755/0644, root-owned.
pub fn buildpack_layer(
    desc: &BuildpackDescriptor,
    files: &BTreeMap<String, OutFile>,
    ctx: &RunCtx,
) -> Result<crate::oci::layer::LayerBlob, ActionError> {
    use crate::oci::tar::TarEntry;
    let root = format!("cnb/buildpacks/{}/{}", escape_id(&desc.info.id), desc.info.version);
    let mut dirs: std::collections::BTreeSet<String> =
        ["cnb", "cnb/buildpacks", &format!("cnb/buildpacks/{}", escape_id(&desc.info.id)), &root]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut entries = Vec::new();
    for (rel, f) in files {
        let path = format!("{root}/{rel}");
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
        entries.push(TarEntry::file(path, ctx.cache.cas().path(&f.digest), if f.executable { 0o755 } else { 0o644 }));
    }
    entries.extend(dirs.into_iter().map(|d| TarEntry::dir(d, 0o755)));
    super::layer::write_layer_cached(entries, crate::oci::layer::Compression::Gzip, ctx)
}

/// A file with `bytes` as a layer entry (the bytes stored in the CAS first).
pub fn bytes_entry(
    path: &str,
    bytes: &[u8],
    mode: u32,
    ctx: &RunCtx,
) -> Result<crate::oci::tar::TarEntry, ActionError> {
    let d = ctx.cache.cas().put_bytes(bytes).map_err(|e| ActionError::of(&e))?;
    Ok(crate::oci::tar::TarEntry::file(path, ctx.cache.cas().path(&d), mode))
}
