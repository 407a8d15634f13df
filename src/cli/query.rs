//! The query language: `deps(X [, depth])`, `rdeps(U, X [, depth])`, `somepath(S, E)` (the
//! targets on one dependency path from S to E), `allpaths(S, E)` (on every one), `kind(RULE, X)`, target
//! patterns, `set(a b …)` of patterns and workspace files, and set operators `+` (union), `-`
//! (difference), `^` (intersection), left to right. A file stands for the targets that read it
//! directly ([`super::inputs::InputIndex::readers`]), so `rdeps(//..., set(lib/a.py))` is what
//! an edit of `lib/a.py` affects.

use std::collections::BTreeSet;

use crate::loading::TargetGraph;
use crate::model::label::{Label, PackagePath, Pattern};

/// A parsed query expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Pattern(Pattern),
    Deps(Box<Expr>, Option<usize>),
    Rdeps(Box<Expr>, Box<Expr>, Option<usize>),
    SomePath(Box<Expr>, Box<Expr>),
    AllPaths(Box<Expr>, Box<Expr>),
    Kind(String, Box<Expr>),
    Union(Box<Expr>, Box<Expr>),
    Except(Box<Expr>, Box<Expr>),
    Intersect(Box<Expr>, Box<Expr>),
    /// `set(a b …)`: target patterns and workspace-relative file paths.
    Set(Vec<Member>),
}

/// A member of `set(...)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Member {
    Pattern(Pattern),
    /// A workspace-relative file path (`services/api/app.py`).
    File(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Comma,
    Op(char),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::Open)
            }
            ')' => {
                chars.next();
                out.push(Tok::Close)
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma)
            }
            '+' | '^' => {
                chars.next();
                out.push(Tok::Op(c))
            }
            '-' => {
                chars.next();
                out.push(Tok::Op('-'))
            }
            '"' | '\'' => {
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => w.push(x),
                        None => return Err("unterminated quote".into()),
                    }
                }
                out.push(Tok::Word(w));
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = chars.peek() {
                    if " \t\n(),+^".contains(x) || (x == '-' && w.is_empty()) {
                        break;
                    }
                    w.push(x);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    current: Option<&'a PackagePath>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {what}, found {}", describe(other.as_ref()))),
        }
    }
    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        while let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let right = self.term()?;
            left = match op {
                '+' => Expr::Union(Box::new(left), Box::new(right)),
                '-' => Expr::Except(Box::new(left), Box::new(right)),
                _ => Expr::Intersect(Box::new(left), Box::new(right)),
            };
        }
        Ok(left)
    }
    fn depth(&mut self) -> Result<Option<usize>, String> {
        if self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            match self.next() {
                Some(Tok::Word(w)) => w.parse().map(Some).map_err(|_| format!("depth must be a number, got `{w}`")),
                other => Err(format!("expected a depth, found {}", describe(other.as_ref()))),
            }
        } else {
            Ok(None)
        }
    }
    fn term(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.expr()?;
                self.expect(Tok::Close, "`)`")?;
                Ok(e)
            }
            Some(Tok::Word(w)) if self.peek() == Some(&Tok::Open) => {
                self.pos += 1;
                let e = match w.as_str() {
                    "deps" => {
                        let x = self.expr()?;
                        let d = self.depth()?;
                        Expr::Deps(Box::new(x), d)
                    }
                    "rdeps" => {
                        let u = self.expr()?;
                        self.expect(Tok::Comma, "`,` after the universe of rdeps(U, X)")?;
                        let x = self.expr()?;
                        let d = self.depth()?;
                        Expr::Rdeps(Box::new(u), Box::new(x), d)
                    }
                    "somepath" | "allpaths" => {
                        let s = self.expr()?;
                        self.expect(Tok::Comma, &format!("`,` between the start and end of {w}(S, E)"))?;
                        let e = self.expr()?;
                        if w == "somepath" {
                            Expr::SomePath(Box::new(s), Box::new(e))
                        } else {
                            Expr::AllPaths(Box::new(s), Box::new(e))
                        }
                    }
                    "set" => {
                        let mut members = Vec::new();
                        while let Some(Tok::Word(m)) = self.peek().cloned() {
                            self.pos += 1;
                            members.push(self.member(&m)?);
                        }
                        Expr::Set(members)
                    }
                    "kind" => {
                        let k = match self.next() {
                            Some(Tok::Word(k)) => k,
                            other => {
                                return Err(format!(
                                    "kind() takes a rule name first, found {}",
                                    describe(other.as_ref())
                                ))
                            }
                        };
                        self.expect(Tok::Comma, "`,` after the rule name of kind(RULE, X)")?;
                        Expr::Kind(k, Box::new(self.expr()?))
                    }
                    f => {
                        return Err(format!(
                            "unknown query function `{f}`; known: deps, rdeps, somepath, allpaths, kind, set"
                        ))
                    }
                };
                self.expect(Tok::Close, "`)`")?;
                Ok(e)
            }
            Some(Tok::Word(w)) => Pattern::parse(&w, self.current).map(Expr::Pattern).map_err(|e| e.to_string()),
            other => Err(format!("expected a pattern or function, found {}", describe(other.as_ref()))),
        }
    }
}

