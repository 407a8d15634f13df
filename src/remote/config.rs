//! Settings of a remote cache client: mode, credentials (redacted in every `Debug`), timeouts, and
//! the URL check that moves `user:pass@` out of the URL. Reading flags and `cbuild.toml` is `cli`'s.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::{RemoteError, Result};

/// Environment variable holding `user:password` for HTTP basic auth.
pub const AUTH_ENV: &str = "CBUILD_REMOTE_CACHE_AUTH";
/// Environment variable holding a bearer token.
pub const TOKEN_ENV: &str = "CBUILD_REMOTE_CACHE_TOKEN";

/// Whether this build may write to the remote cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RemoteMode {
    /// Read and write (e.g. CI on the main branch).
    #[default]
    ReadWrite,
    /// Read only: never a PUT (e.g. CI on pull requests).
    ReadOnly,
}

impl FromStr for RemoteMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "read-write" => Ok(RemoteMode::ReadWrite),
            "read-only" => Ok(RemoteMode::ReadOnly),
            _ => Err(format!("`{s}` is not a remote cache mode (expected `read-write` or `read-only`)")),
        }
    }
}

impl fmt::Display for RemoteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteMode::ReadWrite => "read-write",
            RemoteMode::ReadOnly => "read-only",
        })
    }
}

/// Credentials for the remote cache. `Debug` never shows them (nor the user name).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum RemoteAuth {
    /// No `Authorization` header.
    #[default]
    None,
    /// HTTP basic auth: user, password.
    Basic(String, String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl fmt::Debug for RemoteAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteAuth::None => "None",
            RemoteAuth::Basic(..) => "Basic(<redacted>)",
            RemoteAuth::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

impl RemoteAuth {
    /// The `authorization` header value of these credentials (a secret: never print it).
    pub fn header_value(&self) -> Option<String> {
        use base64::Engine as _;
        match self {
            RemoteAuth::None => None,
            RemoteAuth::Basic(user, pass) => {
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))))
            }
            RemoteAuth::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }

    /// Reads [`AUTH_ENV`] and [`TOKEN_ENV`] (empty counts as unset).
    pub fn from_env() -> Result<RemoteAuth> {
        let var = crate::env::var;
        RemoteAuth::from_values(var(AUTH_ENV).as_deref(), var(TOKEN_ENV).as_deref())
    }

    /// The credentials the two variables' values describe. Errors never contain the values.
    pub fn from_values(auth: Option<&str>, token: Option<&str>) -> Result<RemoteAuth> {
        let auth = auth.filter(|s| !s.is_empty());
        let token = token.filter(|s| !s.trim().is_empty());
        match (auth, token) {
            (Some(_), Some(_)) => {
                Err(RemoteError::BadAuth { reason: format!("both {AUTH_ENV} and {TOKEN_ENV} are set; set only one") })
            }
            (Some(a), None) => match a.split_once(':') {
                Some((user, pass)) if !user.is_empty() => Ok(RemoteAuth::Basic(user.to_string(), pass.to_string())),
                _ => Err(RemoteError::BadAuth {
                    reason: format!("{AUTH_ENV} must look like `user:password` (its value is not shown)"),
                }),
            },
            (None, Some(t)) => Ok(RemoteAuth::Bearer(t.trim().to_string())),
            (None, None) => Ok(RemoteAuth::None),
        }
    }
}

/// Time limits. A dead server costs at most `connect` (refused connections fail at once), a
/// hung one `request`; either disables the remote for the rest of the build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connection set-up.
    pub connect: Duration,
    /// Until the response headers arrive, and for each read of a response body (so a large
    /// download may take longer, as long as bytes keep coming).
    pub request: Duration,
    /// Uploads may additionally take `size / min_upload_rate` seconds (bytes per second): a PUT
    /// has to finish as a whole.
    pub min_upload_rate: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(2), request: Duration::from_secs(10), min_upload_rate: 1 << 20 }
    }
}

