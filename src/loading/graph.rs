//! The target graph: every target reachable from the requested patterns, with dependency edges
//! (petgraph). Loading packages on demand, checking that every label resolves, and finding cycles.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use super::diagnostics::LoadError;
use super::eval::{Evaluation, PackageInputs, TargetNode};
use super::workspace::BUILD_FILE;
use crate::model::label::{Label, PackagePath, Pattern};

/// Loaded targets and their dependency edges (edge `a -> b` means `a` depends on `b`).
pub struct TargetGraph {
    pub nodes: BTreeMap<Label, TargetNode>,
    graph: DiGraph<Label, ()>,
    index: HashMap<Label, NodeIndex>,
}

impl TargetGraph {
    fn build(nodes: BTreeMap<Label, TargetNode>) -> TargetGraph {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for l in nodes.keys() {
            index.insert(l.clone(), graph.add_node(l.clone()));
        }
        for (l, n) in &nodes {
            for d in &n.deps {
                if let Some(&di) = index.get(d) {
                    graph.add_edge(index[l], di, ());
                }
            }
        }
        TargetGraph { nodes, graph, index }
    }

    pub fn get(&self, l: &Label) -> Option<&TargetNode> {
        self.nodes.get(l)
    }

    /// `roots` and everything they depend on, transitively.
    pub fn deps(&self, roots: &BTreeSet<Label>) -> BTreeSet<Label> {
        self.reach(roots, Direction::Outgoing)
    }

    /// Targets of `universe` that depend (transitively) on any of `targets`, including `targets` ∩ closure.
    pub fn rdeps(&self, universe: &BTreeSet<Label>, targets: &BTreeSet<Label>) -> BTreeSet<Label> {
        let closure = self.deps(universe);
        self.reach(targets, Direction::Incoming).into_iter().filter(|l| closure.contains(l)).collect()
    }

    /// The targets on one shortest dependency path from a member of `from` to a member of `to`
    /// (in path order; the first start in label order that reaches any end), or none.
    pub fn somepath(&self, from: &BTreeSet<Label>, to: &BTreeSet<Label>) -> Vec<Label> {
        let ends: BTreeSet<NodeIndex> = to.iter().filter_map(|l| self.index.get(l).copied()).collect();
        for s in from.iter().filter_map(|l| self.index.get(l).copied()) {
            let found = petgraph::algo::astar(&self.graph, s, |n| ends.contains(&n), |_| 1u32, |_| 0u32);
            if let Some((_, path)) = found {
                return path.into_iter().map(|i| self.graph[i].clone()).collect();
            }
        }
        Vec::new()
    }

    /// The targets on any dependency path from a member of `from` to a member of `to`: reachable
    /// from `from` and reaching `to`.
    pub fn allpaths(&self, from: &BTreeSet<Label>, to: &BTreeSet<Label>) -> BTreeSet<Label> {
        let down = self.deps(from);
        self.reach(to, Direction::Incoming).into_iter().filter(|l| down.contains(l)).collect()
    }

    fn reach(&self, roots: &BTreeSet<Label>, dir: Direction) -> BTreeSet<Label> {
        use petgraph::visit::{Bfs, Reversed, Walker};
        let mut seen = BTreeSet::new();
        for r in roots.iter().filter_map(|l| self.index.get(l).copied()) {
            let found: Vec<NodeIndex> = match dir {
                Direction::Outgoing => Bfs::new(&self.graph, r).iter(&self.graph).collect(),
                Direction::Incoming => Bfs::new(Reversed(&self.graph), r).iter(Reversed(&self.graph)).collect(),
            };
            seen.extend(found.into_iter().map(|i| self.graph[i].clone()));
        }
        seen
    }

    /// Direct dependencies of one target.
    pub fn direct_deps(&self, l: &Label) -> Vec<Label> {
        self.nodes.get(l).map(|n| n.deps.clone()).unwrap_or_default()
    }

