//! Housekeeping: `stats`, `gc` (least-recently-used actions, then unreferenced blobs), `clean`
//! (remove everything when no other process has the cache open), and the size/duration parsers
//! behind `cbuild cache gc --max-size 10GB --older-than 7d`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, OptionalExtension};

use super::db::{self, db_files, now_ms, to_ms, DB_FILE, QUICK_CHECK_MAX_BYTES, USE_LOCK};
use super::error::{io_err, CacheError, Result};
use super::Cache;
use crate::cas::{temp_owner, TempOwner};
use crate::model::digest::Digest;

/// Anything used, written or touched more recently than this is never collected by [`Cache::gc`]:
/// another process may have just written a blob it is about to reference.
pub const GC_GRACE: Duration = Duration::from_secs(10 * 60);

/// Sizes of what the cache holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Stored action results.
    pub actions: u64,
    /// Remembered runs (build history).
    pub runs: u64,
    /// Stat-cache rows.
    pub stat_entries: u64,
    /// diff_id → compressed layer mappings.
    pub layer_mappings: u64,
    /// Blob files in the CAS.
    pub blobs: u64,
    /// Their total size.
    pub blob_bytes: u64,
    /// Database, WAL and shared-memory files.
    pub db_bytes: u64,
}

impl CacheStats {
    /// Bytes on disk, blobs plus database.
    pub fn total_bytes(&self) -> u64 {
        self.blob_bytes + self.db_bytes
    }
}

/// What a [`Cache::gc`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Action entries deleted.
    pub actions_removed: u64,
    /// Blob files deleted.
    pub blobs_removed: u64,
    /// Bytes of blob files deleted.
    pub bytes_freed: u64,
    /// Stale temporary files deleted (interrupted writes).
    pub temp_files_removed: u64,
    /// Stat-cache rows of files that no longer exist.
    pub stat_entries_removed: u64,
    /// Run records older than `older_than`.
    pub runs_removed: u64,
}

struct BlobFile {
    size: u64,
    mtime_ms: i64,
}

fn mtime_ms(m: &fs::Metadata) -> i64 {
    m.modified().map(to_ms).unwrap_or(0)
}

