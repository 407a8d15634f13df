//! `cbuild sbom //x:image -o DIR` and `cbuild sbom REGISTRY/REPO:TAG -o DIR`: writes an image's
//! SBOMs to a directory — the buildpacks' CNB SBOM files from its SBOM layer
//! (`DIR/layers/sbom/launch/<buildpack>/[<layer>/]sbom.<ext>`, the paths they have in the image,
//! as `pack sbom download` writes them), the documents attached to it (cbuild's `sbom.spdx.json`,
//! `sbom.cdx.json` and `provenance.intoto.json`, by their artifact titles) and, for a target built
//! here, the buildpacks' build SBOMs (`DIR/layers/sbom/build/...`, never in the image). From a
//! registry the attachments are found through the referrers API or the tag-schema fallback.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::model::action::{ActionKind, ActionOutput};
use crate::oci::Image;
use crate::registry::{Client, Reference};

#[derive(Args, Debug)]
pub struct SbomArgs {
    /// An image target (//services/api:image) or an image in a registry (registry/repo:tag).
    pub target: String,
    /// The directory to write the SBOM files to (created if missing; files are replaced).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
}

/// Largest SBOM file read from an image layer.
const MAX_FILE: u64 = crate::cnb::sbom::MAX_SBOM_BYTES;

pub fn run(g: &GlobalArgs, a: SbomArgs) -> Result<ExitCode, Failure> {
    if !(a.target.starts_with("//") || a.target.starts_with(':')) {
        return from_registry(g, &a);
    }
    let mut g2 = g.clone();
    g2.quiet = true;
    g2.json = false;
    let s = Settings::resolve(&g2)?;
    let built = super::session::build(s, std::slice::from_ref(&a.target), false)?;
    if !built.report.ok() {
        super::session::print_summary(&built);
        return Ok(crate::cli::output::report_exit_code(&built.report));
    }
    let Some((label, manifest, _)) = built.images.first() else {
        return Err(Failure::user(format!("`{}` is not an image target", a.target)));
    };
    let manifest = &super::session::platform_image(&built, label, manifest)?;
    let img = Image::load(built.cache.cas(), manifest).map_err(Failure::env)?;
    let mut files = cnb_sbom_files(&img, built.cache.cas())?;
    // Build SBOMs: in the build result of this target's `build` action, never in the image.
    for act in built.graph.actions.iter().filter(|x| x.label.to_string() == *label) {
        let ActionKind::CnbBuild { .. } = act.kind else { continue };
        let Some(ActionOutput::Data { json, .. }) = built.report.outputs[act.id].as_deref() else { continue };
        let r: crate::execution::runners::cnb_build::BuildResult = serde_json::from_str(json).map_err(Failure::env)?;
        for b in &r.buildpacks {
            let esc = crate::cnb::buildpack_toml::escape_id(&b.id);
            for (ext, d) in &b.build_sbom {
                let bytes = built.cache.cas().read_verified(d).map_err(Failure::env)?;
                files.push((format!("layers/sbom/build/{}", crate::cnb::sbom::sbom_dir_path(&esc, None, ext)), bytes));
            }
            for (name, l) in b.layers.iter().filter(|(_, l)| !l.types.launch) {
                for (ext, d) in &l.sbom {
                    let bytes = built.cache.cas().read_verified(d).map_err(Failure::env)?;
                    let rel = crate::cnb::sbom::sbom_dir_path(&esc, Some(name), ext);
                    files.push((format!("layers/sbom/build/{rel}"), bytes));
                }
            }
        }
    }
    for att in built.attachments.get(label).into_iter().flatten() {
        files.push((att.title.clone(), att.document().to_vec()));
    }
    let written = write_files(&a.output, &files)?;
    print_written(g, label, &a.output, &written);
    Ok(ExitCode::SUCCESS)
}

