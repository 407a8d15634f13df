//! The remote cache's error type. Messages name the URL, action key or digest in backticks and keep
//! the cause as `source`; none ever contains a credential (URLs are stored without user info).

use std::io;
use std::path::PathBuf;

use crate::cas::CasError;
use crate::model::digest::Digest;

/// Errors from [`RemoteCache`](super::RemoteCache). The caller turns any of them into a warning and
/// builds locally; [`RemoteError::should_warn`] says which ones deserve that warning.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The configured URL cannot be used. The URL shown has any user info replaced by `***`.
    #[error("`{url}` is not a usable remote cache URL: {reason}")]
    BadUrl { url: String, reason: String },
    /// `CBUILD_REMOTE_CACHE_AUTH` / `CBUILD_REMOTE_CACHE_TOKEN` are malformed (values never shown).
    #[error("remote cache credentials: {reason}")]
    BadAuth { reason: String },
    /// The HTTP client could not be set up (TLS backend, resolver configuration).
    #[error("cannot set up the HTTP client for the remote cache: {reason}")]
    Client { reason: String },
    /// The request did not complete: connection refused, DNS, a timeout, a connection reset.
    #[error("remote cache request `{method} {url}` failed: {reason}")]
    Transport {
        method: &'static str,
        url: String,
        reason: String,
        /// The server cannot be reached (refused, no route, TLS handshake) or did not answer
        /// within the request timeout: not worth retrying, and enough to turn the remote off.
        unreachable: bool,
        #[source]
        source: reqwest::Error,
    },
    /// The response body could not be read to its end (timeout or reset in the middle).
    #[error("remote cache response to `{method} {url}` broke off")]
    Read {
        method: &'static str,
        url: String,
        #[source]
        source: io::Error,
    },
    /// The server answered with a status this client does not treat as a hit, a miss or success.
    #[error("remote cache answered `{method} {url}` with HTTP {status}{hint}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        /// A `(hint: …)` suffix for statuses a person can fix (401, 403, 413, 507), or empty.
        hint: &'static str,
    },
    /// A REAPI gRPC call failed: the server's status (or a transport failure as `UNAVAILABLE`).
    #[error("remote cache `{url}`: `{method}` failed with {}{}{}", code_name(*code), colon(message), grpc_hint(*code))]
    Grpc {
        method: &'static str,
        url: String,
        code: tonic::Code,
        message: String,
        /// The server cannot be used at all (connection refused, TLS mismatch, no answer in the
        /// connect timeout, GetCapabilities failing): enough to turn the remote off.
        unreachable: bool,
    },
    /// A blob's bytes from the server do not hash to its digest (poisoned or truncated). Nothing
    /// was stored locally.
    #[error(
        "blob `{digest}` from remote cache `{url}` is corrupt: its {bytes} bytes hash to \
         `{actual}`; it was discarded"
    )]
    Corrupt { digest: Digest, actual: Digest, bytes: u64, url: String },
    /// A blob the entry references is not on the server (evicted or never uploaded).
    #[error("blob `{digest}` is not in remote cache `{url}`")]
    BlobMissing { digest: Digest, url: String },
    /// An action-cache value that is not a cbuild entry, or is inconsistent with itself or with
    /// the key it was stored under.
    #[error("remote cache entry `{url}` for action `{key}` is unusable: {reason}")]
    BadEntry { key: String, url: String, reason: String },
    /// The reader trusts some keys and the entry carries no valid signature by any of them: it
    /// was ignored (a miss). Anyone who can write to the server can plant such an entry.
    #[error("remote cache entry `{url}` for action `{key}` is not trusted and was ignored: {reason}")]
    Untrusted { key: String, url: String, reason: String },
    /// The build's remote time budget is spent ([`super::budget`]): the remote costs more than
    /// it saves, so it is turned off for the rest of the build.
    #[error("remote cache `{url}` is turned off for the rest of this build: {reason}")]
    OverBudget { url: String, reason: String },
    /// An earlier error about the server itself disabled the remote for this `RemoteCache`.
    #[error("remote cache `{url}` is disabled for the rest of this build after an earlier error: {reason}")]
    Disabled { url: String, reason: String },
    /// The local blob directory failed (a blob to upload is missing or corrupt, a disk error).
    #[error("local blob store for the remote cache")]
    Local {
        #[source]
        source: CasError,
    },
    /// Writing a downloaded blob locally failed.
    #[error("I/O error on `{path}` while storing a blob from the remote cache")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RemoteError {
    /// True if the error is about the server as a whole (unreachable, timing out, refusing our
    /// credentials, failing with 5xx): such an error disables the remote for the rest of the
    /// build, so a dead server costs one timeout, not one per action.
    pub fn disables_remote(&self) -> bool {
        match self {
            RemoteError::Transport { .. } | RemoteError::Read { .. } | RemoteError::Client { .. } => true,
            RemoteError::Status { status, .. } => matches!(status, 401 | 403 | 407 | 429) || *status >= 500,
            // NOT_FOUND is a miss, handled before it becomes an error; the rest is the server.
            RemoteError::Grpc { code, .. } => *code != tonic::Code::NotFound,
            _ => false,
        }
    }

    /// True if one such error is enough to turn the remote off: it cannot be reached at all
    /// (connection refused, no route, TLS set-up), it refuses our credentials, or the time budget
    /// is spent. Other server errors (a 5xx, a reset, a timeout, 429) turn it off only when they
    /// repeat ([`super::client::FAILURES_TO_DISABLE`] in a row), so one bad answer costs one miss.
    pub fn disables_at_once(&self) -> bool {
        match self {
            RemoteError::Transport { unreachable, .. } => *unreachable,
            RemoteError::Client { .. } => true,
            RemoteError::Status { status, .. } => matches!(status, 401 | 403 | 407),
            RemoteError::Grpc { code, unreachable, .. } => {
                use tonic::Code::*;
                *unreachable
                    || matches!(
                        code,
                        Unauthenticated | PermissionDenied | Unimplemented | InvalidArgument | FailedPrecondition
                    )
            }
            _ => false,
        }
    }

    /// A problem with one entry or blob, not with the server: counted and reported once per
    /// build in a summary line ([`super::RemoteCache::problem_summary`]) instead of per action.
    pub fn is_entry_problem(&self) -> bool {
        matches!(
            self,
            RemoteError::Corrupt { .. }
                | RemoteError::BlobMissing { .. }
                | RemoteError::BadEntry { .. }
                | RemoteError::Untrusted { .. }
        )
    }

    /// A short name of the kind, for the summary line.
    pub fn kind_name(&self) -> &'static str {
        match self {
            RemoteError::Corrupt { .. } => "corrupt blob",
            RemoteError::BlobMissing { .. } => "missing blob",
            RemoteError::BadEntry { .. } => "unusable entry",
            RemoteError::Untrusted { .. } => "untrusted entry",
            RemoteError::Status { status: 429, .. } => "rate limited (429)",
            RemoteError::Status { .. } => "HTTP error",
            RemoteError::Transport { .. } | RemoteError::Read { .. } => "network error",
            RemoteError::Grpc { .. } => "gRPC error",
            _ => "error",
        }
    }

    /// False only for [`RemoteError::Disabled`]: the error that disabled the remote was already
    /// returned (once) and is the one to print; later calls need no further warning.
    pub fn should_warn(&self) -> bool {
        !matches!(self, RemoteError::Disabled { .. })
    }
}

