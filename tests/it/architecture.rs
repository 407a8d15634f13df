//! Architecture test: the file-level import graph of `src/` has no cycles, and no module imports a
//! module of a higher layer. The layers are read from README.md ("How it works", the fenced
//! ```` ```layers ```` block: one layer per line, top to bottom; a line may name several peer
//! modules). A file may import files of its own top-level module (unless that forms a cycle), of
//! another module on the same layer, or of any layer below.
//!
//! How the graph is built (plain text, no parser dependency):
//! * every `src/**/*.rs` except `src/lib.rs` and `src/main.rs` is a node; its module path comes
//!   from its file path (`src/oci/layer.rs` and `src/oci/layer/mod.rs` are `crate::oci::layer`);
//! * comments, string/char literals and `#[cfg(test)]` items (unit tests) are skipped;
//! * edges come from `use` trees (grouped, nested, multi-line) and from paths in code starting with
//!   `crate::`, `$crate::`, `super::`, `self::` or a child module's name; `super` and `self` are
//!   resolved against the file's module (inline `mod x { }` blocks included);
//! * a path maps to the file of its longest module prefix: `crate::oci::layer::X` is
//!   `src/oci/layer.rs`, `crate::registry::Reference` is `src/registry/mod.rs` (an item re-exported
//!   by a `mod.rs` is a dependency on that `mod.rs`, whatever file defines it); `crate::outln!` maps
//!   to the file defining the `#[macro_export]` macro;
//! * a file's `pub use child::X` of its own submodules is its API (a facade), not an edge, unless
//!   the file's own code names `X` too; `mod x;` declarations are not edges. So a child may use
//!   what its `mod.rs` defines (`super::Cache`) while the `mod.rs` re-exports the child's items.
//!
//! `ARCHITECTURE_DUMP=1 cargo test --test architecture -- --nocapture` prints every edge and why.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;

/// TODO(structure): import cycles known and not fixed yet. The imports between the two files of an
/// entry (both ways) are left out of the cycle check; every other cycle still fails. Remove an entry
/// once the two files no longer import each other: the test fails on an entry that is stale.
const KNOWN_CYCLE_TODO: &[(&str, &str)] = &[];

