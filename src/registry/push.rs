//! Pushing an image: every blob is checked with HEAD first, mounted from another repository of the
//! same registry when a hint says where it lives, uploaded otherwise (one PUT when small, PATCH
//! chunks when large); the manifest goes last, byte-exact. Nothing here builds images.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

use super::client::{redact_url, status_error, Client, Req, Scope};
use super::error::{RegistryError, Result};
use crate::cas::BlobDir;
use crate::model::digest::Digest;
use crate::model::reference::Reference;
use crate::oci::Image;

/// Blobs up to this size go up in one PUT by default.
pub const DEFAULT_MONOLITHIC_LIMIT: u64 = 32 << 20;
/// The PATCH chunk size of large blobs by default.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;

/// How to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Where blobs of this image may already live (e.g. the base image's reference). Those in the
    /// target's registry are mount sources; blobs missing locally that are only in another
    /// registry are copied through the local store from there.
    pub source_repos: Vec<Reference>,
    /// More tags to point at the same manifest (in the target repository).
    pub extra_tags: Vec<String>,
    /// Blobs up to this size are uploaded in one request; 0: [`DEFAULT_MONOLITHIC_LIMIT`].
    pub monolithic_limit: u64,
    /// PATCH chunk size for larger blobs; 0: [`DEFAULT_CHUNK_SIZE`].
    pub chunk_size: u64,
}

/// What a push did. `uploaded + mounted + skipped_existing` is the number of distinct blobs
/// (layers and config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// Blobs whose bytes were sent.
    pub uploaded: usize,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: usize,
    /// Blobs the target repository already had (HEAD said so).
    pub skipped_existing: usize,
    /// Bytes of blob content sent.
    pub bytes_uploaded: u64,
    /// The digest of the pushed manifest.
    pub manifest_digest: Digest,
}

/// Where a blob's bytes come from.
enum Source {
    Memory(Bytes),
    File(PathBuf),
    Absent,
}

enum Outcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

impl Client {
    /// Pushes `image` to `target` (a tag, or a digest which must be the image's): blobs first
    /// (HEAD, then mount, then upload), the manifest last with its exact bytes and media type,
    /// then `extra_tags`. Layer bytes come from `blobs`; a layer `blobs` lacks (a shallow base) is
    /// never downloaded when the target registry has it in the target or a hinted repository.
    pub async fn push_image(
        &self,
        image: &Image,
        blobs: &BlobDir,
        target: &Reference,
        opts: &PushOptions,
    ) -> Result<PushReport> {
        if let Some(d) = target.digest() {
            if d != image.digest() {
                return Err(RegistryError::BadReference {
                    reference: target.to_string(),
                    reason: format!("it pins `{d}` but the image being pushed is `{}`", image.digest()),
                });
            }
        }
        let mut report = PushReport {
            uploaded: 0,
            mounted: 0,
            skipped_existing: 0,
            bytes_uploaded: 0,
            manifest_digest: image.digest().clone(),
        };
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(Digest, u64, Source)> = Vec::new();
        for l in image.layers() {
            if seen.insert(l.digest.clone()) {
                let src = if blobs.contains(&l.digest) { Source::File(blobs.path(&l.digest)) } else { Source::Absent };
                todo.push((l.digest.clone(), l.size, src));
            }
        }
        if seen.insert(image.config_digest().clone()) {
            let c = image.config_bytes();
            todo.push((image.config_digest().clone(), c.len() as u64, Source::Memory(Bytes::copy_from_slice(c))));
        }
        for (d, size, src) in todo {
            match self.push_blob(target, &d, size, src, blobs, opts).await? {
                Outcome::Skipped => report.skipped_existing += 1,
                Outcome::Mounted => report.mounted += 1,
                Outcome::Uploaded(n) => {
                    report.uploaded += 1;
                    report.bytes_uploaded += n;
                }
            }
        }
        let mut refs = vec![target.tag().map_or_else(|| target.target(), str::to_string)];
        refs.extend(opts.extra_tags.iter().cloned());
        let bytes = Bytes::copy_from_slice(image.manifest_bytes());
        for t in refs {
            let r = match target.tag() {
                Some(tag) if tag == t => target.clone(),
                None if t == target.target() => target.clone(),
                _ => target.with_tag(&t)?,
            };
            self.push_manifest(&r, bytes.clone(), &image.manifest_media_type()).await?;
        }
        Ok(report)
    }