/// The remote module's result type.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// `NOT_FOUND`, `UNAVAILABLE`, … as gRPC documents the codes.
fn code_name(c: tonic::Code) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{c:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn colon(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

/// The `(hint: …)` suffix of a [`RemoteError::Grpc`].
fn grpc_hint(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::Unauthenticated => {
            " (hint: the server wants credentials: set CBUILD_REMOTE_CACHE_TOKEN or CBUILD_REMOTE_CACHE_AUTH, \
             or pass `--remote-header NAME=VALUE`, e.g. the API-key header your server documents)"
        }
        tonic::Code::PermissionDenied => " (hint: the credentials are not allowed to do this; use read-only mode to only read)",
        tonic::Code::InvalidArgument | tonic::Code::NotFound => {
            " (hint: check the instance name: the path of the `grpc://host:port/<instance>` URL or `--remote-instance-name`)"
        }
        tonic::Code::Unimplemented => " (hint: is this a REAPI v2 server? For an HTTP cache use `http://`)",
        _ => "",
    }
}

/// The `(hint: …)` suffix of a [`RemoteError::Status`].
pub(crate) fn status_hint(status: u16) -> &'static str {
    match status {
        401 => {
            " (hint: the server wants credentials: set CBUILD_REMOTE_CACHE_AUTH=user:password or \
             CBUILD_REMOTE_CACHE_TOKEN, or check the ones set)"
        }
        403 => " (hint: the credentials are not allowed to do this; use read-only mode to only read)",
        413 => " (hint: the server limits the request size, e.g. nginx `client_max_body_size`)",
        507 => " (hint: the server is out of space)",
        _ => "",
    }
}

impl crate::model::error::Kinded for RemoteError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        use crate::model::error::ErrorKind::*;
        match self {
            // `--remote-cache`, its credentials or its keys as configured.
            RemoteError::BadUrl { .. } | RemoteError::BadAuth { .. } => User,
            _ => Environment,
        }
    }
}
