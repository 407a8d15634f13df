//! Image references `registry/repository[:tag][@sha256:…]`, parsed and normalised the way Docker
//! does (`busybox` → `docker.io/library/busybox:latest`). Pure string work: no I/O here. Shared by
//! analysis (which checks `oci_pull` references) and the registry client (which resolves them);
//! `crate::registry` re-exports it.

use std::fmt;

use crate::model::digest::Digest;

/// A string that is not an image reference (inside `crate::registry`, it converts to
/// `RegistryError::BadReference`, with the same message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` is not an image reference: {reason}")]
pub struct BadReference {
    pub reference: String,
    pub reason: String,
}

type Result<T> = std::result::Result<T, BadReference>;

/// The registry Docker assumes when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";

/// A normalised image reference: always a registry and a repository, and a tag, a digest or both
/// (`latest` when the text named neither).
///
/// ```
/// use cbuild::model::reference::Reference;
/// let r = Reference::parse("busybox").unwrap();
/// assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
/// let r = Reference::parse("127.0.0.1:5000/team/app:v1").unwrap();
/// assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "team/app", Some("v1")));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `[registry/]repository[:tag][@sha256:<hex>]` with Docker's defaults: a first path
    /// component with a `.` or `:`, or `localhost`, is a registry; otherwise the registry is
    /// `docker.io`, where a single-component repository gets `library/`.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |reason: &str| BadReference { reference: s.to_string(), reason: reason.to_string() };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                if !d.starts_with("sha256:") {
                    return Err(bad("only `sha256:` digests are supported"));
                }
                let d = Digest::parse(d)
                    .map_err(|_| bad("the digest is not `sha256:` followed by 64 lowercase hex digits"))?;
                (rest, Some(d))
            }
            None => (s, None),
        };
        // A `:` after the last `/` starts the tag (a `:` before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(|r| bad(&r))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        check_registry(&registry).map_err(|r| bad(&r))?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(&repository).map_err(|r| bad(&r))?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// The registry as written (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What the registry API is asked for: the digest when there is one, else the tag.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), ..self.clone() }
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        check_tag(tag).map_err(|reason| BadReference {
            reference: format!("{}/{}:{tag}", self.registry, self.repository),
            reason,
        })?;
        Ok(Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() })
    }

    /// Another repository of the same registry (for cross-repository mount hints).
    pub fn in_repository(&self, repository: &str) -> Result<Reference> {
        Reference::parse(&format!("{}/{repository}:latest", self.registry))
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl std::str::FromStr for Reference {
    type Err = BadReference;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

fn check_tag(t: &str) -> std::result::Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-')));
    if ok {
        Ok(())
    } else {
        Err(format!("tag `{t}` is invalid (1-128 of [A-Za-z0-9_.-], not starting with `.` or `-`)"))
    }
}

fn check_registry(r: &str) -> std::result::Result<(), String> {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') => (None, p),
            _ => return Err(format!("registry `{r}` is not a valid [IPv6] address")),
        }
    } else {
        match r.split_once(':') {
            Some((h, _)) => (Some(h), &r[h.len()..]),
            None => (Some(r), ""),
        }
    };
    if let Some(h) = host {
        let ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(format!("registry `{r}` is not a valid host name"));
        }
    }
    if !port.is_empty() {
        let p = port.strip_prefix(':').unwrap_or("x");
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry `{r}` has an invalid port"));
        }
    }
    Ok(())
}

fn check_repository(repo: &str) -> std::result::Result<(), String> {
    if repo.is_empty() {
        return Err("the repository name is empty".into());
    }
    if repo.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    for comp in repo.split('/') {
        if !component_ok(comp) {
            return Err(format!(
                "repository component `{comp}` is invalid (lowercase letters and digits, \
                 separated by `.`, `_`, `__` or `-`)"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_defaults() {
        assert_eq!(p("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("library/busybox:1.36").to_string(), "docker.io/library/busybox:1.36");
        assert_eq!(p("acme/app").to_string(), "docker.io/acme/app:latest");
        assert_eq!(p("index.docker.io/busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("docker.io/busybox").repository(), "library/busybox");
    }

    #[test]
    fn registries_ports_tags_digests() {
        let d = Digest::of_bytes(b"x");
        let r = p(&format!("localhost:5000/a/b/c:v1.2-rc_3@{d}"));
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "a/b/c");
        assert_eq!(r.tag(), Some("v1.2-rc_3"));
        assert_eq!(r.digest(), Some(&d));
        assert_eq!(r.target(), d.to_string());
        let r = p(&format!("ghcr.io/acme/app@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("ghcr.io/acme/app@{d}"));
        assert_eq!(p("localhost/app").registry(), "localhost");
        assert_eq!(p("[::1]:5000/app:x").registry(), "[::1]:5000");
        assert_eq!(p("127.0.0.1:5000/app").target(), "latest");
        assert_eq!(p("my-registry.example.com/a__b/c-d.e").repository(), "a__b/c-d.e");
    }

    #[test]
    fn round_trips() {
        for s in ["docker.io/library/busybox:latest", "127.0.0.1:41234/x/y:1", "ghcr.io/o/r:t"] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }

    #[test]
    fn clear_errors() {
        for (s, want) in [
            ("", "empty"),
            ("Busybox", "repository component `Busybox`"),
            ("busybox:", "tag ``"),
            ("busybox:-x", "tag `-x`"),
            ("busybox@sha256:abc", "64 lowercase hex"),
            ("busybox@md5:abc", "only `sha256:`"),
            ("a b", "whitespace"),
            ("reg.io:99x/app", "invalid port"),
            ("reg.io/a//b", "component ``"),
            ("reg.io/a/b_", "component `b_`"),
            ("-bad.io/app", "host name"),
            ("[zz]:5/app", "IPv6"),
        ] {
            let e = Reference::parse(s).unwrap_err().to_string();
            assert!(e.contains(&format!("`{s}`")), "{e}");
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn with_tag_and_digest() {
        let r = p("reg.io/app:v1");
        let d = Digest::of_bytes(b"y");
        assert_eq!(r.with_digest(d.clone()).target(), d.to_string());
        assert_eq!(r.with_digest(d).with_tag("v2").unwrap().to_string(), "reg.io/app:v2");
        assert!(r.with_tag("bad tag").is_err());
        assert_eq!(r.in_repository("base/run").unwrap().name(), "reg.io/base/run");
    }
}
