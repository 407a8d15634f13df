//! The cache module's error type. Every variant names the path, key or digest it is about in
//! backticks and keeps the underlying cause as its `source`.

use std::io;
use std::path::PathBuf;

use crate::cas::CasError;
use crate::model::digest::Digest;

/// Errors from the action cache, the stat cache and the blob store behind them.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The database could not be opened at all (permissions, disk, locking); corruption is not
    /// reported here: a corrupt database is discarded and recreated with a warning instead.
    #[error("cannot open the cache database `{path}`")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed; `what` says which operation (and names its key or path).
    #[error("cache database `{path}`: {what} failed")]
    Db {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite found corruption while the cache was in use. The database is marked and discarded at
    /// the next [`Cache::open`](super::Cache::open).
    #[error(
        "cache database `{path}` is corrupt ({what}); it will be discarded and rebuilt the next time \
         cbuild opens the cache (hint: or run `cbuild cache clean`)"
    )]
    Corrupt {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A file-system operation failed.
    #[error("I/O error on `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A path given to the stat cache is not a regular file (after following symlinks).
    #[error("`{path}` is not a regular file, so it cannot be hashed")]
    NotAFile { path: PathBuf },
    /// The blob store failed.
    #[error("blob store `{dir}` failed")]
    Cas {
        dir: PathBuf,
        #[source]
        source: CasError,
    },
    /// `put_action` was asked to reference a blob that is not in the blob store; write blobs first.
    #[error(
        "action `{key}` references blob `{digest}`, which is not in the blob store `{dir}` \
         (hint: store blobs with `Cache::cas()` before recording the action)"
    )]
    MissingBlob { key: String, digest: Digest, dir: PathBuf },
    /// A value could not be serialised for storage.
    #[error("cannot serialise {what}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// `clean` refuses to run while another process (or another `Cache` value) has the cache open.
    #[error(
        "the cache `{dir}` is in use by another cbuild process (hint: wait for it to finish, \
         then run `cbuild cache clean` again)"
    )]
    InUse { dir: PathBuf },
    /// A size such as `10GB` could not be parsed.
    #[error("`{input}` is not a size: {reason} (examples: `10GB`, `500MiB`, `1.5G`, `1024`)")]
    InvalidSize { input: String, reason: String },
    /// A duration such as `7d` could not be parsed.
    #[error("`{input}` is not a duration: {reason} (examples: `7d`, `12h`, `30m`, `1d12h`)")]
    InvalidDuration { input: String, reason: String },
}

/// The cache module's result type.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// Maps an `io::Error` to [`CacheError::Io`] naming `path`.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.into();
    move |source| CacheError::Io { path, source }
}

impl crate::model::error::Kinded for CacheError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        use crate::model::error::ErrorKind::*;
        match self {
            CacheError::InvalidSize { .. } | CacheError::InvalidDuration { .. } => User,
            CacheError::MissingBlob { .. } | CacheError::Encode { .. } => Internal,
            CacheError::Cas { source, .. } => crate::model::error::Kinded::kind(source),
            _ => Environment,
        }
    }
}
