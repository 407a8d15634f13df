//! `cbuild push LABEL... [--tag REF]` (and `cbuild build --push`): build image targets and push
//! them to their `tags` (or `--tag`): HEAD before upload, cross-repository mounts for base layers,
//! manifest last. A shallow base's layers are never downloaded when the registry has them. The
//! image's SBOMs and provenance follow as OCI referrers (the referrers API, else the tag-schema
//! fallback tag `sha256-<hex>`), once per repository.

use std::process::ExitCode;

use clap::Args;

use super::session::Built;
use crate::cli::output::Failure;
use crate::cli::settings::GlobalArgs;
use crate::cli::settings::Settings;
use crate::model::action::ActionOutput;
use crate::oci::Image;
use crate::registry::{Client, PushOptions, Reference};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Image targets to push.
    #[arg(required = true)]
    pub labels: Vec<String>,
    /// Push to this reference instead of the targets' `tags` (repeatable).
    #[arg(long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
}

pub fn run(g: &GlobalArgs, a: PushArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    // The same outputs as `cbuild build` (layouts in cbuild-out/), except that a shallow base's
    // layers are not downloaded for them: see `Layouts::LocalOnly`.
    let mut built = super::session::build_with(s, &a.labels, false, super::session::Layouts::LocalOnly)?;
    if !built.report.ok() {
        super::session::print_summary(&built);
        return Ok(crate::cli::output::report_exit_code(&built.report));
    }
    // Pushes are not actions: the summary reports them as `pushed`, apart from `executed`.
    built.pushed = push_built(&built, &a.tags)?;
    super::session::print_summary(&built);
    Ok(ExitCode::SUCCESS)
}

/// Pushes every requested image target of `b`; returns the number of pushes.
pub fn push_built(b: &Built, override_tags: &[String]) -> Result<usize, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Failure::env)?;
    let client = Client::new(b.registry.clone()).map_err(Failure::env)?;
    let mut n = 0;
    for (label, manifest, _) in &b.images {
        let l = crate::model::label::Label::parse(label, None).map_err(|e| Failure::user(e.to_string()))?;
        let tags: Vec<String> = if override_tags.is_empty() {
            b.graph.image_tags.get(&l).cloned().unwrap_or_default()
        } else {
            override_tags.to_vec()
        };
        if tags.is_empty() {
            return Err(Failure::user_hint(
                format!("`{label}` has no `tags` to push to"),
                "add tags = [\"registry.example.com/team/app:latest\"] to the target, or pass --tag REF",
            ));
        }
        let out = b.graph.target_outputs.get(&l).and_then(|id| b.report.outputs[*id].clone());
        // A multi-platform target pushes its index (every platform's image first).
        let index = match out.as_deref() {
            Some(ActionOutput::Index { .. }) => {
                Some(crate::oci::Index::load(b.cache.cas(), manifest).map_err(Failure::env)?)
            }
            _ => None,
        };
        let imgs: Vec<Image> = match &index {
            Some(i) => i.images.clone(),
            None => vec![Image::load(b.cache.cas(), manifest).map_err(Failure::env)?],
        };
        let sources: Vec<Reference> = {
            let mut v: Vec<Reference> = out
                .as_deref()
                .map(|o| o.remote_blobs())
                .unwrap_or_default()
                .iter()
                .filter_map(|r| Reference::parse(&r.source).ok())
                .collect();
            v.dedup_by(|a, b| a.to_string() == b.to_string());
            v
        };
        let mut digests: Vec<crate::model::digest::Digest> = Vec::new();
        for img in &imgs {
            digests.extend(img.layers().iter().map(|l| l.digest.clone()));
            digests.push(img.config_digest().clone());
        }
        let mut attached_to: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for t in &tags {
            let t = &match &b.stamp {
                Some(values) => crate::cli::stamp::expand(t, values, &format!("tag `{t}` of `{label}`"))?,
                None if !crate::cli::stamp::placeholders(t).is_empty() => {
                    return Err(Failure::user_hint(
                        format!("tag `{t}` of `{label}` has placeholders"),
                        "pass --stamp to fill them from the commit and `build.workspace_status`",
                    ))
                }
                None => t.clone(),
            };
            let r = Reference::parse(t).map_err(|e| Failure::user(format!("tag `{t}` of `{label}`: {e}")))?;
            // Blobs this cache pushed to other repositories of the same registry can be mounted.
            let mut sources = sources.clone();
            for repo in b.cache.blob_locations(r.registry(), &digests).unwrap_or_default() {
                if repo != r.repository() {
                    if let Ok(x) = Reference::parse(&format!("{}/{repo}", r.registry())) {
                        sources.push(x);
                    }
                }
            }
            let opts = PushOptions { source_repos: sources, ..Default::default() };
            let rep = rt
                .block_on(async {
                    match &index {
                        Some(i) => client.push_index(i, b.cache.cas(), &r, &opts).await,
                        None => client.push_image(&imgs[0], b.cache.cas(), &r, &opts).await,
                    }
                })
                .map_err(|e| Failure::of_in(format_args!("pushing `{label}` to `{t}`"), &e))?;
            n += 1;
            let _ = b.cache.record_blob_locations(r.registry(), r.repository(), &digests);
            if b.settings.json {
                crate::outln!(
                    "{}",
                    serde_json::json!({"type": "pushed", "label": label, "reference": t, "digest": rep.manifest_digest.to_string(),
                        "uploaded": rep.uploaded, "mounted": rep.mounted, "skipped_existing": rep.skipped_existing, "bytes_uploaded": rep.bytes_uploaded})
                );
            } else {
                eprintln!(
                    "pushed {label} to {t}@{}: {} uploaded ({} bytes), {} mounted, {} already there",
                    rep.manifest_digest, rep.uploaded, rep.bytes_uploaded, rep.mounted, rep.skipped_existing
                );
            }
            // SBOMs and provenance: once per repository (tags of one repository share referrers).
            let atts = b.attachments.get(label).map(Vec::as_slice).unwrap_or_default();
            if !atts.is_empty() && attached_to.insert(r.name()) {
                let arts = crate::cli::attach::artifacts(atts);
                let att = rt.block_on(client.push_referrers(&r, &rep.manifest_digest, &arts, b.cache.cas())).map_err(
                    |e| Failure::of_in(format_args!("attaching the SBOMs and provenance of `{label}` to `{t}`"), &e),
                )?;
                let (via, tag) = match &att.via {
                    crate::registry::referrers::ReferrersVia::Api => ("referrers-api", None),
                    crate::registry::referrers::ReferrersVia::TagSchema(tag) => ("tag-schema", Some(tag.clone())),
                };
                if b.settings.json {
                    let digests: Vec<String> = atts.iter().map(|a| a.digest.to_string()).collect();
                    crate::outln!(
                        "{}",
                        serde_json::json!({"type": "attached", "label": label, "repository": r.name(), "subject": rep.manifest_digest.to_string(),
                            "artifacts": digests, "via": via, "tag": tag})
                    );
                } else {
                    let how = match &tag {
                        Some(t) => format!("the tag-schema fallback `{}:{t}`", r.name()),
                        None => "the referrers API".to_string(),
                    };
                    let titles: Vec<&str> = atts.iter().map(|a| a.title.as_str()).collect();
                    eprintln!("attached {} to {}@{} through {how}", titles.join(", "), r.name(), rep.manifest_digest);
                }
            }
        }
    }
    Ok(n)
}
