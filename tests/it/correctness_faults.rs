//! Regression tests for an outside audit "under faults" (a fault-injecting proxy in front of the
//! real cache server, kill -9, concurrency, disk full), one test per finding:
//!
//! 1. a remote-cache hit used a damaged blob that was already in the local CAS (existence only);
//! 2. concurrent writers of one OCI layout leaked `.tmp-link-*` hard links (rename(2) onto the same
//!    inode succeeds and leaves the source);
//! 3. a failed copy on a full disk left a partial temp file, and the error lost its OS cause;
//! 4. temp files of a `kill -9`ed writer stayed until `cbuild cache gc`;
//! 5. `cbuild push` / `build --push` counted pushes as executed actions;
//! 6. `cbuild push` printed a layout path it never wrote.
//!
//! Real servers: `http-cache.sh` (nginx WebDAV, the remote cache) and `registry.sh` (distribution),
//! the ones the test binary shares (`common::cache_server`, `common::registry`).
//! The disk-full tests mount small tmpfs file systems (root only; skipped with a message otherwise).

use crate::common;
use crate::common::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cache_server::CacheServer;
use common::registry::Registry;
use support::{Rng, Ws};

const SMALL: &[&str] = &["//tools/..."];

/// Files under `dir` (recursively) whose name starts with `.tmp`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// The manifest of the layout `dir` (parsed) and its digest.
fn layout_manifest(dir: &Path) -> (String, serde_json::Value) {
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m = std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    (d, serde_json::from_slice(&m).unwrap())
}

/// The inode of this process's pid namespace, as cbuild puts it into temp file names.
fn pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").unwrap().ino()
}

/// The pid of a process that has exited (and been reaped): no process has it now.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    // SAFETY: signal 0 only checks for existence.
    assert_eq!(unsafe { libc::kill(pid as i32, 0) }, -1, "pid {pid} was reused at once");
    pid
}

/// `cbuild --remote-cache URL build --json ARGS` with extra environment.
fn remote_build(ws: &Ws, url: &str, env: &[(&str, &str)], args: &[&str]) -> support::Out {
    let mut c = ws.cmd();
    c.envs(env.iter().copied()).args(["--remote-cache", url, "build", "--json"]).args(args);
    support::out_of(&mut c)
}

// ---- 1 ----

#[test]
fn remote_hit_verifies_blobs_already_in_the_local_cas() {
    let srv = CacheServer::shared();
    let keys = common::keygen();
    // Writer: a clean build that fills the remote cache.
    let a = support::examples();
    let wa = remote_build(&a, &srv.url, &[("CBUILD_REMOTE_SIGNING_KEY", keys.private_str())], SMALL);
    assert_eq!(wa.code, 0, "{}\n{}", wa.stderr, wa.failures());
    let clean = wa.digests();
    let (_, manifest) = layout_manifest(&a.path("cbuild-out/tools/tool"));
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string())
        .collect();
    // The tool's own layer (a `layer` action whose result the reader takes from the remote).
    let victim = layers.last().unwrap().clone();
    let good = std::fs::read(a.cache.join("cas/sha256").join(&victim)).unwrap();

    // Reader: a fresh cache that already holds a damaged copy of that blob under its digest
    // name (same size, one byte flipped: only a re-hash can tell).
    let b = support::copy_of(a.root(), None);
    let planted = b.cache.join("cas/sha256").join(&victim);
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    std::fs::write(&planted, &bad).unwrap();

    let rb = remote_build(&b, &srv.url, &[("CBUILD_REMOTE_TRUSTED_KEYS", keys.public.as_str())], SMALL);
    assert_eq!(rb.code, 0, "{}\n{}", rb.stderr, rb.failures());
    assert!(rb.summary()["cached_remote"].as_u64().unwrap() > 0, "no remote hit: {}", rb.stdout);
    assert_eq!(rb.digests(), clean, "the reader's digests equal the writer's clean build");
    // Every layout blob hashes to its name (before the fix the tool layout's layer did not).
    support::assert_blobs_whole(&b.path("cbuild-out"), "reader's cbuild-out");
    assert_eq!(std::fs::read(b.path("cbuild-out/tools/tool/blobs/sha256").join(&victim)).unwrap(), good);
    support::assert_blobs_whole(&b.cache.join("cas"), "reader's cache");
    // And the next build is all local hits on intact blobs.
    let again = b.build(SMALL);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.summary()["executed"], 0, "{}", again.stdout);
    assert_eq!(again.digests(), clean);

    // The client itself: a damaged local copy is replaced by the download, also when the same
    // client verified that blob before and remembered it (the memo is keyed by the file's inode,
    // size, mtime and ctime, and only holds files unchanged for 2 s: the racy window).
    use cbuild::remote::{RemoteAuth, RemoteCache, RemoteMode, Timeouts};
    let remote = RemoteCache::new(&srv.url, RemoteMode::ReadOnly, RemoteAuth::None, Timeouts::default()).unwrap();
    let t = support::tempdir();
    let local = cbuild::cas::BlobDir::open(t.path()).unwrap();
    let d = cbuild::model::digest::Digest::parse(&format!("sha256:{victim}")).unwrap();
    for round in 0..4 {
        match round {
            0 | 3 => std::fs::write(local.path(&d), &bad).unwrap(),
            1 => std::thread::sleep(cbuild::cache::RACY_WINDOW + Duration::from_millis(200)),
            _ => {}
        }
        assert_eq!(remote.fetch_blob(&d, &local).unwrap(), good.len() as u64, "round {round}");
        assert_eq!(std::fs::read(local.path(&d)).unwrap(), good, "round {round}");
    }
}

