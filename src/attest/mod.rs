//! Supply-chain documents of an image, made from what the build graph knows: cbuild's own SBOM
//! (SPDX 2.3 and CycloneDX 1.5 JSON), an in-toto statement with a SLSA Provenance v1 predicate, and
//! the OCI 1.1 artifacts attaching them to the image (`subject` = its manifest). Deterministic: the
//! same build gives the same bytes (sorted, ids derived from digests, no time but SOURCE_DATE_EPOCH).
//!
//! ```text
//! ActionGraph + outputs ─► facts::collect ─► ImageFacts ─┬─► spdx::document ──────┐
//!                                                        ├─► cyclonedx::document ─┼─► artifact::attach ─► Attachment
//!                                                        └─► provenance::statement┘   (manifest + blobs, subject = image)
//! ```
//! No registry I/O here (`registry::referrers` pushes and reads them); no printing.

pub mod artifact;
pub mod cyclonedx;
pub mod error;
pub mod facts;
pub mod provenance;
pub mod spdx;

use std::collections::BTreeMap;

pub use artifact::{Attachment, Document, Subject};
pub use error::AttestError;
pub use facts::{ImageFacts, Inputs};

use crate::model::digest::Digest;
use crate::model::label::Label;

/// The file names (`org.opencontainers.image.title`) of the attached documents.
pub const SPDX_TITLE: &str = "sbom.spdx.json";
pub const CYCLONEDX_TITLE: &str = "sbom.cdx.json";
pub const PROVENANCE_TITLE: &str = "provenance.intoto.json";
/// The annotation naming the target an artifact was made for.
pub const ANNOTATION_TARGET: &str = "io.cbuild.target";

/// The artifact types cbuild attaches.
pub const ARTIFACT_TYPES: [&str; 3] = [spdx::MEDIA_TYPE, cyclonedx::MEDIA_TYPE, provenance::MEDIA_TYPE];

/// The documents of image target `label` (manifest `manifest`), attached to it: SPDX, CycloneDX,
/// provenance, in that order.
pub fn attest(inp: &Inputs<'_>, label: &Label, manifest: &Digest) -> Result<Vec<Attachment>, AttestError> {
    let f = facts::collect(inp, label, manifest)?;
    Ok(attachments(&f))
}

/// The attachments of collected facts.
pub fn attachments(f: &ImageFacts) -> Vec<Attachment> {
    let subject = Subject { media_type: f.media_type.clone(), digest: f.manifest.clone(), size: f.manifest_size };
    let mut ann = BTreeMap::new();
    ann.insert(ANNOTATION_TARGET.to_string(), f.label.clone());
    let doc = |title: &str, media_type: &str, bytes: Vec<u8>, ann: &BTreeMap<String, String>| Document {
        title: title.to_string(),
        media_type: media_type.to_string(),
        bytes,
        annotations: ann.clone(),
    };
    let mut prov_ann = ann.clone();
    prov_ann.insert(artifact::ANNOTATION_PREDICATE_TYPE.to_string(), provenance::PREDICATE_TYPE.to_string());
    vec![
        artifact::attach(&subject, doc(SPDX_TITLE, spdx::MEDIA_TYPE, spdx::document(f), &ann), &f.created),
        artifact::attach(
            &subject,
            doc(CYCLONEDX_TITLE, cyclonedx::MEDIA_TYPE, cyclonedx::document(f), &ann),
            &f.created,
        ),
        artifact::attach(
            &subject,
            doc(PROVENANCE_TITLE, provenance::MEDIA_TYPE, provenance::statement(f), &prov_ann),
            &f.created,
        ),
    ]
}

/// `cbuild-out/<package>/<name>.referrers`: where the referrers layout of an image layout goes.
pub fn referrers_dir(layout: &str) -> String {
    format!("{layout}.referrers")
}
