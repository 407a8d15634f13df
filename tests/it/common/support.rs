//! Helpers of the reliability, correctness and security tests (`common::support`): a seeded RNG,
//! workspaces whose cache dir can be shared, JSON builds, and the clean-build oracle every
//! reliability test compares against.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The busybox-based example targets (no network needed; `//services/hello-py` is left out).
pub const TARGETS: &[&str] =
    &["//services/api:image", "//services/worker:image", "//services/site:image", "//tools/..."];

/// True when the long variants were asked for (`CBUILD_LONG_TESTS=1`).
pub fn long() -> bool {
    std::env::var("CBUILD_LONG_TESTS").map(|v| v == "1").unwrap_or(false)
}

/// xorshift64: reproducible from the seed printed by each test.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Seed from `CBUILD_RELIABILITY_SEED` (to replay a failure) or the given default.
pub fn seed(default: u64) -> u64 {
    std::env::var("CBUILD_RELIABILITY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A temp dir on tmpfs (`/dev/shm`) when there is one, else in the default temp dir. These tests
/// check correctness after faults (kill -9, corruption), not durability after power loss, so
/// tmpfs changes nothing they assert and spares the shared disk's fsync cost (about half the time).
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("CBUILD_RELIABILITY_ON_DISK").is_none() && shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A workspace dir and the cache dir it builds with (which may be shared with other workspaces).
pub struct Ws {
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
    pub _own_cache: Option<tempfile::TempDir>,
}

/// A copy of `examples/` (without cbuild-out) with its own cache.
pub fn examples() -> Ws {
    let dir = tempdir();
    crate::common::copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), dir.path());
    let cache = tempdir();
    Ws { dir, cache: cache.path().to_path_buf(), _own_cache: Some(cache) }
}

/// An empty workspace (just `cbuild.toml`) with its own cache.
pub fn empty() -> Ws {
    let dir = tempdir();
    std::fs::write(dir.path().join("cbuild.toml"), "").unwrap();
    let cache = tempdir();
    Ws { dir, cache: cache.path().to_path_buf(), _own_cache: Some(cache) }
}

/// A copy of `from` (without cbuild-out) building with `cache`.
pub fn copy_of(from: &Path, cache: Option<&Path>) -> Ws {
    let dir = tempdir();
    crate::common::copy_tree(from, dir.path());
    let _ = std::fs::remove_dir_all(dir.path().join("cbuild-out"));
    match cache {
        Some(c) => Ws { dir, cache: c.to_path_buf(), _own_cache: None },
        None => {
            let c = tempdir();
            Ws { dir, cache: c.path().to_path_buf(), _own_cache: Some(c) }
        }
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn events(&self) -> Vec<Value> {
        self.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
    pub fn summary(&self) -> Value {
        self.events().into_iter().rev().find(|e| e["type"] == "summary").unwrap_or(Value::Null)
    }
    pub fn digests(&self) -> BTreeMap<String, String> {
        digests_of(&self.summary())
    }
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    /// The error texts of `failed` events.
    pub fn failures(&self) -> String {
        self.events()
            .iter()
            .filter(|e| e["type"] == "failed")
            .map(|e| format!("{}\n", e["error"].as_str().unwrap_or("")))
            .collect()
    }
}

pub fn digests_of(summary: &Value) -> BTreeMap<String, String> {
    summary["targets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (t["label"].as_str().unwrap().to_string(), t["image_digest"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Ws {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }
    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cbuild"));
        c.current_dir(self.root())
            .env("CBUILD_CACHE_DIR", &self.cache)
            .env("SOURCE_DATE_EPOCH", "315532800")
            .env_remove("CBUILD_JOBS")
            .env_remove("CBUILD_REMOTE_CACHE")
            .env_remove("CBUILD_REMOTE_CACHE_TOKEN")
            .env_remove("CBUILD_REMOTE_CACHE_AUTH")
            .env_remove("CBUILD_GLOB_LIMIT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }
    pub fn run(&self, args: &[&str]) -> Out {
        out_of(self.cmd().args(args))
    }
    /// `cbuild build --json ARGS`, whatever the outcome.
    pub fn build(&self, args: &[&str]) -> Out {
        let mut a = vec!["build", "--json"];
        a.extend_from_slice(args);
        self.run(&a)
    }
    /// A build that must succeed; returns its image digests.
    pub fn ok(&self, args: &[&str]) -> BTreeMap<String, String> {
        let o = self.build(args);
        assert_eq!(o.code, 0, "build {args:?} failed:\n{}\n{}", o.stderr, o.failures());
        let d = o.digests();
        assert!(!d.is_empty(), "no targets in summary: {}", o.stdout);
        d
    }
}

pub fn out_of(c: &mut Command) -> Out {
    let o = c.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The oracle: the same tree copied to a fresh path and built with a fresh cache.
pub fn clean_digests(tree: &Path, args: &[&str]) -> BTreeMap<String, String> {
    copy_of(tree, None).ok(args)
}

/// Every file under `dir` whose bytes contain `needle` (like `grep -r -l`).
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()) {
        if e.file_type().is_file() {
            if let Ok(b) = std::fs::read(e.path()) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(e.path().to_path_buf());
                }
            }
        }
    }
    hits
}

/// `kill -9` of one child we started.
pub fn kill9(child: &mut std::process::Child) {
    // SAFETY: kill(2) on the pid of our own child; the child is reaped by the caller's wait.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The sha256 of `b` as lowercase hex.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Every blob under `dir/**/sha256/` (CAS, layouts) hashes to its name; returns how many there are.
pub fn assert_blobs_whole(dir: &Path, what: &str) -> usize {
    let mut n = 0;
    for e in walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()) {
        let p = e.path();
        let in_blobs = p.parent().map(|d| d.ends_with("sha256")).unwrap_or(false);
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if e.file_type().is_file() && in_blobs && name.len() == 64 && !name.starts_with('.') {
            let b = std::fs::read(p).unwrap();
            assert_eq!(sha256_hex(&b), name, "{what}: blob {} does not hash to its name", p.display());
            n += 1;
        }
    }
    assert!(n > 0, "{what}: no blobs under {}", dir.display());
    n
}
