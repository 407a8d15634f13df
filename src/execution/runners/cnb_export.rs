//! The CNB export phase as one action: the app image = run image layers, launch layers, app layer,
//! launcher, config and process types, with the lifecycle's labels and env. It depends on the run
//! image and the build result only, so a new run image re-runs just this (a rebase) and yields the
//! same image as a build from scratch on it.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::cnb_build::{BlobRef, BuildResult};
use super::ctx::RunCtx;
use crate::cache::{ComponentValue, KeyBuilder};
use crate::cnb::launch::{
    image_env, BuildMetadata, BuildpackLayersLabel, LauncherGit, LauncherMetadata, LauncherSource, LayerLabel,
    LayerSha, LifecycleMetadata, RunImageLabel, StackLabel, StackRunImage, StoreLabel, LAUNCHER_PATH,
};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput};
use crate::oci::image::{append_layer, with_config, with_created, ConfigPatch, Image};
use crate::oci::layer::Compression;
use crate::oci::tar::TarEntry;

/// The static launcher built from `launcher/` by build.rs.
pub const LAUNCHER: &[u8] = include_bytes!(env!("CBUILD_LAUNCHER"));

/// Platform API the exported images declare (`CNB_PLATFORM_API`).
pub const PLATFORM_API: &str = "0.13";

fn launcher_digest() -> String {
    crate::model::digest::Blake3::of_bytes(LAUNCHER).to_string()
}

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::CnbExport(s) = &a.kind else { unreachable!() };
    let build = deps.get(&s.build).ok_or("internal: build result missing")?;
    let run = match deps.get(&s.run_image).map(|o| o.as_ref()) {
        Some(ActionOutput::Image { manifest, .. }) => manifest.to_string(),
        _ => return Err("internal: run image missing".into()),
    };
    let id = identity(s, deps)?;
    let mut kb = kb
        .component("build", export_view_digest(build)?)
        .component("run_image", run)
        .component("run_image_name", id.run_image_name.as_str())
        .component("run_image_mirrors", ComponentValue::list(id.mirrors.clone()))
        .component("stack_id", id.stack_id.as_str())
        .component("user", format!("{}:{}", id.uid, id.gid))
        .component("process", s.process.clone().unwrap_or_default())
        .component("labels", ComponentValue::map(s.labels.clone()))
        .component("launcher", launcher_digest())
        .component("created", super::image::created(None, ctx.source_date_epoch))
        // Images from before the SBOM layer and the `bom`-less build metadata label must not be
        // reused: this changes every export key once, without a kind version bump (which would
        // move the output fingerprint that pinned digests of non-CNB images are tied to).
        .component("outputs", "sbom-layer,build-metadata-without-bom");
    // Only when set, so keys of images without a project.toml are unchanged.
    if let Some(m) = &s.project_metadata {
        kb = kb.component("project_metadata", m.as_str());
    }
    Ok(kb)
}

/// Who the app image says it was built for: the stack's run image name and mirrors, stack id and
/// user, or a builder image's (its run.toml and config) when the export names one.
struct Identity {
    run_image_name: String,
    mirrors: Vec<String>,
    stack_id: String,
    uid: u32,
    gid: u32,
}

fn identity(
    s: &crate::model::action::CnbExportSpec,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
) -> Result<Identity, ActionError> {
    match s.builder {
        None => Ok(Identity {
            run_image_name: s.run_image_name.clone(),
            mirrors: s.run_image_mirrors.clone(),
            stack_id: s.stack_id.clone(),
            uid: s.uid,
            gid: s.gid,
        }),
        Some(b) => {
            let info: super::cnb_dist::BuilderInfo =
                super::cnb_dist::from_output(deps.get(&b).ok_or("internal: builder missing")?, "read_builder")?;
            let run = info.run_images.first().cloned().unwrap_or_default();
            Ok(Identity {
                run_image_name: run.image,
                mirrors: run.mirrors,
                stack_id: info.stack_id,
                uid: info.uid,
                gid: info.gid,
            })
        }
    }
}

