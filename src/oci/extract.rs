//! Safe extraction of image layers into a root directory (a build image's rootfs, `cbuild run`):
//! compression detected by magic, whiteouts applied in layer order, and every entry that would
//! reach outside the root refused with the layer digest and entry path.
//!
//! Everything a layer contains is hostile, including the tree the layers before it wrote. So the
//! parents of an entry are resolved component by component (symlinks followed lexically, the way
//! the image will see them, an absolute target starting at the root), holding a descriptor of each
//! real directory; the entry is then created, replaced or removed with `*at` calls on that
//! descriptor and never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `O_EXCL`). Metadata set
//! after the entry is written (directory modes and mtimes at the end of a layer) goes to the inode
//! that was created: the directory is re-opened through [`crate::fs::confined`] rules (no symlink,
//! never above the root) and skipped unless it is still that inode. Not a sandbox: it assumes
//! nothing else writes into the root while it runs (even then, no call leaves the root or follows
//! a symlink; only the resulting tree could differ from the image).

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid};

use super::compress;
use super::error::{io_err, OciError, Result};
use crate::cas::BlobDir;
use crate::fs::confined::Root;
use crate::model::digest::Digest;

/// How many symlinks one path may go through (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// Every `openat2` below the root: never above it, never through a symlink (the same rule as
/// [`crate::fs::confined`]).
const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// Options of extraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Give entries the uid/gid of the tar (needs root); otherwise files belong to the caller.
    pub chown: bool,
    /// Make the tree fit to be shared with unprivileged users (the build image root that every
    /// sandbox mounts): set-uid and set-gid bits are dropped and write permission for group and
    /// other removed, from every file and directory (the sticky bit stays), so nothing in it gives
    /// another uid or is writable by anyone but its owner. Device nodes, FIFOs and sockets are never
    /// created, sanitized or not (they are counted in [`ExtractStats::skipped_special`]; so is a hard
    /// link to one already in the root). Off by default: the tree then keeps the modes of the layers.
    pub sanitize: bool,
    /// Added to every non-zero uid and gid of the layers when `chown` is set (root-owned files stay
    /// root's): roots a sandbox runs in are extracted with `crate::execution::sandbox::id_shift()`,
    /// so the stack user, which runs as a shifted host id, owns what it owned in the image and no
    /// local login user owns any of it. 0: ids as in the layers.
    pub id_shift: u32,
}

impl Default for ExtractOptions {
    /// `chown` when running as root; no `sanitize`, no `id_shift`.
    fn default() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        ExtractOptions { chown: unsafe { libc::geteuid() } == 0, sanitize: false, id_shift: 0 }
    }
}

/// What an extraction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries written (files, directories, links).
    pub entries: u64,
    /// Whiteouts applied (`.wh.name` and opaque markers).
    pub whiteouts: u64,
    /// Devices and fifos skipped (the caller may warn: a rootfs for an unprivileged sandbox has none).
    pub skipped_special: u64,
}

impl std::ops::AddAssign for ExtractStats {
    fn add_assign(&mut self, o: ExtractStats) {
        self.entries += o.entries;
        self.whiteouts += o.whiteouts;
        self.skipped_special += o.skipped_special;
    }
}

/// Extracts `layers` (bottom first) from `blobs` into `root` (created if missing). Each blob is
/// verified against its digest first.
pub fn extract_layers(blobs: &BlobDir, layers: &[Digest], root: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    let mut stats = ExtractStats::default();
    for d in layers {
        blobs.verify(d)?;
        let f = blobs.open_blob(d)?;
        stats += extract_layer(f, d, root, opts)?;
    }
    Ok(stats)
}

/// Extracts one layer read from `blob` (gzip, zstd or plain tar) into `root`; `layer` names it in
/// errors.
pub fn extract_layer(blob: impl Read, layer: &Digest, root: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    // `root` itself is the caller's choice (trusted); everything below it is not.
    fs::create_dir_all(root).map_err(io_err(root))?;
    let root = fs::canonicalize(root).map_err(io_err(root))?;
    let root = Root::open(&root).map_err(io_err(&root))?;
    let (_, r) = compress::decoder(BufReader::with_capacity(1 << 20, blob))
        .map_err(|source| OciError::TarRead { subject: layer.to_string(), source })?;
    let mut ar = tar::Archive::new(r);
    let mut x = Extractor {
        root: &root,
        layer,
        opts,
        done: HashSet::new(),
        dirs: Vec::new(),
        last_parent: None,
        stats: ExtractStats::default(),
    };
    let terr = |source| OciError::TarRead { subject: layer.to_string(), source };
    for entry in ar.entries().map_err(terr)? {
        let mut entry = entry.map_err(terr)?;
        x.entry(&mut entry)?;
    }
    x.finish_dirs()?;
    Ok(x.stats)
}

