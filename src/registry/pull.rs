//! Shallow pulls: resolve a reference to one platform's manifest and config (following OCI
//! indexes and Docker manifest lists), verified byte-exactly; fetch a layer blob only on request,
//! streamed into a [`BlobDir`] and verified before it is kept. Every GET is idempotent, so an
//! answer cut off mid-body is fetched again (within the retry policy and the request's deadline).

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::Digest as _;

use super::client::{redact_url, status_error, Budget, Client, Req, Scope};
use super::error::{RegistryError, Result};
use crate::cas::BlobDir;
use crate::model::digest::Digest;
use crate::model::reference::Reference;
use crate::oci::{
    Image, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};

/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;
/// Configs larger than this are refused.
const MAX_CONFIG: usize = 32 << 20;

/// What [`Client::resolve`] found.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The reference, pinned to [`Resolved::digest`].
    pub reference: Reference,
    /// The digest of the document the reference names: an index (multi-platform) or the manifest.
    /// This is what a pin (`oci_pull(digest = …)`) records.
    pub digest: Digest,
    /// The media type of that document.
    pub media_type: String,
    /// The chosen platform's image: manifest and config, both verified. Its
    /// [`Image::digest`] equals [`Resolved::digest`] unless the reference named an index.
    pub image: Image,
}

