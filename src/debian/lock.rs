//! The Debian lock file: the requested package names and every resolved package pinned by name,
//! version, architecture, archive-relative filename, sha256 and size. Written in one canonical
//! TOML form (sorted, fixed layout) so the same resolution always gives the same bytes, and it
//! names no archive host: the same lock works against any mirror. Builds read only the lock.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::archive::{Archive, PackageIndex};
use super::error::{DebianError, Result};
use super::relation::{parse_relation, valid_name};
use super::resolve::resolve;
use super::version::Version;
use crate::model::digest::Digest;

/// The lock format version written in the file; another number is refused.
pub const LOCK_VERSION: u32 = 1;

/// One pinned package.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The `.deb`'s path relative to the archive root (`pool/main/...`).
    pub filename: String,
    pub sha256: Digest,
    pub size: u64,
}

/// A whole lock: what was asked for, from which suite/architecture/components, and the result.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    pub suite: String,
    pub architecture: String,
    pub components: Vec<String>,
    /// The requested names (or `name (op version)`), sorted and unique.
    pub requested: Vec<String>,
    /// Sorted by name, one entry per name.
    #[serde(rename = "package", default)]
    pub packages: Vec<LockedPackage>,
    /// The same request resolved for other architectures (`[[arch]]` sections of a
    /// multi-platform `debian_image`), in the order written.
    #[serde(rename = "arch", default)]
    pub others: Vec<ArchSection>,
}

/// One more architecture of a lock: its packages (same suite, components and request).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSection {
    pub architecture: String,
    #[serde(rename = "package", default)]
    pub packages: Vec<LockedPackage>,
}

/// What to lock: the inputs of [`create_lock`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRequest {
    pub suite: String,
    pub architecture: String,
    pub components: Vec<String>,
    pub packages: Vec<String>,
}

/// One difference between two locks, for `cbuild lock` to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockChange {
    Added { name: String, version: String },
    Removed { name: String, version: String },
    Changed { name: String, from: String, to: String },
}

