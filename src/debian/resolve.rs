//! Dependency resolution over a [`PackageIndex`]: the closure of `Pre-Depends` and `Depends`,
//! taking for each dependency the first alternative that can be satisfied. Not supported (and so
//! not done): `Recommends`/`Suggests` (ignored), `Conflicts`/`Breaks` (not checked), backtracking
//! (a wrong early choice is an error, not a retry), and multiple architectures in one root.

use std::collections::{BTreeMap, VecDeque};

use super::archive::{Package, PackageIndex};
use super::error::{DebianError, Result};
use super::relation::{format_alternatives, parse_relation, Relation};

/// The packages to install, sorted by name, and notes on the choices made (virtual packages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub packages: Vec<Package>,
    pub notes: Vec<String>,
}

/// Resolves `requested` (package names, optionally with a constraint: `busybox`,
/// `libc6 (>= 2.36)`) against `index`.
///
/// The rules, chosen to be deterministic and explainable:
/// * requested packages are sorted and all selected first, then dependencies are followed
///   breadth-first, `Pre-Depends` before `Depends`;
/// * a dependency already satisfied by a selected package (by name and version, or by a
///   `Provides`) adds nothing; otherwise its alternatives are tried in order and the first one
///   that can be satisfied is taken;
/// * a real package gets its highest version that meets the constraint (one version per name);
/// * a virtual package gets a provider that is already selected, else the first provider by
///   name (a note says which); a versioned dependency is met only by a versioned `Provides`;
/// * arch qualifiers `:any` and `:native` (and the index's own architecture) are accepted,
///   others cannot be satisfied; `[arch]` restrictions are honoured;
/// * `Essential: yes` packages are not added implicitly: list them if the image needs them.
pub fn resolve(index: &PackageIndex, requested: &[String]) -> Result<Resolution> {
    let mut r = Resolver { index, selected: BTreeMap::new(), queue: VecDeque::new(), notes: Vec::new() };
    let mut wanted: Vec<&String> = requested.iter().collect();
    wanted.sort();
    wanted.dedup();
    for w in wanted {
        let rel = parse_relation(w).map_err(|reason| DebianError::BadRelation { text: w.clone(), reason })?;
        if r.satisfied(&rel) {
            continue;
        }
        match r.candidate(&rel, "the request")? {
            Some(p) => r.select(p),
            None => {
                return Err(if index.get(&rel.name).is_empty() && index.providers(&rel.name).is_empty() {
                    DebianError::UnknownPackage { name: rel.name.clone(), required_by: None }
                } else {
                    DebianError::Unsatisfiable {
                        package: "the request".into(),
                        relation: rel.to_string(),
                        reason: r.why_not(&rel),
                    }
                })
            }
        }
    }
    while let Some(name) = r.queue.pop_front() {
        let p = r.selected[&name].clone();
        for group in p.pre_depends.iter().chain(&p.depends) {
            let alts: Vec<&Relation> = group.iter().filter(|a| a.applies_to(index.arch())).collect();
            if alts.is_empty() || alts.iter().any(|a| r.satisfied(a)) {
                continue;
            }
            let mut chosen = None;
            for a in &alts {
                if let Some(c) = r.candidate(a, &p.name)? {
                    chosen = Some(c);
                    break;
                }
            }
            match chosen {
                Some(c) => r.select(c),
                None => {
                    let reasons: Vec<String> = alts.iter().map(|a| r.why_not(a)).collect();
                    return Err(DebianError::Unsatisfiable {
                        package: format!("{} {}", p.name, p.version),
                        relation: format_alternatives(group),
                        reason: reasons.join("; "),
                    });
                }
            }
        }
    }
    Ok(Resolution { packages: r.selected.into_values().collect(), notes: r.notes })
}

struct Resolver<'a> {
    index: &'a PackageIndex,
    selected: BTreeMap<String, Package>,
    queue: VecDeque<String>,
    notes: Vec<String>,
}

