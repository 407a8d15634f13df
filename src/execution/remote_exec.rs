//! Remote execution of the actions that run user code (`--remote-executor grpc://…`), and the
//! worker side that runs them (`cbuild worker`, in [`super::worker`]).
//!
//! **What goes remote.** Genrules with an `image` and the CNB detect and build phases, without
//! service bindings or env values: the actions that run user code in a sandbox, whose cost is the
//! user's.
//! Everything else stays local, on purpose: layer tar+compress and image assembly are I/O bound
//! on bytes the client has (shipping them costs more than making them), pulls and pushes talk to
//! registries, host-tool genrules run on the client's tools (their key names the client's host),
//! bindings and env values may carry secrets that must not leave the machine (a remote action's
//! order and Command are CAS blobs the server keeps), and tests start services.
//!
//! **What a remote action is.** The worker runs *the same runner* as a local build, so an image
//! built remotely has the digest of a local build's by construction. The REAPI `Action` is:
//!
//! ```text
//! input root   cbuild-order.json        the action (kind, label, dependency outputs, key, epoch)
//!              blobs/<sha256>           every blob of the dependency outputs (the build image's
//!                                       layer blobs too: the worker unpacks them, cached by digest)
//!              src/<workspace path>     the sources the action reads (files with their x bit;
//!                                       the app's kept symlinks as symlinks)
//! Command      ["cbuild", "exec-order", "cbuild-order.json"], SOURCE_DATE_EPOCH,
//!              platform: ISA, OSFamily, cbuild-build-image (the image's manifest digest), cbuild-protocol
//! result       the worker stores the output like any remote-cache writer (signed, under the
//!              action's cbuild key); the client reads it back with the cache's checks
//!              (signature, shape, every blob's sha256). stdout_raw carries a small JSON report:
//!              the worker's name, the action's output lines, or its error (kind = exit code).
//! ```
//!
//! `do_not_cache` is set: the server's own action cache is never consulted for these actions
//! (cbuild's key already was, and a hit must pass cbuild's checks).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::events::Event;
use super::runners::ctx::RunCtx;
use super::ActionError;
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput};
use crate::model::digest::{Blake3, Digest};
use crate::model::error::ErrorKind;
use crate::remote::exec::{Node, Tree, Uploads};
use crate::remote::grpc::Grpc;
use crate::remote::RemoteCache;

/// Version of the order format; a worker refuses another.
pub const PROTOCOL: u32 = 1;
pub const ORDER_FILE: &str = "cbuild-order.json";
/// The Command's arguments (a worker refuses any other command).
pub const ARGV: [&str; 3] = ["cbuild", "exec-order", ORDER_FILE];
/// Remote actions in flight at once (they use the workers' cores, not this machine's; each holds
/// an `Execute` stream, which servers count against their concurrent-RPC limits).
pub const REMOTE_JOBS: usize = 16;
/// Tries of an action the server throttles (`RESOURCE_EXHAUSTED`), with backoff 0.25 s → 8 s.
const THROTTLED_TRIES: u32 = 8;
/// How long one remote action may take, queueing included.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// What a worker runs: one action and everything it reads besides the files of the tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    pub protocol: u32,
    /// cbuild's key of the action (hex): where the worker stores the result.
    pub key: String,
    /// The key's components (JSON), stored with the result (`cbuild explain`).
    pub components: String,
    pub label: String,
    pub id: ActionId,
    pub kind: ActionKind,
    /// The action's dependencies in order, and each one's output.
    pub deps: Vec<(ActionId, ActionOutput)>,
    pub source_date_epoch: u64,
}

/// What a worker says about a run (the `ActionResult`'s `stdout_raw`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub worker: String,
    /// The action's output lines: (stream, text).
    pub lines: Vec<(String, String)>,
    /// The action's error: message and hints (its kind is the exit code).
    pub error: Option<(String, Vec<String>)>,
}

/// Largest report kept (output lines beyond it are dropped, with a note).
pub const MAX_REPORT: usize = 4 << 20;

/// Whether `a` runs on a remote executor (see the module doc for why the others do not). Env
/// values (a genrule's `env`, a phase's platform env from `--env`) are keyed as digests locally,
/// but a remote action would carry them in clear in the server's CAS: such actions stay local.
pub fn remotable(a: &Action) -> bool {
    match &a.kind {
        ActionKind::Genrule { image: Some(_), env, .. } => env.is_empty(),
        ActionKind::CnbDetect(p) | ActionKind::CnbBuild { phase: p, .. } => p.bindings.is_empty() && p.env.is_empty(),
        _ => false,
    }
}

