//! `glob(include, exclude)`: deterministic file matching inside one package. Patterns may not leave
//! the package (no `..`, no absolute paths) and never descend into sub-packages.

use std::ffi::OsString;
use std::fs::FileType;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::diagnostics::LoadError;
use super::workspace::BUILD_FILE;

fn build_set(patterns: &[String], what: &str) -> Result<GlobSet, LoadError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        if p.starts_with('/') || p.split('/').any(|s| s == "..") {
            return Err(LoadError::new(format!("glob pattern `{p}` escapes the package"))
                .label("absolute and `..` patterns are not allowed")
                .help("glob() only matches files of the package it is called in"));
        }
        let g: Glob = GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| LoadError::new(format!("invalid glob {what} pattern `{p}`: {}", e.kind())))?;
        b.add(g);
    }
    b.build().map_err(|e| LoadError::new(format!("invalid glob patterns: {e}")))
}

/// Files of the package at `dir` matching `include` minus `exclude`, as sorted package-relative paths.
/// Directories holding a `BUILD.star` (sub-packages), hidden VCS dirs and `cbuild-out` are skipped.
/// Symlinks are matched as files and never followed here (a linked directory is not descended
/// into). Whether a symlinked source may be read is not decided here but where every source,
/// globbed or named, is hashed before a build: `execution::scheduler::hash_sources` refuses one that
/// leads outside the workspace (glob cannot: it does not know whether the consumer follows links).
pub fn glob(dir: &Path, include: &[String], exclude: &[String], limit: usize) -> Result<Vec<String>, LoadError> {
    let (inc, exc) = (build_set(include, "include")?, build_set(exclude, "exclude")?);
    matching(&package_files(dir)?, include, &inc, &exc, limit)
}

/// [`glob`] over the listing `list` gives (what [`package_files`] returns): several `glob()` calls
/// of one evaluation share one directory walk (the listing depends only on the package directory,
/// not on the patterns). Patterns are checked before `list` is called, as [`glob`] does.
pub fn glob_listed<L: AsRef<[String]>>(
    include: &[String],
    exclude: &[String],
    limit: usize,
    list: impl FnOnce() -> Result<L, LoadError>,
) -> Result<Vec<String>, LoadError> {
    let (inc, exc) = (build_set(include, "include")?, build_set(exclude, "exclude")?);
    matching(list()?.as_ref(), include, &inc, &exc, limit)
}

fn matching(
    listing: &[String],
    include: &[String],
    inc: &GlobSet,
    exc: &GlobSet,
    limit: usize,
) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::new();
    for rel in listing {
        if inc.is_match(rel) && !exc.is_match(rel) {
            out.push(rel.clone());
            if out.len() > limit {
                return Err(LoadError::new(format!("glob({include:?}) matches more than {limit} files"))
                    .help("narrow the pattern, or raise `glob_limit` in cbuild.toml"));
            }
        }
    }
    Ok(out)
}

/// Every non-directory entry of the package at `dir` that [`glob`] can match, sorted the way it
/// returns them (sub-packages, `.git` and `cbuild-out` skipped, symlinks not followed).
///
/// Depth first, each directory's entries in byte order of their names (walkdir's
/// `sort_by_file_name` order), but on names and relative strings: no `Path` component parsing per
/// comparison and per entry, which was ≈ 5 % of a no-op build of 10,000 files (issue 23).
pub fn package_files(dir: &Path) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::new();
    let entries =
        sorted_listing(dir).map_err(|e| LoadError::new(format!("glob: cannot read `{}`: {e}", dir.display())))?;
    walk_package(dir, dir, entries, "", true, &mut out)?;
    Ok(out)
}

