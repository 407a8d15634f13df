//! The archive's indexes: `dists/<suite>/Release` and `dists/<suite>/<component>/binary-<arch>/
//! Packages.{xz,gz}`, downloaded over HTTP and verified against the sha256 the `Release` file lists.
//! The `Release` signature (`InRelease`/`Release.gpg`) is NOT checked: trust in what a lock pins
//! rests on the transport to the configured mirror; once locked, every `.deb` is pinned by sha256.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use super::control::{parse_stanzas, Stanza};
use super::error::{DebianError, Result};
use super::relation::{parse_provides, parse_relations, Alternatives, Relation};
use super::source::ArchiveUrl;
use super::version::compare_versions;
use crate::cas::BlobDir;
use crate::model::digest::Digest;

/// A parsed `Release` file: what the suite is and the sha256 and size of every index it lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    pub version: String,
    pub date: String,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    /// `Acquire-By-Hash: yes`: indexes can be fetched as `by-hash/SHA256/<hex>`, which does not
    /// race with a mirror update.
    pub acquire_by_hash: bool,
    /// Path relative to `dists/<suite>/` → (sha256, size).
    pub sha256: BTreeMap<String, (Digest, u64)>,
}

/// Parses a `Release` file; `subject` names it in errors.
pub fn parse_release(text: &str, subject: &str) -> Result<Release> {
    let bad = |reason: String| DebianError::Malformed { what: "Release file", subject: subject.to_string(), reason };
    let stanzas = parse_stanzas(text).map_err(|(l, r)| bad(format!("line {l}: {r}")))?;
    let s = stanzas.first().ok_or_else(|| bad("it is empty".into()))?;
    let words = |f: &str| -> Vec<String> { s.get(f).unwrap_or("").split_whitespace().map(str::to_string).collect() };
    let mut sha256 = BTreeMap::new();
    for line in s.get("SHA256").unwrap_or("").lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.is_empty() {
            continue;
        }
        let [hex, size, path] = parts[..] else {
            return Err(bad(format!("SHA256 line `{line}` is not `<sha256> <size> <path>`")));
        };
        let d = Digest::from_hex(hex).map_err(|e| bad(e.to_string()))?;
        let size = size.parse().map_err(|_| bad(format!("SHA256 line `{line}`: bad size")))?;
        sha256.insert(path.to_string(), (d, size));
    }
    if sha256.is_empty() {
        return Err(bad("it lists no SHA256 checksums".into()));
    }
    Ok(Release {
        suite: s.get("Suite").unwrap_or("").to_string(),
        codename: s.get("Codename").unwrap_or("").to_string(),
        version: s.get("Version").unwrap_or("").to_string(),
        date: s.get("Date").unwrap_or("").to_string(),
        architectures: words("Architectures"),
        components: words("Components"),
        acquire_by_hash: s.get("Acquire-By-Hash").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        sha256,
    })
}

/// One binary package of a `Packages` index (the fields cbuild uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Path of the `.deb` relative to the archive root (`pool/main/...`).
    pub filename: String,
    pub sha256: Digest,
    pub size: u64,
    pub depends: Vec<Alternatives>,
    pub pre_depends: Vec<Alternatives>,
    pub provides: Vec<Relation>,
    pub priority: String,
    pub essential: bool,
    pub multi_arch: String,
}

impl Package {
    /// Builds a package from a `Packages` stanza; `subject` names the index in errors.
    pub fn from_stanza(s: &Stanza, subject: &str) -> Result<Package> {
        let name = s.get("Package").unwrap_or("").to_string();
        let bad = |reason: String| DebianError::Malformed {
            what: "Packages index",
            subject: subject.to_string(),
            reason: format!("package `{name}`: {reason}"),
        };
        let req = |f: &str| -> Result<String> {
            s.get(f).filter(|v| !v.is_empty()).map(str::to_string).ok_or_else(|| bad(format!("no `{f}` field")))
        };
        if name.is_empty() {
            return Err(bad("a stanza without `Package`".into()));
        }
        let sha = req("SHA256")?;
        let rel = |f: &str| parse_relations(s.get(f).unwrap_or("")).map_err(|e| bad(e.to_string()));
        Ok(Package {
            version: req("Version")?,
            architecture: req("Architecture")?,
            filename: req("Filename")?,
            sha256: Digest::from_hex(&sha).map_err(|e| bad(e.to_string()))?,
            size: req("Size")?.parse().map_err(|_| bad("`Size` is not a number".into()))?,
            depends: rel("Depends")?,
            pre_depends: rel("Pre-Depends")?,
            provides: parse_provides(s.get("Provides").unwrap_or("")).map_err(|e| bad(e.to_string()))?,
            priority: s.get("Priority").unwrap_or("").to_string(),
            essential: s.get("Essential").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            multi_arch: s.get("Multi-Arch").unwrap_or("").to_string(),
            name,
        })
    }
}

