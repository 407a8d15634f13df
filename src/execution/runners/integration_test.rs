//! The `integration_test` runner: starts every image of the test in its own sandbox, all joined to
//! ONE fresh loopback-only network namespace, waits for each to be ready, runs the test command on
//! the host side (sandboxed, in the same namespace), then stops everything. Keyed by the images'
//! digests and the test; a pass is the output, a failure a Build error never stored.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use super::ctx::RunCtx;
use super::image_test::{failed, Fail};
use super::image_test::{log_dir, write_log};
use crate::cache::{ComponentValue, KeyBuilder};
use crate::execution::container::{container_spec, Overrides};
use crate::execution::probe::{self, NetNs};
use crate::execution::sandbox::{self, Mount, RootFs, SandboxError, SandboxOutcome, SandboxSpec};
use crate::execution::ActionError;
use crate::fs::confined::Root;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::model::test_spec::*;
use crate::oci::Image;

/// Log lines of each service (and of the test) shown in a failure message.
const LOG_TAIL: usize = 10;
/// Bytes of each process's output kept for the test log.
const MAX_LOG_BYTES: usize = 4 << 20;

fn parts(a: &Action) -> (&TestSpec, &IntegrationSpec) {
    match &a.kind {
        ActionKind::ImageTest { spec, integration: Some(it), .. } => (spec, it),
        _ => unreachable!("the integration_test runner got another kind"),
    }
}

fn manifest_of(deps: &super::seam::Deps, s: &ServiceSpec) -> Result<String, ActionError> {
    match deps.get(&s.image).map(|o| o.as_ref()) {
        Some(ActionOutput::Image { manifest, .. }) => Ok(manifest.to_string()),
        _ => Err(ActionError::internal(format!("integration_test: the output of `{}` is missing", s.label))),
    }
}

pub fn key(kb: KeyBuilder, a: &Action, deps: &super::seam::Deps, ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
    let (spec, it) = parts(a);
    let mut kb = kb.component("timeout_secs", spec.timeout_secs);
    // Each service by name: its image's digest and how it is started and checked (canonical JSON
    // of fixed fields; the graph-local action id and the label are not part of it). Env values
    // as digests: they may be tokens, and key components are stored and uploaded.
    for s in &it.services {
        let how = serde_json::json!({
            "process": s.process, "args": s.args, "port": s.port,
            "http_path": s.http_path, "http_status": s.http_status, "ready_timeout_secs": s.ready_timeout_secs,
        });
        kb = kb
            .component(&format!("service {}", s.name), ComponentValue::list([manifest_of(deps, s)?, how.to_string()]))
            .component(&format!("service {} env", s.name), ComponentValue::env_map(&s.env));
    }
    // The test's files as staged (content and executable bit: the copy keeps the mode).
    let mut srcs = BTreeMap::new();
    for (rel, path) in &it.test.srcs {
        let d =
            ctx.sources.digest(path).ok_or_else(|| ActionError::internal(format!("source `{path}` was not hashed")))?;
        let x = ctx.sources.stamp(path).is_some_and(|st| st.executable());
        srcs.insert(rel.clone(), ComponentValue::from(format!("blake3:{d}{}", if x { "+x" } else { "" })));
    }
    Ok(kb
        .component("test_argv", ComponentValue::list(it.test.argv.clone()))
        .component("test_env", ComponentValue::env_map(&it.test.env))
        .component("test_srcs", ComponentValue::map(srcs))
        // The test command runs on the host's tools (curl, sh, …): their identity is in the key.
        .component("host", ctx.host_identity.get_or_init(super::ctx::host_identity).as_str()))
}

/// One service ready to start: its image, root file system and sandbox.
struct Prepared {
    s: ServiceSpec,
    spec: SandboxSpec,
}

