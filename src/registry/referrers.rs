//! OCI 1.1 referrers: pushing artifacts whose `subject` is an image, and finding them again. A
//! registry with the referrers API indexes a manifest that has a subject itself and says so in the
//! PUT's `OCI-Subject` header; one without (Docker's distribution 2.8) gets the referrers tag
//! schema: an image index tagged `sha256-<hex>` of the subject, listing the referrers'
//! descriptors, read, extended with what is new and written back (distribution-spec v1.1,
//! "Pushing Manifests with Subject"). Reading asks `GET /v2/<name>/referrers/<digest>` first and
//! falls back to that tag when the registry answers 404. Documents are plain bytes here.

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::client::{redact_url, status_error, Client, Req, Scope};
use super::error::{RegistryError, Result};
use crate::cas::BlobDir;
use crate::model::digest::Digest;
use crate::model::reference::Reference;
use crate::oci::{MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

/// How a registry lists the referrers of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferrersVia {
    /// The referrers API (`GET /v2/<name>/referrers/<digest>`).
    Api,
    /// The tag-schema fallback: an index under this tag (`sha256-<hex>`).
    TagSchema(String),
}

/// One artifact to push: its manifest's exact bytes, the blobs it names (all small), and its
/// descriptor as a referrers list holds it (with `artifactType` and annotations).
#[derive(Clone, Debug)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
    pub descriptor: Value,
}

/// What [`Client::push_referrers`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferrersReport {
    pub via: ReferrersVia,
    /// Blobs whose bytes were sent (the others were there).
    pub uploaded: usize,
}

/// The tag the referrers tag schema uses for `subject`'s referrers.
pub fn fallback_tag(subject: &Digest) -> String {
    subject.to_string().replace(':', "-")
}

impl Client {
    /// Pushes `artifacts` (blobs, then each manifest by digest) to the repository of `repo` and
    /// makes them findable as referrers of `subject`: through the registry's referrers API when it
    /// says it indexed them, else by adding their descriptors to the fallback tag's index.
    /// `blobs` is only read for blobs that are not in memory (none today).
    pub async fn push_referrers(
        &self,
        repo: &Reference,
        subject: &Digest,
        artifacts: &[Artifact],
        blobs: &BlobDir,
    ) -> Result<ReferrersReport> {
        let mut uploaded = 0;
        let mut indexed = true;
        for a in artifacts {
            for b in &a.blobs {
                if self.push_blob_bytes(repo, Bytes::copy_from_slice(b), blobs).await? {
                    uploaded += 1;
                }
            }
            indexed &= self.put_artifact_manifest(repo, &a.manifest).await?;
        }
        if indexed {
            return Ok(ReferrersReport { via: ReferrersVia::Api, uploaded });
        }
        let tag = fallback_tag(subject);
        let at = repo.with_tag(&tag)?;
        let mut list = match self.fetch_manifest(&at).await {
            Ok(m) => index_manifests(&m.bytes, &at.to_string())?,
            Err(RegistryError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let before = list.len();
        for a in artifacts {
            let d = a.descriptor["digest"].as_str().unwrap_or_default();
            if !list.iter().any(|x| x["digest"].as_str() == Some(d)) {
                list.push(a.descriptor.clone());
            }
        }
        if list.len() != before {
            let index = serde_json::to_vec(
                &serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": list}),
            )
            .map_err(|source| RegistryError::Json { url: at.to_string(), what: "index", source })?;
            self.push_manifest(&at, Bytes::from(index), MEDIA_TYPE_INDEX).await?;
        }
        Ok(ReferrersReport { via: ReferrersVia::TagSchema(tag), uploaded })
    }

    /// PUTs an artifact manifest by its digest; true when the registry says it indexed its
    /// subject (`OCI-Subject`).
    async fn put_artifact_manifest(&self, repo: &Reference, bytes: &[u8]) -> Result<bool> {
        let digest = Digest::of_bytes(bytes);
        let url = self.url(repo.registry(), repo.repository(), &format!("manifests/{digest}"))?;
        let shown = redact_url(&url);
        let req =
            Req::new(Method::PUT, url).header(CONTENT_TYPE, MEDIA_TYPE_MANIFEST).body(Bytes::copy_from_slice(bytes));
        let mut budget = self.budget(repo.registry());
        let resp = self.send(repo.registry(), &Scope::push(repo.repository()), &req, &mut budget).await?;
        if !resp.status().is_success() {
            return Err(status_error(&Method::PUT, &shown, resp).await);
        }
        Ok(resp.headers().get("oci-subject").is_some())
    }

    /// The referrers of `subject` in the repository of `repo` (descriptors with `artifactType` and
    /// annotations), and how the registry keeps them. None is an empty list.
    pub async fn referrers(&self, repo: &Reference, subject: &Digest) -> Result<(Vec<Value>, ReferrersVia)> {
        let url = self.url(repo.registry(), repo.repository(), &format!("referrers/{subject}"))?;
        let shown = redact_url(&url);
        let req = Req::new(Method::GET, url).header(ACCEPT, MEDIA_TYPE_INDEX);
        let mut budget = self.budget(repo.registry());
        let resp = self.send(repo.registry(), &Scope::pull(repo.repository()), &req, &mut budget).await?;
        match resp.status() {
            s if s.is_success() => {
                let bytes = self.read_limited(resp, 4 << 20, &shown, &budget).await?;
                return Ok((index_manifests(&bytes, &shown)?, ReferrersVia::Api));
            }
            // No referrers API (distribution 2.8 answers 404 to the unknown route).
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST => {}
            _ => return Err(status_error(&Method::GET, &shown, resp).await),
        }
        let tag = fallback_tag(subject);
        let at = repo.with_tag(&tag)?;
        match self.fetch_manifest(&at).await {
            Ok(m) => Ok((index_manifests(&m.bytes, &at.to_string())?, ReferrersVia::TagSchema(tag))),
            Err(RegistryError::NotFound { .. }) => Ok((Vec::new(), ReferrersVia::TagSchema(tag))),
            Err(e) => Err(e),
        }
    }
}

/// The `manifests` of an image index (a referrers answer or a fallback tag's index).
fn index_manifests(bytes: &[u8], url: &str) -> Result<Vec<Value>> {
    let v: Value = serde_json::from_slice(bytes).map_err(|source| RegistryError::Json {
        url: url.to_string(),
        what: "referrers index",
        source,
    })?;
    match v.get("manifests") {
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(Value::Null) | None => Ok(Vec::new()),
        Some(_) => Err(RegistryError::BadResponse {
            url: url.to_string(),
            reason: "the referrers index's `manifests` is not a list".into(),
        }),
    }
}
