//! `cbuild worker`: a bot of the Remote Workers API (`google.devtools.remoteworkers.v1test2`, as
//! BuildGrid's workers) that runs the remote actions of [`super::remote_exec`] with the same
//! runners, sandbox and cache code as a local build.
//!
//! ```text
//! CreateBotSession(properties ISA, OSFamily, cbuild-protocol; config capacity = --jobs)
//! loop: UpdateBotSession(our leases: ACTIVE while running, COMPLETED with the result)   long-poll,
//!       cancelled as soon as a lease finishes so the result is reported at once
//!   PENDING lease ─► task: Action ─► Command (must be `cbuild exec-order`) ─► input tree ─►
//!       blobs into the worker's CAS (sha256 checked) ─► sources into a fresh workspace dir ─►
//!       the runner ─► result stored in the remote cache (signed) ─► ActionResult (report)
//!   CANCELLED, or gone from the server's list ─► the task is dropped (its sandbox is killed)
//! ```
//!
//! Trust: the worker runs what any client of the server sends, so it runs only the kinds
//! [`remotable`](super::remote_exec::remotable) admits (user code in the sandbox, as non-root,
//! on the action's own image), checks every name of the input tree, keeps nothing of the client's
//! but content-addressed blobs, and never trusts a digest it did not compute (source hashes are
//! recomputed). Unpacked build images are cached by digest under the sandbox scratch root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::rpc::Status;
use prost::Message;

use super::events::{Event, Reporter};
use super::remote_exec::{Order, Report, ARGV, MAX_REPORT, ORDER_FILE, PROTOCOL};
use super::runners::ctx::RunCtx;
use crate::cache::Cache;
use crate::model::action::Action;
use crate::model::digest::{Blake3, Digest};
use crate::remote::exec::Node;
use crate::remote::grpc::Grpc;
use crate::remote::rwapi::{self, BotSession, KeyValue, Lease};
use crate::remote::RemoteCache;

/// What `cbuild worker` was told.
pub struct WorkerConfig {
    pub grpc: Grpc,
    /// The same server as a remote cache (read-write, signing): results and CNB cache state. One
    /// per lease: a client that met a server error stays off, which a long-lived worker must not.
    pub remote: Box<dyn Fn() -> crate::remote::Result<RemoteCache> + Send + Sync>,
    pub cache: Arc<Cache>,
    /// Where actions' workspaces are made.
    pub work_dir: PathBuf,
    pub bot_id: String,
    pub jobs: usize,
    /// Print one line per action (stderr).
    pub verbose: bool,
}

/// gRPC status codes the bot reports.
const UNAVAILABLE: i32 = 14;
const INVALID_ARGUMENT: i32 = 3;

enum Slot {
    Running(tokio::task::JoinHandle<()>),
    Done(Box<(Status, re::ActionResult)>),
}

/// Runs the bot until the process is stopped (SIGINT/SIGTERM) or the server cannot be reached
/// for a minute.
pub fn run(cfg: WorkerConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.jobs.clamp(2, 16))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the worker's runtime: {e}"))?;
    let cfg = Arc::new(cfg);
    rt.block_on(bot_loop(cfg))
}