// ---- 2 ----

#[test]
fn concurrent_layout_writers_leave_no_tmp_links() {
    use cbuild::cas::BlobDir;
    use cbuild::oci::{append_layer, scratch, write_layer, write_layout, LayerOptions, TarEntry};

    // Through the API: 8 threads write the same image to the same (emptied) layout, 40 rounds.
    let t = support::tempdir();
    let blobs = BlobDir::open(t.path().join("cas")).unwrap();
    let mut image = scratch("linux", "amd64").unwrap();
    for i in 0..4 {
        let f = t.path().join(format!("f{i}"));
        std::fs::write(&f, format!("file {i}\n").repeat(1000)).unwrap();
        let l =
            write_layer(vec![TarEntry::file(format!("f{i}"), &f, 0o644)], &LayerOptions::default(), &blobs, &|_, _| {
                None
            })
            .unwrap();
        image = append_layer(&image, &l, "test").unwrap();
    }
    let layout = t.path().join("out/img");
    for round in 0..40 {
        let _ = std::fs::remove_dir_all(&layout);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    write_layout(&layout, &image, &blobs, Some("latest")).unwrap();
                });
            }
        });
        let left = temp_files(&layout);
        assert!(left.is_empty(), "round {round}: temp files left in the layout: {left:?}");
        assert_eq!(layout_manifest(&layout).0, image.digest().to_string());
    }
    support::assert_blobs_whole(&layout, "layout written by threads");

    // Through the CLI: 4 processes build the same targets into one workspace and cache, 3 rounds,
    // cbuild-out removed before each round so every process writes every layout.
    let ws = support::examples();
    let want = ws.ok(SMALL);
    for round in 0..3 {
        let _ = std::fs::remove_dir_all(ws.path("cbuild-out"));
        let children: Vec<_> = (0..4)
            .map(|_| ws.cmd().args(["build", "-q"]).args(SMALL).stdout(Stdio::null()).stderr(Stdio::piped()).spawn())
            .map(Result::unwrap)
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let left = temp_files(&ws.path("cbuild-out"));
        assert!(left.is_empty(), "round {round}: temp files left in cbuild-out: {left:?}");
        let after = ws.build(SMALL);
        assert_eq!(after.digests(), want);
        support::assert_blobs_whole(&ws.path("cbuild-out"), "cbuild-out");
    }
}

// ---- 3 ----

