//! The shared `.deb` cache: `<cache>/debs/sha256/<hex>`, one file per package build, written
//! atomically and only after its sha256 and size match the lock (a mismatch is refused, naming
//! the package, and nothing is kept). Any number of workspaces and processes may share it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::archive::Archive;
use super::error::{io_err, DebianError, Result};
use super::lock::{Lock, LockedPackage};
use crate::cas::BlobDir;
use crate::model::digest::{Digest, HashingWriter};

/// How many downloads run at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// A directory of `.deb` files named by their sha256 (the same layout as a [`BlobDir`]).
#[derive(Clone, Debug)]
pub struct DebCache {
    blobs: BlobDir,
}

/// What [`fetch_debs`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Packages downloaded now.
    pub downloaded: usize,
    /// Packages the cache already held (verified).
    pub cached: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

impl DebCache {
    /// Opens (and creates) `<cache_dir>/debs/sha256/`.
    pub fn open(cache_dir: &Path) -> Result<DebCache> {
        Ok(DebCache { blobs: BlobDir::open(cache_dir.join("debs"))? })
    }

    /// Where the `.deb` of `p` lives (whether or not it is there).
    pub fn path(&self, p: &LockedPackage) -> PathBuf {
        self.blobs.path(&p.sha256)
    }

    /// True if the cache holds `p` with the right size and sha256. A corrupt file is removed.
    pub fn has_verified(&self, p: &LockedPackage) -> bool {
        self.blobs.size(&p.sha256).ok() == Some(p.size) && self.blobs.verify(&p.sha256).is_ok()
    }

    /// Opens the cached `.deb` of `p` after checking its size and sha256 against the lock; a
    /// corrupt file is removed and reported as [`DebianError::DebMismatch`].
    pub fn open_verified(&self, p: &LockedPackage) -> Result<File> {
        let path = self.path(p);
        let f = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                DebianError::NotFetched {
                    package: p.name.clone(),
                    digest: p.sha256.clone(),
                    dir: self.blobs.root().to_path_buf(),
                }
            } else {
                io_err(&path)(e)
            }
        })?;
        let (actual, n) = Digest::of_reader(BufReader::new(&f)).map_err(io_err(&path))?;
        if actual != p.sha256 || n != p.size {
            let _ = std::fs::remove_file(&path);
            return Err(mismatch(p, actual, n));
        }
        let mut f = f;
        io::Seek::rewind(&mut f).map_err(io_err(&path))?;
        Ok(f)
    }

    /// Streams `r` into the cache as the `.deb` of `p`: hashed on the way into a temp file in the
    /// same directory, renamed to its digest only if sha256 and size match the lock. Returns the
    /// bytes read.
    pub fn insert(&self, p: &LockedPackage, mut r: impl Read) -> Result<u64> {
        let dir = self.blobs.root().join("sha256");
        let tmp = tempfile::Builder::new().prefix(".tmp-deb-").tempfile_in(&dir).map_err(io_err(&dir))?;
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp));
        // cap what is read at one byte past the lock's size: a huge or endless answer stops early
        let mut limited = (&mut r).take(p.size + 1);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // read errors (a dropped connection) name the package file, write errors the cache
            let k = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(Path::new(&p.filename))(e)),
            };
            w.write_all(&buf[..k]).map_err(io_err(&dir))?;
        }
        let (buf, actual, n) = w.finish();
        let tmp = buf.into_inner().map_err(|e| io_err(&dir)(e.into_error()))?;
        if actual != p.sha256 || n != p.size {
            drop(tmp); // removes the temp file: a refused download is not kept
            return Err(mismatch(p, actual, n));
        }
        let path = self.path(p);
        if !path.is_file() {
            tmp.as_file().sync_all().map_err(io_err(&path))?;
            tmp.persist(&path).map_err(|e| io_err(&path)(e.error))?;
        }
        Ok(n)
    }
}

