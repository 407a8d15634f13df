//! Safety tests of the local cache through its public API: schema mismatch and corruption are
//! discarded (never misread), threads and processes share one cache, `kill -9` never leaves a
//! wrong entry, damaged blobs are misses, and the stat cache hashes only what changed.
//!
//! Child processes are this test binary itself, re-run with `CBUILD_CACHE_TEST_CHILD` set so that
//! only `child_process_entry` does anything.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cbuild::cache::{Cache, CacheError, ComponentValue, KeyBuilder, RunOutcome, RunRecord};
use cbuild::model::digest::{Blake3, Digest};

use crate::common;

const CHILD_ENV: &str = "CBUILD_CACHE_TEST_CHILD";

/// A tiny xorshift generator: no `rand` dependency, reproducible from a printed seed.
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let n = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        Rng((n as u64) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Blob content for item `i` of writer `w`: deterministic, so overlapping writers agree.
fn content(i: u64, part: u64, len: usize) -> Vec<u8> {
    let mut r = Rng((i << 8 | part).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

fn key_for(i: u64) -> (Blake3, cbuild::cache::Components) {
    KeyBuilder::new("test", 1).component("i", i).component("env", ComponentValue::map([("N", i.to_string())])).finish()
}

fn cas_err(c: &Cache) -> impl Fn(cbuild::cas::CasError) -> CacheError + '_ {
    |source| CacheError::Cas { dir: c.cas().root().to_path_buf(), source }
}

/// Writes item `i`: its blobs first, then the action referencing them. The result JSON lists the
/// blobs, so a reader can check the entry is complete and consistent.
fn write_item(c: &Cache, i: u64, writer: &str, sizes: &[usize]) -> Result<(), CacheError> {
    let (key, _) = key_for(i);
    let mut blobs = Vec::new();
    for (part, len) in sizes.iter().enumerate() {
        blobs.push(c.cas().put_bytes(&content(i, part as u64, *len)).map_err(cas_err(c))?);
    }
    let result = serde_json::json!({
        "i": i,
        "writer": writer,
        "blobs": blobs.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    c.put_action(&key, "test", &format!("//t:{i}"), &result.to_string(), &blobs)
}

/// Checks a stored entry is complete: it parses, its blobs match the result JSON, every blob
/// verifies, and its key and label are those of the item its result names.
fn check_entry(c: &Cache, key: &Blake3) -> u64 {
    let e = c.get_action(key).unwrap().unwrap_or_else(|| panic!("entry `{key}` vanished"));
    let v: serde_json::Value = serde_json::from_str(&e.result_json).expect("complete JSON");
    let i = v["i"].as_u64().unwrap();
    assert_eq!((&key_for(i).0, format!("//t:{i}")), (key, e.label.clone()));
    let listed: BTreeSet<Digest> =
        v["blobs"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(listed, e.blobs.iter().cloned().collect::<BTreeSet<_>>(), "entry `{key}`");
    for d in &e.blobs {
        c.cas().read_verified(d).unwrap_or_else(|err| panic!("blob of `{key}`: {err}"));
    }
    assert!(c.verify_action_blobs(key).unwrap());
    i
}

/// Kills (SIGKILL) and reaps the child if the test fails before doing so itself.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_child(mode: &str, dir: &Path, seed: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--exact")
        .arg(common::child::test_name(module_path!(), "child_process_entry"))
        .args(["--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, format!("{mode}|{}|{seed}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child test process")
}

/// Does nothing in a normal run; in a child process, plays the role named by `CHILD_ENV`.
#[test]
fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (mode, dir, seed) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let seed: u64 = seed.parse().unwrap();
    let c = Cache::open(Path::new(dir)).unwrap();
    match mode {
        "writer" => concurrent_worker(&c, &format!("proc{seed}"), seed),
        "killable" => {
            // Dies with the test that spawned it: a parent killed before it could kill this child
            // (a timeout, ^C) must not leave a writer filling the disk.
            // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the calling process.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if std::os::unix::process::parent_id() == 1 {
                return; // The parent is already gone.
            }
            // A file, not stdout: the test harness may hold a child's stdout until the test ends.
            fs::write(Path::new(dir).with_extension(format!("ready-{seed}")), b"").unwrap();
            let mut rng = Rng(seed | 1);
            // Bounded as well: the parent kills within ~60 ms; 30 s means it never will.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            for n in 0.. {
                if std::time::Instant::now() > deadline {
                    panic!("killable child was never killed");
                }
                let i = seed * 1_000_000 + n;
                let sizes: Vec<usize> = (0..1 + rng.below(3)).map(|_| 1 + rng.below(256 << 10) as usize).collect();
                write_item(&c, i, "killable", &sizes).unwrap();
                if n % 5 == 0 {
                    record(&c, i, RunOutcome::Executed);
                }
            }
        }
        other => panic!("unknown child mode `{other}`"),
    }
}

fn record(c: &Cache, i: u64, outcome: RunOutcome) {
    let (key, components) = key_for(i);
    c.record_run(&RunRecord {
        label: format!("//t:{}", i % 7),
        action: "build".into(),
        key,
        components,
        outcome,
        build_id: format!("b{i}"),
        at: SystemTime::now(),
    })
    .unwrap();
}

/// The work each thread or process does in `threads_and_processes_share_a_cache`: overlapping
/// keys written, read back at once and checked, runs recorded, files hashed.
fn concurrent_worker(c: &Cache, name: &str, seed: u64) {
    let files: Vec<PathBuf> = (0..20).map(|n| c.dir().join(format!("../src/f{n}.txt"))).collect();
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    for round in 0..60u64 {
        let i = (round + seed * 7) % 40;
        write_item(c, i, name, &[100 + (i as usize) * 13, 4096]).unwrap();
        check_entry(c, &key_for(i).0);
        let other = rng.below(40);
        if let Some(e) = c.get_action(&key_for(other).0).unwrap() {
            assert_eq!(e.label, format!("//t:{other}"));
        }
        if round % 10 == 0 {
            record(c, i, RunOutcome::CachedLocal);
            let hashes = c.file_hasher().hash_files(&files).unwrap();
            for (p, h) in files.iter().zip(hashes) {
                assert_eq!(h.0, *blake3::hash(&fs::read(p).unwrap()).as_bytes());
            }
            c.touch_blobs(&[Digest::of_bytes(&content(i, 0, 100 + (i as usize) * 13))]).unwrap();
        }
    }
}

fn old_time() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

fn set_mtime(p: &Path, t: SystemTime) {
    File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

fn wait_ok(mut guard: ChildGuard, what: &str) {
    let child = &mut guard.0;
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "{what} failed: {status}\n{out}\n{err}");
    assert!(out.contains("1 passed"), "{what} did not run the entry: {out}");
}

fn sqlite(dir: &Path) -> PathBuf {
    dir.join("cache.sqlite")
}

// (a)
#[test]
fn schema_mismatch_discards_database_but_keeps_blobs() {
    let t = tempfile::tempdir().unwrap();
    let (key, _) = key_for(1);
    let blob = {
        let c = Cache::open(t.path()).unwrap();
        write_item(&c, 1, "a", &[10]).unwrap();
        c.get_action(&key).unwrap().unwrap().blobs[0].clone()
    };
    let conn = rusqlite::Connection::open(sqlite(t.path())).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);

    let c = Cache::open(t.path()).unwrap();
    assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
    assert!(c.warnings()[0].contains("schema version 999"), "{:?}", c.warnings());
    assert!(c.get_action(&key).unwrap().is_none(), "old entries are never read");
    assert!(c.cas().contains(&blob), "blobs survive");
    write_item(&c, 1, "a", &[10]).unwrap();
    check_entry(&c, &key);
    drop(c);
    assert!(Cache::open(t.path()).unwrap().warnings().is_empty(), "recreated database is kept");

    // A database with tables but no version at all (not ours, or pre-versioning) is discarded too.
    let conn = rusqlite::Connection::open(sqlite(t.path())).unwrap();
    conn.pragma_update(None, "user_version", 0).unwrap();
    drop(conn);
    let c = Cache::open(t.path()).unwrap();
    assert!(c.warnings()[0].contains("no schema version"), "{:?}", c.warnings());
    assert!(c.get_action(&key).unwrap().is_none());
}

fn populated(dir: &Path, items: u64) {
    let c = Cache::open(dir).unwrap();
    for i in 0..items {
        write_item(&c, i, "p", &[64]).unwrap();
        record(&c, i, RunOutcome::Executed);
    }
}

fn assert_opens_fresh(dir: &Path, what: &str) {
    let c = Cache::open(dir).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_eq!(c.warnings().len(), 1, "{what}: {:?}", c.warnings());
    assert!(c.warnings()[0].contains("discarded"), "{what}: {:?}", c.warnings());
    assert!(c.action_keys().unwrap().is_empty(), "{what}");
    write_item(&c, 5, "after", &[64]).unwrap();
    check_entry(&c, &key_for(5).0);
}

// (b)
#[test]
fn garbage_database_is_discarded_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    populated(t.path(), 50);
    let junk: Vec<u8> = b"this is not a database ".iter().copied().cycle().take(64 << 10).collect();
    fs::write(sqlite(t.path()), &junk).unwrap();
    let _ = fs::remove_file(t.path().join("cache.sqlite-wal"));
    assert_opens_fresh(t.path(), "garbage");
}

#[test]
fn damaged_pages_are_discarded_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    populated(t.path(), 300);
    // Keep the header (page 1) valid; scribble over the b-tree pages behind it.
    let mut bytes = fs::read(sqlite(t.path())).unwrap();
    assert!(bytes.len() > 16 << 10, "database too small to damage: {}", bytes.len());
    for (n, b) in bytes[4096..].iter_mut().enumerate() {
        if n % 3 == 0 {
            *b = 0xA5;
        }
    }
    fs::write(sqlite(t.path()), &bytes).unwrap();
    let _ = fs::remove_file(t.path().join("cache.sqlite-wal"));
    assert_opens_fresh(t.path(), "damaged pages");
}

