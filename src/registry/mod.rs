//! Registry I/O over the OCI distribution API: references, credentials (Docker's config.json and
//! credential helpers, basic and bearer auth), shallow pulls and pushes with HEAD-first checks and
//! cross-repository mounts. Images themselves are [`crate::oci`] values; no CLI or printing here.
//!
//! ```text
//! Reference::parse ─► Client::resolve ─► Resolved { digest, image: oci::Image (manifest + config) }
//!                     Client::fetch_blob ─► BlobDir        (only when layer bytes are needed)
//! oci::Image + BlobDir ─► Client::push_image ─► PushReport { uploaded, mounted, skipped_existing, … }
//! artifacts (subject = an image) ─► Client::push_referrers ─► referrers API or tag `sha256-<hex>`
//!                                   Client::referrers      ◄─ the same, read back
//! ```
//!
//! Why `reqwest` directly and not `oci-client` (0.18): it would bring a second `oci-spec` (0.10
//! beside our 0.7), a second `sha2` and `reqwest` 0.13 beside the 0.12 the crate already uses,
//! which is a lot of compile time on two cores; and what it lacks is most of this module anyway:
//! its `mount_blob` asks for a token scoped to the target only (a bearer registry then refuses
//! to mount from the source) and drops the upload session a refused mount opens, it has no
//! retries/`Retry-After`, no credential helpers, and its errors do not keep the registry and
//! repository a user needs to act on a 401. The distribution API we use is small: GET/HEAD
//! manifests and blobs, POST/PATCH/PUT uploads, PUT manifests.
//!
//! ```no_run
//! use cbuild::registry::{Client, ClientOptions, Reference};
//! # async fn f() -> Result<(), cbuild::registry::RegistryError> {
//! let client = Client::new(ClientOptions::default())?;
//! let r = Reference::parse("127.0.0.1:5000/base/run:bookworm")?;
//! let resolved = client.resolve(&r, None).await?;      // manifest + config only
//! println!("{} -> {}", r, resolved.digest);             // record the pin
//! # Ok(()) }
//! ```

pub mod auth;
pub mod client;
pub mod error;
pub mod pull;
pub mod push;
pub mod referrers;
/// The reference type lives in [`crate::model::reference`] (analysis checks references without the
/// registry client); re-exported so `registry::reference::…` and `registry::Reference` keep working.
pub use crate::model::reference;

pub use crate::model::reference::Reference;
pub use auth::{Credential, DockerConfig, Secret};
pub use client::{uses_plain_http, Client, ClientOptions, Deadlines, RetryPolicy};
pub use error::{RegistryError, Result};
pub use pull::{RawManifest, Resolved};
pub use push::{PushOptions, PushReport};