pub async fn run(a: &Action, deps: &super::seam::Deps, ctx: &Arc<RunCtx>) -> Result<ActionOutput, ActionError> {
    let (spec, it) = parts(a);
    let mut images = Vec::new();
    for s in &it.services {
        let out = deps.get(&s.image).ok_or_else(|| ActionError::internal("integration_test: an image is missing"))?;
        super::pull::ensure_local(out, ctx).await?;
        let ActionOutput::Image { manifest, .. } = out.as_ref() else {
            return Err(ActionError::internal(format!("integration_test: `{}` is not an image", s.label)));
        };
        let (manifest, ctx2) = (manifest.clone(), ctx.clone());
        let (img, rootfs) = tokio::task::spawn_blocking(move || {
            let img = Image::load(ctx2.cache.cas(), &manifest).map_err(|e| ActionError::of(&e))?;
            let root = super::cnb_common::ensure_rootfs(&img, ctx2.cache.cas())?;
            Ok::<_, ActionError>((img, root))
        })
        .await
        .map_err(|e| ActionError::of(&e))??;
        images.push((img, rootfs));
    }
    let timeout = Duration::from_secs(spec.timeout_secs);
    let log_path = ctx.root.join(log_dir(&a.label)).join(format!("{}.log", a.label.name));
    let mut failures = Vec::new();
    for attempt in 1..=spec.retries + 1 {
        let started = Instant::now();
        let logs = Logs::new(&it.services);
        let r = match tokio::time::timeout(timeout, attempt_once(it, &images, ctx, &logs)).await {
            Ok(r) => r,
            // Dropping the attempt killed every sandbox (kill_on_drop, --die-with-parent) and
            // closed the namespace.
            Err(_) => Err(Fail::Check(format!(
                "the test timed out: expected the services to be ready and the test to finish within {}s \
                 (`timeout`), got {} still running",
                spec.timeout_secs,
                logs.phase.lock().unwrap_or_else(|p| p.into_inner())
            ))),
        };
        let mut log = logs.full_text();
        let _ = writeln!(log, "attempt {attempt}: {}", if r.is_ok() { "passed" } else { "FAILED" });
        write_log(&log_path, &log, attempt);
        match r {
            Ok(()) => {
                let result = TestResult {
                    checks: it.services.len() + 1,
                    attempts: attempt,
                    flaky: attempt > 1,
                    duration_ms: started.elapsed().as_millis() as u64,
                    failures,
                };
                let json = serde_json::to_string(&result).map_err(|e| ActionError::of(&e))?;
                return Ok(ActionOutput::Data { json, blobs: vec![] });
            }
            Err(Fail::Check(m)) => failures.push(format!("{m}{}", logs.tails())),
            Err(Fail::Error(e)) => return Err(e),
        }
    }
    let n = failures.len();
    let last = failures.pop().unwrap_or_default();
    let tries = if n > 1 { format!(" (all {n} attempts failed)") } else { String::new() };
    let shown = log_path.strip_prefix(&ctx.root).unwrap_or(&log_path).display().to_string();
    Err(ActionError::build(format!("{last}{tries}")).hint(format!("the test log is `{shown}`")))
}

/// The output of one process: its last lines (for messages) and up to [`MAX_LOG_BYTES`] of it.
#[derive(Default)]
struct Output {
    last: VecDeque<String>,
    full: String,
}

impl Output {
    fn push(&mut self, line: &str) {
        if self.last.len() == LOG_TAIL {
            self.last.pop_front();
        }
        self.last.push_back(line.to_string());
        if self.full.len() < MAX_LOG_BYTES {
            self.full.push_str(line);
            self.full.push('\n');
        }
    }
}

type Shared = Arc<Mutex<Output>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one attempt wrote, kept outside the attempt so that a timeout still shows it.
struct Logs {
    services: Vec<(String, String, Shared)>,
    test: Shared,
    /// What is running now, for a timeout's message.
    phase: Mutex<String>,
}

impl Logs {
    fn new(services: &[ServiceSpec]) -> Logs {
        Logs {
            services: services.iter().map(|s| (s.name.clone(), s.label.clone(), Shared::default())).collect(),
            test: Shared::default(),
            phase: Mutex::new("the start of the services".into()),
        }
    }

    fn set_phase(&self, p: impl Into<String>) {
        *lock(&self.phase) = p.into();
    }

    /// The last lines of every service and of the test, for a failure message.
    fn tails(&self) -> String {
        let mut out = String::new();
        let mut one = |what: &str, o: &Shared| {
            let o = lock(o);
            if o.last.is_empty() {
                let _ = write!(out, "\n  {what} wrote nothing");
            } else {
                let _ = write!(
                    out,
                    "\n  {what}'s last log lines:\n    {}",
                    o.last.iter().cloned().collect::<Vec<_>>().join("\n    ")
                );
            }
        };
        for (name, _, o) in &self.services {
            one(&format!("service `{name}`"), o);
        }
        if !lock(&self.test).full.is_empty() {
            one("the test", &self.test);
        }
        out
    }

    fn full_text(&self) -> String {
        let mut log = String::new();
        for (name, label, o) in &self.services {
            let _ = writeln!(log, "--- service {name} ({label}) log\n{}---", lock(o).full);
        }
        let _ = writeln!(log, "--- test output\n{}---", lock(&self.test).full);
        log
    }
}