/// A manifest or index as received: exact bytes, media type, digest of the bytes.
#[derive(Clone, Debug)]
pub struct RawManifest {
    /// The bytes exactly as the registry sent them.
    pub bytes: Vec<u8>,
    /// Its media type (from `Content-Type`, else from the document).
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

fn is_index(mt: &str) -> bool {
    mt == MEDIA_TYPE_INDEX || mt == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

impl Client {
    /// Fetches the manifest or index `r` names, verifying it against the reference's digest (if
    /// pinned) and the registry's `Docker-Content-Digest` header.
    /// An answer cut off, stalled or not matching its digest is fetched again.
    pub async fn fetch_manifest(&self, r: &Reference) -> Result<RawManifest> {
        let mut budget = self.budget(r.registry());
        loop {
            match self.fetch_manifest_once(r, &mut budget).await {
                Err(e) if self.again(&e, &mut budget).await => {}
                other => return other,
            }
        }
    }

    /// Whether a GET that failed with `e` is tried again (after the backoff): a body cut off or
    /// stalled, within the retry policy and the deadline; a digest mismatch once (a bit flipped in
    /// transit; a registry serving damaged content does it again and is refused).
    async fn again(&self, e: &RegistryError, budget: &mut Budget) -> bool {
        let transient = match e {
            RegistryError::Http { .. } | RegistryError::Timeout { .. } => true,
            RegistryError::DigestMismatch { .. } if budget.mismatches == 0 => {
                budget.mismatches += 1;
                true
            }
            _ => false,
        };
        transient && budget.wait_retry(self.retry(), None).await
    }

    async fn fetch_manifest_once(&self, r: &Reference, budget: &mut Budget) -> Result<RawManifest> {
        let url = self.url(r.registry(), r.repository(), &format!("manifests/{}", r.target()))?;
        let shown = redact_url(&url);
        let accept =
            [MEDIA_TYPE_MANIFEST, MEDIA_TYPE_INDEX, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST]
                .join(", ");
        let req = Req::new(Method::GET, url).header(ACCEPT, &accept);
        let resp = self.send(r.registry(), &Scope::pull(r.repository()), &req, budget).await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound { reference: r.to_string(), what: "no such manifest" })
            }
            _ => return Err(status_error(&Method::GET, &shown, resp).await),
        }
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let header_digest =
            resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = self.read_limited(resp, MAX_MANIFEST, &shown, budget).await?;
        let digest = Digest::of_bytes(&bytes);
        let subject = || format!("manifest of `{r}`");
        if let Some(want) = r.digest() {
            if want != &digest {
                return Err(RegistryError::DigestMismatch {
                    subject: subject(),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        if let Some(h) = header_digest.as_deref().and_then(|h| Digest::parse(h).ok()) {
            if h != digest {
                return Err(RegistryError::DigestMismatch {
                    subject: format!("{} (Docker-Content-Digest header)", subject()),
                    expected: h,
                    actual: digest,
                });
            }
        }
        let doc: Value = serde_json::from_slice(&bytes).map_err(|source| RegistryError::Json {
            url: shown.clone(),
            what: "the manifest is not JSON",
            source,
        })?;
        if doc.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
            return Err(RegistryError::BadResponse {
                url: shown,
                reason:
                    "it is a Docker schema 1 manifest, which is not supported (re-push the image with a current client)"
                        .into(),
            });
        }
        let doc_type = doc.get("mediaType").and_then(Value::as_str);
        let media_type = match header_type.as_deref() {
            Some(t) if t.starts_with("application/vnd.") => t.to_string(),
            _ => match doc_type {
                Some(t) => t.to_string(),
                None if doc.get("manifests").is_some() => MEDIA_TYPE_INDEX.to_string(),
                None => MEDIA_TYPE_MANIFEST.to_string(),
            },
        };
        if ![MEDIA_TYPE_MANIFEST, MEDIA_TYPE_INDEX, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST]
            .contains(&media_type.as_str())
        {
            return Err(RegistryError::BadResponse {
                url: shown,
                reason: format!("media type `{media_type}` is not an image manifest or index"),
            });
        }
        Ok(RawManifest { bytes, media_type, digest })
    }

    /// Resolves `r` shallowly: the manifest (following an index to `platform`, default the host's,
    /// as `(os, architecture)` where architecture may carry a variant, `arm/v7`) and its config;
    /// no layer is fetched. A tag resolves to a digest the caller should record (and warn about).
    pub async fn resolve(&self, r: &Reference, platform: Option<(String, String)>) -> Result<Resolved> {
        let top = self.fetch_manifest(r).await?;
        let explicit = platform.is_some();
        let (os, arch) = platform.unwrap_or_else(crate::oci::layout::host_platform);
        let (arch, variant) = match arch.split_once('/') {
            Some((a, v)) => (a.to_string(), Some(v.to_string())),
            None => (arch, None),
        };
        let mut doc = top.clone();
        for _depth in 0..4 {
            if !is_index(&doc.media_type) {
                break;
            }
            let d = choose(&doc, r, &os, &arch, variant.as_deref())?;
            doc = self.fetch_manifest(&r.with_digest(d)).await?;
        }
        if is_index(&doc.media_type) {
            return Err(RegistryError::BadResponse {
                url: r.to_string(),
                reason: "indexes nest more than 4 deep".into(),
            });
        }
        let v: Value = serde_json::from_slice(&doc.bytes).map_err(|source| RegistryError::Json {
            url: r.to_string(),
            what: "the manifest is not JSON",
            source,
        })?;
        let cd = v.pointer("/config/digest").and_then(Value::as_str).and_then(|d| Digest::parse(d).ok()).ok_or_else(
            || RegistryError::BadResponse {
                url: r.with_digest(doc.digest.clone()).to_string(),
                reason: "the manifest has no sha256 config digest".into(),
            },
        )?;
        let config = self.fetch_small_blob(r, &cd, MAX_CONFIG, "config").await?;
        let image = Image::from_bytes(doc.bytes, config)?;
        if explicit {
            let (ios, iarch) = image.platform();
            let ivar = image.config().variant().clone();
            if ios != os || iarch != arch || (variant.is_some() && ivar != variant) {
                return Err(RegistryError::PlatformNotFound {
                    reference: r.to_string(),
                    platform: plat(&os, &arch, variant.as_deref()),
                    available: plat(&ios, &iarch, ivar.as_deref()),
                });
            }
        }
        Ok(Resolved {
            reference: r.with_digest(top.digest.clone()),
            digest: top.digest,
            media_type: top.media_type,
            image,
        })
    }

    /// Fetches a small blob (a config) into memory, verified; retried like a manifest.
    async fn fetch_small_blob(&self, r: &Reference, d: &Digest, limit: usize, what: &'static str) -> Result<Vec<u8>> {
        let mut budget = self.budget(r.registry());
        loop {
            match self.fetch_small_blob_once(r, d, limit, what, &mut budget).await {
                Err(e) if self.again(&e, &mut budget).await => {}
                other => return other,
            }
        }
    }

    async fn fetch_small_blob_once(
        &self,
        r: &Reference,
        d: &Digest,
        limit: usize,
        what: &'static str,
        budget: &mut Budget,
    ) -> Result<Vec<u8>> {
        let resp = self.get_blob(r, d, what, budget).await?;
        let url = redact_url(resp.url());
        let bytes = self.read_limited(resp, limit, &url, budget).await?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != d {
            return Err(RegistryError::DigestMismatch {
                subject: format!("{what} blob of `{}`", r.name()),
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    async fn get_blob(
        &self,
        r: &Reference,
        d: &Digest,
        what: &'static str,
        budget: &mut Budget,
    ) -> Result<reqwest::Response> {
        let url = self.url(r.registry(), r.repository(), &format!("blobs/{d}"))?;
        let shown = redact_url(&url);
        let resp = self.send(r.registry(), &Scope::pull(r.repository()), &Req::new(Method::GET, url), budget).await?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                reference: format!("{}@{d}", r.name()),
                what: match what {
                    "config" => "no such config blob",
                    _ => "no such blob",
                },
            }),
            _ => Err(status_error(&Method::GET, &shown, resp).await),
        }
    }

    /// Whether repository `r` holds blob `d` (HEAD); its size when it does.
    pub async fn blob_exists(&self, r: &Reference, d: &Digest) -> Result<Option<u64>> {
        self.blob_exists_scoped(r, d, &Scope::pull(r.repository()), &mut self.budget(r.registry())).await
    }

    pub(crate) async fn blob_exists_scoped(
        &self,
        r: &Reference,
        d: &Digest,
        scope: &Scope,
        budget: &mut Budget,
    ) -> Result<Option<u64>> {
        let url = self.url(r.registry(), r.repository(), &format!("blobs/{d}"))?;
        let shown = redact_url(&url);
        let resp = self.send(r.registry(), scope, &Req::new(Method::HEAD, url), budget).await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status_error(&Method::HEAD, &shown, resp).await),
        }
    }

    /// Streams blob `d` of repository `r` into `blobs`, hashing on the way: content that does not
    /// hash to `d` is refused and nothing is stored. A blob `blobs` already holds is not fetched.
    /// A connection lost or stalled mid-transfer restarts the transfer (bounded by the retry
    /// policy). The whole download, retries included, has the deadline of a transfer of its
    /// size ([`crate::registry::Deadlines::transfer`]). Returns the blob's size.
    pub async fn fetch_blob(&self, r: &Reference, d: &Digest, blobs: &BlobDir) -> Result<u64> {
        if blobs.contains(d) {
            return blobs.size(d).map_err(Into::into);
        }
        let mut budget = self.budget(r.registry());
        loop {
            match self.fetch_blob_once(r, d, blobs, &mut budget).await {
                Err(e @ (RegistryError::Http { .. } | RegistryError::Timeout { .. })) => {
                    if !budget.wait_retry(self.retry(), None).await {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    async fn fetch_blob_once(&self, r: &Reference, d: &Digest, blobs: &BlobDir, budget: &mut Budget) -> Result<u64> {
        enum Msg {
            Data(bytes::Bytes),
            Abort,
        }
        let mut resp = self.get_blob(r, d, "blob", budget).await?;
        let url = redact_url(resp.url());
        // The size is known now: the transfer's deadline (counted from the first attempt).
        let length = resp.content_length();
        if let Some(n) = length {
            budget.extend_to(self.deadlines().transfer(n));
        }
        let stall = self.deadlines().stall;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(16);
        let store = blobs.clone();
        let path = blobs.path(d);
        // The blob directory writes synchronously (temp file, fsync, rename); it runs on the
        // blocking pool and is fed through a bounded channel, so memory stays flat.
        let writer = tokio::task::spawn_blocking(move || {
            store.put_stream::<RegistryError>(|w| {
                while let Some(m) = rx.blocking_recv() {
                    match m {
                        Msg::Data(b) => {
                            w.write_all(&b).map_err(|source| RegistryError::Io { path: path.clone(), source })?
                        }
                        Msg::Abort => {
                            return Err(RegistryError::BadResponse { url: String::new(), reason: "aborted".into() })
                        }
                    }
                }
                Ok(())
            })
        });
        let mut hasher = sha2::Sha256::new();
        let mut n = 0u64;
        let outcome: Result<()> = loop {
            if length.is_none() {
                // No announced size: the deadline grows with what arrived, at the minimum rate.
                budget.extend_to(self.deadlines().transfer(n));
            }
            let until = budget.deadline().min(std::time::Instant::now() + stall);
            let chunk = match tokio::time::timeout_at(until.into(), resp.chunk()).await {
                Ok(c) => c,
                Err(_) => break Err(budget.timeout(format!("GET `{url}` ({n} bytes received)"))),
            };
            match chunk {
                Ok(Some(c)) => {
                    hasher.update(&c);
                    n += c.len() as u64;
                    if tx.send(Msg::Data(c)).await.is_err() {
                        break Ok(()); // the writer failed; its error is reported below
                    }
                }
                Ok(None) => break Ok(()),
                Err(source) => break Err(RegistryError::Http { url: url.clone(), source: source.without_url() }),
            }
        };
        let actual = Digest::from_hex(&hex::encode(hasher.finalize())).expect("sha256 hex");
        let verdict = match outcome {
            Err(e) => Err(e),
            Ok(()) if &actual != d => Err(RegistryError::DigestMismatch {
                subject: format!("blob of `{}` from `{url}`", r.name()),
                expected: d.clone(),
                actual,
            }),
            Ok(()) => Ok(n),
        };
        if verdict.is_err() {
            let _ = tx.send(Msg::Abort).await;
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| RegistryError::Io { path: blobs.path(d), source: std::io::Error::other(e.to_string()) })?;
        let n = verdict?;
        written?;
        Ok(n)
    }
}

fn plat(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// Picks the manifest for `os/arch[/variant]` from an index (a missing variant matches any).
fn choose(doc: &RawManifest, r: &Reference, os: &str, arch: &str, variant: Option<&str>) -> Result<Digest> {
    let v: Value = serde_json::from_slice(&doc.bytes).map_err(|source| RegistryError::Json {
        url: r.to_string(),
        what: "the index is not JSON",
        source,
    })?;
    let manifests = v.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
    let s = |m: &Value, p: &str| m.pointer(p).and_then(Value::as_str).map(str::to_string);
    let mut available = Vec::new();
    for m in &manifests {
        let (mos, march, mvar) = (s(m, "/platform/os"), s(m, "/platform/architecture"), s(m, "/platform/variant"));
        if let (Some(mos), Some(march)) = (&mos, &march) {
            available.push(plat(mos, march, mvar.as_deref()));
            if mos == os && march == arch && (variant.is_none() || mvar.as_deref() == variant) {
                let d = s(m, "/digest").unwrap_or_default();
                return Digest::parse(&d).map_err(|_| RegistryError::BadResponse {
                    url: r.to_string(),
                    reason: format!(
                        "the index entry for {} has digest `{d}`, not a sha256 digest",
                        plat(os, arch, variant)
                    ),
                });
            }
        }
    }
    Err(RegistryError::PlatformNotFound {
        reference: r.to_string(),
        platform: plat(os, arch, variant),
        available: if available.is_empty() { "no platforms".into() } else { available.join(", ") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>, &Digest)]) -> RawManifest {
        let ms: Vec<Value> = entries
            .iter()
            .map(|(os, arch, var, d)| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = var {
                    p["variant"] = Value::from(*v);
                }
                serde_json::json!({"mediaType": MEDIA_TYPE_MANIFEST, "digest": d.to_string(), "size": 1, "platform": p})
            })
            .collect();
        let bytes = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": ms})).unwrap();
        RawManifest { digest: Digest::of_bytes(&bytes), bytes, media_type: MEDIA_TYPE_INDEX.into() }
    }

    #[test]
    fn chooses_platform_and_variant() {
        let (a, b, c) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"), Digest::of_bytes(b"c"));
        let idx = index(&[
            ("linux", "amd64", None, &a),
            ("linux", "arm", Some("v6"), &b),
            ("linux", "arm", Some("v7"), &c),
            ("unknown", "unknown", None, &a),
        ]);
        let r = Reference::parse("reg.io/x:1").unwrap();
        assert_eq!(choose(&idx, &r, "linux", "amd64", None).unwrap(), a);
        assert_eq!(choose(&idx, &r, "linux", "arm", Some("v7")).unwrap(), c);
        assert_eq!(choose(&idx, &r, "linux", "arm", None).unwrap(), b);
        let e = choose(&idx, &r, "linux", "s390x", None).unwrap_err().to_string();
        assert!(e.contains("`reg.io/x:1`") && e.contains("linux/s390x") && e.contains("linux/arm/v7"), "{e}");
    }
}