/// A tmpfs mounted for the test, unmounted (lazily, so a failing test cannot leave it busy) on
/// drop. The same approach as `reliability_faults.rs`'s disk-full tests.
struct Tmpfs(PathBuf, #[allow(dead_code)] Option<tempfile::TempDir>);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at` (created), or at a new temp dir.
    fn mount(size: &str, at: Option<&Path>) -> Option<Tmpfs> {
        let (path, own) = match at {
            Some(p) => {
                std::fs::create_dir_all(p).unwrap();
                (p.to_path_buf(), None)
            }
            None => {
                let d = tempfile::tempdir().unwrap();
                (d.path().to_path_buf(), Some(d))
            }
        };
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // SAFETY: geteuid has no preconditions.
            assert!(unsafe { libc::geteuid() } != 0, "running as root but mount -t tmpfs failed");
            common::skip_unless_ci("cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs(path, own))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn incompressible(path: &Path, bytes: usize, seed: u64) {
    std::fs::write(path, Rng::new(seed).bytes(bytes)).unwrap();
}

#[test]
fn failed_cas_copy_on_full_disk_leaves_no_partial_file() {
    use cbuild::cas::BlobDir;
    use cbuild::model::digest::Digest;

    // (a) The blob store on a 1 MB tmpfs; sources of 3 MB elsewhere (so a link is impossible and
    // the copy runs out of space). Every writer fails, names the cause and leaves no temp file.
    let Some(fs) = Tmpfs::mount("1m", None) else { return };
    let blobs = BlobDir::open(fs.path().join("cas")).unwrap();
    let src_dir = support::tempdir();
    let src = src_dir.path().join("big");
    incompressible(&src, 3 << 20, 1);
    let bytes = std::fs::read(&src).unwrap();
    let d = Digest::of_bytes(&bytes);
    let chain = |e: &dyn std::error::Error| {
        let mut s = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    };
    let e = blobs.link_or_copy_from(&src, &d).unwrap_err();
    assert!(chain(&e).contains("No space left on device"), "copy: {}", chain(&e));
    let e = blobs.put_bytes(&bytes).unwrap_err();
    assert!(chain(&e).contains("No space left on device"), "put_bytes: {}", chain(&e));
    let e = blobs
        .put_stream::<cbuild::cas::CasError>(|w| {
            w.write_all(&bytes).map_err(|source| cbuild::cas::CasError::Io { path: src.clone(), source })
        })
        .unwrap_err();
    assert!(chain(&e).contains("No space left on device"), "put_stream: {}", chain(&e));
    let left = temp_files(fs.path());
    assert!(left.is_empty(), "partial temp files left in the blob store: {left:?}");
    assert!(!blobs.contains(&d));
    // A layout copied across file systems onto the full disk: the same.
    let layout_fs = Tmpfs::mount("1m", Some(&src_dir.path().join("layout"))).unwrap();
    let e = cbuild::cas::link_or_copy(&src, &layout_fs.path().join("blobs/sha256").join(d.hex())).unwrap_err();
    assert!(e.to_string().contains("No space left on device"), "{e}");
    let left = temp_files(layout_fs.path());
    assert!(left.is_empty(), "partial temp files left in the layout: {left:?}");
    drop(layout_fs);

    // (b) Through the CLI: `cbuild-out` on a 1 MB tmpfs, the cache elsewhere (layouts are then
    // copies), a 3 MB incompressible layer. Exit 36 (the machine's problem); the error says why
    // and where; no partial file.
    let ws = support::examples();
    incompressible(&ws.path("tools/index.html"), 3 << 20, 2);
    let Some(out_fs) = Tmpfs::mount("1m", Some(&ws.path("cbuild-out"))) else { return };
    let o = ws.build(&["//tools:web"]);
    assert_eq!(o.code, 36, "{}", o.all());
    assert!(!o.all().contains("panicked"), "{}", o.all());
    assert!(o.all().contains("No space left on device"), "the error keeps its OS cause: {}", o.all());
    assert!(o.all().contains("cbuild-out/tools/web"), "the error names the layout: {}", o.all());
    let left = temp_files(out_fs.path());
    assert!(left.is_empty(), "partial temp files left in cbuild-out: {left:?}");
    drop(out_fs);
    let after = ws.build(&["//tools:web"]);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert_eq!(after.digests(), support::clean_digests(ws.root(), &["//tools:web"]));

    // (c) The cache itself on an 8 MB tmpfs, a 12 MB layer: no temp file stays in the CAS.
    let Some(cache_fs) = Tmpfs::mount("8m", None) else { return };
    let ws = Ws { cache: cache_fs.path().join("cache"), ..support::examples() };
    incompressible(&ws.path("tools/index.html"), 12 << 20, 3);
    let o = ws.build(&["//tools:web"]);
    assert_eq!(o.code, 36, "{}", o.all());
    assert!(o.all().contains("No space left on device"), "{}", o.all());
    let left = temp_files(&ws.cache.join("cas"));
    assert!(left.is_empty(), "partial temp files left in the CAS: {left:?}");
}

// ---- 4 ----

#[test]
fn kill9_temp_files_are_swept_by_the_next_build() {
    let ws = support::examples();
    let clean = ws.ok(SMALL);
    let cas = ws.cache.join("cas/sha256");
    let ns = pid_ns();

    // A real kill -9 while a blob is being written (best effort: a 3 MB layer to compress).
    let mut caught = false;
    for v in 0..5u64 {
        incompressible(&ws.path("tools/index.html"), 3 << 20, 10 + v);
        let mut child =
            ws.cmd().args(["build", "-q"]).args(SMALL).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) && child.try_wait().unwrap().is_none() {
            if !temp_files(&cas).is_empty() {
                caught = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        support::kill9(&mut child); // once: our own child, reaped by kill9's wait
        if caught {
            break;
        }
    }
    let killed_leftovers = temp_files(&cas);
    eprintln!("kill -9 during a blob write: {caught}; leftovers: {killed_leftovers:?}");

    // Planted leftovers: a dead writer's tagged names (every kind), untagged names, and scratch
    // in tmp/; plus a fresh temp file of a live process (this one), which must stay.
    let dead = dead_pid();
    let stale = [
        cas.join(format!(".tmp-{dead}.{ns}-AbC123")),
        cas.join(format!(".tmp-link-{dead}.{ns}-7")),
        cas.join(format!(".tmp-remote-{dead}.{ns}-xYz789")),
        cas.join(".tmp-OLD123"),
        cas.join(format!(".tmp-{}", &clean.values().next().unwrap()["sha256:".len()..][..12])),
        ws.cache.join("tmp/leftover-scratch/x"),
        ws.cache.join("tmp/discarded-1-2.sqlite"),
    ];
    for p in &stale {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"partial").unwrap();
    }
    let live = cas.join(format!(".tmp-{}.{ns}-live01", std::process::id()));
    std::fs::write(&live, b"being written").unwrap();

    // The next build sweeps them (it has the cache to itself) and is correct.
    incompressible(&ws.path("tools/index.html"), 3 << 20, 99);
    let want = support::clean_digests(ws.root(), SMALL);
    let after = ws.build(SMALL);
    assert_eq!(after.code, 0, "{}\n{}", after.stderr, after.failures());
    assert_eq!(after.digests(), want);
    for p in stale.iter().chain(&killed_leftovers) {
        assert!(!p.exists(), "{} survived the next build", p.display());
    }
    assert!(!ws.cache.join("tmp/leftover-scratch").exists());
    assert!(live.exists(), "a live process's temp file was removed");
    assert_eq!(temp_files(&cas), vec![live.clone()]);
    support::assert_blobs_whole(&ws.cache, "cache");

    // While another process has the cache open (this test holds the use lock shared, as every
    // open cache does), only names proving a dead writer go; untagged ones wait for a lone open.
    let lock = std::fs::File::open(ws.cache.join("lock")).unwrap();
    lock.lock_shared().unwrap();
    let dead_tagged = cas.join(format!(".tmp-{dead}.{ns}-Dead01"));
    let untagged = cas.join(".tmp-unknown");
    let scratch = ws.cache.join("tmp/scratch-of-a-live-build");
    for p in [&dead_tagged, &untagged, &scratch] {
        std::fs::write(p, b"x").unwrap();
    }
    let o = ws.build(SMALL);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!dead_tagged.exists(), "a dead writer's file survived");
    assert!(untagged.exists() && scratch.exists() && live.exists(), "removed while another process had the cache open");
    drop(lock);
    let o = ws.build(SMALL);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!untagged.exists() && !scratch.exists(), "the next lone open sweeps the rest");
    assert!(live.exists());
    std::fs::remove_file(&live).unwrap();
}

