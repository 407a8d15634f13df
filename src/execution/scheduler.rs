//! The scheduler: runs the action graph on tokio with at most `jobs` actions at once, answering
//! every action it can from the cache first. `--keep-going`, Ctrl-C and failure propagation live here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::events::{Event, Outcome, Reporter};
use super::runners::{self, RunCtx};
use crate::cache::{Cache, RunOutcome, RunRecord};
use crate::model::action::{ActionGraph, ActionId, ActionKind, ActionOutput, Input};
use crate::model::digest::Blake3;

/// Settings of one execution.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// The workspace root (sources are read relative to it).
    pub root: PathBuf,
    pub jobs: usize,
    pub keep_going: bool,
    /// mtime for layer entries and the default image `created` (seconds since the epoch).
    pub source_date_epoch: u64,
    /// Identifies this invocation in the run history (`explain`).
    pub build_id: String,
    /// Registry settings (insecure registries, credentials).
    pub registry: crate::registry::ClientOptions,
    /// `[debian] archive` of cbuild.toml.
    pub debian_archive: Option<String>,
    /// The remote cache (Bazel HTTP protocol), looked up after the local one.
    pub remote: Option<Arc<crate::remote::RemoteCache>>,
}

/// What happened to each action.
#[derive(Debug, Default)]
pub struct BuildReport {
    pub outputs: Vec<Option<Arc<ActionOutput>>>,
    pub outcomes: Vec<Option<Outcome>>,
    /// Failed actions with their error (dependents of a failed action are not listed; they never ran).
    pub errors: Vec<(ActionId, String)>,
    pub executed: usize,
    pub cached_local: usize,
    pub cached_remote: usize,
    pub cancelled: bool,
    /// Files stat'ed and hashed for source digests (a no-op build hashes 0).
    pub files_hashed: usize,
}

impl BuildReport {
    pub fn failed(&self) -> usize {
        self.errors.len()
    }
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && !self.cancelled
    }
}

/// Source files every action reads, hashed once through the stat cache (a no-op build hashes nothing).
fn hash_sources(g: &ActionGraph, cfg: &ExecConfig, cache: &Cache) -> Result<(BTreeMap<String, Blake3>, usize), String> {
    let mut paths: BTreeSet<String> = BTreeSet::new();
    for a in &g.actions {
        match &a.kind {
            ActionKind::Genrule { srcs, .. } => paths.extend(srcs.iter().filter_map(|(_, i)| source(i))),
            ActionKind::Layer { files, .. } => paths.extend(files.iter().filter_map(|f| source(&f.input))),
            ActionKind::ImportImage { files, .. } => paths.extend(files.iter().cloned()),
            ActionKind::Buildpack { files, .. } => paths.extend(files.iter().filter_map(|(_, i)| source(i))),
            ActionKind::CnbDetect(p) | ActionKind::CnbBuild { phase: p, .. } => {
                paths.extend(p.app.iter().filter_map(|(_, i)| source(i)))
            }
            ActionKind::DebianImage(d) => {
                paths.insert(d.lock.clone());
            }
            ActionKind::Image { .. } | ActionKind::CnbExport(_) | ActionKind::PullImage { .. } => {}
        }
    }
    let list: Vec<String> = paths.into_iter().collect();
    let full: Vec<PathBuf> = list.iter().map(|p| cfg.root.join(p)).collect();
    let hasher = cache.file_hasher();
    let digests = hasher.hash_files(&full).map_err(|e| format!("hashing sources: {e}"))?;
    let hashed = hasher.counts().hashed as usize;
    Ok((list.into_iter().zip(digests).collect(), hashed))
}

fn source(i: &Input) -> Option<String> {
    match i {
        Input::Source(p) => Some(p.clone()),
        Input::Output { .. } => None,
    }
}

