//! The scheduler: runs the action graph on tokio with at most `jobs` actions at once, answering
//! every action it can from the cache first. `--keep-going`, Ctrl-C and failure propagation live here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::error::ActionError;
use super::events::{Event, Outcome, Reporter};
use super::runners::{self, RunCtx};
use super::sources::{shown, SourceStamp, Sources};
use crate::cache::{Cache, RunOutcome, RunRecord};
use crate::fs::stat::{DirStats, FileStat};
use crate::model::action::{ActionGraph, ActionId, ActionKind, ActionOutput};
use crate::model::digest::Blake3;
use crate::model::error::ErrorKind;

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
    /// The remote executor (`--remote-executor`): actions that run user code run there.
    pub executor: Option<Arc<super::remote_exec::Executor>>,
    /// Lazy bytes (`--remote-download toplevel`): remote hits leave their large blobs on the
    /// server until something needs them ([`super::lazy`]).
    pub lazy: bool,
}

/// What happened to each action.
#[derive(Debug, Default)]
pub struct BuildReport {
    pub outputs: Vec<Option<Arc<ActionOutput>>>,
    pub outcomes: Vec<Option<Outcome>>,
    /// Failed actions with their error (dependents of a failed action are not listed; they never ran).
    pub errors: Vec<(ActionId, ActionError)>,
    pub executed: usize,
    pub cached_local: usize,
    pub cached_remote: usize,
    pub cancelled: bool,
    /// Files stat'ed and hashed for source digests (a no-op build hashes 0).
    pub files_hashed: usize,
    /// Actions each remote worker ran (`--remote-executor`), by worker name.
    pub remote_workers: BTreeMap<String, usize>,
    /// Remote hits whose large blobs were left on the server (fetched when needed).
    pub lazy: Arc<super::lazy::Lazy>,
    /// Every source as it was hashed (path, digest, stamp), once the build ran (`cli::noop`
    /// records the stamps).
    pub sources: Option<Sources>,
    /// The key of every action that was answered or run.
    pub keys: Vec<crate::model::digest::Blake3>,
}

impl BuildReport {
    pub fn failed(&self) -> usize {
        self.errors.len()
    }
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && !self.cancelled
    }
    /// The kind that decides the exit code ([`ErrorKind::worst`] of the errors), if any failed.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        ErrorKind::worst(self.errors.iter().map(|(_, e)| e.kind))
    }
}

/// Source files every action reads, hashed once through the stat cache (a no-op build hashes nothing).
///
/// This is also the one place where cbuild refuses sources that lead outside the workspace:
/// every source of every action (genrule, layer, buildpack and cnb_image srcs, oci_import layout
/// files, debian lock files) is listed here, before any action runs, and checked by
/// [`SourceCheck`]. A symlink committed in the repository that resolves outside the workspace root
/// (absolute, via `..`, or through a chain of symlinks), in the file's last component or any
/// directory above it, fails the build naming the source and its target. Consumers (genrule
/// staging, layer packing, buildpack copies) then read the path
/// [`resolve_source`](super::sources::resolve_source) gives, which re-applies the rule at read
/// time. Symlinks that stay inside keep being followed. The one exception is a cnb_image app file whose last component is a
/// symlink: the app dir keeps it as a symlink (for the build container), nobody follows it, so it
/// is keyed by its target text instead of refused (when no other action follows it).
/// The workspace sources an action reads (its runner declares them: [`runners::Runner::sources`]).
fn source_inputs(a: &crate::model::action::Action) -> Vec<(String, bool)> {
    runners::runner(&a.kind).sources(a)
}

/// Fails if a source `a` read changed since it was hashed (see [`SourceStamp`]).
fn check_sources_unchanged(a: &crate::model::action::Action, ctx: &RunCtx) -> Result<(), ActionError> {
    for (rel, _) in source_inputs(a) {
        let Some(then) = ctx.sources.stamp(&rel) else { continue };
        if then.now(&ctx.root.join(&rel)).as_ref() != Some(then) {
            return Err(ActionError::build(format!(
                "source `{rel}` changed while this action ran; its result was not stored (nor uploaded)"
            ))
            .hint("run the build again"));
        }
    }
    Ok(())
}

/// Hashes every source of `g` (see [`SourceCheck`] for what is refused). Returns the digest and
/// stamp of every source (the stamps for [`check_sources_unchanged`]) and the number of files read.
///
/// Memory is per source, once (issue 23): one sorted list of (path, followed), then [`Sources`]
/// built from it in the same order; the stat cache gets the absolute paths of one batch at a time.
fn hash_sources(g: &ActionGraph, cfg: &ExecConfig, cache: &Cache) -> Result<(Sources, usize), ActionError> {
    // Every source, once, and whether some consumer reads it by following the path (else it is a
    // cnb_image app file, kept as a link).
    // Deduplicated by hashing before the sort: a service's files are read by two or three
    // actions, and sorting every copy compared their long common prefixes again (issue 23).
    let mut once: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for (rel, follow) in g.actions.iter().flat_map(source_inputs) {
        *once.entry(rel).or_insert(false) |= follow;
    }
    let mut list: Vec<(String, bool)> = once.into_iter().collect();
    list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let started = std::time::SystemTime::now();
    let mut check = SourceCheck::new(&cfg.root).map_err(ActionError::env)?;
    let mut sources = Sources::with_capacity(list.len());
    // Indices (in `sources`) of the files to hash; their stat is in their stamp.
    let mut to_hash = Vec::new();
    let mut refused = Vec::new();
    for (rel, follow) in list {
        match check.check(&rel, !follow) {
            Ok(Checked::File(md, link)) => {
                to_hash.push(sources.len());
                sources.push(rel, Blake3([0; 32]), Some(SourceStamp::of(&md, false, link)));
            }
            Ok(Checked::KeptLink(target)) => {
                let stamp = FileStat::lstat(&cfg.root.join(&rel))
                    .ok()
                    .map(|md| SourceStamp::of(&md, true, Some(target.clone())));
                sources.push(rel, kept_link_digest(&target), stamp);
            }
            Err(SourceError::Refused(m)) => refused.push(m),
            Err(SourceError::Other(m)) => return Err(ActionError::build(m)),
        }
    }
    if !refused.is_empty() {
        // One line per source (the CLI prints the first after `error: `), at most SHOWN of them.
        const SHOWN: usize = 10;
        let mut msg = refused.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("\nerror: ");
        if refused.len() > SHOWN {
            msg.push_str(&format!(
                "\nerror: … and {} more source(s) leading outside the workspace",
                refused.len() - SHOWN
            ));
        }
        return Err(ActionError::user(msg).hint("copy the file into the workspace, or make the link point inside it"));
    }
    let hasher = cache.file_hasher();
    // The stat cache keys rows by absolute path: the root made absolute once (a source's relative
    // path is normal already), not every path parsed again.
    let abs_root = std::path::absolute(&cfg.root).map_err(|e| ActionError::env(format!("hashing sources: {e}")))?;
    for batch in to_hash.chunks(crate::cache::STAT_BATCH) {
        let files = batch
            .iter()
            .map(|&i| {
                let (rel, stamp) = sources.at(i);
                (abs_root.join(rel), stamp.expect("a hashed file has its stamp").file_stat())
            })
            .collect();
        let digests = hasher.hash_stated(started, files).map_err(|e| ActionError::of(&e).context("hashing sources"))?;
        for (&i, d) in batch.iter().zip(digests) {
            sources.set_digest(i, d);
        }
    }
    let hashed = hasher.counts().hashed as usize;
    Ok((sources, hashed))
}