/// The build's remote executor.
pub struct Executor {
    grpc: Arc<Grpc>,
    /// Reads the results workers store (the remote cache's checks; no time budget: a result that
    /// ran remotely is needed, not an optional speed-up).
    results: Arc<RemoteCache>,
    /// Set after an infrastructure failure: the rest of the build runs locally.
    off: AtomicBool,
    /// Actions each worker ran in this build.
    pub counts: Mutex<BTreeMap<String, usize>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("url", &self.grpc.url()).finish()
    }
}

impl Executor {
    pub fn new(grpc: Grpc, results: RemoteCache) -> Executor {
        Executor {
            grpc: Arc::new(grpc),
            results: Arc::new(results),
            off: AtomicBool::new(false),
            counts: Mutex::default(),
        }
    }

    /// Checks the server executes actions: `Err` with a message for the user if it only caches.
    pub fn check(&self) -> Result<(), String> {
        match self.grpc.exec_enabled() {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "`{}` offers no remote execution for instance `{}` (its capabilities list a cache only); use it as --remote-cache, or point --remote-executor at an execution service",
                self.grpc.url(),
                self.grpc.instance()
            )),
            Err(e) => Err(format!("remote executor: {e}")),
        }
    }

    /// Runs everything locally from now on.
    pub fn turn_off(&self) {
        self.off.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }
}

/// A failure of the remote machinery (not of the action): the caller runs the action locally.
pub struct Infra(pub String);

/// Whether `e` is the server asking to slow down (retried with backoff, not a failure).
fn throttled(e: &crate::remote::RemoteError) -> bool {
    matches!(e, crate::remote::RemoteError::Grpc { code: tonic::Code::ResourceExhausted, .. })
}

/// Runs `a` on the executor. `Ok(Err(Infra))`: the remote could not run it (the caller warns and
/// runs it locally); `Err`: the action itself failed remotely.
pub async fn run(
    ex: &Arc<Executor>,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
    key: &Blake3,
    components: &str,
) -> Result<Result<ActionOutput, Infra>, ActionError> {
    // Base-image layers still in a registry are fetched first: the worker gets every blob from
    // the CAS, never from a registry the client was allowed to reach.
    for o in deps.values() {
        super::runners::pull::ensure_local(o, ctx).await?;
    }
    let order = Order {
        protocol: PROTOCOL,
        key: key.to_hex().to_string(),
        components: components.to_string(),
        label: a.label.to_string(),
        id: a.id,
        kind: a.kind.clone(),
        deps: a.deps.iter().filter_map(|d| deps.get(d).map(|o| (*d, o.as_ref().clone()))).collect(),
        source_date_epoch: ctx.source_date_epoch,
    };
    let (ex2, ctx2, a2) = (ex.clone(), ctx.clone(), a.clone());
    let prepared = tokio::task::spawn_blocking(move || prepare(&ex2, &a2, &order, &ctx2))
        .await
        .map_err(|e| ActionError::internal(format!("preparing the remote action failed: {e}")))?;
    let action_digest = match prepared {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(e),
        Err(infra) => return Ok(Err(infra)),
    };
    let mut tries = 0;
    let resp = loop {
        match crate::remote::exec::execute(ex.grpc.clone(), action_digest.clone(), ACTION_TIMEOUT).await {
            Ok(r) => break r,
            Err(e) if throttled(&e) && tries + 1 < THROTTLED_TRIES => {
                tokio::time::sleep(Duration::from_millis(250 << tries)).await;
                tries += 1;
            }
            Err(e) => return Ok(Err(Infra(e.to_string()))),
        }
    };
    if let Some(s) = resp.status.as_ref().filter(|s| s.code != 0) {
        return Ok(Err(Infra(format!(
            "the server could not run it ({}: {})",
            tonic::Code::from(s.code).description(),
            s.message
        ))));
    }
    let Some(result) = resp.result else { return Ok(Err(Infra("the server answered without a result".into()))) };
    let report: Report = match serde_json::from_slice(&result.stdout_raw) {
        Ok(r) => r,
        Err(_) if result.exit_code == 0 => return Ok(Err(Infra("the worker's report is not readable".into()))),
        Err(_) => Report::default(),
    };
    let (label, name) = (a.label.to_string(), a.kind.mnemonic());
    for (stream, line) in &report.lines {
        ctx.reporter.event(&Event::Output {
            label: label.clone(),
            action: name.into(),
            stream: stream.clone(),
            line: line.clone(),
        });
    }
    let worker = if report.worker.is_empty() { "an unnamed worker".to_string() } else { report.worker.clone() };
    if result.exit_code != 0 {
        let kind = match result.exit_code {
            1 => ErrorKind::Build,
            2 => ErrorKind::User,
            36 => ErrorKind::Environment,
            _ => ErrorKind::Internal,
        };
        let (message, hints) = report.error.unwrap_or_else(|| (format!("exit code {}", result.exit_code), Vec::new()));
        return Err(ActionError { kind, message: format!("{message} (on remote worker `{worker}`)"), hints });
    }
    *ex.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(worker.clone()).or_default() += 1;
    ctx.reporter.event(&Event::Output {
        label,
        action: name.into(),
        stream: "cbuild".into(),
        line: format!("ran on remote worker `{worker}`"),
    });
    let (ex2, ctx2, key2, expected) = (ex.clone(), ctx.clone(), *key, crate::remote::Expected::of(&a.kind));
    let hit = tokio::task::spawn_blocking(move || ex2.results.lookup(&key2, &expected, ctx2.cache.cas()))
        .await
        .map_err(|e| ActionError::internal(format!("reading the remote result failed: {e}")))?;
    match hit {
        Ok(Some(h)) => Ok(Ok(h.output)),
        Ok(None) => Ok(Err(Infra(format!("worker `{worker}` ran it, but its result is not in the remote cache")))),
        Err(e) => Ok(Err(Infra(format!("the result of worker `{worker}` cannot be used: {e}")))),
    }
}

