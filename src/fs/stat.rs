//! File stats without a kernel path walk per file: [`FileStat`] (the fields the stat cache and the
//! source stamps compare) and [`DirStats`], which `lstat`s many files relative to their directory's
//! open descriptor (`fstatat`), opening each directory once. No policy lives here.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The stat fields cbuild compares: what `lstat`/`stat` said about one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
}

fn ns(s: i64, n: i64) -> i128 {
    s as i128 * 1_000_000_000 + n as i128
}

impl FileStat {
    /// The fields of `m`.
    pub fn of(m: &fs::Metadata) -> FileStat {
        FileStat {
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            mode: m.mode(),
        }
    }

    fn of_raw(st: &rustix::fs::Stat) -> FileStat {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        FileStat {
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            mode: st.st_mode as u32,
        }
    }

    /// `lstat(path)`.
    pub fn lstat(path: &Path) -> io::Result<FileStat> {
        fs::symlink_metadata(path).map(|m| FileStat::of(&m))
    }

    /// `stat(path)` (symlinks followed).
    pub fn stat(path: &Path) -> io::Result<FileStat> {
        fs::metadata(path).map(|m| FileStat::of(&m))
    }

    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }

    /// A symbolic link (only an `lstat` sees one).
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
}

/// Directories kept open at most at once by a [`DirStats`] (then all are closed; callers that go
/// through files sorted by path reopen few).
const OPEN_DIRS: usize = 256;

/// `lstat`s files under one root relative to their directory's descriptor: one path walk per
/// directory (`open(O_PATH)` of `root/dir`, symlinks in it followed as a path walk would) and one
/// `fstatat(AT_SYMLINK_NOFOLLOW)` of the last component per file, instead of a walk of the whole
/// path per file. The answer is the same as `lstat(root/rel)`: any error (a missing directory, a
/// directory replaced meanwhile) falls back to that call, so errors read as before.
pub struct DirStats {
    root: PathBuf,
    open: HashMap<PathBuf, Option<OwnedFd>>,
}

impl DirStats {
    pub fn new(root: &Path) -> DirStats {
        DirStats { root: root.to_path_buf(), open: HashMap::new() }
    }

    /// `lstat(root/rel)` for a root-relative `rel`.
    pub fn lstat(&mut self, rel: &Path) -> io::Result<FileStat> {
        let (Some(dir), Some(name)) = (rel.parent(), rel.file_name()) else {
            return FileStat::lstat(&self.root.join(rel));
        };
        let stat_in = |fd: &Option<OwnedFd>| {
            let st = rustix::fs::statat(fd.as_ref()?, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
            Some(FileStat::of_raw(&st))
        };
        // One lookup for the common case (the directory is open already): hashing a `Path`
        // walks its components.
        if let Some(fd) = self.open.get(dir) {
            if let Some(st) = stat_in(fd) {
                return Ok(st);
            }
        } else {
            if self.open.len() >= OPEN_DIRS {
                self.open.clear();
            }
            use rustix::fs::{Mode, OFlags};
            let fd = rustix::fs::open(
                self.root.join(dir),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok();
            let st = stat_in(&fd);
            self.open.insert(dir.to_path_buf(), fd);
            if let Some(st) = st {
                return Ok(st);
            }
        }
        FileStat::lstat(&self.root.join(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_lstat_for_files_links_and_errors() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f"), "x").unwrap();
        std::fs::write(r.join("top"), "yy").unwrap();
        std::os::unix::fs::symlink("f", r.join("a/b/l")).unwrap();
        std::os::unix::fs::symlink("a", r.join("la")).unwrap();
        let mut d = DirStats::new(r);
        for rel in ["a/b/f", "top", "a/b/l", "la/b/f", "la", "a/b"] {
            let got = d.lstat(Path::new(rel)).unwrap();
            assert_eq!(got, FileStat::lstat(&r.join(rel)).unwrap(), "{rel}");
        }
        assert!(d.lstat(Path::new("a/b/l")).unwrap().is_symlink());
        assert!(d.lstat(Path::new("a/b/f")).unwrap().is_file());
        for rel in ["a/b/missing", "nodir/f", "top/f"] {
            let e = d.lstat(Path::new(rel)).unwrap_err();
            assert_eq!(e.kind(), FileStat::lstat(&r.join(rel)).unwrap_err().kind(), "{rel}");
        }
    }

    #[test]
    fn sees_changes_after_the_directory_was_opened() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir(r.join("d")).unwrap();
        std::fs::write(r.join("d/f"), "x").unwrap();
        let mut d = DirStats::new(r);
        let before = d.lstat(Path::new("d/f")).unwrap();
        std::fs::write(r.join("d/f"), "xyz").unwrap();
        std::fs::write(r.join("d/g"), "new").unwrap();
        assert_ne!(d.lstat(Path::new("d/f")).unwrap(), before);
        assert_eq!(d.lstat(Path::new("d/g")).unwrap().size, 3);
        std::fs::remove_file(r.join("d/g")).unwrap();
        assert!(d.lstat(Path::new("d/g")).is_err());
    }
}
