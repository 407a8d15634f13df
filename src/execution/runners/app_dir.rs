//! The writable `/workspace` of a `build` phase, kept per target between builds and brought up to
//! date in place.
//!
//! The lifecycle gives every build a fresh copy of the app. Copying thousands of files per build
//! made a one-file edit cost as much as the app's size (BENCHMARKS.md: inode allocation was ~40 %
//! of an edit's profile). Here the previous build's copy is reconciled instead: an entry is kept
//! only if it is what a fresh copy would put there — same source content and mode, and untouched
//! since cbuild wrote it (same inode, size, mtime and *ctime*: any write, chmod, chown or
//! replacement by a buildpack changes the ctime, which nobody can set back). Everything else,
//! including whatever the last build added, is removed and copied again. So the buildpack sees
//! exactly the tree a fresh copy would give; only the cost differs.
//!
//! A directory per target under the sandbox scratch root (the sandbox user must reach it):
//! `apps/<key>/{workspace/, state.json, lock, owner}`. `lock` is an exclusive `flock` held for the
//! whole build; a second build of the same target at the same time gets a fresh directory. The
//! state is removed before the tree is touched and written after, so an interrupted update is
//! a full copy next time, never a trusted half-done tree.

use crate::execution::ActionError;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::execution::sandbox;

/// What one app entry must be: a file copied from `src` (its identity covers content and mode),
/// a symlink, or a directory (besides those every entry's parents are: e.g. where a genrule's
/// outputs go).
pub enum Want {
    File { src: PathBuf, id: String, mode: Option<u32> },
    Symlink { target: PathBuf },
    Dir,
}

impl Want {
    /// The file another action's output `path` gives: its CAS blob, 0755 or 0644 from its
    /// executable bit (which its digest text in keys carries).
    pub fn of_output(
        action: &crate::model::action::ActionId,
        path: &str,
        deps: &BTreeMap<crate::model::action::ActionId, std::sync::Arc<crate::model::action::ActionOutput>>,
        cas: &crate::cas::BlobDir,
    ) -> Result<Want, ActionError> {
        let Some(crate::model::action::ActionOutput::Files { files }) = deps.get(action).map(|o| o.as_ref()) else {
            return Err(ActionError::internal(format!("`{path}` is not an output")));
        };
        let f = files.get(path).ok_or_else(|| ActionError::internal(format!("output `{path}` missing")))?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        Ok(Want::File { src: cas.path(&f.digest), id: format!("cas:{}:{mode:o}", f.digest), mode: Some(mode) })
    }
}

#[derive(Serialize, Deserialize, PartialEq, Eq, Clone, Debug)]
struct FileState {
    id: String,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    mode: u32,
}

#[derive(Serialize, Deserialize, Default)]
struct State {
    version: u32,
    uid: u32,
    gid: u32,
    epoch: u64,
    files: BTreeMap<String, FileState>,
}

const STATE_VERSION: u32 = 1;
/// App dirs unused for this long, or whose cache directory is gone, are removed.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A locked, persistent app directory (released on drop).
pub struct AppDir {
    pub workspace: PathBuf,
    state: PathBuf,
    _lock: fs::File,
}

/// Counts of one reconciliation (for tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub kept: usize,
    pub copied: usize,
    pub removed: usize,
}

fn ns(sec: i64, nsec: i64) -> i128 {
    sec as i128 * 1_000_000_000 + nsec as i128
}

fn file_state(id: &str, md: &fs::Metadata) -> FileState {
    FileState {
        id: id.to_string(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: ns(md.mtime(), md.mtime_nsec()),
        ctime_ns: ns(md.ctime(), md.ctime_nsec()),
        mode: md.mode(),
    }
}

fn apps_root() -> Result<PathBuf, ActionError> {
    let root = sandbox::scratch_root().map_err(|e| ActionError::of(&e))?.join("apps");
    fs::create_dir_all(&root).map_err(|e| format!("creating `{}`: {e}", root.display()))?;
    let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o711));
    Ok(root)
}