struct Extractor<'a> {
    root: &'a Root,
    layer: &'a Digest,
    opts: &'a ExtractOptions,
    /// Paths (relative) this layer wrote, and their ancestors, both as named and as resolved:
    /// whiteouts and opaque markers only remove what lower layers put there.
    done: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set after the layer (so they can be written into).
    dirs: Vec<PendingDir>,
    /// The parent resolved for the previous entry (tars list a directory's entries together), keyed
    /// by its name in the tar. Dropped whenever anything is removed or a symlink is created, the
    /// only changes that can make the name resolve elsewhere.
    last_parent: Option<(Vec<OsString>, Rc<Parent>)>,
    stats: ExtractStats,
}

/// A directory the layer created or re-declared, remembered by inode: its path is only a way to find
/// it again, and anything else found there at the end of the layer is left alone.
struct PendingDir {
    /// Below the root, through real directories only.
    rel: PathBuf,
    /// The tar entry, for messages.
    name: PathBuf,
    dev: u64,
    ino: u64,
    mode: u32,
    mtime: u64,
}

/// A directory of the root that entries are created in.
struct Parent {
    /// An `O_PATH` descriptor of it; `None` for the root itself.
    fd: Option<OwnedFd>,
    /// Its path below the root, through real directories only (the confined API resolves it).
    rel: PathBuf,
}

/// The components of an entry name: a leading `/` or `./` is dropped, `.` ignored, `..` refused.
fn clean_name(p: &Path) -> std::result::Result<Vec<OsString>, &'static str> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s.to_os_string()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("its path has a `..` component"),
            Component::Prefix(_) => return Err("its path has a prefix"),
        }
    }
    Ok(out)
}

fn as_rel(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

/// Opens `rel` below `dir` with `openat2`, confined and following no symlink (`rel` empty: `dir`).
fn open_beneath(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    Ok(rustix::fs::openat2(dir, rel, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty(), BENEATH)?)
}

/// The type of `name` in `dir`, not following it; `None` if it does not exist.
fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

fn ids(uid: u32, gid: u32) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
}

