//! The build session every command goes through: load, analyse, execute, write each requested
//! image target's OCI layout to `cbuild-out/`, and print the summary. `build`, `push`, `run`,
//! `export`, `inspect` and `rebase` are thin layers over [`build`]/[`build_with`]; `build --push`
//! and `push` share [`push_built`](super::push::push_built) on top of it.

use std::sync::Arc;

use crate::analysis;
use crate::cache::Cache;
use crate::cli::output::{render_action_error, Failure};
use crate::cli::settings::Settings;
use crate::execution::{self, BuildReport, ExecConfig, Reporter};
use crate::model::action::{ActionGraph, ActionOutput};

/// Result of a build, for the summary and for other commands (run, push, export).
pub struct Built {
    pub settings: Settings,
    pub graph: ActionGraph,
    pub report: BuildReport,
    pub cache: Arc<Cache>,
    /// (label, image manifest digest, layout path relative to the workspace). The layout is
    /// written unless the label is in `no_layout`.
    pub images: Vec<(String, crate::model::digest::Digest, String)>,
    /// Labels of `images` whose layout was not written ([`Layouts::LocalOnly`] with remote base
    /// layers): the summary shows no layout for them.
    pub no_layout: Vec<String>,
    /// Image pushes done (one per image and tag), reported apart from executed actions.
    pub pushed: usize,
    /// With `--stamp`: the placeholder values (tags are filled from them when pushed).
    pub stamp: Option<std::collections::BTreeMap<String, String>>,
    pub registry: crate::registry::ClientOptions,
    /// Per image label: cbuild's SBOMs and provenance attached to it (OCI artifacts, `subject` =
    /// the image), also in `cbuild-out/<package>/<name>.referrers/` when its layout is written.
    pub attachments: std::collections::BTreeMap<String, Vec<crate::attest::Attachment>>,
    /// The targets the patterns named (test targets replaced by what they test), sorted.
    pub requested: Vec<crate::model::label::Label>,
}

/// Which OCI layouts [`build_with`] writes to `cbuild-out/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layouts {
    /// Every requested image target's layout, fetching a shallow `oci_pull` base's layers first
    /// (`cbuild build`, `build --push`, `run`, `export`, ...).
    All,
    /// `cbuild push`: the layout of every requested image target whose blobs are all local
    /// already, and none for an image whose (shallow `oci_pull`) base layers are still only in a
    /// registry: those are never downloaded for a push.
    ///
    /// Why not fetch them to write the layout anyway: `docker push` and `crane copy` move images
    /// registry to registry without pulling the base, and the push itself needs only a mount; a
    /// push of an app on a 500 MB base must not cost 500 MB of downloads to write a local copy
    /// nobody asked for. And why not print a path that was not written: the summary line and the
    /// JSON `layout` must name a directory that holds exactly the pushed image. So such an image
    /// gets `layout: null` (`-` in the plain summary) and a one-line note saying how to get the
    /// layout (`cbuild build`); an older layout left at that path for another image loses its
    /// `index.json`, so no tool mistakes it for this one.
    LocalOnly,
    /// Nothing is written to `cbuild-out/` (no layout, no referrers): `cbuild verify`'s rebuild in a
    /// temporary cache, whose images live only in that cache.
    None,
}

/// SOURCE_DATE_EPOCH if set (reproducible-builds.org), else 1980-01-01T00:00:01Z like CNB.
pub fn source_date_epoch() -> Result<u64, Failure> {
    match crate::env::var(crate::env::SOURCE_DATE_EPOCH) {
        Some(v) => v.parse().map_err(|_| Failure::user(format!("SOURCE_DATE_EPOCH `{v}` is not a number of seconds"))),
        None => Ok(315_532_801),
    }
}

/// Loads, analyses and executes `patterns`; writes layouts. Build failures are in the report.
pub fn build(s: Settings, patterns: &[String], keep_going: bool) -> Result<Built, Failure> {
    build_with(s, patterns, keep_going, Layouts::All)
}