/// The key of a cnb_image app symlink that is kept as a link: its target text (domain-separated
/// from file contents).
fn kept_link_digest(target: &std::path::Path) -> Blake3 {
    use std::os::unix::ffi::OsStrExt;
    let mut b = b"cbuild-app-symlink\0".to_vec();
    b.extend_from_slice(target.as_os_str().as_bytes());
    Blake3::of_bytes(&b)
}

/// What [`SourceCheck::check`] found.
#[derive(Debug)]
enum Checked {
    /// Hash this content: the metadata of the file itself, or of a symlink's in-workspace target
    /// (then with the link text).
    File(FileStat, Option<PathBuf>),
    /// A cnb_image app symlink whose target is outside the workspace (or nowhere): kept as a link,
    /// never followed.
    KeptLink(PathBuf),
}

#[derive(Debug)]
enum SourceError {
    /// The source leads outside the workspace (a user error; every such source is listed).
    Refused(String),
    /// It cannot be read (missing, permissions): reported as before.
    Other(String),
}

/// Checks that workspace sources resolve inside the workspace (see [`hash_sources`]). Directories
/// are checked once each however many sources they hold, so a no-op build pays one `lstat` per
/// source (whose result is the stat the stat cache needs anyway) and one per directory. The
/// per-source `lstat` is an `fstatat` relative to the directory's open descriptor ([`DirStats`]):
/// the kernel walks each directory's path once, not once per file in it (issue 23).
struct SourceCheck {
    root: PathBuf,
    stats: DirStats,
    /// The workspace root with every symlink resolved.
    canon_root: PathBuf,
    /// Directory (workspace-relative) → `None` if it stays inside, else why not.
    dirs: std::collections::HashMap<PathBuf, Option<String>>,
    /// The directory part of the last source whose directories all stay inside: sources come
    /// sorted, so most share it and skip the walk up their parents.
    last_dir: Option<String>,
}

impl SourceCheck {
    fn new(root: &std::path::Path) -> Result<SourceCheck, String> {
        let canon_root = std::fs::canonicalize(root)
            .map_err(|e| format!("cannot resolve the workspace root `{}`: {e}", root.display()))?;
        Ok(SourceCheck {
            root: root.to_path_buf(),
            stats: DirStats::new(root),
            canon_root,
            dirs: Default::default(),
            last_dir: None,
        })
    }

    /// True if `p` (resolved) is the workspace root or below it.
    fn inside(&self, p: &std::path::Path) -> bool {
        p.starts_with(&self.canon_root)
    }

    /// Checks the workspace-relative source `rel`. `keep_link`: the consumer copies a last-component
    /// symlink as a link (cnb_image app files), so one leading outside is not an error.
    fn check(&mut self, rel: &str, keep_link: bool) -> Result<Checked, SourceError> {
        let relp = std::path::Path::new(rel);
        if !relp.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
            return Err(SourceError::Refused(format!(
                "source `{rel}` is not a plain path inside the workspace; cbuild does not read it"
            )));
        }
        let dir_part = rel.rfind('/').map_or("", |i| &rel[..i]);
        if self.last_dir.as_deref() != Some(dir_part) {
            // Every directory above it, shortest first.
            let mut dir = PathBuf::new();
            let parents: Vec<_> = relp.parent().map(|p| p.components().collect()).unwrap_or_default();
            for c in parents {
                dir.push(c);
                if let Some(why) = self.check_dir(&dir) {
                    return Err(SourceError::Refused(format!("source `{rel}` is under {why}")));
                }
            }
            self.last_dir = Some(dir_part.to_string());
        }
        let md = self.stats.lstat(relp).map_err(|e| {
            SourceError::Other(format!(
                "hashing sources: {}",
                crate::cache::CacheError::Io { path: self.root.join(relp), source: e }
            ))
        })?;
        if !md.is_symlink() {
            return Ok(Checked::File(md, None));
        }
        let full = self.root.join(relp);
        let target = std::fs::read_link(&full).unwrap_or_default();
        match std::fs::canonicalize(&full) {
            // A kept link to a directory inside is a link in the app too (nothing to hash).
            Ok(c) if self.inside(&c) && keep_link && !c.is_file() => Ok(Checked::KeptLink(target)),
            Ok(c) if self.inside(&c) => FileStat::stat(&full).map(|m| Checked::File(m, Some(target))).map_err(|e| {
                SourceError::Other(format!(
                    "hashing sources: {}",
                    crate::cache::CacheError::Io { path: full.clone(), source: e }
                ))
            }),
            _ if keep_link => Ok(Checked::KeptLink(target)),
            Ok(c) => Err(SourceError::Refused(format!(
                "source `{rel}` is {}, outside the workspace; cbuild does not follow it",
                link_text(&target, Some(&c))
            ))),
            Err(e) => Err(SourceError::Refused(format!(
                "source `{rel}` is {}, which does not resolve inside the workspace ({e}); cbuild does not follow it",
                link_text(&target, None)
            ))),
        }
    }

    /// `None` if the workspace directory `dir` (whose parents were checked) resolves inside the
    /// workspace; else a description of the symlink that leaves it.
    fn check_dir(&mut self, dir: &std::path::Path) -> Option<String> {
        if let Some(r) = self.dirs.get(dir) {
            return r.clone();
        }
        let full = self.root.join(dir);
        crate::fs::reads::note(&full, true);
        let why = match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&full).unwrap_or_default();
                match std::fs::canonicalize(&full) {
                    Ok(c) if self.inside(&c) => None,
                    Ok(c) => Some(format!(
                        "`{}`, which is {}, outside the workspace; cbuild does not follow it",
                        dir.display(),
                        link_text(&target, Some(&c))
                    )),
                    Err(e) => Some(format!(
                        "`{}`, which is {}, which does not resolve inside the workspace ({e}); cbuild does not follow it",
                        dir.display(),
                        link_text(&target, None)
                    )),
                }
            }
            // Not a symlink (or missing: reading the source reports that).
            _ => None,
        };
        self.dirs.insert(dir.to_path_buf(), why.clone());
        why
    }
}

