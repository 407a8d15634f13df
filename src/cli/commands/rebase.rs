//! `cbuild rebase`: move app images onto a new run image without running a buildpack.
//!
//! * `cbuild rebase //...` (workspace targets): builds; a changed run image re-runs only each image's
//!   export, which is the rebase. Reports per image: rebased / already current / rebuilt / failed.
//! * `cbuild rebase IMAGE_REF --run-image REF` (any CNB image in a registry, built by cbuild or pack):
//!   manifest-only — reads configs and manifests, swaps the layers up to `runImage.topLayer`, pushes
//!   the new config and manifest (new base layers mounted); no app layer is downloaded.

use std::process::ExitCode;

use clap::Args;

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::execution::Outcome;
use crate::model::action::ActionKind;
use crate::model::reference::Reference;
use crate::registry::{Client, PushOptions};

#[derive(Args, Debug)]
pub struct RebaseArgs {
    /// Workspace image targets (//..., //services/api:image) or one registry image reference.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// The new run image (registry mode; default: the run image the image records, as `pack
    /// rebase` does).
    #[arg(long, value_name = "REF")]
    pub run_image: Option<String>,
    /// Where to push the rebased image (registry mode; default: the image's own reference).
    #[arg(long, value_name = "REF")]
    pub tag: Option<String>,
    /// Rebase even when a safety check refuses (each skipped check is printed as a warning).
    #[arg(long)]
    pub force: bool,
}

pub fn run(g: &GlobalArgs, a: RebaseArgs) -> Result<ExitCode, Failure> {
    if a.targets.iter().all(|t| t.starts_with("//") || t.starts_with(':')) {
        if a.run_image.is_some() {
            return Err(Failure::user_hint(
                "--run-image is for registry images",
                "for workspace targets, change the stack's run image and run `cbuild rebase //...`",
            ));
        }
        return workspace(g, a);
    }
    if a.targets.len() != 1 {
        return Err(Failure::user("registry mode rebases one image reference at a time"));
    }
    registry(g, &a.targets[0], a.run_image.as_deref(), a.tag.as_deref(), a.force)
}

/// The run image an app image records (`io.buildpacks.lifecycle.metadata` `runImage.image`, else
/// `io.buildpacks.stack.run-image`... as the lifecycle's rebaser reads it), for a rebase without
/// `--run-image`.
fn recorded_run_image(app: &crate::oci::Image) -> Option<String> {
    let labels = app.config().config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
    let md: serde_json::Value = serde_json::from_str(labels.get("io.buildpacks.lifecycle.metadata")?).ok()?;
    ["image", "reference"]
        .iter()
        .filter_map(|k| md["runImage"][k].as_str())
        .chain(md["stack"]["runImage"]["image"].as_str())
        .find(|s| !s.is_empty() && Reference::parse(s).is_ok())
        .map(String::from)
}

fn workspace(g: &GlobalArgs, a: RebaseArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let built = super::session::build(s, &a.targets, true)?;
    let mut rows = Vec::new();
    for (label, digest, _) in &built.images {
        // A multi-platform target has one build and one export per platform: the most telling
        // outcome among them (failed, then executed) speaks for the target.
        let outcome = |kind: &str| {
            let all: Vec<Outcome> = built
                .graph
                .actions
                .iter()
                .filter(|x| x.label.to_string() == *label && x.kind.mnemonic() == kind)
                .filter_map(|x| built.report.outcomes[x.id])
                .collect();
            [Outcome::Failed, Outcome::Executed].into_iter().find(|o| all.contains(o)).or_else(|| all.first().copied())
        };
        let is_cnb = built
            .graph
            .actions
            .iter()
            .any(|x| x.label.to_string() == *label && matches!(x.kind, ActionKind::CnbExport(_)));
        if !is_cnb {
            continue;
        }
        let state = match (outcome("build"), outcome("export")) {
            (_, Some(Outcome::Failed)) | (Some(Outcome::Failed), _) => "failed".to_string(),
            (Some(Outcome::Executed), _) => {
                "rebuilt (its sources or buildpacks changed, not only the run image)".to_string()
            }
            (_, Some(Outcome::Executed)) => "rebased".to_string(),
            (_, Some(_)) => "already current".to_string(),
            _ => "not built".to_string(),
        };
        rows.push((label.clone(), state, digest.to_string()));
    }
    for (l, st, d) in &rows {
        if built.settings.json {
            crate::outln!("{}", serde_json::json!({"type": "rebase", "label": l, "result": st, "image_digest": d}));
        } else {
            crate::outln!("{l}: {st} ({d})");
        }
    }
    for (id, e) in &built.report.errors {
        if let Some(a) = built.graph.actions.get(*id) {
            eprint!("{}", crate::cli::output::render_action_error(&format!("{}: refused/failed: ", a.label), e));
        } else {
            eprint!("{}", crate::cli::output::render_action_error("", e));
        }
    }
    Ok(crate::cli::output::report_exit_code(&built.report))
}