impl Resolver<'_> {
    fn arch_ok(&self, rel: &Relation) -> bool {
        match rel.arch_qualifier.as_deref() {
            None | Some("any") | Some("native") => true,
            Some(a) => a == self.index.arch(),
        }
    }

    fn select(&mut self, p: Package) {
        self.queue.push_back(p.name.clone());
        self.selected.insert(p.name.clone(), p);
    }

    /// Met by what is already selected (a real package or a `Provides`)?
    fn satisfied(&self, rel: &Relation) -> bool {
        if !self.arch_ok(rel) {
            return false;
        }
        if self.selected.get(&rel.name).is_some_and(|p| rel.version_matches(&p.version)) {
            return true;
        }
        self.selected.values().any(|p| {
            p.provides.iter().any(|v| {
                v.name == rel.name
                    && match (&rel.constraint, &v.constraint) {
                        (None, _) => true,
                        (Some(_), Some((_, pv))) => rel.version_matches(pv),
                        (Some(_), None) => false,
                    }
            })
        })
    }

    /// The package that would satisfy `rel`, if any (not yet selected).
    fn candidate(&mut self, rel: &Relation, needed_by: &str) -> Result<Option<Package>> {
        if !self.arch_ok(rel) {
            return Ok(None);
        }
        if !self.selected.contains_key(&rel.name) {
            if let Some(p) = self.index.get(&rel.name).iter().find(|p| rel.version_matches(&p.version)) {
                return Ok(Some(p.clone()));
            }
        }
        let providers: Vec<&(String, String, Option<String>)> = self
            .index
            .providers(&rel.name)
            .iter()
            .filter(|(_, _, provided)| match (&rel.constraint, provided) {
                (None, _) => true,
                (Some(_), Some(v)) => rel.version_matches(v),
                (Some(_), None) => false,
            })
            .filter(|(name, version, _)| self.selected.get(name).is_none_or(|s| &s.version == version))
            .collect();
        let Some((name, version, _)) = providers.first() else {
            return Ok(None);
        };
        let pkg = self.index.get(name).iter().find(|p| &p.version == version).cloned().ok_or_else(|| {
            DebianError::UnknownPackage { name: name.clone(), required_by: Some(needed_by.to_string()) }
        })?;
        let mut names: Vec<&str> = providers.iter().map(|(n, _, _)| n.as_str()).collect();
        names.dedup();
        self.notes.push(format!(
            "virtual package `{}` (needed by `{needed_by}`): chose `{name}`, the first by name of {}",
            rel.name,
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ));
        Ok(Some(pkg))
    }

    fn why_not(&self, rel: &Relation) -> String {
        if !self.arch_ok(rel) {
            return format!("`{rel}`: architecture qualifier not supported for `{}`", self.index.arch());
        }
        if let Some(s) = self.selected.get(&rel.name) {
            return format!("`{rel}`: version {} is already selected", s.version);
        }
        let real = self.index.get(&rel.name);
        if !real.is_empty() {
            let vs: Vec<&str> = real.iter().map(|p| p.version.as_str()).collect();
            return format!("`{rel}`: the index has only {}", vs.join(", "));
        }
        if !self.index.providers(&rel.name).is_empty() {
            return format!("`{rel}`: no provider meets the constraint");
        }
        format!("`{}` is not in the index", rel.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::archive::parse_packages;
    use crate::model::digest::Digest;

    fn index(stanzas: &[(&str, &str, &str)]) -> PackageIndex {
        let text: Vec<String> = stanzas
            .iter()
            .map(|(n, v, extra)| {
                format!(
                    "Package: {n}\nVersion: {v}\nArchitecture: amd64\nFilename: pool/{n}_{v}.deb\nSize: 1\nSHA256: {}\n{extra}\n",
                    Digest::of_bytes(n.as_bytes()).hex()
                )
            })
            .collect();
        PackageIndex::new(parse_packages(&text.join("\n"), "test").unwrap(), "amd64")
    }

    fn names(r: &Resolution) -> Vec<String> {
        r.packages.iter().map(|p| format!("{}={}", p.name, p.version)).collect()
    }

    fn req(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn follows_depends_and_pre_depends() {
        let idx = index(&[
            ("app", "1", "Depends: liba (>= 2), libb\nPre-Depends: libc6"),
            ("liba", "1", ""),
            ("liba", "3", "Depends: libc6 (>= 2.36)"),
            ("libb", "1", ""),
            ("libc6", "2.36-9", ""),
            ("unrelated", "1", ""),
        ]);
        let r = resolve(&idx, &req(&["app"])).unwrap();
        assert_eq!(names(&r), ["app=1", "liba=3", "libb=1", "libc6=2.36-9"]);
        assert!(r.notes.is_empty());
    }

    #[test]
    fn takes_the_first_satisfiable_alternative() {
        let idx = index(&[
            ("app", "1", "Depends: missing | libold (>= 2) | libnew, libx | liby"),
            ("libold", "1", ""),
            ("libnew", "1", ""),
            ("libx", "1", ""),
            ("liby", "1", ""),
        ]);
        let r = resolve(&idx, &req(&["app"])).unwrap();
        assert_eq!(names(&r), ["app=1", "libnew=1", "libx=1"]);
        // an alternative that is already selected wins over an earlier one
        let r = resolve(&idx, &req(&["app", "liby"])).unwrap();
        assert_eq!(names(&r), ["app=1", "libnew=1", "liby=1"]);
    }

    #[test]
    fn virtual_packages_prefer_selected_then_first_by_name() {
        let idx =
            index(&[("app", "1", "Depends: awk"), ("mawk", "1.3", "Provides: awk"), ("gawk", "5", "Provides: awk")]);
        let r = resolve(&idx, &req(&["app"])).unwrap();
        assert_eq!(names(&r), ["app=1", "gawk=5"]);
        assert!(r.notes[0].contains("`awk`") && r.notes[0].contains("`gawk`"), "{:?}", r.notes);
        let r = resolve(&idx, &req(&["app", "mawk"])).unwrap();
        assert_eq!(names(&r), ["app=1", "mawk=1.3"]);
        assert!(r.notes.is_empty());
    }

    #[test]
    fn versioned_dependencies_need_versioned_provides() {
        let idx = index(&[
            ("app", "1", "Depends: virt (>= 2)"),
            ("p1", "1", "Provides: virt"),
            ("p2", "1", "Provides: virt (= 1)"),
            ("p3", "1", "Provides: virt (= 2.5)"),
        ]);
        let r = resolve(&idx, &req(&["app"])).unwrap();
        assert_eq!(names(&r), ["app=1", "p3=1"]);
    }

    #[test]
    fn constraints_and_arch_qualifiers() {
        let idx = index(&[
            ("app", "1", "Depends: python3:any (>= 3.11), perl:native, tool:arm64 | tool2 [amd64], skip [arm64]"),
            ("python3", "3.11.2-1", ""),
            ("perl", "5.36", ""),
            ("tool", "1", ""),
            ("tool2", "1", ""),
        ]);
        let r = resolve(&idx, &req(&["app"])).unwrap();
        assert_eq!(names(&r), ["app=1", "perl=5.36", "python3=3.11.2-1", "tool2=1"]);
        let r = resolve(&idx, &req(&["python3 (= 3.11.2-1)"])).unwrap();
        assert_eq!(names(&r), ["python3=3.11.2-1"]);
        assert!(resolve(&idx, &req(&["python3 (>> 4)"])).is_err());
    }

    #[test]
    fn unsatisfiable_and_unknown_are_errors_naming_the_package() {
        let idx = index(&[("app", "1", "Depends: libz (>= 2) | libq"), ("libz", "1", "")]);
        let err = resolve(&idx, &req(&["app"])).unwrap_err().to_string();
        assert!(err.contains("`app 1`") && err.contains("libz (>= 2) | libq"), "{err}");
        assert!(err.contains("the index has only 1") && err.contains("`libq` is not in the index"), "{err}");
        let err = resolve(&idx, &req(&["nope"])).unwrap_err();
        assert!(matches!(err, DebianError::UnknownPackage { ref name, .. } if name == "nope"), "{err}");
        assert!(resolve(&idx, &req(&["Bad Name"])).is_err());
    }

    #[test]
    fn conflicting_versions_of_one_name_are_an_error() {
        let idx = index(&[("a1", "1", "Depends: lib (>= 2)"), ("lib", "1", ""), ("lib", "2", "")]);
        let err = resolve(&idx, &req(&["a1", "lib (= 1)"])).unwrap_err().to_string();
        assert!(err.contains("version 1 is already selected"), "{err}");
    }

    #[test]
    fn result_does_not_depend_on_request_order() {
        let idx = index(&[
            ("a1", "1", "Depends: awk"),
            ("b1", "1", "Depends: awk"),
            ("mawk", "1", "Provides: awk"),
            ("gawk", "1", "Provides: awk"),
        ]);
        let x = resolve(&idx, &req(&["b1", "a1", "mawk"])).unwrap();
        let y = resolve(&idx, &req(&["mawk", "a1", "b1", "a1"])).unwrap();
        assert_eq!(x, y);
    }
}