/// What a session does with the `image_test` targets among the requested ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tests {
    /// Build what they test, run nothing (`cbuild build //...`, as `bazel build` builds tests
    /// without running them).
    Build,
    /// Run them, and only them with what they need (`cbuild test`); `retries` and `force`
    /// (`--no-cache-results`) as in [`TestSpec`](crate::model::test_spec::TestSpec).
    Run { retries: u32, force: bool },
}

/// [`build`], choosing which layouts are written (see [`Layouts`]).
pub fn build_with(s: Settings, patterns: &[String], keep_going: bool, layouts: Layouts) -> Result<Built, Failure> {
    build_session(s, patterns, keep_going, layouts, Tests::Build)
}

/// The session: [`build_with`], with what to do with test targets.
pub fn build_session(
    s: Settings,
    patterns: &[String],
    keep_going: bool,
    layouts: Layouts,
    tests: Tests,
) -> Result<Built, Failure> {
    let pats = super::parse_patterns(&s, patterns)?;
    let loaded = super::load(&s, &pats)?;
    let is_test = |l: &crate::model::label::Label| {
        loaded.graph.get(l).is_some_and(|n| n.kind == "image_test" || n.kind == "integration_test")
    };
    let mut requested: Vec<_> = match tests {
        Tests::Build => loaded
            .requested
            .iter()
            .flat_map(|l| if is_test(l) { loaded.graph.direct_deps(l) } else { vec![l.clone()] })
            .collect(),
        Tests::Run { .. } => loaded.requested.iter().filter(|l| is_test(l)).cloned().collect(),
    };
    requested.sort();
    requested.dedup();
    let mut graph = analysis::analyze(&loaded.graph, &requested, &s.analysis_options()).map_err(Failure::Load)?;
    // What is read of the loaded graph after the build is taken now, and the graph dropped: it
    // holds every target's attributes (a `srcs` value per file, ≈ 8 MB at 100,000 files), which
    // the build never reads (issue 23, peak RSS).
    let package_files = crate::cli::attach::package_files(&loaded);
    let declared_labels: std::collections::BTreeMap<_, _> = graph
        .image_targets
        .iter()
        .filter(|l| s.inputs.stamp && requested.contains(l))
        .filter_map(|l| Some((l.clone(), crate::analysis::string_map(loaded.graph.get(l)?.attr("labels")))))
        .collect();
    drop(loaded);
    if let Tests::Run { retries, force } = tests {
        for a in &mut graph.actions {
            if let crate::model::action::ActionKind::ImageTest { spec, .. } = &mut a.kind {
                spec.retries = retries;
                spec.force = force;
            }
        }
    }
    let cache = Arc::new(Cache::open(&s.cache_dir).map_err(|e| Failure::Environment {
        error: e.into(),
        hints: vec![format!("check that `{}` is writable, or pass --cache-dir", s.cache_dir.display())],
    })?);
    let reporter: Arc<dyn Reporter> = Arc::from(super::super::progress::Tee::wrap(
        super::super::progress::reporter(s.json, s.quiet),
        &s.root().join("cbuild-out/logs/build.log"),
    ));
    for (l, kind) in &graph.not_buildable {
        reporter.event(&execution::Event::Warning {
            message: format!("`{l}` is a `{kind}` target; this version of cbuild declares `{kind}` but cannot build it yet, so it is skipped"),
        });
    }
    print_notes(&s, &pats, &graph.notes);
    for w in cache.warnings() {
        reporter.event(&execution::Event::Warning { message: w.clone() });
    }
    use crate::model::action::ActionKind;
    // Service bindings named in BUILD files are checked before anything runs (a missing or
    // misplaced one is a workspace error, exit 2, with nothing built).
    for a in &graph.actions {
        if let ActionKind::CnbDetect(p) = &a.kind {
            for (name, dir) in &p.bindings {
                crate::execution::runners::cnb_bindings::check(name, std::path::Path::new(dir), s.root())
                    .map_err(|e| Failure::from(e.context(format_args!("`{}`", a.label))))?;
            }
        }
    }
    // Whether bubblewrap can make a sandbox is asked only when a sandboxed action fails
    // (`scheduler::run_local`), so a build whose sandboxes work starts no extra bwrap.
    let registry =
        crate::registry::ClientOptions { insecure: s.workspace.config.registry.insecure.clone(), ..Default::default() };
    let remote = match &s.remote_cache {
        None => None,
        Some(url) => {
            let mut r = crate::remote::RemoteCache::new(
                url,
                s.remote_mode,
                crate::remote::RemoteAuth::from_env()
                    .map_err(|e| Failure::user(format!("remote cache credentials: {e}")))?,
                s.remote_timeouts,
            )
            .map_err(|e| Failure::user(format!("remote cache: {e}")))?
            .with_options(s.remote_instance_name.as_deref(), &s.remote_headers.0)
            .map_err(|e| Failure::user(format!("remote cache: {e}")))?
            .with_trusted_keys(s.remote_trusted_keys.clone());
            // Signing key (uploads) and trust (reads): see RELIABILITY.md, "Remote cache trust".
            if let Some(path) = &s.remote_signing_key {
                let key = crate::remote::SigningKey::from_file(path)
                    .map_err(|e| Failure::user(format!("{}: {e}", crate::remote::SIGNING_KEY_ENV)))?;
                r = r.with_signing_key(key);
            }
            if let Some(note) = r.read_only_reason().filter(|_| !s.quiet) {
                eprintln!("note: {note}");
            }
            Some(Arc::new(r))
        }
    };
    let executor = match &s.remote_executor {
        None => None,
        Some(url) => Some(Arc::new(remote_executor(&s, url)?)),
    };
    let cfg = ExecConfig {
        lazy: s.remote_lazy && remote.is_some(),
        remote,
        executor,
        root: s.root().to_path_buf(),
        jobs: s.jobs,
        keep_going,
        source_date_epoch: source_date_epoch()?,
        registry: registry.clone(),
        debian_archive: s.workspace.config.debian.archive.clone(),
        build_id: format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
        ),
    };
    let lazy = cfg.lazy;
    let mut report = execution::execute(&mut graph, cache.clone(), cfg.clone(), reporter.clone());
    // Lazy remote hits: the bytes the requested outputs need (their layouts, pushes, runs) and
    // the buildpacks' SBOM files the attestations read; intermediate outputs stay on the server.
    if lazy && !report.lazy.failed() && !report.lazy.unfetched().is_empty() {
        let mut ids: Vec<usize> = requested.iter().filter_map(|l| graph.target_outputs.get(l).copied()).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = ids.clone();
        while let Some(id) = todo.pop() {
            if seen.insert(id) {
                todo.extend(graph.actions[id].deps.iter().copied());
                if matches!(graph.actions[id].kind, ActionKind::CnbBuild { .. }) {
                    ids.push(id);
                }
            }
        }
        let _ = report.lazy.ensure_blocking(&ids, &cache);
    }
    // A blob a lazy hit left on the server turned out damaged or gone: never used, and the build
    // runs again downloading hits whole (those blobs' actions then miss and run locally).
    if lazy && report.lazy.failed() {
        reporter.event(&execution::Event::Warning {
            message: "a remote-cache blob needed later could not be downloaded; building again without lazy downloads"
                .into(),
        });
        let mut again = cfg;
        again.lazy = false;
        report = execution::execute(&mut graph, cache.clone(), again, reporter.clone());
    }
    drop(reporter);
    let mut images = Vec::new();
    let wanted: Vec<Arc<ActionOutput>> = graph
        .image_targets
        .iter()
        .filter(|l| requested.contains(l))
        .filter_map(|l| report.outputs[graph.target_outputs[l]].clone())
        .collect();
    if layouts == Layouts::All {
        execution::fetch_remote_layers(&wanted, cache.clone(), registry.clone())
            .map_err(|e| Failure::from(e.context("fetching base image layers")))?;
    }
    let mut no_layout = Vec::new();
    let attester = crate::cli::attach::Attester {
        root: s.root(),
        graph: &graph,
        report: &report,
        cache: &cache,
        package_files: &package_files,
        source_date_epoch: source_date_epoch()?,
    };
    let mut attachments = std::collections::BTreeMap::new();
    let stamp = match s.inputs.stamp {
        true => Some(crate::cli::stamp::values(
            s.root(),
            s.workspace.config.build.workspace_status.as_deref(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        )?),
        false => None,
    };
    for l in &graph.image_targets {
        if !requested.contains(l) {
            continue;
        }
        let id = graph.target_outputs[l];
        if let Some(ActionOutput::Index { index, images: members, .. }) = report.outputs[id].as_deref() {
            // A multi-platform target: its layout holds the index and every platform's image.
            // Stamps and attestations are per image; they are not made for an index (yet).
            let rel = layout_dir(l);
            let local = members.iter().all(|m| m.remote_blobs().iter().all(|r| cache.cas().contains(&r.digest)));
            if layouts == Layouts::None || (layouts == Layouts::LocalOnly && !local) {
                if layouts == Layouts::LocalOnly && !s.quiet {
                    eprintln!("note: the layout of `{l}` is not written: its base layers are still in a registry (`cbuild build {l}` writes it)");
                }
                no_layout.push(l.to_string());
                images.push((l.to_string(), index.clone(), rel));
                continue;
            }
            let idx = crate::oci::Index::load(cache.cas(), index).map_err(|e| {
                Failure::env(anyhow::anyhow!("reading the image index of `{l}`: {}", execution::chain(&e)))
            })?;
            let dir = s.root().join(&rel);
            crate::oci::write_index_layout(&dir, &idx, cache.cas(), Some("latest")).map_err(|e| {
                Failure::env(anyhow::anyhow!("writing the layout of `{l}` to `{rel}`: {}", execution::chain(&e)))
            })?;
            images.push((l.to_string(), index.clone(), rel));
            continue;
        }
        if let Some(ActionOutput::Image { manifest, .. }) = report.outputs[id].as_deref() {
            if layouts == Layouts::None {
                images.push((l.to_string(), manifest.clone(), layout_dir(l)));
                no_layout.push(l.to_string());
                continue;
            }
            // `--stamp`: the declared labels with placeholders filled in, on a new manifest.
            let stamped = match (&stamp, declared_labels.get(l)) {
                (Some(values), Some(labels)) => {
                    crate::cli::stamp::stamp_image(cache.cas(), manifest, labels, values, &l.to_string())?
                }
                _ => None,
            };
            let manifest = stamped.as_ref().unwrap_or(manifest);
            let rel = layout_dir(l);
            let dir = s.root().join(&rel);
            if layouts == Layouts::LocalOnly && !skip_remote_layout(&dir, &cache, manifest, &rel, l, s.quiet)? {
                attachments.insert(l.to_string(), attester.attest(l, manifest, None)?);
                no_layout.push(l.to_string());
                images.push((l.to_string(), manifest.clone(), rel));
                continue;
            }
            write_layout(&dir, &cache, manifest)
                .map_err(|e| Failure::env(anyhow::anyhow!("writing the layout of `{l}` to `{rel}`: {e}")))?;
            if graph.archives.contains(l) {
                // `buildpack_package(format = "file")`: the layout as one tar, a `.cnb`.
                let file = format!("{rel}.cnb");
                let img =
                    crate::oci::Image::load(cache.cas(), manifest).map_err(|e| Failure::env(anyhow::anyhow!("{e}")))?;
                crate::oci::layout::write_oci_archive(
                    &s.root().join(&file),
                    &img,
                    cache.cas(),
                    None,
                    source_date_epoch()?,
                )
                .map_err(|e| Failure::env(anyhow::anyhow!("writing `{file}`: {}", execution::chain(&e))))?;
            }
            attachments.insert(l.to_string(), attester.attest(l, manifest, Some(&rel))?);
            images.push((l.to_string(), manifest.clone(), rel));
        }
    }
    Ok(Built {
        settings: s,
        graph,
        report,
        cache,
        images,
        no_layout,
        pushed: 0,
        registry,
        stamp,
        attachments,
        requested,
    })
}