#[test]
fn truncated_database_is_discarded_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    populated(t.path(), 300);
    let p = sqlite(t.path());
    let len = fs::metadata(&p).unwrap().len();
    File::options().write(true).open(&p).unwrap().set_len(len / 2 + 100).unwrap();
    assert_opens_fresh(t.path(), "truncated");
}

// (c)
#[test]
fn threads_and_processes_share_a_cache() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cache");
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for n in 0..20 {
        let p = src.join(format!("f{n}.txt"));
        fs::write(&p, format!("file {n}\n").repeat(n + 1)).unwrap();
        set_mtime(&p, old_time());
    }
    let children: Vec<ChildGuard> = (1..=2).map(|s| ChildGuard(spawn_child("writer", &dir, 100 + s))).collect();
    let shared = Arc::new(Cache::open(&dir).unwrap());
    std::thread::scope(|s| {
        for n in 0..4u64 {
            let shared = Arc::clone(&shared);
            let dir = dir.clone();
            s.spawn(move || {
                if n < 2 {
                    concurrent_worker(&shared, &format!("thread{n}"), n);
                } else {
                    // Its own `Cache` (own connection), opened while the others write.
                    let own = Cache::open(&dir).unwrap();
                    assert!(own.warnings().is_empty(), "{:?}", own.warnings());
                    concurrent_worker(&own, &format!("thread{n}"), n);
                }
            });
        }
    });
    for (n, c) in children.into_iter().enumerate() {
        wait_ok(c, &format!("writer process {n}"));
    }
    let keys = shared.action_keys().unwrap();
    assert_eq!(keys.len(), 40);
    for k in &keys {
        check_entry(&shared, k);
    }
    assert!(!shared.runs_for_label("//t:3").unwrap().is_empty());
}

