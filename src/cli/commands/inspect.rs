//! `cbuild inspect LABEL`: an image target's digest, platform, config and layers (size, diff_id and
//! what made each), and the artifacts attached to it (SBOMs, provenance), building it first if
//! needed.

use std::process::ExitCode;

use clap::Args;

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::oci::Image;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The image target, e.g. //tools:tool.
    pub label: String,
}

pub fn run(g: &GlobalArgs, a: InspectArgs) -> Result<ExitCode, Failure> {
    let mut g2 = g.clone();
    g2.quiet = true;
    g2.json = false;
    let s = Settings::resolve(&g2)?;
    let built = super::session::build(s, std::slice::from_ref(&a.label), false)?;
    if !built.report.ok() {
        super::session::print_summary(&built);
        return Ok(crate::cli::output::report_exit_code(&built.report));
    }
    let Some((label, manifest, layout)) = built.images.first() else {
        return Err(Failure::user(format!("`{}` is not an image target", a.label)));
    };
    let top = manifest.clone();
    let manifest = &super::session::platform_image(&built, label, manifest)?;
    // A multi-platform target: the index and its platforms, then the chosen platform's image.
    let index = (top != *manifest)
        .then(|| crate::oci::Index::load(built.cache.cas(), &top).map(|i| i.platforms()))
        .transpose()
        .map_err(Failure::env)?;
    let img = Image::load(built.cache.cas(), manifest).map_err(Failure::env)?;
    let history: Vec<String> = crate::oci::image::history(img.config())
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .map(|h| h.created_by().clone().unwrap_or_default())
        .collect();
    let (os, arch) = img.platform();
    let config: serde_json::Value = serde_json::from_slice(img.config_bytes()).map_err(Failure::env)?;
    let layers: Vec<serde_json::Value> = img
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::json!({
                "digest": l.digest.to_string(), "diff_id": l.diff_id.to_string(), "size": l.size,
                "media_type": l.media_type, "created_by": history.get(i).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let attached = built.attachments.get(label).cloned().unwrap_or_default();
    let referrers = crate::attest::referrers_dir(layout);
    if g.json {
        let atts: Vec<serde_json::Value> = attached
            .iter()
            .map(|a| {
                serde_json::json!({"digest": a.digest.to_string(), "artifact_type": a.artifact_type, "title": a.title,
                    "size": a.document().len(), "annotations": a.annotations})
            })
            .collect();
        let v = serde_json::json!({
            "label": label, "digest": manifest.to_string(), "layout": layout, "os": os, "architecture": arch,
            "config_digest": img.config_digest().to_string(), "config": config["config"], "layers": layers,
            "referrers": {"layout": referrers, "artifacts": atts},
            "index": index.as_ref().map(|p| serde_json::json!({"digest": top.to_string(), "platforms": p})),
        });
        crate::outln!("{}", serde_json::to_string_pretty(&v).map_err(Failure::env)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!("{label}");
    if let Some(p) = &index {
        crate::outln!("  index:    {top} ({})", p.join(", "));
    }
    crate::outln!("  digest:   {manifest}");
    crate::outln!("  layout:   {layout}");
    crate::outln!("  platform: {os}/{arch}");
    crate::outln!("  config:   {}", img.config_digest());
    let c = &config["config"];
    for k in ["Entrypoint", "Cmd", "User", "WorkingDir", "Env", "ExposedPorts", "Labels"] {
        if !c[k].is_null() {
            crate::outln!("  {:<9} {}", format!("{}:", k.to_lowercase()), c[k]);
        }
    }
    crate::outln!("  layers:");
    let total: u64 = img.layers().iter().map(|l| l.size).sum();
    for (i, l) in img.layers().iter().enumerate() {
        crate::outln!("    {} {:>10}  {}", l.digest.short(), l.size, history.get(i).map(String::as_str).unwrap_or(""));
    }
    crate::outln!("    {:>23}  total", total);
    if !attached.is_empty() {
        crate::outln!("  attached (subject {}; layout {referrers}):", manifest.short());
        for a in &attached {
            crate::outln!("    {} {:>10}  {:<22} {}", a.digest.short(), a.document().len(), a.title, a.artifact_type);
        }
    }
    Ok(ExitCode::SUCCESS)
}