    /// PUTs a manifest or index as these exact bytes with `media_type` to `target` (its tag, else
    /// its digest) and returns its digest. Its blobs (or, for an index, its manifests) must be
    /// in the repository already; [`Client::push_image`] does that for images.
    pub async fn push_manifest(&self, target: &Reference, bytes: Bytes, media_type: &str) -> Result<Digest> {
        let digest = Digest::of_bytes(&bytes);
        let reference = target.tag().map_or_else(|| target.target(), str::to_string);
        if let Some(d) = target.digest() {
            if d != &digest {
                return Err(RegistryError::BadReference {
                    reference: target.to_string(),
                    reason: format!("it pins `{d}` but the manifest being pushed is `{digest}`"),
                });
            }
        }
        let url = self.url(target.registry(), target.repository(), &format!("manifests/{reference}"))?;
        let shown = redact_url(&url);
        let req = Req::new(Method::PUT, url).header(CONTENT_TYPE, media_type).body(bytes);
        let resp = self.send(target.registry(), &Scope::push(target.repository()), &req).await?;
        if !resp.status().is_success() {
            return Err(status_error(&Method::PUT, &shown, resp).await);
        }
        let said = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
        if let Some(said) = said.and_then(|s| Digest::parse(s).ok()) {
            if said != digest {
                return Err(RegistryError::DigestMismatch {
                    subject: format!("manifest pushed to `{}:{reference}`", target.name()),
                    expected: digest,
                    actual: said,
                });
            }
        }
        Ok(digest)
    }

    async fn push_blob(
        &self,
        target: &Reference,
        d: &Digest,
        size: u64,
        src: Source,
        blobs: &BlobDir,
        opts: &PushOptions,
    ) -> Result<Outcome> {
        let scope = Scope::push(target.repository());
        if self.blob_exists_scoped(target, d, &scope).await?.is_some() {
            return Ok(Outcome::Skipped);
        }
        let mounts: Vec<&Reference> = opts
            .source_repos
            .iter()
            .filter(|s| s.registry() == target.registry() && s.repository() != target.repository())
            .collect();
        let mut session: Option<Url> = None;
        for (i, from) in mounts.iter().enumerate() {
            match self.mount(target, d, from).await? {
                None => return Ok(Outcome::Mounted),
                Some(loc) if i + 1 == mounts.len() => session = Some(loc),
                Some(loc) => self.cancel(target, loc).await,
            }
        }
        let src = match src {
            Source::Absent => {
                // Only in another registry (or nowhere): copy through the local store.
                let mut found = None;
                for from in opts.source_repos.iter().filter(|s| s.registry() != target.registry()) {
                    if self.blob_exists(from, d).await?.is_some() {
                        self.fetch_blob(from, d, blobs).await?;
                        found = Some(Source::File(blobs.path(d)));
                        break;
                    }
                }
                match found {
                    Some(s) => s,
                    None => {
                        if let Some(loc) = session {
                            self.cancel(target, loc).await;
                        }
                        return Err(RegistryError::BlobUnavailable { digest: d.clone(), target: target.name() });
                    }
                }
            }
            s => s,
        };
        let loc = match session {
            Some(l) => l,
            None => self.start_upload(target).await?,
        };
        let n = self.upload(target, d, size, src, loc, opts).await?;
        Ok(Outcome::Uploaded(n))
    }