/// Prints analysis notes (unless quiet). Notes about a target (they start with its label) are for
/// targets named on the command line, not for everything a `//...` matches: `cbuild build //...`
/// of a workspace whose builders cannot become builder images says nothing about it.
pub fn print_notes(s: &Settings, pats: &[crate::model::label::Pattern], notes: &[String]) {
    if s.quiet {
        return;
    }
    let named: Vec<String> = pats
        .iter()
        .filter_map(|p| match p {
            crate::model::label::Pattern::Target(l) => Some(format!("`{l}`")),
            _ => None,
        })
        .collect();
    for m in notes.iter().filter(|m| !m.starts_with('`') || named.iter().any(|l| m.starts_with(l.as_str()))) {
        eprintln!("note: {m}");
    }
}

/// For [`Layouts::LocalOnly`]: true if the image's blobs are all local (write its layout as
/// usual). Otherwise the layout is not written: a note says so (unless `quiet`), and a layout left
/// at `dir` by an earlier build of another image loses its `index.json` (only that file: the
/// directory may hold the layouts of targets in sub-packages). Returns false then.
fn skip_remote_layout(
    dir: &std::path::Path,
    cache: &Cache,
    manifest: &crate::model::digest::Digest,
    rel: &str,
    l: &crate::model::label::Label,
    quiet: bool,
) -> Result<bool, Failure> {
    let img = crate::oci::Image::load(cache.cas(), manifest)
        .map_err(|e| Failure::env(anyhow::anyhow!("reading the image of `{l}`: {}", execution::chain(&e))))?;
    if img.missing_layers(cache.cas()).is_empty() {
        return Ok(true);
    }
    let index = dir.join("index.json");
    let ours = crate::oci::layout::index_json(&img, Some("latest")).ok();
    if std::fs::read(&index).ok().is_some_and(|have| Some(have) != ours) {
        let _ = std::fs::remove_file(&index);
    }
    if !quiet {
        eprintln!(
            "note: no layout written for `{l}`: its base image layers are in a registry and a push does not \
             download them; `cbuild build {l}` writes `{rel}`"
        );
    }
    Ok(false)
}

