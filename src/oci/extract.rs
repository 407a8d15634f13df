//! Safe extraction of image layers into a root directory (a build image's rootfs, `cbuild run`):
//! compression detected by magic, whiteouts applied in layer order, and every entry that would
//! reach outside the root refused with the layer digest and entry path. Not a sandbox: it trusts
//! that nothing else writes into the root while it runs.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::compress;
use super::error::{io_err, OciError, Result};
use crate::cas::BlobDir;
use crate::model::digest::Digest;

/// How many symlinks one path may go through (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Options of extraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Give entries the uid/gid of the tar (needs root); otherwise files belong to the caller.
    pub chown: bool,
}

impl Default for ExtractOptions {
    /// `chown` when running as root.
    fn default() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        ExtractOptions { chown: unsafe { libc::geteuid() } == 0 }
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
    fs::create_dir_all(root).map_err(io_err(root))?;
    let root = fs::canonicalize(root).map_err(io_err(root))?;
    let (_, r) = compress::decoder(BufReader::with_capacity(1 << 20, blob))
        .map_err(|source| OciError::TarRead { subject: layer.to_string(), source })?;
    let mut ar = tar::Archive::new(r);
    let mut x =
        Extractor { root: &root, layer, opts, done: HashSet::new(), dirs: Vec::new(), stats: ExtractStats::default() };
    let terr = |source| OciError::TarRead { subject: layer.to_string(), source };
    for entry in ar.entries().map_err(terr)? {
        let mut entry = entry.map_err(terr)?;
        x.entry(&mut entry)?;
    }
    x.finish_dirs()?;
    Ok(x.stats)
}

struct Extractor<'a> {
    root: &'a Path,
    layer: &'a Digest,
    opts: &'a ExtractOptions,
    /// Paths (relative) this layer wrote, and their ancestors: whiteouts and opaque markers only
    /// remove what lower layers put there.
    done: HashSet<PathBuf>,
    /// Directories whose mode and mtime are set after the layer (so they can be written into).
    dirs: Vec<(PathBuf, u32, u64)>,
    stats: ExtractStats,
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

