//! A content-addressed blob directory: `<root>/sha256/<hex>`, the same shape as an OCI layout's
//! `blobs/`, so blobs move between the cache and layouts by hard link. Writes are atomic (temp file in
//! the same directory, fsync, rename); reads can be verified against the name. No index lives here
//! (the cache module keeps one in SQLite).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::model::digest::{BackgroundHashingWriter, Digest};

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
            // A temp file named for this process (see [`temp_prefix`]), removed on every error path
            // (NamedTempFile's drop), so a full disk leaves no partial file behind.
            let dir = self.root.join("sha256");
            let mut tmp = new_temp(&dir, "", true).map_err(io_err(&dir))?;
            let tp = tmp.path().to_path_buf();
            tmp.write_all(bytes).map_err(io_err(&tp))?;
            tmp.as_file().sync_all().map_err(io_err(&tp))?;
            tmp.persist(&p).map_err(|e| io_err(&p)(e.error))?;
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
        // Removed on every error path (NamedTempFile's drop): a failed `fill` or a full disk leaves
        // no partial file in the directory.
        let tmp = new_temp(&dir, "", false).map_err(|e| E::from(io_err(&dir)(e)))?;
        let tp = tmp.path().to_path_buf();
        let mut w = BackgroundHashingWriter::new(BufWriter::with_capacity(1 << 20, EarlyWriteback::new(tmp)));
        fill(&mut w)?;
        let (buf, d, n) = w.finish().map_err(|e| E::from(io_err(&tp)(e)))?;
        let tmp = buf.into_inner().map_err(|e| E::from(io_err(&tp)(e.into_error())))?.file;
        let p = self.path(&d);
        if !self.holds_intact(&d, Some(n)) {
            tmp.as_file().sync_all().map_err(|e| E::from(io_err(&tp)(e)))?;
            tmp.persist(&p).map_err(|e| E::from(io_err(&p)(e.error)))?;
        }
        Ok((d, n))
    }

    /// Brings in a blob from another file: hard link when the file is already verified to have
    /// digest `d` and sits on the same filesystem, copy otherwise. A failed copy (a full disk)
    /// leaves no partial file.
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

/// A blob being written, whose bytes are handed to the disk as they come (every
/// [`EarlyWriteback::STEP`] bytes, `sync_file_range(SYNC_FILE_RANGE_WRITE)`: start writing back,
/// do not wait), as RocksDB's `bytes_per_sync` and git's batch fsync do, so that the `fsync` that
/// makes the blob durable before it is renamed into place waits only for the last few MiB: it was
/// ≈ 22 ms for the 14 MB app layer of a one-file edit, on its critical path. Durability is
/// unchanged: the `fsync` still runs, this is only a hint (its errors are ignored).
struct EarlyWriteback {
    file: tempfile::NamedTempFile,
    /// Bytes handed to writeback so far, and written so far.
    started: u64,
    written: u64,
}

impl EarlyWriteback {
    const STEP: u64 = 1 << 20;

