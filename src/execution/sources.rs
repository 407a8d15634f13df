//! Workspace sources as the scheduler and the runners share them: the stamp of a source when it was
//! hashed, and the path a runner reads it from. Hashing and checking them is the scheduler's.

use std::hash::BuildHasher;
use std::path::PathBuf;

use crate::fs::stat::FileStat;
use crate::model::digest::Blake3;

/// Every workspace source of a build: its blake3 and how it looked when it was hashed, by
/// workspace-relative path. One sorted list holding each path once (issue 23: at 100,000 files two
/// maps keyed by their own copies of every path took ≈ 29 MB of a peak of 136 MiB).
#[derive(Default)]
pub struct Sources {
    /// Sorted by path, no duplicates.
    entries: Vec<SourceEntry>,
    /// Positions in `entries` by a hash of the path, made on the first lookup (4 bytes a source).
    /// Keys look every file up once or twice per action: a binary search compared the long
    /// common prefixes of a service's paths 14 times each (issue 23, no-op).
    index: std::sync::OnceLock<hashbrown::HashTable<u32>>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").field("entries", &self.entries).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SourceEntry {
    path: Box<str>,
    digest: Blake3,
    /// `None` for a kept link that vanished between the check and its stamp.
    stamp: Option<SourceStamp>,
}

impl Sources {
    /// Room for `n` sources (allocated once: at 100,000 files doubling left 3.5 MB unused).
    pub(super) fn with_capacity(n: usize) -> Sources {
        Sources { entries: Vec::with_capacity(n), ..Default::default() }
    }

    /// The blake3 of the source `path` (a kept link's: of its target text).
    pub fn digest(&self, path: &str) -> Option<&Blake3> {
        self.find(path).map(|e| &e.digest)
    }

    /// Its blake3 and stamp in one lookup ([`Sources::digest`] and [`Sources::stamp`]).
    pub fn get(&self, path: &str) -> Option<(&Blake3, Option<&SourceStamp>)> {
        self.find(path).map(|e| (&e.digest, e.stamp.as_ref()))
    }

    /// How the source `path` looked when it was hashed.
    pub fn stamp(&self, path: &str) -> Option<&SourceStamp> {
        self.find(path).and_then(|e| e.stamp.as_ref())
    }

    /// Every source's path and stamp, in order.
    pub fn stamps(&self) -> impl Iterator<Item = (&str, Option<&SourceStamp>)> {
        self.entries.iter().map(|e| (&*e.path, e.stamp.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, path: &str) -> Option<&SourceEntry> {
        let index = self.index.get_or_init(|| {
            let mut t = hashbrown::HashTable::with_capacity(self.entries.len());
            for (i, e) in self.entries.iter().enumerate() {
                t.insert_unique(self.hasher.hash_one(&*e.path), i as u32, |&j| {
                    self.hasher.hash_one(&*self.entries[j as usize].path)
                });
            }
            t
        });
        index
            .find(self.hasher.hash_one(path), |&i| *self.entries[i as usize].path == *path)
            .map(|&i| &self.entries[i as usize])
    }

    /// Appends a source; paths must come in strictly increasing order.
    pub(super) fn push(&mut self, path: String, digest: Blake3, stamp: Option<SourceStamp>) {
        debug_assert!(self.entries.last().is_none_or(|e| *e.path < *path), "sources out of order at `{path}`");
        self.entries.push(SourceEntry { path: path.into_boxed_str(), digest, stamp });
        self.index.take();
    }

    /// Sets the digest of the source at `index` (in push order).
    pub(super) fn set_digest(&mut self, index: usize, digest: Blake3) {
        self.entries[index].digest = digest;
    }

    /// Path and stamp of the source at `index` (in push order).
    pub(super) fn at(&self, index: usize) -> (&str, Option<&SourceStamp>) {
        let e = &self.entries[index];
        (&e.path, e.stamp.as_ref())
    }
}

/// What a source looked like when it was hashed: the executor compares it after an action ran and
/// refuses to store a result whose sources changed meanwhile (Bazel's "file modified during the
/// build"): a runner reads sources by path after the key was made, so an edit in between would
/// otherwise be stored, and uploaded, under the old content's key. ctime moves on every content,
/// mode or owner change and cannot be set back by a user, so an edit reverted with the old mtime is
/// caught too.
///
/// One is kept per source for the whole build, so it is compact (issue 23: 64 bytes instead of
/// 96 for every file of a 100,000-file layer): times as whole seconds and nanoseconds (the same
/// instants as `FileStat`'s i128 nanoseconds, exactly), the link text (rare) behind one pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStamp {
    size: u64,
    mtime_s: i64,
    ctime_s: i64,
    ino: u64,
    dev: u64,
    mtime_ns: u32,
    ctime_ns: u32,
    mode: u32,
    /// Stamped from the link itself (a kept link), not from what it points to.
    link: bool,
    /// The link text when the source is a symlink (kept or followed).
    link_target: Option<Box<PathBuf>>,
}

/// (seconds, nanoseconds) of a time in nanoseconds; exact for every time a file system reports
/// (seconds saturate only beyond ±2.9e11 years).
fn split_ns(t: i128) -> (i64, u32) {
    let s = t.div_euclid(1_000_000_000);
    (s.clamp(i64::MIN as i128, i64::MAX as i128) as i64, t.rem_euclid(1_000_000_000) as u32)
}

impl SourceStamp {
    pub(super) fn of(md: &FileStat, link: bool, link_target: Option<PathBuf>) -> SourceStamp {
        let (mtime_s, mtime_ns) = split_ns(md.mtime_ns);
        let (ctime_s, ctime_ns) = split_ns(md.ctime_ns);
        SourceStamp {
            size: md.size,
            mtime_s,
            ctime_s,
            ino: md.ino,
            dev: md.dev,
            mtime_ns,
            ctime_ns,
            mode: md.mode,
            link,
            link_target: link_target.map(Box::new),
        }
    }