/// `cbuild-out/<package>/<name>`.
pub fn layout_dir(l: &crate::model::label::Label) -> String {
    if l.package.is_root() {
        format!("cbuild-out/{}", l.name)
    } else {
        format!("cbuild-out/{}/{}", l.package, l.name)
    }
}

pub fn print_summary(b: &Built) {
    let name = |id: usize| {
        let a = &b.graph.actions[id];
        format!("`{}` {}", a.label, a.kind.mnemonic())
    };
    print_report(&b.settings, &b.report, b.graph.actions.len(), &name, &b.images, &b.no_layout, b.pushed, false);
}

/// [`print_summary`] of its parts: `actions` is how many the build had, `name` names one (for
/// its error), `images` and `no_layout` as in [`Built`]. Also the summary of a no-op answered
/// from its record (`cli::noop`, `from_record`), so both print the same lines.
#[allow(clippy::too_many_arguments)]
pub fn print_report(
    settings: &Settings,
    r: &BuildReport,
    actions: usize,
    name: &dyn Fn(usize) -> String,
    images: &[(String, crate::model::digest::Digest, String)],
    no_layout: &[String],
    pushed: usize,
    from_record: bool,
) {
    if settings.json {
        let targets: Vec<serde_json::Value> = images
            .iter()
            .map(|(l, d, p)| {
                let layout = (!no_layout.contains(l)).then_some(p);
                serde_json::json!({"label": l, "image_digest": d.to_string(), "layout": layout})
            })
            .collect();
        // Field order as documented in DESIGN.md §3.3 (scripts may read it with a line-based tool);
        // new fields are appended: `pushed` (image pushes, one per image and tag; 0 without a push).
        #[derive(serde::Serialize)]
        struct Summary<'a> {
            r#type: &'static str,
            executed: usize,
            cached_local: usize,
            cached_remote: usize,
            failed: usize,
            targets: Vec<serde_json::Value>,
            pushed: usize,
            /// Source files read to hash them (the stat cache answered for the rest): 0 on a no-op.
            files_hashed: usize,
            /// Errors not tied to one action (sources refused, a missing lock file): also on stderr.
            errors: Vec<String>,
            /// Executed actions each remote worker ran (`--remote-executor`), by worker name.
            remote_workers: &'a std::collections::BTreeMap<String, usize>,
            /// A no-op answered from the last identical build's record (`cli::noop`): nothing
            /// loaded, keyed or looked up; every stamp it holds was checked.
            from_record: bool,
        }
        let v = Summary {
            r#type: "summary",
            executed: r.executed,
            cached_local: r.cached_local,
            cached_remote: r.cached_remote,
            failed: r.failed(),
            targets,
            pushed,
            files_hashed: r.files_hashed,
            errors: r.errors.iter().filter(|(id, _)| *id == usize::MAX).map(|(_, e)| e.message.clone()).collect(),
            remote_workers: &r.remote_workers,
            from_record,
        };
        for (id, e) in &r.errors {
            if *id == usize::MAX {
                eprint!("{}", render_action_error("", e));
            }
        }
        crate::outln!("{}", serde_json::to_string(&v).unwrap_or_default());
        return;
    }
    for (id, e) in &r.errors {
        if *id == usize::MAX {
            eprint!("{}", render_action_error("", e));
        } else {
            eprint!("{}", render_action_error(&format!("{} failed: ", name(*id)), e));
        }
    }
    if !settings.quiet {
        for (l, d, p) in images {
            let p = if no_layout.contains(l) { "-" } else { p.as_str() };
            crate::outln!("{l} {d} {p}");
        }
    }
    let state = if r.cancelled {
        "interrupted"
    } else if r.ok() {
        "ok"
    } else {
        "FAILED"
    };
    let mut pushed = if pushed > 0 { format!(", {} pushed", pushed) } else { String::new() };
    let remote: usize = r.remote_workers.values().sum();
    if remote > 0 {
        pushed = format!(", {remote} executed remotely on {} worker(s){pushed}", r.remote_workers.len());
    }
    eprintln!(
        "{state}: {} actions: {} executed, {} cached ({} local, {} remote), {} failed{pushed}",
        actions,
        r.executed,
        r.cached_local + r.cached_remote,
        r.cached_local,
        r.cached_remote,
        r.failed()
    );
}

