//! The local action cache: action results, build history, the source-file stat cache and blob
//! metadata in SQLite (`cache.sqlite`, WAL), blob bytes in a content-addressed directory (`cas/`).
//! The remote (Bazel HTTP protocol) cache is not here.
//!
//! Layout of a cache directory:
//!
//! ```text
//! <dir>/cache.sqlite      actions, action_blobs, blobs, runs, stat_cache, layer_compression,
//!                         gzip_chunks, blob_locations
//! <dir>/cas/sha256/<hex>  blobs, written atomically, verified by digest on use
//! <dir>/tmp/              scratch space on the same file system (atomic renames into cas/)
//! <dir>/lock, open.lock   flock files: "in use" (shared) and "opening" (exclusive)
//! ```
//!
//! Safety rules, relied on by every table:
//! * Several processes may share a cache: WAL, a busy timeout, `BEGIN IMMEDIATE` for writes.
//! * `kill -9` at any moment leaves the old or the new state: blobs are renamed into place before
//!   the transaction that references them commits, and a hit requires every referenced blob.
//! * A database of another schema version, or a corrupt one, is discarded and recreated (with a
//!   warning), never misread. Blobs survive: they are named by their content.
//!
//! Temp files (interrupted writes: `cas/sha256/.tmp-*`, anything in `tmp/`) are swept by every
//! [`Cache::open`], under `open.lock`, by a rule that never removes a live writer's file:
//! * **alone** — the opener gets `lock` *exclusively*, so no other process has the cache open
//!   (every open `Cache` holds it shared for its whole life, and only processes with the cache open
//!   write there): every temp file is a leftover and goes, except those whose name says their
//!   writer process still exists (below);
//! * **not alone** — only CAS temp files whose name proves the writer dead go: writers name them
//!   `.tmp-[kind-]<pid>.<pid namespace>-…` ([`crate::cas::temp_prefix`]); a pid of this pid
//!   namespace that no longer exists cannot be writing. Names without a writer, or of another pid
//!   namespace (a container sharing the directory), are left for the next lone open or
//!   `cbuild cache gc` (which removes temp files older than [`GC_GRACE`], never a live pid's).
//!
//! ```no_run
//! use cbuild::cache::{Cache, KeyBuilder};
//! # fn main() -> cbuild::cache::Result<()> {
//! let cache = Cache::open("/tmp/cbuild-cache".as_ref())?;
//! for w in cache.warnings() {
//!     eprintln!("warning: {w}");
//! }
//! let (key, components) = KeyBuilder::new("layer", 1).component("prefix", "/app").finish();
//! if cache.get_action(&key)?.is_none() {
//!     let blob = cache.cas().put_bytes(b"layer bytes").map_err(|source| {
//!         cbuild::cache::CacheError::Cas { dir: cache.cas().root().into(), source }
//!     })?;
//!     let result = format!(r#"{{"layer":"{blob}"}}"#);
//!     cache.put_action(&key, "layer", "//app:layer", &result, &[blob])?;
//! }
//! # Ok(()) }
//! ```

mod actions;
mod chunks;
mod db;
mod error;
mod gc;
mod key;
mod locations;
mod runs;
mod stat;
mod temp;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

pub use actions::{ActionEntry, CompressedLayer};
pub use chunks::CacheChunkIndex;
pub use db::{BUSY_TIMEOUT, QUICK_CHECK_MAX_BYTES, SCHEMA_VERSION};
pub use error::{CacheError, Result};
pub use gc::{parse_duration, parse_size, CacheStats, GcReport, GC_GRACE};
pub use key::{
    Component, ComponentChange, ComponentValue, Components, KeyBuilder, SharedMap, Shown, ShownText, CACHE_KEY_VERSION,
    KEY_VERSION_COMPONENT, KIND_COMPONENT,
};
pub use runs::{RunHistory, RunOutcome, RunRecord, RUN_KEYS_KEPT};
pub use stat::{FileHasher, HashCounts, BATCH as STAT_BATCH, RACY_WINDOW};

use crate::cas::BlobDir;
use error::io_err;

/// An open cache directory. `Send + Sync`: share it with `Arc` across threads and tasks; every
/// method takes `&self`. Holds one SQLite connection behind a mutex (statements are short; file
/// hashing and blob I/O happen outside it).
pub struct Cache {
    dir: PathBuf,
    db: db::Db,
    cas: BlobDir,
    tmp: PathBuf,
    warnings: Vec<String>,
    instance: std::sync::OnceLock<String>,
}

