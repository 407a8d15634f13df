//! Helpers shared by every module of the integration-test binary. Here: TestContext (a temp
//! workspace and cache dir, the cbuild binary, fixed SOURCE_DATE_EPOCH, no progress bars), the
//! harness scripts (`tests/harness`, `../shared/harness`), keygen, skips. Submodules: `registry`,
//! `cache_server`, `buildgrid` and `buildgrid_exec` (the real servers, own or shared by the
//! binary, on `daemon`), `http` (a fake HTTP server and a GET),
//! `fault_proxy` (a fault-injecting proxy in front of them), `child` (a test body in a child
//! process, for process-wide state), `support` (the reliability tests' workspaces and clean-build
//! oracle).
#![allow(dead_code)]

pub mod buildgrid;
pub mod buildgrid_exec;
pub mod cache_server;
pub mod child;
pub mod daemon;
pub mod fault_proxy;
pub mod http;
pub mod registry;
pub mod support;
pub mod tcp_delay;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestContext {
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TestContext {
    pub fn new() -> TestContext {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cbuild.toml"), "").unwrap();
        TestContext { dir, cache: tempfile::tempdir().unwrap() }
    }

    /// A context whose workspace is a copy of `examples/`.
    pub fn from_examples() -> TestContext {
        let cx = TestContext::new();
        copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), cx.root());
        cx
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cbuild"));
        c.current_dir(self.root())
            .env("CBUILD_CACHE_DIR", self.cache.path())
            .env("SOURCE_DATE_EPOCH", "315532800")
            .env_remove("CBUILD_JOBS")
            .env_remove("CBUILD_REMOTE_CACHE")
            .env("NO_COLOR", "1");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.cmd().args(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: self.filter(&String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// Replaces temp paths so snapshots are stable. Digests are never filtered.
    pub fn filter(&self, s: &str) -> String {
        s.replace(&self.root().display().to_string(), "[WS]")
            .replace(&self.cache.path().display().to_string(), "[CACHE]")
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        if rel.components().any(|c| c.as_os_str() == "cbuild-out") {
            continue;
        }
        let dst: PathBuf = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(t, &dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// The harness script `script`: the repository's own `tests/harness/<script>` if there is one,
/// else `../shared/harness/<script>` beside the repository (CI and developers have shared/ there).
pub fn harness(script: &str) -> PathBuf {
    let p = harness_path(script);
    assert!(p.is_file(), "harness script {} not found (shared/ must sit beside the repository)", p.display());
    p
}

/// Where [`harness`] looks for `script`, for callers that skip (`skip_unless_ci`) without it.
pub fn harness_path(script: &str) -> PathBuf {
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness").join(script);
    if own.is_file() {
        return own;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/harness").join(script)
}

/// Runs a harness script; returns (exit code, stdout+stderr).
pub fn run_harness(script: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(harness(script)).args(args).output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// Standard base64 of `s` (a config.json `auth` field, a planted secret's encoded form).
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A test that cannot run here (a tool or privilege is missing): under `CI=true` this fails the
/// test, naming what is missing (CI installs everything, so a skip there would hide a broken
/// install step); elsewhere it prints `SKIP: …` and the caller returns.
pub fn skip_unless_ci(reason: &str) {
    assert!(std::env::var_os("CI").is_none(), "{reason} (tests never skip under CI=true: install it)");
    eprintln!("SKIP: {reason}");
}

/// A remote-cache signing key pair made by `cbuild cache keygen` (the private key file lives as
/// long as this value).
pub struct Keys {
    _dir: tempfile::TempDir,
    pub private: PathBuf,
    pub public: String,
}

/// Runs `cbuild cache keygen` into a temp dir; checks the `.pub` file matches what it printed.
pub fn keygen() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("signing.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_cbuild")).arg("cache").arg("keygen").arg(&private).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let pub_file = format!("{}.pub", private.display());
    assert_eq!(std::fs::read_to_string(pub_file).unwrap().trim(), public);
    Keys { _dir: dir, private, public }
}

impl Keys {
    pub fn private_str(&self) -> &str {
        self.private.to_str().unwrap()
    }
    /// The environment of a trusted writer.
    pub fn writer(&self) -> Vec<(&str, &str)> {
        vec![("CBUILD_REMOTE_SIGNING_KEY", self.private_str())]
    }
    /// The environment of a reader trusting this key.
    pub fn reader(&self) -> Vec<(&str, &str)> {
        vec![("CBUILD_REMOTE_TRUSTED_KEYS", self.public.as_str())]
    }
}