impl Extractor<'_> {
    fn unsafe_entry(&self, entry: &Path, reason: impl Into<String>) -> OciError {
        OciError::UnsafeEntry { layer: self.layer.clone(), entry: entry.display().to_string(), reason: reason.into() }
    }

    fn io(&self, entry: &Path) -> impl FnOnce(io::Error) -> OciError + '_ {
        let entry = entry.display().to_string();
        move |source| OciError::Extract { layer: self.layer.clone(), entry, source }
    }

    /// Resolves the directory `comps` inside the root, following symlinks the way the image will
    /// see them (absolute targets start at the root); a path that climbs above the root is refused.
    /// Missing directories are created (mode 0755) when `create`, else `Ok(None)`.
    fn resolve_dir(&self, comps: &[OsString], create: bool, entry: &Path) -> Result<Option<PathBuf>> {
        let mut stack: Vec<OsString> = Vec::new();
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
                continue;
            }
            let cur = self.root.join(as_rel(&stack)).join(&c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(self.unsafe_entry(entry, "too many symlinks on its path (a loop?)"));
                    }
                    let target = fs::read_link(&cur).map_err(self.io(entry))?;
                    if target.is_absolute() {
                        stack.clear();
                    }
                    queue = crate::fs::symlink_walk_queue(&target, &mut queue);
                }
                Ok(m) if m.is_dir() => stack.push(c),
                Ok(_) => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!("`{}` on its path is not a directory", as_rel(&stack).join(&c).display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    fs::create_dir(&cur).map_err(self.io(entry))?;
                    stack.push(c);
                }
                Err(e) => return Err(self.io(entry)(e)),
            }
        }
        Ok(Some(self.root.join(as_rel(&stack))))
    }

    fn mark_done(&mut self, comps: &[OsString]) {
        for i in 1..=comps.len() {
            self.done.insert(as_rel(&comps[..i]));
        }
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
        let dir = self.resolve_dir(parent, true, &name)?.expect("created");
        let path = dir.join(base);
        let (uid, gid) = owner(e)
            .map_err(|source| OciError::TarRead { subject: format!("{}: {}", self.layer, name.display()), source })?;
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let mtime = e.header().mtime().unwrap_or(0);
        let existing = fs::symlink_metadata(&path).ok();
        // Replace what is there, except a directory by a directory (Docker/containerd semantics).
        if let Some(m) = &existing {
            let keep = m.is_dir() && kind == tar::EntryType::Directory;
            if !keep {
                let r = if m.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                r.map_err(self.io(&name))?;
            }
        }
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(&path).map_err(self.io(&name))?;
                }
                self.chown(&path, uid, gid, &name)?;
                self.dirs.push((path, mode, mtime));
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|source| OciError::TarRead {
                        subject: format!("{}: {}", self.layer, name.display()),
                        source,
                    })?
                    .ok_or_else(|| self.unsafe_entry(&name, "symlink without a target"))?;
                std::os::unix::fs::symlink(&target, &path).map_err(self.io(&name))?;
                self.chown(&path, uid, gid, &name)?;
                set_mtime_nofollow(&path, mtime);
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
                let tpath = tdir.map(|d| d.join(tbase));
                match tpath.as_ref().map(|p| (p, fs::symlink_metadata(p))) {
                    Some((p, Ok(m))) if !m.is_dir() => {
                        fs::hard_link(p, &path).map_err(self.io(&name))?;
                    }
                    Some((_, Ok(_))) => {
                        return Err(
                            self.unsafe_entry(&name, format!("hard link target `{}` is a directory", target.display()))
                        )
                    }
                    _ => {
                        return Err(self.unsafe_entry(
                            &name,
                            format!("hard link target `{}` is not in the root (missing or outside)", target.display()),
                        ))
                    }
                }
            }
            _ => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(self.io(&name))?;
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
        self.mark_done(&comps);
        self.stats.entries += 1;
        Ok(())
    }

    fn whiteout(&mut self, name: &Path, parent: &[OsString], base: &OsStr) -> Result<()> {
        self.stats.whiteouts += 1;
        let Some(dir) = self.resolve_dir(parent, false, name)? else {
            return Ok(()); // nothing below to hide
        };
        if base == OPAQUE {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(self.io(name)(e)),
            };
            for child in rd {
                let child = child.map_err(self.io(name))?;
                let rel = child.path().strip_prefix(self.root).map(Path::to_path_buf).unwrap_or_default();
                if !self.done.contains(&rel) {
                    remove_any(&child.path()).map_err(self.io(name))?;
                }
            }
            return Ok(());
        }
        let hidden = &base.as_bytes()[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden.starts_with(b".wh.") || hidden == b"." || hidden == b".." {
            return Ok(()); // aufs bookkeeping (.wh..wh.plnk, ...) or nonsense: nothing to remove
        }
        let target = dir.join(OsStr::from_bytes(hidden));
        let rel = target.strip_prefix(self.root).map(Path::to_path_buf).unwrap_or_default();
        if self.done.contains(&rel) {
            return Ok(());
        }
        match remove_any(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(name)(e)),
        }
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32, name: &Path) -> Result<()> {
        if self.opts.chown {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(self.io(name))?;
        }
        Ok(())
    }

    /// Sets directory modes and mtimes, deepest first (children change their parent's mtime).
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (p, mode, mtime) in dirs {
            // without root, keep the owner able to write later layers into it
            let mode = if self.opts.chown { mode } else { mode | 0o700 };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io_err(&p))?;
            if let Ok(f) = File::open(&p) {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                let _ = f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t));
            }
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

fn remove_any(p: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(p)?;
    if m.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

fn set_mtime_nofollow(p: &Path, mtime: u64) {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return;
    };
    let ts = libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 };
    let times = [ts, ts];
    // SAFETY: `c` is a valid NUL-terminated path and `times` points at two timespecs.
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
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
        fn fifo(mut self, name: &str) -> Self {
            let mut h = Self::header(name, tar::EntryType::Fifo, 0, 0o644);
            h.set_cksum();
            self.0.append(&h, &b""[..]).unwrap();
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
    fn clean_names() {
        let c = |s: &str| clean_name(Path::new(s)).map(|v| as_rel(&v));
        assert_eq!(c("./a/b/"), Ok(PathBuf::from("a/b")));
        assert_eq!(c("/a/./b"), Ok(PathBuf::from("a/b")));
        assert_eq!(c("./"), Ok(PathBuf::new()));
        assert!(c("a/../b").is_err());
        assert!(c("..").is_err());
    }
}
