//! Remote execution against a real engine: BuildGrid with its SQL scheduler on PostgreSQL
//! (`common::buildgrid_exec`) and real `cbuild worker` processes (separate caches and work dirs).
//! Genrules with an image and buildpack detect/build run on the workers; the images equal a local
//! build's; a SIGKILLed worker's action runs elsewhere; an interrupted build cancels its remote
//! operations; a failing remote action fails the build naming the worker; a server with a cache
//! only is a configuration error and an unreachable one a local build.
//!
//! The workers of a test take any lease of the shared server, so the tests that start workers run
//! one at a time ([`serial`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common;
use common::buildgrid_exec::BuildGridExec;
use common::support::{self, Out, Ws};

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server, or `None` (a skip outside CI) where PostgreSQL is not installed.
fn server() -> Option<BuildGridExec> {
    if let Some(m) = BuildGridExec::missing() {
        common::skip_unless_ci(&format!("remote execution needs {m}"));
        return None;
    }
    Some(BuildGridExec::shared())
}

/// A running `cbuild worker` (its own process group: SIGKILLed with its sandboxes on drop).
struct Worker {
    child: Child,
    name: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    fn start(url: &str, name: &str, jobs: u32) -> Worker {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cbuild"))
            .args(["worker", "--server", url, "--jobs", &jobs.to_string(), "--name", name, "--verbose"])
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .env("CBUILD_CACHE_DIR", dir.path().join("cache"))
            .env("CBUILD_REMOTE_SIGNING_KEY", &keys().private)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap();
        let w = Worker { child, name: name.to_string(), log, _dir: dir };
        w.wait_for("session `", Duration::from_secs(30));
        w
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(needle) {
            assert!(Instant::now() < deadline, "worker {}: no `{needle}` in {timeout:?}:\n{}", self.name, self.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) on the worker's own process group (spawned with process_group(0)).
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn keys() -> &'static common::Keys {
    static KEYS: std::sync::OnceLock<common::Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(common::keygen)
}

/// `cbuild --remote-executor URL build --json ARGS` (trusting the workers' key).
fn remote_build(ws: &Ws, url: &str, args: &[&str]) -> Out {
    let mut a = vec!["--remote-executor", url, "build", "--json"];
    a.extend_from_slice(args);
    support::out_of(ws.cmd().env("CBUILD_REMOTE_TRUSTED_KEYS", &keys().public).args(&a))
}

fn ok(o: &Out) -> BTreeMap<String, String> {
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.failures());
    o.digests()
}

/// Actions of the kinds that run remotely that the build executed (from its events).
fn user_code_executed(o: &Out) -> usize {
    o.events()
        .iter()
        .filter(|e| e["type"] == "finished" && e["outcome"] == "executed")
        .filter(|e| matches!(e["action"].as_str(), Some("detect" | "build" | "genrule")))
        .count()
}

fn per_worker(o: &Out) -> BTreeMap<String, u64> {
    o.summary()["remote_workers"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect())
        .unwrap_or_default()
}

/// A generated monorepo (bench/gen.py: services built by the real example buildpacks on the
/// example Debian-free stack) plus, per service, a genrule run in the stack's run image. `salt`
/// keeps each test's keys its own.
fn monorepo(services: u32, salt: &str) -> Ws {
    let ws = support::empty();
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen.py");
    let st = Command::new("python3")
        .arg(&gen)
        .args(["mono"])
        .arg(ws.root())
        .args(["--services", &services.to_string(), "--files", "120", "--size-mb", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut build = String::new();
    for i in 0..services {
        build.push_str(&format!(
            "genrule(name = \"g{i}\", srcs = [\"in.txt\"], outs = [\"out{i}.txt\"], image = \"//stacks:run-image\", \
             cmd = \"(cat in.txt; echo {i}; uname -m) > out{i}.txt\")\n"
        ));
    }
    build.push_str("layer(name = \"l\", srcs = [");
    build.push_str(&(0..services).map(|i| format!("\":g{i}\"")).collect::<Vec<_>>().join(", "));
    build.push_str(
        "], prefix = \"/gen\")\noci_image(name = \"img\", base = \"//stacks:run-image\", layers = [\":l\"])\n",
    );
    ws.write("gen/BUILD.star", build);
    ws.write("gen/in.txt", format!("{salt}\n"));
    ws
}

#[test]
fn three_workers_run_every_user_code_action_and_the_images_equal_a_local_build() {
    let Some(bg) = server() else { return };
    let _g = serial();
    let ws = monorepo(4, "three workers");
    let workers: Vec<Worker> = (1..=3).map(|i| Worker::start(&bg.url, &format!("w{i}-three"), 2)).collect();
    let o = remote_build(&ws, &bg.url, &["//..."]);
    let got = ok(&o);
    // 4 cnb_images (detect + build each) + 4 genrules in an image, all on the workers; the
    // stack's genrules on the host's tools (no `image`) stay local.
    let counts = per_worker(&o);
    assert_eq!(counts.values().sum::<u64>(), 4 * 2 + 4, "every user-code action ran remotely: {counts:?}\n{}", o.all());
    // (gen.py's `//lib:bundle` tar and the stack's busybox copy.)
    let host_genrules =
        ["stacks/BUILD.star", "lib/BUILD.star"].iter().map(|f| ws.read(f).matches("genrule(").count()).sum::<usize>();
    assert_eq!(user_code_executed(&o), 4 * 2 + 4 + host_genrules, "{}", o.stdout);
    assert!(counts.keys().all(|w| w.ends_with("-three")), "{counts:?}");
    assert!(counts.len() >= 2, "the actions spread over the workers: {counts:?}\n{}", o.stderr);
    for w in &workers {
        if counts.contains_key(&w.name) {
            assert!(w.text().contains("cbuild worker: running"), "{}", w.text());
        }
    }
    // The same digests as a local build from a clean cache (same runners, same sandbox).
    assert_eq!(got, support::clean_digests(ws.root(), &["//..."]));
    // A repeat runs nothing, remotely or locally.
    let again = remote_build(&ws, &bg.url, &["//..."]);
    assert_eq!(ok(&again), got);
    assert_eq!(again.summary()["executed"], 0, "{}", again.stdout);
    assert!(per_worker(&again).is_empty());
}

#[test]
fn a_worker_killed_mid_action_loses_nothing_the_action_runs_on_another() {
    let Some(bg) = server() else { return };
    let _g = serial();
    let ws = support::examples();
    ws.write(
        "slow/BUILD.star",
        "genrule(name = \"g\", srcs = [\"in.txt\"], outs = [\"out.txt\"], image = \"//stacks:run-image\", \
         cmd = \"sleep 3; cat in.txt > out.txt\")\n\
         layer(name = \"l\", srcs = [\":g\"], prefix = \"/slow\")\n\
         oci_image(name = \"img\", base = \"//stacks:run-image\", layers = [\":l\"])\n",
    );
    ws.write("slow/in.txt", "killed worker\n");
    let mut first = Worker::start(&bg.url, "w-doomed", 1);
    let child = ws
        .cmd()
        .env("CBUILD_REMOTE_TRUSTED_KEYS", &keys().public)
        .args(["--remote-executor", &bg.url, "build", "--json", "//slow:img"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    first.wait_for("running //slow:g genrule", Duration::from_secs(60));
    first.kill();
    let second = Worker::start(&bg.url, "w-survivor", 1);
    let o = child.wait_with_output().unwrap();
    let o = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    let got = ok(&o);
    assert_eq!(per_worker(&o), BTreeMap::from([("w-survivor".to_string(), 1)]), "{}", o.stderr);
    assert!(second.text().contains("running //slow:g genrule"), "{}", second.text());
    assert_eq!(got, support::clean_digests(ws.root(), &["//slow:img"]));
}

#[test]
fn an_interrupted_build_cancels_its_remote_action() {
    let Some(bg) = server() else { return };
    let _g = serial();
    let ws = support::examples();
    ws.write(
        "long/BUILD.star",
        "genrule(name = \"g\", outs = [\"out.txt\"], image = \"//stacks:run-image\", cmd = \"sleep 300; echo > out.txt\")\n",
    );
    let w = Worker::start(&bg.url, "w-cancel", 1);
    let mut child = ws
        .cmd()
        .env("CBUILD_REMOTE_TRUSTED_KEYS", &keys().public)
        .args(["--remote-executor", &bg.url, "build", "//long:g"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    w.wait_for("running //long:g genrule", Duration::from_secs(60));
    // SAFETY: kill(2) of the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let st = child.wait().unwrap();
    assert!(!st.success());
    // CancelOperation reached the server, which withdrew the lease: the worker stopped the action
    // (long before its 300 s sleep) and is free for the next one.
    w.wait_for("its action is stopped", Duration::from_secs(30));
}

#[test]
fn a_failing_remote_action_fails_the_build_and_names_the_worker() {
    let Some(bg) = server() else { return };
    let _g = serial();
    let ws = support::examples();
    ws.write(
        "bad/BUILD.star",
        "genrule(name = \"g\", outs = [\"out.txt\"], image = \"//stacks:run-image\", \
         cmd = \"echo about to fail >&2; exit 3\")\n",
    );
    let _w = Worker::start(&bg.url, "w-fail", 1);
    let o = remote_build(&ws, &bg.url, &["//bad:g"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let failures = o.failures();
    assert!(failures.contains("remote worker `w-fail`"), "{failures}");
    assert!(failures.contains("exit"), "{failures}");
    // The command's own output reached the client.
    assert!(o.stdout.contains("about to fail"), "{}", o.stdout);
}

#[test]
fn a_cache_only_server_is_a_configuration_error_and_an_unreachable_one_a_local_build() {
    // BuildGrid with cache services only (no Execution): exit 2 and what to do.
    let cache_only = common::buildgrid::BuildGrid::shared();
    let ws = support::examples();
    let o = remote_build(&ws, &cache_only.url, &["//services/api:image"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("offers no remote execution"), "{}", o.stderr);
    // Nothing listens: one warning, a local build with the local digests.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = support::out_of(ws.cmd().args([
        "--remote-executor",
        &format!("grpc://127.0.0.1:{port}"),
        "build",
        "--json",
        "//services/api:image",
    ]));
    let got = ok(&o);
    assert!(o.stderr.contains("actions run locally"), "{}", o.stderr);
    assert_eq!(got, support::clean_digests(ws.root(), &["//services/api:image"]));
    // An HTTP URL is refused before anything runs.
    let o = ws.run(&["--remote-executor", "http://127.0.0.1:1", "build", "//services/api:image"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("grpc://"), "{}", o.stderr);
}