fn registry(
    g: &GlobalArgs,
    image: &str,
    run_image: Option<&str>,
    tag: Option<&str>,
    force: bool,
) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let cache = crate::cache::Cache::open(&s.cache_dir).map_err(Failure::env)?;
    let opts =
        crate::registry::ClientOptions { insecure: s.workspace.config.registry.insecure.clone(), ..Default::default() };
    let client = Client::new(opts).map_err(Failure::env)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Failure::env)?;
    let app_ref = Reference::parse(image).map_err(|e| Failure::user(e.to_string()))?;
    let target = match tag {
        Some(t) => Reference::parse(t).map_err(|e| Failure::user(e.to_string()))?,
        None => app_ref.clone(),
    };
    let app = rt.block_on(client.resolve(&app_ref, None)).map_err(|e| Failure::of(&e))?;
    if app.media_type == crate::oci::MEDIA_TYPE_INDEX || app.media_type == crate::oci::MEDIA_TYPE_DOCKER_MANIFEST_LIST {
        return registry_index(&s, &client, &rt, &cache, (&app_ref, &app), run_image, &target, force);
    }
    let (RunImage { name: run_image, resolved: run }, r) =
        rebase_onto(&client, &rt, &app.image, image, run_image, None, &format!("`{image}`"), "", force)?;
    if r.image.digest() == app.image.digest() {
        crate::outln!("{image}: already current ({})", app.image.digest());
        return Ok(ExitCode::SUCCESS);
    }
    let popts = PushOptions { source_repos: vec![run.reference.clone(), app.reference.clone()], ..Default::default() };
    let rep = rt
        .block_on(client.push_image(&r.image, cache.cas(), &target, &popts))
        .map_err(|e| Failure::of_in(format_args!("pushing the rebased image to `{target}`"), &e))?;
    if s.json {
        crate::outln!(
            "{}",
            serde_json::json!({"type": "rebase", "image": image, "result": "rebased", "old_digest": app.image.digest().to_string(), "new_digest": rep.manifest_digest.to_string(),
                "run_image": run.image.digest().to_string(), "uploaded": rep.uploaded, "mounted": rep.mounted, "bytes_uploaded": rep.bytes_uploaded})
        );
    } else {
        crate::outln!(
            "{image}: rebased onto {run_image} ({}): {} -> {} ({} blobs uploaded, {} bytes; {} mounted)",
            run.image.digest(),
            app.image.digest(),
            rep.manifest_digest,
            rep.uploaded,
            rep.bytes_uploaded,
            rep.mounted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Registry mode for a multi-platform image: each platform's image is rebased onto the run image's
/// image for the same platform (the run image must have every one), pushed by digest, then a new
/// index with the same platforms in the same order is pushed to the target.
#[allow(clippy::too_many_arguments)]
fn registry_index(
    s: &Settings,
    client: &Client,
    rt: &tokio::runtime::Runtime,
    cache: &crate::cache::Cache,
    (app_ref, app): (&Reference, &crate::registry::pull::Resolved),
    run_image: Option<&str>,
    target: &Reference,
    force: bool,
) -> Result<ExitCode, Failure> {
    let image = app_ref.to_string();
    let raw = rt.block_on(client.fetch_manifest(&app.reference)).map_err(|e| Failure::of(&e))?;
    let v: serde_json::Value = serde_json::from_slice(&raw.bytes)
        .map_err(|e| Failure::user(format!("`{image}`: the index is not JSON: {e}")))?;
    let mut rebased = Vec::new();
    let mut sources = Vec::new();
    let mut changed = false;
    for m in v["manifests"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (os, arch) =
            (m["platform"]["os"].as_str().unwrap_or(""), m["platform"]["architecture"].as_str().unwrap_or(""));
        if os.is_empty() || os == "unknown" {
            continue; // attestation manifests of BuildKit's indexes: not images of a platform
        }
        let arch = match m["platform"]["variant"].as_str() {
            Some(v) if !v.is_empty() => format!("{arch}/{v}"),
            _ => arch.to_string(),
        };
        let platform = format!("{os}/{arch}");
        let child = rt
            .block_on(client.resolve(app_ref, Some((os.to_string(), arch.clone()))))
            .map_err(|e| Failure::of_in(format_args!("reading the {platform} image of `{image}`"), &e))?;
        let plat = Some((os.to_string(), arch.clone()));
        let what = format!("the {platform} image of `{image}`");
        let (RunImage { resolved: run, .. }, r) =
            rebase_onto(client, rt, &child.image, &image, run_image, plat, &what, &format!("{platform}: "), force)?;
        changed |= r.image.digest() != child.image.digest();
        sources.push(run.reference.clone());
        rebased.push(r.image);
    }
    if !changed {
        crate::outln!("{image}: already current ({})", app.digest);
        return Ok(ExitCode::SUCCESS);
    }
    let index = crate::oci::Index::of(rebased).map_err(Failure::env)?;
    sources.push(app.reference.clone());
    let popts = PushOptions { source_repos: sources, ..Default::default() };
    let rep = rt
        .block_on(client.push_index(&index, cache.cas(), target, &popts))
        .map_err(|e| Failure::of_in(format_args!("pushing the rebased index to `{target}`"), &e))?;
    if s.json {
        crate::outln!(
            "{}",
            serde_json::json!({"type": "rebase", "image": image, "result": "rebased", "old_digest": app.digest.to_string(), "new_digest": rep.manifest_digest.to_string(),
                "platforms": index.platforms(), "uploaded": rep.uploaded, "mounted": rep.mounted, "bytes_uploaded": rep.bytes_uploaded})
        );
    } else {
        crate::outln!(
            "{image}: rebased {} ({}): {} -> {} ({} blobs uploaded, {} bytes; {} mounted)",
            index.platforms().join(", "),
            if run_image.is_some() { "onto the given run image" } else { "onto the recorded run images" },
            app.digest,
            rep.manifest_digest,
            rep.uploaded,
            rep.bytes_uploaded,
            rep.mounted
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The run image a registry rebase moved onto: its name and what it resolved to.
struct RunImage {
    name: String,
    resolved: crate::registry::pull::Resolved,
}

/// Rebases `app` onto `run_image` (else the run image it records), resolved for `platform` (default
/// the host's): what registry mode does for an image and for each image of an index. `what` names
/// the image in errors; `prefix` starts each warning and a refusal.
#[allow(clippy::too_many_arguments)]
fn rebase_onto(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    app: &crate::oci::Image,
    image: &str,
    run_image: Option<&str>,
    platform: Option<(String, String)>,
    what: &str,
    prefix: &str,
    force: bool,
) -> Result<(RunImage, crate::rebase::Rebased), Failure> {
    let explicit = run_image.is_some();
    let name = match run_image {
        Some(r) => r.to_string(),
        None => recorded_run_image(app).ok_or_else(|| {
            Failure::user_hint(
                format!("{what} records no run image reference to rebase onto"),
                "name one: --run-image registry.example.com/base/run:bookworm",
            )
        })?,
    };
    let run_ref = Reference::parse(&name).map_err(|e| Failure::user(e.to_string()))?;
    let run = rt.block_on(client.resolve(&run_ref, platform)).map_err(|e| match prefix {
        "" => Failure::of(&e),
        _ => Failure::of_in(format_args!("rebasing {what}"), &e),
    })?;
    let r = crate::rebase::rebase(app, image, &run.image, &name, run.image.digest(), explicit, force)
        .map_err(|e| Failure::Build { message: format!("{prefix}{e}") })?;
    for w in &r.warnings {
        eprintln!("warning: {prefix}{w}");
    }
    Ok((RunImage { name, resolved: run }, r))
}