/// One directory of [`package_files`]: `abs` is it, `entries` its [`sorted_listing`], `rel` its
/// path in the package (`valid`: that path is UTF-8, so files under it can be named).
fn walk_package(
    top: &Path,
    abs: &Path,
    entries: Vec<(OsString, FileType)>,
    rel: &str,
    valid: bool,
    out: &mut Vec<String>,
) -> Result<(), LoadError> {
    let cannot_read = |e: std::io::Error| LoadError::new(format!("glob: cannot read `{}`: {e}", top.display()));
    for (name, ty) in entries {
        let (name_str, name_ok) = match name.to_str() {
            Some(n) => (std::borrow::Cow::Borrowed(n), true),
            None => (name.to_string_lossy(), false),
        };
        let child_rel = if rel.is_empty() { name_str.to_string() } else { format!("{rel}/{name_str}") };
        if ty.is_dir() {
            if name_str == ".git" || name_str == "cbuild-out" {
                continue;
            }
            // A sub-package is found in the listing the walk reads anyway (no `stat` of its BUILD.star).
            let child = abs.join(&name);
            let sub = sorted_listing(&child).map_err(cannot_read)?;
            if holds_file(&child, &sub, BUILD_FILE) {
                continue;
            }
            walk_package(top, &child, sub, &child_rel, valid && name_ok, out)?;
            continue;
        }
        if !(valid && name_ok) {
            return Err(LoadError::new(format!(
                "glob: file name `{child_rel}` in `{}` is not valid UTF-8",
                top.display()
            ))
            .help("rename the file; labels and layer paths must be UTF-8"));
        }
        out.push(child_rel);
    }
    Ok(())
}

/// The entries of `dir`, sorted by the bytes of their names, with their types as `getdents` gives
/// them (symlinks not followed). The one directory read of [`package_files`] and
/// [`super::graph::find_packages`].
pub(crate) fn sorted_listing(dir: &Path) -> std::io::Result<Vec<(OsString, FileType)>> {
    sorted_listing_of(dir, |_, _| true)
}

/// [`sorted_listing`] of the entries `keep` accepts (a walk for directories need not hold and
/// sort every file's name).
pub(crate) fn sorted_listing_of(
    dir: &Path,
    keep: impl Fn(&std::ffi::OsStr, FileType) -> bool,
) -> std::io::Result<Vec<(OsString, FileType)>> {
    crate::fs::reads::note(dir, false);
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let (name, ty) = (e.file_name(), e.file_type()?);
        if keep(&name, ty) {
            entries.push((name, ty));
        }
    }
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(entries)
}

/// Whether `entries` (the listing of `dir`) hold a file named `name`, or a symlink that leads to a
/// file (as `dir.join(name).is_file()` says, with a `stat` only for a symlink).
pub(crate) fn holds_file(dir: &Path, entries: &[(OsString, FileType)], name: &str) -> bool {
    entries
        .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
        .is_ok_and(|i| entries[i].1.is_file() || (entries[i].1.is_symlink() && linked_file(&dir.join(name))))
}

/// Whether the symlink `p` leads to a file (noted as read: what it leads to decides).
fn linked_file(p: &Path) -> bool {
    crate::fs::reads::note(p, false);
    p.is_file()
}

