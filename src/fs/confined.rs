//! Confined access to hostile trees: the one API through which cbuild reads, writes, lists, chmods
//! and chowns inside anything a sandbox, an image or a cache controls (`/layers`, genrule outputs,
//! the build `/workspace`, extracted image roots).
//!
//! # The rule
//! A [`Root`] is an open directory. Every path below it is resolved by the kernel with `openat2(2)`
//! and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: resolution can never leave the
//! root (no `..` above it, no absolute paths) and never follows a symlink, in any component, not even
//! one that points back inside. A symlink where cbuild expects a file or directory is an error
//! (`ELOOP`), named with the path as the tree shows it. Operations on the final component work on the
//! file descriptor that was resolved (fstat, fchown, fchmod, read), so a path swapped after the check
//! cannot redirect them. New files are created with `O_EXCL` after removing whatever was there, so
//! cbuild never writes through a pre-existing inode (a hard link planted by the tree's owner).
//!
//! # Why rustix's `openat2` and not `cap-std` or `pathrs`
//! `cap-std` confines paths but follows symlinks that stay inside the root and has no chown; `pathrs`
//! resolves in-root symlinks too (`RESOLVE_IN_ROOT` semantics). cbuild wants neither: a tree written
//! by a buildpack has no symlink cbuild means to follow. `rustix` (already in the dependency tree via
//! `tempfile`) gives safe wrappers of the exact system calls; this module is the policy on top.
//! `openat2` needs Linux 5.6; older kernels get an error naming the requirement.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};

/// What an entry of a confined tree is (symlinks are never followed to find out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Device nodes, FIFOs, sockets.
    Other,
}

/// The metadata of one entry, from `fstat` of the descriptor cbuild resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits including set-id and sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
}