/// The inputs of a gc decision, indexed.
struct Plan<'a> {
    /// Blob file size and last use (max of file mtime and `blobs.last_used_at`), by digest string.
    blobs: HashMap<&'a str, (u64, i64)>,
    /// Digest strings in a stable order (for deterministic choices).
    order: Vec<&'a str>,
    /// Number of actions referencing each digest.
    refs: HashMap<&'a str, u32>,
    /// Digests referenced by each action.
    by_action: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> Plan<'a> {
    fn new(
        files: &'a [(String, BlobFile)],
        links: &'a [(String, String)],
        blob_used: &HashMap<String, i64>,
    ) -> Plan<'a> {
        let mut refs: HashMap<&str, u32> = HashMap::new();
        let mut by_action: HashMap<&str, Vec<&str>> = HashMap::new();
        for (k, d) in links {
            *refs.entry(d.as_str()).or_default() += 1;
            by_action.entry(k.as_str()).or_default().push(d.as_str());
        }
        let blobs = files
            .iter()
            .map(|(d, f)| {
                let used = f.mtime_ms.max(blob_used.get(d).copied().unwrap_or(i64::MIN));
                (d.as_str(), (f.size, used))
            })
            .collect();
        let mut order: Vec<&str> = files.iter().map(|(d, _)| d.as_str()).collect();
        order.sort_unstable();
        Plan { blobs, order, refs, by_action }
    }

    fn unreferenced(&self, d: &str) -> bool {
        self.refs.get(d).copied().unwrap_or(0) == 0
    }

    fn release(&mut self, key: &str) {
        for d in self.by_action.get(key).into_iter().flatten() {
            if let Some(n) = self.refs.get_mut(d) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Which actions and blobs to delete. `size` is `(max_size, database bytes)`.
    fn choose(
        mut self,
        actions: &'a [(String, i64)],
        grace_cut: i64,
        age_cut: Option<i64>,
        size: Option<(u64, u64)>,
    ) -> (Vec<&'a str>, Vec<&'a str>) {
        let mut doomed_actions: Vec<&'a str> = Vec::new();
        let mut action_set: HashSet<&'a str> = HashSet::new();
        let mut doomed_blobs: HashSet<&'a str> = HashSet::new();
        if let Some(cut) = age_cut {
            for (k, used) in actions {
                if *used < cut.min(grace_cut) && action_set.insert(k) {
                    doomed_actions.push(k);
                    self.release(k);
                }
            }
        }
        for &d in &self.order {
            let used = self.blobs[d].1;
            if self.unreferenced(d) && used < grace_cut && age_cut.is_none_or(|c| used < c) {
                doomed_blobs.insert(d);
            }
        }
        if let Some((max, db_bytes)) = size {
            let mut total = db_bytes
                + self.order.iter().filter(|d| !doomed_blobs.contains(*d)).map(|d| self.blobs[d].0).sum::<u64>();
            // First blobs nothing needs, least recently used first...
            let mut spare: Vec<(i64, &'a str)> = self
                .order
                .iter()
                .filter(|d| self.unreferenced(d) && self.blobs[*d].1 < grace_cut && !doomed_blobs.contains(*d))
                .map(|d| (self.blobs[d].1, *d))
                .collect();
            spare.sort_unstable();
            for (_, d) in spare {
                if total <= max {
                    break;
                }
                doomed_blobs.insert(d);
                total = total.saturating_sub(self.blobs[d].0);
            }
            // ...then least recently used actions and the blobs only they held.
            for (k, used) in actions {
                if total <= max || *used >= grace_cut {
                    break;
                }
                if !action_set.insert(k) {
                    continue;
                }
                doomed_actions.push(k);
                self.release(k);
                let held: Vec<&'a str> = self.by_action.get(k.as_str()).cloned().unwrap_or_default();
                for d in held {
                    let Some(&(bytes, used)) = self.blobs.get(d) else {
                        continue;
                    };
                    if self.unreferenced(d) && used < grace_cut && doomed_blobs.insert(d) {
                        total = total.saturating_sub(bytes);
                    }
                }
            }
        }
        let mut blobs: Vec<&'a str> = doomed_blobs.into_iter().collect();
        blobs.sort_unstable();
        (doomed_actions, blobs)
    }
}

impl Cache {
    /// Counts rows and measures files. Blobs are counted from the directory, not the database, so
    /// the numbers are true even after the database was discarded.
    pub fn stats(&self) -> Result<CacheStats> {
        let (actions, runs, stat_entries, layer_mappings) = self.db.read(
            || "counting entries".into(),
            |tx| {
                let n = |t: &str| -> rusqlite::Result<u64> {
                    tx.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).map(|n| n as u64)
                };
                Ok((n("actions")?, n("runs")?, n("stat_cache")?, n("layer_compression")?))
            },
        )?;
        let (blobs, _) = self.scan_blobs(i64::MIN)?;
        Ok(CacheStats {
            actions,
            runs,
            stat_entries,
            layer_mappings,
            blobs: blobs.len() as u64,
            blob_bytes: blobs.iter().map(|(_, b)| b.size).sum(),
            db_bytes: self.db.size_on_disk(),
        })
    }

    /// Lists blob files; also deletes temp files (interrupted writes) older than `tmp_cutoff_ms`
    /// and returns how many.
    fn scan_blobs(&self, tmp_cutoff_ms: i64) -> Result<(Vec<(String, BlobFile)>, u64)> {
        let dir = self.cas.root().join("sha256");
        let mut out = Vec::new();
        let mut removed = 0;
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((out, 0)),
            Err(e) => return Err(CacheError::Io { path: dir, source: e }),
        };
        for ent in rd {
            let ent = ent.map_err(io_err(&dir))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            let Ok(m) = ent.metadata() else { continue };
            if let Ok(digest) = Digest::from_hex(&name) {
                if m.is_file() {
                    out.push((digest.to_string(), BlobFile { size: m.len(), mtime_ms: mtime_ms(&m) }));
                }
            } else if name.starts_with(".tmp-")
                && mtime_ms(&m) < tmp_cutoff_ms
                && temp_owner(&name) != TempOwner::Alive
                && fs::remove_file(ent.path()).is_ok()
            {
                removed += 1;
            }
        }
        Ok((out, removed))
    }

    /// Collects garbage with the default [`GC_GRACE`]; see [`Cache::gc_with_grace`].
    pub fn gc(&self, max_size: Option<u64>, older_than: Option<Duration>) -> Result<GcReport> {
        self.gc_with_grace(max_size, older_than, GC_GRACE)
    }

    /// Collects garbage:
    ///
    /// 1. with `older_than`, deletes actions not used for that long, and runs older than that;
    /// 2. deletes blobs no action references (with `older_than`: only those not used for that long);
    /// 3. with `max_size`, while blobs + database exceed it, deletes the least recently used
    ///    unreferenced blobs, then the least recently used actions and the blobs only they held;
    /// 4. drops stat-cache rows of vanished files, stale temp files and mappings to deleted blobs.
    ///
    /// Nothing used in the last `grace` is deleted. Database rows go first, in one transaction
    /// that also re-checks and deletes the blob files, so no entry ever points at a deleted blob
    /// and a concurrent `put_action` either lands first (its blobs are kept) or fails cleanly.
    pub fn gc_with_grace(
        &self,
        max_size: Option<u64>,
        older_than: Option<Duration>,
        grace: Duration,
    ) -> Result<GcReport> {
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let grace_cut = now.saturating_sub(ms(grace));
        let age_cut = older_than.map(|d| now.saturating_sub(ms(d)));
        let mut report = GcReport::default();

        report.temp_files_removed += self.remove_stale_tmp(grace_cut);
        let (files, tmp_removed) = self.scan_blobs(grace_cut)?;
        report.temp_files_removed += tmp_removed;

        let (actions, links, blob_used) = self.db.read(
            || "reading entries for gc".into(),
            |tx| {
                let actions = tx
                    .prepare("SELECT key, last_used_at FROM actions ORDER BY last_used_at, key")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let links = tx
                    .prepare("SELECT key, digest FROM action_blobs")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let used = tx
                    .prepare("SELECT digest, last_used_at FROM blobs")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<rusqlite::Result<HashMap<_, _>>>()?;
                Ok((actions, links, used))
            },
        )?;

        let plan = Plan::new(&files, &links, &blob_used);
        let (doomed_actions, doomed_blobs) =
            plan.choose(&actions, grace_cut, age_cut, max_size.map(|max| (max, self.db.size_on_disk())));

        // Apply: rows and files together, under the write lock.
        let cas = &self.cas;
        let (actions_removed, blobs_removed, bytes_freed, runs_removed) = self.db.write(
            || "collecting garbage".into(),
            |tx| {
                let mut del_links = tx.prepare("DELETE FROM action_blobs WHERE key = ?1")?;
                let mut del_action = tx.prepare("DELETE FROM actions WHERE key = ?1")?;
                let mut n_actions = 0;
                for k in &doomed_actions {
                    del_links.execute([k])?;
                    n_actions += del_action.execute([k])? as u64;
                }
                let mut still_used = tx.prepare("SELECT 1 FROM action_blobs WHERE digest = ?1 LIMIT 1")?;
                let mut del_blob = tx.prepare("DELETE FROM blobs WHERE digest = ?1")?;
                let mut del_layer = tx.prepare("DELETE FROM layer_compression WHERE digest = ?1")?;
                let mut del_chunks = tx.prepare("DELETE FROM gzip_chunks WHERE blob = ?1")?;
                let (mut n_blobs, mut bytes) = (0, 0);
                for d in &doomed_blobs {
                    // Another process may have referenced it since we read the tables.
                    if still_used.query_row([d], |_| Ok(())).optional()?.is_some() {
                        continue;
                    }
                    del_blob.execute([d])?;
                    del_layer.execute([d])?;
                    del_chunks.execute([d])?;
                    let Ok(digest) = Digest::parse(d) else {
                        continue;
                    };
                    let path = cas.path(&digest);
                    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if fs::remove_file(&path).is_ok() {
                        n_blobs += 1;
                        bytes += size;
                    }
                }
                // Rows about blobs that are gone (deleted by hand, or by `BlobDir::verify`).
                let stale: Vec<String> = tx
                    .prepare(
                        "SELECT digest FROM blobs UNION SELECT digest FROM layer_compression \
                         UNION SELECT blob FROM gzip_chunks",
                    )?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()?;
                for d in stale {
                    if Digest::parse(&d).is_ok_and(|g| !cas.contains(&g)) {
                        del_blob.execute([&d])?;
                        del_layer.execute([&d])?;
                        del_chunks.execute([&d])?;
                    }
                }
                let runs = match age_cut {
                    Some(cut) => tx.execute("DELETE FROM runs WHERE at < ?1", params![cut])? as u64,
                    None => 0,
                };
                Ok((n_actions, n_blobs, bytes, runs))
            },
        )?;
        report.actions_removed = actions_removed;
        report.blobs_removed = blobs_removed;
        report.bytes_freed = bytes_freed;
        report.runs_removed = runs_removed;
        report.stat_entries_removed = self.prune_stat_cache()?;

        self.db.with_conn(
            || "compacting the database".into(),
            |c| {
                c.execute_batch("PRAGMA incremental_vacuum")?;
                // Returns (busy, log, checkpointed); a busy checkpoint is fine, it runs later.
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            },
        )?;
        // Large databases skip the check at open; do it here, where time is not precious.
        if fs::metadata(self.db.path()).map(|m| m.len()).unwrap_or(0) > QUICK_CHECK_MAX_BYTES {
            if let Some(reason) = self.db.with_conn(|| "checking integrity".into(), db::quick_check)? {
                return Err(self.db.err(
                    reason,
                    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT), None),
                ));
            }
        }
        Ok(report)
    }

    /// Deletes entries of `tmp/` older than the cutoff (discarded databases, scratch files), except
    /// those named for a live process ([`crate::cas::temp_prefix`]).
    fn remove_stale_tmp(&self, cutoff_ms: i64) -> u64 {
        let Ok(rd) = fs::read_dir(&self.tmp) else {
            return 0;
        };
        let mut n = 0;
        for ent in rd.flatten() {
            let Ok(m) = ent.metadata() else { continue };
            if mtime_ms(&m) >= cutoff_ms || temp_owner(&ent.file_name().to_string_lossy()) == TempOwner::Alive {
                continue;
            }
            let r = if m.is_dir() { fs::remove_dir_all(ent.path()) } else { fs::remove_file(ent.path()) };
            n += u64::from(r.is_ok());
        }
        n
    }

    /// Drops stat-cache rows of paths that no longer exist.
    fn prune_stat_cache(&self) -> Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let paths: Vec<Vec<u8>> = self.db.read(
            || "reading stat-cache paths".into(),
            |tx| {
                tx.prepare("SELECT path FROM stat_cache")?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()
            },
        )?;
        let gone: Vec<&Vec<u8>> = paths
            .iter()
            .filter(|p| {
                let p = Path::new(std::ffi::OsStr::from_bytes(p));
                matches!(fs::metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound)
            })
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        self.db.write(
            || format!("pruning {} stat-cache rows", gone.len()),
            |tx| {
                let mut st = tx.prepare("DELETE FROM stat_cache WHERE path = ?1")?;
                let mut n = 0;
                for p in &gone {
                    n += st.execute([p])? as u64;
                }
                Ok(n)
            },
        )
    }

    /// Removes the whole cache (database, blobs, temp files) under `dir`. Refuses with
    /// [`CacheError::InUse`] while any `Cache` (in this or another process) has it open; an
    /// opener arriving meanwhile waits until the removal is done. Each part is first renamed into
    /// a trash directory, so an interrupted clean leaves no half-removed database, and the next
    /// clean finishes the trash.
    pub fn clean(dir: &Path) -> Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        let lock_path = dir.join(USE_LOCK);
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(CacheError::InUse { dir: dir.to_path_buf() }),
            Err(fs::TryLockError::Error(e)) => return Err(CacheError::Io { path: lock_path, source: e }),
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let trash = dir.join(format!(".trash-{}-{nanos}", std::process::id()));
        fs::create_dir(&trash).map_err(io_err(&trash))?;
        let db = dir.join(DB_FILE);
        let mut parts: Vec<PathBuf> = db_files(&db).to_vec();
        parts.push(dir.join("cache.sqlite.corrupt"));
        parts.push(dir.join("cas"));
        parts.push(dir.join("tmp"));
        parts.push(dir.join(super::INSTANCE_FILE));
        for (i, p) in parts.iter().enumerate() {
            match fs::rename(p, trash.join(i.to_string())) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::Io { path: p.clone(), source: e }),
            }
        }
        for ent in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            if ent.file_name().to_string_lossy().starts_with(".trash-") {
                let p = ent.path();
                fs::remove_dir_all(&p).map_err(io_err(&p))?;
            }
        }
        drop(lock);
        Ok(())
    }
}

