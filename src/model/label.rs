//! Labels (`//services/api:image`) and target patterns (`//...`, `//services/...`), parsed and
//! printed canonically. Parsing is pure: whether a package or target exists is `loading`'s business.

use std::fmt;

/// A package path relative to the workspace root, `""` for the root package, `services/api` otherwise.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PackagePath(String);

impl PackagePath {
    pub fn root() -> PackagePath {
        PackagePath(String::new())
    }
    /// Validates a package path: segments of letters, digits, `.`, `_`, `-`, `+`; no `.`/`..` segments.
    pub fn parse(s: &str) -> Result<PackagePath, LabelError> {
        if s.is_empty() {
            return Ok(PackagePath::root());
        }
        for seg in s.split('/') {
            if seg.is_empty() {
                return Err(LabelError::new(s, "the package path has an empty segment (`//` or a trailing `/`)"));
            }
            if seg == "." || seg == ".." {
                return Err(LabelError::new(s, "`.` and `..` are not allowed in package paths"));
            }
            if let Some(c) = seg.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-+@".contains(*c))) {
                return Err(LabelError::new(s, &format!("character `{c}` is not allowed in a package path")));
            }
        }
        Ok(PackagePath(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
    /// The last segment (`api` for `services/api`), empty for the root.
    pub fn basename(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }
    /// True if `self` is `other` or below it.
    pub fn is_within(&self, other: &PackagePath) -> bool {
        other.is_root() || self.0 == other.0 || self.0.starts_with(&format!("{}/", other.0))
    }
    /// `pkg/child` as a package path.
    pub fn join(&self, child: &str) -> String {
        if self.is_root() {
            child.to_string()
        } else {
            format!("{}/{}", self.0, child)
        }
    }
}

impl fmt::Display for PackagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label naming one target: `//package:name`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Label {
    pub package: PackagePath,
    pub name: String,
}

/// A malformed label or pattern, with the offending text and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label `{text}`: {reason}")]
pub struct LabelError {
    pub text: String,
    pub reason: String,
}

impl LabelError {
    fn new(text: &str, reason: &str) -> LabelError {
        LabelError { text: text.to_string(), reason: reason.to_string() }
    }
}

fn check_target_name(text: &str, name: &str) -> Result<(), LabelError> {
    if name.is_empty() {
        return Err(LabelError::new(text, "the target name after `:` is empty"));
    }
    if name.starts_with('/') || name.ends_with('/') || name.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(LabelError::new(text, "the target name has an empty, `.` or `..` path segment"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-+=,@~/".contains(*c))) {
        return Err(LabelError::new(text, &format!("character `{c}` is not allowed in a target name")));
    }
    Ok(())
}

impl Label {
    /// Parses an absolute label (`//pkg:name`, `//pkg`) or, given the current package, a relative
    /// one (`:name`). `//pkg` means `//pkg:<last segment of pkg>`.
    pub fn parse(text: &str, current: Option<&PackagePath>) -> Result<Label, LabelError> {
        let t = text.trim();
        if t != text || t.is_empty() {
            return Err(LabelError::new(text, "a label may not be empty or have surrounding spaces"));
        }
        if let Some(rest) = t.strip_prefix("//") {
            if rest == "..." || rest.ends_with("/...") {
                return Err(LabelError::new(text, "this is a pattern, not a label; name one target"));
            }
            let (pkg, name) = match rest.split_once(':') {
                Some((p, n)) => (p, Some(n)),
                None => (rest, None),
            };
            let package = PackagePath::parse(pkg).map_err(|e| LabelError::new(text, &e.reason))?;
            let name = match name {
                Some(n) => n.to_string(),
                None if package.is_root() => {
                    return Err(LabelError::new(text, "the root package has no default target; write `//:name`"))
                }
                None => package.basename().to_string(),
            };
            check_target_name(text, &name)?;
            Ok(Label { package, name })
        } else if let Some(name) = t.strip_prefix(':') {
            let package = current
                .ok_or_else(|| {
                    LabelError::new(text, "a relative label (`:name`) needs a current package; write `//pkg:name`")
                })?
                .clone();
            check_target_name(text, name)?;
            Ok(Label { package, name: name.to_string() })
        } else if t.starts_with('@') {
            Err(LabelError::new(text, "repository labels (`@repo//...`) are only allowed in `load()`"))
        } else if let Some(cur) = current.filter(|_| !t.contains(':') && !t.starts_with('/')) {
            // Bazel accepts a bare `name` as `:name` inside a BUILD file.
            check_target_name(text, t)?;
            Ok(Label { package: cur.clone(), name: t.to_string() })
        } else {
            Err(LabelError::new(text, "labels start with `//` (absolute) or `:` (relative to the current package)"))
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

/// A target pattern as given on the command line or in a query.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Pattern {
    /// One target.
    Target(Label),
    /// `//pkg:all` or `//pkg:*`: every target of one package.
    Package(PackagePath),
    /// `//pkg/...` (or `//...`): every target in the package and all packages below it.
    Recursive(PackagePath),
}

impl Pattern {
    /// Parses `//pkg:name`, `//pkg`, `:name` (with a current package), `//pkg:all`, `//pkg/...`, `//...`.
    pub fn parse(text: &str, current: Option<&PackagePath>) -> Result<Pattern, LabelError> {
        if let (Some(cur), ":all" | ":*") = (current, text) {
            return Ok(Pattern::Package(cur.clone()));
        }
        if let Some(rest) = text.strip_prefix("//") {
            if rest == "..." {
                return Ok(Pattern::Recursive(PackagePath::root()));
            }
            if let Some(pkg) = rest.strip_suffix("/...") {
                let p = PackagePath::parse(pkg).map_err(|e| LabelError::new(text, &e.reason))?;
                return Ok(Pattern::Recursive(p));
            }
            if let Some((pkg, name)) = rest.split_once(':') {
                if name == "all" || name == "*" {
                    let p = PackagePath::parse(pkg).map_err(|e| LabelError::new(text, &e.reason))?;
                    return Ok(Pattern::Package(p));
                }
            }
        }
        Label::parse(text, current).map(Pattern::Target)
    }

    /// True if the pattern selects `label`.
    pub fn matches(&self, label: &Label) -> bool {
        match self {
            Pattern::Target(l) => l == label,
            Pattern::Package(p) => &label.package == p,
            Pattern::Recursive(p) => label.package.is_within(p),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Target(l) => write!(f, "{l}"),
            Pattern::Package(p) => write!(f, "//{p}:all"),
            Pattern::Recursive(p) if p.is_root() => write!(f, "//..."),
            Pattern::Recursive(p) => write!(f, "//{p}/..."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(s: &str) -> PackagePath {
        PackagePath::parse(s).unwrap()
    }

    #[test]
    fn absolute_labels() {
        let l = Label::parse("//services/api:image", None).unwrap();
        assert_eq!(l.package.as_str(), "services/api");
        assert_eq!(l.name, "image");
        assert_eq!(l.to_string(), "//services/api:image");
        assert_eq!(Label::parse("//services/api", None).unwrap().to_string(), "//services/api:api");
        assert_eq!(Label::parse("//:root", None).unwrap().to_string(), "//:root");
        assert_eq!(Label::parse("//a:b/c.txt", None).unwrap().name, "b/c.txt");
    }

    #[test]
    fn relative_labels() {
        let cur = pkg("stacks");
        assert_eq!(Label::parse(":run", Some(&cur)).unwrap().to_string(), "//stacks:run");
        assert_eq!(Label::parse("run", Some(&cur)).unwrap().to_string(), "//stacks:run");
        assert!(Label::parse(":run", None).is_err());
    }

    #[test]
    fn malformed_labels() {
        for bad in [
            "",
            " //a:b",
            "//a:",
            "//a//b:c",
            "//a/../b:c",
            "//a:b:c",
            "//a b:c",
            "//:",
            "//",
            "a:b",
            "@x//a:b",
            "//a:../x",
            "//a:/x",
            "//...",
            "//a/...",
            "//a:b$",
            "//a/b/...",
        ] {
            let e = Label::parse(bad, None);
            assert!(e.is_err(), "{bad:?} should be rejected, got {e:?}");
        }
        let e = Label::parse("//a b:c", None).unwrap_err();
        assert_eq!(e.to_string(), "invalid label `//a b:c`: character ` ` is not allowed in a package path");
    }

    #[test]
    fn patterns() {
        let all = Pattern::parse("//...", None).unwrap();
        let svc = Pattern::parse("//services/...", None).unwrap();
        let pk = Pattern::parse("//services/api:all", None).unwrap();
        let one = Pattern::parse("//services/api", None).unwrap();
        let api = Label::parse("//services/api:image", None).unwrap();
        let api2 = Label::parse("//services/api:api", None).unwrap();
        let stk = Label::parse("//stacks:default", None).unwrap();
        let svcx = Label::parse("//servicesx:a", None).unwrap();
        assert!(all.matches(&api) && all.matches(&stk));
        assert!(svc.matches(&api) && !svc.matches(&stk) && !svc.matches(&svcx));
        assert!(pk.matches(&api) && pk.matches(&api2) && !pk.matches(&stk));
        assert!(one.matches(&api2) && !one.matches(&api));
        assert_eq!(svc.to_string(), "//services/...");
        assert!(Pattern::parse("//a/b/c/...", None).unwrap().matches(&Label::parse("//a/b/c/d:x", None).unwrap()));
        assert!(Pattern::parse("//a/../...", None).is_err());
        // Regression (RELIABILITY.md F4, F5): names ending in dots are labels; `:all` is the package.
        let cur = PackagePath::parse("p").unwrap();
        let l = Label::parse(":a...", Some(&cur)).unwrap();
        assert_eq!(Label::parse(&l.to_string(), None).unwrap(), l);
        assert_eq!(Pattern::parse(":all", Some(&cur)).unwrap(), Pattern::Package(cur.clone()));
    }
}