/// `path` opened and locked exclusively, or `None` if another process holds the lock.
fn try_lock(path: &Path) -> io::Result<Option<fs::File>> {
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

impl AppDir {
    /// The app dir of `label` for `cache`, locked; `None` if another build holds it. It belongs to
    /// the cache's [`instance`](crate::cache::Cache::instance): a removed or cleaned cache dir
    /// never finds its predecessor's app dirs (they are swept).
    pub fn open(cache: &crate::cache::Cache, label: &str) -> Result<Option<AppDir>, ActionError> {
        let cache_dir = cache.dir();
        let instance = cache.instance().map_err(|e| ActionError::of(&e))?;
        let root = apps_root()?;
        sweep_once(&root);
        let key = blake3::hash(format!("{}\0{instance}\0{label}", cache_dir.display()).as_bytes()).to_hex();
        let dir = root.join(&key[..32]);
        fs::create_dir_all(&dir).map_err(|e| format!("creating `{}`: {e}", dir.display()))?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o711));
        let Some(lock) = try_lock(&dir.join("lock")).map_err(|e| format!("locking `{}`: {e}", dir.display()))? else {
            return Ok(None);
        };
        let _ = fs::write(dir.join("owner"), cache_dir.as_os_str().as_encoded_bytes());
        let _ = fs::write(dir.join(crate::cache::INSTANCE_FILE), instance);
        // The lock file's mtime is the sweep's clock: used now.
        let _ = lock.set_modified(std::time::SystemTime::now());
        let workspace = dir.join("workspace");
        fs::create_dir_all(&workspace).map_err(|e| format!("creating `{}`: {e}", workspace.display()))?;
        Ok(Some(AppDir { workspace, state: dir.join("state.json"), _lock: lock }))
    }

    /// Brings the workspace to exactly `want` (see the module docs).
    pub fn reconcile(
        &self,
        want: &BTreeMap<String, Want>,
        uid: u32,
        gid: u32,
        epoch: u64,
    ) -> Result<Reconciled, ActionError> {
        let prev: State = fs::read(&self.state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|s: &State| s.version == STATE_VERSION && s.uid == uid && s.gid == gid && s.epoch == epoch)
            .unwrap_or_default();
        match fs::remove_file(&self.state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ActionError::env(format!("removing `{}`: {e}", self.state.display()))),
        }
        let (counts, files) = populate(&self.workspace, want, &prev.files, uid, gid, epoch)?;
        let state = State { version: STATE_VERSION, uid, gid, epoch, files };
        let bytes = serde_json::to_vec(&state).map_err(|e| ActionError::of(&e))?;
        crate::fs::write_atomic(&self.state, &bytes).map_err(|e| ActionError::of(&e))?;
        Ok(counts)
    }
}

/// App dirs a detect reconciled in this build, kept locked for the build phase of the same target
/// (see `cnb_common::materialize_app`). Released when the build's context is dropped.
#[derive(Default)]
pub struct HeldApps(std::sync::Mutex<BTreeMap<String, (blake3::Hash, AppDir)>>);

impl HeldApps {
    /// Keeps `dir` (reconciled to the app with fingerprint `fp`) for `label`'s next phase.
    pub fn put(&self, label: &str, fp: blake3::Hash, dir: AppDir) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(label.to_string(), (fp, dir));
    }
    pub(super) fn take(&self, label: &str) -> Option<(blake3::Hash, AppDir)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(label)
    }
}

/// Fills a fresh directory with `want` (the fallback when the target's app dir is busy).
pub fn populate_fresh(
    dir: &Path,
    want: &BTreeMap<String, Want>,
    uid: u32,
    gid: u32,
    epoch: u64,
) -> Result<(), ActionError> {
    populate(dir, want, &BTreeMap::new(), uid, gid, epoch).map(|_| ())
}

