//! The stat cache: blake3 of a source file's content, remembered under (path, size, mtime, inode,
//! ctime) so a no-op build stats files and hashes nothing. Files modified in the last
//! [`RACY_WINDOW`] are hashed but not remembered (the "racy git" problem).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::params;

use super::error::{io_err, CacheError, Result};
use super::Cache;
use crate::fs::stat::FileStat;
use crate::model::digest::Blake3;

/// A file whose mtime is this close to (or after) the start of hashing is not remembered: it may
/// change again within the file system's timestamp granularity without its stat changing.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Paths per lookup query (well under SQLite's bound-parameter limit).
const LOOKUP_CHUNK: usize = 500;

/// Files per batch of [`FileHasher::hash_stated`] (looked up, hashed and stored together).
pub const BATCH: usize = 4 * LOOKUP_CHUNK;

/// Files at least this large are hashed with a larger read buffer.
const BIG_FILE: u64 = 1 << 20;

/// The stat fields a cached hash is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatKey {
    size: i64,
    mtime_ns: i64,
    ino: i64,
    ctime_ns: i64,
}

impl StatKey {
    fn of(m: &FileStat) -> StatKey {
        let ns = |t: i128| t.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        StatKey { size: m.size as i64, mtime_ns: ns(m.mtime_ns), ino: m.ino as i64, ctime_ns: ns(m.ctime_ns) }
    }
}

/// Counters of a [`FileHasher`]: files stat'ed and files whose content was read and hashed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashCounts {
    /// Files stat'ed.
    pub stated: u64,
    /// Files read and hashed (stat-cache misses).
    pub hashed: u64,
}

/// Hashes source files through the stat cache. Cheap to create; counters accumulate over its
/// lifetime. Shareable between threads (`&FileHasher` is `Sync`).
///
/// ```no_run
/// # fn f(cache: &cbuild::cache::Cache) -> cbuild::cache::Result<()> {
/// let hasher = cache.file_hasher();
/// let hashes = hasher.hash_files(&["services/api/app.py".into()])?;
/// # Ok(()) }
/// ```
pub struct FileHasher<'a> {
    cache: &'a Cache,
    stated: AtomicU64,
    hashed: AtomicU64,
}

impl Cache {
    /// A [`FileHasher`] backed by this cache's `stat_cache` table.
    pub fn file_hasher(&self) -> FileHasher<'_> {
        FileHasher { cache: self, stated: AtomicU64::new(0), hashed: AtomicU64::new(0) }
    }
}

/// One file to hash: where its hash goes in the result, its path and the stat it had.
struct Pending<'a> {
    index: usize,
    abs: &'a Path,
    stat: StatKey,
}