/// Whether a `glob(include, exclude)` of a package would match the package-relative path `rel` if
/// the file existed (sub-package boundaries aside). Invalid patterns match everything: callers
/// use this to find what a file's addition or deletion can change, where a miss would be wrong.
pub fn could_match(include: &[String], exclude: &[String], rel: &str) -> bool {
    let dirs = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    if dirs.split('/').any(|c| c == ".git" || c == "cbuild-out") {
        return false;
    }
    match (build_set(include, "include"), build_set(exclude, "exclude")) {
        (Ok(inc), Ok(exc)) => inc.is_match(rel) && !exc.is_match(rel),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for f in ["a.py", "b.py", "src/c.py", "src/d/e.py", "README.md", ".hidden", "sub/BUILD.star", "sub/x.py"] {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        t
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn star_stays_in_directory() {
        let t = tree();
        assert_eq!(glob(t.path(), &s(&["*.py"]), &[], 100).unwrap(), s(&["a.py", "b.py"]));
    }

    #[test]
    fn double_star_recurses_but_not_into_subpackages() {
        let t = tree();
        assert_eq!(glob(t.path(), &s(&["**/*.py"]), &[], 100).unwrap(), s(&["a.py", "b.py", "src/c.py", "src/d/e.py"]));
        assert_eq!(glob(t.path(), &s(&["**"]), &s(&["**/*.py"]), 100).unwrap(), s(&[".hidden", "README.md"]));
    }

    #[test]
    fn deterministic_order() {
        let t = tree();
        let a = glob(t.path(), &s(&["**"]), &[], 100).unwrap();
        let b = glob(t.path(), &s(&["src/**", "*"]), &[], 100).unwrap();
        let mut b2 = b.clone();
        b2.sort();
        assert_eq!(b, b2);
        assert_eq!(a.len(), 6);
    }

    #[test]
    fn escaping_patterns_are_errors() {
        let t = tree();
        for p in ["../x", "/etc/*", "a/../../b"] {
            let e = glob(t.path(), &s(&[p]), &[], 100).unwrap_err();
            assert!(e.message.contains("escapes the package"), "{p}: {}", e.message);
        }
    }

    #[test]
    fn symlinks_are_listed_not_followed() {
        let t = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.py"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("linkdir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.py"), t.path().join("link.py")).unwrap();
        let all = glob(t.path(), &s(&["**"]), &[], 100).unwrap();
        assert!(all.contains(&"link.py".to_string()) && all.contains(&"linkdir".to_string()), "{all:?}");
        assert!(!all.iter().any(|f| f.starts_with("linkdir/")), "a linked directory is not walked: {all:?}");
    }

    /// The listing's order is walkdir's `sort_by_file_name` depth-first order (what it was built
    /// with before), names that sort around `/` included.
    #[test]
    fn listing_order_is_a_sorted_depth_first_walk() {
        let t = tree();
        for f in ["a/x", "a-b", "a.b", "a0", "a/y/z", "a/y.txt", "b/.git/HEAD", "b/cbuild-out/o", "b/k"] {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let mut want = Vec::new();
        let mut it = walkdir::WalkDir::new(t.path()).follow_links(false).sort_by_file_name().into_iter();
        while let Some(e) = it.next() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(t.path()).unwrap().to_str().unwrap().to_string();
            if e.file_type().is_dir() {
                let name = e.file_name().to_str().unwrap();
                if name == ".git" || name == "cbuild-out" || e.path().join(BUILD_FILE).is_file() && e.depth() > 0 {
                    it.skip_current_dir();
                }
                continue;
            }
            want.push(rel);
        }
        let got = package_files(t.path()).unwrap();
        assert_eq!(got, want);
        assert!(got.iter().position(|f| f == "a/y/z") < got.iter().position(|f| f == "a-b"), "{got:?}");
        assert!(!got.iter().any(|f| f.starts_with("sub/") || f.contains(".git/") || f.contains("cbuild-out/")));
    }

    #[test]
    fn a_non_utf8_name_is_an_error_naming_it() {
        use std::os::unix::ffi::OsStrExt;
        let t = tree();
        let bad = std::ffi::OsStr::from_bytes(b"bad\xff");
        std::fs::create_dir_all(t.path().join(bad)).unwrap();
        // An empty directory with such a name is no file to name: fine.
        assert!(package_files(t.path()).is_ok());
        std::fs::write(t.path().join(bad).join("f.py"), "x").unwrap();
        let e = package_files(t.path()).unwrap_err();
        assert!(e.message.contains("is not valid UTF-8") && e.message.contains("bad"), "{}", e.message);
    }

    #[test]
    fn a_shared_listing_matches_like_a_fresh_walk() {
        let t = tree();
        let listing = package_files(t.path()).unwrap();
        for (inc, exc) in
            [(&["**"][..], &[][..]), (&["*.py"], &[]), (&["**/*.py"], &["src/d/**"]), (&["src/**", "*"], &[])]
        {
            let fresh = glob(t.path(), &s(inc), &s(exc), 100).unwrap();
            let shared = glob_listed(&s(inc), &s(exc), 100, || Ok(listing.as_slice())).unwrap();
            assert_eq!(shared, fresh, "{inc:?} - {exc:?}");
        }
        // An invalid pattern fails before the directory is listed.
        let e = glob_listed(&s(&["../x"]), &[], 100, || -> Result<Vec<String>, _> { panic!("listed") }).unwrap_err();
        assert!(e.message.contains("escapes the package"));
        assert!(glob_listed(&s(&["**"]), &[], 3, || Ok(listing.as_slice())).is_err());
    }

    #[test]
    fn limit() {
        let t = tree();
        assert!(glob(t.path(), &s(&["**"]), &[], 3).is_err());
    }
}
