//! The `image_test` runner: checks an image's files (read from its layers, nothing extracted) and
//! config, runs commands in it and starts its service (sandboxed, `cbuild run` semantics), keyed by
//! the image digest and the test. A pass is the output; a failure is a Build error naming the
//! check, what was expected and what was found, and is never stored. Retries (`--retries`) run here.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ctx::RunCtx;
use crate::cache::{ComponentValue, KeyBuilder};
use crate::execution::container::{container_spec, Overrides};
use crate::execution::probe::{self, NetNs};
use crate::execution::sandbox::{self, Stream};
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::model::test_spec::*;
use crate::oci::tree::{ImageTree, NodeKind};
use crate::oci::Image;

/// Bytes of a file a content check reads, and of each output stream a command check keeps.
const MAX_CHECKED_BYTES: u64 = 16 << 20;
/// Log lines of a failed service shown in the failure message.
const LOG_TAIL: usize = 20;

/// A check that did not hold (a test failure), or something that kept the test from running
/// (also `integration_test`'s).
pub(super) enum Fail {
    Check(String),
    Error(ActionError),
}

impl From<ActionError> for Fail {
    fn from(e: ActionError) -> Fail {
        Fail::Error(e)
    }
}

/// The message of a failed check: its name, what it expected and what it got.
pub(super) fn failed(check: &str, expected: impl std::fmt::Display, got: impl std::fmt::Display) -> String {
    format!("check `{check}` failed: expected {expected}, got {got}")
}

pub fn key(kb: KeyBuilder, a: &Action, deps: &super::seam::Deps, ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
    let ActionKind::ImageTest { image, spec, config, .. } = &a.kind else { unreachable!() };
    let manifest = match deps.get(image).map(|o| o.as_ref()) {
        Some(ActionOutput::Image { manifest, .. }) => manifest.to_string(),
        _ => return Err(ActionError::internal("image_test: the image's output is missing")),
    };
    // Each check as canonical JSON (fixed field order, sorted maps): a change to these types
    // bumps the runner's version.
    let checks: Vec<String> =
        spec.checks.iter().map(serde_json::to_string).collect::<Result<_, _>>().map_err(|e| ActionError::of(&e))?;
    let mut kb = kb
        .component("image", manifest)
        .component("checks", ComponentValue::list(checks))
        .component("timeout_secs", spec.timeout_secs)
        // Values as digests: env may hold tokens, and key components are stored and uploaded.
        .component("env", ComponentValue::env_map(&spec.env));
    if let Some(c) = config {
        let d = ctx.sources.digest(c).ok_or_else(|| ActionError::internal(format!("source `{c}` was not hashed")))?;
        kb = kb.component("config", ComponentValue::map([(c.clone(), ComponentValue::Blake3(*d))]));
    }
    Ok(kb)
}