impl FileHasher<'_> {
    /// Counts so far.
    pub fn counts(&self) -> HashCounts {
        HashCounts { stated: self.stated.load(Ordering::Relaxed), hashed: self.hashed.load(Ordering::Relaxed) }
    }

    /// The blake3 of one file's content.
    pub fn hash_file(&self, path: &Path) -> Result<Blake3> {
        Ok(self.hash_files(&[path.to_path_buf()])?[0])
    }

    /// The blake3 of each file's content, in order. Stats every file; reads only those whose
    /// (size, mtime, inode, ctime) differ from the stored row, using all cores; stores the new rows
    /// in one transaction. Relative paths are taken relative to the current directory; symlinks
    /// are followed. A missing or non-regular file fails the batch, naming the path.
    pub fn hash_files(&self, paths: &[PathBuf]) -> Result<Vec<Blake3>> {
        let started = SystemTime::now();
        let mut files = Vec::with_capacity(paths.len());
        for p in paths {
            let a = std::path::absolute(p).map_err(io_err(p))?;
            let m = FileStat::stat(&a).map_err(io_err(&a))?;
            files.push((a, m));
        }
        self.hash_stated(started, files)
    }

    /// [`FileHasher::hash_files`] for files the caller has already stat'ed: absolute paths, each
    /// with the metadata of the file whose content is hashed (of a symlink's target when the caller
    /// follows it). `started` is a time taken before the first of those stats (the racy window is
    /// measured from it). Lets a caller that must `lstat` anyway (to look for symlinks) not stat
    /// every file twice.
    ///
    /// Works in batches of [`BATCH`] files (lookup, hash the misses, store their rows in one
    /// transaction per batch), so what it holds besides `files` and the result does not grow with
    /// the number of files (issue 23: the stored rows, the pending list and the rows to write were
    /// each a copy of every path of a 100,000-file layer).
    pub fn hash_stated(&self, started: SystemTime, files: Vec<(PathBuf, FileStat)>) -> Result<Vec<Blake3>> {
        let racy_after = ns_since_epoch(started) - RACY_WINDOW.as_nanos() as i64;
        if let Some((a, _)) = files.iter().find(|(_, m)| !m.is_file()) {
            return Err(CacheError::NotAFile { path: a.clone() });
        }
        self.stated.fetch_add(files.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(files.len());
        for batch in files.chunks(BATCH) {
            self.hash_batch(batch, racy_after, &mut out)?;
        }
        Ok(out)
    }

    /// One batch of [`FileHasher::hash_stated`]: appends the batch's hashes to `out`, in order.
    fn hash_batch(&self, batch: &[(PathBuf, FileStat)], racy_after: i64, out: &mut Vec<Blake3>) -> Result<()> {
        let stored = self.lookup(batch)?;
        let base = out.len();
        let mut pending = Vec::new();
        for (i, (a, m)) in batch.iter().enumerate() {
            let st = StatKey::of(m);
            match stored.get(a.as_os_str().as_bytes()) {
                Some((k, h)) if *k == st => out.push(*h),
                _ => {
                    out.push(Blake3([0; 32])); // replaced below
                    pending.push(Pending { index: base + i, abs: a, stat: st });
                }
            }
        }
        drop(stored);
        if pending.is_empty() {
            return Ok(());
        }
        let results = hash_all(&pending);
        self.hashed.fetch_add(pending.len() as u64, Ordering::Relaxed);
        let mut rows = Vec::new();
        for (p, r) in pending.iter().zip(results) {
            let (h, stable) = r?;
            out[p.index] = h;
            if stable && p.stat.mtime_ns < racy_after {
                rows.push((p.abs.as_os_str().as_bytes(), p.stat, h));
            }
        }
        if !rows.is_empty() {
            self.cache.db.write(
                || format!("storing {} stat-cache rows", rows.len()),
                |tx| {
                    let mut st = tx.prepare_cached(
                        "INSERT OR REPLACE INTO stat_cache(path, size, mtime_ns, ino, ctime_ns, \
                         blake3) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for (path, k, h) in &rows {
                        st.execute(params![path, k.size, k.mtime_ns, k.ino, k.ctime_ns, &h.0[..]])?;
                    }
                    Ok(())
                },
            )?;
        }
        Ok(())
    }

    /// Stored rows for the paths of `files`, in one read snapshot. Sorted paths (a build's sources
    /// are) are read as one range of the table's primary key, a single ordered scan (issue 23: a
    /// third of the lookups' time); rows of other files in that range come along and are unused.
    /// A range holding many more rows than asked for, or unsorted paths: one query per
    /// [`LOOKUP_CHUNK`] paths.
    fn lookup(&self, files: &[(PathBuf, FileStat)]) -> Result<HashMap<Vec<u8>, (StatKey, Blake3)>> {
        let bytes = |i: usize| files[i].0.as_os_str().as_bytes();
        let sorted = files.windows(2).all(|w| w[0].0.as_os_str().as_bytes() < w[1].0.as_os_str().as_bytes());
        self.cache.db.read(
            || format!("reading {} stat-cache rows", files.len()),
            |tx| {
                let mut map = HashMap::with_capacity(files.len());
                let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Option<StoredRow>> {
                    let hash: Vec<u8> = r.get(5)?;
                    // A malformed hash is simply not a hit.
                    let Ok(hash) = <[u8; 32]>::try_from(hash) else {
                        return Ok(None);
                    };
                    let k = StatKey { size: r.get(1)?, mtime_ns: r.get(2)?, ino: r.get(3)?, ctime_ns: r.get(4)? };
                    Ok(Some((r.get::<_, Vec<u8>>(0)?, (k, Blake3(hash)))))
                };
                if sorted && !files.is_empty() {
                    let limit = files.len() * 2 + 64;
                    let mut st = tx.prepare_cached(
                        "SELECT path, size, mtime_ns, ino, ctime_ns, blake3 FROM stat_cache \
                         WHERE path >= ?1 AND path <= ?2 ORDER BY path LIMIT ?3",
                    )?;
                    let mut rows = st.query(params![bytes(0), bytes(files.len() - 1), limit as i64])?;
                    let mut n = 0;
                    while let Some(r) = rows.next()? {
                        n += 1;
                        if let Some((p, v)) = row(r)? {
                            map.insert(p, v);
                        }
                    }
                    if n < limit {
                        return Ok(map);
                    }
                    map.clear();
                }
                for chunk in files.chunks(LOOKUP_CHUNK) {
                    let marks = vec!["?"; chunk.len()].join(",");
                    let sql = format!(
                        "SELECT path, size, mtime_ns, ino, ctime_ns, blake3 FROM stat_cache \
                         WHERE path IN ({marks})"
                    );
                    let mut st = tx.prepare_cached(&sql)?;
                    let keys = chunk.iter().map(|(p, _)| p.as_os_str().as_bytes());
                    let mut rows = st.query(rusqlite::params_from_iter(keys))?;
                    while let Some(r) = rows.next()? {
                        if let Some((p, v)) = row(r)? {
                            map.insert(p, v);
                        }
                    }
                }
                Ok(map)
            },
        )
    }
}

fn ns_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// A stat-cache row: path, stat and hash.
type StoredRow = (Vec<u8>, (StatKey, Blake3));

/// A file's hash and whether it looked the same before and after reading.
type HashResult = Result<(Blake3, bool)>;

/// Hashes every pending file, spreading them over the available cores. Each result is the hash
/// and whether the file looked the same before and after reading (only then may it be stored).
fn hash_all(pending: &[Pending<'_>]) -> Vec<HashResult> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8).min(pending.len());
    if workers <= 1 {
        return pending.iter().map(hash_one).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<HashResult>>> = Mutex::new((0..pending.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = pending.get(i) else { break };
                let r = hash_one(p);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every index is taken by exactly one worker"))
        .collect()
}

fn hash_one(p: &Pending<'_>) -> HashResult {
    let f = File::open(p.abs).map_err(io_err(p.abs))?;
    let mut h = blake3::Hasher::new();
    if p.stat.size as u64 >= BIG_FILE {
        // `update_reader` reads 64 KiB at a time; a bigger buffer halves the syscalls on big files.
        h.update_reader(BufReader::with_capacity(1 << 20, &f))
    } else {
        h.update_reader(&f)
    }
    .map_err(io_err(p.abs))?;
    // The file may have been replaced or rewritten while we read it: then the hash is returned
    // (it is the best we have) but not stored, so the next build reads it again.
    let after = f.metadata().map_err(io_err(p.abs))?;
    let stable = StatKey::of(&FileStat::of(&after)) == p.stat;
    Ok((Blake3(*h.finalize().as_bytes()), stable))
}
