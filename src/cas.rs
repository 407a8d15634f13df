//! A content-addressed blob directory: `<root>/sha256/<hex>`, the same shape as an OCI layout's
//! `blobs/`, so blobs move between the cache and layouts by hard link. Writes are atomic (temp file in
//! the same directory, fsync, rename); reads can be verified against the name. No index lives here
//! (the cache module keeps one in SQLite).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::model::digest::{Digest, HashingWriter};

/// Errors from the blob directory. Each names the digest or path it is about.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("blob `{digest}` is not in `{dir}`")]
    Missing { digest: Digest, dir: PathBuf },
    #[error("blob `{expected}` in `{path}` is corrupt: its content hashes to `{actual}`")]
    Corrupt { expected: Digest, actual: Digest, path: PathBuf },
    #[error("I/O error on `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CasError + '_ {
    move |source| CasError::Io { path: path.to_path_buf(), source }
}

/// A directory of sha256-named blobs.
#[derive(Clone, Debug)]
pub struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    /// Opens (and creates) `<root>/sha256`.
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobDir, CasError> {
        let root = root.into();
        let d = root.join("sha256");
        fs::create_dir_all(&d).map_err(io_err(&d))?;
        Ok(BlobDir { root })
    }

    /// The directory holding `sha256/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("sha256").join(d.hex())
    }

    /// True if a file for this digest exists (not verified; see [`BlobDir::verify`]).
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Size in bytes of a stored blob.
    pub fn size(&self, d: &Digest) -> Result<u64, CasError> {
        let p = self.path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(CasError::Missing { digest: d.clone(), dir: self.root.clone() })
            }
            Err(e) => Err(CasError::Io { path: p, source: e }),
        }
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, CasError> {
        let p = self.path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CasError::Missing { digest: d.clone(), dir: self.root.clone() }
            } else {
                CasError::Io { path: p.clone(), source: e }
            }
        })
    }

    /// Reads a whole (small) blob into memory, verifying its digest.
    pub fn read_verified(&self, d: &Digest) -> Result<Vec<u8>, CasError> {
        let p = self.path(d);
        let bytes = fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CasError::Missing { digest: d.clone(), dir: self.root.clone() }
            } else {
                CasError::Io { path: p.clone(), source: e }
            }
        })?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != d {
            return Err(CasError::Corrupt { expected: d.clone(), actual, path: p });
        }
        Ok(bytes)
    }

    /// Re-hashes a stored blob; a corrupt blob is removed (so it is rebuilt, never used) and reported.
    pub fn verify(&self, d: &Digest) -> Result<(), CasError> {
        let f = self.open_blob(d)?;
        let p = self.path(d);
        let (actual, _) = Digest::of_reader(io::BufReader::new(f)).map_err(io_err(&p))?;
        if &actual != d {
            let _ = fs::remove_file(&p);
            return Err(CasError::Corrupt { expected: d.clone(), actual, path: p });
        }
        Ok(())
    }

    /// Stores `bytes`; returns the digest. An existing blob of that digest is not rewritten.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, CasError> {
        let d = Digest::of_bytes(bytes);
        if !self.holds_intact(&d, Some(bytes.len() as u64)) {
            let p = self.path(&d);
            crate::fs::write_atomic(&p, bytes).map_err(io_err(&p))?;
        }
        Ok(d)
    }

    /// Streams a blob in: `fill` writes the content; the result is hashed on the way and renamed to
    /// its digest. Returns the digest and size. Memory does not grow with the blob's size.
    pub fn put_stream<E>(&self, fill: impl FnOnce(&mut dyn Write) -> Result<(), E>) -> Result<(Digest, u64), E>
    where
        E: From<CasError>,
    {
        let dir = self.root.join("sha256");
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir).map_err(|e| E::from(io_err(&dir)(e)))?;
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp));
        fill(&mut w)?;
        let (buf, d, n) = w.finish();
        let tmp = buf.into_inner().map_err(|e| E::from(io_err(&dir)(e.into_error())))?;
        let p = self.path(&d);
        if !self.holds_intact(&d, Some(n)) {
            tmp.as_file().sync_all().map_err(|e| E::from(io_err(&p)(e)))?;
            tmp.persist(&p).map_err(|e| E::from(io_err(&p)(e.error)))?;
        }
        Ok((d, n))
    }

    /// Brings in a blob from another file: hard link when the file is already verified to have
    /// digest `d` and sits on the same filesystem, copy otherwise.
    pub fn link_or_copy_from(&self, src: &Path, d: &Digest) -> Result<(), CasError> {
        let p = self.path(d);
        if self.holds_intact(d, None) {
            return Ok(());
        }
        link_or_copy(src, &p).map_err(io_err(&p))
    }

    /// True if a file for `d` exists with the expected size and content. A writer about to skip
    /// storing a blob "because it exists" must not keep a damaged one (it is replaced instead).
    fn holds_intact(&self, d: &Digest, size: Option<u64>) -> bool {
        let p = self.path(d);
        match fs::metadata(&p) {
            Ok(m) if m.is_file() && size.is_none_or(|n| n == m.len()) => {}
            _ => return false,
        }
        match File::open(&p) {
            Ok(f) => Digest::of_reader(io::BufReader::new(f)).map(|(a, _)| &a == d).unwrap_or(false),
            Err(_) => false,
        }
    }
}

/// Hard-links `src` to `dst` (atomically via a temp name), falling back to a copy across filesystems.
pub fn link_or_copy(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-link-{}-{}", std::process::id(), unique()));
    if fs::hard_link(src, &tmp).is_err() {
        fs::copy(src, &tmp)?;
        File::open(&tmp)?.sync_all()?;
    }
    fs::rename(&tmp, dst).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_verify() {
        let t = tempfile::tempdir().unwrap();
        let b = BlobDir::open(t.path()).unwrap();
        let d = b.put_bytes(b"hello").unwrap();
        assert!(b.contains(&d));
        b.verify(&d).unwrap();
        fs::write(b.path(&d), b"hellO").unwrap();
        assert!(matches!(b.verify(&d), Err(CasError::Corrupt { .. })));
        assert!(!b.contains(&d), "corrupt blob is removed");
    }

    #[test]
    fn streams() {
        let t = tempfile::tempdir().unwrap();
        let b = BlobDir::open(t.path()).unwrap();
        let (d, n) = b
            .put_stream::<CasError>(|w| {
                w.write_all(b"hel").map_err(io_err(Path::new("x")))?;
                w.write_all(b"lo").map_err(io_err(Path::new("x")))?;
                Ok(())
            })
            .unwrap();
        assert_eq!((d, n), (Digest::of_bytes(b"hello"), 5));
    }
}