impl fmt::Display for LockChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockChange::Added { name, version } => write!(f, "+ {name} {version}"),
            LockChange::Removed { name, version } => write!(f, "- {name} {version}"),
            LockChange::Changed { name, from, to } => write!(f, "~ {name} {from} -> {to}"),
        }
    }
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Lock {
    /// Parses and validates a lock (see [`Lock::validate`]); `subject` names it in errors.
    pub fn parse(text: &str, subject: &str) -> Result<Lock> {
        let lock: Lock = toml::from_str(text)
            .map_err(|e| DebianError::BadLock { subject: subject.to_string(), reason: e.to_string() })?;
        lock.validate(subject)?;
        Ok(lock)
    }

    /// Reads and parses a lock file.
    pub fn read(path: &Path) -> Result<Lock> {
        let text = std::fs::read_to_string(path).map_err(super::error::io_err(path))?;
        Lock::parse(&text, &path.display().to_string())
    }

    /// Writes the canonical form atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fs::write_atomic(path, self.to_toml().as_bytes()).map_err(super::error::io_err(path))
    }

    /// Checks what serde cannot: the format version, names, versions, relative filenames,
    /// packages sorted by name without duplicates, requested entries parse and are sorted.
    pub fn validate(&self, subject: &str) -> Result<()> {
        let bad = |reason: String| DebianError::BadLock { subject: subject.to_string(), reason };
        let mut arches = vec![self.architecture.as_str()];
        for o in &self.others {
            if arches.contains(&o.architecture.as_str()) {
                return Err(bad(format!("architecture `{}` has two sections", o.architecture)));
            }
            arches.push(&o.architecture);
            let view = self.for_architecture(&o.architecture).expect("listed");
            view.validate(&format!("{subject} [arch {}]", o.architecture))?;
        }
        if self.version != LOCK_VERSION {
            return Err(bad(format!(
                "format version {} is not {LOCK_VERSION} (hint: recreate it with `cbuild lock`)",
                self.version
            )));
        }
        if self.suite.is_empty() || self.suite.contains(['/', ' ']) || self.architecture.is_empty() {
            return Err(bad("`suite` and `architecture` must be plain names".into()));
        }
        for r in &self.requested {
            parse_relation(r).map_err(|e| bad(format!("requested `{r}`: {e}")))?;
        }
        if self.requested.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("`requested` must be sorted and unique".into()));
        }
        for p in &self.packages {
            let pb = |reason: &str| bad(format!("package `{}`: {reason}", p.name));
            if !valid_name(&p.name) {
                return Err(pb("not a valid package name"));
            }
            Version::parse(&p.version).map_err(|e| pb(&e.to_string()))?;
            if p.architecture != self.architecture && p.architecture != "all" {
                return Err(pb(&format!(
                    "architecture `{}` is neither `{}` nor `all`",
                    p.architecture, self.architecture
                )));
            }
            let f = &p.filename;
            let rel_ok = !f.is_empty()
                && !f.starts_with('/')
                && !f.contains("://")
                && !f.contains('\\')
                && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
                && f.ends_with(".deb");
            if !rel_ok {
                return Err(pb(&format!("filename `{f}` must be a `.deb` path relative to the archive root")));
            }
        }
        if let Some(w) = self.packages.windows(2).find(|w| w[0].name >= w[1].name) {
            return Err(bad(format!("packages must be sorted by name, once each (at `{}`)", w[1].name)));
        }
        Ok(())
    }

    /// The canonical text: a fixed header comment, top-level keys in a fixed order, one
    /// `[[package]]` table per package in name order. Byte-stable for equal locks.
    pub fn to_toml(&self) -> String {
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let mut s = String::from(
            "# Debian packages pinned for cbuild. Generated by `cbuild lock`; builds use only this file.\n",
        );
        s += &format!("version = {}\n", self.version);
        s += &format!("suite = {}\n", q(&self.suite));
        s += &format!("architecture = {}\n", q(&self.architecture));
        s += &format!("components = [{}]\n", list(&self.components));
        s += &format!("requested = [{}]\n", list(&self.requested));
        let package = |s: &mut String, table: &str, p: &LockedPackage| {
            *s += &format!("\n[[{table}]]\n");
            *s += &format!("name = {}\n", q(&p.name));
            *s += &format!("version = {}\n", q(&p.version));
            *s += &format!("architecture = {}\n", q(&p.architecture));
            *s += &format!("filename = {}\n", q(&p.filename));
            *s += &format!("sha256 = {}\n", q(&p.sha256.to_string()));
            *s += &format!("size = {}\n", p.size);
        };
        for p in &self.packages {
            package(&mut s, "package", p);
        }
        for o in &self.others {
            s += &format!("\n[[arch]]\narchitecture = {}\n", q(&o.architecture));
            for p in &o.packages {
                package(&mut s, "arch.package", p);
            }
        }
        s
    }

    /// Every architecture the lock has packages for: its own first, then its `[[arch]]` sections.
    pub fn architectures(&self) -> Vec<String> {
        std::iter::once(self.architecture.clone()).chain(self.others.iter().map(|o| o.architecture.clone())).collect()
    }

    /// The lock as it is for one architecture (a single-architecture lock), if it has that one.
    pub fn for_architecture(&self, arch: &str) -> Option<Lock> {
        let packages = if arch == self.architecture {
            self.packages.clone()
        } else {
            self.others.iter().find(|o| o.architecture == arch)?.packages.clone()
        };
        Some(Lock { architecture: arch.to_string(), packages, others: Vec::new(), ..self.clone() })
    }

    /// One lock holding `locks` (the same request resolved for several architectures): the first
    /// is the main one, the others become `[[arch]]` sections.
    pub fn combine(mut locks: Vec<Lock>) -> Lock {
        let mut main = locks.remove(0);
        main.others =
            locks.into_iter().map(|l| ArchSection { architecture: l.architecture, packages: l.packages }).collect();
        main
    }

    /// The sha256 of the canonical text: changes exactly when the pinned content changes.
    pub fn digest(&self) -> Digest {
        Digest::of_bytes(self.to_toml().as_bytes())
    }

    /// The pinned package called `name`.
    pub fn get(&self, name: &str) -> Option<&LockedPackage> {
        self.packages.binary_search_by(|p| p.name.as_str().cmp(name)).ok().map(|i| &self.packages[i])
    }

    /// The request this lock answers (to refresh it).
    pub fn request(&self) -> LockRequest {
        LockRequest {
            suite: self.suite.clone(),
            architecture: self.architecture.clone(),
            components: self.components.clone(),
            packages: self.requested.clone(),
        }
    }
}