/// `cbuild sbom REF`: the image's SBOM layer and its attached documents, from the registry.
fn from_registry(g: &GlobalArgs, a: &SbomArgs) -> Result<ExitCode, Failure> {
    let r = Reference::parse(&a.target).map_err(|e| {
        Failure::user_hint(e.to_string(), "name an image target (//pkg:name) or a registry image (registry/repo:tag)")
    })?;
    // Registry settings come from the workspace when there is one (plain-HTTP registries).
    let opts = match Settings::resolve(g) {
        Ok(s) => crate::registry::ClientOptions {
            insecure: s.workspace.config.registry.insecure.clone(),
            ..Default::default()
        },
        Err(_) => Default::default(),
    };
    let client = Client::new(opts).map_err(Failure::env)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Failure::env)?;
    let tmp = tempfile::tempdir().map_err(Failure::env)?;
    let blobs = crate::cas::BlobDir::open(tmp.path()).map_err(Failure::env)?;
    let resolved = rt.block_on(client.resolve(&r, None)).map_err(|e| Failure::of(&e))?;
    let subject = resolved.image.digest().clone();
    let mut files = Vec::new();
    if let Some(l) = sbom_layer(&resolved.image) {
        rt.block_on(client.fetch_blob(&r, &l.digest, &blobs)).map_err(|e| Failure::of(&e))?;
        files = cnb_sbom_files(&resolved.image, &blobs)?;
    }
    let (referrers, via) = rt.block_on(client.referrers(&r, &subject)).map_err(|e| Failure::of(&e))?;
    for d in &referrers {
        let Some(digest) = d["digest"].as_str().and_then(|x| crate::model::digest::Digest::parse(x).ok()) else {
            continue;
        };
        let raw = rt.block_on(client.fetch_manifest(&r.with_digest(digest.clone()))).map_err(|e| Failure::of(&e))?;
        let m: serde_json::Value = serde_json::from_slice(&raw.bytes)
            .map_err(|e| Failure::env(anyhow::anyhow!("artifact `{digest}` of `{r}`: {e}")))?;
        // Only artifacts that really refer to this image.
        if m["subject"]["digest"].as_str() != Some(subject.to_string().as_str()) {
            continue;
        }
        for l in m["layers"].as_array().into_iter().flatten() {
            let title = l["annotations"][crate::attest::artifact::ANNOTATION_TITLE].as_str().unwrap_or_default();
            let Some(ld) = l["digest"].as_str().and_then(|x| crate::model::digest::Digest::parse(x).ok()) else {
                continue;
            };
            // A title is one file name (a registry's answer: never a path out of DIR).
            if title.is_empty() || title.contains('/') || crate::oci::tar::check_entry_path(title).is_err() {
                continue;
            }
            rt.block_on(client.fetch_blob(&r, &ld, &blobs)).map_err(|e| Failure::of(&e))?;
            let bytes = blobs.read_verified(&ld).map_err(Failure::env)?;
            files.retain(|(p, _)| p != title);
            files.push((title.to_string(), bytes));
        }
    }
    let written = write_files(&a.output, &files)?;
    if !g.json && !g.quiet {
        let via = match via {
            crate::registry::referrers::ReferrersVia::Api => "the referrers API".to_string(),
            crate::registry::referrers::ReferrersVia::TagSchema(t) => format!("the tag-schema fallback (tag `{t}`)"),
        };
        eprintln!("{r}@{subject}: {} referrers found through {via}", referrers.len());
    }
    print_written(g, &format!("{r}@{subject}"), &a.output, &written);
    Ok(ExitCode::SUCCESS)
}

/// The CNB SBOM files of an image: the regular files below `layers/sbom/` of its SBOM layer (the
/// layer `io.buildpacks.lifecycle.metadata` names in `sbom`), as (image path, bytes). None when
/// the image has no SBOM layer. The layer is read, never extracted; a path that is not a plain
/// relative path is refused.
pub fn cnb_sbom_files(img: &Image, cas: &crate::cas::BlobDir) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let Some(layer) = sbom_layer(img) else { return Ok(Vec::new()) };
    let tree = crate::oci::tree::ImageTree::read(cas, std::slice::from_ref(&layer.digest)).map_err(Failure::env)?;
    let paths: Vec<String> = tree
        .below("layers/sbom")
        .filter(|(_, n)| n.kind == crate::oci::tree::NodeKind::File)
        .map(|(p, _)| p.to_string())
        .collect();
    let contents = tree.contents(cas, &paths, MAX_FILE).map_err(Failure::env)?;
    let mut out = Vec::new();
    for (p, bytes) in contents {
        crate::oci::tar::check_entry_path(&p)
            .map_err(|why| Failure::user(format!("the SBOM layer of `{}` has a file `{p}`: {why}", img.digest())))?;
        out.push((p, bytes));
    }
    Ok(out)
}

/// The SBOM layer of a CNB image: the layer whose diff_id `io.buildpacks.lifecycle.metadata`
/// records as `sbom.sha`.
pub fn sbom_layer(img: &Image) -> Option<crate::oci::layer::LayerBlob> {
    let labels = img.config().config().as_ref()?.labels().as_ref()?;
    let md = crate::cnb::launch::LifecycleMetadata::from_label(labels.get("io.buildpacks.lifecycle.metadata")?).ok()?;
    let sha = md.sbom?.sha;
    img.layers().iter().find(|l| l.diff_id.to_string() == sha).cloned()
}

/// Writes `files` (relative paths, checked) below `dir`; returns the paths written.
pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Vec<String>, Failure> {
    let mut written = Vec::new();
    for (rel, bytes) in files {
        crate::oci::tar::check_entry_path(rel).map_err(|why| Failure::user(format!("SBOM file `{rel}`: {why}")))?;
        let path = dir.join(rel);
        crate::fs::write_atomic(&path, bytes)
            .map_err(|e| Failure::env(anyhow::anyhow!("writing `{}`: {e}", path.display())))?;
        written.push(rel.clone());
    }
    written.sort();
    Ok(written)
}

fn print_written(g: &GlobalArgs, subject: &str, dir: &Path, written: &[String]) {
    if g.json {
        crate::outln!("{}", serde_json::json!({"type": "sbom", "subject": subject, "dir": dir, "files": written}));
        return;
    }
    if written.is_empty() {
        eprintln!("{subject}: no SBOM files (no buildpack wrote one)");
    }
    for f in written {
        crate::outln!("{}", dir.join(f).display());
    }
}
