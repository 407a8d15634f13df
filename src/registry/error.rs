//! The one error type of the `registry` module. Messages name the registry, repository, reference,
//! digest or URL in backticks; none ever holds a credential (URLs never carry user info here).

use std::path::PathBuf;

use crate::cas::CasError;
use crate::model::digest::Digest;
use crate::model::reference::BadReference;
use crate::oci::OciError;

/// Errors from references, credentials, pulling and pushing.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A string is not an image reference.
    #[error("`{reference}` is not an image reference: {reason}")]
    BadReference { reference: String, reason: String },
    /// The registry refused the request: 401 (no or wrong credentials) or 403 (not allowed).
    #[error(
        "registry `{registry}` refused {action} access to repository `{repository}` ({status}, {who})\n\
         hint: {hint}",
        status = status_text(*.status),
        who = if *.had_credentials { "with the configured credentials" } else { "no credentials found" },
        hint = auth_hint(.registry, *.had_credentials)
    )]
    Unauthorized {
        registry: String,
        repository: String,
        /// `pull` or `push`.
        action: &'static str,
        status: u16,
        had_credentials: bool,
    },
    /// A manifest (tag or digest) or blob does not exist.
    #[error("`{reference}` not found in the registry ({what})")]
    NotFound { reference: String, what: &'static str },
    /// An index has no manifest for the wanted platform.
    #[error("`{reference}` has no image for platform `{platform}` (it has: {available})")]
    PlatformNotFound { reference: String, platform: String, available: String },
    /// Content does not hash to the digest that names it; it was refused (nothing was stored).
    #[error("{subject}: expected digest `{expected}` but the content hashes to `{actual}`; refused")]
    DigestMismatch { subject: String, expected: Digest, actual: Digest },
    /// A blob the push needs is neither local, nor in the target, nor mountable.
    #[error(
        "blob `{digest}` is not in the local store, not in `{target}` and not mountable from the \
         known source repositories\nhint: fetch the base image's layers first (base images are shallow)"
    )]
    BlobUnavailable { digest: Digest, target: String },
    /// The registry answered with something that is not what the protocol says.
    #[error("unexpected answer from `{url}`: {reason}")]
    BadResponse { url: String, reason: String },
    /// A JSON document from the registry (manifest, index, token) could not be parsed.
    #[error("`{url}` returned invalid JSON ({what})")]
    Json {
        url: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// An HTTP status the operation cannot go on with (after retries where they apply).
    #[error("{method} `{url}` failed with {status}{detail}")]
    Status {
        method: String,
        url: String,
        status: u16,
        /// A short excerpt of the registry's error JSON, prefixed by `: ` (or empty).
        detail: String,
    },
    /// The connection failed (after retries).
    #[error("cannot reach `{url}`")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A logical request (all its attempts and waits) ran out of time: the registry is hung, or
    /// slower than the client's minimum rate ([`crate::registry::Deadlines`]).
    #[error(
        "registry `{registry}` did not complete {what} in time (gave up after {secs:.1} s, {attempts} {tries})\n\
         hint: check that the registry is up and answering (`curl -v {base}/v2/` should answer at once) and \
         the network path to it; a registry that accepts connections but never answers looks like this",
        secs = .after.as_secs_f64(),
        tries = if *.attempts == 1 { "attempt" } else { "attempts" }
    )]
    Timeout {
        registry: String,
        /// `http(s)://host` of the registry.
        base: String,
        /// What did not complete: `GET `<url>``, `the upload of blob `<digest>``.
        what: String,
        after: std::time::Duration,
        attempts: u32,
    },
    /// The docker config file is unreadable or malformed.
    #[error("docker config `{path}` is invalid: {reason}")]
    DockerConfig { path: PathBuf, reason: String },
    /// A `docker-credential-*` helper failed.
    #[error("credential helper `docker-credential-{helper}` failed for `{registry}`: {reason}")]
    CredentialHelper { helper: String, registry: String, reason: String },
    /// The blob store failed.
    #[error(transparent)]
    Cas(#[from] CasError),
    /// A manifest or config is not a valid image.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// A local file operation failed.
    #[error("I/O error on `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The `registry` module's result type.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl From<BadReference> for RegistryError {
    fn from(BadReference { reference, reason }: BadReference) -> Self {
        RegistryError::BadReference { reference, reason }
    }
}

fn status_text(s: u16) -> String {
    match s {
        401 => "401 Unauthorized".into(),
        403 => "403 Forbidden".into(),
        s => s.to_string(),
    }
}

fn auth_hint(registry: &str, had: bool) -> String {
    if had {
        format!(
            "check the credentials for `{registry}` (`docker login {registry}`, or `auths`/`credHelpers` \
             in $DOCKER_CONFIG/config.json, default ~/.docker/config.json) and that they may access this repository"
        )
    } else {
        format!(
            "log in with `docker login {registry}`, or add `{registry}` to `auths` (or `credHelpers`) in \
             $DOCKER_CONFIG/config.json (default ~/.docker/config.json)"
        )
    }
}

impl crate::model::error::Kinded for RegistryError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        use crate::model::error::ErrorKind::*;
        match self {
            RegistryError::Cas(e) => crate::model::error::Kinded::kind(e),
            RegistryError::Oci(e) => crate::model::error::Kinded::kind(e),
            // What the workspace or the command line names, or the credentials it configured.
            RegistryError::BadReference { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::PlatformNotFound { .. }
            | RegistryError::DockerConfig { .. } => User,
            // The registry or the network: retrying later or elsewhere may help.
            RegistryError::DigestMismatch { .. }
            | RegistryError::BlobUnavailable { .. }
            | RegistryError::BadResponse { .. }
            | RegistryError::Json { .. }
            | RegistryError::Status { .. }
            | RegistryError::Http { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::CredentialHelper { .. }
            | RegistryError::Io { .. } => Environment,
        }
    }
}