/// Resolves `req` against an already fetched `index`; returns the lock and the resolver's notes.
pub fn lock_from_index(req: &LockRequest, index: &PackageIndex) -> Result<(Lock, Vec<String>)> {
    let requested: Vec<String> =
        req.packages.iter().map(|s| s.trim().to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    let res = resolve(index, &requested)?;
    let lock = Lock {
        version: LOCK_VERSION,
        suite: req.suite.clone(),
        architecture: req.architecture.clone(),
        components: req.components.clone(),
        requested,
        others: Vec::new(),
        packages: res
            .packages
            .into_iter()
            .map(|p| LockedPackage {
                name: p.name,
                version: p.version,
                architecture: p.architecture,
                filename: p.filename,
                sha256: p.sha256,
                size: p.size,
            })
            .collect(),
    };
    lock.validate("the new lock")?;
    Ok((lock, res.notes))
}

/// Fetches the suite's index from `archive` and resolves `req` into a new lock.
pub fn create_lock(archive: &Archive, req: &LockRequest) -> Result<(Lock, Vec<String>)> {
    let (_, index) = archive.index(&req.suite, &req.components, &req.architecture)?;
    lock_from_index(req, &index)
}

/// Re-resolves `old`'s request against the archive's current index; returns the new lock and
/// what changed (empty when the archive did not move).
pub fn refresh(archive: &Archive, old: &Lock) -> Result<(Lock, Vec<LockChange>)> {
    let (new, _) = create_lock(archive, &old.request())?;
    let changes = diff(old, &new);
    Ok((new, changes))
}

/// The package-level differences from `old` to `new`, in name order.
pub fn diff(old: &Lock, new: &Lock) -> Vec<LockChange> {
    let mut out = Vec::new();
    let names: BTreeSet<&str> = old.packages.iter().chain(&new.packages).map(|p| p.name.as_str()).collect();
    for n in names {
        match (old.get(n), new.get(n)) {
            (Some(a), None) => out.push(LockChange::Removed { name: n.into(), version: a.version.clone() }),
            (None, Some(b)) => out.push(LockChange::Added { name: n.into(), version: b.version.clone() }),
            (Some(a), Some(b)) if a != b => {
                out.push(LockChange::Changed { name: n.into(), from: a.version.clone(), to: b.version.clone() })
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::archive::parse_packages;

    fn index() -> PackageIndex {
        let st = |n: &str, v: &str, a: &str, extra: &str| {
            format!(
                "Package: {n}\nVersion: {v}\nArchitecture: {a}\nFilename: pool/main/{n}/{n}_{v}_{a}.deb\nSize: 42\nSHA256: {}\n{extra}\n",
                Digest::of_bytes(n.as_bytes()).hex()
            )
        };
        let text = [
            st("busybox", "1:1.35.0-4+b3", "amd64", "Depends: libc6 (>= 2.34)"),
            st("libc6", "2.36-9+deb12u10", "amd64", "Depends: libgcc-s1"),
            st("libgcc-s1", "12.2.0-14", "amd64", ""),
            st("base-files", "12.4+deb12u10", "amd64", "Essential: yes"),
            st("tzdata", "2024a-0+deb12u1", "all", "Depends: debconf | debconf-2.0"),
            st("debconf", "1.5.82", "all", "Provides: debconf-2.0"),
        ]
        .join("\n");
        PackageIndex::new(parse_packages(&text, "t").unwrap(), "amd64")
    }

    fn req(p: &[&str]) -> LockRequest {
        LockRequest {
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            components: vec!["main".into()],
            packages: p.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn round_trips_byte_stable() {
        let (lock, _) = lock_from_index(&req(&["tzdata", "busybox", "base-files", "busybox"]), &index()).unwrap();
        assert_eq!(lock.requested, ["base-files", "busybox", "tzdata"]);
        let names: Vec<&str> = lock.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "busybox", "debconf", "libc6", "libgcc-s1", "tzdata"]);
        let text = lock.to_toml();
        let again = Lock::parse(&text, "t").unwrap();
        assert_eq!(again, lock);
        assert_eq!(again.to_toml(), text);
        assert_eq!(again.digest(), lock.digest());
        assert!(text.contains("filename = \"pool/main/busybox/busybox_1:1.35.0-4+b3_amd64.deb\""));
        assert!(!text.contains("http"), "archive-independent");
        // the same request in another order gives the same bytes
        let (other, _) = lock_from_index(&req(&["busybox", "tzdata", "base-files"]), &index()).unwrap();
        assert_eq!(other.to_toml(), text);
        assert_eq!(lock.get("libc6").unwrap().version, "2.36-9+deb12u10");
        assert!(lock.get("nope").is_none());
    }

    #[test]
    fn write_and_read() {
        let t = tempfile::tempdir().unwrap();
        let (lock, _) = lock_from_index(&req(&["busybox"]), &index()).unwrap();
        let p = t.path().join("debian.lock");
        lock.write(&p).unwrap();
        assert_eq!(Lock::read(&p).unwrap(), lock);
    }

    #[test]
    fn refuses_bad_locks() {
        let (lock, _) = lock_from_index(&req(&["busybox"]), &index()).unwrap();
        let good = lock.to_toml();
        let cases = [
            good.replace("version = 1\n", "version = 2\n"),
            good.replace("pool/main/libc6", "/pool/main/libc6"),
            good.replace("pool/main/libc6", "http://mirror.example/pool/main/libc6"),
            good.replace("pool/main/libc6", "pool/../../libc6"),
            good.replace("name = \"libc6\"", "name = \"aaa\""),
            good.replace("sha256 = \"sha256:", "sha256 = \"md5:"),
            good.replace("size = 42", "size = -1"),
            good.replace("size = 42\n", "size = 42\nextra = 1\n"),
            good.replace("requested = [\"busybox\"]", "requested = [\"z1\", \"a1\"]"),
            good.replace("architecture = \"amd64\"\nfilename", "architecture = \"arm64\"\nfilename"),
            good.replace("version = \"2.36-9+deb12u10\"", "version = \"x y\""),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert_ne!(c, &good, "case {i} changed nothing");
            assert!(Lock::parse(c, "t").is_err(), "case {i} accepted:\n{c}");
        }
    }

    #[test]
    fn diffs_locks() {
        let (a, _) = lock_from_index(&req(&["busybox"]), &index()).unwrap();
        let mut b = a.clone();
        b.packages[0].version = "1:1.36.0-1".into();
        b.packages.retain(|p| p.name != "libgcc-s1");
        let (c, _) = lock_from_index(&req(&["busybox", "base-files"]), &index()).unwrap();
        let ch: Vec<String> = diff(&a, &b).iter().map(|c| c.to_string()).collect();
        assert_eq!(ch, ["~ busybox 1:1.35.0-4+b3 -> 1:1.36.0-1", "- libgcc-s1 12.2.0-14"]);
        assert_eq!(diff(&a, &c)[0].to_string(), "+ base-files 12.4+deb12u10");
        assert!(diff(&a, &a).is_empty());
    }
}