// (d)
#[test]
fn kill_9_never_leaves_a_wrong_entry() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cache");
    let mut rng = Rng::from_time();
    eprintln!("kill test rng seed: {}", rng.0);
    for round in 1..=24u64 {
        let mut child = ChildGuard(spawn_child("killable", &dir, round));
        // Wait until it is writing, then kill it at a random moment.
        let ready = dir.with_extension(format!("ready-{round}"));
        let start = std::time::Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "round {round}: child never started");
            assert!(child.0.try_wait().unwrap().is_none(), "round {round}: child exited early");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        child.0.kill().unwrap(); // SIGKILL
        let status = child.0.wait().unwrap();
        let mut err = String::new();
        child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(!status.success() && !err.contains("panicked"), "round {round}: {status} {err}");
    }
    let c = Cache::open(&dir).unwrap();
    assert!(c.warnings().is_empty(), "kill -9 must not corrupt the database: {:?}", c.warnings());
    let keys = c.action_keys().unwrap();
    assert!(keys.len() >= 10, "children wrote too little to test anything: {}", keys.len());
    let rounds: BTreeSet<u64> = keys.iter().map(|k| check_entry(&c, k) / 1_000_000).collect();
    assert!(rounds.len() >= 10, "entries from too few rounds: {rounds:?}");
    // Leftovers of interrupted blob writes are garbage, and collecting them harms nothing.
    let report = c.gc_with_grace(None, None, Duration::ZERO).unwrap();
    assert_eq!(report.actions_removed, 0);
    for k in &keys {
        check_entry(&c, k);
    }
    let leftovers = fs::read_dir(c.cas().root().join("sha256"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmp-"))
        .count();
    assert_eq!(leftovers, 0);
}

// (e) The cheap existence check is `get_action`'s; content verification is the caller's, through
// `verify_action_blobs` (or `BlobDir::verify`/`read_verified` + `remove_action`).
#[test]
fn altered_or_truncated_blob_becomes_a_miss() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(t.path()).unwrap();
    for (i, damage) in [(1u64, "truncate"), (2, "alter"), (3, "delete")] {
        write_item(&c, i, "e", &[5000, 70]).unwrap();
        let (key, _) = key_for(i);
        let d = c.get_action(&key).unwrap().unwrap().blobs[0].clone();
        let p = c.cas().path(&d);
        match damage {
            "truncate" => File::options().write(true).open(&p).unwrap().set_len(100).unwrap(),
            "alter" => {
                let mut b = fs::read(&p).unwrap();
                b[17] ^= 1;
                fs::write(&p, b).unwrap();
            }
            _ => fs::remove_file(&p).unwrap(),
        }
        if damage != "delete" {
            assert!(c.get_action(&key).unwrap().is_some(), "{damage}: existence check only");
            assert!(c.cas().verify(&d).is_err(), "{damage}");
            write_item(&c, i, "e", &[5000, 70]).unwrap(); // heals: the blob is rewritten
            check_entry(&c, &key);
            // Damage it again and let the cache find out.
            File::options().write(true).open(&p).unwrap().set_len(10).unwrap();
            assert!(!c.verify_action_blobs(&key).unwrap(), "{damage}");
        }
        assert!(c.get_action(&key).unwrap().is_none(), "{damage}: must be a miss now");
    }
}