/// Writes (or refreshes) the OCI layout of an image target. Skipped when `index.json` already
/// names this manifest and every blob is the cache's own file (same inode: layouts hard-link the
/// cache); a blob that is another file (replaced, or damaged and since rebuilt in the cache) is
/// re-linked, so a layout never keeps bytes the cache no longer vouches for.
fn write_layout(dir: &std::path::Path, cache: &Cache, manifest: &crate::model::digest::Digest) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let img = crate::oci::Image::load(cache.cas(), manifest).map_err(|e| execution::chain(&e))?;
    let mut digests: Vec<&crate::model::digest::Digest> = img.layers().iter().map(|l| &l.digest).collect();
    digests.push(manifest);
    digests.push(img.config_digest());
    let mut fresh = true;
    for d in &digests {
        let lp = crate::oci::layout::blob_path(dir, d);
        let same = match (std::fs::metadata(&lp), std::fs::metadata(cache.cas().path(d))) {
            // Across filesystems layouts hold copies: there, only the size can be checked cheaply.
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()) || (a.dev() != b.dev() && a.len() == b.len()),
            _ => false,
        };
        if !same {
            fresh = false;
            let _ = std::fs::remove_file(&lp);
        }
    }
    if fresh {
        if let Ok(idx) = std::fs::read(dir.join("index.json")) {
            if crate::oci::layout::index_json(&img, Some("latest")).map(|want| want == idx).unwrap_or(false) {
                return Ok(());
            }
        }
    }
    // The whole cause chain: "I/O error on `…`" alone would hide "No space left on device".
    crate::oci::layout::write_layout(dir, &img, cache.cas(), Some("latest"))
        .map(|_| ())
        .map_err(|e| execution::chain(&e))
}