const EXEMPT: &[&str] = &["src/lib.rs", "src/main.rs"];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// Tokens of Rust source with their 1-based line, without comments and literals.
fn lex(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |k: usize| -> char { c.get(k).copied().unwrap_or('\0') };
    let is_id = |ch: char| ch == '_' || ch.is_alphanumeric();
    // a "…" string body starting at `k` (after the quote); returns the index after the closing quote
    let skip_str = |mut k: usize, line: &mut usize| -> usize {
        while k < n {
            match c[k] {
                '\\' => {
                    if at(k + 1) == '\n' {
                        *line += 1;
                    }
                    k += 2;
                }
                '"' => return k + 1,
                ch => {
                    if ch == '\n' {
                        *line += 1;
                    }
                    k += 1;
                }
            }
        }
        k
    };
    // a raw string starting at `k` (at the first `#` or the quote); returns the index after it
    let skip_raw = |mut k: usize, line: &mut usize| -> usize {
        let mut hashes = 0;
        while at(k) == '#' {
            hashes += 1;
            k += 1;
        }
        k += 1; // the opening quote
        while k < n {
            if c[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#') {
                return k + 1 + hashes;
            }
            if c[k] == '\n' {
                *line += 1;
            }
            k += 1;
        }
        k
    };
    // a char literal starting at the quote `k`, or `None` for a lifetime
    let skip_char = |k: usize| -> Option<usize> {
        if at(k + 1) == '\\' {
            let mut e = k + 3; // after the escaped character
            while e < n && c[e] != '\'' {
                e += 1;
            }
            Some(e + 1)
        } else if at(k + 2) == '\'' {
            Some(k + 3)
        } else {
            None
        }
    };
    while i < n {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_str(i + 1, &mut line);
        } else if ch == '\'' {
            // a lifetime: skip the quote, its name is lexed as an (irrelevant) identifier
            i = skip_char(i).unwrap_or(i + 1);
        } else if ch == '$' && c[i + 1..].starts_with(&['c', 'r', 'a', 't', 'e']) && !is_id(at(i + 6)) {
            out.push((Tok::Ident("crate".into()), line));
            i += 6;
        } else if is_id(ch) {
            let start = i;
            while i < n && is_id(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = at(i);
            match word.as_str() {
                "r" | "br" | "cr" if next == '"' || (next == '#' && matches!(at(i + 1), '"' | '#')) => {
                    i = skip_raw(i, &mut line);
                }
                "r" if next == '#' && is_id(at(i + 1)) => i += 1, // raw identifier: lexed next round
                "b" | "c" if next == '"' => i = skip_str(i + 1, &mut line),
                "b" if next == '\'' => i = skip_char(i).unwrap_or(i + 1),
                _ if ch.is_ascii_digit() => {} // a number (suffixes included)
                _ => out.push((Tok::Ident(word), line)),
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// A path found in a file: its segments as written (`super`, `crate`, … included), and its line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawPath {
    /// module path of the scope it appears in (file module + inline modules)
    scope: Vec<String>,
    segs: Vec<String>,
    line: usize,
    /// named by a `pub use` (any visibility but private)
    reexport: bool,
    /// the name a `use` binds (its last segment, its alias, or `*`)
    name: String,
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

fn is(t: Option<&(Tok, usize)>, p: char) -> bool {
    matches!(t, Some((Tok::Punct(c), _)) if *c == p)
}

/// Parses a use tree at `toks[*i]` with `prefix` already seen, pushing every full path.
/// Each path comes with its line and the name it binds (its last segment, its alias, or `*`).
fn use_tree(toks: &[(Tok, usize)], i: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, usize, String)>) {
    let mut path = prefix;
    let before = out.len();
    let last = |p: &Vec<String>| p.last().cloned().unwrap_or_default();
    let line = toks.get(*i).map_or(0, |t| t.1);
    if matches!(toks.get(*i), Some((Tok::Sep, _))) {
        // `::name`: an extern crate
        path.push("::".into());
        *i += 1;
    }
    loop {
        match toks.get(*i) {
            Some((Tok::Ident(s), l)) if s == "self" && !path.is_empty() => {
                *i += 1;
                out.push((path.clone(), *l, last(&path)));
                break;
            }
            Some((Tok::Ident(s), _)) if s == "as" => break,
            Some((Tok::Ident(s), _)) => {
                path.push(s.clone());
                *i += 1;
                if matches!(toks.get(*i), Some((Tok::Sep, _))) {
                    *i += 1;
                } else {
                    out.push((path.clone(), line, last(&path)));
                    break;
                }
            }
            Some((Tok::Punct('*'), _)) => {
                *i += 1;
                out.push((path.clone(), line, "*".into()));
                break;
            }
            Some((Tok::Punct('{'), _)) => {
                *i += 1;
                loop {
                    match toks.get(*i) {
                        Some((Tok::Punct('}'), _)) | None => {
                            *i += 1;
                            return;
                        }
                        Some((Tok::Punct(','), _)) => *i += 1,
                        _ => {
                            let before = *i;
                            use_tree(toks, i, path.clone(), out);
                            if *i == before {
                                *i += 1; // never loop on something unexpected
                            }
                        }
                    }
                }
            }
            _ => break,
        }
    }
    // `as alias`
    if ident(toks.get(*i)) == Some("as") {
        if let (Some(alias), true) = (ident(toks.get(*i + 1)), out.len() == before + 1) {
            out[before].2 = alias.to_string();
        }
        *i += 2;
    }
}

/// Index after the item starting at `i` (up to its `;` or its closing `}` at depth 0).
fn skip_item(toks: &[(Tok, usize)], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct('{' | '(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth <= 0 {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth <= 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index after the attribute `#[…]` / `#![…]` starting at `i`, and whether it is `cfg(test)`.
fn attribute(toks: &[(Tok, usize)], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    if is(toks.get(j), '!') {
        j += 1;
    }
    if !is(toks.get(j), '[') {
        return None;
    }
    let start = j;
    let mut depth = 0;
    while j < toks.len() {
        match toks[j].0 {
            Tok::Punct('[') => depth += 1,
            Tok::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    let body: Vec<&Tok> = toks[start + 1..j].iter().map(|t| &t.0).collect();
    let cfg_test = body == [&Tok::Ident("cfg".into()), &Tok::Punct('('), &Tok::Ident("test".into()), &Tok::Punct(')')];
    Some((j + 1, cfg_test))
}

/// Whether the item starting after `toks[..i]` is `pub` or `pub(…)`.
fn is_pub(toks: &[(Tok, usize)], i: usize) -> bool {
    let mut j = i;
    if j > 0 && is(toks.get(j - 1), ')') {
        while j > 0 && !is(toks.get(j - 1), '(') {
            j -= 1;
        }
        j = j.saturating_sub(1);
    }
    j > 0 && ident(toks.get(j - 1)) == Some("pub")
}

/// Every path a file names: `use` trees and paths in code that start with `crate`, `super`,
/// `self` or a name in `children(scope)` (a child module of the scope); and every identifier the
/// file's code (outside `use` and unit tests) names.
fn scan(src: &str, module: &[String], is_child: &dyn Fn(&[String], &str) -> bool) -> (Vec<RawPath>, BTreeSet<String>) {
    let toks = lex(src);
    let mut out = Vec::new();
    let mut used = BTreeSet::new();
    let mut scope: Vec<String> = module.to_vec();
    let mut inline: Vec<i32> = Vec::new(); // brace depth at which each inline module opened
    let mut depth = 0i32;
    let mut i = 0;
    while i < toks.len() {
        let prev_sep_or_dot = i > 0 && matches!(toks[i - 1].0, Tok::Sep | Tok::Punct('.'));
        if let Tok::Ident(w) = &toks[i].0 {
            used.insert(w.clone());
        }
        match &toks[i].0 {
            Tok::Punct('#') => {
                if let Some((after, cfg_test)) = attribute(&toks, i) {
                    if cfg_test {
                        // skip further attributes, then the item
                        let mut j = after;
                        while is(toks.get(j), '#') {
                            match attribute(&toks, j) {
                                Some((a, _)) => j = a,
                                None => break,
                            }
                        }
                        i = skip_item(&toks, j);
                        continue;
                    }
                }
                i += 1;
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if inline.last() == Some(&depth) {
                    inline.pop();
                    scope.pop();
                }
                i += 1;
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some(name), true) = (ident(toks.get(i + 1)), is(toks.get(i + 2), '{')) {
                    inline.push(depth);
                    scope.push(name.to_string());
                    depth += 1;
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(k) if k == "use" && !prev_sep_or_dot => {
                let line = toks[i].1;
                let reexport = is_pub(&toks, i);
                i += 1;
                if !matches!(toks.get(i), Some((Tok::Ident(_) | Tok::Sep | Tok::Punct('{'), _))) {
                    continue;
                }
                let mut paths = Vec::new();
                use_tree(&toks, &mut i, Vec::new(), &mut paths);
                for (segs, l, name) in paths {
                    out.push(RawPath { scope: scope.clone(), segs, line: l.max(line), reexport, name });
                }
            }
            Tok::Ident(k)
                if !prev_sep_or_dot
                    && matches!(toks.get(i + 1), Some((Tok::Sep, _)))
                    && (matches!(k.as_str(), "crate" | "super" | "self") || is_child(&scope, k)) =>
            {
                let line = toks[i].1;
                let mut segs = vec![k.clone()];
                i += 1;
                while matches!(toks.get(i), Some((Tok::Sep, _))) {
                    match ident(toks.get(i + 1)) {
                        Some(s) => {
                            segs.push(s.to_string());
                            i += 2;
                        }
                        None => break, // `::<` turbofish, `::{`
                    }
                }
                let name = segs.last().cloned().unwrap_or_default();
                out.push(RawPath { scope: scope.clone(), segs, line, reexport: false, name });
            }
            _ => i += 1,
        }
    }
    (out, used)
}

/// The absolute module path (`crate::` stripped) a path names, or `None` for other crates and for
/// names of the scope itself.
fn absolute(scope: &[String], segs: &[String], is_child: &dyn Fn(&[String], &str) -> bool) -> Option<Vec<String>> {
    let first = segs.first()?;
    match first.as_str() {
        "crate" => Some(segs[1..].to_vec()),
        "super" | "self" => {
            let mut base = scope.to_vec();
            let mut k = 0;
            if segs[0] == "self" {
                k = 1;
            }
            while segs.get(k).map(String::as_str) == Some("super") {
                base.pop()?;
                k += 1;
            }
            base.extend(segs[k..].iter().cloned());
            Some(base)
        }
        "::" => None,
        name if is_child(scope, name) => Some(scope.iter().chain(segs).cloned().collect()),
        _ => None,
    }
}

struct Source {
    /// module path → file (relative, `src/…`)
    modules: BTreeMap<Vec<String>, String>,
    /// `#[macro_export]` macro name → defining file
    macros: BTreeMap<String, String>,
    /// file → its text
    texts: BTreeMap<String, String>,
    /// file → its module path
    module_of: BTreeMap<String, Vec<String>>,
}

fn read_source(root: &Path) -> Source {
    let mut s = Source {
        modules: BTreeMap::new(),
        macros: BTreeMap::new(),
        texts: BTreeMap::new(),
        module_of: BTreeMap::new(),
    };
    for e in walkdir::WalkDir::new(root.join("src")).sort_by_file_name() {
        let e = e.expect("walking src/");
        if !e.file_type().is_file() || e.path().extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap();
        let file = rel.to_str().expect("UTF-8 path").to_string();
        let text = std::fs::read_to_string(e.path()).expect("reading a source file");
        let mut module: Vec<String> =
            rel.with_extension("").iter().skip(1).map(|c| c.to_str().unwrap().to_string()).collect();
        if module.last().map(String::as_str) == Some("mod") {
            module.pop();
        }
        if module == ["lib"] || module == ["main"] {
            module.clear();
        }
        let toks = lex(&text);
        for w in toks.windows(5) {
            // `#[macro_export]` then `macro_rules! name`: tokens `macro_export ] macro_rules ! name`
            if let [(Tok::Ident(m), _), (Tok::Punct(']'), _), (Tok::Ident(r), _), (Tok::Punct('!'), _), (Tok::Ident(name), _)] =
                w
            {
                if m == "macro_export" && r == "macro_rules" {
                    s.macros.insert(name.clone(), file.clone());
                }
            }
        }
        if !EXEMPT.contains(&file.as_str()) {
            s.modules.insert(module.clone(), file.clone());
        }
        s.module_of.insert(file.clone(), module);
        s.texts.insert(file, text);
    }
    s
}

impl Source {
    /// The file an absolute path belongs to: the file of its longest module prefix.
    fn file_of(&self, abs: &[String]) -> Option<&str> {
        for k in (1..=abs.len()).rev() {
            if let Some(f) = self.modules.get(&abs[..k]) {
                return Some(f);
            }
        }
        abs.first().and_then(|m| self.macros.get(m)).map(String::as_str)
    }

    fn is_child(&self, scope: &[String], name: &str) -> bool {
        let mut p = scope.to_vec();
        p.push(name.to_string());
        self.modules.contains_key(&p)
    }
}

/// An edge's evidence: where the first path making it appears.
#[derive(Clone, Debug)]
struct Why {
    line: usize,
    path: String,
}

struct Graph {
    edges: BTreeMap<(String, String), Why>,
    files: BTreeSet<String>,
}

fn build_graph(root: &Path) -> Graph {
    let src = read_source(root);
    let mut g = Graph { edges: BTreeMap::new(), files: BTreeSet::new() };
    let is_child = |scope: &[String], name: &str| src.is_child(scope, name);
    for (file, text) in &src.texts {
        if EXEMPT.contains(&file.as_str()) {
            continue;
        }
        g.files.insert(file.clone());
        let module = &src.module_of[file];
        let (paths, used) = scan(text, module, &is_child);
        for p in paths {
            let Some(abs) = absolute(&p.scope, &p.segs, &is_child) else { continue };
            let below = abs.len() > module.len() && abs.starts_with(module);
            if p.reexport && below && !used.contains(&p.name) {
                // `pub use child::X` that this file's own code does not use: the module's API (a
                // facade), not a dependency of this file
                continue;
            }
            let Some(to) = src.file_of(&abs) else { continue };
            if to != file {
                g.edges.entry((file.clone(), to.to_string())).or_insert(Why { line: p.line, path: p.segs.join("::") });
            }
        }
    }
    g
}

/// The layers of README.md's "How it works" ```` ```layers ```` block, top first.
fn read_layers(root: &Path) -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(root.join("README.md")).expect("reading README.md");
    let section = readme.split("\n## How it works").nth(1).expect("README.md has a `## How it works` section");
    let section = section.split("\n## ").next().unwrap();
    let block = section.split("\n```layers\n").nth(1).expect("`How it works` has a ```layers block");
    let block = block.split("\n```").next().unwrap();
    let layers: Vec<Vec<String>> = block
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .map(|l| l.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).map(String::from).collect())
        .filter(|l: &Vec<String>| !l.is_empty())
        .collect();
    assert!(!layers.is_empty(), "the ```layers block of README.md is empty");
    layers
}

fn top_module(file: &str) -> String {
    let rest = file.strip_prefix("src/").unwrap();
    rest.split('/').next().unwrap().trim_end_matches(".rs").to_string()
}

/// A shortest cycle through `start` inside `members`, as a list of files (first = last).
fn cycle_through<'a>(dg: &DiGraphMap<&'a str, ()>, members: &BTreeSet<&'a str>, start: &'a str) -> Vec<String> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<&str> = dg.neighbors(n).collect();
        next.sort();
        for b in next {
            if !members.contains(b) {
                continue;
            }
            if b == start {
                let mut path = vec![start.to_string(), n.to_string()];
                let mut cur = n;
                while cur != start {
                    cur = prev[cur];
                    path.push(cur.to_string());
                }
                path.reverse();
                return path;
            }
            if !prev.contains_key(b) && b != start {
                prev.insert(b, n);
                queue.push_back(b);
            }
        }
    }
    vec![start.to_string()]
}

/// The checks on the tree at `root`: a summary line and every violation.
fn check(root: &Path, known_cycles: &[(&str, &str)]) -> (String, Vec<String>) {
    let layers = read_layers(root);
    let g = build_graph(root);
    if std::env::var_os("ARCHITECTURE_DUMP").is_some() {
        // `ARCHITECTURE_DUMP=1 cargo test --test architecture -- --nocapture`: every edge, with why
        for ((a, b), why) in &g.edges {
            println!("{a} -> {b}    ({a}:{} uses {})", why.line, why.path);
        }
    }
    let mut failures = Vec::new();

    // (a) cycles between files
    let mut dg: DiGraphMap<&str, ()> = DiGraphMap::new();
    for f in &g.files {
        dg.add_node(f);
    }
    let known = |a: &str, b: &str| known_cycles.iter().any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b));
    for (a, b) in g.edges.keys() {
        if !known(a, b) {
            dg.add_edge(a, b, ());
        }
    }
    let mut known_skipped = 0;
    for (a, b) in known_cycles {
        let edge = |x: &str, y: &str| g.edges.contains_key(&(x.to_string(), y.to_string()));
        if edge(a, b) && edge(b, a) {
            known_skipped += 1;
        } else {
            failures.push(format!(
                "KNOWN_CYCLE_TODO lists {a} ↔ {b}, but these files no longer import each other: remove the entry"
            ));
        }
    }
    let mut cycles = 0;
    for scc in tarjan_scc(&dg) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<&str> = scc.iter().copied().collect();
        cycles += 1;
        let start = *members.iter().next().unwrap();
        let cycle = cycle_through(&dg, &members, start);
        let mut msg = format!("import cycle between files:\n    {}", cycle.join("\n  → "));
        for w in cycle.windows(2) {
            let why = &g.edges[&(w[0].clone(), w[1].clone())];
            msg += &format!("\n      {}:{} uses {}", w[0], why.line, why.path);
        }
        if members.len() > cycle.len() - 1 {
            msg += &format!("\n    (all files of this strongly connected set: {:?})", members);
        }
        failures.push(msg);
    }

    // (b) imports across layers: only the own layer or below
    let layer_of: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i))).collect();
    let modules: BTreeSet<String> = g.files.iter().map(|f| top_module(f)).collect();
    for m in &modules {
        if !layer_of.contains_key(m.as_str()) {
            failures.push(format!("module `{m}` is missing from the ```layers block of README.md"));
        }
    }
    for m in layer_of.keys() {
        if !modules.contains(*m) {
            failures.push(format!("README.md's ```layers block names `{m}`, which is not a module of src/"));
        }
    }
    let mut upward = 0;
    for ((a, b), why) in &g.edges {
        let (ma, mb) = (top_module(a), top_module(b));
        let (Some(&la), Some(&lb)) = (layer_of.get(ma.as_str()), layer_of.get(mb.as_str())) else { continue };
        if lb < la {
            upward += 1;
            failures.push(format!(
                "upward import: {a}:{} uses {} ({b}): `{ma}` (layer {}) may not import `{mb}` (layer {})",
                why.line,
                why.path,
                la + 1,
                lb + 1
            ));
        }
    }

    let summary = format!(
        "architecture: {} files, {} file imports, {} modules in {} layers; {} cycle(s), {} upward import(s), {} known cycle(s) skipped (KNOWN_CYCLE_TODO)",
        g.files.len(),
        g.edges.len(),
        modules.len(),
        layers.len(),
        cycles,
        upward,
        known_skipped
    );
    (summary, failures)
}

