//! Digests between our [`Digest`] (a checked sha256) and oci-spec's, for descriptors.

use super::error::{OciError, Result};
use crate::model::digest::Digest;

/// Converts our digest to oci-spec's (always valid: ours is a checked sha256).
pub fn spec_digest(d: &Digest) -> oci_spec::image::Digest {
    d.to_string().parse().expect("a sha256 Digest is a valid OCI digest")
}

/// Converts an oci-spec digest to ours; anything but sha256 is refused, naming `subject`.
pub fn our_digest(d: &oci_spec::image::Digest, subject: &str) -> Result<Digest> {
    Digest::parse(d.as_ref()).map_err(|source| OciError::BadDigest { subject: subject.to_string(), source })
}