/// Turns the executor off for the rest of the build (after `why`), once, with one warning.
pub fn give_up(ex: &Executor, ctx: &RunCtx, who: &str, why: &str) {
    if !ex.off.swap(true, Ordering::Relaxed) {
        ctx.reporter.event(&Event::Warning {
            message: format!(
                "remote executor `{}`: {who}: {why}; this and the remaining actions run locally",
                ex.grpc.url()
            ),
        });
    }
}

/// Builds and uploads the input tree, the Command and the Action: the Action's digest.
/// `Ok(Err(_))`: the action's own inputs are wrong (a source vanished); `Err`: infrastructure.
#[allow(clippy::type_complexity)]
fn prepare(ex: &Executor, a: &Action, order: &Order, ctx: &RunCtx) -> Result<Result<re::Digest, ActionError>, Infra> {
    let cas = ctx.cache.cas();
    let mut tree = Tree::default();
    let mut up = Uploads::default();
    for (_, o) in &order.deps {
        let mut ds = o.blobs();
        ds.extend(o.remote_blobs().into_iter().map(|r| r.digest.clone()));
        for d in ds {
            let size = match cas.size(&d) {
                Ok(n) => n,
                Err(e) => return Ok(Err(ActionError::internal(format!("blob `{d}` of a dependency: {e}")))),
            };
            tree.add(&format!("blobs/{}", d.hex()), Node::File { digest: d.clone(), size, executable: false });
            up.files.insert(d.clone(), (size, cas.path(&d)));
        }
    }
    for (rel, follow) in super::runners::runner(&a.kind).sources(a) {
        let node = match source_node(ctx, &rel, follow) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        if let Node::File { digest, size, .. } = &node {
            up.files.insert(digest.clone(), (*size, cas.path(digest)));
        }
        tree.add(&format!("src/{rel}"), node);
    }
    let order_bytes = serde_json::to_vec(order).map_err(|e| Infra(e.to_string()))?;
    let od = Digest::of_bytes(&order_bytes);
    tree.add(ORDER_FILE, Node::File { digest: od, size: order_bytes.len() as u64, executable: false });
    up.messages.push(order_bytes);
    let (root, dirs) = tree.encode();
    up.messages.extend(dirs);
    let platform = platform(a, &order.deps);
    // `platform` moved to the Action in REAPI v2.2; servers of v2.0/2.1 read it here.
    #[allow(deprecated)]
    let command = re::Command {
        arguments: ARGV.iter().map(|s| s.to_string()).collect(),
        environment_variables: vec![re::command::EnvironmentVariable {
            name: "SOURCE_DATE_EPOCH".into(),
            value: order.source_date_epoch.to_string(),
        }],
        output_paths: vec!["cbuild-result".into()],
        platform: Some(platform.clone()),
        ..Default::default()
    };
    let command_bytes = command.encode_to_vec();
    let command_digest =
        crate::remote::grpc::proto_digest(&Digest::of_bytes(&command_bytes), command_bytes.len() as u64);
    up.messages.push(command_bytes);
    let action = re::Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(root),
        timeout: Some(bazel_remote_apis::google::protobuf::Duration {
            seconds: super::sandbox::DEFAULT_TIMEOUT.as_secs() as i64,
            nanos: 0,
        }),
        do_not_cache: true,
        platform: Some(platform),
        ..Default::default()
    };
    let action_bytes = action.encode_to_vec();
    let action_digest = crate::remote::grpc::proto_digest(&Digest::of_bytes(&action_bytes), action_bytes.len() as u64);
    up.messages.push(action_bytes);
    let mut tries = 0;
    loop {
        match up.send(&ex.grpc) {
            Ok(_) => break,
            Err(e) if throttled(&e) && tries + 1 < THROTTLED_TRIES => {
                std::thread::sleep(Duration::from_millis(250 << tries));
                tries += 1;
            }
            Err(e) => return Err(Infra(format!("uploading the inputs: {e}"))),
        }
    }
    Ok(Ok(action_digest))
}

