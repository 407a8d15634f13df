//! The one error type of the `oci` module. Every message names its subject (path, digest, layer,
//! entry) in backticks and keeps the underlying cause as `#[source]`.

use std::io;
use std::path::PathBuf;

use crate::cas::CasError;
use crate::model::digest::Digest;

/// Errors from writing and reading layers, images, layouts and archives.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A filesystem operation failed.
    #[error("I/O error on `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The blob store failed (missing or corrupt blob, I/O).
    #[error(transparent)]
    Cas(#[from] CasError),
    /// A tar entry given to the layer writer is not a clean relative path.
    #[error("layer entry `{path}` has an invalid path: {reason}")]
    InvalidEntryPath { path: String, reason: &'static str },
    /// Two entries of one layer have the same path.
    #[error("layer entry `{path}` appears twice")]
    DuplicateEntry { path: String },
    /// An entry sits below another entry that is not a directory.
    #[error("layer entry `{path}` is below `{parent}`, which is not a directory")]
    ParentNotDir { path: String, parent: String },
    /// A hard link of the layer writer points somewhere it must not.
    #[error("hard link `{path}` -> `{target}` is invalid: {reason}")]
    BadHardlink { path: String, target: String, reason: &'static str },
    /// A directory walk met a device, fifo or socket.
    #[error("`{path}` is a device, fifo or socket; layers hold only files, directories and links")]
    SpecialFile { path: PathBuf },
    /// A file name is not UTF-8 (layer paths are UTF-8 strings).
    #[error("`{path}` has a name that is not UTF-8")]
    NonUtf8Path { path: PathBuf },
    /// A layer source that its resolver refused or could not resolve when the tar was written
    /// (see `LayerEntries::with_resolver`); the message names it.
    #[error("{0}")]
    Source(String),
    /// A source file changed size while it was being archived.
    #[error("`{path}` changed while it was being archived (expected {expected} bytes)")]
    FileChanged { path: PathBuf, expected: u64 },
    /// The two passes over the same entries produced different tars.
    #[error("layer content changed between hashing (`{first}`) and compressing (`{second}`); a source file was modified during the build")]
    LayerChanged { first: Digest, second: Digest },
    /// A layer blob could not be written or compressed.
    #[error("cannot write layer `{subject}`")]
    LayerWrite {
        subject: String,
        #[source]
        source: io::Error,
    },
    /// JSON (manifest, config, index, manifest.json) could not be parsed or produced.
    #[error("`{subject}` is not valid: {what}")]
    Json {
        subject: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A string that should be a sha256 digest is not one.
    #[error("`{subject}` has a bad digest")]
    BadDigest {
        subject: String,
        #[source]
        source: crate::model::digest::BadDigest,
    },
    /// Content does not hash to the digest that names it.
    #[error("blob `{expected}` ({subject}) is corrupt: its content hashes to `{actual}`")]
    DigestMismatch { subject: String, expected: Digest, actual: Digest },
    /// A descriptor's size does not match its blob.
    #[error("blob `{digest}` has {actual} bytes but its descriptor says {expected}")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
    /// A layer's uncompressed digest differs from the config's diff_id.
    #[error("layer `{layer}` uncompresses to `{actual}` but the config's diff_id is `{expected}`")]
    DiffIdMismatch { layer: Digest, expected: Digest, actual: Digest },
    /// An image value or document is inconsistent (wrong counts, wrong media type, ...).
    #[error("image `{subject}` is invalid: {reason}")]
    InvalidImage { subject: String, reason: String },
    /// Rebase preconditions failed.
    #[error("cannot rebase `{image}`: {reason}")]
    Rebase { image: Digest, reason: String },
    /// An OCI layout or archive is malformed or does not hold what was asked for.
    #[error("OCI layout `{path}`: {reason}")]
    Layout { path: PathBuf, reason: String },
    /// A docker-archive/OCI-archive tar is malformed or does not hold what was asked for.
    #[error("archive `{path}`: {reason}")]
    Archive { path: PathBuf, reason: String },
    /// Reading a tar stream failed.
    #[error("cannot read tar of `{subject}`")]
    TarRead {
        subject: String,
        #[source]
        source: io::Error,
    },
    /// An extracted entry would escape the root or is otherwise unsafe; nothing was written for it.
    #[error("layer `{layer}`: entry `{entry}` refused: {reason}")]
    UnsafeEntry { layer: Digest, entry: String, reason: String },
    /// Extracting an entry failed on the filesystem.
    #[error("layer `{layer}`: cannot extract entry `{entry}`")]
    Extract {
        layer: Digest,
        entry: String,
        #[source]
        source: io::Error,
    },
    /// oci-spec refused to build a document.
    #[error("cannot build `{subject}`")]
    Spec {
        subject: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// The `oci` module's result type.
pub type Result<T, E = OciError> = std::result::Result<T, E>;

/// Maps an `io::Error` to [`OciError::Io`] naming `path`.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> OciError {
    let path = path.into();
    move |source| OciError::Io { path, source }
}

impl crate::model::error::Kinded for OciError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        use crate::model::error::ErrorKind::*;
        match self {
            OciError::Cas(e) => crate::model::error::Kinded::kind(e),
            // The disk, or a blob the cache holds that is damaged.
            OciError::Io { .. }
            | OciError::LayerWrite { .. }
            | OciError::Extract { .. }
            | OciError::DigestMismatch { .. }
            | OciError::SizeMismatch { .. } => Environment,
            // Workspace sources that cannot go into a layer.
            OciError::InvalidEntryPath { .. }
            | OciError::DuplicateEntry { .. }
            | OciError::ParentNotDir { .. }
            | OciError::BadHardlink { .. }
            | OciError::SpecialFile { .. }
            | OciError::NonUtf8Path { .. } => User,
            // An input image or layout (imported, pulled, a base) that is not a valid image.
            OciError::Json { .. }
            | OciError::BadDigest { .. }
            | OciError::DiffIdMismatch { .. }
            | OciError::InvalidImage { .. }
            | OciError::Layout { .. }
            | OciError::Archive { .. }
            | OciError::TarRead { .. }
            | OciError::UnsafeEntry { .. } => User,
            // A source edited while the build read it: building again gives a consistent result.
            OciError::FileChanged { .. } | OciError::LayerChanged { .. } => Build,
            // As the runner's own source checks report it (a link leading out, a missing file).
            OciError::Source(_) => Build,
            OciError::Rebase { .. } => Build,
            OciError::Spec { .. } => Internal,
        }
    }
}
