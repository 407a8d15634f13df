//! Where the Debian archive is: an explicit setting, else `CBUILD_DEBIAN_ARCHIVE`, else the first
//! Debian source of the host's apt configuration (`sources.list`, then `sources.list.d/*.list` and
//! `*.sources` in name order; `deb-src`, disabled and `-security` sources skipped). No network here.

use std::fmt;
use std::path::{Path, PathBuf};

use super::control::parse_stanzas;
use super::error::{DebianError, Result};

/// The environment variable naming the archive URL.
pub const ARCHIVE_ENV: &str = "CBUILD_DEBIAN_ARCHIVE";

/// Where an archive URL came from; errors name it so the user knows what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveOrigin {
    /// Passed in by the caller (`cbuild.toml` or a flag).
    Setting,
    /// The `CBUILD_DEBIAN_ARCHIVE` environment variable.
    Env,
    /// A source in this apt configuration file.
    SourcesList(PathBuf),
}

impl fmt::Display for ArchiveOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveOrigin::Setting => f.write_str("the cbuild setting"),
            ArchiveOrigin::Env => write!(f, "`{ARCHIVE_ENV}`"),
            ArchiveOrigin::SourcesList(p) => write!(f, "`{}`", p.display()),
        }
    }
}

/// An archive base URL (the directory holding `dists/` and `pool/`, no trailing `/`) and where it
/// came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveUrl {
    pub url: String,
    pub origin: ArchiveOrigin,
}

impl ArchiveUrl {
    /// Checks and normalises `url` (must be `http://` or `https://`; a trailing `/` is dropped).
    pub fn new(url: &str, origin: ArchiveOrigin) -> Result<ArchiveUrl> {
        let u = url.trim().trim_end_matches('/');
        let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(DebianError::BadArchiveUrl { url: url.to_string(), from: origin.to_string() });
        }
        Ok(ArchiveUrl { url: u.to_string(), origin })
    }

    /// The URL of a path relative to the archive root (`dists/...`, `pool/...`).
    pub fn join(&self, rel: &str) -> String {
        format!("{}/{}", self.url, rel.trim_start_matches('/'))
    }
}

/// Finds the archive: `setting`, else `$CBUILD_DEBIAN_ARCHIVE`, else `/etc/apt`.
pub fn find_archive(setting: Option<&str>) -> Result<ArchiveUrl> {
    let env = crate::env::var(ARCHIVE_ENV);
    find_archive_in(setting, env.as_deref(), Path::new("/etc/apt"))
}

/// [`find_archive`] with the environment value and the apt directory passed in (for tests).
/// Empty values count as unset.
pub fn find_archive_in(setting: Option<&str>, env: Option<&str>, apt_dir: &Path) -> Result<ArchiveUrl> {
    if let Some(s) = setting.filter(|s| !s.trim().is_empty()) {
        return ArchiveUrl::new(s, ArchiveOrigin::Setting);
    }
    if let Some(s) = env.filter(|s| !s.trim().is_empty()) {
        return ArchiveUrl::new(s, ArchiveOrigin::Env);
    }
    for (file, src) in apt_sources(apt_dir) {
        if src.is_debian() {
            return ArchiveUrl::new(&src.uri, ArchiveOrigin::SourcesList(file));
        }
    }
    Err(DebianError::NoArchive { apt_dir: apt_dir.to_path_buf() })
}

/// One `deb` source line or deb822 stanza (one URI).
#[derive(Clone, Debug, PartialEq, Eq)]
struct AptSource {
    uri: String,
    suites: Vec<String>,
    signed_by: String,
}

/// Debian's release codenames and aliases, to tell a Debian mirror from a third-party repository
/// whose URL says nothing.
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "stable",
    "testing",
    "unstable",
    "oldstable",
    "oldoldstable",
    "experimental",
];

impl AptSource {
    /// A Debian (not -security, not third-party) source: its suites are Debian's, or its
    /// path ends in `/debian`, or it is signed by the Debian archive keyring.
    fn is_debian(&self) -> bool {
        let security = self.uri.contains("security")
            || self.suites.iter().any(|s| s.ends_with("-security") || s.ends_with("/updates"));
        if security {
            return false;
        }
        let debian_suite = |s: &str| {
            let (base, suffix) = s.split_once('-').unwrap_or((s, ""));
            DEBIAN_SUITES.contains(&base)
                && ["", "updates", "backports", "backports-sloppy", "proposed-updates"].contains(&suffix)
        };
        self.suites.iter().any(|s| debian_suite(s))
            || self.uri.trim_end_matches('/').ends_with("/debian")
            || self.signed_by.contains("debian-archive-keyring")
    }
}

