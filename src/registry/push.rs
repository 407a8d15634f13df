//! Pushing an image: every blob is checked with HEAD first, mounted from another repository of the
//! same registry when a hint says where it lives, uploaded otherwise (one PUT when small, PATCH
//! chunks when large); the manifest goes last, byte-exact. Nothing here builds images.
//!
//! An upload session is not idempotent: a PATCH whose answer was lost may have been applied, and
//! the PUT closing a session may have stored the blob. Those are never sent again blindly; the
//! upload asks the registry instead (HEAD the blob after a lost PUT; `GET` the session for its
//! `Range`) and resumes where the registry stands, or restarts the blob in a new session when the
//! registry cannot say (distribution 2.8 answers `BLOB_UPLOAD_INVALID` to a location whose
//! `_state` token is behind the session).

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

use super::client::{redact_url, status_error, Budget, Client, Req, Scope};
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

    /// Pushes a multi-platform image: every image of `index` by digest (blobs, then its manifest),
    /// then the index itself to `target` and `opts.extra_tags`, so a reader never finds an index
    /// naming a manifest the repository lacks. The report counts the blobs of every image.
    pub async fn push_index(
        &self,
        index: &crate::oci::Index,
        blobs: &BlobDir,
        target: &Reference,
        opts: &PushOptions,
    ) -> Result<PushReport> {
        if let Some(d) = target.digest() {
            if d != &index.digest {
                return Err(RegistryError::BadReference {
                    reference: target.to_string(),
                    reason: format!("it pins `{d}` but the index being pushed is `{}`", index.digest),
                });
            }
        }
        let mut report = PushReport {
            uploaded: 0,
            mounted: 0,
            skipped_existing: 0,
            bytes_uploaded: 0,
            manifest_digest: index.digest.clone(),
        };
        let by_digest = PushOptions { extra_tags: Vec::new(), ..opts.clone() };
        for image in &index.images {
            // By digest only: a child manifest never takes the index's tag, even for a moment.
            let child = Reference::parse(&format!("{}@{}", target.name(), image.digest()))?;
            let r = self.push_image(image, blobs, &child, &by_digest).await?;
            report.uploaded += r.uploaded;
            report.mounted += r.mounted;
            report.skipped_existing += r.skipped_existing;
            report.bytes_uploaded += r.bytes_uploaded;
        }
        let mut refs = vec![target.tag().map_or_else(|| target.target(), str::to_string)];
        refs.extend(opts.extra_tags.iter().cloned());
        let bytes = Bytes::copy_from_slice(&index.bytes);
        for t in refs {
            let r = match target.tag() {
                Some(tag) if tag == t => target.clone(),
                None if t == target.target() => target.clone(),
                _ => target.with_tag(&t)?,
            };
            self.push_manifest(&r, bytes.clone(), crate::oci::MEDIA_TYPE_INDEX).await?;
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
        // Idempotent (the same bytes under the same name), so a lost answer is simply sent again.
        let req = Req::new(Method::PUT, url).header(CONTENT_TYPE, media_type).body(bytes);
        let mut budget = self.budget(target.registry());
        let resp = self.send(target.registry(), &Scope::push(target.repository()), &req, &mut budget).await?;
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

    /// Pushes one small blob held in memory (an artifact's document or config): HEAD first, one
    /// upload otherwise. Returns whether its bytes were sent.
    pub(crate) async fn push_blob_bytes(&self, target: &Reference, bytes: Bytes, blobs: &BlobDir) -> Result<bool> {
        let d = Digest::of_bytes(&bytes);
        let size = bytes.len() as u64;
        let out = self.push_blob(target, &d, size, Source::Memory(bytes), blobs, &PushOptions::default()).await?;
        Ok(matches!(out, Outcome::Uploaded(_)))
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
        if self.blob_exists_scoped(target, d, &scope, &mut self.budget(target.registry())).await?.is_some() {
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
                Some(loc) => self.cancel(target, loc, &self.budget(target.registry())).await,
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
                            self.cancel(target, loc, &self.budget(target.registry())).await;
                        }
                        return Err(RegistryError::BlobUnavailable { digest: d.clone(), target: target.name() });
                    }
                }
            }
            s => s,
        };
        let loc = match session {
            Some(l) => l,
            None => self.start_upload(target, &self.budget(target.registry())).await?,
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
        let resp = self.send(target.registry(), &scope, &req, &mut self.budget(target.registry())).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => location(&url, &resp).map(Some),
            _ => Err(status_error(&Method::POST, &shown, resp).await),
        }
    }

    /// `POST …/blobs/uploads/`: a new upload session. Sending it twice only leaves an unused
    /// session behind, which the registry collects.
    async fn start_upload(&self, target: &Reference, parent: &Budget) -> Result<Url> {
        let url = self.url(target.registry(), target.repository(), "blobs/uploads/")?;
        let shown = redact_url(&url);
        let req = Req::new(Method::POST, url.clone()).body(Bytes::new());
        let mut budget = parent.step(self.deadlines().request);
        let resp = self.send(target.registry(), &Scope::push(target.repository()), &req, &mut budget).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(&Method::POST, &shown, resp).await);
        }
        location(&url, &resp)
    }

    /// Best effort: an abandoned session is garbage-collected by the registry anyway.
    async fn cancel(&self, target: &Reference, loc: Url, parent: &Budget) {
        let mut budget = parent.step(self.deadlines().request);
        let req = Req::new(Method::DELETE, loc);
        let _ = self.send(target.registry(), &Scope::push(target.repository()), &req, &mut budget).await;
    }

    /// Uploads blob `d` (`size` bytes from `src`) into the session at `loc`. The whole upload,
    /// recoveries included, has the deadline of a transfer of `size`; after a failed step it asks
    /// the registry where the blob stands and goes on from there, at most as many rounds as the
    /// retry policy's attempts.
    async fn upload(
        &self,
        target: &Reference,
        d: &Digest,
        size: u64,
        src: Source,
        loc: Url,
        opts: &PushOptions,
    ) -> Result<u64> {
        let scope = Scope::push(target.repository());
        let plan = Plan {
            target,
            scope: &scope,
            digest: d,
            size,
            src: &src,
            monolithic: if opts.monolithic_limit == 0 { DEFAULT_MONOLITHIC_LIMIT } else { opts.monolithic_limit },
            chunk: if opts.chunk_size == 0 { DEFAULT_CHUNK_SIZE } else { opts.chunk_size },
        };
        let mut blob = self.budget_for(target.registry(), self.deadlines().transfer(size));
        let mut at = Session { loc, held: 0 };
        let mut resumed = false;
        loop {
            blob.attempts += 1;
            let from = at.held;
            let failed = match self.send_blob(&plan, &mut at, &blob).await {
                Ok(()) => return Ok(size),
                Err(f) => f,
            };
            if !failed.recoverable || !blob.wait_retry(self.retry(), None).await {
                return Err(match failed.error {
                    RegistryError::Timeout { .. } if blob.left().is_zero() => {
                        blob.timeout(format!("the upload of blob `{d}` ({size} bytes)"))
                    }
                    e => e,
                });
            }
            // A resume the registry refused at once (a registry whose `Range` we read differently)
            // is not tried again from the same answer: the blob starts over instead.
            let refused = matches!(&failed.error, RegistryError::Status { status: 400..=499, .. });
            let stuck = resumed && at.held == from && refused;
            match self.where_it_stands(&plan, &at, failed.closing, stuck, &blob).await? {
                None => return Ok(size),
                Some(next) => {
                    resumed = next.held > 0;
                    at = next;
                }
            }
        }
    }

    /// After a failed round: `None` when the registry has the blob (the closing PUT's answer was
    /// lost after it stored it), else where to go on: the session where the registry says it
    /// stands, or a new session when it cannot say (the location's state is stale, the session
    /// is gone) or `stuck`.
    async fn where_it_stands(
        &self,
        p: &Plan<'_>,
        at: &Session,
        closing: bool,
        stuck: bool,
        blob: &Budget,
    ) -> Result<Option<Session>> {
        let step = || blob.step(self.deadlines().request);
        if closing && self.blob_exists_scoped(p.target, p.digest, p.scope, &mut step()).await? == Some(p.size) {
            return Ok(None);
        }
        if !stuck {
            if let Some(s) = self.upload_status(p.target, p.scope, &at.loc, &mut step()).await {
                if s.held <= p.size {
                    return Ok(Some(s));
                }
            }
        }
        self.cancel(p.target, at.loc.clone(), blob).await;
        Ok(Some(Session { loc: self.start_upload(p.target, blob).await?, held: 0 }))
    }

    /// One round of an upload from where `at` stands: the whole blob in one PUT when it is small
    /// and nothing was sent yet, else PATCH chunks and a closing PUT. `at` follows the registry's
    /// answers, so after a failure it is the last position the registry confirmed.
    async fn send_blob(&self, p: &Plan<'_>, at: &mut Session, blob: &Budget) -> Result<(), Failed> {
        let registry = p.target.registry();
        let close = |loc: &Url, body: Bytes| {
            let mut loc = loc.clone();
            loc.query_pairs_mut().append_pair("digest", &p.digest.to_string());
            Req::new(Method::PUT, loc).header(CONTENT_TYPE, "application/octet-stream").body(body).once()
        };
        let put = if at.held == 0 && p.size <= p.monolithic {
            close(&at.loc, p.read(0, p.size).await.map_err(Failed::fatal)?)
        } else {
            while at.held < p.size {
                let (off, len) = (at.held, p.chunk.min(p.size - at.held));
                let req = Req::new(Method::PATCH, at.loc.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_RANGE, &format!("{off}-{}", off + len - 1))
                    .body(p.read(off, len).await.map_err(Failed::fatal)?)
                    .once();
                let shown = redact_url(&at.loc);
                let resp = self
                    .send(registry, p.scope, &req, &mut blob.step(blob.left()))
                    .await
                    .map_err(|e| Failed::of(e, false))?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(Failed::of(status_error(&Method::PATCH, &shown, resp).await, false));
                }
                // The answer's `Range` is not checked: registries disagree on whether its end is
                // inclusive; a wrong total is caught by the digest check of the closing PUT.
                *at = Session { loc: location(&at.loc, &resp).map_err(|e| Failed::of(e, false))?, held: off + len };
            }
            close(&at.loc, Bytes::new())
        };
        let shown = redact_url(&put.url);
        let resp =
            self.send(registry, p.scope, &put, &mut blob.step(blob.left())).await.map_err(|e| Failed::of(e, true))?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => {
                let e = status_error(&Method::PUT, &shown, resp).await;
                match &e {
                    RegistryError::Status { status: 400, detail, .. } if detail.contains("DIGEST_INVALID") => {
                        Err(Failed::fatal(RegistryError::BadResponse {
                            url: shown,
                            reason: format!(
                                "the registry refused blob `{}`: its uploaded content does not hash to it (is the local copy corrupt?)",
                                p.digest
                            ),
                        }))
                    }
                    _ => Err(Failed::of(e, true)),
                }
            }
        }
    }

    /// `GET` an upload session: where it stands (`Range: 0-N` → N+1 bytes) and its new location;
    /// `None` when the registry cannot say (distribution 2.8 answers a location with a stale
    /// `_state` with 404 `BLOB_UPLOAD_INVALID`), the session is gone, or the answer is unusable.
    async fn upload_status(
        &self,
        target: &Reference,
        scope: &Scope,
        loc: &Url,
        budget: &mut Budget,
    ) -> Option<Session> {
        let resp = self.send(target.registry(), scope, &Req::new(Method::GET, loc.clone()), budget).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let held = range_held(&resp)?;
        let loc = location(loc, &resp).ok()?;
        Some(Session { loc, held })
    }
}