/// The image of `digest` to run, export or inspect: the digest itself for an image; for an image
/// index (a multi-platform target) the image for `--platform` (one platform) or else the host's.
pub fn platform_image(
    b: &Built,
    label: &str,
    digest: &crate::model::digest::Digest,
) -> Result<crate::model::digest::Digest, Failure> {
    // The build says what the target made: only an index output needs a platform picked.
    let l = crate::model::label::Label::parse(label, None).map_err(|e| Failure::user(e.to_string()))?;
    let output = b.graph.target_outputs.get(&l).and_then(|id| b.report.outputs[*id].as_deref());
    if !matches!(output, Some(ActionOutput::Index { .. })) {
        return Ok(digest.clone());
    }
    let idx = crate::oci::Index::load(b.cache.cas(), digest).map_err(Failure::env)?;
    let want = match b.settings.inputs.platforms.as_slice() {
        [] => crate::model::platform::Platform::host(),
        [one] => one.clone(),
        many => {
            return Err(Failure::user(format!(
                "`{label}` is built for {} platforms here; name one with --platform",
                many.len()
            )))
        }
    };
    match idx.image_for(&want.to_string()) {
        Some(img) => Ok(img.digest().clone()),
        None => Err(Failure::user_hint(
            format!("`{label}` has no image for {want} (its platforms: {})", idx.platforms().join(", ")),
            "pass --platform with one of them",
        )),
    }
}