#[test]
fn no_cycles_and_no_upward_imports() {
    let (summary, failures) = check(Path::new(env!("CARGO_MANIFEST_DIR")), KNOWN_CYCLE_TODO);
    println!("{summary}");
    assert!(failures.is_empty(), "{} architecture violation(s):\n\n{}\n", failures.len(), failures.join("\n\n"));
}

/// The checks themselves, on a small tree with one violation of each kind.
#[test]
fn check_finds_cycles_upward_imports_unlisted_modules_and_stale_todos() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("README.md", "# x\n\n## How it works\n\n```layers\ntop\nlow\n```\n\n## Next\n\n```layers\nignored\n```\n"),
        ("src/lib.rs", "pub mod top; pub mod low; pub mod extra;"),
        ("src/top/mod.rs", "pub mod a;\npub mod b;\npub use a::A;\npub use b::B;\npub fn f(_: B) {}\n"),
        ("src/top/a.rs", "use super::b::B;\npub struct A(B);\n"),
        ("src/top/b.rs", "pub struct B;\nfn f() { let _ = crate::top::a::A; }\n"),
        ("src/low.rs", "// crate::top::in_a_comment\n\nuse crate::top::A;\n"),
        ("src/extra.rs", "pub fn e() -> &'static str { \"crate::top::in_a_string\" }\n"),
    ];
    for (f, text) in files {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let (summary, failures) = check(dir.path(), &[("src/low.rs", "src/top/a.rs")]);
    assert_eq!(
        summary,
        "architecture: 5 files, 4 file imports, 3 modules in 2 layers; 1 cycle(s), 1 upward import(s), \
         0 known cycle(s) skipped (KNOWN_CYCLE_TODO)"
    );
    let all = failures.join("\n\n");
    assert_eq!(failures.len(), 4, "{all}");
    assert!(all.contains("import cycle between files:\n    src/top/a.rs\n  → src/top/b.rs\n  → src/top/a.rs"), "{all}");
    assert!(all.contains("upward import: src/low.rs:3 uses crate::top::A (src/top/mod.rs)"), "{all}");
    assert!(all.contains("module `extra` is missing"), "{all}");
    assert!(all.contains("KNOWN_CYCLE_TODO lists src/low.rs ↔ src/top/a.rs, but these files no longer"), "{all}");
    // a listed pair is left out of the cycle check
    let (_, failures) = check(dir.path(), &[("src/top/b.rs", "src/top/a.rs")]);
    assert!(failures.iter().all(|f| !f.contains("cycle")), "{failures:?}");
}