/// What an upload sends: the blob, where from, and how.
struct Plan<'a> {
    target: &'a Reference,
    scope: &'a Scope,
    digest: &'a Digest,
    size: u64,
    src: &'a Source,
    monolithic: u64,
    chunk: u64,
}

impl Plan<'_> {
    async fn read(&self, off: u64, len: u64) -> Result<Bytes> {
        match self.src {
            Source::Memory(b) => Ok(b.slice(off as usize..(off + len) as usize)),
            Source::File(p) => read_range(p.clone(), off, len).await,
            Source::Absent => unreachable!("absent blobs are resolved before upload"),
        }
    }
}

/// Where an upload session stands: its location (with the registry's state token) and the
/// bytes the registry holds.
struct Session {
    loc: Url,
    held: u64,
}

/// A failed round of an upload.
struct Failed {
    error: RegistryError,
    /// The closing PUT failed (the registry may have stored the blob).
    closing: bool,
    /// Asking the registry and going on may help (a lost or refused step, a lost session), as
    /// opposed to bad credentials or a corrupt local blob.
    recoverable: bool,
}

impl Failed {
    fn fatal(error: RegistryError) -> Failed {
        Failed { error, closing: false, recoverable: false }
    }
    fn of(error: RegistryError, closing: bool) -> Failed {
        let recoverable = match &error {
            RegistryError::Http { .. } | RegistryError::Timeout { .. } => true,
            // A lost session (404 `BLOB_UPLOAD_UNKNOWN`/`_INVALID`, also 400 on some registries),
            // an offset the registry disagrees with (416), the registry's own trouble (5xx).
            RegistryError::Status { status, detail, .. } => {
                *status >= 500
                    || matches!(*status, 404 | 408 | 416 | 429)
                    || (*status == 400 && detail.contains("BLOB_UPLOAD"))
            }
            RegistryError::BadResponse { .. } => true,
            _ => false,
        };
        Failed { error, closing, recoverable }
    }
}

/// The bytes an upload session holds, from its `Range: 0-N` header (N+1; `0-0` is what
/// distribution says of an empty session).
fn range_held(resp: &reqwest::Response) -> Option<u64> {
    parse_range(resp.headers().get(reqwest::header::RANGE)?.to_str().ok()?)
}

fn parse_range(v: &str) -> Option<u64> {
    let (a, b) = v.trim().trim_start_matches("bytes=").split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    match (a, b) {
        (0, 0) => Some(0),
        (0, n) => n.checked_add(1),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges_say_how_many_bytes_the_session_holds() {
        assert_eq!(parse_range("0-0"), Some(0), "distribution's empty session");
        assert_eq!(parse_range("0-999"), Some(1000));
        assert_eq!(parse_range("bytes=0-1048575"), Some(1 << 20));
        for bad in ["", "5-10", "0-", "-3", "0-x", "0-18446744073709551615"] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }
}