/// Parses a whole `Packages` index.
pub fn parse_packages(text: &str, subject: &str) -> Result<Vec<Package>> {
    let stanzas = parse_stanzas(text).map_err(|(l, r)| DebianError::Malformed {
        what: "Packages index",
        subject: subject.to_string(),
        reason: format!("line {l}: {r}"),
    })?;
    stanzas.iter().map(|s| Package::from_stanza(s, subject)).collect()
}

/// The packages of one architecture (plus `all`) by name, highest version first, and who provides
/// which virtual package.
#[derive(Clone, Debug, Default)]
pub struct PackageIndex {
    arch: String,
    by_name: BTreeMap<String, Vec<Package>>,
    /// virtual name → (provider name, provider version, provided version)
    providers: BTreeMap<String, Vec<(String, String, Option<String>)>>,
}

impl PackageIndex {
    /// Indexes `packages` for `arch`; packages of other architectures are dropped.
    pub fn new(packages: impl IntoIterator<Item = Package>, arch: &str) -> PackageIndex {
        let mut by_name: BTreeMap<String, Vec<Package>> = BTreeMap::new();
        for p in packages {
            if p.architecture == arch || p.architecture == "all" {
                by_name.entry(p.name.clone()).or_default().push(p);
            }
        }
        let mut providers: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for list in by_name.values_mut() {
            list.sort_by(|a, b| compare_versions(&b.version, &a.version));
            list.dedup_by(|a, b| a.version == b.version && a.architecture == b.architecture);
            for p in list.iter() {
                for v in &p.provides {
                    let provided = v.constraint.as_ref().map(|(_, ver)| ver.clone());
                    providers.entry(v.name.clone()).or_default().push((p.name.clone(), p.version.clone(), provided));
                }
            }
        }
        for l in providers.values_mut() {
            l.sort();
            l.dedup();
        }
        PackageIndex { arch: arch.to_string(), by_name, providers }
    }