fn mismatch(p: &LockedPackage, actual: Digest, actual_size: u64) -> DebianError {
    DebianError::DebMismatch(Box::new(super::error::DebMismatch {
        package: p.name.clone(),
        version: p.version.clone(),
        filename: p.filename.clone(),
        expected: p.sha256.clone(),
        actual,
        expected_size: p.size,
        actual_size,
    }))
}

/// Makes sure the cache holds every `.deb` of `lock`, verified. `archive` is called only if
/// something must be downloaded, so a build with a warm cache needs no archive configuration
/// and no network. Downloads run a few at a time; the first error in lock order is returned.
pub fn fetch_debs(lock: &Lock, cache: &DebCache, archive: impl FnOnce() -> Result<Archive>) -> Result<FetchStats> {
    let mut stats = FetchStats::default();
    let missing: Vec<&LockedPackage> = lock
        .packages
        .iter()
        .filter(|p| {
            let have = cache.has_verified(p);
            stats.cached += have as usize;
            !have
        })
        .collect();
    if missing.is_empty() {
        return Ok(stats);
    }
    let archive = archive()?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<u64>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_DOWNLOADS.min(missing.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = missing.get(i) else { break };
                let r = archive.open(&p.filename).and_then(|resp| cache.insert(p, resp));
                let failed = r.is_err();
                results.lock().expect("no panics while held").push((i, r));
                if failed {
                    next.store(missing.len(), Ordering::Relaxed); // stop the others early
                }
            });
        }
    });
    let mut results = results.into_inner().expect("threads joined");
    results.sort_by_key(|(i, _)| *i);
    for (_, r) in results {
        stats.bytes += r?;
        stats.downloaded += 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(content: &[u8]) -> LockedPackage {
        LockedPackage {
            name: "hello".into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            filename: "pool/main/h/hello/hello_1.0-1_amd64.deb".into(),
            sha256: Digest::of_bytes(content),
            size: content.len() as u64,
        }
    }

    #[test]
    fn inserts_verified_and_refuses_tampered() {
        let t = tempfile::tempdir().unwrap();
        let c = DebCache::open(t.path()).unwrap();
        let p = pkg(b"real deb");
        let err = c.insert(&p, &b"evil deb"[..]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DebianError::DebMismatch(_)), "{msg}");
        assert!(msg.contains("package `hello`") && msg.contains("not kept"), "{msg}");
        let leftovers = std::fs::read_dir(t.path().join("debs/sha256")).unwrap().count();
        assert_eq!(leftovers, 0, "a refused download leaves nothing");
        assert!(c.insert(&p, &b"real deb and more"[..]).is_err(), "size checked too");
        assert_eq!(c.insert(&p, &b"real deb"[..]).unwrap(), 8);
        assert!(c.has_verified(&p));
        assert_eq!(c.path(&p), t.path().join("debs/sha256").join(p.sha256.hex()));
        let mut s = String::new();
        c.open_verified(&p).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "real deb");
    }

    #[test]
    fn a_corrupted_cache_entry_is_refused_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let c = DebCache::open(t.path()).unwrap();
        let p = pkg(b"content!");
        c.insert(&p, &b"content!"[..]).unwrap();
        std::fs::write(c.path(&p), b"CONTENT!").unwrap();
        let err = c.open_verified(&p).unwrap_err();
        assert!(err.to_string().contains("package `hello`"), "{err}");
        assert!(!c.path(&p).exists());
        assert!(matches!(c.open_verified(&p), Err(DebianError::NotFetched { .. })));
    }

    #[test]
    fn a_warm_cache_needs_no_archive() {
        let t = tempfile::tempdir().unwrap();
        let c = DebCache::open(t.path()).unwrap();
        let p = pkg(b"x1");
        c.insert(&p, &b"x1"[..]).unwrap();
        let lock = Lock {
            version: 1,
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            components: vec!["main".into()],
            requested: vec!["hello".into()],
            packages: vec![p],
            others: Vec::new(),
        };
        let stats = fetch_debs(&lock, &c, || panic!("the archive is not needed")).unwrap();
        assert_eq!(stats, FetchStats { downloaded: 0, cached: 1, bytes: 0 });
    }
}
