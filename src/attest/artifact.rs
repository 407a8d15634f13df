//! Documents attached to an image as OCI 1.1 artifacts: an image manifest with an `artifactType`,
//! the empty config (`application/vnd.oci.empty.v1+json`, `{}`), the document as its one layer
//! (titled), and `subject` = the image manifest. The referrers of an image are an image index of
//! their descriptors (what the referrers API answers and what the tag-schema fallback tag holds);
//! locally they are written as an OCI layout of their own beside the image's layout, whose
//! `index.json` is that list (`cbuild-out/<package>/<name>.referrers/`): the image's layout keeps
//! exactly one manifest, so `skopeo inspect oci:cbuild-out/<package>/<name>` keeps working.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::model::digest::Digest;
use crate::oci::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

/// The empty config of artifacts (OCI 1.1 image-spec, "Guidance for an empty descriptor").
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The file name of a layer (`oras pull` writes it under this name).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// The in-toto predicate type of a statement (as attestations in registries carry it).
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// A document to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// Its file name (`sbom.spdx.json`).
    pub title: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// Annotations of the artifact manifest besides `created`.
    pub annotations: BTreeMap<String, String>,
}

/// The image an artifact refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// One artifact: its manifest's exact bytes and the blobs it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub title: String,
    pub artifact_type: String,
    pub manifest: Vec<u8>,
    pub digest: Digest,
    pub annotations: BTreeMap<String, String>,
    /// The empty config and the document.
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

impl Attachment {
    /// The document's bytes.
    pub fn document(&self) -> &[u8] {
        self.blobs.last().map(|b| b.1.as_slice()).unwrap_or_default()
    }

    /// Its descriptor as a referrers list holds it: media type, digest, size, `artifactType` and
    /// the manifest's annotations.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": self.digest.to_string(),
            "size": self.manifest.len(),
            "artifactType": self.artifact_type,
            "annotations": self.annotations,
        })
    }
}

/// The artifact manifest attaching `doc` to `subject`, created at `created` (RFC 3339).
pub fn attach(subject: &Subject, doc: Document, created: &str) -> Attachment {
    let config = Digest::of_bytes(EMPTY_CONFIG);
    let layer = Digest::of_bytes(&doc.bytes);
    let mut annotations = doc.annotations.clone();
    annotations.insert(ANNOTATION_CREATED.to_string(), created.to_string());
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "artifactType": doc.media_type,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config.to_string(), "size": EMPTY_CONFIG.len()},
        "layers": [{
            "mediaType": doc.media_type,
            "digest": layer.to_string(),
            "size": doc.bytes.len(),
            "annotations": {ANNOTATION_TITLE: doc.title},
        }],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
        "annotations": annotations,
    });
    // serde_json's maps are sorted: canonical, compact bytes.
    let manifest = serde_json::to_vec(&m).expect("JSON values serialise");
    Attachment {
        title: doc.title,
        artifact_type: doc.media_type,
        digest: Digest::of_bytes(&manifest),
        manifest,
        annotations,
        blobs: vec![(config, EMPTY_CONFIG.to_vec()), (layer, doc.bytes)],
    }
}

/// An image index listing `descriptors` (a referrers response; the tag-schema fallback's index).
pub fn referrers_index(descriptors: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": descriptors}))
        .expect("JSON values serialise")
}

/// The tag the OCI 1.1 referrers tag schema uses for the referrers of `subject`: `sha256-<hex>`.
pub use crate::registry::referrers::fallback_tag;

/// Writes the referrers of one image as an OCI layout at `dir` (replacing what was there): every
/// blob, and `index.json` listing the artifact manifests (with `artifactType` and annotations).
/// Unchanged content is not written again.
pub fn write_layout(dir: &Path, attachments: &[Attachment]) -> std::io::Result<()> {
    let mut want: BTreeMap<String, &[u8]> = BTreeMap::new();
    for a in attachments {
        want.insert(a.digest.hex().to_string(), &a.manifest);
        for (d, b) in &a.blobs {
            want.insert(d.hex().to_string(), b);
        }
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for (hex, bytes) in &want {
        let p = blobs.join(hex);
        if std::fs::metadata(&p).map(|m| m.len() == bytes.len() as u64).unwrap_or(false) {
            continue;
        }
        crate::fs::write_atomic(&p, bytes)?;
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    if std::fs::read(dir.join("oci-layout")).ok().as_deref() != Some(layout.as_slice()) {
        crate::fs::write_atomic(&dir.join("oci-layout"), layout)?;
    }
    let descriptors: Vec<Value> = attachments.iter().map(Attachment::descriptor).collect();
    let index = referrers_index(&descriptors);
    if std::fs::read(dir.join("index.json")).ok() != Some(index.clone()) {
        crate::fs::write_atomic(&dir.join("index.json"), &index)?;
    }
    // Blobs of earlier attachments go; a concurrent writer's temp files (`.tmp-…`) stay.
    for e in std::fs::read_dir(&blobs)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let blob = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if blob && !want.contains_key(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_name_their_subject_and_are_canonical() {
        let s = Subject { media_type: MEDIA_TYPE_MANIFEST.into(), digest: Digest::of_bytes(b"img"), size: 3 };
        let doc = Document {
            title: "sbom.spdx.json".into(),
            media_type: "application/spdx+json".into(),
            bytes: b"{}\n".to_vec(),
            annotations: BTreeMap::new(),
        };
        let a = attach(&s, doc.clone(), "1980-01-01T00:00:01Z");
        assert_eq!(a, attach(&s, doc, "1980-01-01T00:00:01Z"));
        let m: Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["subject"]["digest"], s.digest.to_string());
        assert_eq!(m["artifactType"], "application/spdx+json");
        assert_eq!(m["config"]["digest"], "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        assert_eq!(a.descriptor()["artifactType"], "application/spdx+json");
        assert_eq!(fallback_tag(&s.digest), format!("sha256-{}", s.digest.hex()));
        let d = tempfile::tempdir().unwrap();
        write_layout(d.path(), std::slice::from_ref(&a)).unwrap();
        let idx: Value = serde_json::from_slice(&std::fs::read(d.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["manifests"][0]["digest"], a.digest.to_string());
        assert_eq!(std::fs::read_dir(d.path().join("blobs/sha256")).unwrap().count(), 3);
    }
}