/// Makes `dir` hold exactly `want`, keeping entries `prev` vouches for; returns the counts and the
/// state of every file now there.
fn populate(
    dir: &Path,
    want: &BTreeMap<String, Want>,
    prev: &BTreeMap<String, FileState>,
    uid: u32,
    gid: u32,
    epoch: u64,
) -> Result<(Reconciled, BTreeMap<String, FileState>), ActionError> {
    let io_err = |p: &Path, e: io::Error| format!("app dir `{}`: {e}", p.display());
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for (rel, w) in want {
        if matches!(w, Want::Dir) {
            dirs.insert(rel.clone());
        }
        let mut p = rel.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if !dirs.insert(p.to_string()) {
                break;
            }
        }
    }
    let mut counts = Reconciled::default();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut files: BTreeMap<String, FileState> = BTreeMap::new();

    // 1. Remove what a fresh copy would not have; remember what may stay.
    let mut it = walkdir::WalkDir::new(dir).min_depth(1).into_iter();
    while let Some(e) = it.next() {
        let e = e.map_err(|e| format!("app dir `{}`: {e}", dir.display()))?;
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path()).to_string_lossy().into_owned();
        let ft = e.file_type();
        let md = e.path().symlink_metadata().map_err(|err| io_err(e.path(), err))?;
        let keep = if ft.is_dir() {
            dirs.contains(&rel)
        } else if ft.is_symlink() {
            matches!(want.get(&rel), Some(Want::Symlink { target }) if fs::read_link(e.path()).ok().as_ref() == Some(target))
                && md.uid() == uid
        } else if ft.is_file() {
            match (want.get(&rel), prev.get(&rel)) {
                (Some(Want::File { id, .. }), Some(st)) => st == &file_state(id, &md) && md.uid() == uid,
                _ => false,
            }
        } else {
            false
        };
        if keep {
            if !ft.is_dir() {
                kept.insert(rel.clone());
                if let (Some(Want::File { id, .. }), true) = (want.get(&rel), ft.is_file()) {
                    files.insert(rel, file_state(id, &md));
                }
                counts.kept += 1;
            }
            continue;
        }
        if ft.is_dir() {
            it.skip_current_dir();
            fs::remove_dir_all(e.path()).map_err(|err| io_err(e.path(), err))?;
        } else {
            fs::remove_file(e.path()).map_err(|err| io_err(e.path(), err))?;
        }
        counts.removed += 1;
    }

    // 2. Copy what is missing; files get the SOURCE_DATE_EPOCH mtime and the build user.
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for d in &dirs {
        let p = dir.join(d);
        if !p.is_dir() {
            fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
        }
    }
    for (rel, w) in want {
        if kept.contains(rel) || matches!(w, Want::Dir) {
            continue;
        }
        let dst = dir.join(rel);
        match w {
            Want::Dir => {}
            Want::Symlink { target } => {
                std::os::unix::fs::symlink(target, &dst).map_err(|e| io_err(&dst, e))?;
                let _ = std::os::unix::fs::lchown(&dst, Some(uid), Some(gid));
            }
            Want::File { src, id, mode } => {
                // One descriptor for the new file (never an existing entry: step 1 removed it):
                // content, mode, mtime and owner set through it, and its state read from it.
                let copy_err = |e: io::Error| format!("copying `{}`: {e}", src.display());
                let mut from = fs::File::open(src).map_err(copy_err)?;
                let mode = match mode {
                    Some(m) => *m,
                    None => from.metadata().map_err(copy_err)?.permissions().mode() & 0o7777,
                };
                let mut to = {
                    use std::os::unix::fs::OpenOptionsExt;
                    fs::File::options()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(&dst)
                        .map_err(|e| io_err(&dst, e))?
                };
                io::copy(&mut from, &mut to).map_err(copy_err)?;
                to.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| io_err(&dst, e))?;
                to.set_modified(when).map_err(|e| io_err(&dst, e))?;
                std::os::unix::fs::fchown(&to, Some(uid), Some(gid)).map_err(|e| io_err(&dst, e))?;
                let md = to.metadata().map_err(|e| io_err(&dst, e))?;
                files.insert(rel.clone(), file_state(id, &md));
            }
        }
        counts.copied += 1;
    }

    // 3. Directories as a fresh copy has them: the build user's, 0755, the epoch mtime (deepest
    //    first, so setting a child's mtime does not disturb its parent's).
    for d in dirs.iter().rev().map(|d| dir.join(d)).chain([dir.to_path_buf()]) {
        std::os::unix::fs::lchown(&d, Some(uid), Some(gid)).map_err(|e| io_err(&d, e))?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).map_err(|e| io_err(&d, e))?;
        let f = fs::File::open(&d).map_err(|e| io_err(&d, e))?;
        let _ = f.set_modified(when);
    }
    Ok((counts, files))
}