impl Extractor<'_> {
    fn unsafe_entry(&self, entry: &Path, reason: impl Into<String>) -> OciError {
        OciError::UnsafeEntry { layer: self.layer.clone(), entry: entry.display().to_string(), reason: reason.into() }
    }

    fn io(&self, entry: &Path) -> impl FnOnce(io::Error) -> OciError + '_ {
        let entry = entry.display().to_string();
        move |source| OciError::Extract { layer: self.layer.clone(), entry, source }
    }

    fn dirfd<'b>(&'b self, p: &'b Parent) -> BorrowedFd<'b> {
        p.fd.as_ref().map_or(self.root.as_fd(), |f| f.as_fd())
    }

    /// The permission bits an entry gets: the tar's, without set-id and group/other write bits
    /// when sanitizing.
    fn mode(&self, mode: u32) -> u32 {
        if self.opts.sanitize {
            mode & !0o6022
        } else {
            mode
        }
    }

    /// Resolves the directory `comps` inside the root, following symlinks the way the image will
    /// see them (absolute targets start at the root); a path that climbs above the root is refused.
    /// Missing directories are created (mode 0755) when `create`, else `Ok(None)`. Every step is an
    /// `*at` call on the descriptor of the directory before it, so nothing on the host is followed.
    fn resolve_dir(&mut self, comps: &[OsString], create: bool, entry: &Path) -> Result<Option<Rc<Parent>>> {
        if let Some((k, p)) = &self.last_parent {
            if k.as_slice() == comps {
                return Ok(Some(p.clone()));
            }
        }
        let mut stack: Vec<OsString> = Vec::new();
        // The descriptor of the directory `stack` names; `None` for the root.
        let mut cur: Option<OwnedFd> = None;
        let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == "." {
                continue;
            }
            if c == ".." {
                if stack.pop().is_none() {
                    return Err(self.unsafe_entry(entry, "a symlink on its path leads above the root"));
                }
                cur = match stack.is_empty() {
                    true => None,
                    false => Some(
                        open_beneath(self.root.as_fd(), &as_rel(&stack), OFlags::PATH | OFlags::DIRECTORY)
                            .map_err(self.io(entry))?,
                    ),
                };
                continue;
            }
            let dir = cur.as_ref().map_or(self.root.as_fd(), |f| f.as_fd());
            match kind_at(dir, &c).map_err(self.io(entry))? {
                Some(FileType::Symlink) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(self.unsafe_entry(entry, "too many symlinks on its path (a loop?)"));
                    }
                    let target =
                        rustix::fs::readlinkat(dir, c.as_os_str(), Vec::new()).map_err(|e| self.io(entry)(e.into()))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    if target.is_absolute() {
                        stack.clear();
                        cur = None;
                    }
                    queue = crate::fs::symlink_walk_queue(&target, &mut queue);
                }
                Some(FileType::Directory) => {
                    cur = Some(
                        open_beneath(dir, Path::new(&c), OFlags::PATH | OFlags::DIRECTORY).map_err(self.io(entry))?,
                    );
                    stack.push(c);
                }
                Some(_) => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!("`{}` on its path is not a directory", as_rel(&stack).join(&c).display()),
                    ))
                }
                None => {
                    if !create {
                        return Ok(None);
                    }
                    rustix::fs::mkdirat(dir, c.as_os_str(), Mode::from_raw_mode(0o755))
                        .map_err(|e| self.io(entry)(e.into()))?;
                    cur = Some(
                        open_beneath(dir, Path::new(&c), OFlags::PATH | OFlags::DIRECTORY).map_err(self.io(entry))?,
                    );
                    stack.push(c);
                }
            }
        }
        let p = Rc::new(Parent { fd: cur, rel: as_rel(&stack) });
        self.last_parent = Some((comps.to_vec(), p.clone()));
        Ok(Some(p))
    }

    fn mark_done(&mut self, path: &Path) {
        for a in path.ancestors() {
            if !a.as_os_str().is_empty() {
                self.done.insert(a.to_path_buf());
            }
        }
    }

    /// Removes `name` from `parent` (a directory with everything below it), never following a
    /// symlink.
    fn remove(&mut self, parent: &Parent, name: &OsStr, is_dir: bool, entry: &Path) -> Result<()> {
        self.last_parent = None;
        let r = if is_dir {
            self.root.remove_all(&parent.rel.join(name))
        } else {
            rustix::fs::unlinkat(self.dirfd(parent), name, AtFlags::empty()).map_err(io::Error::from)
        };
        r.map_err(self.io(entry))
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<()> {
        let name =
            e.path().map_err(|source| OciError::TarRead { subject: self.layer.to_string(), source })?.into_owned();
        let comps = clean_name(&name).map_err(|r| self.unsafe_entry(&name, r))?;
        let kind = e.header().entry_type();
        let Some((base, parent)) = comps.split_last() else {
            return Ok(()); // the root itself ("./")
        };
        let base_str = base.to_string_lossy();
        if base_str.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&name, parent, base);
        }
        match kind {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.stats.skipped_special += 1;
                return Ok(());
            }
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link => {}
            // global/extended headers are consumed by the tar reader; anything else is not a file
            _ => return Ok(()),
        }
        let Some(dir) = self.resolve_dir(parent, true, &name)? else {
            return Err(self.unsafe_entry(&name, "its parent directory could not be created"));
        };
        let rel = dir.rel.join(base);
        let (uid, gid) = owner(e)
            .map_err(|source| OciError::TarRead { subject: format!("{}: {}", self.layer, name.display()), source })?;
        let shift = |id: u32| if id == 0 { 0 } else { id.saturating_add(self.opts.id_shift).min(u32::MAX - 2) };
        let (uid, gid) = (shift(uid), shift(gid));
        let mode = self.mode(e.header().mode().unwrap_or(0o644) & 0o7777);
        let mtime = e.header().mtime().unwrap_or(0);
        let existing = kind_at(self.dirfd(&dir), base).map_err(self.io(&name))?;
        // Replace what is there, except a directory by a directory (Docker/containerd semantics).
        let keep = existing == Some(FileType::Directory) && kind == tar::EntryType::Directory;
        if let Some(t) = existing.filter(|_| !keep) {
            self.remove(&dir, base, t == FileType::Directory, &name)?;
        }
        let pd = self.dirfd(&dir);
        match kind {
            tar::EntryType::Directory => {
                if !keep {
                    rustix::fs::mkdirat(pd, base.as_os_str(), Mode::from_raw_mode(0o755))
                        .map_err(|e| self.io(&name)(e.into()))?;
                }
                let fd = open_beneath(pd, Path::new(base), OFlags::PATH | OFlags::DIRECTORY).map_err(self.io(&name))?;
                if self.opts.chown {
                    let (u, g) = ids(uid, gid);
                    rustix::fs::chownat(&fd, "", u, g, AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.io(&name)(e.into()))?;
                }
                let st = rustix::fs::fstat(&fd).map_err(|e| self.io(&name)(e.into()))?;
                self.dirs.push(PendingDir {
                    rel: rel.clone(),
                    name: name.clone(),
                    dev: st.st_dev,
                    ino: st.st_ino,
                    mode,
                    mtime,
                });
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|source| OciError::TarRead {
                        subject: format!("{}: {}", self.layer, name.display()),
                        source,
                    })?
                    .ok_or_else(|| self.unsafe_entry(&name, "symlink without a target"))?;
                rustix::fs::symlinkat(target.as_ref(), pd, base.as_os_str()).map_err(|e| self.io(&name)(e.into()))?;
                if self.opts.chown {
                    let (u, g) = ids(uid, gid);
                    rustix::fs::chownat(pd, base.as_os_str(), u, g, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.io(&name)(e.into()))?;
                }
                let _ = rustix::fs::utimensat(pd, base.as_os_str(), &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW);
                // a new symlink can change where a name resolves
                self.last_parent = None;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(|source| OciError::TarRead {
                        subject: format!("{}: {}", self.layer, name.display()),
                        source,
                    })?
                    .ok_or_else(|| self.unsafe_entry(&name, "hard link without a target"))?
                    .into_owned();
                let tcomps = clean_name(&target)
                    .map_err(|r| self.unsafe_entry(&name, format!("hard link target `{}`: {r}", target.display())))?;
                let Some((tbase, tparent)) = tcomps.split_last() else {
                    return Err(self.unsafe_entry(&name, "hard link to the root"));
                };
                let tdir = self.resolve_dir(tparent, false, &name)?;
                let tkind = match &tdir {
                    Some(t) => kind_at(self.dirfd(t), tbase).map_err(self.io(&name))?,
                    None => None,
                };
                match (tdir, tkind) {
                    // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never its target
                    (Some(t), Some(FileType::RegularFile | FileType::Symlink)) => {
                        rustix::fs::linkat(
                            self.dirfd(&t),
                            tbase.as_os_str(),
                            self.dirfd(&dir),
                            base.as_os_str(),
                            AtFlags::empty(),
                        )
                        .map_err(|e| self.io(&name)(e.into()))?;
                    }
                    (_, Some(FileType::Directory)) => {
                        return Err(
                            self.unsafe_entry(&name, format!("hard link target `{}` is a directory", target.display()))
                        )
                    }
                    (_, Some(_)) => {
                        // a device or fifo already in the root: not linked, like the entry itself
                        self.stats.skipped_special += 1;
                        return Ok(());
                    }
                    (_, None) => {
                        return Err(self.unsafe_entry(
                            &name,
                            format!("hard link target `{}` is not in the root (missing or outside)", target.display()),
                        ))
                    }
                }
            }
            _ => {
                // O_EXCL after the removal above: a new inode, never one planted by a lower layer
                let fd = rustix::fs::openat2(
                    pd,
                    base.as_os_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                    BENEATH,
                )
                .map_err(|e| self.io(&name)(e.into()))?;
                let mut f = File::from(fd);
                io::copy(e, &mut f).map_err(self.io(&name))?;
                if self.opts.chown {
                    std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(self.io(&name))?;
                }
                // after chown, which clears set-id bits
                f.set_permissions(fs::Permissions::from_mode(mode)).map_err(self.io(&name))?;
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                let _ = f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t));
            }
        }
        self.mark_done(&as_rel(&comps));
        self.mark_done(&rel);
        self.stats.entries += 1;
        Ok(())
    }

    fn whiteout(&mut self, name: &Path, parent: &[OsString], base: &OsStr) -> Result<()> {
        self.stats.whiteouts += 1;
        let Some(dir) = self.resolve_dir(parent, false, name)? else {
            return Ok(()); // nothing below to hide
        };
        if base == OPAQUE {
            for child in self.root.read_dir(&dir.rel).map_err(self.io(name))? {
                let rel = dir.rel.join(&child);
                if !self.done.contains(&rel) {
                    let is_dir = kind_at(self.dirfd(&dir), &child).map_err(self.io(name))? == Some(FileType::Directory);
                    self.remove(&dir, &child, is_dir, name)?;
                }
            }
            return Ok(());
        }
        let hidden = OsStr::from_bytes(&base.as_bytes()[WHITEOUT_PREFIX.len()..]);
        if hidden.is_empty() || hidden.as_bytes().starts_with(b".wh.") || hidden == "." || hidden == ".." {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk, ...) or nonsense: nothing to remove
        }
        if self.done.contains(&dir.rel.join(hidden)) {
            return Ok(());
        }
        match kind_at(self.dirfd(&dir), hidden).map_err(self.io(name))? {
            Some(t) => self.remove(&dir, hidden, t == FileType::Directory, name),
            None => Ok(()),
        }
    }

    /// Sets directory modes and mtimes, deepest first (children change their parent's mtime). Each
    /// directory is re-opened by its resolved path without following anything and must still be
    /// the inode the layer created: a later entry may have replaced it, or a parent, by a symlink
    /// (to the host), and then the path is no longer that directory, which is gone from the tree.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        // stable: a directory declared twice gets the mode of its last entry
        dirs.sort_by(|a, b| b.rel.cmp(&a.rel));
        for d in dirs {
            let fd = match open_beneath(self.root.as_fd(), &d.rel, OFlags::RDONLY | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)) =>
                {
                    continue
                }
                Err(e) => return Err(self.io(&d.name)(e)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| self.io(&d.name)(e.into()))?;
            if (st.st_dev, st.st_ino) != (d.dev, d.ino) {
                continue;
            }
            // without root, keep the owner able to write later layers into it
            let mode = if self.opts.chown { d.mode } else { d.mode | 0o700 };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| self.io(&d.name)(e.into()))?;
            let _ = rustix::fs::futimens(&fd, &timestamps(d.mtime));
        }
        Ok(())
    }
}