/// The `--remote-executor`: its gRPC endpoint, checked to execute (a server with a cache only
/// is a configuration error, exit 2; one that cannot be reached is a warning and a local build),
/// and a reader of the results its workers store (the remote cache's checks and trusted keys).
fn remote_executor(s: &Settings, url: &str) -> Result<crate::execution::remote_exec::Executor, Failure> {
    let auth = crate::remote::RemoteAuth::from_env()
        .map_err(|e| Failure::user(format!("remote executor credentials: {e}")))?;
    let mut headers = s.remote_headers.0.clone();
    if let Some(v) = auth.header_value() {
        headers.push(("authorization".into(), v));
    }
    let grpc = crate::remote::grpc::Grpc::new(url, s.remote_instance_name.as_deref(), &headers, s.remote_timeouts)
        .map_err(|e| Failure::user(format!("remote executor: {e}")))?;
    let results = crate::remote::RemoteCache::new(url, crate::remote::RemoteMode::ReadOnly, auth, s.remote_timeouts)
        .and_then(|r| r.with_options(s.remote_instance_name.as_deref(), &s.remote_headers.0))
        .map_err(|e| Failure::user(format!("remote executor: {e}")))?
        .with_trusted_keys(s.remote_trusted_keys.clone());
    let ex = crate::execution::remote_exec::Executor::new(grpc, results);
    if let Err(e) = ex.check() {
        if e.starts_with("remote executor:") {
            eprintln!("warning: {e}; actions run locally");
            ex.turn_off();
        } else {
            return Err(Failure::user(e));
        }
    }
    Ok(ex)
}