/// The file holding a cache directory's [`Cache::instance`].
pub(crate) const INSTANCE_FILE: &str = "instance";

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The id in `path`, or a new random one put there atomically (a temp file hard-linked into
/// place: a concurrent opener either links first or reads the winner's complete file).
fn read_or_make_instance(path: &Path, tmp: &Path) -> Result<String> {
    let valid = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match fs::read_to_string(path) {
        Ok(s) if valid(s.trim()) => return Ok(s.trim().to_string()),
        Ok(_) => {
            // Damaged: replaced (the state tied to the old id is then swept).
            let _ = fs::remove_file(path);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CacheError::Io { path: path.to_path_buf(), source: e }),
    }
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| CacheError::Io { path: path.to_path_buf(), source: std::io::Error::other("no random bytes") })?;
    let id = hex::encode(bytes);
    let mut t = tempfile::Builder::new().prefix(".instance-").tempfile_in(tmp).map_err(io_err(tmp))?;
    std::io::Write::write_all(t.as_file_mut(), format!("{id}\n").as_bytes()).map_err(io_err(tmp))?;
    match fs::hard_link(t.path(), path) {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let s = fs::read_to_string(path).map_err(io_err(path))?;
            if valid(s.trim()) {
                Ok(s.trim().to_string())
            } else {
                Err(CacheError::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::other("not a cache instance id"),
                })
            }
        }
        Err(e) => Err(CacheError::Io { path: path.to_path_buf(), source: e }),
    }
}