    /// All labels in dependency order (dependencies first), deterministic.
    pub fn topo_order(&self) -> Vec<Label> {
        // Edges point from a target to its dependencies: reversed, a topological order lists
        // dependencies first. Cycles were refused while loading; should one remain, its members
        // follow the rest in label order, so analysis reports it instead of looping.
        match petgraph::algo::toposort(&self.graph, None) {
            Ok(order) => order.into_iter().rev().map(|i| self.graph[i].clone()).collect(),
            Err(_) => self.nodes.keys().cloned().collect(),
        }
    }
}

/// Finds every package (directory with a BUILD.star) at or below `under`, depth first, each
/// directory's entries in byte order of their names. Only directories are looked at: the entry
/// types come from `getdents`, and a directory's BUILD.star and cbuild.toml are found in its own
/// listing (a stat only when such an entry is a symlink, which counts if it leads to a file).
/// Walkdir made an entry (a joined path) per file and two `stat`s per directory: 9–14 ms of a
/// 10,000-file no-op (issue 23). An unreadable directory is skipped, not the rest of the walk.
pub fn find_packages(root: &Path, under: &PackagePath) -> Vec<PackagePath> {
    let mut out = Vec::new();
    find_in(&root.join(under.as_str()), under.as_str(), true, &mut out);
    out
}

/// One directory of [`find_packages`]; `rel` is its workspace path.
fn find_in(dir: &Path, rel: &str, top: bool, out: &mut Vec<PackagePath>) {
    use std::os::unix::ffi::OsStrExt;
    let ws = crate::loading::workspace::WORKSPACE_FILE;
    let wanted = |n: &std::ffi::OsStr, ty: std::fs::FileType| ty.is_dir() || n == BUILD_FILE || n == ws;
    let Ok(entries) = super::glob::sorted_listing_of(dir, wanted) else { return };
    // A directory with its own cbuild.toml is another workspace (as a nested MODULE.bazel is
    // another repository to Bazel): patterns never reach into it.
    if !top && super::glob::holds_file(dir, &entries, ws) {
        return;
    }
    if super::glob::holds_file(dir, &entries, BUILD_FILE) {
        if let Ok(p) = PackagePath::parse(rel) {
            out.push(p);
        }
    }
    for (name, ty) in entries {
        let b = name.as_bytes();
        if !ty.is_dir() || b.starts_with(b".") || b == b"cbuild-out" || b == b"target" {
            continue;
        }
        // A name that is not UTF-8 cannot be in a label: nothing under it is a package.
        let Some(n) = name.to_str() else { continue };
        let child_rel = if rel.is_empty() { n.to_string() } else { format!("{rel}/{n}") };
        find_in(&dir.join(&name), &child_rel, false, out);
    }
}

/// The result of loading: the graph and the targets the patterns selected.
pub struct Loaded {
    pub graph: TargetGraph,
    pub requested: BTreeSet<Label>,
    pub packages_loaded: usize,
    /// For every package evaluated: the BUILD and `.star` files and the globs it read.
    pub package_inputs: BTreeMap<PackagePath, PackageInputs>,
}

/// Loads the packages the patterns name, then transitively the packages their targets depend on.
/// Reports every error found (not just the first), each located in its BUILD file.
pub fn load(root: &Path, patterns: &[Pattern], glob_limit: usize) -> Result<Loaded, Vec<LoadError>> {
    load_limited(root, patterns, glob_limit, super::EvalLimits::default())
}

