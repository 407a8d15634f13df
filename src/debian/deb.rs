//! `.deb` files read in Rust: the `ar` members `debian-binary`, `control.tar.*` and
//! `data.tar.{xz,zst,gz}`, the data streamed into a root directory under the same safe-extraction
//! rules as image layers (`oci::extract`). Maintainer scripts are never run.
//!
//! Rules, mirroring `oci::extract`: a `..` component is refused; parents are resolved through
//! symlinks the way the image will see them (absolute targets start at the root) and a path that
//! climbs out is refused; a relative symlink whose target climbs above the root is refused; a hard
//! link must point at an existing non-directory inside the root; devices and fifos are skipped.
//! As dpkg does, a directory entry whose path is a symlink to a directory keeps the symlink
//! (Debian's merged `/usr`: `bin -> usr/bin`). Owners and modes come from the tar headers and are
//! recorded in a [`MetaMap`] instead of being applied on the host, so extraction needs no root.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::error::{io_err, DebianError, Result};

/// How many symlinks one path may go through (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Owner and permission bits of one path of the root, as the package's tar header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including set-id and sticky bits (`0o7777`).
    pub mode: u32,
}

/// Root-relative path (`usr/bin/busybox`, `/`-separated, after resolving symlinked parents) →
/// its owner and mode. Paths not in the map are `0:0` with the mode found on disk.
pub type MetaMap = BTreeMap<String, FileMeta>;

/// What [`extract_deb`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractedDeb {
    /// The package's `control` file (its stanza, for dpkg's `status` file).
    pub control: String,
    /// Entries written.
    pub entries: u64,
    /// Devices and fifos skipped.
    pub skipped_special: u64,
}

/// Reads only the `control` file of a `.deb`.
pub fn read_control(deb: impl Read, package: &str) -> Result<String> {
    let mut found = None;
    walk_deb(deb, package, |member, r| {
        if member == Member::Control {
            found = Some(control_from_tar(r, package)?);
        }
        Ok(())
    })?;
    found.ok_or_else(|| bad_deb(package, "no control.tar member"))
}

/// Extracts the data of a `.deb` into `root` (created if missing), recording owners and modes in
/// `meta`. `package` names the package in every error. Maintainer scripts are not run.
pub fn extract_deb(deb: impl Read, package: &str, root: &Path, meta: &mut MetaMap) -> Result<ExtractedDeb> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let root = fs::canonicalize(root).map_err(io_err(root))?;
    let mut out = ExtractedDeb::default();
    let mut saw_data = false;
    walk_deb(deb, package, |member, r| {
        match member {
            Member::Control => out.control = control_from_tar(r, package)?,
            Member::Data => {
                saw_data = true;
                let mut w = RootWriter { root: &root, package, meta: &mut *meta, stats: &mut out };
                let mut ar = tar::Archive::new(r);
                let terr = |e: io::Error| bad_deb(package, &format!("data.tar: {e}"));
                for entry in ar.entries().map_err(terr)? {
                    let mut entry = entry.map_err(terr)?;
                    w.entry(&mut entry)?;
                }
            }
        }
        Ok(())
    })?;
    if !saw_data {
        return Err(bad_deb(package, "no data.tar member"));
    }
    Ok(out)
}

