//! Which targets read which workspace files: the file side of `query`'s `set(path …)` and of
//! `cbuild affected`. Built from what loading recorded (each package's BUILD and `.star` files and
//! its `glob()` calls) and from the analysed actions (the sources each runner declares: exactly the
//! files the executor hashes into action keys). Errs on the side of listing a target.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::loading::{AttrValue, GlobCall, Loaded, BUILD_FILE};
use crate::model::action::{ActionGraph, ActionKind};
use crate::model::label::{Label, PackagePath};

/// How a file changed. Only additions and deletions change what a `glob()` returns or where a
/// package ends; a file whose change is not known is treated as possibly added or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Modified,
    Added,
    Deleted,
    Unknown,
}

/// The file → target index of one loaded and analysed workspace.
pub struct InputIndex {
    root: PathBuf,
    all: BTreeSet<Label>,
    by_package: BTreeMap<PackagePath, BTreeSet<Label>>,
    /// Source files (and the files symlinked sources lead to) → the targets reading them.
    files: BTreeMap<String, BTreeSet<Label>>,
    /// Directory sources (an `oci_import` layout): every path below one counts.
    dirs: BTreeMap<String, BTreeSet<Label>>,
    /// BUILD and `.star` files → the packages whose evaluation read them.
    eval_files: BTreeMap<String, BTreeSet<PackagePath>>,
    /// Every glob() evaluated, with the package whose targets depend on its result.
    globs: Vec<(GlobCall, PackagePath)>,
}

impl InputIndex {
    /// Indexes every target of `loaded` that `actions` analysed (and every target's file attributes).
    pub fn build(root: &Path, loaded: &Loaded, actions: &ActionGraph) -> InputIndex {
        let canon_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let mut ix = InputIndex {
            root: root.to_path_buf(),
            all: loaded.graph.nodes.keys().cloned().collect(),
            by_package: BTreeMap::new(),
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            eval_files: BTreeMap::new(),
            globs: Vec::new(),
        };
        for l in loaded.graph.nodes.keys() {
            ix.by_package.entry(l.package.clone()).or_default().insert(l.clone());
        }
        for (pkg, inputs) in &loaded.package_inputs {
            for f in &inputs.files {
                ix.eval_files.entry(f.clone()).or_default().insert(pkg.clone());
            }
            for g in &inputs.globs {
                ix.globs.push((g.clone(), pkg.clone()));
            }
        }
        let add = |ix: &mut InputIndex, path: &str, l: &Label| {
            let is_dir = std::fs::metadata(root.join(path)).map(|m| m.is_dir()).unwrap_or(false);
            let map = if is_dir { &mut ix.dirs } else { &mut ix.files };
            map.entry(path.to_string()).or_default().insert(l.clone());
            // A symlink (the file, or a directory above it) inside the workspace is followed
            // when the source is hashed: an edit of what it leads to changes the key too.
            if let Some(to) = resolved(root, &canon_root, path).filter(|to| to != path) {
                let map = if is_dir { &mut ix.dirs } else { &mut ix.files };
                map.entry(to).or_default().insert(l.clone());
            }
        };
        for a in &actions.actions {
            for (p, _) in crate::execution::runners::runner(&a.kind).sources(a) {
                add(&mut ix, &p, &a.label);
            }
            if let ActionKind::ImportImage { path, .. } = &a.kind {
                add(&mut ix, path, &a.label);
            }
        }
        for (l, n) in &loaded.graph.nodes {
            let mut refs = Vec::new();
            n.attrs.values().for_each(|v| file_refs(v, &mut refs));
            for f in refs {
                add(&mut ix, &f, l);
            }
        }
        ix
    }