/// [`load`] with explicit Starlark evaluation limits (steps, heap, call depth).
pub fn load_limited(
    root: &Path,
    patterns: &[Pattern],
    glob_limit: usize,
    limits: super::EvalLimits,
) -> Result<Loaded, Vec<LoadError>> {
    let mut ev = Evaluation::new(root).map_err(|e| vec![e])?;
    ev.glob_limit = glob_limit;
    ev.limits = limits;
    let mut packages: BTreeMap<PackagePath, Option<Vec<TargetNode>>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut queue: VecDeque<PackagePath> = VecDeque::new();
    for p in patterns {
        match p {
            Pattern::Target(l) => queue.push_back(l.package.clone()),
            Pattern::Package(pk) => queue.push_back(pk.clone()),
            Pattern::Recursive(pk) => {
                let found = find_packages(root, pk);
                if found.is_empty() {
                    errors.push(LoadError::new(format!("no packages (directories with {BUILD_FILE}) match `{p}`")));
                }
                queue.extend(found);
            }
        }
    }
    let mut failed: BTreeSet<PackagePath> = BTreeSet::new();
    let package_inputs: RefCell<BTreeMap<PackagePath, PackageInputs>> = RefCell::new(BTreeMap::new());
    let load_pkg = |pk: &PackagePath,
                    packages: &mut BTreeMap<PackagePath, Option<Vec<TargetNode>>>,
                    errors: &mut Vec<LoadError>,
                    failed: &mut BTreeSet<PackagePath>| {
        if packages.contains_key(pk) {
            return;
        }
        let build_file = root.join(pk.as_str()).join(BUILD_FILE);
        crate::fs::reads::note(&build_file, false);
        if !build_file.is_file() {
            packages.insert(pk.clone(), None);
            return;
        }
        match ev.eval_package_inputs(pk) {
            Ok((t, inputs)) => {
                packages.insert(pk.clone(), Some(t));
                package_inputs.borrow_mut().insert(pk.clone(), inputs);
            }
            Err(e) => {
                errors.push(e);
                failed.insert(pk.clone());
                packages.insert(pk.clone(), Some(Vec::new()));
            }
        }
    };
    for pk in queue.drain(..) {
        load_pkg(&pk, &mut packages, &mut errors, &mut failed);
    }
    // Requested targets.
    let mut requested = BTreeSet::new();
    for p in patterns {
        let mut any = false;
        for (pk, ts) in &packages {
            for t in ts.iter().flatten() {
                if p.matches(&t.label) {
                    requested.insert(t.label.clone());
                    any = true;
                }
            }
            let _ = pk;
        }
        let in_failed = match p {
            Pattern::Target(l) => failed.contains(&l.package),
            _ => !failed.is_empty(),
        };
        if !any && !in_failed {
            match p {
                Pattern::Target(l) => errors.push(missing_target_error(l, packages.get(&l.package), None)),
                _ if errors.is_empty() => errors.push(LoadError::new(format!("`{p}` matches no targets"))),
                _ => {}
            }
        }
    }
    // Transitive closure over deps, loading packages as needed.
    let mut nodes: BTreeMap<Label, TargetNode> = BTreeMap::new();
    let mut work: VecDeque<Label> = requested.iter().cloned().collect();
    while let Some(l) = work.pop_front() {
        if nodes.contains_key(&l) {
            continue;
        }
        let Some(Some(ts)) = packages.get(&l.package) else { continue };
        let Some(n) = ts.iter().find(|t| t.label == l).cloned() else { continue };
        for d in &n.deps {
            load_pkg(&d.package, &mut packages, &mut errors, &mut failed);
            let found = packages.get(&d.package).and_then(|o| o.as_ref()).map(|ts| ts.iter().any(|t| &t.label == d));
            match found {
                Some(true) => work.push_back(d.clone()),
                _ if failed.contains(&d.package) => {}
                _ => errors.push(missing_target_error(d, packages.get(&d.package), Some(&n))),
            }
        }
        nodes.insert(l, n);
    }
    if !errors.is_empty() {
        return Err(dedup(errors));
    }
    let graph = TargetGraph::build(nodes);
    if let Some(cycle) = find_cycle(&graph) {
        let first = &graph.nodes[&cycle[0]];
        let path: Vec<String> = cycle.iter().map(|l| l.to_string()).collect();
        return Err(vec![LoadError::new(format!("dependency cycle: {}", path.join(" -> ")))
            .at(first.site.clone())
            .label("this target is part of the cycle")
            .help("a target cannot depend on itself, directly or through others")]);
    }
    let packages_loaded = packages.values().filter(|p| p.is_some()).count();
    Ok(Loaded { graph, requested, packages_loaded, package_inputs: package_inputs.into_inner() })
}

fn dedup(errors: Vec<LoadError>) -> Vec<LoadError> {
    let mut seen = BTreeSet::new();
    errors.into_iter().filter(|e| seen.insert(format!("{}|{:?}", e.message, e.site))).collect()
}