/// The tree node of source `rel`: a file (copied into the local CAS, so its bytes are named and
/// cannot change between hashing and upload) or, for an app file kept as a link, the link.
fn source_node(ctx: &RunCtx, rel: &str, follow: bool) -> Result<Node, ActionError> {
    use std::os::unix::fs::PermissionsExt;
    let path = ctx.root.join(rel);
    if !follow {
        let md = std::fs::symlink_metadata(&path).map_err(|e| format!("reading `{rel}`: {e}"))?;
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(&path).map_err(|e| format!("reading `{rel}`: {e}"))?;
            return Ok(Node::Symlink { target: t.to_string_lossy().into_owned() });
        }
    }
    let real = super::sources::resolve_source(&ctx.root, rel)?;
    let f = std::fs::File::open(&real).map_err(|e| format!("reading `{rel}`: {e}"))?;
    let md = f.metadata().map_err(|e| format!("reading `{rel}`: {e}"))?;
    if !md.is_file() {
        return Err(ActionError::user(format!("source `{rel}` is not a regular file")));
    }
    let (digest, size) = ctx
        .cache
        .cas()
        .put_stream::<crate::cas::CasError>(|w| {
            std::io::copy(&mut std::io::BufReader::new(&f), w)
                .map(|_| ())
                .map_err(|source| crate::cas::CasError::Io { path: real.clone(), source })
        })
        .map_err(|e| ActionError::of(&e))?;
    Ok(Node::File { digest, size, executable: md.permissions().mode() & 0o111 != 0 })
}

/// The platform properties (sorted by name, as REAPI requires): what the worker must be
/// (`ISA`, `OSFamily`, speaking `cbuild-protocol`) and, for schedulers that pick a container
/// image, the build image's manifest digest.
fn platform(a: &Action, deps: &[(ActionId, ActionOutput)]) -> re::Platform {
    let image = match &a.kind {
        ActionKind::Genrule { image: Some(id), .. } => Some(*id),
        ActionKind::CnbDetect(p) | ActionKind::CnbBuild { phase: p, .. } => Some(p.build_image),
        _ => None,
    };
    let mut props = vec![("ISA".to_string(), host_isa().to_string()), ("OSFamily".to_string(), "linux".to_string())];
    if let Some(ActionOutput::Image { manifest, .. }) =
        image.and_then(|id| deps.iter().find(|(d, _)| *d == id)).map(|(_, o)| o)
    {
        props.push(("cbuild-build-image".into(), manifest.to_string()));
    }
    props.push(("cbuild-protocol".into(), PROTOCOL.to_string()));
    props.sort();
    re::Platform { properties: props.into_iter().map(|(name, value)| re::platform::Property { name, value }).collect() }
}

/// The `ISA` property of this machine (Bazel's and BuildGrid's spelling).
pub fn host_isa() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "aarch64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_properties_are_sorted_by_name() {
        let a = Action {
            id: 0,
            label: crate::model::label::Label::parse("//:x", None).unwrap(),
            kind: ActionKind::Genrule {
                srcs: Vec::new(),
                outs: vec!["o".into()],
                cmd: "true".into(),
                env: Default::default(),
                image: None,
            },
            deps: Vec::new(),
        };
        let p = platform(&a, &[]);
        let names: Vec<&str> = p.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ISA", "OSFamily", "cbuild-protocol"]);
        assert!(!remotable(&a), "a host-tool genrule runs on the client's tools");
        let in_image = |env: &[(&str, &str)]| Action {
            kind: ActionKind::Genrule {
                srcs: Vec::new(),
                outs: vec!["o".into()],
                cmd: "true".into(),
                env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                image: Some(1),
            },
            ..a.clone()
        };
        assert!(remotable(&in_image(&[])));
        assert!(!remotable(&in_image(&[("TOKEN", "s3cret")])), "env values would sit in the server's CAS");
    }
}