/// Sorted paths are looked up as one range of the stat cache (issue 23); unsorted ones, and a
/// range holding far more rows than asked for, one query per chunk. Every way gives the same
/// answers and reads no unchanged file.
#[test]
fn stat_cache_range_reads_answer_like_point_reads() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(&t.path().join("cache")).unwrap();
    fs::create_dir_all(t.path().join("src")).unwrap();
    let files: Vec<PathBuf> = (0..300).map(|n| t.path().join(format!("src/{n:04}.txt"))).collect();
    for (n, p) in files.iter().enumerate() {
        fs::write(p, format!("file {n}\n")).unwrap();
        set_mtime(p, old_time());
    }
    let want = |ps: &[PathBuf]| -> Vec<[u8; 32]> {
        ps.iter().map(|p| *blake3::hash(&fs::read(p).unwrap()).as_bytes()).collect()
    };
    let got = |hashes: Vec<Blake3>| hashes.into_iter().map(|h| h.0).collect::<Vec<_>>();
    let h = c.file_hasher();
    assert_eq!(got(h.hash_files(&files).unwrap()), want(&files));
    let sparse: Vec<PathBuf> = files.iter().step_by(10).cloned().collect();
    let run: Vec<PathBuf> = files[100..200].to_vec();
    let mut reversed = run.clone();
    reversed.reverse();
    for (what, ps) in [("every file", &files), ("a sparse range", &sparse), ("a run", &run), ("unsorted", &reversed)] {
        let h = c.file_hasher();
        assert_eq!(got(h.hash_files(ps).unwrap()), want(ps), "{what}");
        assert_eq!(h.counts().hashed, 0, "{what}: nothing read");
    }
    // A changed file inside a range is read again (once: then it is remembered); its neighbours
    // are not.
    fs::write(&files[150], "changed, and longer").unwrap();
    set_mtime(&files[150], old_time());
    for (ps, read) in [(&run, 1), (&sparse, 0), (&reversed, 0), (&files, 0)] {
        let h = c.file_hasher();
        assert_eq!(got(h.hash_files(ps).unwrap()), want(ps));
        assert_eq!(h.counts().hashed, read);
    }
    fs::write(&files[160], "changed too, and longer").unwrap();
    set_mtime(&files[160], old_time());
    let h = c.file_hasher();
    assert_eq!(got(h.hash_files(&sparse).unwrap()), want(&sparse));
    assert_eq!(h.counts().hashed, 1, "found through the chunked lookup as well");
}

