//! Registry credentials: Docker's `config.json` (`auths`, `credHelpers`, `credsStore`), the
//! `docker-credential-*` helper protocol, and `WWW-Authenticate` challenges. Secrets are wrapped so
//! that no `Debug`, `Display` or error ever shows them. The HTTP token exchange is in `client.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::error::{RegistryError, Result};
use crate::model::reference::DOCKER_HUB;

/// A secret string (password, identity token, bearer token). Its `Debug` prints `<redacted>` and
/// it has no `Display`, so it cannot end up in a message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (or personal access token), sent as HTTP basic auth or to the token
    /// service.
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (`identitytoken` in config.json, or a helper's `<token>` user),
    /// exchanged at the token service.
    IdentityToken(Secret),
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=…`: send the credentials with every request.
    Basic,
    /// `Bearer realm=…,service=…`: get a token from `realm` per repository scope.
    Bearer { realm: String, service: Option<String> },
}

/// Parses a `WWW-Authenticate` header value; `None` for schemes we do not speak.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            Some(Challenge::Bearer { realm: params.get("realm")?.clone(), service: params.get("service").cloned() })
        }
        _ => None,
    }
}

/// `key="quoted \" value", key2=token` → map (keys lowercased).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string();
        }
        out.insert(key, value);
    }
    out
}

/// The parts of Docker's `config.json` that hold credentials. Its `Debug` shows which registries
/// have entries, never their content.
#[derive(Clone, Default, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

#[derive(Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("auths", &self.auths.keys().collect::<Vec<_>>())
            .field("cred_helpers", &self.cred_helpers)
            .field("creds_store", &self.creds_store)
            .finish()
    }
}

/// The directory holding `config.json`: `dir` if given, else `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir(dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = dir {
        return Some(d.to_path_buf());
    }
    if let Some(d) = crate::env::var_os(crate::env::DOCKER_CONFIG) {
        return Some(PathBuf::from(d));
    }
    crate::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker"))
}

impl DockerConfig {
    /// Reads `<dir>/config.json` (see [`docker_config_dir`]); a missing file is an empty config.
    pub fn load(dir: Option<&Path>) -> Result<DockerConfig> {
        let Some(dir) = docker_config_dir(dir) else {
            return Ok(DockerConfig::default());
        };
        let path = dir.join("config.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DockerConfig::default()),
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        // serde's message could quote a value (a password); name only the position.
        let mut c: DockerConfig = serde_json::from_slice(&bytes).map_err(|e| RegistryError::DockerConfig {
            path: path.clone(),
            reason: format!("not valid JSON at line {} column {}", e.line(), e.column()),
        })?;
        c.path = Some(path);
        Ok(c)
    }

    /// Parses config.json text (for tests and callers that hold it already).
    pub fn from_json(text: &str) -> Result<DockerConfig> {
        serde_json::from_str(text).map_err(|e| RegistryError::DockerConfig {
            path: PathBuf::from("<config.json>"),
            reason: format!("not valid JSON at line {} column {}", e.line(), e.column()),
        })
    }

    /// The credential for `registry` (as in a [`super::Reference`]): `credHelpers[registry]`, else
    /// `credsStore`, else `auths` (whose keys may be URLs like `https://index.docker.io/v1/`).
    /// `None`: anonymous.
    pub async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        let keys = server_keys(registry);
        let helper =
            self.cred_helpers.iter().find(|(k, _)| keys.contains(&normalize_server(k))).map(|(_, v)| v.clone());
        if let Some(h) = helper {
            return run_helper(&h, registry).await;
        }
        if let Some(h) = self.creds_store.as_deref().filter(|h| !h.is_empty()) {
            if let Some(c) = run_helper(h, registry).await? {
                return Ok(Some(c));
            }
        }
        let entry = self.auths.iter().find(|(k, _)| keys.contains(&normalize_server(k))).map(|(_, v)| v);
        let Some(e) = entry else { return Ok(None) };
        let bad = |reason: &str| RegistryError::DockerConfig {
            path: self.path.clone().unwrap_or_else(|| "config.json".into()),
            reason: format!("`auths` entry for `{registry}`: {reason}"),
        };
        if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(Secret::new(t))));
        }
        if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw =
                base64::engine::general_purpose::STANDARD.decode(a.trim()).map_err(|_| bad("`auth` is not base64"))?;
            let raw = String::from_utf8(raw).map_err(|_| bad("`auth` is not UTF-8"))?;
            let (u, p) = raw.split_once(':').ok_or_else(|| bad("`auth` does not decode to `user:password`"))?;
            return Ok(Some(Credential::Basic { username: u.to_string(), password: Secret::new(p) }));
        }
        match (&e.username, &e.password) {
            (Some(u), Some(p)) if !u.is_empty() => {
                Ok(Some(Credential::Basic { username: u.clone(), password: Secret::new(p.clone()) }))
            }
            _ => Ok(None),
        }
    }
}