// --- the scanner itself ---------------------------------------------------------------------

fn paths_of(src: &str, module: &[&str], children: &[&[&str]]) -> Vec<Vec<String>> {
    let children: Vec<Vec<String>> = children.iter().map(|c| c.iter().map(|s| s.to_string()).collect()).collect();
    let is_child = |scope: &[String], name: &str| {
        let mut p = scope.to_vec();
        p.push(name.into());
        children.contains(&p)
    };
    let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    scan(src, &module, &is_child).0.into_iter().filter_map(|p| absolute(&p.scope, &p.segs, &is_child)).collect()
}

fn v(s: &str) -> Vec<String> {
    s.split("::").map(String::from).collect()
}

#[test]
fn scanner_reads_use_trees_and_paths_but_not_comments_strings_or_unit_tests() {
    let src = r##"
        //! docs naming crate::doc::comment
        use std::path::Path;
        use crate::{a::b, c::{self, d::E as F},
            g::*};
        use super::sibling::{X, Y};
        pub use child::Z;
        /* crate::block::comment /* nested crate::nested */ */
        fn f<'a>(x: &'a str) -> char {
            let s = "crate::in::string \" crate::escaped";
            let r = r#"crate::raw "# ;
            let c = '"'; let q = '\''; let b = b'x';
            crate::h::i::<u8>(s);
            x.self_method(); Self::new(); other::crate_like();
            super::super::up::thing();
            'x'
        }
        mod inline { use super::child::W; fn g() { self::local(); } }
        #[cfg(test)]
        mod tests { use crate::test_only::T; }
        macro_rules! m { () => { $crate::via::macro_path!() } }
    "##;
    let got = paths_of(src, &["m", "file"], &[&["m", "file", "child"]]);
    let want = vec![
        v("a::b"),
        v("c"),
        v("c::d::E"),
        v("g"),
        v("m::sibling::X"),
        v("m::sibling::Y"),
        v("m::file::child::Z"),
        v("h::i"),
        v("up::thing"),
        v("m::file::child::W"),
        v("m::file::inline::local"),
        v("via::macro_path"),
    ];
    assert_eq!(got, want);
}

/// Every environment variable is read in one place, `src/env.rs` (outside unit tests).
#[test]
fn environment_is_read_only_in_src_env() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for e in walkdir::WalkDir::new(&src).into_iter().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "rs") || p.ends_with("env.rs") {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            let direct = l.replace("crate::env::", "");
            if direct.contains("std::env::var") || direct.contains("env::var_os(") || direct.contains("env::var(") {
                offenders.push(format!("{}:{}: {}", p.strip_prefix(&src).unwrap().display(), i + 1, l));
            }
        }
    }
    assert!(offenders.is_empty(), "read the environment through crate::env:\n{}", offenders.join("\n"));
}