pub async fn run(a: &Action, deps: &super::seam::Deps, ctx: &Arc<RunCtx>) -> Result<ActionOutput, ActionError> {
    let ActionKind::ImageTest { image, spec, config, .. } = &a.kind else { unreachable!() };
    let out = deps.get(image).ok_or_else(|| ActionError::internal("image_test: the image's output is missing"))?;
    let ActionOutput::Image { manifest, .. } = out.as_ref() else {
        return Err(ActionError::internal("image_test: the image's output is not an image"));
    };
    super::pull::ensure_local(out, ctx).await?;
    let mut checks = Vec::new();
    let mut env = BTreeMap::new();
    if let Some(c) = config {
        let path = crate::execution::sources::resolve_source(&ctx.root, c)?;
        let text = std::fs::read_to_string(&path).map_err(|e| ActionError::user(format!("reading `{c}`: {e}")))?;
        let (more, genv) = crate::execution::structure_test::parse(&text, c).map_err(ActionError::user)?;
        checks = more;
        env = genv;
    }
    checks.extend(spec.checks.iter().cloned());
    env.extend(spec.env.clone());
    let img = Image::load(ctx.cache.cas(), manifest).map_err(|e| ActionError::of(&e))?;
    let t = Tester { img, checks, env, ctx: ctx.clone() };
    let timeout = Duration::from_secs(spec.timeout_secs);
    let log_path = ctx.root.join(log_dir(&a.label)).join(format!("{}.log", a.label.name));
    let mut failures = Vec::new();
    for attempt in 1..=spec.retries + 1 {
        let started = Instant::now();
        let mut log = String::new();
        let r = match tokio::time::timeout(timeout, t.attempt(&mut log)).await {
            Ok(r) => r,
            // Dropping the attempt killed its sandboxes (kill_on_drop, --die-with-parent).
            Err(_) => Err(Fail::Check(format!(
                "the test timed out: expected every check to finish within {}s (`timeout`), got a check still running",
                spec.timeout_secs
            ))),
        };
        let _ = writeln!(log, "attempt {attempt}: {}", if r.is_ok() { "passed" } else { "FAILED" });
        write_log(&log_path, &log, attempt);
        match r {
            Ok(n) => {
                let result = TestResult {
                    checks: n,
                    attempts: attempt,
                    flaky: attempt > 1,
                    duration_ms: started.elapsed().as_millis() as u64,
                    failures,
                };
                let json = serde_json::to_string(&result).map_err(|e| ActionError::of(&e))?;
                return Ok(ActionOutput::Data { json, blobs: vec![] });
            }
            Err(Fail::Check(m)) => failures.push(m),
            Err(Fail::Error(e)) => return Err(e),
        }
    }
    let n = failures.len();
    let last = failures.pop().unwrap_or_default();
    let tries = if n > 1 { format!(" (all {n} attempts failed)") } else { String::new() };
    Err(ActionError::build(format!("{last}{tries}"))
        .hint(format!("the test log is `{}`", display_rel(&ctx.root, &log_path))))
}

/// `cbuild-out/testlogs/<package>` (like Bazel's `bazel-testlogs`).
pub fn log_dir(l: &crate::model::label::Label) -> String {
    if l.package.is_root() {
        "cbuild-out/testlogs".into()
    } else {
        format!("cbuild-out/testlogs/{}", l.package)
    }
}

fn display_rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Writes the log of an attempt (the first attempt replaces an older log; retries append).
pub fn write_log(path: &Path, log: &str, attempt: u32) {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = if attempt == 1 {
        crate::fs::write_atomic(path, log.as_bytes()).map_err(|e| e.to_string())
    } else {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(log.as_bytes()))
            .map_err(|e| e.to_string())
    };
}

/// One test's checks against one image.
struct Tester {
    img: Image,
    checks: Vec<Check>,
    env: BTreeMap<String, String>,
    ctx: Arc<RunCtx>,
}

impl Tester {
    /// Runs every check; all failures are reported together. Returns how many checks passed.
    async fn attempt(&self, log: &mut String) -> Result<usize, Fail> {
        let mut failures = Vec::new();
        let tree = if self.checks.iter().any(needs_tree) { Some(self.tree().await?) } else { None };
        let contents = match &tree {
            Some((tree, _)) => self.contents(tree).await?,
            None => BTreeMap::new(),
        };
        let mut rootfs = None;
        for c in &self.checks {
            let r = match &c.what {
                CheckKind::Command(cmd) => {
                    if rootfs.is_none() {
                        rootfs = Some(self.rootfs().await?);
                    }
                    self.command(c, cmd, rootfs.as_deref().expect("extracted"), log).await
                }
                CheckKind::Service(s) => {
                    if rootfs.is_none() {
                        rootfs = Some(self.rootfs().await?);
                    }
                    self.service(c, s, rootfs.as_deref().expect("extracted"), log).await
                }
                _ => structure(c, &self.img, tree.as_ref().map(|(t, _)| t), &contents),
            };
            match r {
                Ok(()) => {
                    let _ = writeln!(log, "PASS {}", c.name);
                }
                Err(Fail::Check(m)) => {
                    let _ = writeln!(log, "FAIL {m}");
                    failures.push(m);
                }
                Err(e) => return Err(e),
            }
        }
        match failures.len() {
            0 => Ok(self.checks.len()),
            1 => Err(Fail::Check(failures.remove(0))),
            n => Err(Fail::Check(format!("{n} of {} checks failed:\n  {}", self.checks.len(), failures.join("\n  ")))),
        }
    }