/// The server name a helper is asked about: Docker Hub's historical URL, else the registry.
fn helper_server(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// The normalised config keys that mean `registry`.
fn server_keys(registry: &str) -> Vec<String> {
    let r = registry.to_ascii_lowercase();
    if r == DOCKER_HUB {
        vec!["docker.io".into(), "index.docker.io".into(), "registry-1.docker.io".into()]
    } else {
        vec![r]
    }
}

/// `https://host:5000/v1/` → `host:5000`.
fn normalize_server(key: &str) -> String {
    let k = key.trim().to_ascii_lowercase();
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(&k);
    k.split('/').next().unwrap_or("").to_string()
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` with the server on stdin (the docker-credential-helpers
/// protocol). "credentials not found" is `None`, not an error.
async fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>> {
    let fail = |reason: String| RegistryError::CredentialHelper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    if helper.is_empty() || helper.contains('/') || helper.starts_with('-') {
        return Err(fail("not a valid helper name".into()));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                fail(format!("`{program}` is not on PATH (install it, or remove it from config.json)"))
            } else {
                fail(format!("cannot start `{program}`: {e}"))
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(helper_server(registry).as_bytes())
            .await
            .map_err(|e| fail(format!("cannot write to its stdin: {e}")))?;
    }
    let out = child.wait_with_output().await.map_err(|e| fail(format!("cannot read its answer: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // Only the exit status: a failing helper's output is not ours to echo (it may hold secrets).
        return Err(fail(format!("it exited with {}", out.status)));
    }
    let ans: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("its answer is not the expected JSON (line {} column {})", e.line(), e.column())))?;
    if ans.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if ans.username == "<token>" {
        Credential::IdentityToken(Secret::new(ans.secret))
    } else {
        Credential::Basic { username: ans.username, password: Secret::new(ans.secret) }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="cbuild-test-registry""#), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(r#"bearer realm="http://x/t\"q", error="invalid_token""#),
            Some(Challenge::Bearer { realm: "http://x/t\"q".into(), service: None })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[tokio::test]
    async fn config_auths_in_every_shape() {
        let c = DockerConfig::from_json(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"},
                "http://127.0.0.1:5000": {"username": "u", "password": "p4ss"},
                "ghcr.io": {"identitytoken": "tok"},
                "empty.io": {}
            }}"#,
        )
        .unwrap();
        let basic = |u: &str, p: &str| Credential::Basic { username: u.into(), password: Secret::new(p) };
        assert_eq!(c.credential("docker.io").await.unwrap(), Some(basic("hub", "hubpw")));
        assert_eq!(c.credential("127.0.0.1:5000").await.unwrap(), Some(basic("u", "p4ss")));
        assert_eq!(c.credential("ghcr.io").await.unwrap(), Some(Credential::IdentityToken(Secret::new("tok"))));
        assert_eq!(c.credential("empty.io").await.unwrap(), None);
        assert_eq!(c.credential("other.io").await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_auth_field_is_named_without_its_value() {
        let c = DockerConfig::from_json(r#"{"auths": {"r.io": {"auth": "!!notbase64-s3cret"}}}"#).unwrap();
        let e = c.credential("r.io").await.unwrap_err().to_string();
        assert!(e.contains("`r.io`") && e.contains("base64"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = DockerConfig::from_json(r#"{"auths": {"r.io": {"auth": 5, "password": "s3cret"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = DockerConfig::from_json(
            r#"{"auths": {"r.io": {"username": "u", "password": "s3cret", "auth": "dTpzM2NyZXQ="}}}"#,
        )
        .unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("r.io") && !d.contains("s3cret") && !d.contains("dTpzM2NyZXQ"), "{d}");
        let cred = Credential::Basic { username: "u".into(), password: Secret::new("s3cret") };
        assert!(!format!("{cred:?}").contains("s3cret"));
    }

    #[test]
    fn server_names() {
        assert_eq!(normalize_server("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(normalize_server("HTTP://Reg.io:5000"), "reg.io:5000");
        assert_eq!(helper_server("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(helper_server("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