/// Parses a size: a number (decimals allowed) and an optional unit. `K`/`KB`/`M`/`MB`/`G`/`GB`/
/// `T`/`TB` are powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` powers of 1024, `B` or no unit bytes;
/// units are case-insensitive. `10GB` = 10 000 000 000, `500MiB` = 524 288 000.
pub fn parse_size(input: &str) -> Result<u64> {
    let err = |reason: &str| CacheError::InvalidSize { input: input.into(), reason: reason.into() };
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim());
    if num.is_empty() {
        return Err(err("it does not start with a number"));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(err(&format!("unknown unit `{unit}` (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"))),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(|| err("it is too large"));
    }
    let f: f64 = num.parse().map_err(|_| err(&format!("`{num}` is not a number")))?;
    let bytes = (f * mult as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("it is too large"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: one or more `<integer><unit>` with units `s`, `m` (minutes), `h`, `d`, `w`,
/// e.g. `7d`, `12h`, `1d12h`, `90s`.
pub fn parse_duration(input: &str) -> Result<Duration> {
    let err = |reason: &str| CacheError::InvalidDuration { input: input.into(), reason: reason.into() };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if split == 0 {
            return Err(err(&format!("expected a number at `{rest}`")));
        }
        let n: u64 = rest[..split].parse().map_err(|_| err("the number is too large"))?;
        rest = &rest[split..];
        let ulen = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let secs: u64 = match &rest[..ulen] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "" => return Err(err("a unit is missing (use s, m, h, d or w)")),
            u => return Err(err(&format!("unknown unit `{u}` (use s, m, h, d or w)"))),
        };
        rest = &rest[ulen..];
        total = n.checked_mul(secs).and_then(|v| total.checked_add(v)).ok_or_else(|| err("it is too large"))?;
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        let cases: &[(&str, u64)] = &[
            ("1024", 1024),
            ("0", 0),
            ("10GB", 10_000_000_000),
            ("10gb", 10_000_000_000),
            ("10G", 10_000_000_000),
            ("500MiB", 500 << 20),
            ("500 MiB", 500 << 20),
            ("1.5GiB", 3 << 29),
            ("2KB", 2000),
            ("2KiB", 2048),
            ("7B", 7),
            (" 1TiB ", 1 << 40),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s).unwrap(), *want, "{s}");
        }
    }

    #[test]
    fn rejects_bad_sizes_clearly() {
        for (s, needle) in [
            ("", "does not start with a number"),
            ("GB", "does not start with a number"),
            ("-5GB", "does not start with a number"),
            ("10XB", "unknown unit `XB`"),
            ("1.2.3GB", "is not a number"),
            ("99999999999TB", "too large"),
        ] {
            let e = parse_size(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
            assert!(e.contains(&format!("`{s}`")), "names the input: {e}");
        }
    }

    #[test]
    fn parses_durations() {
        let cases: &[(&str, u64)] = &[
            ("7d", 7 * 86_400),
            ("12h", 12 * 3600),
            ("30m", 1800),
            ("90s", 90),
            ("2w", 14 * 86_400),
            ("1d12h", 86_400 + 12 * 3600),
            (" 0s ", 0),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(*want), "{s}");
        }
    }

    #[test]
    fn rejects_bad_durations_clearly() {
        for (s, needle) in [
            ("", "empty"),
            ("7", "unit is missing"),
            ("7y", "unknown unit `y`"),
            ("d", "expected a number"),
            ("1d-2h", "unknown unit `d-`"),
            ("99999999999999999999d", "too large"),
        ] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }
}