/// Runs the graph. Returns when every action finished, failed or was skipped, or on Ctrl-C.
pub fn execute(mut g: ActionGraph, cache: Arc<Cache>, cfg: ExecConfig, reporter: Arc<dyn Reporter>) -> BuildReport {
    let mut report = BuildReport {
        outputs: vec![None; g.actions.len()],
        outcomes: vec![None; g.actions.len()],
        ..Default::default()
    };
    // Expand imported layouts into their files so their content is part of the key.
    for a in &mut g.actions {
        if let ActionKind::ImportImage { path, files, .. } = &mut a.kind {
            *files = runners::import::layout_files(&cfg.root, path);
        }
    }
    for a in &g.actions {
        if let ActionKind::DebianImage(d) = &a.kind {
            if !cfg.root.join(&d.lock).is_file() {
                report.errors.push((
                    a.id,
                    format!("the lock file `{}` does not exist; create it with `cbuild lock {}`", d.lock, a.label),
                ));
            }
        }
    }
    if !report.errors.is_empty() {
        return report;
    }
    let (sources, hashed) = match hash_sources(&g, &cfg, &cache) {
        Ok(x) => x,
        Err(e) => {
            report.errors.push((usize::MAX, e));
            return report;
        }
    };
    report.files_hashed = hashed;
    reporter.event(&Event::Plan { actions: g.actions.len() });
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(cfg.jobs.clamp(1, 8)).enable_all().build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report.errors.push((usize::MAX, format!("cannot start the scheduler: {e}")));
            return report;
        }
    };
    let g = Arc::new(g);
    let ctx = Arc::new(RunCtx {
        root: cfg.root.clone(),
        cache: cache.clone(),
        sources,
        source_date_epoch: cfg.source_date_epoch,
        reporter: reporter.clone(),
        registry_options: cfg.registry.clone(),
        registry_client: Default::default(),
        debian_archive: cfg.debian_archive.clone(),
        remote: cfg.remote.clone(),
        pending_runs: Default::default(),
    });
    rt.block_on(schedule(g, ctx.clone(), &cfg, &mut report));
    let runs = std::mem::take(&mut *ctx.pending_runs.lock().unwrap_or_else(|p| p.into_inner()));
    if let Err(e) = cache.record_runs(&runs) {
        reporter
            .event(&Event::Warning { message: format!("could not record the build history (`cbuild explain`): {e}") });
    }
    // Background blocking tasks (a layer being compressed) finish writing temp files; nothing
    // half-written becomes a cache entry because entries are put only after a runner succeeded.
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    report
}

async fn schedule(g: Arc<ActionGraph>, ctx: Arc<RunCtx>, cfg: &ExecConfig, report: &mut BuildReport) {
    let n = g.actions.len();
    let mut waiting: Vec<usize> = g.actions.iter().map(|a| a.deps.len()).collect();
    let mut dependents: Vec<Vec<ActionId>> = vec![Vec::new(); n];
    for a in &g.actions {
        for d in &a.deps {
            dependents[*d].push(a.id);
        }
    }
    let sem = Arc::new(Semaphore::new(cfg.jobs.max(1)));
    let mut set: JoinSet<(ActionId, Result<(Arc<ActionOutput>, Outcome), String>)> = JoinSet::new();
    let mut ready: Vec<ActionId> = (0..n).filter(|i| waiting[*i] == 0).collect();
    ready.reverse();
    let mut stop = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        while !stop {
            let Some(id) = ready.pop() else { break };
            let deps: Vec<Arc<ActionOutput>> =
                g.actions[id].deps.iter().filter_map(|d| report.outputs[*d].clone()).collect();
            if deps.len() != g.actions[id].deps.len() {
                continue; // a dependency failed: skip
            }
            let (g2, ctx2, sem2, build_id) = (g.clone(), ctx.clone(), sem.clone(), cfg.build_id.clone());
            set.spawn(async move {
                let _permit = sem2.acquire_owned().await;
                let r = run_one(&g2, id, &deps, &ctx2, &build_id).await;
                (id, r)
            });
        }
        if set.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                let (id, r) = match joined {
                    Ok(x) => x,
                    Err(e) if e.is_cancelled() => continue,
                    Err(e) => { report.errors.push((usize::MAX, format!("internal: an action task panicked: {e}"))); stop = true; continue; }
                };
                let a = &g.actions[id];
                match r {
                    Ok((out, outcome)) => {
                        match outcome {
                            Outcome::Executed => report.executed += 1,
                            Outcome::CachedLocal => report.cached_local += 1,
                            Outcome::CachedRemote => report.cached_remote += 1,
                            Outcome::Failed => {}
                        }
                        report.outputs[id] = Some(out);
                        report.outcomes[id] = Some(outcome);
                        for d in &dependents[id] {
                            waiting[*d] -= 1;
                            if waiting[*d] == 0 { ready.push(*d); }
                        }
                    }
                    Err(e) => {
                        ctx.reporter.event(&Event::Failed { label: a.label.to_string(), action: a.kind.mnemonic().into(), error: e.clone() });
                        report.outcomes[id] = Some(Outcome::Failed);
                        report.errors.push((id, e));
                        if !cfg.keep_going { stop = true; set.abort_all(); }
                    }
                }
            }
            _ = &mut ctrl_c, if !report.cancelled => {
                report.cancelled = true;
                stop = true;
                ctx.reporter.event(&Event::Warning { message: "interrupted: stopping running actions".into() });
                // Dropping the futures kills their sandboxes (kill_on_drop + --die-with-parent).
                set.abort_all();
            }
        }
    }
}