impl Meta {
    fn of(st: &rustix::fs::Stat) -> Meta {
        let kind = match FileType::from_raw_mode(st.st_mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// One entry found by [`Root::walk`].
#[derive(Clone, Debug)]
pub struct WalkEntry {
    /// Relative to the walked directory.
    pub rel: PathBuf,
    pub meta: Meta,
}

/// An open directory whose subtree is hostile. See the module docs.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// The host path it was opened at (for messages and for handing whole trees to the sandbox).
    path: PathBuf,
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl Root {
    /// Opens `path` (a directory cbuild itself chose: the path up to it is trusted, but its last
    /// component must be a real directory, not a symlink).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Self::annotate(path, errno(e)))?;
        Ok(Root { fd, path: path.to_path_buf() })
    }

    /// The host path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `rel` (for messages; never open it by path).
    pub fn display(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    fn annotate(path: &Path, e: io::Error) -> io::Error {
        match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is or passes through a symlink; cbuild does not follow symlinks here", path.display()),
            ),
            Some(libc::EXDEV) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` leaves its directory; refused", path.display()),
            ),
            Some(libc::ENOSYS) => io::Error::new(
                io::ErrorKind::Unsupported,
                format!("`{}`: openat2(2) is not available (cbuild needs Linux 5.6 or newer)", path.display()),
            ),
            _ => io::Error::new(e.kind(), format!("`{}`: {e}", path.display())),
        }
    }

    /// Checks that `rel` is a plain relative path (no root, no `..`) and returns it for openat2.
    /// The empty path and `.` mean the root itself.
    fn check_rel<'a>(&self, rel: &'a Path) -> io::Result<&'a Path> {
        for c in rel.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{}` is not a plain relative path under `{}`", rel.display(), self.path.display()),
                    ))
                }
            }
        }
        Ok(if rel.as_os_str().is_empty() { Path::new(".") } else { rel })
    }

    fn openat(&self, rel: &Path, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        let r = self.check_rel(rel)?;
        rustix::fs::openat2(&self.fd, r, flags | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::from_raw_mode(mode), RESOLVE)
            .map_err(|e| Self::annotate(&self.path.join(rel), errno(e)))
    }

    /// Metadata of `rel` without following it (a symlink reports [`Kind::Symlink`]); `None` if it
    /// does not exist. A symlink among its parents is an error.
    pub fn meta(&self, rel: &Path) -> io::Result<Option<Meta>> {
        match self.openat(rel, OFlags::PATH, 0) {
            Ok(fd) => Ok(Some(Meta::of(&rustix::fs::fstat(&fd).map_err(errno)?))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True if `rel` is a real directory (not a symlink to one).
    pub fn is_dir(&self, rel: &Path) -> io::Result<bool> {
        Ok(matches!(self.meta(rel)?, Some(Meta { kind: Kind::Dir, .. })))
    }

    /// Opens the regular file `rel` for reading. A symlink, directory, device or FIFO is an error.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        // O_NONBLOCK: opening a FIFO must not hang; devices are refused below before any read.
        let fd = self.openat(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY, 0)?;
        let m = Meta::of(&rustix::fs::fstat(&fd).map_err(errno)?);
        if m.kind != Kind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a regular file", self.path.join(rel).display()),
            ));
        }
        // Back to blocking reads.
        let fl = rustix::fs::fcntl_getfl(&fd).map_err(errno)?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Reads the regular file `rel`, at most `limit` bytes (a larger file is an error naming it).
    pub fn read(&self, rel: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let f = self.open_file(rel)?;
        let mut v = Vec::new();
        f.take(limit + 1).read_to_end(&mut v)?;
        if v.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{}` is larger than {limit} bytes", self.path.join(rel).display()),
            ));
        }
        Ok(v)
    }

    /// Like [`Root::read`] as UTF-8 text; `None` when the file does not exist.
    pub fn read_to_string_opt(&self, rel: &Path, limit: u64) -> io::Result<Option<String>> {
        match self.read(rel, limit) {
            Ok(b) => String::from_utf8(b).map(Some).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("`{}` is not UTF-8", self.path.join(rel).display()))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the regular file `rel` of an image root file system the way a process chrooted there
    /// would see it: symlinks are followed but resolved inside the root (`RESOLVE_IN_ROOT`: an
    /// absolute target or `..` stops at the root), so `etc/os-release -> ../usr/lib/os-release`
    /// works and `etc -> /host-etc` stays in the image. `None` when it does not exist.
    pub fn read_in_root(&self, rel: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let r = self.check_rel(rel)?;
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let fd = match rustix::fs::openat2(
            &self.fd,
            r,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Self::annotate(&self.path.join(rel), errno(e))),
        };
        if Meta::of(&rustix::fs::fstat(&fd).map_err(errno)?).kind != Kind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a regular file", self.path.join(rel).display()),
            ));
        }
        let mut v = Vec::new();
        File::from(fd).take(limit + 1).read_to_end(&mut v)?;
        if v.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{}` is larger than {limit} bytes", self.path.join(rel).display()),
            ));
        }
        Ok(Some(v))
    }

    /// Opens the directory `rel` as a new root (itself confined).
    pub fn open_dir(&self, rel: &Path) -> io::Result<Root> {
        let fd = self.openat(rel, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        Ok(Root { fd, path: self.path.join(rel) })
    }

    fn split<'a>(&self, rel: &'a Path) -> io::Result<(&'a Path, &'a OsStr)> {
        let rel = self.check_rel(rel)?;
        match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => Ok((p, n)),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("`{}` names no entry", rel.display()))),
        }
    }

    /// Creates `rel` and its missing parents as real directories with `mode` (before umask).
    /// An existing non-directory (a symlink included) on the way is an error.
    pub fn create_dir_all(&self, rel: &Path, mode: u32) -> io::Result<()> {
        let rel = self.check_rel(rel)?;
        let mut cur = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(n) = c else { continue };
            cur.push(n);
            match self.meta(&cur)? {
                Some(Meta { kind: Kind::Dir, .. }) => continue,
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("`{}` exists and is not a directory", self.path.join(&cur).display()),
                    ))
                }
                None => {
                    let parent =
                        self.openat(cur.parent().unwrap_or(Path::new("")), OFlags::PATH | OFlags::DIRECTORY, 0)?;
                    match rustix::fs::mkdirat(&parent, n, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(Self::annotate(&self.path.join(&cur), errno(e))),
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `bytes` to `rel` as a new file with `mode` (exactly: umask is not applied), replacing
    /// whatever entry was there (a symlink or hard link is removed, never written through). The
    /// parent directory must exist and be a real directory.
    pub fn write_file(&self, rel: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        let (parent, name) = self.split(rel)?;
        let dir = self.openat(parent, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(Self::annotate(&self.path.join(rel), errno(e))),
        }
        let fd = rustix::fs::openat2(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            RESOLVE,
        )
        .map_err(|e| Self::annotate(&self.path.join(rel), errno(e)))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(errno)?;
        let mut f = File::from(fd);
        f.write_all(bytes).map_err(|e| Self::annotate(&self.path.join(rel), e))
    }

    /// Sets the owner of `rel` itself (a symlink's own owner when it is one).
    pub fn chown(&self, rel: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let fd = self.openat(rel, OFlags::PATH, 0)?;
        rustix::fs::chownat(
            &fd,
            "",
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Self::annotate(&self.path.join(rel), errno(e)))
    }

    /// Sets the permission bits of `rel`, which must be a file or directory (a symlink is left
    /// alone: its mode means nothing, and chmod would follow it).
    pub fn chmod(&self, rel: &Path, mode: u32) -> io::Result<()> {
        let fd = self.openat(rel, OFlags::PATH, 0)?;
        let m = Meta::of(&rustix::fs::fstat(&fd).map_err(errno)?);
        if m.kind == Kind::Symlink {
            return Ok(());
        }
        // fchmod does not take O_PATH descriptors; the descriptor's magic link names exactly the
        // inode resolved above (the kernel follows it to that inode, not to a path).
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode(mode))
            .map_err(|e| Self::annotate(&self.path.join(rel), errno(e)))
    }

    /// The names in directory `rel`, sorted (`.` and `..` left out).
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let fd = self.openat(rel, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&fd).map_err(errno)? {
            let e = e.map_err(errno)?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every entry under directory `rel` (not `rel` itself), parents before children, sorted by
    /// name; symlinks are reported, never followed.
    pub fn walk(&self, rel: &Path) -> io::Result<Vec<WalkEntry>> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(sub) = stack.pop() {
            let dir = rel.join(&sub);
            let mut children = Vec::new();
            for n in self.read_dir(&dir)? {
                let r = sub.join(&n);
                let meta = self.meta(&rel.join(&r))?.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("`{}` vanished", self.path.join(rel).join(&r).display()),
                    )
                })?;
                if meta.kind == Kind::Dir {
                    children.push(r.clone());
                }
                out.push(WalkEntry { rel: r, meta });
            }
            // Depth-first in name order.
            stack.extend(children.into_iter().rev());
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// Sets the owner of `rel` and everything below it, never following a symlink.
    pub fn chown_tree(&self, rel: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.chown(rel, uid, gid)?;
        if self.is_dir(rel)? {
            for e in self.walk(rel)? {
                self.chown(&rel.join(&e.rel), uid, gid)?;
            }
        }
        Ok(())
    }

    /// Removes `rel` (a file, symlink or whole directory tree) if it exists, never following a
    /// symlink.
    pub fn remove_all(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = self.split(rel)?;
        let Some(m) = self.meta(rel)? else { return Ok(()) };
        if m.kind == Kind::Dir {
            for n in self.read_dir(rel)? {
                self.remove_all(&rel.join(n))?;
            }
        }
        let dir = self.openat(parent, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        let flags = if m.kind == Kind::Dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        rustix::fs::unlinkat(&dir, name, flags).map_err(|e| Self::annotate(&self.path.join(rel), errno(e)))
    }

    /// Renames `from` to `to` (both under this root; `to` must not exist as a non-empty directory).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (fp, fnm) = self.split(from)?;
        let (tp, tnm) = self.split(to)?;
        let fd = self.openat(fp, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        let td = self.openat(tp, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        rustix::fs::renameat(&fd, fnm, &td, tnm).map_err(|e| Self::annotate(&self.path.join(from), errno(e)))
    }

    /// The target of the symlink `rel`.
    pub fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let fd = self.openat(rel, OFlags::PATH, 0)?;
        let t =
            rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| Self::annotate(&self.path.join(rel), errno(e)))?;
        Ok(PathBuf::from(OsStr::from_bytes(t.as_bytes())))
    }

    /// The descriptor of the root (for callers that need `*at` calls of their own).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A small file of an extracted image root file system, resolved as inside the image (see