/// "a symlink to `T`", plus where it finally leads when that differs (a chain of links).
fn link_text(target: &std::path::Path, resolved: Option<&std::path::Path>) -> String {
    match resolved {
        Some(r) if r != target => format!("a symlink to `{}` (which leads to `{}`)", shown(target), shown(r)),
        _ => format!("a symlink to `{}`", shown(target)),
    }
}

/// Runs the graph. Returns when every action finished, failed or was skipped, or on Ctrl-C.
/// Executes `graph` (whose imported layouts it expands in place); the graph is lent, not copied:
/// a big build's action graph is tens of MB.
pub fn execute(
    graph: &mut ActionGraph,
    cache: Arc<Cache>,
    cfg: ExecConfig,
    reporter: Arc<dyn Reporter>,
) -> BuildReport {
    let (report, g) = execute_owned(std::mem::take(graph), cache, cfg, reporter);
    *graph = g;
    report
}

fn execute_owned(
    mut g: ActionGraph,
    cache: Arc<Cache>,
    cfg: ExecConfig,
    reporter: Arc<dyn Reporter>,
) -> (BuildReport, ActionGraph) {
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
                    ActionError::user(format!("the lock file `{}` does not exist", d.lock))
                        .hint(format!("create it with `cbuild lock {}`", a.label)),
                ));
            }
        }
    }
    if !report.errors.is_empty() {
        return (report, g);
    }
    let (sources, hashed) = match hash_sources(&g, &cfg, &cache) {
        Ok(x) => x,
        Err(e) => {
            report.errors.push((usize::MAX, e));
            return (report, g);
        }
    };
    report.files_hashed = hashed;
    reporter.event(&Event::Plan { actions: g.actions.len() });
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(cfg.jobs.clamp(1, 8)).enable_all().build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report.errors.push((usize::MAX, ActionError::env(format!("cannot start the scheduler: {e}"))));
            return (report, g);
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
        host_identity: Default::default(),
        debian_archive: cfg.debian_archive.clone(),
        remote: cfg.remote.clone(),
        uploads: cfg
            .remote
            .as_ref()
            .filter(|r| r.mode() == crate::remote::RemoteMode::ReadWrite)
            .map(|r| super::uploads::Uploader::new(r.clone(), cache.clone())),
        bindings: Default::default(),
        pending_runs: Default::default(),
        held_apps: Default::default(),
    });
    let started = Instant::now();
    report.lazy = Arc::new(super::lazy::Lazy::new(cfg.remote.clone().filter(|_| cfg.lazy)));
    rt.block_on(schedule(g.clone(), ctx.clone(), &cfg, &mut report));
    if let Some(ex) = &cfg.executor {
        report.remote_workers = ex.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    }
    finish_remote(&ctx, started.elapsed(), report.cancelled);
    let runs = std::mem::take(&mut *ctx.pending_runs.lock().unwrap_or_else(|p| p.into_inner()));
    report.keys = runs.iter().map(|r| r.key).collect();
    if let Err(e) = cache.record_runs(&runs) {
        reporter
            .event(&Event::Warning { message: format!("could not record the build history (`cbuild explain`): {e}") });
    }
    // Background blocking tasks (a layer being compressed) finish writing temp files; nothing
    // half-written becomes a cache entry because entries are put only after a runner succeeded.
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    // Every task holding the graph (and the context) has ended: handed back without a copy.
    let g = Arc::try_unwrap(g).unwrap_or_else(|a| (*a).clone());
    report.sources = Arc::try_unwrap(ctx).ok().map(|c| c.sources);
    (report, g)
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
    // Actions a remote executor runs do not use this machine's cores: they get their own, wider
    // limit (as Bazel's --jobs with remote execution), so N workers are kept busy.
    let remote = |id: ActionId| {
        cfg.executor.as_ref().is_some_and(|ex| ex.enabled() && super::remote_exec::remotable(&g.actions[id]))
    };
    let sems = [Arc::new(Semaphore::new(cfg.jobs.max(1))), Arc::new(Semaphore::new(super::remote_exec::REMOTE_JOBS))];
    type Finished = (ActionId, Result<(Arc<ActionOutput>, Outcome), ActionError>, tokio::sync::OwnedSemaphorePermit);
    let mut set: JoinSet<Finished> = JoinSet::new();
    // Ready actions wait here, not on a semaphore, so that a free slot goes to the action that
    // starts the longest chain (see `critical_path`), not to whichever became ready first.
    let height = critical_path(&g.actions, &dependents);
    let mut ready = [ReadyQueue::default(), ReadyQueue::default()];
    for id in (0..n).filter(|i| waiting[*i] == 0) {
        ready[usize::from(remote(id))].push(id, &height);
    }
    let mut stop = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        for (queue, sem) in ready.iter_mut().zip(&sems) {
            while !stop && !queue.is_empty() {
                let Ok(permit) = sem.clone().try_acquire_owned() else { break };
                let id = queue.pop().expect("not empty");
                let deps: Vec<Arc<ActionOutput>> =
                    g.actions[id].deps.iter().filter_map(|d| report.outputs[*d].clone()).collect();
                if deps.len() != g.actions[id].deps.len() {
                    continue; // a dependency failed: skip (the permit goes back)
                }
                let (g2, ctx2, build_id, ex) = (g.clone(), ctx.clone(), cfg.build_id.clone(), cfg.executor.clone());
                let lazy = report.lazy.clone();
                set.spawn(async move {
                    let r = run_one(&g2, id, &deps, &ctx2, &build_id, ex.as_ref(), &lazy).await;
                    // The slot is handed back with the result, freed only once the dependents it
                    // made ready are queued: otherwise it could go to a worse action first.
                    (id, r, permit)
                });
            }
        }
        if set.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                let (id, r, _permit) = match joined {
                    Ok(x) => x,
                    Err(e) if e.is_cancelled() => continue,
                    Err(e) => { report.errors.push((usize::MAX, ActionError::internal(format!("an action task panicked: {e}")))); stop = true; continue; }
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
                            if waiting[*d] == 0 { ready[usize::from(remote(*d))].push(*d, &height); }
                        }
                    }
                    Err(e) => {
                        ctx.reporter.event(&Event::Failed { label: a.label.to_string(), action: a.kind.mnemonic().into(), error: e.to_string() });
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

/// Ready actions, the one with the longest chain of dependents first (ties: the lowest id, the
/// order the graph was built in).
#[derive(Default)]
struct ReadyQueue(std::collections::BinaryHeap<(u32, std::cmp::Reverse<ActionId>)>);

impl ReadyQueue {
    fn push(&mut self, id: ActionId, height: &[u32]) {
        self.0.push((height[id], std::cmp::Reverse(id)));
    }
    fn pop(&mut self) -> Option<ActionId> {
        self.0.pop().map(|(_, std::cmp::Reverse(id))| id)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// For each action, the estimated cost of the longest chain from it to an action nothing depends
/// on (itself included): critical-path scheduling, as ninja (1.12) does. An action that a long
/// chain waits for (a genrule every image's `detect` needs, then `build`, then `export`) starts
/// before one that only a cheap last step waits for (a plain image's app layer), so the cores are
/// not left idle at the end waiting for a long chain started late. Costs are per kind
/// ([`typical_cost`]), not measured: a cold build has no history, and the order only has to be
/// good, never right (every order builds the same).
fn critical_path(actions: &[crate::model::action::Action], dependents: &[Vec<ActionId>]) -> Vec<u32> {
    // A dependency always has a smaller id than its dependents (the graph is built in topological
    // order): from the last action back, every dependent's height is known. (Were it not, the
    // order would only be worse, never the output different.)
    let mut height: Vec<u32> = actions.iter().map(|a| typical_cost(&a.kind)).collect();
    for id in (0..actions.len()).rev() {
        height[id] += dependents[id].iter().filter(|d| **d > id).map(|d| height[*d]).max().unwrap_or(0);
    }
    height
}

/// How long an action of this kind typically runs when it is not a cache hit, in rough relative
/// units (a buildpack `build` or a Debian image ≫ a user's genrule or a download > a layer, a
/// `detect` > writing a manifest). Only ever compared, to order ready actions.
fn typical_cost(kind: &ActionKind) -> u32 {
    match kind {
        ActionKind::CnbBuild { .. } | ActionKind::DebianImage(_) => 8,
        ActionKind::Genrule { .. } | ActionKind::PullImage { .. } | ActionKind::ImageTest { .. } => 4,
        ActionKind::Layer { .. }
        | ActionKind::ImportImage { .. }
        | ActionKind::CnbDetect(_)
        | ActionKind::BuilderImage { .. }
        | ActionKind::Buildpackage { .. } => 2,
        ActionKind::Buildpack { .. }
        | ActionKind::CnbExport(_)
        | ActionKind::Image { .. }
        | ActionKind::ReadBuilder { .. }
        | ActionKind::ReadBuildpackage { .. }
        | ActionKind::BuilderRunImage { .. }
        | ActionKind::ImageIndex { .. } => 1,
    }
}

/// Computes the key, answers from the cache or runs the action, stores and records the result.
async fn run_one(
    g: &ActionGraph,
    id: ActionId,
    deps: &[Arc<ActionOutput>],
    ctx: &Arc<RunCtx>,
    build_id: &str,
    executor: Option<&Arc<super::remote_exec::Executor>>,
    lazy: &Arc<super::lazy::Lazy>,
) -> Result<(Arc<ActionOutput>, Outcome), ActionError> {
    let a = &g.actions[id];
    let dep_map: BTreeMap<ActionId, Arc<ActionOutput>> = a.deps.iter().copied().zip(deps.iter().cloned()).collect();
    let kb = match runners::key(a, &dep_map, ctx) {
        Ok(kb) => kb,
        // A key that reads a dependency's bytes, still on the remote (a lazy hit): fetch, retry.
        Err(e) if !lazy.unfetched().is_empty() => {
            lazy.ensure(g, &a.deps, &ctx.cache).await.map_err(|_| e)?;
            runners::key(a, &dep_map, ctx)?
        }
        Err(e) => return Err(e),
    };
    let (key, components) = kb.finish();
    let label = a.label.to_string();
    let name = a.kind.mnemonic();
    let started = Instant::now();
    let cache = ctx.cache.clone();
    let uncacheable = !runners::runner(&a.kind).cacheable(a);
    let hit = if uncacheable {
        Ok(None)
    } else {
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || cache.get_action(&key))
            .await
            .map_err(|e| ActionError::internal(crate::execution::chain(&e)))?
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
        Ok(None) if !uncacheable => remote_lookup(ctx, &key, &a.kind, (name, &label), lazy.enabled()).await,
        _ => None,
    };
    let (remote_hit, pending) = match remote_hit {
        Some((o, p)) => (Some(o), p),
        None => (None, Vec::new()),
    };
    let exec_started = Instant::now();
    let (out, outcome) = match hit {
        Ok(Some(entry)) => match serde_json::from_str::<ActionOutput>(&entry.result_json) {
            Ok(o) => (o, Outcome::CachedLocal),
            Err(_) => {
                (execute_action(a, &dep_map, ctx, (executor, g, lazy), &key, &components).await?, Outcome::Executed)
            }
        },
        Ok(None) if remote_hit.is_some() => (remote_hit.unwrap(), Outcome::CachedRemote),
        Ok(None) => {
            ctx.reporter.event(&Event::Started { label: label.clone(), action: name.into() });
            (execute_action(a, &dep_map, ctx, (executor, g, lazy), &key, &components).await?, Outcome::Executed)
        }
        Err(e) => {
            ctx.reporter
                .event(&Event::Warning { message: format!("cache lookup failed, running `{label}` {name}: {e}") });
            (execute_action(a, &dep_map, ctx, (executor, g, lazy), &key, &components).await?, Outcome::Executed)
        }
    };
    let exec_ms = (outcome == Outcome::Executed).then(|| exec_started.elapsed().as_millis() as u64);
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
    let (label2, name2) = (label.clone(), name.to_string());
    // Run history is written once at the end of the build (one transaction, not one per action).
    ctx.pending_runs.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    let store = if outcome == Outcome::CachedLocal || uncacheable {
        Ok(())
    } else if outcome == Outcome::CachedRemote && !pending.is_empty() {
        // Stored locally once its bytes are here (never a local entry without them).
        lazy.add(
            id,
            pending,
            super::lazy::Store {
                key,
                name: name.to_string(),
                label: label.clone(),
                result_json: out.to_json(),
                blobs: out.blobs(),
            },
        );
        Ok(())
    } else {
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            cache
                .put_action(&key, &name2, &label2, &out2.to_json(), &out2.blobs())
                .map_err(|e| crate::execution::chain(&e))
        })
        .await
        .map_err(|e| ActionError::internal(crate::execution::chain(&e)))?
    };
    if let Err(e) = store {
        ctx.reporter.event(&Event::Warning {
            message: format!("could not store the result of `{label}` {name} in the cache: {e}"),
        });
    } else if !uncacheable {
        remote_store(ctx, &key, &out, &components, outcome, exec_ms).await;
    }
    ctx.reporter.event(&Event::Finished { label, action: name.into(), outcome, duration: started.elapsed() });
    Ok((Arc::new(out), outcome))
}