    /// The image's file tree (read on the blocking pool).
    async fn tree(&self) -> Result<(ImageTree, ()), ActionError> {
        let (ctx, layers) = (self.ctx.clone(), self.img.layers().iter().map(|l| l.digest.clone()).collect::<Vec<_>>());
        tokio::task::spawn_blocking(move || ImageTree::read(ctx.cache.cas(), &layers).map(|t| (t, ())))
            .await
            .map_err(|e| ActionError::of(&e))?
            .map_err(|e| ActionError::of(&e).context("reading the image's layers"))
    }

    /// The contents the checks read (content checks, and `/etc/passwd` for a named user).
    async fn contents(&self, tree: &ImageTree) -> Result<BTreeMap<String, Vec<u8>>, ActionError> {
        let mut want: Vec<String> = Vec::new();
        for c in &self.checks {
            match &c.what {
                CheckKind::FileContent { path, .. } => want.extend(tree.resolve(path).map(|(p, _)| p)),
                CheckKind::NonRoot => want.extend(tree.resolve("/etc/passwd").map(|(p, _)| p)),
                _ => {}
            }
        }
        let (ctx, tree) = (self.ctx.clone(), tree.clone());
        tokio::task::spawn_blocking(move || tree.contents(ctx.cache.cas(), &want, MAX_CHECKED_BYTES))
            .await
            .map_err(|e| ActionError::of(&e))?
            .map_err(|e| ActionError::of(&e).context("reading files of the image"))
    }

    /// The image's root file system, extracted once per digest (shared with genrules and builds).
    async fn rootfs(&self) -> Result<std::path::PathBuf, ActionError> {
        let (ctx, img) = (self.ctx.clone(), self.img.clone());
        tokio::task::spawn_blocking(move || super::cnb_common::ensure_rootfs(&img, ctx.cache.cas()))
            .await
            .map_err(|e| ActionError::of(&e))?
    }

    async fn command(&self, c: &Check, cmd: &CommandCheck, rootfs: &Path, log: &mut String) -> Result<(), Fail> {
        let mut env = self.env.clone();
        env.extend(cmd.env.clone());
        let spec =
            container_spec(&self.img, rootfs, &Overrides { argv: Some(cmd.argv.clone()), env, ..Default::default() })
                .map_err(|e| Fail::Check(failed(&c.name, "a command to run", e)))?;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let outcome = sandbox::run(&spec, |line| {
            let buf = if line.stream == Stream::Stdout { &mut stdout } else { &mut stderr };
            if (buf.len() as u64) < MAX_CHECKED_BYTES {
                buf.push_str(&line.text);
                buf.push('\n');
            }
        })
        .await
        .map_err(|e| ActionError::of(&e).context(format!("running `{}`", cmd.argv.join(" "))))?;
        let _ = writeln!(log, "--- {}: `{}`\n--- stdout\n{stdout}--- stderr\n{stderr}---", c.name, cmd.argv.join(" "));
        let code = outcome.exit_code.unwrap_or(-1);
        if outcome.timed_out || code != cmd.exit_code {
            let got = match outcome.failure_message(&spec) {
                Some(m) if outcome.timed_out || outcome.exit_code.is_none() => m,
                _ => format!("exit code {code}"),
            };
            return Err(Fail::Check(failed(
                &c.name,
                format!("exit code {}", cmd.exit_code),
                format!("{got}{}", tail(&stderr)),
            )));
        }
        for (stream, text, want, exclude) in [
            ("stdout", &stdout, &cmd.stdout, &cmd.excluded_stdout),
            ("stderr", &stderr, &cmd.stderr, &cmd.excluded_stderr),
        ] {
            for r in want {
                if !regex(r)?.is_match(text) {
                    return Err(Fail::Check(failed(&c.name, format!("{stream} matching `{r}`"), quoted(text))));
                }
            }
            for r in exclude {
                if let Some(m) = regex(r)?.find(text) {
                    return Err(Fail::Check(failed(
                        &c.name,
                        format!("{stream} not matching `{r}`"),
                        format!("{} in {}", quoted(m.as_str()), quoted(text)),
                    )));
                }
            }
        }
        Ok(())
    }