    /// `POST …/blobs/uploads/?mount=<d>&from=<repo>`: `None` when mounted (201), else the upload
    /// session the registry opened instead (202).
    async fn mount(&self, target: &Reference, d: &Digest, from: &Reference) -> Result<Option<Url>> {
        let mut url = self.url(target.registry(), target.repository(), "blobs/uploads/")?;
        url.query_pairs_mut().append_pair("mount", &d.to_string()).append_pair("from", from.repository());
        let shown = redact_url(&url);
        let mut scope = Scope::push(target.repository());
        scope.also_pull.push(from.repository().to_string());
        let req = Req::new(Method::POST, url.clone()).body(Bytes::new());
        let resp = self.send(target.registry(), &scope, &req).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => location(&url, &resp).map(Some),
            _ => Err(status_error(&Method::POST, &shown, resp).await),
        }
    }

    async fn start_upload(&self, target: &Reference) -> Result<Url> {
        let url = self.url(target.registry(), target.repository(), "blobs/uploads/")?;
        let shown = redact_url(&url);
        let req = Req::new(Method::POST, url.clone()).body(Bytes::new());
        let resp = self.send(target.registry(), &Scope::push(target.repository()), &req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&Method::POST, &shown, resp).await);
        }
        location(&url, &resp)
    }

    /// Best effort: an abandoned session is garbage-collected by the registry anyway.
    async fn cancel(&self, target: &Reference, loc: Url) {
        let _ = self.send(target.registry(), &Scope::push(target.repository()), &Req::new(Method::DELETE, loc)).await;
    }

    async fn upload(
        &self,
        target: &Reference,
        d: &Digest,
        size: u64,
        src: Source,
        mut loc: Url,
        opts: &PushOptions,
    ) -> Result<u64> {
        let scope = Scope::push(target.repository());
        let mono = if opts.monolithic_limit == 0 { DEFAULT_MONOLITHIC_LIMIT } else { opts.monolithic_limit };
        let chunk = if opts.chunk_size == 0 { DEFAULT_CHUNK_SIZE } else { opts.chunk_size };
        let finish = |mut loc: Url, body: Bytes| {
            loc.query_pairs_mut().append_pair("digest", &d.to_string());
            Req::new(Method::PUT, loc).header(CONTENT_TYPE, "application/octet-stream").body(body)
        };
        let put = if size <= mono {
            let body = match src {
                Source::Memory(b) => b,
                Source::File(p) => read_range(p, 0, size).await?,
                Source::Absent => unreachable!("absent blobs are resolved before upload"),
            };
            finish(loc, body)
        } else {
            let mut off = 0u64;
            while off < size {
                let len = chunk.min(size - off);
                let body = match &src {
                    Source::Memory(b) => b.slice(off as usize..(off + len) as usize),
                    Source::File(p) => read_range(p.clone(), off, len).await?,
                    Source::Absent => unreachable!("absent blobs are resolved before upload"),
                };
                let req = Req::new(Method::PATCH, loc.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, &format!("{off}-{}", off + len - 1))
                    .body(body);
                let resp = self.send(target.registry(), &scope, &req).await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&Method::PATCH, &redact_url(&loc), resp).await);
                }
                loc = location(&loc, &resp)?;
                off += len;
            }
            finish(loc, Bytes::new())
        };
        let shown = redact_url(&put.url);
        let resp = self.send(target.registry(), &scope, &put).await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(size),
            StatusCode::BAD_REQUEST => {
                let e = status_error(&Method::PUT, &shown, resp).await;
                match &e {
                    RegistryError::Status { detail, .. } if detail.contains("DIGEST_INVALID") => {
                        Err(RegistryError::BadResponse {
                            url: shown,
                            reason: format!("the registry refused blob `{d}`: its uploaded content does not hash to it (is the local copy corrupt?)"),
                        })
                    }
                    _ => Err(e),
                }
            }
            _ => Err(status_error(&Method::PUT, &shown, resp).await),
        }
    }
}

/// The `Location` header of an upload answer, resolved against the request URL.
fn location(base: &Url, resp: &reqwest::Response) -> Result<Url> {
    let loc = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| RegistryError::BadResponse {
        url: redact_url(base),
        reason: format!("{} without a Location header", resp.status()),
    })?;
    base.join(loc).map_err(|e| RegistryError::BadResponse {
        url: redact_url(base),
        reason: format!("the Location header is not a URL: {e}"),
    })
}

/// Reads `len` bytes at `off` of a local blob (on the blocking pool).
async fn read_range(path: PathBuf, off: u64, len: u64) -> Result<Bytes> {
    let p = path.clone();
    let r = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(&p)?;
        f.seek(SeekFrom::Start(off))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf)?;
        if buf.len() as u64 != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("expected {len} bytes at offset {off}, the file is shorter"),
            ));
        }
        Ok(buf)
    })
    .await
    .map_err(|e| RegistryError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
    r.map(Bytes::from).map_err(|source| RegistryError::Io { path, source })
}