impl Timeouts {
    /// The whole-request limit for uploading `size` bytes.
    pub fn upload(&self, size: u64) -> Duration {
        self.request + Duration::from_secs(size / self.min_upload_rate.max(1))
    }
}

/// A checked base URL without user info or trailing slash, and credentials found in it.
pub(crate) fn parse_base_url(url: &str) -> Result<(String, Option<(String, String)>)> {
    let bad = |reason: &str| RemoteError::BadUrl { url: redact_url(url), reason: reason.to_string() };
    let mut u = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https" | "grpc" | "grpcs") {
        return Err(bad(
            "the scheme must be `http` or `https` (Bazel HTTP cache) or `grpc` or `grpcs` (REAPI v2 over gRPC)",
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("there is no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(bad("a query or fragment cannot be part of a cache base URL"));
    }
    let creds = if !u.username().is_empty() || u.password().is_some() {
        let c = (percent_decode(u.username()), percent_decode(u.password().unwrap_or("")));
        let _ = u.set_username("");
        let _ = u.set_password(None);
        Some(c)
    } else {
        None
    };
    Ok((u.as_str().trim_end_matches('/').to_string(), creds))
}

/// `url` with anything between `://` and the last `@` of the authority replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_from_values() {
        assert_eq!(RemoteAuth::from_values(None, None).unwrap(), RemoteAuth::None);
        assert_eq!(RemoteAuth::from_values(Some(""), Some(" ")).unwrap(), RemoteAuth::None);
        assert_eq!(
            RemoteAuth::from_values(Some("ci:pa:ss"), None).unwrap(),
            RemoteAuth::Basic("ci".into(), "pa:ss".into())
        );
        assert_eq!(RemoteAuth::from_values(None, Some("tok\n")).unwrap(), RemoteAuth::Bearer("tok".into()));
        for (a, t) in [(Some("s3cret-no-colon"), None), (Some(":s3cret"), None), (Some("u:s3cret"), Some("s3cret"))] {
            let e = RemoteAuth::from_values(a, t).unwrap_err();
            assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let s = format!("{:?} {:?}", RemoteAuth::Basic("alice".into(), "pw1".into()), RemoteAuth::Bearer("tk2".into()));
        assert_eq!(s, "Basic(<redacted>) Bearer(<redacted>)");
    }

    #[test]
    fn mode_parses() {
        assert_eq!("read-only".parse::<RemoteMode>().unwrap(), RemoteMode::ReadOnly);
        assert_eq!(RemoteMode::ReadWrite.to_string(), "read-write");
        assert!("rw".parse::<RemoteMode>().is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(parse_base_url("http://127.0.0.1:9090/").unwrap(), ("http://127.0.0.1:9090".into(), None));
        assert_eq!(parse_base_url("https://c.example/pre/fix/").unwrap().0, "https://c.example/pre/fix");
        let (u, c) = parse_base_url("http://us%40er:p%3Aw@h:1/x").unwrap();
        assert_eq!((u.as_str(), c), ("http://h:1/x", Some(("us@er".into(), "p:w".into()))));
        assert_eq!(parse_base_url("grpc://127.0.0.1:8980/main").unwrap().0, "grpc://127.0.0.1:8980/main");
        assert_eq!(parse_base_url("grpcs://t:k@c.example:443").unwrap().1, Some(("t".into(), "k".into())));
        for bad in ["ftp://h/", "h:1", "http://h/?q=1", "not a url", "grpc:///x"] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
        let e = parse_base_url("ftp://u:s3cret@h/").unwrap_err().to_string();
        assert!(e.contains("ftp://***@h/") && !e.contains("s3cret"), "{e}");
        assert_eq!(redact_url("http://a:b@c@h:1/p@q"), "http://***@h:1/p@q");
        assert_eq!(redact_url("http://h/p"), "http://h/p");
    }
}