    /// Starts the service in a sandbox with its own network namespace (loopback only), checks it
    /// from a thread joined to that namespace, then stops it (dropping the sandbox's future kills
    /// everything in it).
    async fn service(&self, c: &Check, s: &ServiceCheck, rootfs: &Path, log: &mut String) -> Result<(), Fail> {
        let entrypoint = s.process.as_ref().map(|p| vec![format!("/cnb/process/{p}")]);
        let o = Overrides { entrypoint, cmd: s.args.clone(), env: s.env.clone(), ..Default::default() };
        let spec =
            container_spec(&self.img, rootfs, &o).map_err(|e| Fail::Check(failed(&c.name, "a process to start", e)))?;
        let lines: Arc<Mutex<VecDeque<String>>> = Default::default();
        let full: Arc<Mutex<String>> = Default::default();
        let bwrap: Arc<Mutex<Option<u32>>> = Default::default();
        let (lines2, full2, bwrap2) = (lines.clone(), full.clone(), bwrap.clone());
        let service = sandbox::run_observed(
            &spec,
            move |line| {
                let mut l = lines2.lock().unwrap_or_else(|p| p.into_inner());
                if l.len() == LOG_TAIL {
                    l.pop_front();
                }
                l.push_back(line.text.clone());
                let mut f = full2.lock().unwrap_or_else(|p| p.into_inner());
                if (f.len() as u64) < MAX_CHECKED_BYTES {
                    f.push_str(&line.text);
                    f.push('\n');
                }
            },
            move |pid| *bwrap2.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let checks = self.probe(c, s, bwrap, stop.clone());
        let r = tokio::select! {
            outcome = service => {
                let got = match outcome {
                    Ok(o) => o.failure_message(&spec).unwrap_or_else(|| "exited with status 0".into()),
                    Err(e) => crate::execution::chain(&e),
                };
                Err(Fail::Check(failed(&c.name, format!("the service to keep running while it is checked (port {})", s.port), format!("it {got}"))))
            }
            r = checks => r,
        };
        stop.store(true, Ordering::Relaxed);
        let tail_lines: Vec<String> = lines.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let _ = writeln!(log, "--- {}: service log\n{}---", c.name, full.lock().unwrap_or_else(|p| p.into_inner()));
        match r {
            Err(Fail::Check(m)) if tail_lines.is_empty() => Err(Fail::Check(format!("{m}; the service wrote nothing"))),
            Err(Fail::Check(m)) => {
                Err(Fail::Check(format!("{m}; the service's last log lines:\n    {}", tail_lines.join("\n    "))))
            }
            other => other,
        }
    }

    /// Joins the service's network namespace and runs the readiness wait and the HTTP checks there.
    async fn probe(
        &self,
        c: &Check,
        s: &ServiceCheck,
        bwrap: Arc<Mutex<Option<u32>>>,
        stop: Arc<AtomicBool>,
    ) -> Result<(), Fail> {
        let ns = loop {
            let pid = *bwrap.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(child) = pid.and_then(sandbox::sandbox_pid) {
                match NetNs::of_pid(child) {
                    Ok(Some(ns)) => break ns,
                    Ok(None) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ActionError::env(format!("opening the service's network namespace: {e}")).into())
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (port, ready, http, name) =
            (s.port, Duration::from_secs(s.ready_timeout_secs), s.http.clone(), c.name.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = probe::in_netns(ns, move || {
            let r = (|| -> Result<(), String> {
                let check = Check { name, what: CheckKind::NonRoot };
                if let Err(e) = probe::wait_for_port(port, ready, &stop) {
                    return Err(failed(
                        &check.name,
                        format!("127.0.0.1:{port} to accept connections within {}s", ready.as_secs()),
                        format!("`{e}`"),
                    ));
                }
                for h in &http {
                    let a = probe::http_get(port, &h.path, Duration::from_secs(10)).map_err(|e| {
                        failed(&check.name, format!("an HTTP answer to GET {}", h.path), format!("`{e}`"))
                    })?;
                    if a.status != h.status {
                        return Err(failed(
                            &check.name,
                            format!("GET {} to answer status {}", h.path, h.status),
                            format!("{} (body {})", a.status, quoted(&a.body)),
                        ));
                    }
                    if !h.body.is_empty() && !regex::Regex::new(&h.body).map_err(|e| e.to_string())?.is_match(&a.body) {
                        return Err(failed(
                            &check.name,
                            format!("the body of GET {} to match `{}`", h.path, h.body),
                            quoted(&a.body),
                        ));
                    }
                }
                Ok(())
            })();
            let _ = tx.send(r);
        });
        let r = rx.await;
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(ActionError::env(format!("joining the service's network namespace: {e}"))
                    .hint("service checks join the namespace of the sandbox: run cbuild as root")
                    .into())
            }
            Err(_) => return Err(ActionError::internal("the service checker thread panicked").into()),
        }
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(m)) => Err(Fail::Check(m)),
            Err(_) => Err(ActionError::internal("the service checker stopped without an answer").into()),
        }
    }
}

