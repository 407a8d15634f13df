//! Package relations as written in `Depends`, `Pre-Depends` and `Provides`: `a (>= 1) | b:any, c`.
//! Parsing and version-constraint checks only; choosing packages is `resolve`'s job.

use std::cmp::Ordering;
use std::fmt;

use super::error::{DebianError, Result};
use super::version::compare_versions;

/// A version operator of a relation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionOp {
    /// `<<`
    Lt,
    /// `<=` (and the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl VersionOp {
    /// True if `candidate` compared with the constraint's version (`candidate.cmp(wanted)`)
    /// satisfies this operator.
    pub fn accepts(self, ord: Ordering) -> bool {
        match self {
            VersionOp::Lt => ord == Ordering::Less,
            VersionOp::Le => ord != Ordering::Greater,
            VersionOp::Eq => ord == Ordering::Equal,
            VersionOp::Ge => ord != Ordering::Less,
            VersionOp::Gt => ord == Ordering::Greater,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            VersionOp::Lt => "<<",
            VersionOp::Le => "<=",
            VersionOp::Eq => "=",
            VersionOp::Ge => ">=",
            VersionOp::Gt => ">>",
        }
    }
}

/// One package relation: a name, an optional architecture qualifier (`:any`, `:native`, `:amd64`),
/// an optional version constraint and an optional architecture restriction (`[amd64 !i386]`).
/// Build profiles (`<!nocheck>`) are parsed and dropped: they only matter when building from source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub arch_qualifier: Option<String>,
    pub constraint: Option<(VersionOp, String)>,
    /// `[a b]` / `[!a !b]` as written, without the brackets.
    pub arch_restriction: Option<Vec<String>>,
}

/// A list of alternatives (`a | b`); the outer list of a field is a conjunction.
pub type Alternatives = Vec<Relation>;

impl Relation {
    /// True if `version` satisfies the constraint (always when there is none).
    pub fn version_matches(&self, version: &str) -> bool {
        match &self.constraint {
            None => true,
            Some((op, want)) => op.accepts(compare_versions(version, want)),
        }
    }

    /// True if the relation applies on `arch` (its `[...]` restriction, if any, allows `arch`).
    /// Only plain architecture names are understood, not wildcards like `linux-any`.
    pub fn applies_to(&self, arch: &str) -> bool {
        let Some(list) = &self.arch_restriction else {
            return true;
        };
        let negated = list.iter().all(|a| a.starts_with('!'));
        if negated {
            !list.iter().any(|a| &a[1..] == arch || arch_wildcard(&a[1..], arch))
        } else {
            list.iter().any(|a| a == arch || arch_wildcard(a, arch))
        }
    }
}

fn arch_wildcard(pattern: &str, arch: &str) -> bool {
    pattern == "any" || pattern == format!("linux-{arch}") || pattern == "linux-any"
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({} {v})", op.as_str())?;
        }
        if let Some(a) = &self.arch_restriction {
            write!(f, " [{}]", a.join(" "))?;
        }
        Ok(())
    }
}

/// Formats alternatives as `a | b (>= 1)`.
pub fn format_alternatives(alts: &[Relation]) -> String {
    alts.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" | ")
}

/// Parses a relation field (`Depends`, `Pre-Depends`): comma-separated groups of `|`-separated
/// alternatives. An empty field is an empty list.
pub fn parse_relations(field: &str) -> Result<Vec<Alternatives>> {
    let mut out = Vec::new();
    for group in field.split(',') {
        if group.trim().is_empty() {
            continue; // an empty field, or a trailing comma (dpkg tolerates it)
        }
        let alts = group
            .split('|')
            .map(|r| parse_relation(r).map_err(|reason| bad(field, reason)))
            .collect::<Result<Vec<_>>>()?;
        out.push(alts);
    }
    Ok(out)
}

/// Parses a `Provides` field: comma-separated relations with at most an `=` constraint.
pub fn parse_provides(field: &str) -> Result<Vec<Relation>> {
    let groups = parse_relations(field)?;
    let mut out = Vec::new();
    for g in groups {
        if g.len() != 1 {
            return Err(bad(field, "`|` is not allowed in Provides".into()));
        }
        let r = g.into_iter().next().expect("one");
        if matches!(&r.constraint, Some((op, _)) if *op != VersionOp::Eq) {
            return Err(bad(field, format!("`{r}`: only `=` is allowed in Provides")));
        }
        out.push(r);
    }
    Ok(out)
}

fn bad(text: &str, reason: String) -> DebianError {
    DebianError::BadRelation { text: text.trim().to_string(), reason }
}