/// [`Root::read_in_root`]: an image whose `/etc` is a symlink to a host path reads nothing of the
/// host); empty when missing, not a regular file or over 4 MiB.
pub fn read_image_file(rootfs: &Path, rel: &str) -> Vec<u8> {
    Root::open(rootfs).and_then(|r| r.read_in_root(Path::new(rel), 4 << 20)).ok().flatten().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    /// A tree with a "host" file outside it and symlinks pointing out and in.
    fn hostile() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host-secret");
        std::fs::write(&host, "secret\n").unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(root.join("dir/f"), "ok").unwrap();
        symlink(&host, root.join("out-file")).unwrap();
        symlink(d.path(), root.join("out-dir")).unwrap();
        symlink("dir", root.join("in-dir")).unwrap();
        symlink("dir/f", root.join("in-file")).unwrap();
        (d, root, host)
    }

    #[test]
    fn reads_inside_and_refuses_every_symlink() {
        let (_d, root, _host) = hostile();
        let r = Root::open(&root).unwrap();
        assert_eq!(r.read(Path::new("dir/f"), 10).unwrap(), b"ok");
        for p in ["out-file", "out-dir/host-secret", "in-dir/f", "in-file", "../host-secret", "/etc/passwd"] {
            let e = r.read(Path::new(p), 100).unwrap_err();
            assert!(!e.to_string().contains("secret\n"), "{e}");
            assert!(e.kind() != io::ErrorKind::NotFound, "{p}: {e}");
        }
        assert!(r.read(Path::new("dir/f"), 1).unwrap_err().to_string().contains("larger than 1 bytes"));
        assert_eq!(r.meta(Path::new("out-dir")).unwrap().unwrap().kind, Kind::Symlink);
        assert!(!r.is_dir(Path::new("in-dir")).unwrap());
        assert!(r.open_file(Path::new("dir")).is_err());
    }

    #[test]
    fn writes_replace_links_instead_of_writing_through_them() {
        let (_d, root, host) = hostile();
        let r = Root::open(&root).unwrap();
        r.write_file(Path::new("out-file"), b"x = 1\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "secret\n");
        assert_eq!(std::fs::read(root.join("out-file")).unwrap(), b"x = 1\n");
        // A hard link to a file is replaced, not written through.
        std::fs::hard_link(root.join("dir/f"), root.join("hard")).unwrap();
        r.write_file(Path::new("hard"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(root.join("dir/f")).unwrap(), b"ok");
        assert_eq!(std::fs::metadata(root.join("hard")).unwrap().permissions().mode() & 0o777, 0o600);
        // Through a symlinked parent: refused.
        assert!(r.write_file(Path::new("out-dir/host-secret"), b"pwned", 0o644).is_err());
        assert!(r.create_dir_all(Path::new("out-dir/sub"), 0o755).is_err());
        assert!(r.create_dir_all(Path::new("in-dir/sub"), 0o755).is_err());
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "secret\n");
        r.create_dir_all(Path::new("a/b/c"), 0o755).unwrap();
        assert!(root.join("a/b/c").is_dir());
    }

    #[test]
    fn chown_and_chmod_never_follow() {
        let (d, root, host) = hostile();
        let r = Root::open(&root).unwrap();
        let before = std::fs::metadata(&host).unwrap();
        let dir_before = std::fs::metadata(d.path()).unwrap();
        r.chmod(Path::new("out-file"), 0o4777).unwrap();
        r.chown_tree(Path::new(""), 12345, 12345).unwrap();
        let after = std::fs::metadata(&host).unwrap();
        assert_eq!(before.mode(), after.mode());
        assert_eq!(before.uid(), after.uid());
        assert_eq!(dir_before.uid(), std::fs::metadata(d.path()).unwrap().uid());
        // Root can chown; other users cannot (the test may run as either).
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(std::fs::metadata(root.join("dir/f")).unwrap().uid(), 12345);
            assert_eq!(std::fs::symlink_metadata(root.join("out-file")).unwrap().uid(), 12345);
        }
        r.chmod(Path::new("dir/f"), 0o600).unwrap();
        assert_eq!(std::fs::metadata(root.join("dir/f")).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn read_in_root_follows_links_inside_the_image_only() {
        let (d, root, _host) = hostile();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "ID=debian\n").unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        // An absolute link resolves inside the image, not on the host.
        std::fs::write(d.path().join("passwd"), "host\n").unwrap();
        symlink(d.path().join("passwd"), root.join("etc/passwd")).unwrap();
        let r = Root::open(&root).unwrap();
        assert_eq!(r.read_in_root(Path::new("etc/os-release"), 100).unwrap().unwrap(), b"ID=debian\n");
        assert_eq!(r.read_in_root(Path::new("etc/passwd"), 100).unwrap(), None);
        assert!(r.read_in_root(Path::new("out-file"), 100).unwrap().is_none());
        // An image whose whole /etc is a link to a host directory reads nothing of the host.
        let img = d.path().join("img");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(d.path().join("hostetc")).unwrap();
        std::fs::write(d.path().join("hostetc/passwd"), "root:x:0:0:host\n").unwrap();
        symlink(d.path().join("hostetc"), img.join("etc")).unwrap();
        assert_eq!(read_image_file(&img, "etc/passwd"), b"");
    }

    #[test]
    fn walk_reports_symlinks_without_following() {
        let (_d, root, _host) = hostile();
        let r = Root::open(&root).unwrap();
        let names: Vec<(String, Kind)> =
            r.walk(Path::new("")).unwrap().into_iter().map(|e| (e.rel.display().to_string(), e.meta.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("dir".into(), Kind::Dir),
                ("dir/f".into(), Kind::File),
                ("in-dir".into(), Kind::Symlink),
                ("in-file".into(), Kind::Symlink),
                ("out-dir".into(), Kind::Symlink),
                ("out-file".into(), Kind::Symlink),
            ]
        );
        assert!(Root::open(&root.join("out-dir")).is_err(), "a symlinked root is refused");
        assert!(r.open_dir(Path::new("out-dir")).is_err());
        r.remove_all(Path::new("out-dir")).unwrap();
        assert!(_d.path().join("host-secret").exists());
    }
}