impl Parser<'_> {
    fn member(&self, m: &str) -> Result<Member, String> {
        if m.starts_with("//") || m.starts_with(':') {
            return Pattern::parse(m, self.current).map(Member::Pattern).map_err(|e| e.to_string());
        }
        crate::fs::normalize_relative(std::path::Path::new(m))
            .and_then(|p| p.to_str().map(String::from))
            .filter(|p| !p.is_empty())
            .map(Member::File)
            .ok_or_else(|| format!("`{m}` in set(): files are paths relative to the workspace root, inside it"))
    }
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "the end of the query".into(),
        Some(Tok::Word(w)) => format!("`{w}`"),
        Some(Tok::Open) => "`(`".into(),
        Some(Tok::Close) => "`)`".into(),
        Some(Tok::Comma) => "`,`".into(),
        Some(Tok::Op(c)) => format!("`{c}`"),
    }
}

/// Parses a query; errors say what was expected and what was found.
pub fn parse(s: &str, current: Option<&PackagePath>) -> Result<Expr, String> {
    let mut p = Parser { toks: lex(s)?, pos: 0, current };
    if p.toks.is_empty() {
        return Err("the query is empty".into());
    }
    let e = p.expr()?;
    if p.pos < p.toks.len() {
        return Err(format!("unexpected {} after the query", describe(p.peek())));
    }
    Ok(e)
}

impl Expr {
    /// Every pattern the expression mentions: what must be loaded to evaluate it.
    pub fn patterns(&self, out: &mut Vec<Pattern>) {
        match self {
            Expr::Pattern(p) => out.push(p.clone()),
            Expr::Set(ms) => out.extend(ms.iter().filter_map(|m| match m {
                Member::Pattern(p) => Some(p.clone()),
                Member::File(_) => None,
            })),
            Expr::Deps(x, _) | Expr::Kind(_, x) => x.patterns(out),
            Expr::Rdeps(a, b, _)
            | Expr::SomePath(a, b)
            | Expr::AllPaths(a, b)
            | Expr::Union(a, b)
            | Expr::Except(a, b)
            | Expr::Intersect(a, b) => {
                a.patterns(out);
                b.patterns(out)
            }
        }
    }

    /// Whether a `set()` names files (then evaluate with [`Expr::eval_with`] over the whole workspace).
    pub fn has_files(&self) -> bool {
        match self {
            Expr::Pattern(_) => false,
            Expr::Set(ms) => ms.iter().any(|m| matches!(m, Member::File(_))),
            Expr::Deps(x, _) | Expr::Kind(_, x) => x.has_files(),
            Expr::Rdeps(a, b, _)
            | Expr::SomePath(a, b)
            | Expr::AllPaths(a, b)
            | Expr::Union(a, b)
            | Expr::Except(a, b)
            | Expr::Intersect(a, b) => a.has_files() || b.has_files(),
        }
    }

    /// Evaluates against a graph holding (at least) the closure of every pattern; files in `set()`
    /// stand for nothing (see [`Expr::eval_with`]).
    pub fn eval(&self, g: &TargetGraph) -> BTreeSet<Label> {
        self.eval_with(g, &|_| BTreeSet::new())
    }