/// Parses one relation: `name[:qual] [(op version)] [[archs]] [<profiles>...]`.
pub fn parse_relation(s: &str) -> std::result::Result<Relation, String> {
    let s = s.trim();
    let name_end = s.find(|c: char| c.is_whitespace() || c == '(' || c == '[' || c == '<').unwrap_or(s.len());
    let (full_name, mut rest) = (&s[..name_end], s[name_end..].trim_start());
    let (name, arch_qualifier) = match full_name.split_once(':') {
        Some((n, q)) => (n, Some(q.to_string())),
        None => (full_name, None),
    };
    if !valid_name(name) {
        return Err(format!("`{full_name}` is not a package name"));
    }
    if arch_qualifier
        .as_deref()
        .is_some_and(|q| q.is_empty() || !q.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return Err(format!("`{full_name}` has a bad architecture qualifier"));
    }
    let mut constraint = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')').ok_or_else(|| format!("`{s}`: unclosed `(`"))?;
        let inner = r[..close].trim();
        rest = r[close + 1..].trim_start();
        let op_len = inner.find(|c: char| !matches!(c, '<' | '>' | '=')).unwrap_or(inner.len());
        let op = match &inner[..op_len] {
            "<<" => VersionOp::Lt,
            "<=" | "<" => VersionOp::Le,
            "=" => VersionOp::Eq,
            ">=" | ">" => VersionOp::Ge,
            ">>" => VersionOp::Gt,
            o => return Err(format!("`{s}`: `{o}` is not a version operator")),
        };
        let v = inner[op_len..].trim();
        if v.is_empty() || v.contains(char::is_whitespace) {
            return Err(format!("`{s}`: `{v}` is not a version"));
        }
        constraint = Some((op, v.to_string()));
    }
    let mut arch_restriction = None;
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or_else(|| format!("`{s}`: unclosed `[`"))?;
        let list: Vec<String> = r[..close].split_whitespace().map(str::to_string).collect();
        if list.is_empty() {
            return Err(format!("`{s}`: empty architecture list"));
        }
        arch_restriction = Some(list);
        rest = r[close + 1..].trim_start();
    }
    while let Some(r) = rest.strip_prefix('<') {
        let close = r.find('>').ok_or_else(|| format!("`{s}`: unclosed `<`"))?;
        rest = r[close + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(format!("`{s}`: unexpected `{rest}`"));
    }
    Ok(Relation { name: name.to_string(), arch_qualifier, constraint, arch_restriction })
}

/// Debian package names: lowercase letters, digits, `+ - .`, at least two characters, starting
/// with a letter or digit.
pub fn valid_name(n: &str) -> bool {
    n.len() >= 2
        && n.as_bytes()[0].is_ascii_alphanumeric()
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(name: &str) -> Relation {
        Relation { name: name.into(), arch_qualifier: None, constraint: None, arch_restriction: None }
    }

    #[test]
    fn parses_depends() {
        let d = parse_relations(
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any, perl:native (<< 6~),zlib1g (= 1:1.2.13.dfsg-1)",
        )
        .unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(d[0][0].constraint, Some((VersionOp::Ge, "2.34".into())));
        assert_eq!(d[1].len(), 2);
        assert_eq!(d[1][1], rel("debconf-2.0"));
        assert_eq!(d[2][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(d[3][0].constraint, Some((VersionOp::Lt, "6~".into())));
        assert_eq!(d[4][0].constraint, Some((VersionOp::Eq, "1:1.2.13.dfsg-1".into())));
        assert_eq!(format_alternatives(&d[1]), "debconf (>= 0.5) | debconf-2.0");
        assert_eq!(d[3][0].to_string(), "perl:native (<< 6~)");
    }

    #[test]
    fn parses_all_operators_and_tolerates_spacing() {
        for (t, op) in [
            ("a(<<1)", VersionOp::Lt),
            ("a (<= 1)", VersionOp::Le),
            ("a (< 1)", VersionOp::Le),
            ("a ( = 1 )", VersionOp::Eq),
            ("a (>=1)", VersionOp::Ge),
            ("a (> 1)", VersionOp::Ge),
            ("a (>> 1)", VersionOp::Gt),
        ] {
            let r = parse_relation(&t.replace('a', "ab")).unwrap();
            assert_eq!(r.constraint, Some((op, "1".into())), "{t}");
        }
    }

    #[test]
    fn parses_arch_restrictions_and_profiles() {
        let r = parse_relation("gcc-multilib [amd64 i386] <!nocheck> <cross>").unwrap();
        assert!(r.applies_to("amd64") && !r.applies_to("arm64"));
        let r = parse_relation("foo [!amd64]").unwrap();
        assert!(!r.applies_to("amd64") && r.applies_to("arm64"));
        assert!(parse_relation("foo").unwrap().applies_to("amd64"));
    }

    #[test]
    fn empty_and_trailing_commas() {
        assert!(parse_relations("").unwrap().is_empty());
        assert_eq!(parse_relations("a1, b2,").unwrap().len(), 2);
    }

    #[test]
    fn rejects_bad_relations() {
        for t in ["Foo", "a", "ab (~= 1)", "ab (>= 1", "ab (>=)", "ab [amd64", "ab junk", "ab:", "ab | ", "ab (>= 1 2)"]
        {
            assert!(parse_relations(t).is_err(), "{t}");
        }
    }

    #[test]
    fn provides_allow_only_equals() {
        let p = parse_provides("awk, mail-transport-agent (= 1.0)").unwrap();
        assert_eq!(p.len(), 2);
        assert!(parse_provides("a1 (>= 1)").is_err());
        assert!(parse_provides("a1 | b1").is_err());
    }

    #[test]
    fn version_constraints() {
        let r = parse_relation("libc6 (>= 2.34)").unwrap();
        assert!(r.version_matches("2.36-9+deb12u4"));
        assert!(!r.version_matches("2.33-1"));
        let r = parse_relation("x1 (<< 2.0~)").unwrap();
        assert!(r.version_matches("1.9") && !r.version_matches("2.0~") && !r.version_matches("2.0"));
        assert!(parse_relation("x1").unwrap().version_matches("anything"));
    }
}