    fn new(file: tempfile::NamedTempFile) -> EarlyWriteback {
        EarlyWriteback { file, started: 0, written: 0 }
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.file.write(b)?;
        self.written += n as u64;
        if self.written - self.started >= Self::STEP {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor this value owns; no memory is passed.
            let _ = unsafe {
                libc::sync_file_range(
                    self.file.as_file().as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Hard-links `src` to `dst` (atomically via a temp name), falling back to a copy across filesystems.
///
/// The temp name ([`temp_prefix`] `link-`) is unique to this call and removed on every path: when
/// the copy fails (a full disk: the error keeps the OS cause), when the rename fails, and after a
/// rename that succeeded without moving anything. That last case is rename(2)'s rule for a source
/// and destination that are already the same inode (a concurrent writer of the same layout linked
/// the same cache blob there first): it returns success and leaves the source in place.
pub fn link_or_copy(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{}{}", temp_prefix("link-"), unique()));
    let r = (|| {
        if fs::hard_link(src, &tmp).is_err() {
            fs::copy(src, &tmp)?;
            File::open(&tmp)?.sync_all()?;
        }
        fs::rename(&tmp, dst)
    })();
    // After a normal rename the name is gone (NotFound, ignored); the name is this process's own.
    let _ = fs::remove_file(&tmp);
    r
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A new temp file in `dir` named with [`temp_prefix`]`(kind)`; `readable`: created 0644 (minus
/// the umask) like any ordinary file, else 0600 (tempfile's default).
pub(crate) fn new_temp(dir: &Path, kind: &str, readable: bool) -> io::Result<tempfile::NamedTempFile> {
    let prefix = temp_prefix(kind);
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    if readable {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(fs::Permissions::from_mode(0o644));
    }
    b.tempfile_in(dir)
}

/// The name prefix of temp files written into blob directories by this process:
/// `.tmp-<kind><pid>.<pid namespace inode>-`, e.g. `.tmp-link-4711.4026531836-`. The writer's
/// identity in the name lets a sweep of leftovers (`kill -9`) tell a dead writer's file from a live
/// one's without any lock: see [`temp_owner`]. Every name still starts with `.tmp-`.
pub fn temp_prefix(kind: &str) -> String {
    format!(".tmp-{kind}{}.{}-", std::process::id(), pid_namespace())
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid`), 0 when unknown. Pids are only
/// comparable inside one namespace (containers sharing a cache directory have their own).
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).unwrap_or(0))
}

/// What a temp file's name says about the process that writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TempOwner {
    /// Named by a process of this pid namespace that exists now (this one included): maybe a live
    /// writer, never to be removed by a sweep. (A reused pid keeps a dead writer's file: safe.)
    Alive,
    /// Named by a process of this pid namespace that no longer exists: a leftover.
    Dead,
    /// No writer in the name (another naming scheme), or one of another pid namespace.
    Unknown,
}

/// Reads the writer out of a temp file name made with [`temp_prefix`].
pub fn temp_owner(name: &str) -> TempOwner {
    let Some(rest) = name.strip_prefix(".tmp-") else { return TempOwner::Unknown };
    // Optional kind: lowercase letters and a dash (`link-`, `remote-`).
    let rest = match rest.find('-') {
        Some(i) if i > 0 && rest[..i].bytes().all(|b| b.is_ascii_lowercase()) => &rest[i + 1..],
        _ => rest,
    };
    let parse = || -> Option<(u32, u64)> {
        let (id, _) = rest.split_once('-')?;
        let (pid, ns) = id.split_once('.')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(pid) || !all_digits(ns) {
            return None;
        }
        Some((pid.parse().ok()?, ns.parse().ok()?))
    };
    let Some((pid, ns)) = parse() else { return TempOwner::Unknown };
    if ns == 0 || ns != pid_namespace() || pid == 0 || pid > i32::MAX as u32 {
        return TempOwner::Unknown;
    }
    if pid == std::process::id() {
        return TempOwner::Alive;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r == 0 {
        return TempOwner::Alive;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => TempOwner::Dead,
        Some(libc::EPERM) => TempOwner::Alive,
        _ => TempOwner::Unknown,
    }
}

impl crate::model::error::Kinded for CasError {
    /// The blob store is the machine's: a missing or damaged blob, or a disk error, is the machine's problem.
    fn kind(&self) -> crate::model::error::ErrorKind {
        crate::model::error::ErrorKind::Environment
    }
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

    fn temps(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect()
    }

    #[test]
    fn link_onto_the_same_inode_leaves_no_temp_link() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::write(&src, b"x").unwrap();
        let dst = t.path().join("out/dst");
        link_or_copy(&src, &dst).unwrap();
        // rename(2) of a hard link onto its own inode succeeds and moves nothing.
        link_or_copy(&src, &dst).unwrap();
        assert!(temps(&t.path().join("out")).is_empty(), "{:?}", temps(&t.path().join("out")));
        assert_eq!(fs::read(&dst).unwrap(), b"x");
    }

    #[test]
    fn failed_writes_leave_no_temp_file() {
        let t = tempfile::tempdir().unwrap();
        let b = BlobDir::open(t.path()).unwrap();
        let err = b
            .put_stream::<CasError>(|w| {
                w.write_all(b"half").map_err(io_err(Path::new("x")))?;
                Err(io_err(Path::new("src"))(io::Error::other("the source broke")))
            })
            .unwrap_err();
        assert!(err.to_string().contains("src"), "{err}");
        assert!(link_or_copy(&t.path().join("absent"), &t.path().join("sha256/x")).is_err());
        assert!(temps(&t.path().join("sha256")).is_empty(), "{:?}", temps(&t.path().join("sha256")));
    }

    #[test]
    fn temp_names_say_whether_their_writer_lives() {
        let mine = format!("{}AbC123", temp_prefix(""));
        assert_eq!(temp_owner(&mine), TempOwner::Alive);
        assert_eq!(temp_owner(&format!("{}7", temp_prefix("link-"))), TempOwner::Alive);
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let ns = pid_namespace();
        if ns != 0 {
            assert_eq!(temp_owner(&format!(".tmp-remote-{dead}.{ns}-xyz")), TempOwner::Dead);
            assert_eq!(temp_owner(&format!(".tmp-{dead}.{}-xyz", ns + 1)), TempOwner::Unknown, "other namespace");
        }
        for n in [".tmp-AbC123", ".tmp-", ".tmp-link-", ".tmp-12.x-1", "sha256", ".tmp-0.5-a"] {
            assert_eq!(temp_owner(n), TempOwner::Unknown, "{n}");
        }
        // Blob-store temp files carry the writer.
        let t = tempfile::tempdir().unwrap();
        let f = new_temp(t.path(), "", true).unwrap();
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".tmp-"), "{name}");
        assert_eq!(temp_owner(&name), if ns != 0 { TempOwner::Alive } else { TempOwner::Unknown });
    }
}