fn needs_tree(c: &Check) -> bool {
    matches!(
        c.what,
        CheckKind::FileExists { .. }
            | CheckKind::FileAbsent { .. }
            | CheckKind::FileContent { .. }
            | CheckKind::NoShell
            | CheckKind::NonRoot
    )
}

fn regex(r: &str) -> Result<regex::Regex, Fail> {
    regex::Regex::new(r).map_err(|e| Fail::Error(ActionError::user(format!("the regex `{r}` does not compile: {e}"))))
}

/// Text shown in a message: quoted, control characters escaped, at most 200 characters.
fn quoted(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| if c == '"' || c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect();
    match escaped.char_indices().nth(200) {
        Some((i, _)) => format!("\"{}…\" ({} bytes)", &escaped[..i], s.len()),
        None => format!("\"{escaped}\""),
    }
}

/// The last lines of `stderr`, for a message.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(5);
    format!("; stderr ends with:\n    {}", lines[from..].join("\n    "))
}

fn mode_text(m: u32) -> String {
    format!("{m:04o}")
}

fn describe(n: &crate::oci::tree::Node) -> String {
    match &n.kind {
        NodeKind::File | NodeKind::Hardlink(_) => format!("a file (mode {}, {} bytes)", mode_text(n.mode), n.size),
        NodeKind::Dir => format!("a directory (mode {})", mode_text(n.mode)),
        NodeKind::Symlink(t) => format!("a symlink to `{t}`"),
        NodeKind::Other => "a device, FIFO or socket".into(),
    }
}