// (f)
#[test]
fn stat_cache_hashes_only_what_changed() {
    let t = tempfile::tempdir().unwrap();
    let c = Cache::open(&t.path().join("cache")).unwrap();
    let files: Vec<PathBuf> = (0..200).map(|n| t.path().join(format!("src/{n}.txt"))).collect();
    fs::create_dir_all(t.path().join("src")).unwrap();
    for (n, p) in files.iter().enumerate() {
        fs::write(p, format!("content {n}\n").repeat(n * 50 + 1)).unwrap();
        set_mtime(p, old_time());
    }
    let want: Vec<[u8; 32]> = files.iter().map(|p| *blake3::hash(&fs::read(p).unwrap()).as_bytes()).collect();
    let got = |hashes: Vec<Blake3>| hashes.into_iter().map(|h| h.0).collect::<Vec<_>>();

    let h = c.file_hasher();
    assert_eq!(got(h.hash_files(&files).unwrap()), want);
    assert_eq!((h.counts().stated, h.counts().hashed), (200, 200));

    // A no-op: everything stat'ed, nothing read (with a fresh hasher and a reopened cache too).
    let h = c.file_hasher();
    assert_eq!(got(h.hash_files(&files).unwrap()), want);
    assert_eq!((h.counts().stated, h.counts().hashed), (200, 0));
    drop(c);
    let c = Cache::open(&t.path().join("cache")).unwrap();
    let h = c.file_hasher();
    assert_eq!(got(h.hash_files(&files).unwrap()), want);
    assert_eq!(h.counts().hashed, 0);

    // Touch (mtime change, same content): re-hashed, same hash.
    set_mtime(&files[3], old_time() + Duration::from_secs(60));
    let h = c.file_hasher();
    assert_eq!(got(h.hash_files(&files).unwrap()), want);
    assert_eq!(h.counts().hashed, 1);

    // New content, just written: hashed, different, and not remembered while racy.
    fs::write(&files[7], b"new content").unwrap();
    let new7 = *blake3::hash(b"new content").as_bytes();
    for _ in 0..2 {
        let h = c.file_hasher();
        assert_eq!(h.hash_file(&files[7]).unwrap().0, new7);
        assert_eq!(h.counts().hashed, 1, "a file modified within the racy window is re-read");
    }
    set_mtime(&files[7], old_time());
    let h = c.file_hasher();
    h.hash_file(&files[7]).unwrap();
    h.hash_file(&files[7]).unwrap();
    assert_eq!(h.counts().hashed, 1, "once old enough it is remembered");

    // Same size, same mtime, different content (mtime restored): the ctime still gives it away.
    let before = fs::metadata(&files[9]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let same_size = vec![b'x'; before.len() as usize];
    fs::write(&files[9], &same_size).unwrap();
    set_mtime(&files[9], before.modified().unwrap());
    let h = c.file_hasher();
    assert_eq!(h.hash_file(&files[9]).unwrap().0, *blake3::hash(&same_size).as_bytes());
    assert_eq!(h.counts().hashed, 1);

    // Replaced by rename (new inode), same size and mtime.
    let before = fs::metadata(&files[11]).unwrap();
    let tmp = t.path().join("src/replacement");
    let replacement = vec![b'y'; before.len() as usize];
    fs::write(&tmp, &replacement).unwrap();
    set_mtime(&tmp, before.modified().unwrap());
    fs::rename(&tmp, &files[11]).unwrap();
    assert_eq!(c.file_hasher().hash_file(&files[11]).unwrap().0, *blake3::hash(&replacement).as_bytes());

    // Bad input is an error naming the path, not a panic.
    let missing = t.path().join("src/missing.txt");
    let e = c.file_hasher().hash_files(&[files[0].clone(), missing.clone()]).unwrap_err();
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
    let e = c.file_hasher().hash_file(&t.path().join("src")).unwrap_err();
    assert!(matches!(e, CacheError::NotAFile { .. }), "{e}");

    // gc forgets rows of vanished files.
    fs::remove_file(&files[0]).unwrap();
    assert_eq!(c.gc(None, None).unwrap().stat_entries_removed, 1);
}
