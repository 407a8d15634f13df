//! The errors of the `debian` module: each names its subject (package, URL, path, entry) in
//! backticks, keeps the cause as `#[source]`, and ends with a `hint:` where there is a fix to suggest.

use std::io;
use std::path::PathBuf;

use crate::cas::CasError;
use crate::model::digest::Digest;
use crate::oci::OciError;

/// A `Result` with [`DebianError`].
pub type Result<T, E = DebianError> = std::result::Result<T, E>;

/// Everything that can go wrong between an archive URL and a root-filesystem layer.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// No archive URL was given and none could be found in the host's apt configuration.
    #[error(
        "no Debian archive is configured: no setting, `CBUILD_DEBIAN_ARCHIVE` is unset, and no \
         Debian source was found in `{apt_dir}` (hint: set `CBUILD_DEBIAN_ARCHIVE` to a Debian \
         mirror URL, or set the archive in `cbuild.toml`)"
    )]
    NoArchive { apt_dir: PathBuf },
    /// An archive URL that is not an `http(s)://` URL.
    #[error("the Debian archive URL `{url}` (from {from}) is not an http:// or https:// URL")]
    BadArchiveUrl { url: String, from: String },
    /// The archive could not be reached (DNS, connection, timeout, TLS, truncated body).
    #[error(
        "cannot reach the Debian archive at `{url}` (archive from {from}) (hint: check the \
         network, or point `CBUILD_DEBIAN_ARCHIVE` / the `cbuild.toml` setting at a reachable \
         mirror)"
    )]
    Unreachable {
        url: String,
        from: String,
        #[source]
        source: reqwest::Error,
    },
    /// The archive answered with an HTTP error status.
    #[error("`{url}` answered HTTP {status} (archive from {from}){hint}")]
    HttpStatus { url: String, status: u16, from: String, hint: String },
    /// A `Release` file, `Packages` index or control file that does not parse.
    #[error("malformed {what} `{subject}`: {reason}")]
    Malformed { what: &'static str, subject: String, reason: String },
    /// The `Release` file does not list an index cbuild needs.
    #[error(
        "`{path}` is not listed in the `Release` file of suite `{suite}` (hint: check the suite, \
         component and architecture names)"
    )]
    NotInRelease { suite: String, path: String },
    /// A downloaded index does not match the sha256 listed in `Release`.
    #[error("`{url}` hashes to `{actual}`, but the `Release` file says `{expected}` (hint: the mirror may be updating; try again)")]
    IndexMismatch { url: String, expected: Digest, actual: Digest },
    /// A requested or depended-on package that the index does not have.
    #[error("package `{name}` is not in the index{}", required_by.as_ref().map(|r| format!(" (required by `{r}`)")).unwrap_or_default())]
    UnknownPackage { name: String, required_by: Option<String> },
    /// A dependency none of whose alternatives can be satisfied.
    #[error("`{package}` depends on `{relation}`, which cannot be satisfied: {reason}")]
    Unsatisfiable { package: String, relation: String, reason: String },
    /// A relation field (`Depends`, `Provides`, a requested package) that does not parse.
    #[error("cannot parse the relation `{text}`: {reason}")]
    BadRelation { text: String, reason: String },
    /// A Debian version string that does not parse.
    #[error("`{version}` is not a Debian version: {reason}")]
    BadVersion { version: String, reason: String },
    /// A lock file that does not parse or is inconsistent.
    #[error("bad Debian lock file `{subject}`: {reason}")]
    BadLock { subject: String, reason: String },
    /// A downloaded or cached `.deb` whose sha256 or size differs from the lock.
    #[error(
        "package `{}` {}: `{}` hashes to `{}` ({} bytes) but the lock says `{}` ({} bytes); the \
         file was refused and not kept (hint: the archive changed or something tampered with it; \
         if the archive really published a new build, refresh the lock with `cbuild lock`)",
        .0.package, .0.version, .0.filename, .0.actual, .0.actual_size, .0.expected, .0.expected_size
    )]
    DebMismatch(Box<DebMismatch>),
    /// A `.deb` that the cache does not hold when building from a lock.
    #[error("package `{package}` ({digest}) is not in the .deb cache `{dir}` (hint: fetch the lock's packages first)")]
    NotFetched { package: String, digest: Digest, dir: PathBuf },
    /// A `.deb` whose structure is wrong (ar members, compression, control file).
    #[error("package `{package}`: bad .deb: {reason}")]
    BadDeb { package: String, reason: String },
    /// A `.deb` entry refused by the safe-extraction rules.
    #[error("package `{package}`: refusing entry `{entry}`: {reason}")]
    UnsafeEntry { package: String, entry: String, reason: String },
    /// An I/O error while extracting one entry of a package.
    #[error("package `{package}`: cannot extract `{entry}`")]
    Extract {
        package: String,
        entry: String,
        #[source]
        source: io::Error,
    },
    /// The root filesystem cannot be completed (users, generated files).
    #[error("cannot build the root filesystem: {reason}")]
    Rootfs { reason: String },
    /// Any other I/O error on a path.
    #[error("I/O error on `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An error from the layer writer.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// An error from a blob directory.
    #[error(transparent)]
    Cas(#[from] CasError),
}

/// What [`DebianError::DebMismatch`] reports (boxed: errors stay small).
#[derive(Debug)]
pub struct DebMismatch {
    pub package: String,
    pub version: String,
    pub filename: String,
    pub expected: Digest,
    pub actual: Digest,
    pub expected_size: u64,
    pub actual_size: u64,
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> DebianError + '_ {
    move |source| DebianError::Io { path: path.to_path_buf(), source }
}

impl crate::model::error::Kinded for DebianError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        use crate::model::error::ErrorKind::*;
        match self {
            DebianError::Oci(e) => crate::model::error::Kinded::kind(e),
            DebianError::Cas(e) => crate::model::error::Kinded::kind(e),
            // cbuild.toml, the BUILD target's packages, or its lock file.
            DebianError::NoArchive { .. }
            | DebianError::BadArchiveUrl { .. }
            | DebianError::NotInRelease { .. }
            | DebianError::UnknownPackage { .. }
            | DebianError::Unsatisfiable { .. }
            | DebianError::BadRelation { .. }
            | DebianError::BadVersion { .. }
            | DebianError::BadLock { .. } => User,
            // The mirror or the disk.
            DebianError::Unreachable { .. }
            | DebianError::HttpStatus { .. }
            | DebianError::Malformed { .. }
            | DebianError::IndexMismatch { .. }
            | DebianError::DebMismatch(_)
            | DebianError::Extract { .. }
            | DebianError::Io { .. } => Environment,
            // A package whose pinned bytes cannot make a root file system.
            DebianError::BadDeb { .. } | DebianError::UnsafeEntry { .. } | DebianError::Rootfs { .. } => Build,
            DebianError::NotFetched { .. } => Internal,
        }
    }
}