impl Cache {
    /// Opens (creating if needed) the cache in `dir`. A database that is corrupt or of another
    /// [`SCHEMA_VERSION`] is discarded and recreated; [`Cache::warnings`] then says so. Errors are
    /// only for what cannot be fixed here (permissions, a full disk, a lock held past the timeout).
    ///
    /// Opening also sweeps temp files left by killed writers (see "Temp files" in the module
    /// docs), so a `kill -9` costs no disk space past the next build.
    pub fn open(dir: &Path) -> Result<Cache> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut warnings = Vec::new();
        // Locks first (and the sweep under them), then the directories: a `clean` that ran while
        // this process waited for the lock must not leave it without `cas/` or `tmp/`.
        let db = db::Db::open(dir, &mut warnings)?;
        let cas_root = dir.join("cas");
        let tmp = dir.join("tmp");
        for d in [&cas_root, &tmp] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let cas = BlobDir::open(&cas_root).map_err(|source| CacheError::Cas { dir: cas_root.clone(), source })?;
        Ok(Cache { dir: dir.to_path_buf(), db, cas, tmp, warnings, instance: std::sync::OnceLock::new() })
    }

    /// A random id of this cache's contents (32 hex digits in `<dir>/instance`), made the first
    /// time it is asked for and removed by `clean`. State kept outside the directory for it (a
    /// target's kept app dir under the sandbox scratch root) is tied to it: a cache directory
    /// removed and made again, or cleaned, starts without that state — a cold build is cold.
    pub fn instance(&self) -> Result<&str> {
        if let Some(id) = self.instance.get() {
            return Ok(id);
        }
        let path = self.dir.join(INSTANCE_FILE);
        let id = read_or_make_instance(&path, &self.tmp)?;
        Ok(self.instance.get_or_init(|| id))
    }

    /// This database's id and how many times its cached answers changed (see `db::ADDITIVE`'s
    /// `generation`): equal values, read twice, mean no action entry was added, changed or removed
    /// and no blob removed in between.
    pub fn generation(&self) -> Result<String> {
        self.db.read(
            || "reading the cache generation".into(),
            |tx| tx.query_row("SELECT db || ':' || n FROM generation", [], |r| r.get(0)),
        )
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blob store. Write blobs here before [`Cache::put_action`] references them.
    pub fn cas(&self) -> &BlobDir {
        &self.cas
    }

    /// Scratch directory on the same file system as the blob store.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Problems fixed while opening (a discarded database), for the CLI to print.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::digest::{Blake3, Digest};
    use std::time::{Duration, SystemTime};

    #[test]
    fn cache_is_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<Cache>();
        is::<FileHasher<'static>>();
    }

    fn open() -> (tempfile::TempDir, Cache) {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(t.path()).unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        (t, c)
    }

    #[test]
    fn fresh_database_is_wal_with_incremental_vacuum() {
        let (_t, c) = open();
        let (mode, vacuum, version, sync): (String, i64, i64, i64) =
            c.db.with_conn(
                || "pragmas".into(),
                |conn| {
                    Ok((
                        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                        conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?,
                        conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
                        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                    ))
                },
            )
            .unwrap();
        assert_eq!((mode.as_str(), vacuum, version, sync), ("wal", 2, SCHEMA_VERSION as i64, 1));
    }

    #[test]
    fn put_get_and_missing_blob() {
        let (_t, c) = open();
        let (key, _) = KeyBuilder::new("layer", 1).component("a", "1").finish();
        assert!(c.get_action(&key).unwrap().is_none());
        let d = c.cas().put_bytes(b"blob").unwrap();
        c.put_action(&key, "layer", "//a:b", "{}", std::slice::from_ref(&d)).unwrap();
        let e = c.get_action(&key).unwrap().unwrap();
        assert_eq!((e.result_json.as_str(), e.blobs), ("{}", vec![d.clone()]));
        fs::remove_file(c.cas().path(&d)).unwrap();
        assert!(c.get_action(&key).unwrap().is_none(), "a missing blob is a miss");

        let absent = Digest::of_bytes(b"absent");
        let err = c.put_action(&key, "layer", "//a:b", "{}", std::slice::from_ref(&absent)).unwrap_err();
        assert!(matches!(err, CacheError::MissingBlob { ref digest, .. } if *digest == absent));
        assert!(err.to_string().contains(&key.to_hex()), "{err}");
    }

    #[test]
    fn verify_action_blobs_drops_corrupt_entries() {
        let (_t, c) = open();
        let (key, _) = KeyBuilder::new("layer", 1).finish();
        let d = c.cas().put_bytes(b"good bytes").unwrap();
        c.put_action(&key, "layer", "//a:b", "{}", std::slice::from_ref(&d)).unwrap();
        assert!(c.verify_action_blobs(&key).unwrap());
        fs::write(c.cas().path(&d), b"evil bytes").unwrap();
        assert!(c.get_action(&key).unwrap().is_some(), "existence check only");
        assert!(!c.verify_action_blobs(&key).unwrap());
        assert!(c.get_action(&key).unwrap().is_none());
        assert!(!c.cas().contains(&d), "corrupt blob removed");
    }

    #[test]
    fn layer_compression_round_trips_and_needs_the_blob() {
        let (_t, c) = open();
        let diff_id = Digest::of_bytes(b"tar");
        assert!(c.get_layer_compression(&diff_id, "gzip").unwrap().is_none());
        let digest = c.cas().put_bytes(b"gz").unwrap();
        let l = CompressedLayer {
            diff_id: diff_id.clone(),
            compression: "gzip".into(),
            digest: digest.clone(),
            size: 2,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        };
        c.put_layer_compression(&l).unwrap();
        assert_eq!(c.get_layer_compression(&diff_id, "gzip").unwrap(), Some(l.clone()));
        assert!(c.get_layer_compression(&diff_id, "zstd").unwrap().is_none());
        fs::write(c.cas().path(&digest), b"gZ").unwrap();
        assert!(c.get_layer_compression(&diff_id, "gzip").unwrap().is_none(), "a damaged blob is a miss");
        assert!(!c.cas().contains(&digest), "and is removed");
        c.cas().put_bytes(b"gz").unwrap();
        assert!(c.get_layer_compression(&diff_id, "gzip").unwrap().is_some());
        fs::remove_file(c.cas().path(&digest)).unwrap();
        assert!(c.get_layer_compression(&diff_id, "gzip").unwrap().is_none());
        assert!(matches!(c.put_layer_compression(&l), Err(CacheError::MissingBlob { .. })));
    }

    fn run(key_src: &str, outcome: RunOutcome, env: &str) -> RunRecord {
        let (key, components) = KeyBuilder::new("cnb_build", 1)
            .component("src", key_src)
            .component("env", ComponentValue::map([("BP_X", env)]))
            .finish();
        RunRecord {
            label: "//services/api:image".into(),
            action: "build".into(),
            key,
            components,
            outcome,
            build_id: format!("b-{key_src}-{env}"),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn run_history_keeps_previous_different_key() {
        let (_t, c) = open();
        assert!(c.last_two_runs("//services/api:image", "build").unwrap().is_none());
        c.record_run(&run("a", RunOutcome::Executed, "1")).unwrap();
        let h = c.last_two_runs("//services/api:image", "build").unwrap().unwrap();
        assert!(h.previous.is_none() && h.changes().is_empty());
        c.record_run(&run("a", RunOutcome::Executed, "2")).unwrap();
        for _ in 0..10 {
            c.record_run(&run("a", RunOutcome::CachedLocal, "2")).unwrap();
        }
        let h = c.last_two_runs("//services/api:image", "build").unwrap().unwrap();
        assert_eq!(h.latest.outcome, RunOutcome::CachedLocal);
        assert_eq!(h.previous.as_ref().unwrap().build_id, "b-a-1");
        let changes: Vec<String> = h.changes().iter().map(ToString::to_string).collect();
        assert_eq!(changes, ["env BP_X: 1 -> 2"]);

        // Other actions of the label, and the retention bound.
        let mut other = run("z", RunOutcome::Failed, "9");
        other.action = "detect".into();
        c.record_run(&other).unwrap();
        for i in 0..10 {
            c.record_run(&run(&format!("k{i}"), RunOutcome::Executed, "2")).unwrap();
        }
        let all = c.runs_for_label("//services/api:image").unwrap();
        assert_eq!(all.iter().map(|h| h.latest.action.as_str()).collect::<Vec<_>>(), ["build", "detect"]);
        assert_eq!(all[0].previous.as_ref().unwrap().build_id, "b-k8-2");
        assert_eq!(all[1].latest.outcome, RunOutcome::Failed);
        assert_eq!(c.stats().unwrap().runs, RUN_KEYS_KEPT as u64 + 1);
    }

    #[test]
    fn a_repeated_key_updates_its_run_in_place_and_a_returning_key_is_latest_again() {
        let (_t, c) = open();
        let label = "//services/api:image";
        c.record_run(&run("a", RunOutcome::Executed, "1")).unwrap();
        c.record_run(&run("b", RunOutcome::Executed, "1")).unwrap();
        // A no-op: same key as the latest, new outcome, build id and time.
        let mut noop = run("b", RunOutcome::CachedLocal, "1");
        noop.build_id = "noop".into();
        noop.at += Duration::from_secs(60);
        c.record_runs(&[noop.clone(), noop.clone()]).unwrap();
        let h = c.last_two_runs(label, "build").unwrap().unwrap();
        assert_eq!(h.latest, noop, "outcome, build id and time updated; components kept");
        assert_eq!(h.previous.as_ref().unwrap().build_id, "b-a-1");
        assert_eq!(c.stats().unwrap().runs, 2);
        // Back to key `a`: not the latest, so a new row (the old `a` row is replaced).
        c.record_run(&run("a", RunOutcome::CachedLocal, "1")).unwrap();
        let h = c.last_two_runs(label, "build").unwrap().unwrap();
        assert_eq!(
            (h.latest.key, h.latest.outcome),
            (run("a", RunOutcome::CachedLocal, "1").key, RunOutcome::CachedLocal)
        );
        assert_eq!(h.previous.as_ref().unwrap().build_id, "noop");
        assert_eq!(c.stats().unwrap().runs, 2);
    }

    /// Run components are streamed into their row (a blob); big ones come back whole, the diff
    /// names the one changed entry, and rows of earlier versions (text) are still read.
    #[test]
    fn run_components_are_streamed_into_the_row_and_read_back() {
        let (_t, c) = open();
        let files = |changed: &str| {
            let m = (0..20_000).map(|i| (format!("app/src/f{i:05}.js"), format!("blake3:{i:064x}")));
            ComponentValue::map(m.chain([("app/src/changed.js".to_string(), changed.to_string())]))
        };
        let record = |v: &str, build: &str| {
            let (key, components) = KeyBuilder::new("layer", 2).component("files", files(v)).finish();
            let r = RunRecord {
                label: "//big:layer".into(),
                action: "layer".into(),
                key,
                components,
                outcome: RunOutcome::Executed,
                build_id: build.into(),
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            };
            c.record_run(&r).unwrap();
            r
        };
        let first = record("blake3:aa", "b1");
        let second = record("blake3:bb", "b2");
        let h = c.last_two_runs("//big:layer", "layer").unwrap().unwrap();
        assert_eq!((&h.latest, h.previous.as_ref()), (&second, Some(&first)));
        let changes: Vec<String> = h.changes().iter().map(ToString::to_string).collect();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].contains("app/src/changed.js"), "{changes:?}");
        let stored: (String, i64) =
            c.db.read(
                || "reading".into(),
                |tx| {
                    tx.query_row(
                        "SELECT typeof(components_json), length(components_json) FROM runs WHERE build_id = 'b2'",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                },
            )
            .unwrap();
        assert_eq!(stored, ("blob".to_string(), serde_json::to_vec(&second.components).unwrap().len() as i64));
        // A row written as text by an earlier cbuild.
        let old = run("old", RunOutcome::Executed, "1");
        let json = serde_json::to_string(&old.components).unwrap();
        c.db.write(
            || "writing".into(),
            |tx| {
                tx.execute(
                    "INSERT INTO runs(label, action, key, components_json, outcome, build_id, at) VALUES (?1, ?2, ?3, ?4, 'executed', 'old', 0)",
                    rusqlite::params![old.label, old.action, old.key.to_hex(), json],
                )
            },
        )
        .unwrap();
        let h = c.last_two_runs(&old.label, &old.action).unwrap().unwrap();
        assert_eq!(h.latest.components, old.components);
    }

    #[test]
    fn touched_actions_are_used_now() {
        let (_t, c) = open();
        let (key, _) = KeyBuilder::new("x", 1).component("i", 1u64).finish();
        let d = c.cas().put_bytes(b"touched").unwrap();
        c.put_action(&key, "x", "//a", "{}", &[d]).unwrap();
        let used = || -> i64 {
            c.db.read(
                || "used".into(),
                |tx| tx.query_row("SELECT last_used_at FROM actions WHERE key = ?1", [key.to_hex()], |r| r.get(0)),
            )
            .unwrap()
        };
        c.db.write(|| "age".into(), |tx| tx.execute("UPDATE actions SET last_used_at = 5", [])).unwrap();
        assert_eq!(used(), 5);
        let before = c.generation().unwrap();
        c.touch_actions(&[key]).unwrap();
        assert!(used() > 5);
        assert_eq!(c.generation().unwrap(), before, "marking entries used changes no cached answer");
        // Any added, changed or removed entry does.
        let (other, _) = KeyBuilder::new("x", 1).component("i", 2u64).finish();
        c.put_action(&other, "x", "//a", "{}", &[]).unwrap();
        let added = c.generation().unwrap();
        assert_ne!(added, before);
        c.put_action(&other, "x", "//a", "{\"changed\":1}", &[]).unwrap();
        assert_ne!(c.generation().unwrap(), added);
    }

    #[test]
    fn gc_removes_unreferenced_then_lru() {
        let (_t, c) = open();
        let orphan = c.cas().put_bytes(b"orphan").unwrap();
        let mut keys = Vec::new();
        for i in 0..4u64 {
            let (key, _) = KeyBuilder::new("x", 1).component("i", i).finish();
            let d = c.cas().put_bytes(&vec![i as u8; 1000]).unwrap();
            c.put_action(&key, "x", "//a", "{}", &[d]).unwrap();
            keys.push(key);
        }
        // Within the grace period nothing goes.
        assert_eq!(c.gc(Some(0), None).unwrap().blobs_removed, 0);
        // Make the order of last use explicit: key 0 oldest.
        for (i, k) in keys.iter().enumerate() {
            c.db.write(
                || "age".into(),
                |tx| {
                    tx.execute(
                        "UPDATE actions SET last_used_at = ?1 WHERE key = ?2",
                        rusqlite::params![i as i64, k.to_hex()],
                    )
                },
            )
            .unwrap();
        }
        let r = c.gc_with_grace(None, None, Duration::ZERO).unwrap();
        assert_eq!((r.blobs_removed, r.actions_removed), (1, 0));
        assert!(!c.cas().contains(&orphan));

        let db = c.stats().unwrap().db_bytes;
        let r = c.gc_with_grace(Some(db + 2500), None, Duration::ZERO).unwrap();
        assert_eq!((r.actions_removed, r.blobs_removed, r.bytes_freed), (2, 2, 2000));
        assert!(c.get_action(&keys[0]).unwrap().is_none());
        assert!(c.get_action(&keys[1]).unwrap().is_none());
        assert!(c.get_action(&keys[2]).unwrap().is_some());

        // Key 2 was just used by get_action (which refreshed it); key 3 was not.
        let r = c.gc_with_grace(None, Some(Duration::from_secs(1)), Duration::ZERO).unwrap();
        assert_eq!((r.actions_removed, r.blobs_removed), (1, 0), "its blob was used < 1s ago");
        assert!(c.get_action(&keys[2]).unwrap().is_some());
        let r = c.gc_with_grace(None, None, Duration::ZERO).unwrap();
        assert_eq!((r.actions_removed, r.blobs_removed), (0, 1));
        let s = c.stats().unwrap();
        assert_eq!((s.actions, s.blobs), (1, 1));
    }

    #[test]
    fn clean_refuses_while_open_and_removes_everything_after() {
        let (t, c) = open();
        let (key, _) = KeyBuilder::new("x", 1).finish();
        let d = c.cas().put_bytes(b"b").unwrap();
        c.put_action(&key, "x", "//a", "{}", std::slice::from_ref(&d)).unwrap();
        assert!(matches!(Cache::clean(t.path()), Err(CacheError::InUse { .. })));
        drop(c);
        Cache::clean(t.path()).unwrap();
        let c = Cache::open(t.path()).unwrap();
        assert!(c.warnings().is_empty());
        assert!(c.get_action(&key).unwrap().is_none());
        assert!(!c.cas().contains(&d));
        assert_eq!(c.stats().unwrap().blobs, 0);
    }

    #[test]
    fn the_instance_id_lasts_until_clean_and_a_damaged_one_is_replaced() {
        let (t, c) = open();
        let id = c.instance().unwrap().to_string();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        drop(c);
        let c = Cache::open(t.path()).unwrap();
        assert_eq!(c.instance().unwrap(), id, "the same cache dir keeps its id");
        drop(c);
        Cache::clean(t.path()).unwrap();
        let c = Cache::open(t.path()).unwrap();
        let id2 = c.instance().unwrap().to_string();
        assert_ne!(id2, id, "a cleaned cache is another instance");
        drop(c);
        std::fs::write(t.path().join(INSTANCE_FILE), "not an id").unwrap();
        let c = Cache::open(t.path()).unwrap();
        let id3 = c.instance().unwrap().to_string();
        assert!(id3 != id2 && id3.len() == 32, "{id3}");
        assert_eq!(std::fs::read_to_string(t.path().join(INSTANCE_FILE)).unwrap(), format!("{id3}\n"));
    }

    #[test]
    fn corruption_met_at_run_time_discards_at_next_open() {
        let (t, c) = open();
        let (key, _) = KeyBuilder::new("x", 1).finish();
        c.put_action(&key, "x", "//a", "{}", &[]).unwrap();
        let corrupt = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT), None);
        let e = c.db.err("reading action `k`", corrupt);
        assert!(matches!(e, CacheError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("cbuild cache clean"), "{e}");
        drop(c);
        let c = Cache::open(t.path()).unwrap();
        assert!(c.warnings()[0].contains("found it corrupt"), "{:?}", c.warnings());
        assert!(c.get_action(&key).unwrap().is_none());
        drop(c);
        assert!(Cache::open(t.path()).unwrap().warnings().is_empty(), "marker removed");
    }

    #[test]
    fn open_sweeps_temp_files_never_a_live_writers() {
        let (t, c) = open();
        let cas = c.cas().root().join("sha256");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let ns = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).unwrap_or(0)
        };
        let dead_file = cas.join(format!(".tmp-{dead}.{ns}-AAAAAA"));
        let untagged = cas.join(".tmp-BBBBBB");
        let live = cas.join(format!("{}CCCCCC", crate::cas::temp_prefix("")));
        let scratch = c.tmp_dir().join("scratch");
        for p in [&dead_file, &untagged, &live, &scratch] {
            fs::write(p, b"x").unwrap();
        }
        // Another `Cache` is open (`c`): only a provably dead writer's file goes.
        let c2 = Cache::open(t.path()).unwrap();
        assert_eq!(dead_file.exists(), ns == 0);
        assert!(untagged.exists() && live.exists() && scratch.exists());
        drop((c, c2));
        // Alone: every leftover goes, the live writer's file stays.
        let c = Cache::open(t.path()).unwrap();
        assert!(!dead_file.exists() && !untagged.exists() && !scratch.exists());
        assert_eq!(live.exists(), ns != 0);
        assert!(c.tmp_dir().is_dir() && cas.is_dir());
    }

    #[test]
    fn action_keys_lists_entries() {
        let (_t, c) = open();
        let k = Blake3::of_bytes(b"k");
        c.put_action(&k, "x", "//a", "{}", &[]).unwrap();
        assert_eq!(c.action_keys().unwrap(), [k]);
        assert!(c.remove_action(&k).unwrap());
        assert!(c.action_keys().unwrap().is_empty());
    }
}