async fn execute_action(
    a: &crate::model::action::Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
    (executor, g, lazy): (Option<&Arc<super::remote_exec::Executor>>, &ActionGraph, &Arc<super::lazy::Lazy>),
    key: &Blake3,
    components: &crate::cache::Components,
) -> Result<ActionOutput, ActionError> {
    use super::remote_exec;
    // Executing reads the dependencies' bytes: lazy hits among them are fetched first.
    lazy.ensure(g, &a.deps, &ctx.cache).await?;
    let remote = executor.filter(|ex| ex.enabled() && remote_exec::remotable(a));
    let out = match remote {
        // The components' JSON only for a remote action (the worker stores it with the result).
        Some(ex) => {
            match remote_exec::run(ex, a, deps, ctx, key, &serde_json::to_string(components).unwrap_or_default())
                .await?
            {
                Ok(out) => out,
                Err(remote_exec::Infra(why)) => {
                    remote_exec::give_up(ex, ctx, &format!("`{}` {}", a.label, a.kind.mnemonic()), &why);
                    run_local(a, deps, ctx).await?
                }
            }
        }
        None => run_local(a, deps, ctx).await?,
    };
    check_sources_unchanged(a, ctx)?;
    Ok(out)
}

/// Runs `a` here. Whether bubblewrap can make a sandbox is asked only when an action that runs one
/// fails (once per process: a success is remembered): a broken sandbox then is an environment
/// error (exit 36) naming the fix, not the action's failure, and a build that runs sandboxes
/// that work starts no extra bwrap (a probe cost ≈ 10–16 ms on the critical path of every edit,
/// issue 23). An image test checks first: its runner reports a failed command as a test result.
async fn run_local(
    a: &crate::model::action::Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<ActionOutput, ActionError> {
    use crate::model::action::ActionKind;
    let sandboxed = matches!(
        a.kind,
        ActionKind::Genrule { .. }
            | ActionKind::ImageTest { .. }
            | ActionKind::CnbDetect(_)
            | ActionKind::CnbBuild { .. }
    );
    if matches!(a.kind, ActionKind::ImageTest { .. }) {
        sandbox_ready(a).await?;
    }
    match runners::runner(&a.kind).run(a, deps, ctx).await {
        Err(e) if sandboxed => Err(sandbox_ready(a).await.err().unwrap_or(e)),
        r => r,
    }
}

/// Whether bubblewrap can make a sandbox (checked once per process, see [`run_local`]); not
/// usable: an environment error (exit 36) saying how to fix it.
async fn sandbox_ready(a: &crate::model::action::Action) -> Result<(), ActionError> {
    let r = tokio::task::spawn_blocking(super::sandbox::ensure_available)
        .await
        .map_err(|e| ActionError::internal(crate::execution::chain(&e)))?;
    // The message carries bubblewrap's own error and the fix (`hint: …`).
    r.map_err(|e| ActionError::env(format!("`{}` {} needs a sandbox: {e}", a.label, a.kind.mnemonic())))
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
) -> Result<(), ActionError> {
    if outputs.iter().all(|o| o.remote_blobs().is_empty()) {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ActionError::of(&e))?;
    let ctx = RunCtx {
        root: PathBuf::new(),
        cache,
        sources: Default::default(),
        source_date_epoch: 0,
        reporter: Arc::new(super::events::NullReporter),
        registry_options: registry,
        registry_client: Default::default(),
        host_identity: Default::default(),
        debian_archive: None,
        remote: None,
        uploads: None,
        bindings: Default::default(),
        pending_runs: Default::default(),
        held_apps: Default::default(),
    };
    rt.block_on(async {
        for o in outputs {
            runners::pull::ensure_local(o, &ctx).await?;
        }
        Ok(())
    })
}

/// Looks an action up in the remote cache after a local miss. A hit is checked against the
/// action (signature when trusted keys are set, shape, blob list) and its blobs are fetched (each
/// verified against its sha256) before the caller fills it into the local cache. Any remote
/// problem, an untrusted or malformed entry included, is a warning and a local build, never a
/// failure; an unauthenticated hit (no trusted keys) is warned about once per build.
async fn remote_lookup(
    ctx: &Arc<RunCtx>,
    key: &Blake3,
    kind: &ActionKind,
    (name, label): (&str, &str),
    lazy: bool,
) -> Option<(ActionOutput, Vec<(crate::model::digest::Digest, u64)>)> {
    let remote = ctx.remote.clone()?;
    let (ctx2, key2, expected) = (ctx.clone(), *key, crate::remote::Expected::of(kind));
    let r =
        tokio::task::spawn_blocking(move || remote.lookup_lazy(&key2, &expected, ctx2.cache.cas(), lazy)).await.ok()?;
    let remote = ctx.remote.as_ref()?;
    if let Some(w) = remote.take_warning() {
        ctx.reporter.event(&Event::Warning { message: w });
    }
    match r {
        Ok(Some((hit, pending))) => {
            if hit.signer.is_none() {
                if let Some(w) = remote.unauthenticated_warning() {
                    ctx.reporter.event(&Event::Warning { message: w });
                }
            }
            Some((hit.output, pending))
        }
        Ok(None) => None,
        // An error that turned the remote off is printed once (above, by whichever lookup takes
        // the warning); the others are counted for the summary at the end of the build.
        Err(e) => {
            if e.is_entry_problem() || remote.reading() {
                remote.note(&e, &format!("`{label}` {name}"));
            }
            None
        }
    }
}

/// Queues the upload of an executed action's result (read-write remotes only), or the back-fill
/// of a local hit this cache never uploaded to the remote; records remote hits as present there.
async fn remote_store(
    ctx: &Arc<RunCtx>,
    key: &Blake3,
    out: &ActionOutput,
    components: &crate::cache::Components,
    outcome: Outcome,
    exec_ms: Option<u64>,
) {
    let (Some(_), Some(remote)) = (&ctx.uploads, &ctx.remote) else { return };
    if remote.health() != crate::remote::RemoteHealth::Healthy {
        return;
    }
    let Ok(components_json) = serde_json::to_string(components) else { return };
    let (ctx2, key2, out2) = (ctx.clone(), *key, out.clone());
    let _ = tokio::task::spawn_blocking(move || {
        let Some(up) = &ctx2.uploads else { return };
        match outcome {
            Outcome::CachedRemote => {
                let _ = ctx2.cache.mark_remote_has(&key2, up_url(&ctx2));
            }
            Outcome::CachedLocal if up.known(&key2) => {}
            Outcome::CachedLocal | Outcome::Executed => up.submit(super::uploads::Job::new(
                key2,
                out2.to_json(),
                components_json,
                out2.blobs(),
                exec_ms,
                outcome == Outcome::CachedLocal,
            )),
            Outcome::Failed => {}
        }
    })
    .await;
}

fn up_url(ctx: &RunCtx) -> &str {
    ctx.remote.as_ref().map(|r| r.url()).unwrap_or_default()
}

/// The end of a build's remote work: waits for queued uploads (with a deadline proportional to
/// the build's time), then prints what went wrong, once per kind.
fn finish_remote(ctx: &RunCtx, elapsed: std::time::Duration, cancelled: bool) {
    let Some(remote) = &ctx.remote else { return };
    if let Some(up) = &ctx.uploads {
        let deadline = if cancelled { std::time::Duration::ZERO } else { super::uploads::drain_deadline(elapsed) };
        let rep = up.drain(deadline);
        if rep.abandoned > 0 && !cancelled && remote.health() == crate::remote::RemoteHealth::Healthy {
            ctx.reporter.event(&Event::Warning {
                message: format!(
                    "remote cache `{}`: {} upload(s) not finished within {:.1} s; the next build uploads them",
                    remote.url(),
                    rep.abandoned,
                    deadline.as_secs_f64()
                ),
            });
        }
        if rep.failed > 0 {
            ctx.reporter.event(&Event::Warning {
                message: format!(
                    "remote cache `{}`: {} upload(s) failed; the next build retries them{}",
                    remote.url(),
                    rep.failed,
                    rep.first_error.map(|e| format!("; first: {e}")).unwrap_or_default()
                ),
            });
        }
    }
    if let Some(w) = remote.take_warning() {
        ctx.reporter.event(&Event::Warning { message: w });
    }
    for line in remote.problem_summary() {
        ctx.reporter.event(&Event::Warning { message: line });
    }
}

#[cfg(test)]
mod source_check_tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// A workspace `ws/` with `p/f.txt`, and `host/secret` beside it (outside).
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        std::fs::create_dir_all(ws.join("p/sub")).unwrap();
        std::fs::write(ws.join("p/f.txt"), "f").unwrap();
        std::fs::write(ws.join("p/sub/g.txt"), "g").unwrap();
        let host = t.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("secret"), "secret").unwrap();
        (t, ws, host)
    }

    fn refused(r: Result<Checked, SourceError>) -> String {
        match r {
            Err(SourceError::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn links_inside_are_followed() {
        let (_t, ws, _host) = tree();
        symlink("f.txt", ws.join("p/rel")).unwrap();
        symlink(ws.join("p/f.txt"), ws.join("p/abs-in")).unwrap();
        symlink("sub", ws.join("p/dirlink")).unwrap();
        symlink("../p/./sub/../f.txt", ws.join("p/dots-in")).unwrap();
        let mut c = SourceCheck::new(&ws).unwrap();
        for rel in ["p/f.txt", "p/rel", "p/abs-in", "p/dirlink/g.txt", "p/dots-in"] {
            match c.check(rel, false) {
                Ok(Checked::File(m, _)) => assert!(m.is_file(), "{rel}"),
                other => panic!("{rel}: {other:?}"),
            }
        }
    }

    #[test]
    fn links_leading_outside_are_refused_naming_source_and_target() {
        let (_t, ws, host) = tree();
        let secret = host.join("secret");
        symlink(&secret, ws.join("p/abs")).unwrap();
        symlink("../../host/secret", ws.join("p/dotdot")).unwrap();
        symlink("hop", ws.join("p/chain")).unwrap();
        symlink("../p/hop2", ws.join("p/hop")).unwrap();
        symlink(&secret, ws.join("p/hop2")).unwrap();
        symlink(&host, ws.join("p/hostdir")).unwrap();
        symlink("/nonexistent/x", ws.join("p/dangling")).unwrap();
        let mut c = SourceCheck::new(&ws).unwrap();
        let s = secret.display().to_string();
        let m = refused(c.check("p/abs", false));
        assert!(m.contains("`p/abs`") && m.contains(&format!("`{s}`")) && m.contains("outside the workspace"), "{m}");
        let m = refused(c.check("p/dotdot", false));
        assert!(m.contains("`../../host/secret`") && m.contains(&s), "{m}");
        let m = refused(c.check("p/chain", false));
        assert!(m.contains("`hop`") && m.contains(&s), "a chain names where it leads: {m}");
        let m = refused(c.check("p/hostdir/secret", false));
        assert!(
            m.contains("`p/hostdir/secret`") && m.contains("`p/hostdir`") && m.contains(&host.display().to_string()),
            "{m}"
        );
        let m = refused(c.check("p/dangling", false));
        assert!(m.contains("`/nonexistent/x`"), "{m}");
        assert!(matches!(c.check("../ws/p/f.txt", false), Err(SourceError::Refused(_))));
        // A missing plain file is reported as before (not as a refusal).
        assert!(matches!(c.check("p/missing", false), Err(SourceError::Other(m)) if m.contains("p/missing")));
    }

    #[test]
    fn app_links_are_kept_not_followed() {
        let (_t, ws, host) = tree();
        symlink(host.join("secret"), ws.join("p/abs")).unwrap();
        symlink("/usr/bin/python3-nowhere", ws.join("p/venv-python")).unwrap();
        symlink("f.txt", ws.join("p/rel")).unwrap();
        symlink("sub", ws.join("p/dirlink")).unwrap();
        symlink(&host, ws.join("p/hostdir")).unwrap();
        let mut c = SourceCheck::new(&ws).unwrap();
        assert!(matches!(c.check("p/abs", true), Ok(Checked::KeptLink(t)) if t == host.join("secret")));
        assert!(matches!(c.check("p/venv-python", true), Ok(Checked::KeptLink(_))));
        assert!(matches!(c.check("p/dirlink", true), Ok(Checked::KeptLink(_))));
        assert!(matches!(c.check("p/rel", true), Ok(Checked::File(..))), "inside: hashed as before");
        // A directory on the way is followed by the app copy too: refused.
        assert!(matches!(c.check("p/hostdir/secret", true), Err(SourceError::Refused(_))));
        assert_ne!(kept_link_digest(Path::new("a")), kept_link_digest(Path::new("b")));
    }

    #[test]
    fn a_symlinked_workspace_root_is_resolved() {
        let (t, ws, _host) = tree();
        let alias = t.path().join("alias");
        symlink(&ws, &alias).unwrap();
        symlink(ws.join("p/f.txt"), ws.join("p/abs-in")).unwrap();
        let mut c = SourceCheck::new(&alias).unwrap();
        assert!(matches!(c.check("p/abs-in", false), Ok(Checked::File(..))));
        assert!(matches!(c.check("p/f.txt", false), Ok(Checked::File(..))));
    }
}

/// The executor on action graphs built by hand (no Starlark, no sandbox: layers and images only).
#[cfg(test)]
mod execute_tests {
    use super::*;
    use crate::execution::events::RecordingReporter;
    use crate::model::action::{Action, ImageConfigSpec, Input, LayerFile};
    use crate::model::label::Label;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        cache: Arc<Cache>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir_all(&root).unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
        Fixture { _dir: dir, root, cache }
    }

    fn layer(files: &[&str]) -> ActionKind {
        ActionKind::Layer {
            files: files
                .iter()
                .map(|f| LayerFile { input: Input::Source(f.to_string()), dest: f.to_string() })
                .collect(),
            mode: None,
            uid: 0,
            gid: 0,
            symlinks: BTreeMap::new(),
            dirs: BTreeMap::new(),
            compression: "gzip".into(),
        }
    }

    fn image(layers: Vec<ActionId>) -> ActionKind {
        let labels = layers.iter().map(|l| format!("layer {l}")).collect();
        ActionKind::Image { base: None, layers, layer_labels: labels, config: ImageConfigSpec::default() }
    }

    /// Two layers (a.txt, b.txt) and an image of both; `bad` adds a layer of a missing file and an
    /// image depending on it.
    fn graph(bad: bool) -> ActionGraph {
        let mut g = ActionGraph::default();
        let l = |s: &str| Label::parse(s, None).unwrap();
        let a = g.add(&l("//:a"), layer(&["a.txt"]), vec![]);
        let b = g.add(&l("//:b"), layer(&["b.txt"]), vec![]);
        g.add(&l("//:img"), image(vec![a, b]), vec![a, b]);
        if bad {
            // An image whose base is a layer fails when it runs; an image on top of it never runs.
            let mut broken = image(vec![]);
            if let ActionKind::Image { base, .. } = &mut broken {
                *base = Some(a);
            }
            let x = g.add(&l("//:broken"), broken, vec![a]);
            g.add(&l("//:on-broken"), image(vec![]), vec![x]);
            if let ActionKind::Image { base, .. } = &mut g.actions[4].kind {
                *base = Some(x);
            }
        }
        g
    }

    fn run(f: &Fixture, g: ActionGraph) -> (BuildReport, Vec<crate::execution::Event>) {
        run_jobs(f, g, 2)
    }

    fn run_jobs(f: &Fixture, g: ActionGraph, jobs: usize) -> (BuildReport, Vec<crate::execution::Event>) {
        let cfg = ExecConfig {
            root: f.root.clone(),
            jobs,
            keep_going: true,
            source_date_epoch: 315_532_800,
            build_id: "t".into(),
            registry: Default::default(),
            debian_archive: None,
            remote: None,
            executor: None,
            lazy: false,
        };
        let rec = Arc::new(RecordingReporter::default());
        let mut g = g;
        let report = execute(&mut g, f.cache.clone(), cfg, rec.clone());
        let events = std::mem::take(&mut *rec.0.lock().unwrap());
        (report, events)
    }

    fn executed(events: &[crate::execution::Event]) -> Vec<String> {
        let mut v: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                crate::execution::Event::Finished { label, outcome: Outcome::Executed, .. } => Some(label.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// `//:short` (a layer, then one image) and `//:long` (a layer, then three images in a row),
    /// the short chain first in the graph.
    fn two_chains() -> ActionGraph {
        let mut g = ActionGraph::default();
        let l = |s: &str| Label::parse(s, None).unwrap();
        let short = g.add(&l("//:short"), layer(&["a.txt"]), vec![]);
        g.add(&l("//:short-img"), image(vec![short]), vec![short]);
        let long = g.add(&l("//:long"), layer(&["b.txt"]), vec![]);
        let mut prev = g.add(&l("//:long-img1"), image(vec![long]), vec![long]);
        for name in ["//:long-img2", "//:long-img3"] {
            prev = g.add(&l(name), image(vec![]), vec![prev]);
        }
        g
    }

    #[test]
    fn the_head_of_the_longest_chain_is_ready_first() {
        let g = two_chains();
        let mut dependents = vec![Vec::new(); g.actions.len()];
        for a in &g.actions {
            for d in &a.deps {
                dependents[*d].push(a.id);
            }
        }
        let h = critical_path(&g.actions, &dependents);
        // layer 2 + image 1 against layer 2 + three images.
        assert_eq!(h, [3, 1, 5, 3, 2, 1]);
        let mut q = ReadyQueue::default();
        for id in [0, 2] {
            q.push(id, &h);
        }
        assert_eq!(q.pop(), Some(2), "the long chain's layer goes first although declared second");
        assert_eq!(q.pop(), Some(0));
        assert!(q.is_empty());
        // Equal heights: the graph's order.
        let mut q = ReadyQueue::default();
        for id in [3, 0] {
            q.push(id, &h);
        }
        assert_eq!(q.pop(), Some(0));
    }

    #[test]
    fn one_slot_goes_to_the_longest_chain_and_the_images_are_the_same() {
        let f = fixture();
        std::fs::write(f.root.join("a.txt"), "a").unwrap();
        std::fs::write(f.root.join("b.txt"), "b").unwrap();
        let (r, ev) = run_jobs(&f, two_chains(), 1);
        assert!(r.ok(), "{:?}", r.errors);
        let started: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                crate::execution::Event::Started { label, .. } => Some(label.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(started[0], "//:long", "{started:?}");
        // The same outputs as with two slots (the order is never part of a result).
        let g = fixture();
        std::fs::write(g.root.join("a.txt"), "a").unwrap();
        std::fs::write(g.root.join("b.txt"), "b").unwrap();
        let (r2, _) = run_jobs(&g, two_chains(), 2);
        assert_eq!(format!("{:?}", r.outputs), format!("{:?}", r2.outputs));
    }

    #[test]
    fn runs_in_dependency_order_then_a_no_op_runs_nothing() {
        let f = fixture();
        std::fs::write(f.root.join("a.txt"), "a").unwrap();
        std::fs::write(f.root.join("b.txt"), "b").unwrap();
        let (r, ev) = run(&f, graph(false));
        assert!(r.ok(), "{:?}", r.errors);
        assert_eq!(executed(&ev), ["//:a", "//:b", "//:img"]);
        // Every dependency finished before its dependent started.
        let pos = |l: &str, started: bool| {
            ev.iter()
                .position(|e| match e {
                    crate::execution::Event::Started { label, .. } if started => label == l,
                    crate::execution::Event::Finished { label, .. } if !started => label == l,
                    _ => false,
                })
                .unwrap()
        };
        assert!(pos("//:a", false) < pos("//:img", true) && pos("//:b", false) < pos("//:img", true));
        let first = r.outputs[2].clone();
        let (r, ev) = run(&f, graph(false));
        assert_eq!((r.executed, r.cached_local), (0, 3));
        assert!(executed(&ev).is_empty());
        assert_eq!(r.outputs[2], first, "a hit gives the same output");
    }

    #[test]
    fn an_edit_reruns_only_what_depends_on_it() {
        let f = fixture();
        std::fs::write(f.root.join("a.txt"), "a").unwrap();
        std::fs::write(f.root.join("b.txt"), "b").unwrap();
        let (r, _) = run(&f, graph(false));
        assert!(r.ok());
        std::fs::write(f.root.join("b.txt"), "b2").unwrap();
        let (r, ev) = run(&f, graph(false));
        assert!(r.ok());
        assert_eq!(executed(&ev), ["//:b", "//:img"]);
    }

    #[test]
    fn a_failure_skips_its_dependents_and_keep_going_builds_the_rest() {
        let f = fixture();
        std::fs::write(f.root.join("a.txt"), "a").unwrap();
        std::fs::write(f.root.join("b.txt"), "b").unwrap();
        let (r, ev) = run(&f, graph(true));
        assert!(!r.ok());
        assert_eq!(r.errors.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3], "{:?}", r.errors);
        assert!(r.outputs[4].is_none(), "the dependent of a failed action never runs");
        assert_eq!(executed(&ev), ["//:a", "//:b", "//:img"], "keep_going built the independent targets");
        // A missing source is refused while hashing, before anything runs.
        let mut g = graph(false);
        g.add(&Label::parse("//:m", None).unwrap(), layer(&["missing.txt"]), vec![]);
        let (r, ev) = run(&f, g);
        assert!(r.errors.iter().any(|(_, e)| e.message.contains("missing.txt")), "{:?}", r.errors);
        assert!(executed(&ev).is_empty());
    }

    #[test]
    fn every_runner_declares_the_sources_the_executor_hashes() {
        let g = graph(false);
        let a: &Action = &g.actions[0];
        assert_eq!(super::source_inputs(a), vec![("a.txt".to_string(), true)]);
        assert!(super::source_inputs(&g.actions[2]).is_empty(), "an image reads no source");
    }
}