fn missing_target_error(l: &Label, pkg: Option<&Option<Vec<TargetNode>>>, from: Option<&TargetNode>) -> LoadError {
    let site = from.and_then(|n| n.site.clone());
    let via = from.map(|n| format!(" (referenced by `{}`)", n.label)).unwrap_or_default();
    match pkg {
        Some(Some(ts)) => {
            let names: Vec<String> = ts.iter().map(|t| t.label.name.clone()).collect();
            let e = LoadError::new(format!("no target `{}` in package `//{}`{via}", l.name, l.package))
                .at(site)
                .label(format!("`{l}` does not exist"));
            if names.is_empty() {
                e
            } else {
                e.help(format!("targets in `//{}`: {}", l.package, names.join(", ")))
            }
        }
        _ => LoadError::new(format!("`{l}` refers to package `//{}`, which has no {BUILD_FILE}{via}", l.package))
            .at(site)
            .label("unknown package")
            .help(format!(
                "create `{}/{BUILD_FILE}` or fix the label",
                if l.package.is_root() { "." } else { l.package.as_str() }
            )),
    }
}

/// A dependency cycle as a path `a -> b -> ... -> a`, if any (deterministic: smallest label first).
pub fn find_cycle(g: &TargetGraph) -> Option<Vec<Label>> {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Open,
        Done,
    }
    let mut state: HashMap<&Label, S> = HashMap::new();
    let mut stack: Vec<&Label> = Vec::new();
    fn dfs<'a>(
        g: &'a TargetGraph,
        l: &'a Label,
        state: &mut HashMap<&'a Label, S>,
        stack: &mut Vec<&'a Label>,
    ) -> Option<Vec<Label>> {
        state.insert(l, S::Open);
        stack.push(l);
        for d in &g.nodes[l].deps {
            if !g.nodes.contains_key(d) {
                continue;
            }
            match state.get(d) {
                Some(S::Open) => {
                    let pos = stack.iter().position(|x| *x == d).unwrap_or(0);
                    let mut c: Vec<Label> = stack[pos..].iter().map(|x| (*x).clone()).collect();
                    c.push(d.clone());
                    return Some(c);
                }
                Some(S::Done) => {}
                None => {
                    if let Some(c) = dfs(g, d, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(l, S::Done);
        None
    }
    for l in g.nodes.keys() {
        if !state.contains_key(l) {
            if let Some(c) = dfs(g, l, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_packages_walks_in_byte_order_and_skips_what_is_not_this_workspace() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let mk = |p: &str| {
            std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
            std::fs::write(r.join(p), "").unwrap();
        };
        for p in [
            "BUILD.star",
            "b/BUILD.star",
            "a/BUILD.star",
            "a/x/y/BUILD.star",
            "B/BUILD.star",
            // Not packages: hidden, output and target dirs, a nested workspace (and all under it).
            ".hidden/BUILD.star",
            "cbuild-out/BUILD.star",
            "target/BUILD.star",
            "nested/cbuild.toml",
            "nested/BUILD.star",
            "nested/sub/BUILD.star",
            // A file that is not BUILD.star, and a directory that is.
            "c/BUILD.star.txt",
            "d/BUILD.star/BUILD.star",
        ] {
            mk(p);
        }
        // A BUILD.star symlink to a file counts (as `is_file` follows it); a symlinked directory
        // is not walked into.
        std::fs::create_dir_all(r.join("e")).unwrap();
        std::os::unix::fs::symlink("../a/BUILD.star", r.join("e/BUILD.star")).unwrap();
        std::os::unix::fs::symlink("a", r.join("link")).unwrap();
        let names = |under: &str| -> Vec<String> {
            find_packages(r, &PackagePath::parse(under).unwrap()).iter().map(|p| p.to_string()).collect()
        };
        assert_eq!(names(""), ["", "B", "a", "a/x/y", "b", "d/BUILD.star", "e"]);
        assert_eq!(names("a"), ["a", "a/x/y"]);
        // Asked for directly, a nested workspace's own root is searched (as before).
        assert_eq!(names("nested"), ["nested", "nested/sub"]);
    }
}