/// Every `deb` source of the apt configuration, in apt's reading order.
fn apt_sources(apt_dir: &Path) -> Vec<(PathBuf, AptSource)> {
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let found = if f.extension().is_some_and(|e| e == "sources") {
            parse_deb822_sources(&text)
        } else {
            parse_one_line_sources(&text)
        };
        out.extend(found.into_iter().map(|s| (f.clone(), s)));
    }
    out
}

/// `deb [opts] uri suite [components...]` lines.
fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ").or_else(|| line.strip_prefix("deb\t")) else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = String::new();
        if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else { continue };
            signed_by =
                r[..close].split_whitespace().find_map(|o| o.strip_prefix("signed-by=")).unwrap_or("").to_string();
            rest = r[close + 1..].trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource { uri: uri.to_string(), suites: vec![suite.to_string()], signed_by });
    }
    out
}

/// deb822 `.sources` stanzas: `Types: deb`, `URIs:`, `Suites:`, `Enabled: no` skips.
fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let Ok(stanzas) = parse_stanzas(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in stanzas {
        let types = s.get("Types").unwrap_or("");
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if s.get("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let suites: Vec<String> = s.get("Suites").unwrap_or("").split_whitespace().map(str::to_string).collect();
        let signed_by = s.get("Signed-By").unwrap_or("").to_string();
        for uri in s.get("URIs").unwrap_or("").split_whitespace() {
            out.push(AptSource { uri: uri.to_string(), suites: suites.clone(), signed_by: signed_by.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Host names here are placeholders of the reserved `.example` domain, not real mirrors.
    fn apt(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sources.list.d")).unwrap();
        for (name, text) in files {
            std::fs::write(t.path().join(name), text).unwrap();
        }
        t
    }

    #[test]
    fn setting_beats_env_beats_apt() {
        let t = apt(&[("sources.list", "deb http://a.example/debian bookworm main\n")]);
        let got = find_archive_in(Some("http://s.example/d/"), Some("http://e.example/d"), t.path()).unwrap();
        assert_eq!(got, ArchiveUrl { url: "http://s.example/d".into(), origin: ArchiveOrigin::Setting });
        let got = find_archive_in(None, Some("http://e.example/d"), t.path()).unwrap();
        assert_eq!(got.origin, ArchiveOrigin::Env);
        let got = find_archive_in(Some(""), None, t.path()).unwrap();
        assert_eq!(got.url, "http://a.example/debian");
        assert_eq!(got.origin, ArchiveOrigin::SourcesList(t.path().join("sources.list")));
    }

    #[test]
    fn reads_deb822_and_skips_security_src_disabled_and_third_party() {
        let t = apt(&[
            ("sources.list", "# nothing\ndeb-src http://src.example/debian bookworm main\n"),
            (
                "sources.list.d/a-thirdparty.list",
                "deb [arch=amd64 signed-by=/k.gpg] https://vendor.example/apt cloud-bookworm main\n",
            ),
            (
                "sources.list.d/b.sources",
                "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
                 Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n\
                 Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
            ),
            ("sources.list.d/c.list.disabled", "deb http://no.example/debian bookworm main\n"),
        ]);
        let got = find_archive_in(None, None, t.path()).unwrap();
        assert_eq!(got.url, "http://mirror.example/debian");
        assert_eq!(got.origin, ArchiveOrigin::SourcesList(t.path().join("sources.list.d/b.sources")));
    }

    #[test]
    fn nothing_found_is_a_clear_error() {
        let t = apt(&[("sources.list", "deb http://vendor.example/apt stable-vendor main\n")]);
        let err = find_archive_in(None, None, t.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(ARCHIVE_ENV) && msg.contains("hint:"), "{msg}");
    }

    #[test]
    fn bad_urls_name_their_origin() {
        let err = find_archive_in(None, Some("ftp://x.example/debian"), Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains(ARCHIVE_ENV), "{err}");
        assert!(ArchiveUrl::new("http://", ArchiveOrigin::Setting).is_err());
        let u = ArchiveUrl::new("https://m.example/debian/", ArchiveOrigin::Setting).unwrap();
        assert_eq!(u.join("/pool/a.deb"), "https://m.example/debian/pool/a.deb");
    }
}