fn bad_deb(package: &str, reason: &str) -> DebianError {
    DebianError::BadDeb { package: package.to_string(), reason: reason.to_string() }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Member {
    Control,
    Data,
}

/// Walks the `ar` members in the order dpkg requires, handing each decompressed tar to `f`.
fn walk_deb(deb: impl Read, package: &str, mut f: impl FnMut(Member, &mut dyn Read) -> Result<()>) -> Result<()> {
    let mut ar = ar::Archive::new(BufReader::with_capacity(1 << 20, deb));
    let mut index = 0;
    let mut seen_control = false;
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.map_err(|e| bad_deb(package, &format!("not an ar archive: {e}")))?;
        let id = String::from_utf8_lossy(entry.header().identifier()).to_string();
        let name = id.trim_end_matches('/').to_string();
        index += 1;
        if index == 1 {
            if name != "debian-binary" {
                return Err(bad_deb(package, &format!("first member is `{name}`, not `debian-binary`")));
            }
            let mut v = String::new();
            entry
                .by_ref()
                .take(64)
                .read_to_string(&mut v)
                .map_err(|e| bad_deb(package, &format!("debian-binary: {e}")))?;
            if !v.starts_with("2.") {
                return Err(bad_deb(package, &format!("format `{}` is not 2.x", v.trim())));
            }
            continue;
        }
        if name.starts_with('_') {
            continue; // signatures and other reserved members
        }
        let (member, suffix) = if let Some(s) = name.strip_prefix("control.tar") {
            seen_control = true;
            (Member::Control, s)
        } else if let Some(s) = name.strip_prefix("data.tar") {
            if !seen_control {
                return Err(bad_deb(package, "data.tar comes before control.tar"));
            }
            (Member::Data, s)
        } else {
            return Err(bad_deb(package, &format!("unexpected member `{name}`")));
        };
        let mut r = decompressor(suffix, &mut entry)
            .ok_or_else(|| bad_deb(package, &format!("member `{name}`: unsupported compression")))?;
        f(member, &mut r)?;
        if member == Member::Data {
            return Ok(()); // anything after data.tar is ignored, as dpkg does
        }
    }
    if index == 0 {
        return Err(bad_deb(package, "empty or not an ar archive"));
    }
    Ok(())
}

fn decompressor<'a>(suffix: &str, r: &'a mut dyn Read) -> Option<Box<dyn Read + 'a>> {
    Some(match suffix {
        "" => Box::new(r),
        ".xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        ".gz" => Box::new(flate2::read::MultiGzDecoder::new(r)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(r).ok()?),
        _ => return None,
    })
}

fn control_from_tar(r: &mut dyn Read, package: &str) -> Result<String> {
    let mut ar = tar::Archive::new(r);
    let terr = |e: io::Error| bad_deb(package, &format!("control.tar: {e}"));
    for entry in ar.entries().map_err(terr)? {
        let mut e = entry.map_err(terr)?;
        let p = e.path().map_err(terr)?.into_owned();
        if p == Path::new("./control") || p == Path::new("control") {
            let mut s = String::new();
            e.by_ref().take(1 << 20).read_to_string(&mut s).map_err(terr)?;
            return Ok(s);
        }
    }
    Err(bad_deb(package, "control.tar has no `control` file"))
}

/// The components of an entry name: a leading `/` or `./` is dropped, `.` ignored, `..` refused.
pub(crate) fn clean_name(p: &Path) -> std::result::Result<Vec<OsString>, &'static str> {
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

/// The map key of a relative path.
pub(crate) fn key(comps: &[OsString]) -> String {
    comps.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// True if a relative symlink target, resolved lexically from directory `dir`, stays inside
/// the root. Absolute targets always do (the image's `/` is the root).
pub(crate) fn symlink_stays_inside(dir: &[OsString], target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth = dir.len();
    for c in target.components() {
        match c {
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

/// Resolves `comps` inside `root` following symlinks as the image will (absolute targets start at
/// the root); a path climbing above the root, a loop, or a non-directory on the way is refused
/// with the reason. Missing directories are created (mode 0755) when `create`, else `Ok(None)`.
/// Returns the resolved root-relative components. With `file_last`, the last component may be a
/// file (to find what a path names, e.g. `etc/os-release -> ../usr/lib/os-release`).
pub(crate) fn resolve_in_root(
    root: &Path,
    comps: &[OsString],
    create: bool,
    file_last: bool,
) -> std::result::Result<Option<Vec<OsString>>, ResolveError> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut queue: VecDeque<OsString> = comps.iter().cloned().collect();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            if stack.pop().is_none() {
                return Err(ResolveError::Unsafe("a symlink on its path leads above the root".into()));
            }
            continue;
        }
        let cur = root.join(stack.iter().collect::<PathBuf>()).join(&c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::Unsafe("too many symlinks on its path (a loop?)".into()));
                }
                let target = fs::read_link(&cur).map_err(ResolveError::Io)?;
                if target.is_absolute() {
                    stack.clear();
                }
                queue = crate::fs::symlink_walk_queue(&target, &mut queue);
            }
            Ok(m) if m.is_dir() => stack.push(c),
            Ok(_) if file_last && queue.is_empty() => {
                stack.push(c);
                return Ok(Some(stack));
            }
            Ok(_) => {
                let mut p: Vec<OsString> = stack.clone();
                p.push(c);
                return Err(ResolveError::Unsafe(format!("`{}` on its path is not a directory", key(&p))));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                fs::create_dir(&cur).map_err(ResolveError::Io)?;
                stack.push(c);
            }
            Err(e) => return Err(ResolveError::Io(e)),
        }
    }
    Ok(Some(stack))
}