/// Once per process: removes app dirs whose cache is gone (its directory removed, or made again or
/// cleaned since: another [`instance`](crate::cache::Cache::instance)) or that were not used for
/// [`UNUSED_FOR`] (skipping any a build holds).
fn sweep_once(root: &Path) {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = fs::read_dir(root) else { return };
        let now = std::time::SystemTime::now();
        let instance =
            |p: &Path| fs::read_to_string(p.join(crate::cache::INSTANCE_FILE)).ok().map(|s| s.trim().to_string());
        for e in entries.flatten() {
            let dir = e.path();
            let owner =
                fs::read(dir.join("owner")).ok().map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()));
            let gone = owner.as_ref().is_some_and(|o| {
                let mine = instance(&dir);
                mine.is_none() || instance(o) != mine
            });
            let used = fs::metadata(dir.join("lock")).and_then(|m| m.modified()).ok();
            let stale = used.is_some_and(|t| now.duration_since(t).unwrap_or_default() > UNUSED_FOR);
            if !(gone || stale) {
                continue;
            }
            if let Ok(Some(_lock)) = try_lock(&dir.join("lock")) {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (u32, u32) {
        // SAFETY: getuid/getgid cannot fail.
        unsafe { (libc::getuid(), libc::getgid()) }
    }

    fn want_files(src: &Path, names: &[&str]) -> BTreeMap<String, Want> {
        names
            .iter()
            .map(|n| {
                let p = src.join(n);
                let id = format!("{}", blake3::hash(&fs::read(&p).unwrap()));
                (n.to_string(), Want::File { src: p, id, mode: None })
            })
            .collect()
    }

    fn tree(dir: &Path) -> BTreeMap<String, String> {
        walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .flatten()
            .map(|e| {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                let md = e.path().symlink_metadata().unwrap();
                let body = if md.is_file() {
                    String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned()
                } else {
                    String::new()
                };
                (rel, format!("{:o} {} {body}", md.mode(), md.mtime()))
            })
            .collect()
    }

    #[test]
    fn reconcile_gives_what_a_fresh_copy_gives_and_copies_only_changes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        for (n, body) in [("a/b/one.txt", "1"), ("a/two.txt", "2"), ("three.txt", "3"), ("four.txt", "4")] {
            fs::write(src.join(n), body).unwrap();
        }
        let names = ["a/b/one.txt", "a/two.txt", "three.txt", "four.txt"];
        let lock_dir = t.path().join("app");
        fs::create_dir_all(lock_dir.join("workspace")).unwrap();
        let app = AppDir {
            workspace: lock_dir.join("workspace"),
            state: lock_dir.join("state.json"),
            _lock: fs::File::create(lock_dir.join("lock")).unwrap(),
        };
        let (uid, gid) = me();
        let r = app.reconcile(&want_files(&src, &names), uid, gid, 315532800).unwrap();
        assert_eq!(r, Reconciled { kept: 0, copied: 4, removed: 0 });

        // What a build does to its workspace: writes into one file in place (mtime restored),
        // adds files and a directory, deletes one, chmods one.
        let ws = &app.workspace;
        let f = ws.join("a/two.txt");
        fs::write(&f, "changed").unwrap();
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(315532800))
            .unwrap();
        fs::write(ws.join("public.txt"), "new").unwrap();
        fs::create_dir_all(ws.join("node_modules/x")).unwrap();
        fs::remove_file(ws.join("three.txt")).unwrap();
        fs::set_permissions(ws.join("four.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        // And the developer edits one source.
        fs::write(src.join("a/b/one.txt"), "1 edited").unwrap();

        let want = want_files(&src, &names);
        let r = app.reconcile(&want, uid, gid, 315532800).unwrap();
        // Kept: nothing but... every file was touched one way or another.
        assert_eq!(r.kept, 0, "{r:?}");
        let fresh = t.path().join("fresh");
        fs::create_dir_all(&fresh).unwrap();
        populate_fresh(&fresh, &want, uid, gid, 315532800).unwrap();
        assert_eq!(tree(ws), tree(&fresh));

        // Untouched since: everything is kept, nothing copied.
        let r = app.reconcile(&want, uid, gid, 315532800).unwrap();
        assert_eq!(r, Reconciled { kept: 4, copied: 0, removed: 0 });
        assert_eq!(tree(ws), tree(&fresh));

        // A lost state file (an interrupted update) means nothing is trusted.
        fs::remove_file(&app.state).unwrap();
        let r = app.reconcile(&want, uid, gid, 315532800).unwrap();
        assert_eq!(r, Reconciled { kept: 0, copied: 4, removed: 4 });
        // Another SOURCE_DATE_EPOCH too.
        let r = app.reconcile(&want, uid, gid, 1).unwrap();
        assert_eq!(r.kept, 0);
    }
}