/// The digest of what export reads of the build result: launch layers (blobs, types, metadata),
/// app and config layers, store metadata, metadata.toml — not cache-only layers, whose contents
/// and metadata (a cache counter, a lock file's checksum) never reach the image.
fn export_view_digest(build: &ActionOutput) -> Result<String, ActionError> {
    let mut b: BuildResult = match build {
        ActionOutput::Data { json, .. } => serde_json::from_str(json).map_err(|e| ActionError::of(&e))?,
        _ => return Err("internal: build result missing".into()),
    };
    for bp in &mut b.buildpacks {
        bp.layers.retain(|_, l| l.types.launch);
        for l in bp.layers.values_mut() {
            l.cache_blob = None;
        }
    }
    let json = serde_json::to_vec(&b).map_err(|e| ActionError::of(&e))?;
    Ok(format!("blake3:{}", crate::model::digest::Blake3::of_bytes(&json)))
}

pub fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<ActionOutput, ActionError> {
    let ActionKind::CnbExport(s) = &a.kind else { unreachable!() };
    let b: BuildResult = match deps.get(&s.build).map(|o| o.as_ref()) {
        Some(ActionOutput::Data { json, .. }) => serde_json::from_str(json).map_err(|e| ActionError::of(&e))?,
        _ => return Err("internal: build result missing".into()),
    };
    let run_manifest = match deps.get(&s.run_image).map(|o| o.as_ref()) {
        Some(ActionOutput::Image { manifest, .. }) => manifest.clone(),
        _ => return Err("internal: run image missing".into()),
    };
    let cas = ctx.cache.cas();
    let id = identity(s, deps)?;
    let run = Image::load(cas, &run_manifest).map_err(|e| ActionError::of(&e))?;
    let top_layer = run.diff_ids().last().map(|d| d.to_string()).unwrap_or_default();
    let metadata = BuildMetadata::from_toml(&b.metadata_toml, std::path::Path::new("metadata.toml"))
        .map_err(|e| ActionError::of(&e))?;

    let mut img = run.clone();
    let add =
        |img: &Image, blob: &BlobRef, by: &str| append_layer(img, &blob.to_blob(), by).map_err(|e| ActionError::of(&e));
    for (bp, name, blob) in &b.launch_layers {
        img = add(&img, blob, &format!("buildpack:{bp}:{name}"))?;
    }
    // The SBOM layer goes between the launch layers and the app (lifecycle exporter order).
    if let Some(sbom) = &b.sbom_layer {
        img = add(&img, sbom, "sbom")?;
    }
    for (i, l) in b.app_layers.iter().enumerate() {
        let by = if i + 1 == b.app_layers.len() {
            "application".to_string()
        } else {
            format!("application slice {}", i + 1)
        };
        img = add(&img, l, &by)?;
    }
    // Launcher: /cnb/lifecycle/launcher, root-owned like the lifecycle's.
    let lpath = ctx.cache.tmp_dir().join(format!("launcher-{}", launcher_digest()));
    if !lpath.is_file() {
        crate::fs::write_atomic(&lpath, LAUNCHER).map_err(|e| ActionError::of(&e))?;
    }
    let mut dirs = vec![TarEntry::dir("cnb", 0o755), TarEntry::dir("cnb/lifecycle", 0o755)];
    dirs.push(TarEntry::file("cnb/lifecycle/launcher", lpath, 0o755));
    let launcher = super::layer::write_layer_cached(dirs, Compression::Gzip, ctx)?;
    img = append_layer(&img, &launcher, "launcher").map_err(|e| ActionError::of(&e))?;
    img = add(&img, &b.config_layer, "config")?;
    let mut pt = vec![TarEntry::dir("cnb", 0o755), TarEntry::dir("cnb/process", 0o755)];
    for p in &metadata.processes {
        pt.push(TarEntry::symlink(format!("cnb/process/{}", p.r#type), LAUNCHER_PATH));
    }
    let ptl = super::layer::write_layer_cached(pt, Compression::Gzip, ctx)?;
    img = append_layer(&img, &ptl, "process-types").map_err(|e| ActionError::of(&e))?;

    // Labels (platform.md › Labels), canonical JSON.
    let buildpacks: Vec<BuildpackLayersLabel> = b
        .buildpacks
        .iter()
        .map(|bp| BuildpackLayersLabel {
            key: bp.id.clone(),
            version: bp.version.clone(),
            layers: bp
                .layers
                .iter()
                .filter(|(_, l)| l.types.launch)
                .map(|(n, l)| {
                    let sha = l.launch_blob.as_ref().map(|x| x.diff_id.to_string()).unwrap_or_default();
                    (n.clone(), LayerLabel::new(&sha, l.types, &crate::cnb::launch::json_to_toml(&l.data)))
                })
                .collect(),
            store: bp.store.as_ref().map(|m| StoreLabel { metadata: m.clone() }),
        })
        .collect();
    let lifecycle = LifecycleMetadata {
        app: b.app_layers.iter().map(|l| LayerSha { sha: l.diff_id.to_string() }).collect(),
        sbom: b.sbom_layer.as_ref().map(|l| LayerSha { sha: l.diff_id.to_string() }),
        buildpacks,
        config: LayerSha { sha: b.config_layer.diff_id.to_string() },
        launcher: LayerSha { sha: launcher.diff_id.to_string() },
        process_types: LayerSha { sha: ptl.diff_id.to_string() },
        run_image: RunImageLabel {
            top_layer,
            reference: run_manifest.to_string(),
            image: id.run_image_name.clone(),
            mirrors: id.mirrors.clone(),
        },
        stack: Some(StackLabel {
            run_image: StackRunImage { image: id.run_image_name.clone(), mirrors: id.mirrors.clone() },
        }),
    };
    let launcher_meta = LauncherMetadata {
        version: env!("CARGO_PKG_VERSION").to_string(),
        source: LauncherSource { git: LauncherGit { repository: "cbuild/launcher".into(), commit: String::new() } },
    };
    let mut labels: BTreeMap<String, String> = metadata.image_labels();
    labels.insert("io.buildpacks.lifecycle.metadata".into(), lifecycle.to_label());
    labels.insert("io.buildpacks.build.metadata".into(), metadata.build_label(&launcher_meta));
    labels.insert("io.buildpacks.project.metadata".into(), s.project_metadata.clone().unwrap_or_else(|| "{}".into()));
    if !id.stack_id.is_empty() {
        labels.insert("io.buildpacks.stack.id".into(), id.stack_id.clone());
    }
    labels.extend(s.labels.clone());

    let run_path = run
        .config()
        .config()
        .clone()
        .unwrap_or_default()
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH=").map(String::from));
    let env = image_env(run_path.as_deref(), "/layers", "/workspace", PLATFORM_API);
    let entrypoint = metadata.entrypoint(s.process.as_deref()).map_err(|e| ActionError::of(&e))?;
    let patch = ConfigPatch {
        entrypoint: Some(vec![entrypoint]),
        cmd: Some(Vec::new()),
        env,
        user: None,
        workdir: Some("/workspace".into()),
        labels,
        exposed_ports: Vec::new(),
    };
    img = with_config(&img, &patch).map_err(|e| ActionError::of(&e))?;
    img = with_created(&img, &super::image::created(None, ctx.source_date_epoch)).map_err(|e| ActionError::of(&e))?;
    let (manifest, size) = img.write_to(cas).map_err(|e| ActionError::of(&e))?;
    Ok(super::image::image_output(&img, manifest, size, super::image::remote_of(deps.get(&s.run_image).unwrap())))
}

/// The `export` action kind's [`Runner`](super::seam::Runner).
pub struct Export;

impl super::seam::Runner for Export {
    fn mnemonic(&self) -> &'static str {
        "export"
    }
    fn version(&self) -> u32 {
        2
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