type Running<'a> = Pin<Box<dyn Future<Output = (usize, Result<SandboxOutcome, SandboxError>)> + Send + 'a>>;

/// Resolves when the first service exits (they are meant to run until stopped).
fn first_exit<'a, 'b>(
    running: &'b mut [Running<'a>],
) -> impl Future<Output = (usize, Result<SandboxOutcome, SandboxError>)> + use<'a, 'b> {
    std::future::poll_fn(move |cx| {
        for f in running.iter_mut() {
            if let Poll::Ready(x) = f.as_mut().poll(cx) {
                return Poll::Ready(x);
            }
        }
        Poll::Pending
    })
}

/// The test command as the BUILD file gave it (a shell command without its `/bin/sh -ec`).
fn shown(argv: &[String]) -> String {
    match argv {
        [sh, flags, cmd] if sh == "/bin/sh" && flags == "-ec" => cmd.clone(),
        _ => argv.join(" "),
    }
}

/// Env vars naming every service's address: `API_ADDR=127.0.0.1:8080`, `API_PORT`, `API_URL`.
fn addresses(services: &[ServiceSpec]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for s in services {
        let p = s.env_prefix();
        env.insert(format!("{p}_ADDR"), format!("127.0.0.1:{}", s.port));
        env.insert(format!("{p}_PORT"), s.port.to_string());
        env.insert(format!("{p}_URL"), format!("http://127.0.0.1:{}", s.port));
    }
    env
}