    /// The architecture this index is for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Every version of a real package, highest first (empty if unknown).
    pub fn get(&self, name: &str) -> &[Package] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Who provides `name`: (provider, provider version, provided version if `Provides` gave one),
    /// sorted by provider name.
    pub fn providers(&self, name: &str) -> &[(String, String, Option<String>)] {
        self.providers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Names of the packages with `Priority: required` (what `debootstrap --variant=minbase`
    /// starts from), sorted.
    pub fn required(&self) -> Vec<String> {
        self.by_name.iter().filter(|(_, v)| v[0].priority == "required").map(|(n, _)| n.clone()).collect()
    }

    /// The number of distinct package names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True if the index holds no package.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// A client of one archive: blocking HTTP (call it from a blocking thread, e.g. tokio's
/// `spawn_blocking`, not from inside an async task). Making one does not touch the network.
#[derive(Clone, Debug)]
pub struct Archive {
    url: ArchiveUrl,
    client: reqwest::blocking::Client,
    index_cache: Option<BlobDir>,
}

impl Archive {
    /// A client for `url`.
    pub fn new(url: ArchiveUrl) -> Result<Archive> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("cbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(30 * 60))
            .build()
            .map_err(|source| DebianError::Unreachable {
                url: url.url.clone(),
                from: url.origin.to_string(),
                source,
            })?;
        Ok(Archive { url, client, index_cache: None })
    }

    /// Keeps downloaded `Packages` indexes in `blobs` by sha256, so a second lock against an
    /// unchanged suite downloads only the `Release` file.
    pub fn with_index_cache(mut self, blobs: BlobDir) -> Archive {
        self.index_cache = Some(blobs);
        self
    }

    /// The archive's URL and origin.
    pub fn url(&self) -> &ArchiveUrl {
        &self.url
    }

    /// Opens `rel` (relative to the archive root) for streaming. HTTP errors and unreachable
    /// archives are [`DebianError::HttpStatus`] / [`DebianError::Unreachable`].
    pub fn open(&self, rel: &str) -> Result<reqwest::blocking::Response> {
        let url = self.url.join(rel);
        let resp = self.client.get(&url).send().map_err(|source| DebianError::Unreachable {
            url: url.clone(),
            from: self.url.origin.to_string(),
            source,
        })?;
        let status = resp.status();
        if !status.is_success() {
            let hint = if status.as_u16() == 404 {
                if rel.starts_with("pool/") {
                    " (hint: the archive no longer has this file, usually because a newer \
                     version replaced it; refresh the lock with `cbuild lock`)"
                } else {
                    " (hint: check the suite, component and architecture names)"
                }
            } else {
                ""
            };
            return Err(DebianError::HttpStatus {
                url,
                status: status.as_u16(),
                from: self.url.origin.to_string(),
                hint: hint.to_string(),
            });
        }
        Ok(resp)
    }

    /// Downloads a whole (small) file relative to the archive root.
    pub fn get_bytes(&self, rel: &str) -> Result<Vec<u8>> {
        let mut resp = self.open(rel)?;
        let mut out = Vec::new();
        resp.read_to_end(&mut out).map_err(|e| self.unreachable_io(rel, e))?;
        Ok(out)
    }

    fn unreachable_io(&self, rel: &str, e: std::io::Error) -> DebianError {
        DebianError::Io { path: self.url.join(rel).into(), source: e }
    }

    /// Fetches and parses `dists/<suite>/Release` (signature not checked, see the module doc).
    pub fn release(&self, suite: &str) -> Result<Release> {
        let rel = format!("dists/{suite}/Release");
        let bytes = self.get_bytes(&rel)?;
        let text = String::from_utf8_lossy(&bytes);
        parse_release(&text, &self.url.join(&rel))
    }

    /// Fetches `<component>/binary-<arch>/Packages.xz` (else `.gz`) of `suite`, verifies it against
    /// `release`, and parses it.
    pub fn packages(&self, suite: &str, release: &Release, component: &str, arch: &str) -> Result<Vec<Package>> {
        let base = format!("{component}/binary-{arch}/Packages");
        let (name, (digest, size)) = [".xz", ".gz"]
            .iter()
            .find_map(|ext| {
                let n = format!("{base}{ext}");
                release.sha256.get(&n).map(|v| (n, v.clone()))
            })
            .ok_or_else(|| DebianError::NotInRelease { suite: suite.to_string(), path: format!("{base}.xz") })?;
        let compressed = self.index_bytes(suite, release, &name, &digest, size)?;
        let subject = self.url.join(&format!("dists/{suite}/{name}"));
        let mut text = String::new();
        let r: Box<dyn Read> = if name.ends_with(".xz") {
            Box::new(liblzma::read::XzDecoder::new_multi_decoder(&compressed[..]))
        } else {
            Box::new(flate2::read::MultiGzDecoder::new(&compressed[..]))
        };
        let mut r = r;
        r.read_to_string(&mut text).map_err(|e| DebianError::Malformed {
            what: "Packages index",
            subject: subject.clone(),
            reason: format!("cannot decompress: {e}"),
        })?;
        parse_packages(&text, &subject)
    }

    /// The verified bytes of index `name` (relative to `dists/<suite>/`), from the index cache or
    /// downloaded (by hash when the archive supports it).
    fn index_bytes(&self, suite: &str, release: &Release, name: &str, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        if let Some(c) = &self.index_cache {
            if let Ok(b) = c.read_verified(digest) {
                return Ok(b);
            }
        }
        let plain = format!("dists/{suite}/{name}");
        let mut tries = Vec::new();
        if release.acquire_by_hash {
            let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            tries.push(format!("dists/{suite}/{dir}/by-hash/SHA256/{}", digest.hex()));
        }
        tries.push(plain.clone());
        let mut last = None;
        for rel in &tries {
            match self.get_bytes(rel) {
                Ok(b) => {
                    let actual = Digest::of_bytes(&b);
                    if &actual != digest || b.len() as u64 != size {
                        last = Some(DebianError::IndexMismatch {
                            url: self.url.join(rel),
                            expected: digest.clone(),
                            actual,
                        });
                        continue;
                    }
                    if let Some(c) = &self.index_cache {
                        let _ = c.put_bytes(&b);
                    }
                    return Ok(b);
                }
                Err(e @ DebianError::HttpStatus { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one try"))
    }

    /// The index of `suite` for `arch` over `components` (each component's `Packages`, merged).
    pub fn index(&self, suite: &str, components: &[String], arch: &str) -> Result<(Release, PackageIndex)> {
        let release = self.release(suite)?;
        let mut all = Vec::new();
        for c in components {
            all.extend(self.packages(suite, &release, c, arch)?);
        }
        Ok((release, PackageIndex::new(all, arch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\nSuite: oldstable\nVersion: 12.15\nCodename: bookworm\n\
Acquire-By-Hash: yes\nArchitectures: all amd64 arm64\nComponents: main contrib\nMD5Sum:\n \
0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all\nSHA256:\n \
9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5  8790396 main/binary-amd64/Packages.xz\n \
515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f 50060337 main/binary-amd64/Packages\n";

    #[test]
    fn parses_release() {
        let r = parse_release(RELEASE, "Release").unwrap();
        assert_eq!((r.codename.as_str(), r.version.as_str()), ("bookworm", "12.15"));
        assert!(r.acquire_by_hash);
        assert_eq!(r.components, ["main", "contrib"]);
        let (d, n) = &r.sha256["main/binary-amd64/Packages.xz"];
        assert_eq!((d.hex().starts_with("9e0b5a"), *n), (true, 8790396));
        assert_eq!(r.sha256.len(), 2);
        assert!(parse_release("Origin: x\n", "R").is_err());
        assert!(parse_release("SHA256:\n zz 1 a\n", "R").is_err());
    }

    pub(crate) fn stanza(name: &str, version: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/main/{name}_{version}_amd64.deb\n\
Size: 10\nSHA256: {}\n{extra}\n",
            Digest::of_bytes(format!("{name}{version}").as_bytes()).hex()
        )
    }

    #[test]
    fn parses_packages_and_indexes_them() {
        let text = [
            stanza("libc6", "2.36-9", "Priority: optional\nMulti-Arch: same\nDepends: libgcc-s1"),
            stanza("libc6", "2.36-9+deb12u4", "Priority: optional"),
            stanza("mawk", "1.3.4", "Priority: required\nEssential: yes\nProvides: awk\nPre-Depends: libc6 (>= 2.14)"),
            "Package: other\nVersion: 1\nArchitecture: arm64\nFilename: f\nSize: 1\nSHA256: ".to_string()
                + &"0".repeat(64)
                + "\n",
        ]
        .join("\n");
        let pkgs = parse_packages(&text, "P").unwrap();
        assert_eq!(pkgs.len(), 4);
        assert!(pkgs[2].essential && pkgs[2].pre_depends[0][0].name == "libc6");
        let idx = PackageIndex::new(pkgs, "amd64");
        assert_eq!(idx.len(), 2, "the arm64 package is dropped");
        assert_eq!(idx.get("libc6")[0].version, "2.36-9+deb12u4", "highest first");
        assert_eq!(idx.providers("awk")[0].0, "mawk");
        assert_eq!(idx.required(), ["mawk"]);
    }

    #[test]
    fn bad_stanzas_name_the_package() {
        let err = parse_packages("Package: zz\nVersion: 1\n", "P").unwrap_err();
        assert!(err.to_string().contains("`zz`"), "{err}");
        let bad = stanza("aa", "1", "Depends: bad name (").replace("Size: 10", "Size: x");
        assert!(parse_packages(&bad, "P").is_err());
    }
}
