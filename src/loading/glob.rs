//! `glob(include, exclude)`: deterministic file matching inside one package. Patterns may not leave
//! the package (no `..`, no absolute paths) and never descend into sub-packages.

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
pub fn package_files(dir: &Path) -> Result<Vec<String>, LoadError> {
    let mut out = Vec::new();
    let mut it = walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name().into_iter();
    while let Some(entry) = it.next() {
        let entry = entry.map_err(|e| LoadError::new(format!("glob: cannot read `{}`: {e}", dir.display())))?;
        let rel = match entry.path().strip_prefix(dir) {
            Ok(r) if !r.as_os_str().is_empty() => r,
            _ => continue,
        };
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_dir() {
            if name == ".git" || name == "cbuild-out" || entry.path().join(BUILD_FILE).is_file() {
                it.skip_current_dir();
            }
            continue;
        }
        let Some(rel) = rel.to_str() else {
            return Err(LoadError::new(format!(
                "glob: file name `{}` in `{}` is not valid UTF-8",
                rel.to_string_lossy(),
                dir.display()
            ))
            .help("rename the file; labels and layer paths must be UTF-8"));
        };
        out.push(rel.to_string());
    }
    Ok(out)
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