    /// The targets whose inputs include the workspace-relative `path` directly (not through a
    /// dependency): targets reading it (or a file below it, or a symlink leading to it), every
    /// target of a package whose BUILD or loaded `.star` file it is, and, when the file may have
    /// appeared or disappeared, every target of a package with a glob() that could match it or
    /// whose boundary it moves (a `BUILD.star`). `cbuild.toml` affects every target.
    pub fn readers(&self, path: &str, change: Change) -> BTreeSet<Label> {
        let path = path.trim_start_matches("./").trim_end_matches('/');
        if path == crate::loading::workspace::WORKSPACE_FILE || path.is_empty() {
            return self.all.clone();
        }
        let mut out = BTreeSet::new();
        let below = |k: &str| k == path || k.strip_prefix(path).is_some_and(|r| r.starts_with('/'));
        for (_, ls) in
            self.files.range(path.to_string()..).take_while(|(k, _)| k.starts_with(path)).filter(|(k, _)| below(k))
        {
            out.extend(ls.iter().cloned());
        }
        for (d, ls) in &self.dirs {
            if below(d) || path.strip_prefix(d.as_str()).is_some_and(|r| r.starts_with('/')) {
                out.extend(ls.iter().cloned());
            }
        }
        let mut packages: BTreeSet<&PackagePath> = BTreeSet::new();
        for (_, ps) in
            self.eval_files.range(path.to_string()..).take_while(|(k, _)| k.starts_with(path)).filter(|(k, _)| below(k))
        {
            packages.extend(ps.iter());
        }
        if change != Change::Modified {
            // A directory (from --files) may hold any name; so may a path that is gone and whose
            // kind is unknown (git lists files, a list on stdin may name a deleted directory).
            let full = self.root.join(path);
            let is_dir = full.is_dir() || (change == Change::Unknown && std::fs::symlink_metadata(&full).is_err());
            for (g, user) in &self.globs {
                let dir = g.package.as_str();
                let rel =
                    if dir.is_empty() { Some(path) } else { path.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) };
                let hit = match rel {
                    // Every glob of the package counts.
                    Some(_) if is_dir => true,
                    Some(rel) => crate::loading::glob::could_match(&g.include, &g.exclude, rel),
                    // A directory above the glob's package.
                    None => is_dir && (path.is_empty() || dir.strip_prefix(path).is_some_and(|r| r.starts_with('/'))),
                };
                if hit {
                    packages.insert(user);
                }
            }
            // A BUILD.star that appears or disappears moves the boundary of the package above.
            if Path::new(path).file_name().is_some_and(|n| n == BUILD_FILE) {
                if let Some(p) = self.package_above(path) {
                    packages.insert(p);
                }
            }
        }
        for p in packages {
            out.extend(self.by_package.get(p).into_iter().flatten().cloned());
        }
        out
    }

    /// The nearest loaded package strictly above the directory holding `build_file`.
    fn package_above(&self, build_file: &str) -> Option<&PackagePath> {
        let mut dir = Path::new(build_file).parent()?;
        while let Some(up) = dir.parent() {
            dir = up;
            if self.root.join(dir).join(BUILD_FILE).is_file() {
                let s = dir.to_str()?;
                return self.by_package.keys().find(|p| p.as_str() == s);
            }
        }
        None
    }
}

/// Every file path an attribute value names.
fn file_refs(v: &AttrValue, out: &mut Vec<String>) {
    match v {
        AttrValue::File(f) => out.push(f.file.clone()),
        AttrValue::List(xs) => xs.iter().for_each(|x| file_refs(x, out)),
        AttrValue::Dict(d) => d.values().for_each(|x| file_refs(x, out)),
        _ => {}
    }
}