async fn bot_loop(cfg: Arc<WorkerConfig>) -> Result<(), String> {
    let grpc = &cfg.grpc;
    // Connect (capabilities) on a blocking thread: the gRPC runtime must not wait on itself.
    let c2 = cfg.clone();
    let channel = tokio::task::spawn_blocking(move || c2.grpc.channel())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot reach `{}`: {e}", grpc.url()))?;
    // BuildGrid matches jobs against the primary device's properties; the worker's own list
    // says the same for other engines.
    let properties = vec![
        KeyValue::new("ISA", super::remote_exec::host_isa()),
        KeyValue::new("OSFamily", "linux"),
        KeyValue::new("cbuild-protocol", &PROTOCOL.to_string()),
    ];
    let worker = rwapi::Worker {
        devices: vec![rwapi::Device { handle: cfg.bot_id.clone(), properties: properties.clone() }],
        properties,
        configs: vec![KeyValue::new("capacity", &cfg.jobs.to_string())],
    };
    let slots: Arc<Mutex<BTreeMap<String, Slot>>> = Arc::default();
    let done = Arc::new(tokio::sync::Notify::new());
    let mut session: Option<BotSession> = None;
    let mut failures = 0u32;
    let term = async {
        let mut t = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match &mut t { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    };
    tokio::pin!(term);
    loop {
        let (path, method, req_session) = match &session {
            None => {
                let s = BotSession {
                    bot_id: cfg.bot_id.clone(),
                    status: rwapi::BOT_OK,
                    worker: Some(worker.clone()),
                    ..Default::default()
                };
                (rwapi::CREATE, "CreateBotSession", s)
            }
            Some(s) => {
                let mut s = s.clone();
                s.leases = report_leases(&slots);
                s.status = rwapi::BOT_OK;
                s.worker = Some(worker.clone());
                (rwapi::UPDATE, "UpdateBotSession", s)
            }
        };
        let reported: Vec<String> =
            req_session.leases.iter().filter(|l| l.state == rwapi::COMPLETED).map(|l| l.id.clone()).collect();
        // The server waits for work up to 80% of the deadline; a finished lease cancels the wait.
        let timeout = Duration::from_secs(8);
        let call = async {
            let mut g = tonic::client::Grpc::new(channel.clone());
            g.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let p = tonic::codegen::http::uri::PathAndQuery::from_static(path);
            if session.is_none() {
                let req = rwapi::CreateBotSessionRequest {
                    parent: grpc.instance().to_string(),
                    bot_session: Some(req_session),
                };
                g.unary(grpc.with_headers(req, timeout), p, tonic_prost::ProstCodec::<_, BotSession>::default()).await
            } else {
                let req =
                    rwapi::UpdateBotSessionRequest { name: req_session.name.clone(), bot_session: Some(req_session) };
                g.unary(grpc.with_headers(req, timeout), p, tonic_prost::ProstCodec::<_, BotSession>::default()).await
            }
        };
        let answer = tokio::select! {
            r = tokio::time::timeout(timeout + Duration::from_secs(2), call) => Some(r),
            _ = done.notified() => None,
            _ = &mut term => {
                let n = abort_all(&slots);
                eprintln!("cbuild worker: stopping ({n} running action(s) abandoned; the server gives them to another worker)");
                return Ok(());
            }
        };
        let Some(answer) = answer else { continue };
        match answer {
            Ok(Ok(resp)) => {
                failures = 0;
                let s = resp.into_inner();
                if session.is_none() && cfg.verbose {
                    eprintln!("cbuild worker: session `{}` on `{}`", s.name, grpc.url());
                }
                sync_leases(&cfg, &slots, &done, &s.leases, &reported);
                session = Some(s);
                // At full capacity the server answers at once: pace the heartbeats (well inside
                // its keepalive timeout), or report as soon as an action finishes.
                if slots.lock().unwrap_or_else(|p| p.into_inner()).len() >= cfg.jobs {
                    tokio::select! {
                        _ = done.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
            Ok(Err(status)) => {
                let e = grpc.error(method, status.clone());
                match status.code() {
                    // Our session is gone (it expired): its leases went back to the queue.
                    tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::DataLoss
                        if session.is_some() =>
                    {
                        eprintln!("cbuild worker: {e}; starting a new session");
                        abort_all(&slots);
                        session = None;
                    }
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {}
                    _ => {
                        failures += 1;
                        eprintln!("cbuild worker: {e}");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(failures.min(10)))).await;
                    }
                }
            }
            Err(_) => {}
        }
        if failures > 60 {
            abort_all(&slots);
            return Err(format!("`{}` failed {failures} times in a row; giving up", grpc.url()));
        }
    }
}

/// Our leases as the server must see them: ACTIVE while running, COMPLETED with the result.
fn report_leases(slots: &Mutex<BTreeMap<String, Slot>>) -> Vec<Lease> {
    let slots = slots.lock().unwrap_or_else(|p| p.into_inner());
    slots
        .iter()
        .map(|(id, s)| match s {
            Slot::Running(_) => Lease { id: id.clone(), state: rwapi::ACTIVE, ..Default::default() },
            Slot::Done(done) => Lease {
                id: id.clone(),
                state: rwapi::COMPLETED,
                status: Some(done.0.clone()),
                result: Some(rwapi::pack(rwapi::ACTION_RESULT_URL, &done.1)),
                ..Default::default()
            },
        })
        .collect()
}

/// Starts new leases, drops cancelled or withdrawn ones, forgets completions the server took.
fn sync_leases(
    cfg: &Arc<WorkerConfig>,
    slots: &Arc<Mutex<BTreeMap<String, Slot>>>,
    done: &Arc<tokio::sync::Notify>,
    leases: &[Lease],
    reported: &[String],
) {
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    // The server took our completions (a retried job may come back at once under the same id:
    // it is then listed below as a new lease).
    for id in reported {
        s.remove(id);
    }
    let listed: std::collections::BTreeSet<&str> = leases.iter().map(|l| l.id.as_str()).collect();
    // Running leases the server no longer lists were taken back (expired, cancelled).
    let gone: Vec<String> = s
        .iter()
        .filter(|(id, v)| matches!(v, Slot::Running(_)) && !listed.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        if let Some(Slot::Running(h)) = s.remove(&id) {
            h.abort();
            if cfg.verbose {
                eprintln!("cbuild worker: lease `{id}` was withdrawn by the server; its action is stopped");
            }
        }
    }
    for l in leases {
        match l.state {
            rwapi::CANCELLED => {
                if let Some(Slot::Running(h)) = s.remove(&l.id) {
                    h.abort();
                    if cfg.verbose {
                        eprintln!("cbuild worker: lease `{}` was cancelled; its action is stopped", l.id);
                    }
                }
            }
            rwapi::PENDING | rwapi::ACTIVE if !s.contains_key(&l.id) => {
                let (cfg2, slots2, done2, lease) = (cfg.clone(), slots.clone(), done.clone(), l.clone());
                let h = tokio::spawn(async move {
                    let id = lease.id.clone();
                    let (status, result) = run_lease(&cfg2, &lease).await;
                    let mut s = slots2.lock().unwrap_or_else(|p| p.into_inner());
                    if s.contains_key(&id) {
                        s.insert(id, Slot::Done(Box::new((status, result))));
                    }
                    drop(s);
                    done2.notify_one();
                });
                s.insert(l.id.clone(), Slot::Running(h));
            }
            _ => {}
        }
    }
}

fn abort_all(slots: &Mutex<BTreeMap<String, Slot>>) -> usize {
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0;
    for (_, v) in std::mem::take(&mut *s) {
        if let Slot::Running(h) = v {
            h.abort();
            n += 1;
        }
    }
    n
}

/// Collects the action's output lines for the report.
#[derive(Default)]
struct Lines(Mutex<(Vec<(String, String)>, usize)>);

impl Reporter for Lines {
    fn event(&self, e: &Event) {
        let (stream, line) = match e {
            Event::Output { stream, line, .. } => (stream.clone(), line.clone()),
            Event::Warning { message } => ("warning".to_string(), message.clone()),
            _ => return,
        };
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.1 += line.len() + stream.len() + 8;
        if g.1 <= MAX_REPORT {
            g.0.push((stream, line));
        }
    }
}

/// Runs one lease: the status (OK when the action ran, whatever its outcome; UNAVAILABLE when
/// the worker could not run it, which the server retries elsewhere) and the result.
async fn run_lease(cfg: &Arc<WorkerConfig>, lease: &Lease) -> (Status, re::ActionResult) {
    let started = std::time::Instant::now();
    let lines = Arc::new(Lines::default());
    let r = run_action(cfg, lease, lines.clone()).await;
    let mut report = Report { worker: cfg.bot_id.clone(), ..Default::default() };
    report.lines = std::mem::take(&mut lines.0.lock().unwrap_or_else(|p| p.into_inner()).0);
    let (code, message, exit) = match r {
        Ok((label, Ok(()))) => {
            if cfg.verbose {
                eprintln!("cbuild worker: {label} done in {:.1} s", started.elapsed().as_secs_f64());
            }
            (0, String::new(), 0)
        }
        Ok((label, Err(e))) => {
            if cfg.verbose {
                eprintln!("cbuild worker: {label} failed: {}", e.message);
            }
            let exit = i32::from(e.kind.exit_code());
            report.error = Some((e.message, e.hints));
            (0, String::new(), exit)
        }
        Err((code, m)) => {
            eprintln!("cbuild worker: lease `{}`: {m}", lease.id);
            (code, m, 0)
        }
    };
    let result = re::ActionResult {
        exit_code: exit,
        stdout_raw: serde_json::to_vec(&report).unwrap_or_default(),
        execution_metadata: Some(re::ExecutedActionMetadata { worker: cfg.bot_id.clone(), ..Default::default() }),
        ..Default::default()
    };
    (Status { code, message, details: Vec::new() }, result)
}

type LeaseError = (i32, String);

/// Fetches and runs the action of a lease: `Ok((label, outcome))` once it ran.
async fn run_action(
    cfg: &Arc<WorkerConfig>,
    lease: &Lease,
    lines: Arc<Lines>,
) -> Result<(String, Result<(), super::ActionError>), LeaseError> {
    let bad = |m: String| (INVALID_ARGUMENT, m);
    let unavailable = |m: String| (UNAVAILABLE, m);
    let payload = lease.payload.clone().ok_or_else(|| bad("the lease has no payload".into()))?;
    // Fetching: blocking gRPC calls and file writes.
    let cfg2 = cfg.clone();
    let remote = Arc::new((cfg.remote)().map_err(|e| unavailable(format!("the remote cache: {e}")))?);
    let remote2 = remote.clone();
    let staged = tokio::task::spawn_blocking(move || stage(&cfg2, &remote2, &payload))
        .await
        .map_err(|e| unavailable(e.to_string()))??;
    let Staged { order, action: a, ws } = staged;
    let label = format!("{} {}", order.label, a.kind.mnemonic());
    if cfg.verbose {
        eprintln!("cbuild worker: running {label} (lease `{}`)", lease.id);
    }
    let deps: BTreeMap<_, _> = order.deps.iter().map(|(d, o)| (*d, Arc::new(o.clone()))).collect();
    let ctx = Arc::new(RunCtx {
        root: ws.path().to_path_buf(),
        cache: cfg.cache.clone(),
        sources: Default::default(),
        source_date_epoch: order.source_date_epoch,
        reporter: lines.clone(),
        registry_options: Default::default(),
        registry_client: Default::default(),
        host_identity: Default::default(),
        debian_archive: None,
        remote: Some(remote.clone()),
        uploads: Some(super::uploads::Uploader::new(remote.clone(), cfg.cache.clone())),
        bindings: Default::default(),
        pending_runs: Default::default(),
        held_apps: Default::default(),
    });
    let out = super::runners::runner(&a.kind).run(&a, &deps, &ctx).await;
    let out = match out {
        Ok(o) => o,
        Err(e) => return Ok((label, Err(e))),
    };
    // The result, as any remote-cache writer stores it; then what the runner queued (a CNB
    // target's cache state).
    let key = Blake3::from_hex(&order.key).ok_or_else(|| bad("the order's key is not a blake3 digest".into()))?;
    let (ctx2, out2, components) = (ctx.clone(), out.clone(), order.components.clone());
    let stored = tokio::task::spawn_blocking(move || {
        let r = remote.put_action(&key, &out2.to_json(), &components, &out2.blobs(), ctx2.cache.cas(), None);
        if let Some(u) = &ctx2.uploads {
            u.drain(Duration::from_secs(120));
        }
        r
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    match stored {
        Ok(s) if s.skipped_read_only => Err(unavailable("the worker cannot store results (no signing key)".into())),
        Ok(_) => Ok((label, Ok(()))),
        Err(e) => Err(unavailable(format!("storing the result: {e}"))),
    }
}

struct Staged {
    order: Order,
    action: Action,
    ws: tempfile::TempDir,
}

/// Reads the Action, its Command and input tree; puts every blob into the worker's CAS (each
/// checked against its sha256) and the sources into a fresh workspace dir.
fn stage(
    cfg: &WorkerConfig,
    remote: &RemoteCache,
    payload: &bazel_remote_apis::google::protobuf::Any,
) -> Result<Staged, LeaseError> {
    let bad = |m: String| (INVALID_ARGUMENT, m);
    let unavailable = |m: String| (UNAVAILABLE, m);
    let g = &cfg.grpc;
    let action = match payload.type_url.as_str() {
        rwapi::ACTION_URL => re::Action::decode(payload.value.as_slice()).map_err(|e| bad(e.to_string()))?,
        rwapi::DIGEST_URL => {
            let d = re::Digest::decode(payload.value.as_slice()).map_err(|e| bad(e.to_string()))?;
            let bytes = g.get_bytes(&d).map_err(|e| unavailable(format!("the Action: {e}")))?;
            re::Action::decode(bytes.as_slice()).map_err(|e| bad(e.to_string()))?
        }
        other => return Err(bad(format!("a lease payload of type `{other}`"))),
    };
    let cd = action.command_digest.ok_or_else(|| bad("the Action has no command".into()))?;
    let command =
        re::Command::decode(g.get_bytes(&cd).map_err(|e| unavailable(format!("the Command: {e}")))?.as_slice())
            .map_err(|e| bad(e.to_string()))?;
    if command.arguments != ARGV {
        return Err(bad(format!("this worker runs cbuild actions only, not `{}`", command.arguments.join(" "))));
    }
    let root = action.input_root_digest.ok_or_else(|| bad("the Action has no input root".into()))?;
    let tree = crate::remote::exec::read_tree(g, &root).map_err(|e| unavailable(e.to_string()))?;
    let order = match tree.get(ORDER_FILE) {
        Some(Node::File { digest, size, .. }) => {
            let bytes = g
                .get_bytes(&crate::remote::grpc::proto_digest(digest, *size))
                .map_err(|e| unavailable(format!("the order: {e}")))?;
            serde_json::from_slice::<Order>(&bytes).map_err(|e| bad(format!("the order: {e}")))?
        }
        _ => return Err(bad(format!("the input root has no `{ORDER_FILE}`"))),
    };
    if order.protocol != PROTOCOL {
        return Err(bad(format!("order protocol {} (this worker speaks {PROTOCOL})", order.protocol)));
    }
    let action = Action {
        id: order.id,
        label: crate::model::label::Label::parse(&order.label, None)
            .map_err(|e| bad(format!("the order's label: {e}")))?,
        kind: order.kind.clone(),
        deps: order.deps.iter().map(|(d, _)| *d).collect(),
    };
    if !super::remote_exec::remotable(&action) {
        return Err(bad(format!("a `{}` action does not run on workers", action.kind.mnemonic())));
    }
    let cas = cfg.cache.cas();
    let fetch = |d: &Digest, size: u64| -> Result<(), LeaseError> {
        if cas.contains(d) && cas.size(d).ok() == Some(size) {
            return Ok(());
        }
        remote.fetch_sized_blob(d, size, cas).map(|_| ()).map_err(|e| unavailable(format!("blob `{d}`: {e}")))
    };
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| unavailable(e.to_string()))?;
    let ws =
        tempfile::Builder::new().prefix("ws-").tempdir_in(&cfg.work_dir).map_err(|e| unavailable(e.to_string()))?;
    for (path, node) in tree.iter() {
        if let Some(hex) = path.strip_prefix("blobs/") {
            let Node::File { digest, size, .. } = node else { return Err(bad(format!("`{path}` is not a file"))) };
            if digest.hex() != hex {
                return Err(bad(format!("`{path}` holds blob `{digest}`")));
            }
            fetch(digest, *size)?;
        } else if let Some(rel) = path.strip_prefix("src/") {
            place_source(ws.path(), rel, node, cas, &fetch)?;
        }
    }
    Ok(Staged { order, action, ws })
}

/// Writes source `rel` of the tree under `ws` (names were checked by `read_tree`: no `..`, no
/// `/`; the directories are made here, so no symlink is followed on the way).
fn place_source(
    ws: &Path,
    rel: &str,
    node: &Node,
    cas: &crate::cas::BlobDir,
    fetch: &dyn Fn(&Digest, u64) -> Result<(), LeaseError>,
) -> Result<(), LeaseError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| (UNAVAILABLE, format!("placing source `{rel}`: {e}"));
    let dst = ws.join(rel);
    // Each directory on the way is made here or was made here: a symlink of the tree (placed
    // before `link/file` in name order) is never followed out of the workspace.
    let mut cur = ws.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for p in &parts[..parts.len() - 1] {
        cur.push(p);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err((INVALID_ARGUMENT, format!("source `{rel}` lies under a symlink or file of the tree")))
            }
            Err(_) => std::fs::create_dir(&cur).map_err(io)?,
        }
    }
    match node {
        Node::File { digest, size, executable } => {
            fetch(digest, *size)?;
            std::fs::copy(cas.path(digest), &dst).map_err(io)?;
            let mode = if *executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        Node::Symlink { target } => std::os::unix::fs::symlink(target, &dst).map_err(io)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_leases_are_reported_completed_with_their_result() {
        let slots = Mutex::new(BTreeMap::new());
        let result = re::ActionResult { exit_code: 1, ..Default::default() };
        slots.lock().unwrap().insert("a".to_string(), Slot::Done(Box::new((Status::default(), result.clone()))));
        let l = report_leases(&slots);
        assert_eq!(l[0].state, rwapi::COMPLETED);
        let any = l[0].result.as_ref().unwrap();
        assert_eq!(any.type_url, rwapi::ACTION_RESULT_URL);
        assert_eq!(re::ActionResult::decode(any.value.as_slice()).unwrap(), result);
    }
}
