//! What a process read from the file system, each path stamped just before it was read: the
//! inputs of `cbuild build`'s no-op record (`cli::noop`). Off unless [`start`]ed (one atomic load
//! per [`note`] then); no policy lives here.
//!
//! A [`Stamp`] is taken *before* the read: a change after it (during the build) makes the stamp
//! differ from the file's next one, so a record never vouches for content it did not see.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::stat::FileStat;

/// A path's metadata as a build saw it: `lstat` of the path itself (`link`), or `stat` through a
/// symlink plus the link's text (a retargeted or replaced link is another file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub link: bool,
    pub st: FileStat,
    pub link_target: Option<PathBuf>,
}

impl Stamp {
    /// The stamp of `path` now: `lstat` if `link`, else `stat` (and the link text if the path is a
    /// symlink). `Ok(None)` if nothing is there.
    pub fn take(path: &Path, link: bool) -> io::Result<Option<Stamp>> {
        let l = match FileStat::lstat(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let is_link = l.mode & libc::S_IFMT == libc::S_IFLNK;
        if link || !is_link {
            return Ok(Some(Stamp { link, st: l, link_target: None }));
        }
        let st = match FileStat::stat(path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Stamp { link, st, link_target: Some(std::fs::read_link(path)?) }))
    }

    /// Whether `path` still has this stamp (a path that cannot be read has not).
    pub fn holds(this: &Option<Stamp>, path: &Path, link: bool) -> bool {
        Stamp::take(path, link).ok().as_ref() == Some(this)
    }
}

static ON: AtomicBool = AtomicBool::new(false);
/// (path, read through links?, its stamp or `None` if absent), in the order noted.
type Log = Vec<(PathBuf, bool, Option<Stamp>)>;
static LOG: Mutex<Log> = Mutex::new(Vec::new());

/// Starts (or restarts, empty) the log of this process's reads.
pub fn start() {
    LOG.lock().unwrap_or_else(|p| p.into_inner()).clear();
    ON.store(true, Ordering::SeqCst);
}

/// Stops logging and returns what was noted; `None` if a stamp could not be taken (a read of
/// something that cannot be stamped cannot be vouched for later).
pub fn take() -> Option<Log> {
    ON.store(false, Ordering::SeqCst);
    let log = std::mem::take(&mut *LOG.lock().unwrap_or_else(|p| p.into_inner()));
    (!log.iter().any(|(p, _, _)| p.as_os_str().is_empty())).then_some(log)
}

/// Notes that `path` is about to be read: a file or a directory's listing through symlinks
/// (`link` false), or the path itself (`link` true: `lstat`, e.g. whether a directory is a link).
pub fn note(path: &Path, link: bool) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    // An empty path marks a stamp that failed: [`take`] then refuses the whole log.
    let entry = match Stamp::take(path, link) {
        Ok(s) => (path.to_path_buf(), link, s),
        Err(_) => (PathBuf::new(), link, None),
    };
    LOG.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_sees_edits_replacements_and_retargeted_links() {
        let d = tempfile::tempdir().unwrap();
        let (f, g, l) = (d.path().join("f"), d.path().join("g"), d.path().join("l"));
        std::fs::write(&f, "a").unwrap();
        std::fs::write(&g, "a").unwrap();
        std::os::unix::fs::symlink("f", &l).unwrap();
        let sf = Stamp::take(&f, false).unwrap();
        let sl = Stamp::take(&l, false).unwrap();
        let sll = Stamp::take(&l, true).unwrap();
        assert!(Stamp::holds(&sf, &f, false) && Stamp::holds(&sl, &l, false) && Stamp::holds(&sll, &l, true));
        assert_eq!(sl.as_ref().unwrap().st.ino, sf.as_ref().unwrap().st.ino, "through the link");
        assert_eq!(sl.as_ref().unwrap().link_target.as_deref(), Some(Path::new("f")));
        // The link now leads to another file with the same bytes: not the same input.
        std::fs::remove_file(&l).unwrap();
        std::os::unix::fs::symlink("g", &l).unwrap();
        assert!(!Stamp::holds(&sl, &l, false) && !Stamp::holds(&sll, &l, true));
        // A chmod moves only the ctime; a removal leaves nothing.
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert!(!Stamp::holds(&sf, &f, false));
        std::fs::remove_file(&f).unwrap();
        assert_eq!(Stamp::take(&f, false).unwrap(), None);
        assert!(Stamp::holds(&None, &f, false), "absent then, absent now");
    }

    #[test]
    fn the_log_is_off_until_started_and_notes_before_the_read() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("BUILD.star");
        std::fs::write(&f, "x").unwrap();
        note(&f, false);
        start();
        note(&f, false);
        note(&d.path().join("missing"), false);
        // (Other tests load workspaces at the same time: only this one's paths are looked at.)
        let ours = |log: Log| log.into_iter().filter(|(p, _, _)| p.starts_with(d.path())).collect::<Vec<_>>();
        let log = ours(take().unwrap());
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].2.is_some() && log[1].2.is_none());
        note(&f, false);
        assert!(ours(take().unwrap()).is_empty(), "stopped by take");
    }
}