    /// The stamp of `path` now, taken the same way.
    pub(super) fn now(&self, path: &std::path::Path) -> Option<SourceStamp> {
        let md = if self.link { FileStat::lstat(path) } else { FileStat::stat(path) };
        let target = match &self.link_target {
            Some(_) => Some(std::fs::read_link(path).ok()?),
            None => None,
        };
        md.ok().map(|m| SourceStamp::of(&m, self.link, target))
    }

    /// The link text when the source is a symlink (what an app copy of it holds).
    pub fn link_target(&self) -> Option<&std::path::Path> {
        self.link_target.as_deref().map(PathBuf::as_path)
    }

    /// True if stamped from the link itself (a kept link), not from what it points to.
    pub fn is_kept_link(&self) -> bool {
        self.link
    }

    /// Whether the file (or, for a followed link, its target) has an executable bit.
    pub fn executable(&self) -> bool {
        self.mode & 0o111 != 0
    }

    /// The stat this stamp was taken from (exactly: times are split without loss).
    pub fn file_stat(&self) -> FileStat {
        let ns = |s: i64, n: u32| s as i128 * 1_000_000_000 + n as i128;
        FileStat {
            size: self.size,
            mtime_ns: ns(self.mtime_s, self.mtime_ns),
            ctime_ns: ns(self.ctime_s, self.ctime_ns),
            ino: self.ino,
            dev: self.dev,
            mode: self.mode,
        }
    }
}

/// The path a runner reads the workspace source `rel` from: `root/rel` with every symlink resolved
/// (so readers that refuse symlinks, like the tar writer's `O_NOFOLLOW`, read a link that stays
/// inside as before). `scheduler::hash_sources` refused every source leading outside before any action ran;
/// this applies the same rule again at read time, so a link changed during the build is not
/// followed out either.
pub fn resolve_source(root: &std::path::Path, rel: &str) -> Result<PathBuf, String> {
    resolve_source_in(root, &canonical_root(root)?, rel)
}

/// The canonical path of the workspace root, for [`resolve_source_in`].
pub fn canonical_root(root: &std::path::Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(root).map_err(|e| format!("cannot resolve the workspace root `{}`: {e}", root.display()))
}

/// [`resolve_source`] with the root's canonical path resolved once for many sources.
pub fn resolve_source_in(root: &std::path::Path, canon_root: &std::path::Path, rel: &str) -> Result<PathBuf, String> {
    let full = root.join(rel);
    let resolved = std::fs::canonicalize(&full).map_err(|e| format!("reading source `{rel}`: {e}"))?;
    if !resolved.starts_with(canon_root) {
        return Err(format!(
            "source `{rel}` leads outside the workspace (to `{}`); cbuild does not follow it",
            shown(&resolved)
        ));
    }
    Ok(resolved)
}

/// A path for a message, control characters escaped.
pub(super) fn shown(p: &std::path::Path) -> String {
    p.to_string_lossy()
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_compact_and_exact() {
        assert!(std::mem::size_of::<SourceStamp>() <= 64, "{}", std::mem::size_of::<SourceStamp>());
        let md = |m: i128, c: i128| FileStat { size: 1, mtime_ns: m, ctime_ns: c, ino: 2, dev: 3, mode: 0o100755 };
        for (m, c) in [(0, 0), (1_700_000_000_123_456_789, 1_700_000_000_999_999_999), (-1, -1_000_000_001)] {
            let a = SourceStamp::of(&md(m, c), false, None);
            assert_eq!(a, SourceStamp::of(&md(m, c), false, None));
            assert_ne!(a, SourceStamp::of(&md(m + 1, c), false, None));
            assert_ne!(a, SourceStamp::of(&md(m, c - 1), false, None));
            assert_eq!(split_ns(m).0 as i128 * 1_000_000_000 + split_ns(m).1 as i128, m);
            assert_eq!(a.file_stat(), md(m, c));
        }
        let l = SourceStamp::of(&md(5, 5), true, Some(PathBuf::from("t")));
        assert_eq!(l.link_target(), Some(std::path::Path::new("t")));
        assert!(l.is_kept_link() && l.executable());
    }

    #[test]
    fn sources_find_each_path_and_nothing_else() {
        let md = FileStat { size: 1, mtime_ns: 7, ctime_ns: 8, ino: 2, dev: 3, mode: 0o100644 };
        let mut s = Sources::default();
        for (i, p) in ["a", "a/b", "a0", "b/c d", "é"].into_iter().enumerate() {
            s.push(p.to_string(), Blake3([i as u8; 32]), (i != 2).then(|| SourceStamp::of(&md, false, None)));
        }
        s.set_digest(4, Blake3([9; 32]));
        assert_eq!(s.len(), 5);
        assert_eq!(s.digest("a/b"), Some(&Blake3([1; 32])));
        assert_eq!(s.digest("é"), Some(&Blake3([9; 32])));
        assert!(s.stamp("a0").is_none() && s.digest("a0").is_some());
        assert!(s.stamp("b/c d").is_some_and(|st| !st.executable()));
        for missing in ["", "a/", "b", "a/b/c", "z"] {
            assert!(s.digest(missing).is_none() && s.stamp(missing).is_none(), "{missing}");
        }
    }
}