    /// [`Expr::eval`] where a file in `set()` stands for `readers(file)`: the targets reading it.
    pub fn eval_with(&self, g: &TargetGraph, readers: &dyn Fn(&str) -> BTreeSet<Label>) -> BTreeSet<Label> {
        let ev = |x: &Expr| x.eval_with(g, readers);
        match self {
            Expr::Pattern(p) => g.nodes.keys().filter(|l| p.matches(l)).cloned().collect(),
            Expr::Set(ms) => ms
                .iter()
                .flat_map(|m| match m {
                    Member::Pattern(p) => g.nodes.keys().filter(|l| p.matches(l)).cloned().collect(),
                    Member::File(f) => readers(f),
                })
                .collect(),
            Expr::Deps(x, None) => g.deps(&ev(x)),
            Expr::Deps(x, Some(d)) => bounded(g, ev(x), *d, |l| g.direct_deps(l)),
            Expr::Rdeps(u, x, depth) => {
                let all = g.rdeps(&ev(u), &ev(x));
                match depth {
                    None => all,
                    Some(d) => {
                        let rev = |l: &Label| {
                            all.iter().filter(|c| g.direct_deps(c).contains(l)).cloned().collect::<Vec<_>>()
                        };
                        bounded(g, ev(x).intersection(&all).cloned().collect(), *d, rev)
                    }
                }
            }
            Expr::SomePath(s, e) => g.somepath(&ev(s), &ev(e)).into_iter().collect(),
            Expr::AllPaths(s, e) => g.allpaths(&ev(s), &ev(e)),
            Expr::Kind(k, x) => ev(x).into_iter().filter(|l| g.nodes.get(l).is_some_and(|n| &n.kind == k)).collect(),
            Expr::Union(a, b) => ev(a).union(&ev(b)).cloned().collect(),
            Expr::Except(a, b) => ev(a).difference(&ev(b)).cloned().collect(),
            Expr::Intersect(a, b) => ev(a).intersection(&ev(b)).cloned().collect(),
        }
    }
}

fn bounded(
    _g: &TargetGraph,
    start: BTreeSet<Label>,
    depth: usize,
    next: impl Fn(&Label) -> Vec<Label>,
) -> BTreeSet<Label> {
    let mut seen = start.clone();
    let mut frontier: Vec<Label> = start.into_iter().collect();
    for _ in 0..depth {
        let mut nf = Vec::new();
        for l in &frontier {
            for d in next(l) {
                if seen.insert(d.clone()) {
                    nf.push(d);
                }
            }
        }
        frontier = nf;
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert!(matches!(parse("//...", None).unwrap(), Expr::Pattern(_)));
        assert!(matches!(parse("deps(//a:b)", None).unwrap(), Expr::Deps(_, None)));
        assert!(matches!(parse("deps(//a:b, 1)", None).unwrap(), Expr::Deps(_, Some(1))));
        assert!(matches!(parse("rdeps(//..., //a:b)", None).unwrap(), Expr::Rdeps(..)));
        assert!(matches!(parse("kind(layer, deps(//a:b))", None).unwrap(), Expr::Kind(..)));
        assert!(matches!(parse("kind('cnb_image', //...) - //a:b", None).unwrap(), Expr::Except(..)));
        assert!(matches!(parse("//a/... ^ //b:c + //d:e", None).unwrap(), Expr::Union(..)));
        let e = parse("rdeps(//..., set(lib/a.py ./lib/b.py //x:y 'odd+name'))", None).unwrap();
        assert!(e.has_files());
        let Expr::Rdeps(_, x, None) = e else { panic!() };
        let Expr::Set(ms) = *x else { panic!() };
        assert_eq!(ms[0], Member::File("lib/a.py".into()));
        assert_eq!(ms[1], Member::File("lib/b.py".into()));
        assert!(matches!(ms[2], Member::Pattern(_)));
        assert_eq!(ms[3], Member::File("odd+name".into()));
        assert!(!parse("set(//a:b)", None).unwrap().has_files());
    }

    #[test]
    fn rejects() {
        for (q, want) in [
            ("", "empty"),
            ("deps(", "expected a pattern"),
            ("deps(//a:b", "expected `)`"),
            ("foo(//a:b)", "unknown query function `foo`"),
            ("rdeps(//a:b)", "`,` after the universe"),
            ("//a:b )", "unexpected `)`"),
            ("kind(layer //a:b)", "`,` after the rule name"),
            ("//a b:c", "unexpected"),
            ("set(../x)", "inside it"),
            ("set(/etc/passwd)", "inside it"),
        ] {
            let e = parse(q, None).unwrap_err();
            assert!(e.contains(want), "{q:?}: {e}");
        }
    }
}