// ---- 5 ----

fn summary_of(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["type"] == "summary")
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn push_is_not_counted_as_an_executed_action() {
    let reg = Registry::shared();
    let ws = support::examples();
    ws.write(
        "pushme/BUILD.star",
        format!(
            "oci_image(name = \"img\", base = \"//stacks:run-image\", layers = [\"//tools:tool-layer\"], \
             tags = [\"{0}:1\", \"{0}:2\"])\n",
            reg.tag("t/pushme")
        ),
    );
    ws.ok(&["//tools:tool", "//pushme:img"]);
    // `cbuild push` of a built image with two tags: nothing executes, two pushes.
    let r = ws.run(&["push", "--json", "//tools:tool", "--tag", &reg.tag("t/tool:1"), "--tag", &reg.tag("t/tool:2")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = summary_of(&r.stdout);
    assert_eq!(s["executed"], 0, "pushes are not executed actions: {s}");
    assert_eq!(s["pushed"], 2, "{s}");
    // The new field is appended: the documented order is kept.
    let line = r.stdout.lines().rfind(|l| l.contains("\"summary\"")).unwrap();
    let at = |k: &str| line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("no `{k}` in {line}"));
    let order = ["type", "executed", "cached_local", "cached_remote", "failed", "targets", "pushed"];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "field order changed: {line}");
    // Plain output: the summary line says "0 executed" and reports the pushes apart.
    let r = ws.run(&["push", "//tools:tool", "--tag", &reg.tag("t/tool:3")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = r.stderr.lines().find(|l| l.starts_with("ok:")).unwrap_or_default();
    assert!(line.contains(" 0 executed") && line.ends_with(", 1 pushed"), "{}", r.stderr);
    // `build --push` to the target's two tags.
    let r = ws.run(&["build", "--json", "--push", "//pushme:img"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = summary_of(&r.stdout);
    assert_eq!((s["executed"].as_u64(), s["pushed"].as_u64()), (Some(0), Some(2)), "{s}");
    // A build without a push reports 0 pushes.
    let s = ws.build(&["//pushme:img"]).summary();
    assert_eq!((s["executed"].as_u64(), s["pushed"].as_u64()), (Some(0), Some(0)), "{s}");
}

// ---- 6 ----

#[test]
fn push_writes_the_layout_it_prints() {
    let reg = Registry::shared();
    // A never-built workspace: `cbuild push` builds, pushes and leaves the layout it names.
    let ws = support::examples();
    let tag = reg.tag("t/tool:1");
    let r = ws.run(&["push", "--json", "//tools:tool", "--tag", &tag]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = summary_of(&r.stdout);
    let t = &s["targets"][0];
    assert_eq!(t["layout"], "cbuild-out/tools/tool", "{s}");
    let pushed: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "pushed")
        .collect();
    assert_eq!(pushed[0]["digest"], t["image_digest"]);
    let layout = ws.path(t["layout"].as_str().unwrap());
    assert_eq!(layout_manifest(&layout).0, t["image_digest"].as_str().unwrap());
    support::assert_blobs_whole(&layout, "pushed image's layout");
    let (code, out) = common::run_harness("validate-oci.sh", &[layout.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // Plain output prints the same path, and the layout is the image `cbuild build` gives.
    let r = ws.run(&["push", "//tools:tool", "--tag", &tag]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), format!("//tools:tool {} cbuild-out/tools/tool", t["image_digest"].as_str().unwrap()));
    assert_eq!(ws.build(&["//tools:tool"]).digests()["//tools:tool"], t["image_digest"].as_str().unwrap());

    // An image on a shallow `oci_pull` base: push neither downloads the base layers nor claims a
    // layout; an older layout at that path (of another image) loses its index.json.
    let base = reg.tag("base/run:1");
    let r = ws.run(&["push", "//stacks:run-image", "--tag", &base]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (base_digest, base_manifest) = layout_manifest(&ws.path("cbuild-out/stacks/run-image"));
    let base_layers: Vec<String> =
        base_manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    let app = support::empty();
    app.write("base/BUILD.star", format!("oci_pull(name = \"run\", image = \"{base}\", digest = \"{base_digest}\")\n"));
    app.write(
        "app/BUILD.star",
        "layer(name = \"l\", srcs = [\"hi.sh\"], prefix = \"/app\", mode = \"0755\")\n\
         oci_image(name = \"img\", base = \"//base:run\", layers = [\":l\"], entrypoint = [\"/app/hi.sh\"])\n",
    );
    app.write("app/hi.sh", "#!/bin/sh\necho hi\n");
    common::copy_tree(&layout, &app.path("cbuild-out/app/img")); // stale: another image
    let r = app.run(&["push", "--json", "//app:img", "--tag", &reg.tag("apps/app:1")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = summary_of(&r.stdout);
    assert!(s["targets"][0]["layout"].is_null(), "no layout is claimed: {s}");
    assert_eq!(s["pushed"], 1, "{s}");
    assert!(r.stderr.contains("note: no layout written for `//app:img`"), "{}", r.stderr);
    assert!(!app.path("cbuild-out/app/img/index.json").exists(), "the stale layout still has an index.json");
    let log = reg.log();
    for d in &base_layers {
        let gets = log.lines().filter(|l| l.contains("GET") && l.contains(&format!("/blobs/{d}"))).count();
        assert_eq!(gets, 0, "base layer {d} was downloaded by a push");
    }
    let r = app.run(&["push", "//app:img", "--tag", &reg.tag("apps/app:1")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let digest = s["targets"][0]["image_digest"].as_str().unwrap();
    assert_eq!(r.stdout.trim(), format!("//app:img {digest} -"), "plain output marks the missing layout");
    // `cbuild build` writes it (fetching the base layers), the same image.
    let b = app.build(&["//app:img"]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(b.summary()["targets"][0]["layout"], "cbuild-out/app/img");
    assert_eq!(layout_manifest(&app.path("cbuild-out/app/img")).0, digest);
    support::assert_blobs_whole(&app.path("cbuild-out/app/img"), "app layout");
}