/// Computes the key, answers from the cache or runs the action, stores and records the result.
async fn run_one(
    g: &ActionGraph,
    id: ActionId,
    deps: &[Arc<ActionOutput>],
    ctx: &Arc<RunCtx>,
    build_id: &str,
) -> Result<(Arc<ActionOutput>, Outcome), String> {
    let a = &g.actions[id];
    let dep_map: BTreeMap<ActionId, Arc<ActionOutput>> = a.deps.iter().copied().zip(deps.iter().cloned()).collect();
    let kb = runners::key(a, &dep_map, ctx)?;
    let (key, components) = kb.finish();
    let label = a.label.to_string();
    let name = a.kind.mnemonic();
    let started = Instant::now();
    let cache = ctx.cache.clone();
    let hit = {
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || cache.get_action(&key)).await.map_err(|e| crate::execution::chain(&e))?
    };
    let hit = match hit {
        Ok(Some(entry)) => {
            let c = cache.clone();
            let blobs = entry.blobs.clone();
            let intact = tokio::task::spawn_blocking(move || blobs_intact(&c, &blobs)).await.unwrap_or(false);
            if !intact {
                ctx.reporter.event(&Event::Warning {
                    message: format!(
                        "a cached blob of `{label}` {name} is missing or corrupt; running the action again"
                    ),
                });
                Ok(None)
            } else {
                Ok(Some(entry))
            }
        }
        other => other,
    };
    let remote_hit = match &hit {
        Ok(None) => remote_lookup(ctx, &key, name, &label).await,
        _ => None,
    };
    let (out, outcome) = match hit {
        Ok(Some(entry)) => match serde_json::from_str::<ActionOutput>(&entry.result_json) {
            Ok(o) => (o, Outcome::CachedLocal),
            Err(_) => (execute_action(a, &dep_map, ctx).await?, Outcome::Executed),
        },
        Ok(None) if remote_hit.is_some() => (remote_hit.unwrap(), Outcome::CachedRemote),
        Ok(None) => {
            ctx.reporter.event(&Event::Started { label: label.clone(), action: name.into() });
            (execute_action(a, &dep_map, ctx).await?, Outcome::Executed)
        }
        Err(e) => {
            ctx.reporter
                .event(&Event::Warning { message: format!("cache lookup failed, running `{label}` {name}: {e}") });
            (execute_action(a, &dep_map, ctx).await?, Outcome::Executed)
        }
    };
    let record = RunRecord {
        label: label.clone(),
        action: name.to_string(),
        key,
        components: components.clone(),
        outcome: match outcome {
            Outcome::Executed => RunOutcome::Executed,
            Outcome::CachedLocal => RunOutcome::CachedLocal,
            Outcome::CachedRemote => RunOutcome::CachedRemote,
            Outcome::Failed => RunOutcome::Failed,
        },
        build_id: build_id.to_string(),
        at: SystemTime::now(),
    };
    let out2 = out.clone();
    let components2 = components.clone();
    let (label2, name2) = (label.clone(), name.to_string());
    // Run history is written once at the end of the build (one transaction, not one per action).
    ctx.pending_runs.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    let store = if outcome == Outcome::CachedLocal {
        Ok(())
    } else {
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            cache
                .put_action(&key, &name2, &label2, &out2.to_json(), &components2, &out2.blobs())
                .map_err(|e| crate::execution::chain(&e))
        })
        .await
        .map_err(|e| crate::execution::chain(&e))?
    };
    if let Err(e) = store {
        ctx.reporter.event(&Event::Warning {
            message: format!("could not store the result of `{label}` {name} in the cache: {e}"),
        });
    } else if outcome == Outcome::Executed {
        remote_store(ctx, &key, &out, &components).await;
    }
    ctx.reporter.event(&Event::Finished { label, action: name.into(), outcome, duration: started.elapsed() });
    Ok((Arc::new(out), outcome))
}