/// A structure check (files and config; no process runs).
fn structure(
    c: &Check,
    img: &Image,
    tree: Option<&ImageTree>,
    contents: &BTreeMap<String, Vec<u8>>,
) -> Result<(), Fail> {
    let fail = |e: String, g: String| Err(Fail::Check(failed(&c.name, e, g)));
    let cfg = img.config().config().clone().unwrap_or_default();
    let env: BTreeMap<String, String> = cfg
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let tree = || tree.ok_or_else(|| Fail::Error(ActionError::internal("image_test: the file tree was not read")));
    match &c.what {
        CheckKind::FileExists { path, mode, uid, gid, executable_by } => {
            let t = tree()?;
            let Some((_, n)) = t.resolve(path) else {
                return match t.get(path) {
                    Some(l) => fail(format!("`{path}` to exist"), format!("{} that leads nowhere", describe(l))),
                    None => fail(format!("`{path}` to exist"), "nothing at that path".into()),
                };
            };
            if let Some(m) = mode {
                if n.mode & 0o7777 != *m {
                    return fail(
                        format!("`{path}` with mode {}", mode_text(*m)),
                        format!("mode {}", mode_text(n.mode)),
                    );
                }
            }
            if uid.is_some_and(|u| u != n.uid) || gid.is_some_and(|g| g != n.gid) {
                let want = format!(
                    "{}:{}",
                    uid.map_or("*".into(), |u| u.to_string()),
                    gid.map_or("*".into(), |g| g.to_string())
                );
                return fail(format!("`{path}` owned by {want}"), format!("{}:{}", n.uid, n.gid));
            }
            if let Some(who) = executable_by {
                let bits = match who.as_str() {
                    "owner" => 0o100,
                    "group" => 0o010,
                    "other" => 0o001,
                    _ => 0o111,
                };
                if n.mode & bits == 0 {
                    return fail(format!("`{path}` executable by {who}"), format!("mode {}", mode_text(n.mode)));
                }
            }
            Ok(())
        }
        CheckKind::FileAbsent { path } => {
            let t = tree()?;
            match t.get(path).or_else(|| t.resolve(path).map(|(_, n)| n)) {
                Some(n) => fail(format!("nothing at `{path}`"), describe(n)),
                None => Ok(()),
            }
        }
        CheckKind::FileContent { path, expected, excluded } => {
            let t = tree()?;
            let Some((real, n)) = t.resolve(path) else {
                return fail(format!("a file at `{path}`"), "nothing at that path".into());
            };
            let Some(bytes) = contents.get(&real) else {
                return fail(format!("a regular file at `{path}`"), describe(n));
            };
            let text = String::from_utf8_lossy(bytes);
            for r in expected {
                if !regex(r)?.is_match(&text) {
                    return fail(format!("the content of `{path}` to match `{r}`"), quoted(&text));
                }
            }
            for r in excluded {
                if let Some(m) = regex(r)?.find(&text) {
                    return fail(format!("the content of `{path}` not to match `{r}`"), quoted(m.as_str()));
                }
            }
            Ok(())
        }
        CheckKind::NonRoot => {
            let user = cfg.user().clone().unwrap_or_default();
            let name = user.split(':').next().unwrap_or_default();
            if name.is_empty() {
                return fail("a non-root user".into(), "no user (the image runs as root)".into());
            }
            let uid = match name.parse::<u32>() {
                Ok(u) => Some(u),
                Err(_) => tree()?
                    .resolve("/etc/passwd")
                    .and_then(|(p, _)| contents.get(&p))
                    .and_then(|b| {
                        String::from_utf8_lossy(b)
                            .lines()
                            .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
                            .find(|f| f.len() >= 3 && f[0] == name)
                    })
                    .and_then(|f| f[2].parse().ok()),
            };
            if name == "root" || uid == Some(0) {
                return fail("a non-root user".into(), format!("`{user}` (uid 0)"));
            }
            Ok(())
        }
        CheckKind::User(u) => {
            let got = cfg.user().clone().unwrap_or_default();
            if &got == u {
                Ok(())
            } else {
                fail(format!("user `{u}`"), format!("`{got}`"))
            }
        }
        CheckKind::Entrypoint(e) | CheckKind::Cmd(e) => {
            let got = if matches!(c.what, CheckKind::Entrypoint(_)) { cfg.entrypoint() } else { cfg.cmd() };
            let got = got.clone().unwrap_or_default();
            if &got == e {
                Ok(())
            } else {
                fail(format!("{e:?}"), format!("{got:?}"))
            }
        }
        CheckKind::Workdir(w) => {
            let got = cfg.working_dir().clone().unwrap_or_default();
            if &got == w {
                Ok(())
            } else {
                fail(format!("working directory `{w}`"), format!("`{got}`"))
            }
        }
        CheckKind::Env { key, value, regex: re } => match env.get(key) {
            None => fail(format!("`{key}` set in the image's env"), "no such variable".into()),
            Some(v) if matches(v, value, *re)? => Ok(()),
            Some(v) => fail(format!("{key}={}{value}", if *re { "~" } else { "" }), format!("{key}={v}")),
        },
        CheckKind::Label { key, value, regex: re } => {
            let labels = cfg.labels().clone().unwrap_or_default();
            match labels.get(key) {
                None => fail(format!("label `{key}`"), "no such label".into()),
                Some(v) if value.is_empty() || matches(v, value, *re)? => Ok(()),
                Some(v) => fail(format!("label `{key}` = `{value}`"), format!("`{v}`")),
            }
        }
        CheckKind::ExposedPort { port, exposed } => {
            let ports = cfg.exposed_ports().clone().unwrap_or_default();
            let found = ports.iter().any(|p| p == port || (!port.contains('/') && *p == format!("{port}/tcp")));
            match (found, exposed) {
                (true, true) | (false, false) => Ok(()),
                (false, true) => fail(format!("port {port} exposed"), format!("exposed ports {ports:?}")),
                (true, false) => fail(format!("port {port} not exposed"), format!("exposed ports {ports:?}")),
            }
        }
        CheckKind::Volume(v) => {
            let vols = cfg.volumes().clone().unwrap_or_default();
            if vols.contains(v) {
                Ok(())
            } else {
                fail(format!("volume `{v}`"), format!("volumes {vols:?}"))
            }
        }
        CheckKind::MaxSize(max) => {
            let size: u64 = img.layers().iter().map(|l| l.size).sum();
            if size <= *max {
                Ok(())
            } else {
                fail(format!("at most {max} bytes of compressed layers"), format!("{size} bytes"))
            }
        }
        CheckKind::NoShell => {
            let t = tree()?;
            let found: Vec<String> = SHELL_PATHS
                .iter()
                .filter_map(|p| match t.resolve(p) {
                    Some((real, n)) if n.kind != NodeKind::Dir => Some(if real == p.trim_start_matches('/') {
                        p.to_string()
                    } else {
                        format!("{p} (-> /{real})")
                    }),
                    _ => None,
                })
                .collect();
            if found.is_empty() {
                Ok(())
            } else {
                fail("no shell in the image".into(), found.join(", "))
            }
        }
        CheckKind::Command(_) | CheckKind::Service(_) => {
            Err(Fail::Error(ActionError::internal("not a structure check")))
        }
    }
}

fn matches(v: &str, want: &str, re: bool) -> Result<bool, Fail> {
    Ok(if re { regex(want)?.is_match(v) } else { v == want })
}

/// The `image_test` action kind's [`Runner`](super::seam::Runner).
pub struct ImageTestRunner;

impl super::seam::Runner for ImageTestRunner {
    fn mnemonic(&self) -> &'static str {
        "image_test"
    }
    fn version(&self) -> u32 {
        // 2: env values as digests.
        2
    }
    fn makes_image_bytes(&self) -> bool {
        false
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        match &a.kind {
            ActionKind::ImageTest { config: Some(c), .. } => vec![(c.clone(), true)],
            _ => Vec::new(),
        }
    }
    fn cacheable(&self, a: &Action) -> bool {
        !matches!(&a.kind, ActionKind::ImageTest { spec, .. } if spec.force)
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