/// uid/gid of an entry, PAX records overriding the header (ids above 2097151).
fn owner<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<(u32, u32)> {
    let mut uid = e.header().uid().unwrap_or(0) as u32;
    let mut gid = e.header().gid().unwrap_or(0) as u32;
    if let Some(exts) = e.pax_extensions()? {
        for x in exts.flatten() {
            let v = x.value().ok().and_then(|v| v.parse::<u32>().ok());
            match (x.key(), v) {
                (Ok("uid"), Some(v)) => uid = v,
                (Ok("gid"), Some(v)) => gid = v,
                _ => {}
            }
        }
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A raw tar built with the tar crate's low-level API, so malicious names are possible.
    struct RawTar(tar::Builder<Vec<u8>>);

    impl RawTar {
        fn new() -> RawTar {
            RawTar(tar::Builder::new(Vec::new()))
        }
        fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            // write the name bytes raw: set_path refuses `..`, which is the point here
            let n = name.as_bytes();
            h.as_old_mut().name[..n.len()].copy_from_slice(n);
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(315_532_800);
            h
        }
        fn file(mut self, name: &str, content: &[u8]) -> Self {
            let mut h = Self::header(name, tar::EntryType::Regular, content.len() as u64, 0o644);
            h.set_cksum();
            self.0.append(&h, content).unwrap();
            self
        }
        fn dir(mut self, name: &str, mode: u32) -> Self {
            let mut h = Self::header(name, tar::EntryType::Directory, 0, mode);
            h.set_cksum();
            self.0.append(&h, &b""[..]).unwrap();
            self
        }
        fn link(mut self, name: &str, kind: tar::EntryType, target: &str) -> Self {
            let mut h = Self::header(name, kind, 0, 0o777);
            let t = target.as_bytes();
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            h.set_cksum();
            self.0.append(&h, &b""[..]).unwrap();
            self
        }
        fn fifo(self, name: &str) -> Self {
            self.special(name, tar::EntryType::Fifo)
        }
        fn special(mut self, name: &str, kind: tar::EntryType) -> Self {
            let mut h = Self::header(name, kind, 0, 0o666);
            h.set_device_major(1).unwrap();
            h.set_device_minor(1).unwrap();
            h.set_cksum();
            self.0.append(&h, &b""[..]).unwrap();
            self
        }
        fn file_mode(mut self, name: &str, content: &[u8], mode: u32) -> Self {
            let mut h = Self::header(name, tar::EntryType::Regular, content.len() as u64, mode);
            h.set_cksum();
            self.0.append(&h, content).unwrap();
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn d(n: u8) -> Digest {
        Digest::of_bytes(&[n])
    }

    fn extract(root: &Path, layers: &[Vec<u8>]) -> Result<ExtractStats> {
        let mut s = ExtractStats::default();
        for (i, l) in layers.iter().enumerate() {
            s += extract_layer(&l[..], &d(i as u8), root, &ExtractOptions::default())?;
        }
        Ok(s)
    }

    fn extract_with(root: &Path, layers: &[Vec<u8>], opts: ExtractOptions) -> Result<ExtractStats> {
        let mut s = ExtractStats::default();
        for (i, l) in layers.iter().enumerate() {
            s += extract_layer(&l[..], &d(i as u8), root, &opts)?;
        }
        Ok(s)
    }

    fn sanitized() -> ExtractOptions {
        ExtractOptions { sanitize: true, ..ExtractOptions::default() }
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        (t, root, outside)
    }

    #[test]
    fn extracts_files_dirs_links_and_modes() {
        let (_t, root, _) = setup();
        let l = RawTar::new()
            .dir("./etc/", 0o750)
            .file("./etc/conf", b"c")
            .file("/abs/leading/slash", b"a")
            .link("etc/sym", tar::EntryType::Symlink, "conf")
            .link("etc/hard", tar::EntryType::Link, "etc/conf")
            .fifo("dev-fifo")
            .bytes();
        let s = extract(&root, &[l]).unwrap();
        assert_eq!(s, ExtractStats { entries: 5, whiteouts: 0, skipped_special: 1 });
        assert_eq!(fs::read(root.join("etc/conf")).unwrap(), b"c");
        assert_eq!(fs::read(root.join("abs/leading/slash")).unwrap(), b"a");
        assert_eq!(fs::read_link(root.join("etc/sym")).unwrap(), Path::new("conf"));
        assert_eq!(fs::metadata(root.join("etc/conf")).unwrap().nlink(), 2);
        let m = fs::metadata(root.join("etc")).unwrap();
        // (without root the owner keeps rwx: 0o750 | 0o700 is still 0o750)
        assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        assert_eq!(m.mtime(), 315_532_800);
        assert!(!root.join("dev-fifo").exists());
    }

    #[test]
    fn compressed_layers_are_detected() {
        let (_t, root, _) = setup();
        let raw = RawTar::new().file("a", b"1").bytes();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            io::Write::write_all(&mut e, &raw).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(&raw[..], 3).unwrap();
        extract(&root, &[gz, zs]).unwrap();
        assert_eq!(fs::read(root.join("a")).unwrap(), b"1");
    }

    #[test]
    fn whiteouts_remove_lower_entries_only() {
        let (_t, root, _) = setup();
        let lower =
            RawTar::new().file("d/old", b"o").file("d/keep/x", b"x").file("gone", b"g").file("e/f", b"f").bytes();
        let upper = RawTar::new()
            .file("d/-new", b"n") // sorts before the opaque marker: must survive it
            .file("d/.wh..wh..opq", b"")
            .file(".wh.gone", b"")
            .file("e/.wh.f", b"")
            .file("nothere/.wh.x", b"")
            .bytes();
        let s = extract(&root, &[lower, upper]).unwrap();
        assert_eq!(s.whiteouts, 4);
        assert!(!root.join("gone").exists());
        assert!(!root.join("e/f").exists() && root.join("e").is_dir());
        assert!(!root.join("d/old").exists() && !root.join("d/keep").exists());
        assert_eq!(fs::read(root.join("d/-new")).unwrap(), b"n");
        assert!(!root.join("nothere").exists(), "a whiteout does not create its directory");
        assert!(!root.join("d/.wh..wh..opq").exists());
    }

    #[test]
    fn replaces_entries_of_lower_layers() {
        let (_t, root, _) = setup();
        let lower = RawTar::new()
            .file("x", b"file")
            .dir("y/", 0o755)
            .file("y/z", b"z")
            .link("s", tar::EntryType::Symlink, "x")
            .bytes();
        let upper = RawTar::new().dir("x/", 0o755).file("y", b"now a file").file("s", b"not a link").bytes();
        extract(&root, &[lower, upper]).unwrap();
        assert!(root.join("x").is_dir());
        assert_eq!(fs::read(root.join("y")).unwrap(), b"now a file");
        assert_eq!(fs::read(root.join("s")).unwrap(), b"not a link");
    }

    fn refused(layers: &[Vec<u8>], root: &Path, entry: &str) -> String {
        let err = extract(root, layers).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OciError::UnsafeEntry { .. }), "{msg}");
        assert!(msg.contains(&format!("entry `{entry}`")), "{msg}");
        assert!(msg.contains("layer `sha256:"), "{msg}");
        msg
    }

    #[test]
    fn refuses_dotdot_paths() {
        let (_t, root, outside) = setup();
        refused(&[RawTar::new().file("../outside/pwned", b"x").bytes()], &root, "../outside/pwned");
        refused(&[RawTar::new().file("a/../../outside/pwned", b"x").bytes()], &root, "a/../../outside/pwned");
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn symlink_with_dotdot_escape_then_write_is_refused() {
        let (_t, root, outside) = setup();
        let l1 = RawTar::new().link("esc", tar::EntryType::Symlink, "../outside").bytes();
        let l2 = RawTar::new().file("esc/pwned", b"x").bytes();
        refused(&[l1.clone(), l2], &root, "esc/pwned");
        assert!(!outside.join("pwned").exists());
        // absolute target climbing with `..`
        let (_t, root, outside) = setup();
        let l1 = RawTar::new().link("esc", tar::EntryType::Symlink, "/../../../../../../outside").bytes();
        let l2 = RawTar::new().file("esc/pwned", b"x").bytes();
        refused(&[l1, l2], &root, "esc/pwned");
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn dotdot_inside_a_symlink_chain_is_refused() {
        let (_t, root, outside) = setup();
        // a -> b/c ; b -> . ; c -> ../.. : following a climbs out only two links later
        let l = RawTar::new()
            .link("a", tar::EntryType::Symlink, "b/c")
            .link("b", tar::EntryType::Symlink, ".")
            .link("c", tar::EntryType::Symlink, "../..")
            .file("a/outside/pwned", b"x")
            .bytes();
        refused(&[l], &root, "a/outside/pwned");
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let (_t, root, outside) = setup();
        // The image's `/x` is `<root>/x`, not the host's: writing through it stays in the root.
        let abs = outside.to_str().unwrap().to_string();
        let l1 = RawTar::new().link("abs", tar::EntryType::Symlink, &abs).bytes();
        let l2 = RawTar::new().file("abs/pwned", b"x").bytes();
        extract(&root, &[l1, l2]).unwrap();
        assert!(!outside.join("pwned").exists());
        assert_eq!(fs::read(root.join(abs.trim_start_matches('/')).join("pwned")).unwrap(), b"x");
    }

    #[test]
    fn relative_symlink_parents_are_followed_inside_the_root() {
        let (_t, root, _) = setup();
        // usrmerge: /bin -> usr/bin; a later layer writing bin/tool lands in usr/bin
        let l1 = RawTar::new().dir("usr/bin/", 0o755).link("bin", tar::EntryType::Symlink, "usr/bin").bytes();
        let l2 = RawTar::new().file("bin/tool", b"t").bytes();
        extract(&root, &[l1, l2]).unwrap();
        assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"t");
        assert!(fs::symlink_metadata(root.join("bin")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn symlink_loops_are_refused() {
        let (_t, root, _) = setup();
        let l = RawTar::new()
            .link("a", tar::EntryType::Symlink, "b")
            .link("b", tar::EntryType::Symlink, "a")
            .file("a/x", b"")
            .bytes();
        let msg = refused(&[l], &root, "a/x");
        assert!(msg.contains("loop"), "{msg}");
    }

    #[test]
    fn hard_links_outside_or_missing_are_refused() {
        let (_t, root, _) = setup();
        refused(&[RawTar::new().link("passwd", tar::EntryType::Link, "/etc/passwd").bytes()], &root, "passwd");
        refused(&[RawTar::new().link("p", tar::EntryType::Link, "../../../../etc/passwd").bytes()], &root, "p");
        let l1 = RawTar::new().link("etc", tar::EntryType::Symlink, "../../../../etc").bytes();
        let l2 = RawTar::new().link("p", tar::EntryType::Link, "etc/passwd").bytes();
        refused(&[l1, l2], &root, "p");
        let l = RawTar::new().dir("d/", 0o755).link("h", tar::EntryType::Link, "d").bytes();
        refused(&[l], &root, "h");
        // but a hard link to a file of a lower layer, by absolute name, is fine
        let (_t, root, _) = setup();
        let l1 = RawTar::new().file("etc/passwd", b"root").bytes();
        let l2 = RawTar::new().link("copy", tar::EntryType::Link, "/etc/passwd").bytes();
        extract(&root, &[l1, l2]).unwrap();
        assert_eq!(fs::read(root.join("copy")).unwrap(), b"root");
    }

    #[test]
    fn writing_through_a_file_is_refused() {
        let (_t, root, _) = setup();
        let l = RawTar::new().file("f", b"").file("f/x", b"").bytes();
        let msg = refused(&[l], &root, "f/x");
        assert!(msg.contains("not a directory"), "{msg}");
    }

    #[test]
    fn extract_layers_verifies_blobs() {
        let (t, root, _) = setup();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let dg = blobs.put_bytes(&RawTar::new().file("ok", b"1").bytes()).unwrap();
        extract_layers(&blobs, std::slice::from_ref(&dg), &root, &ExtractOptions::default()).unwrap();
        assert!(root.join("ok").exists());
        fs::write(blobs.path(&dg), RawTar::new().file("evil", b"1").bytes()).unwrap();
        assert!(extract_layers(&blobs, &[dg], &root, &ExtractOptions::default()).is_err());
        assert!(!root.join("evil").exists());
    }

    #[test]
    fn sanitize_drops_setid_bits_of_files() {
        let (_t, root, _) = setup();
        let l = RawTar::new()
            .file_mode("bin/su", b"x", 0o4755)
            .file_mode("bin/wall", b"x", 0o2755)
            .file_mode("bin/both", b"x", 0o6711)
            .link("bin/su-again", tar::EntryType::Link, "bin/su")
            .bytes();
        extract_with(&root, std::slice::from_ref(&l), sanitized()).unwrap();
        assert_eq!(mode_of(&root.join("bin/su")), 0o755);
        assert_eq!(mode_of(&root.join("bin/wall")), 0o755);
        assert_eq!(mode_of(&root.join("bin/both")), 0o711);
        assert_eq!(mode_of(&root.join("bin/su-again")), 0o755);
        // without it, the image's modes are kept (digests of trees built from it do not change)
        let (_t, root, _) = setup();
        extract_with(&root, &[l], ExtractOptions::default()).unwrap();
        assert_eq!(mode_of(&root.join("bin/su")), 0o4755);
    }

    #[test]
    fn sanitize_removes_group_and_world_write() {
        let (_t, root, _) = setup();
        let lower = RawTar::new().dir("tmp/", 0o1777).dir("shared/", 0o2777).bytes();
        let upper = RawTar::new().dir("shared/", 0o2777).file_mode("shared/f", b"x", 0o666).dir("g/", 0o775).bytes();
        extract_with(&root, &[lower, upper], sanitized()).unwrap();
        assert_eq!(mode_of(&root.join("tmp")), 0o1755, "the sticky bit stays");
        assert_eq!(mode_of(&root.join("shared")), 0o755);
        assert_eq!(mode_of(&root.join("shared/f")), 0o644);
        assert_eq!(mode_of(&root.join("g")), 0o755);
    }

    #[test]
    fn sanitize_skips_device_nodes_without_error() {
        let (_t, root, _) = setup();
        let l = RawTar::new()
            .special("dev/mem", tar::EntryType::Char)
            .special("dev/sda", tar::EntryType::Block)
            .fifo("dev/fifo")
            .file("dev/ok", b"")
            .link("dev/mem-link", tar::EntryType::Link, "dev/mem")
            .bytes();
        let r = extract_with(&root, std::slice::from_ref(&l), sanitized());
        // the hard link names a device that was never created: refused like any missing target
        assert!(matches!(r, Err(OciError::UnsafeEntry { .. })), "{r:?}");
        let l = RawTar::new()
            .special("dev/mem", tar::EntryType::Char)
            .special("dev/sda", tar::EntryType::Block)
            .fifo("dev/fifo")
            .file("dev/ok", b"")
            .bytes();
        let (_t, root, _) = setup();
        let s = extract_with(&root, &[l], sanitized()).unwrap();
        assert_eq!(s, ExtractStats { entries: 1, whiteouts: 0, skipped_special: 3 });
        assert_eq!(fs::read_dir(root.join("dev")).unwrap().count(), 1);
    }

    #[test]
    fn hard_link_to_a_device_already_in_the_root_is_skipped() {
        let (_t, root, _) = setup();
        fs::create_dir_all(&root).unwrap();
        // a FIFO some earlier tool left in the root (a device would need root to make)
        let c = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let l = RawTar::new().link("again", tar::EntryType::Link, "fifo").bytes();
        let s = extract_with(&root, &[l], sanitized()).unwrap();
        assert_eq!(s.skipped_special, 1);
        assert!(fs::symlink_metadata(root.join("again")).is_err());
    }

    #[test]
    fn finish_dirs_skips_a_directory_replaced_by_a_symlink() {
        let (t, root, outside) = setup();
        let before = fs::metadata(&outside).unwrap();
        // the same inode check, without a tar: the directory of a pending entry is swapped
        fs::create_dir_all(root.join("x")).unwrap();
        let r = Root::open(&root).unwrap();
        let layer = d(0);
        let opts = ExtractOptions::default();
        let mut x = Extractor {
            root: &r,
            layer: &layer,
            opts: &opts,
            done: HashSet::new(),
            dirs: Vec::new(),
            last_parent: None,
            stats: ExtractStats::default(),
        };
        let m = fs::metadata(root.join("x")).unwrap();
        let pending = |rel: &str| PendingDir {
            rel: rel.into(),
            name: rel.into(),
            dev: m.dev(),
            ino: m.ino(),
            mode: 0o6777,
            mtime: 1,
        };
        x.dirs.push(pending("x"));
        x.dirs.push(pending("y"));
        // (moved away rather than removed: its inode number stays in use, so `y` cannot reuse it)
        fs::rename(root.join("x"), root.join("kept")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("x")).unwrap();
        fs::create_dir(root.join("y")).unwrap(); // another inode at a pending path
        x.finish_dirs().unwrap();
        let after = fs::metadata(&outside).unwrap();
        assert_eq!((before.mode(), before.mtime(), before.ctime()), (after.mode(), after.mtime(), after.ctime()));
        assert_ne!(mode_of(&root.join("y")), 0o6777);
        assert_ne!(mode_of(&root.join("kept")), 0o6777);
        drop(t);
    }

    #[test]
    fn clean_names() {
        let c = |s: &str| clean_name(Path::new(s)).map(|v| as_rel(&v));
        assert_eq!(c("./a/b/"), Ok(PathBuf::from("a/b")));
        assert_eq!(c("/a/./b"), Ok(PathBuf::from("a/b")));
        assert_eq!(c("./"), Ok(PathBuf::new()));
        assert!(c("a/../b").is_err());
        assert!(c("..").is_err());
    }
}