/// Where the workspace path `rel` leads once symlinks are followed, workspace-relative; `None` if
/// it leads outside (such sources are refused at build time). A dangling link resolves by its text.
fn resolved(root: &Path, canon_root: &Path, rel: &str) -> Option<String> {
    let full = root.join(rel);
    let target = match std::fs::canonicalize(&full) {
        Ok(c) => c,
        Err(_) => {
            let link = std::fs::read_link(&full).ok()?;
            let parent = std::fs::canonicalize(full.parent()?).ok()?;
            let joined = parent.join(link);
            let rel_to_root = joined.strip_prefix(canon_root).ok()?;
            return crate::fs::normalize_relative(rel_to_root).and_then(|p| p.to_str().map(String::from));
        }
    };
    target.strip_prefix(canon_root).ok().and_then(|p| p.to_str()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(d: &Path, files: &[(&str, &str)]) {
        for (p, t) in files {
            let f = d.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, t).unwrap();
        }
    }

    fn index_of(d: &Path) -> InputIndex {
        let pats = vec![crate::model::label::Pattern::parse("//...", None).unwrap()];
        let loaded = crate::loading::load(d, &pats, 1000).unwrap();
        let requested: Vec<Label> = loaded.requested.iter().cloned().collect();
        let ag = crate::analysis::analyze(&loaded.graph, &requested, &Default::default()).unwrap();
        InputIndex::build(d, &loaded, &ag)
    }

    fn index(files: &[(&str, &str)]) -> (tempfile::TempDir, InputIndex) {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &[("cbuild.toml", "")]);
        write(d.path(), files);
        let ix = index_of(d.path());
        (d, ix)
    }

    fn names(s: &BTreeSet<Label>) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn files_build_files_loads_and_globs() {
        let (_d, ix) = index(&[
            ("defs/m.star", "X = 1\n"),
            ("defs/BUILD.star", ""),
            (
                "a/BUILD.star",
                "load(\"//defs:m.star\", \"X\")\nlayer(name = \"l\", srcs = glob([\"src/*.txt\"]))\n\
                 genrule(name = \"g\", srcs = [\"one.txt\"], outs = [\"o\"], cmd = \"cp $SRCS $OUTS\")\n",
            ),
            ("a/src/x.txt", "x"),
            ("a/one.txt", "1"),
            ("a/notes.md", "n"),
            ("b/BUILD.star", "layer(name = \"l\", srcs = [\"f\"])\n"),
            ("b/f", "f"),
        ]);
        assert_eq!(names(&ix.readers("a/src/x.txt", Change::Modified)), ["//a:l"]);
        assert_eq!(names(&ix.readers("a/one.txt", Change::Modified)), ["//a:g"]);
        assert!(ix.readers("a/notes.md", Change::Modified).is_empty());
        assert!(ix.readers("a/notes.md", Change::Deleted).is_empty(), "no glob matches *.md");
        assert_eq!(names(&ix.readers("a/src/new.txt", Change::Added)), ["//a:g", "//a:l"]);
        assert!(ix.readers("a/src/new.txt", Change::Modified).is_empty());
        assert_eq!(names(&ix.readers("defs/m.star", Change::Modified)), ["//a:g", "//a:l"]);
        assert_eq!(names(&ix.readers("a/BUILD.star", Change::Modified)), ["//a:g", "//a:l"]);
        assert_eq!(ix.readers("cbuild.toml", Change::Modified).len(), 3);
        assert!(ix.readers("elsewhere/x", Change::Deleted).is_empty());
        // Gone, kind unknown (a list on stdin): it may have been a directory of matching files.
        assert_eq!(names(&ix.readers("a/src/gone", Change::Unknown)), ["//a:g", "//a:l"]);
        assert!(ix.readers("a/src/gone", Change::Deleted).is_empty());
        // A new sub-package moves the boundary of `a`'s globs.
        assert_eq!(names(&ix.readers("a/src/BUILD.star", Change::Added)), ["//a:g", "//a:l"]);
        // A directory given as a whole.
        assert_eq!(names(&ix.readers("b", Change::Unknown)), ["//b:l"]);
    }

    #[test]
    fn symlinked_sources_follow_their_target() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &[("cbuild.toml", ""), ("shared/data", "d"), ("p/BUILD.star", "layer(name = \"l\", srcs = [\"data\"])\n")],
        );
        std::os::unix::fs::symlink("../shared/data", d.path().join("p/data")).unwrap();
        let ix = index_of(d.path());
        assert_eq!(names(&ix.readers("shared/data", Change::Modified)), ["//p:l"]);
        assert_eq!(names(&ix.readers("shared", Change::Deleted)), ["//p:l"]);
        assert_eq!(names(&ix.readers("p/data", Change::Modified)), ["//p:l"]);
    }
}
