//! Filesystem helpers shared by every module: atomic writes (temp file in the same directory, fsync,
//! rename) and path normalisation. No policy lives here.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

pub mod confined;
pub mod reads;
pub mod stat;

/// Writes `bytes` to `path` atomically: a temp file next to it, fsync, rename. Readers see either the
/// old file or the complete new one, never a torn write, even after `kill -9`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], but the content is produced by `fill` writing into the temp file.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    // tempfile creates 0600; the result is an ordinary file (umask applies as for any new file).
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644 & !umask()))?;
    }
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The process umask (read without changing it for long: set and restore).
fn umask() -> u32 {
    // SAFETY: umask has no preconditions; the original value is restored immediately.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}

/// Normalises a relative path lexically (`a/./b/../c` → `a/c`). Returns `None` if it is absolute or
/// climbs above its start (`..` past the root) — the caller decides what that error means.
pub fn normalize_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The components of a symlink `target` as a walk queue (`..` kept, `.` and the root dropped),
/// followed by the `rest` of the path still to walk. Shared by the safe extractors of image layers
/// and `.deb`s, which resolve every path inside their root one component at a time.
pub fn symlink_walk_queue(
    target: &Path,
    rest: &mut std::collections::VecDeque<std::ffi::OsString>,
) -> std::collections::VecDeque<std::ffi::OsString> {
    let mut next: std::collections::VecDeque<std::ffi::OsString> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(std::ffi::OsString::from("..")),
            _ => None,
        })
        .collect();
    next.extend(rest.drain(..));
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temp files left");
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize_relative(Path::new("a/./b/../c")), Some(PathBuf::from("a/c")));
        assert_eq!(normalize_relative(Path::new("../x")), None);
        assert_eq!(normalize_relative(Path::new("/x")), None);
    }
}