/// Why [`resolve_in_root`] failed.
#[derive(Debug)]
pub(crate) enum ResolveError {
    Unsafe(String),
    Io(io::Error),
}

struct RootWriter<'a> {
    root: &'a Path,
    package: &'a str,
    meta: &'a mut MetaMap,
    stats: &'a mut ExtractedDeb,
}

impl RootWriter<'_> {
    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> DebianError {
        DebianError::UnsafeEntry { package: self.package.to_string(), entry: entry.to_string(), reason: reason.into() }
    }

    fn io(&self, entry: &str) -> impl FnOnce(io::Error) -> DebianError {
        let (package, entry) = (self.package.to_string(), entry.to_string());
        move |source| DebianError::Extract { package, entry, source }
    }

    fn resolve(&self, comps: &[OsString], create: bool, entry: &str) -> Result<Option<Vec<OsString>>> {
        resolve_in_root(self.root, comps, create, false).map_err(|e| match e {
            ResolveError::Unsafe(r) => self.unsafe_entry(entry, r),
            ResolveError::Io(e) => self.io(entry)(e),
        })
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<()> {
        let name_path = e.path().map_err(|err| bad_deb(self.package, &format!("data.tar: {err}")))?.into_owned();
        let name = name_path.display().to_string();
        let comps = clean_name(&name_path).map_err(|r| self.unsafe_entry(&name, r))?;
        if comps.iter().any(|c| c.to_str().is_none()) {
            return Err(self.unsafe_entry(&name, "its name is not UTF-8"));
        }
        let Some((base, parent)) = comps.split_last() else {
            return Ok(()); // the root itself ("./")
        };
        if base.to_string_lossy().starts_with(".wh.") {
            return Err(self.unsafe_entry(&name, "`.wh.` names are whiteouts in image layers"));
        }
        let h = e.header();
        let fm = FileMeta {
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
        };
        let kind = h.entry_type();
        match kind {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.stats.skipped_special += 1;
                return Ok(());
            }
            tar::EntryType::Directory => {
                // Follows a symlink in the last component too: dpkg keeps `bin -> usr/bin`.
                let rel = self.resolve(&comps, true, &name)?.expect("created");
                self.meta.insert(key(&rel), fm);
                self.stats.entries += 1;
                return Ok(());
            }
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse
            | tar::EntryType::Symlink
            | tar::EntryType::Link => {}
            _ => return Ok(()), // pax/GNU headers are consumed by the reader
        }
        let mut rel = self.resolve(parent, true, &name)?.expect("created");
        let dir = self.root.join(rel.iter().collect::<PathBuf>());
        let path = dir.join(base);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Err(self.unsafe_entry(&name, "it would replace a directory"));
            }
            Ok(_) => fs::remove_file(&path).map_err(self.io(&name))?,
            Err(_) => {}
        }
        let parent_rel = rel.clone();
        rel.push(base.clone());
        let k = key(&rel);
        match kind {
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(|err| bad_deb(self.package, &format!("data.tar: {err}")))?
                    .ok_or_else(|| self.unsafe_entry(&name, "symlink without a target"))?
                    .into_owned();
                if !symlink_stays_inside(&parent_rel, &target) {
                    return Err(self
                        .unsafe_entry(&name, format!("symlink target `{}` leads outside the root", target.display())));
                }
                std::os::unix::fs::symlink(&target, &path).map_err(self.io(&name))?;
                self.meta.insert(k, FileMeta { mode: 0o777, ..fm });
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(|err| bad_deb(self.package, &format!("data.tar: {err}")))?
                    .ok_or_else(|| self.unsafe_entry(&name, "hard link without a target"))?
                    .into_owned();
                let tcomps = clean_name(&target)
                    .map_err(|r| self.unsafe_entry(&name, format!("hard link target `{}`: {r}", target.display())))?;
                let Some((tbase, tparent)) = tcomps.split_last() else {
                    return Err(self.unsafe_entry(&name, "hard link to the root"));
                };
                let outside = || {
                    self.unsafe_entry(
                        &name,
                        format!("hard link target `{}` is not in the root (missing or outside)", target.display()),
                    )
                };
                let mut trel = self.resolve(tparent, false, &name)?.ok_or_else(outside)?;
                trel.push(tbase.clone());
                let tpath = self.root.join(trel.iter().collect::<PathBuf>());
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if m.is_dir() => {
                        return Err(
                            self.unsafe_entry(&name, format!("hard link target `{}` is a directory", target.display()))
                        )
                    }
                    Ok(_) => fs::hard_link(&tpath, &path).map_err(self.io(&name))?,
                    Err(_) => return Err(outside()),
                }
                let tm = self.meta.get(&key(&trel)).copied().unwrap_or(fm);
                self.meta.insert(k, tm);
            }
            _ => {
                // On disk the owner can always read and write it; the real mode is in `meta`.
                let disk_mode = if fm.mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(disk_mode)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(self.io(&name))?;
                io::copy(e, &mut f).map_err(self.io(&name))?;
                self.meta.insert(k, fm);
            }
        }
        self.stats.entries += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<OsString> {
        clean_name(Path::new(s)).unwrap()
    }

    #[test]
    fn clean_names() {
        assert_eq!(key(&comps("./usr/bin/")), "usr/bin");
        assert_eq!(key(&comps("/etc/./x")), "etc/x");
        assert!(comps("./").is_empty());
        assert!(clean_name(Path::new("a/../b")).is_err());
    }

    #[test]
    fn symlink_targets_inside_or_out() {
        let d = comps("usr/lib");
        assert!(symlink_stays_inside(&d, Path::new("../share/x")));
        assert!(symlink_stays_inside(&d, Path::new("../../etc/x")));
        assert!(!symlink_stays_inside(&d, Path::new("../../../etc/x")));
        assert!(symlink_stays_inside(&d, Path::new("/etc/passwd")));
        assert!(!symlink_stays_inside(&[], Path::new("..")));
        assert!(symlink_stays_inside(&[], Path::new("usr/bin")));
    }

    #[test]
    fn resolves_through_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("up")).unwrap();
        let r = |s: &str, c| resolve_in_root(&root, &comps(s), c, false);
        assert_eq!(key(&r("bin", false).unwrap().unwrap()), "usr/bin");
        assert_eq!(key(&r("abs/bin", false).unwrap().unwrap()), "usr/bin");
        assert!(r("missing/x", false).unwrap().is_none());
        assert_eq!(key(&r("bin/new", true).unwrap().unwrap()), "usr/bin/new");
        assert!(root.join("usr/bin/new").is_dir());
        assert!(matches!(r("up/x", true), Err(ResolveError::Unsafe(_))));
        fs::write(root.join("usr/f"), b"").unwrap();
        std::os::unix::fs::symlink("../../usr/f", root.join("usr/bin/l")).unwrap();
        assert!(matches!(r("bin/l", false), Err(ResolveError::Unsafe(_))));
        let got = resolve_in_root(&root, &comps("bin/l"), false, true).unwrap().unwrap();
        assert_eq!(key(&got), "usr/f");
    }
}
