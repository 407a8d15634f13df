//! `cbuild cache gc` for the sandbox scratch root: the build images' root file systems extracted
//! there (`rootfs/<digest>-s2`, shared by every cache on the machine and hundreds of MB each) and
//! extractions a killed build left half-done (`rootfs/.tmp-*`).
//!
//! An extraction's last use is the mtime of its `.cbuild-complete` marker (refreshed by every
//! action that runs on it). Nothing used within [`IN_USE`] is removed — longer than any sandbox
//! may run ([`super::sandbox::DEFAULT_TIMEOUT`]) — so a running build never loses its root.
//! Removal renames the directory away first, so a build starting meanwhile extracts a fresh one
//! instead of using a half-deleted tree.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What is never removed: anything used this recently.
pub const IN_USE: Duration = Duration::from_secs(super::sandbox::DEFAULT_TIMEOUT.as_secs() + 10 * 60);

/// What [`gc`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchReport {
    pub removed: usize,
    pub bytes_freed: u64,
    pub kept: usize,
    pub bytes_kept: u64,
}

struct Entry {
    path: PathBuf,
    last_use: SystemTime,
    bytes: u64,
}

/// Removes extractions unused for `older_than`, then, least recently used first, until the
/// extractions take at most `max_size` bytes — never one used within [`IN_USE`] of `now`.
pub fn gc(max_size: Option<u64>, older_than: Option<Duration>) -> std::io::Result<ScratchReport> {
    let root = super::sandbox::scratch_root().map_err(std::io::Error::other)?.join("rootfs");
    gc_dir(&root, SystemTime::now(), IN_USE, max_size, older_than)
}

fn gc_dir(
    root: &Path,
    now: SystemTime,
    in_use: Duration,
    max_size: Option<u64>,
    older_than: Option<Duration>,
) -> std::io::Result<ScratchReport> {
    let mut entries = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ScratchReport::default()),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".trash-") {
            // A removal another gc left unfinished.
            force_remove(&path);
            continue;
        }
        let marker = path.join(".cbuild-complete");
        let last_use = std::fs::metadata(&marker)
            .or_else(|_| std::fs::symlink_metadata(&path))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        entries.push(Entry { bytes: tree_bytes(&path), path, last_use });
    }
    let age = |e: &Entry| now.duration_since(e.last_use).unwrap_or_default();
    // Oldest first.
    entries.sort_by_key(|e| e.last_use);
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut report = ScratchReport::default();
    for e in &entries {
        let old = older_than.is_some_and(|d| age(e) > d);
        let over = max_size.is_some_and(|m| total > m);
        if age(e) > in_use && (old || over) {
            let trash = root.join(format!(".trash-{}-{}", std::process::id(), report.removed));
            if std::fs::rename(&e.path, &trash).is_ok() {
                force_remove(&trash);
                report.removed += 1;
                report.bytes_freed += e.bytes;
                total -= e.bytes;
                continue;
            }
        }
        report.kept += 1;
        report.bytes_kept += e.bytes;
    }
    Ok(report)
}

/// Bytes of the files below `p` (not following links).
fn tree_bytes(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// `rm -rf`, also of directories the extraction left without write permission (0555 `/proc`).
fn force_remove(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::remove_dir_all(p).is_ok() {
        return;
    }
    for e in walkdir::WalkDir::new(p).into_iter().filter_map(Result::ok) {
        if e.file_type().is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    let _ = std::fs::remove_dir_all(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extraction(root: &Path, name: &str, bytes: usize, used_ago: Duration, now: SystemTime) {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("usr/bin")).unwrap();
        std::fs::write(d.join("usr/bin/x"), vec![0u8; bytes]).unwrap();
        let m = d.join(".cbuild-complete");
        std::fs::write(&m, b"").unwrap();
        std::fs::File::options().write(true).open(&m).unwrap().set_modified(now - used_ago).unwrap();
    }

    #[test]
    fn keeps_what_is_in_use_and_trims_least_recently_used_first() {
        let t = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let h = Duration::from_secs(3600);
        extraction(t.path(), "a-s2", 1000, h * 48, now); // oldest
        extraction(t.path(), "b-s2", 1000, h * 5, now);
        extraction(t.path(), "c-s2", 1000, Duration::from_secs(60), now); // in use
                                                                          // A read-only directory inside must not stop the removal.
        std::fs::create_dir(t.path().join("a-s2/proc")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.path().join("a-s2/proc"), std::fs::Permissions::from_mode(0o555)).unwrap();

        let r = gc_dir(t.path(), now, h * 2, None, Some(h * 24)).unwrap();
        assert_eq!((r.removed, r.kept), (1, 2), "only `a` is older than a day");
        assert!(!t.path().join("a-s2").exists());
        // A budget of 1500 bytes: `b` goes (least recently used), `c` stays although over budget.
        let r = gc_dir(t.path(), now, h * 2, Some(1500), None).unwrap();
        assert_eq!((r.removed, r.bytes_freed, r.kept), (1, 1000, 1));
        assert!(t.path().join("c-s2").exists() && !t.path().join("b-s2").exists());
        let r = gc_dir(t.path(), now, h * 2, Some(0), Some(Duration::ZERO)).unwrap();
        assert_eq!(r.removed, 0, "in use: never removed");
        assert!(std::fs::read_dir(t.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".trash")));
    }
}