/// Tells the readiness thread to give up once the attempt no longer waits for it (a service
/// exited, or the attempt timed out and was dropped).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One attempt: namespace, services, readiness, test. Returning (or being dropped) stops
/// everything: each sandbox's future kills its processes when dropped, and the namespace goes with
/// its last descriptor and process.
async fn attempt_once(
    it: &IntegrationSpec,
    images: &[(Image, PathBuf)],
    ctx: &Arc<RunCtx>,
    logs: &Logs,
) -> Result<(), Fail> {
    let ns = NetNs::new_loopback().map_err(|e| {
        ActionError::env(format!("making the test's network namespace: {e}"))
            .hint("integration tests run their images in a network namespace of their own: run cbuild as root")
    })?;
    let shared = ns.shared().map_err(|e| ActionError::env(format!("sharing the network namespace: {e}")))?;
    let addrs = addresses(&it.services);
    let mut prepared = Vec::new();
    for (s, (img, rootfs)) in it.services.iter().zip(images) {
        let entrypoint = s.process.as_ref().map(|p| vec![format!("/cnb/process/{p}")]);
        let mut env = addrs.clone();
        env.extend(s.env.clone());
        let o = Overrides { entrypoint, cmd: s.args.clone(), env, ..Default::default() };
        let mut spec = container_spec(img, rootfs, &o).map_err(|e| {
            Fail::Check(failed(&format!("start {}", s.name), format!("a process to start in `{}`", s.label), e))
        })?;
        spec.netns = Some(shared.clone());
        spec.timeout = None;
        prepared.push(Prepared { s: s.clone(), spec });
    }
    let mut running: Vec<Running<'_>> = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        let out = logs.services[i].2.clone();
        running.push(Box::pin(async move {
            let r = sandbox::run(&p.spec, move |line| lock(&out).push(&line.text)).await;
            (i, r)
        }));
    }
    let exited = |i: usize, r: Result<SandboxOutcome, SandboxError>, while_: &str| -> Fail {
        let p = &prepared[i];
        let got = match r {
            Ok(o) => o.failure_message(&p.spec).unwrap_or_else(|| "exited with status 0".into()),
            Err(e) => crate::execution::chain(&e),
        };
        Fail::Check(failed(
            &format!("service {}", p.s.name),
            format!("`{}` to keep running {while_}", p.s.label),
            format!("it {got}"),
        ))
    };

    // Readiness, from a thread joined to the namespace, one service after the other.
    logs.set_phase("the readiness checks");
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let checks: Vec<ServiceSpec> = it.services.clone();
    let stop2 = stop.0.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let probe_ns = ns.try_clone().map_err(|e| ActionError::env(format!("sharing the network namespace: {e}")))?;
    let handle = probe::in_netns(probe_ns, move || {
        let r = (|| -> Result<(), String> {
            for s in &checks {
                let check = format!("ready {}", s.name);
                let ready = Duration::from_secs(s.ready_timeout_secs);
                if let Err(e) = probe::wait_for_port(s.port, ready, &stop2) {
                    return Err(failed(
                        &check,
                        format!("127.0.0.1:{} to accept connections within {}s", s.port, s.ready_timeout_secs),
                        format!("`{e}`"),
                    ));
                }
                let Some(path) = &s.http_path else { continue };
                let start = Instant::now();
                // The port may open before the app answers: retry until the readiness time is up.
                loop {
                    let got = match probe::http_get(s.port, path, Duration::from_secs(5)) {
                        Ok(a) if a.status == s.http_status => break,
                        Ok(a) => format!("status {}", a.status),
                        Err(e) => format!("`{e}`"),
                    };
                    if start.elapsed() >= ready || stop2.load(Ordering::Relaxed) {
                        return Err(failed(
                            &check,
                            format!("GET {path} on 127.0.0.1:{} to answer status {}", s.port, s.http_status),
                            got,
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Ok(())
        })();
        let _ = tx.send(r);
    });
    let ready = tokio::select! {
        (i, r) = first_exit(&mut running) => Err(exited(i, r, "while it is checked for readiness")),
        r = rx => match r {
            Ok(r) => r.map_err(Fail::Check),
            Err(_) => match handle.join() {
                Ok(Err(e)) => Err(ActionError::env(format!("joining the test's network namespace: {e}"))
                    .hint("integration tests join the namespace of their services: run cbuild as root")
                    .into()),
                _ => Err(ActionError::internal("the readiness checker stopped without an answer").into()),
            },
        },
    };
    drop(stop);
    ready?;

    // The test, on the host side, in the same namespace.
    logs.set_phase(format!("the test `{}`", shown(&it.test.argv)));
    let scratch = sandbox::scratch_dir("itest-").map_err(ActionError::env)?;
    let work = scratch.path().join("work");
    let tmp = scratch.path().join("tmp");
    for d in [&work, &tmp] {
        std::fs::create_dir_all(d).map_err(|e| ActionError::of(&e))?;
    }
    for (rel, path) in &it.test.srcs {
        let src = crate::execution::sources::resolve_source(&ctx.root, path).map_err(ActionError::user)?;
        let dst = work.join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).map_err(|e| ActionError::of(&e))?;
        }
        std::fs::copy(&src, &dst).map_err(|e| ActionError::env(format!("staging `{path}`: {e}")))?;
    }
    let (huid, hgid) = sandbox::host_ids(65534, 65534);
    let root = Root::open(scratch.path()).map_err(|e| ActionError::of(&e))?;
    root.chown_tree(Path::new(""), huid, hgid).map_err(|e| ActionError::of(&e))?;
    let mut spec = SandboxSpec::new(RootFs::Host, it.test.argv.clone());
    spec.mounts.push(Mount::writable(&work, "/work"));
    spec.tmp = Some(tmp);
    spec.cwd = "/work".into();
    spec.uid = 65534;
    spec.gid = 65534;
    spec.netns = Some(shared);
    spec.timeout = None;
    spec.env.insert("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    spec.env.insert("HOME".into(), "/tmp".into());
    spec.env.extend(addrs);
    spec.env.extend(it.test.env.clone());
    let out = logs.test.clone();
    let test = sandbox::run(&spec, move |line| lock(&out).push(&line.text));
    let r = tokio::select! {
        (i, r) = first_exit(&mut running) => Err(exited(i, r, "while the test runs")),
        o = test => match o {
            Ok(o) if o.success() => Ok(()),
            Ok(o) => {
                let got = match o.exit_code {
                    Some(c) if !o.timed_out && !o.output_limit_exceeded => format!("exit code {c}"),
                    _ => format!("it {}", o.failure_message(&spec).unwrap_or_default()),
                };
                Err(Fail::Check(failed("test", format!("`{}` to exit with code 0", shown(&it.test.argv)), got)))
            }
            Err(e) => Err(ActionError::of(&e).context("running the test").into()),
        },
    };
    logs.set_phase("the stop of the services");
    drop(running);
    drop(ns);
    r
}

/// The `integration_test` [`Runner`](super::seam::Runner) (an `ImageTest` action with an
/// `IntegrationSpec`).
pub struct IntegrationTestRunner;

impl super::seam::Runner for IntegrationTestRunner {
    fn mnemonic(&self) -> &'static str {
        "integration_test"
    }
    fn version(&self) -> u32 {
        // 2: env values as digests, the test files' executable bit and the host's identity keyed.
        2
    }
    fn makes_image_bytes(&self) -> bool {
        false
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        parts(a).1.test.srcs.iter().map(|(_, p)| (p.clone(), true)).collect()
    }
    fn cacheable(&self, a: &Action) -> bool {
        !parts(a).0.force
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
        Box::pin(run(a, deps, ctx))
    }
}