async fn execute_action(
    a: &crate::model::action::Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<ActionOutput, String> {
    runners::run(a, deps, ctx).await
}

/// True if every blob of a cache hit is present and intact. A blob whose stat (size, mtime, inode,
/// ctime) is unchanged since it was last verified is trusted; any other is re-hashed with sha256
/// (and deleted if wrong), so a no-op build reads no blob bytes but a truncated or altered blob is
/// never used.
fn blobs_intact(cache: &Cache, blobs: &[crate::model::digest::Digest]) -> bool {
    let h = cache.file_hasher();
    for d in blobs {
        let before = h.counts().hashed;
        if h.hash_file(&cache.cas().path(d)).is_err() {
            return false;
        }
        if h.counts().hashed > before && cache.cas().verify(d).is_err() {
            return false;
        }
    }
    true
}

/// Makes the layers of image outputs local (fetching shallow `oci_pull` layers from their
/// registries), for consumers outside the scheduler: layouts, `cbuild run`, exports.
pub fn fetch_remote_layers(
    outputs: &[Arc<ActionOutput>],
    cache: Arc<Cache>,
    registry: crate::registry::ClientOptions,
) -> Result<(), String> {
    if !outputs.iter().any(|o| matches!(o.as_ref(), ActionOutput::Image { remote, .. } if !remote.is_empty())) {
        return Ok(());
    }
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| crate::execution::chain(&e))?;
    let ctx = RunCtx {
        root: PathBuf::new(),
        cache,
        sources: BTreeMap::new(),
        source_date_epoch: 0,
        reporter: Arc::new(super::events::NullReporter),
        registry_options: registry,
        registry_client: Default::default(),
        debian_archive: None,
        remote: None,
        pending_runs: Default::default(),
    };
    rt.block_on(async {
        for o in outputs {
            runners::pull::ensure_local(o, &ctx).await?;
        }
        Ok(())
    })
}

/// Looks an action up in the remote cache after a local miss. A hit's blobs are fetched (each
/// verified against its sha256) and the result is filled into the local cache by the caller. Any
/// remote problem is a warning (once) and a local build, never a failure.
async fn remote_lookup(ctx: &Arc<RunCtx>, key: &Blake3, name: &str, label: &str) -> Option<ActionOutput> {
    let remote = ctx.remote.clone()?;
    let (ctx2, key2) = (ctx.clone(), *key);
    let r = tokio::task::spawn_blocking(move || -> Result<Option<ActionOutput>, crate::remote::RemoteError> {
        let Some(entry) = remote.get_action(&key2)? else { return Ok(None) };
        let Ok(out) = serde_json::from_str::<ActionOutput>(&entry.result_json) else { return Ok(None) };
        for (d, _) in &entry.blobs {
            if !ctx2.cache.cas().contains(d) {
                remote.fetch_blob(d, ctx2.cache.cas())?;
            }
        }
        Ok(Some(out))
    })
    .await
    .ok()?;
    match r {
        Ok(o) => o,
        Err(e) => {
            if e.should_warn() {
                ctx.reporter.event(&Event::Warning {
                    message: format!("remote cache: {e}; building `{label}` {name} locally"),
                });
            }
            None
        }
    }
}

/// Uploads an executed action's result and blobs to the remote cache (read-write mode only).
async fn remote_store(ctx: &Arc<RunCtx>, key: &Blake3, out: &ActionOutput, components: &crate::cache::Components) {
    let Some(remote) = ctx.remote.clone() else { return };
    if remote.mode() != crate::remote::RemoteMode::ReadWrite {
        return;
    }
    let Ok(components_json) = serde_json::to_string(components) else { return };
    let (ctx2, key2, out2) = (ctx.clone(), *key, out.clone());
    let r = tokio::task::spawn_blocking(move || {
        remote.put_action(&key2, &out2.to_json(), &components_json, &out2.blobs(), ctx2.cache.cas())
    })
    .await;
    if let Ok(Err(e)) = r {
        if e.should_warn() {
            ctx.reporter.event(&Event::Warning { message: format!("remote cache: could not upload: {e}") });
        }
    }
}
