//! [`RemoteCache`]: the HTTP operations on `{base}/ac/<key>` and `{base}/cas/<sha256>`, streamed
//! to and from a [`BlobDir`], and the latch that disables a failing remote for the rest of a build.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;

use super::budget::Budget;
use super::config::{parse_base_url, RemoteAuth, RemoteMode, Timeouts};
use super::entry::{self, RemoteEntry};
use super::error::{status_hint, RemoteError, Result};
use super::grpc::Grpc;
use super::signing::{PublicKey, SigningKey, SIGNING_KEY_ENV, TRUSTED_KEYS_ENV};
use super::validate::{self, Expected};
use crate::cas::{BlobDir, CasError};
use crate::model::action::ActionOutput;
use crate::model::digest::{Blake3, Digest, HashingWriter};

/// Largest `/ac/` value accepted (an `ActionResult` listing thousands of blobs is well below).
const MAX_AC_BYTES: u64 = 16 << 20;
/// Largest `cbuild-result.json` accepted into memory.
const MAX_RESULT_FILE_BYTES: u64 = 64 << 20;
/// Server errors in a row (after retries) that turn the remote off for the build; a connection
/// that cannot be set up, refused credentials or a spent budget turn it off at once
/// ([`RemoteError::disables_at_once`]).
pub const FAILURES_TO_DISABLE: usize = 3;
/// Problems of one kind listed by name in the end-of-build summary.
const SHOWN_PROBLEMS: usize = 8;
/// Extra attempts of an idempotent request (GET, HEAD, and PUT of content-addressed bytes) after a
/// network error, a 5xx or a 429.
const RETRIES: u32 = 2;
/// The longest wait before a retry (`Retry-After` asking for more is not honoured: the answer
/// counts as a failure).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);
/// Slowest download accepted: a body must arrive within the request timeout plus
/// `size / MIN_DOWNLOAD_RATE` seconds, so a trickling server cannot hold a build.
const MIN_DOWNLOAD_RATE: u64 = 1 << 20;

/// Whether the remote is still in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteHealth {
    /// No error about the server so far.
    Healthy,
    /// Disabled after the error in `reason` (its message; the error itself went to the caller).
    Disabled { reason: String },
}

/// What [`RemoteCache::put_action`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutStats {
    /// Referenced blobs uploaded now.
    pub blobs_uploaded: usize,
    /// Referenced blobs the server already had (HEAD with the right size).
    pub blobs_present: usize,
    /// Bytes of referenced blobs uploaded now.
    pub bytes_uploaded: u64,
    /// True if nothing was done because the client is read-only (asked to be, or without a
    /// signing key).
    pub skipped_read_only: bool,
}

/// A hit and the blobs it left on the server (digest, size): what a lazy lookup returns.
pub type LazyHit = (RemoteHit, Vec<(Digest, u64)>);

/// Blobs of at most this many bytes are fetched with a lazy hit anyway (one request each, and
/// consumers' keys may read small blobs such as a buildpack's descriptor).
pub const LAZY_MIN: u64 = 64 << 10;

/// A remote-cache answer checked against its action and with every blob local: what
/// [`RemoteCache::lookup`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteHit {
    /// The action's output, checked against the action's shape.
    pub output: ActionOutput,
    /// The trusted key that signed the entry; `None` if this reader trusts no keys (unauthenticated).
    pub signer: Option<PublicKey>,
    /// How long the action ran for its writer, if recorded.
    pub exec_ms: Option<u64>,
}

/// A client of one remote cache: Bazel HTTP protocol (nginx WebDAV, bazel-remote, S3 proxies) or
/// REAPI v2 gRPC ([`super::grpc`]).
///
/// `Send + Sync`; share it with `Arc`. Every method blocks: call it from a blocking context
/// (`tokio::task::spawn_blocking`, like [`crate::cache::Cache`]). The HTTP client is built on
/// first use, so constructing or dropping a `RemoteCache` anywhere is fine.
///
/// The first error about the server itself ([`RemoteError::disables_remote`]) is returned once
/// and disables the client: every later call fails at once with [`RemoteError::Disabled`].
///
/// Trust: uploads are signed with the key given to [`RemoteCache::with_signing_key`]; without
/// one the client never writes. With [`RemoteCache::with_trusted_keys`], an entry without a valid
/// signature by one of those keys is refused ([`RemoteError::Untrusted`]); without trusted keys
/// entries are accepted unauthenticated (see [`RemoteCache::unauthenticated_warning`]).
///
/// ```no_run
/// use cbuild::remote::{RemoteAuth, RemoteCache, RemoteMode, Timeouts};
/// # fn f(key: cbuild::model::digest::Blake3, blobs: &cbuild::cas::BlobDir) -> cbuild::remote::Result<()> {
/// let remote = RemoteCache::new("http://127.0.0.1:9090", RemoteMode::ReadOnly,
///                               RemoteAuth::from_env()?, Timeouts::default())?;
/// match remote.get_action(&key) {
///     Ok(Some(entry)) => for (digest, _size) in &entry.blobs {
///         remote.fetch_blob(digest, blobs)?;             // only the blobs that are needed
///     },
///     Ok(None) => { /* miss: run the action */ }
///     Err(e) if e.should_warn() => eprintln!("warning: {e}"),
///     Err(_) => { /* already warned once */ }
/// }
/// # Ok(()) }
/// ```
pub struct RemoteCache {
    base: String,
    /// The REAPI transport for `grpc://` / `grpcs://` URLs; `None`: the HTTP protocol.
    grpc: Option<Grpc>,
    /// The credentials as headers (`authorization`), for a gRPC endpoint rebuilt by
    /// [`RemoteCache::with_options`].
    auth_headers: Vec<(String, String)>,
    /// `--remote-header`s (HTTP and gRPC); values never printed.
    extra_headers: reqwest::header::HeaderMap,
    mode: RemoteMode,
    auth: Option<HeaderValue>,
    auth_kind: &'static str,
    timeouts: Timeouts,
    http: OnceLock<std::result::Result<Client, String>>,
    disabled: Mutex<Option<String>>,
    signer: Option<Arc<SigningKey>>,
    trusted: Vec<PublicKey>,
    warned_unauthenticated: AtomicBool,
    /// Local blobs this client re-hashed, with their file's stamp at that time: a blob many hits
    /// share (a base layer) is hashed once, not once per hit, yet any change to the file (inode,
    /// size, mtime, ctime) means hashing it again. Like the stat cache, files changed within
    /// [`crate::cache::RACY_WINDOW`] of the check are not remembered (a write in the same
    /// timestamp tick would not change the stamp).
    verified: Mutex<HashMap<Digest, FileStamp>>,
    /// Time spent on lookups against time saved, for this build.
    budget: Budget,
    /// Server errors in a row (reset by any answer).
    failures: AtomicUsize,
    /// Blobs the server served damaged: uploaded again without trusting a HEAD (a damaged blob
    /// with the right size would otherwise stay forever).
    corrupt: Mutex<HashSet<Digest>>,
    /// Problems that did not turn the remote off, by kind: (count, the first few, each with the
    /// action it was about).
    problems: Mutex<BTreeMap<&'static str, (usize, Vec<String>)>>,
    /// The error that turned the remote off, until [`RemoteCache::take_warning`] takes it.
    warning: Mutex<Option<String>>,
    /// Why lookups are off for the rest of the build (the time budget is spent); uploads go on
    /// in the background, so a slow remote still gets filled for runners closer to it.
    reads_off: Mutex<Option<String>>,
}

/// (dev, inode, size, mtime ns, ctime ns) of a file.
type FileStamp = (u64, u64, u64, i128, i128);

/// Nanoseconds since the epoch (negative before it).
fn epoch_ns(t: std::time::SystemTime) -> i128 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn file_stamp(p: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok().filter(|m| m.is_file())?;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Some((m.dev(), m.ino(), m.len(), ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec())))
}

impl fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCache")
            .field("url", &self.base)
            .field("mode", &self.mode())
            .field("auth", &self.auth_kind)
            .field("signing_key", &self.signer.as_ref().map(|s| s.public_key()))
            .field("trusted_keys", &self.trusted)
            .field("timeouts", &self.timeouts)
            .field("health", &self.health())
            .finish()
    }
}

impl RemoteCache {
    /// A client for the cache at `url` (`http(s)://host[:port][/prefix]`). User info in the URL
    /// (`https://user:pass@host`) is used as basic auth when `auth` is [`RemoteAuth::None`] and
    /// removed from the URL either way, so no URL this client prints carries a secret.
    pub fn new(url: &str, mode: RemoteMode, auth: RemoteAuth, timeouts: Timeouts) -> Result<RemoteCache> {
        let (base, url_creds) = parse_base_url(url)?;
        let auth = match (auth, url_creds) {
            (RemoteAuth::None, Some((user, pass))) => RemoteAuth::Basic(user, pass),
            (auth, _) => auth,
        };
        let header = auth.header_value();
        let auth_kind = match &auth {
            RemoteAuth::None => "none",
            RemoteAuth::Basic(..) => "basic (redacted)",
            RemoteAuth::Bearer(_) => "bearer (redacted)",
        };
        let auth_headers: Vec<(String, String)> =
            header.iter().map(|h| ("authorization".to_string(), h.clone())).collect();
        let grpc = match base.split_once("://") {
            Some(("grpc" | "grpcs", _)) => Some(Grpc::new(&base, None, &auth_headers, timeouts)?),
            _ => None,
        };
        let auth = header
            .map(|h| {
                let mut v = HeaderValue::from_str(&h).map_err(|_| RemoteError::BadAuth {
                    reason: "the credentials contain characters an HTTP header cannot carry".into(),
                })?;
                v.set_sensitive(true);
                Ok::<_, RemoteError>(v)
            })
            .transpose()?;
        Ok(RemoteCache {
            base,
            grpc,
            auth_headers,
            extra_headers: reqwest::header::HeaderMap::new(),
            mode,
            auth,
            auth_kind,
            timeouts,
            http: OnceLock::new(),
            disabled: Mutex::new(None),
            signer: None,
            trusted: Vec::new(),
            warned_unauthenticated: AtomicBool::new(false),
            verified: Mutex::new(HashMap::new()),
            budget: Budget::default(),
            failures: AtomicUsize::new(0),
            corrupt: Mutex::new(HashSet::new()),
            problems: Mutex::new(BTreeMap::new()),
            warning: Mutex::new(None),
            reads_off: Mutex::new(None),
        })
    }

    /// Headers sent with every request (`--remote-header NAME=VALUE`: API keys of hosted caches;
    /// the values are never printed) and, for a gRPC cache, the instance name (`None`: the URL's
    /// path). Credentials from [`RemoteAuth`] stay.
    pub fn with_options(mut self, instance: Option<&str>, headers: &[(String, String)]) -> Result<RemoteCache> {
        let bad =
            |k: &str, what: &str| RemoteError::BadAuth { reason: format!("header `{k}`: {what} (value not shown)") };
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name =
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(k, "not a valid header name"))?;
            let mut val =
                HeaderValue::from_str(v).map_err(|_| bad(k, "the value contains characters a header cannot carry"))?;
            val.set_sensitive(true);
            map.append(name, val);
        }
        self.extra_headers = map;
        if self.grpc.is_some() {
            let all: Vec<(String, String)> = self.auth_headers.iter().chain(headers).cloned().collect();
            self.grpc = Some(Grpc::new(&self.base, instance, &all, self.timeouts)?);
        } else if instance.is_some_and(|i| !i.is_empty()) {
            return Err(RemoteError::BadUrl {
                url: self.base.clone(),
                reason: "an instance name is a REAPI (gRPC) notion; an HTTP cache takes a path prefix in its URL"
                    .into(),
            });
        }
        Ok(self)
    }

    /// The protocol: `"grpc"` (REAPI) or `"http"` (Bazel HTTP cache).
    pub fn protocol(&self) -> &'static str {
        if self.grpc.is_some() {
            "grpc"
        } else {
            "http"
        }
    }

    /// Replaces the time budget (tests use a tight one).
    pub fn with_budget(mut self, budget: Budget) -> RemoteCache {
        self.budget = budget;
        self
    }

    /// The build's remote time budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The warning to print now, once: why the remote was turned off.
    pub fn take_warning(&self) -> Option<String> {
        self.warning.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Records an error of a lookup for `who` (the action) that did not turn the remote off, for
    /// [`RemoteCache::problem_summary`].
    pub fn note(&self, e: &RemoteError, who: &str) {
        if matches!(e, RemoteError::Disabled { .. } | RemoteError::OverBudget { .. }) {
            return;
        }
        let mut p = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        let slot = p.entry(e.kind_name()).or_default();
        slot.0 += 1;
        if slot.1.len() < SHOWN_PROBLEMS {
            slot.1.push(format!("{who}: {}", crate::model::error::chain(e)));
        }
    }

    /// One line per kind of problem seen in this build (`3 × corrupt blob …: `//a` …; `//b` …`),
    /// for the end of the build: per-entry problems are not worth a warning per action.
    pub fn problem_summary(&self) -> Vec<String> {
        let p = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        p.iter()
            .map(|(kind, (n, shown))| {
                let more = n.saturating_sub(shown.len());
                format!(
                    "remote cache `{}`: {n} × {kind}, built locally instead (nothing of it stored): {}{}",
                    self.base,
                    shown.join("; "),
                    if more > 0 { format!("; … and {more} more") } else { String::new() }
                )
            })
            .collect()
    }

    /// Signs every upload with `key`. Without a signing key the client never writes.
    /// [`Self::with_signing_key`] for a key shared by several clients (a worker's, one per lease).
    pub fn with_shared_signing_key(mut self, key: Arc<SigningKey>) -> RemoteCache {
        self.signer = Some(key);
        self
    }

    pub fn with_signing_key(mut self, key: SigningKey) -> RemoteCache {
        self.signer = Some(Arc::new(key));
        self
    }

    /// Accepts only entries signed by one of `keys` (an empty list accepts every entry,
    /// unauthenticated).
    pub fn with_trusted_keys(mut self, keys: Vec<PublicKey>) -> RemoteCache {
        self.trusted = keys;
        self
    }

    /// The public half of the signing key, if any.
    pub fn signing_key(&self) -> Option<PublicKey> {
        self.signer.as_ref().map(|s| s.public_key())
    }

    /// The keys whose signatures this client accepts (empty: entries are not authenticated).
    pub fn trusted_keys(&self) -> &[PublicKey] {
        &self.trusted
    }

    /// Why a client asked to be read-write does not write, if it does not: it has no signing key.
    pub fn read_only_reason(&self) -> Option<String> {
        (self.mode == RemoteMode::ReadWrite && self.signer.is_none()).then(|| {
            format!(
                "remote cache `{}` is read-only: no signing key ({SIGNING_KEY_ENV}; create one with \
                 `cbuild cache keygen`), so nothing is uploaded",
                self.base
            )
        })
    }

    /// The warning to print, once per client, when an entry was accepted without authentication
    /// (no trusted keys configured); `None` after the first call or when keys are configured.
    pub fn unauthenticated_warning(&self) -> Option<String> {
        if !self.trusted.is_empty() || self.warned_unauthenticated.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "entries from remote cache `{}` are used unauthenticated: no trusted keys are set \
             ({TRUSTED_KEYS_ENV}), so anyone who can write to the server decides these results",
            self.base
        ))
    }

    /// The base URL (without credentials or trailing slash).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The effective mode: read-write only if asked for and a signing key is set.
    pub fn mode(&self) -> RemoteMode {
        match self.signer {
            Some(_) => self.mode,
            None => RemoteMode::ReadOnly,
        }
    }

    /// Whether an earlier error disabled this client.
    pub fn health(&self) -> RemoteHealth {
        match &*self.disabled.lock().unwrap_or_else(|e| e.into_inner()) {
            None => RemoteHealth::Healthy,
            Some(reason) => RemoteHealth::Disabled { reason: reason.clone() },
        }
    }

    /// Looks up the action result stored under `key`: `Ok(None)` on a miss (404, or an entry
    /// whose result file the server no longer has). Downloads the small result file (verified
    /// by sha256), never the blobs. With trusted keys, an entry without a valid signature by one
    /// of them is [`RemoteError::Untrusted`].
    pub fn get_action(&self, key: &Blake3) -> Result<Option<RemoteEntry>> {
        self.guard()?;
        let r = self.get_action_inner(key);
        self.observe(r)
    }

    /// [`RemoteCache::get_action`], then the checks of [`validate`] against the action's
    /// expected output, then every blob downloaded into `local` (verified) with the size the
    /// entry lists. Any inconsistency is [`RemoteError::BadEntry`]: the caller treats it as a miss
    /// and nothing of the entry becomes a local cache entry.
    pub fn lookup(&self, key: &Blake3, expected: &Expected, local: &BlobDir) -> Result<Option<RemoteHit>> {
        self.lookup_lazy(key, expected, local, false).map(|r| r.map(|(hit, _)| hit))
    }

    /// [`Self::lookup`] that, with `lazy`, leaves the bytes no check needs on the server: every
    /// blob but manifests, configs, indexes and blobs of at most [`LAZY_MIN`] bytes is returned
    /// (digest, size) instead of downloaded. The caller fetches them with
    /// [`Self::fetch_sized_blob`] when a consumer needs them (issue 19's lazy bytes).
    pub fn lookup_lazy(
        &self,
        key: &Blake3,
        expected: &Expected,
        local: &BlobDir,
        lazy: bool,
    ) -> Result<Option<LazyHit>> {
        self.guard()?;
        self.read_guard()?;
        let busy = self.budget.busy();
        let r = self.lookup_inner(key, expected, local, lazy);
        drop(busy);
        if let Ok(Some((hit, _))) = &r {
            self.budget.credit(Duration::from_millis(hit.exec_ms.unwrap_or(0)));
        }
        let r = self.observe(r);
        if let Some(reason) = self.budget.exhausted() {
            self.reads_off(&RemoteError::OverBudget { url: self.base.clone(), reason });
        }
        r
    }

    fn lookup_inner(&self, key: &Blake3, expected: &Expected, local: &BlobDir, lazy: bool) -> Result<Option<LazyHit>> {
        let Some(entry) = self.get_action_inner(key)? else { return Ok(None) };
        let output = validate::check_result(expected, &entry).map_err(|r| self.bad_entry(key, r))?;
        let needed = validate::metadata_blobs(&output);
        let mut pending = Vec::new();
        for (d, size) in &entry.blobs {
            if lazy && *size > LAZY_MIN && !needed.contains(d) && !local.contains(d) {
                pending.push((d.clone(), *size));
                continue;
            }
            let got = self.fetch_blob_inner(d, *size, local)?;
            if got != *size {
                return Err(self.bad_entry(key, format!("blob `{d}` is {got} bytes, the entry lists {size}")));
            }
        }
        validate::check_fetched(&output, local).map_err(|r| self.bad_entry(key, r))?;
        Ok(Some((RemoteHit { output, signer: entry.signer, exec_ms: entry.exec_ms }, pending)))
    }

    fn bad_entry(&self, key: &Blake3, reason: String) -> RemoteError {
        RemoteError::BadEntry { key: key.to_hex(), url: self.ac_url(key), reason }
    }

    /// Stores an action result: every blob in `blobs` the server lacks is streamed from `local`
    /// (HEAD first; memory does not grow with blob size; a local blob whose bytes do not match
    /// its name is never sent), then the result file, then the `/ac/` entry last, so a reader
    /// never sees an entry whose blobs are still missing. The result file is signed with the
    /// signing key. Read-only mode, or no signing key, does nothing.
    pub fn put_action(
        &self,
        key: &Blake3,
        result_json: &str,
        components_json: &str,
        blobs: &[Digest],
        local: &BlobDir,
        exec_ms: Option<u64>,
    ) -> Result<PutStats> {
        let Some(signer) = self.signer.clone().filter(|_| self.mode == RemoteMode::ReadWrite) else {
            return Ok(PutStats { skipped_read_only: true, ..PutStats::default() });
        };
        self.guard()?;
        let r = self.put_action_inner(key, (result_json, components_json, exec_ms), blobs, local, &signer);
        self.observe(r)
    }

    /// Downloads a blob into `local`, streamed and verified against its sha256 on the way; a
    /// poisoned or truncated blob is an error naming the digest and leaves nothing in `local`.
    /// Returns the size. A blob already in `local` is re-hashed and, if intact, not downloaded
    /// again; a damaged one is replaced by the download.
    pub fn fetch_blob(&self, digest: &Digest, local: &BlobDir) -> Result<u64> {
        self.fetch_sized_blob(digest, 0, local)
    }

    /// [`Self::fetch_blob`] for a blob of known size (a gRPC cache names blobs by digest and size,
    /// so it needs the size: [`RemoteEntry::blobs`] lists it).
    pub fn fetch_sized_blob(&self, digest: &Digest, size: u64, local: &BlobDir) -> Result<u64> {
        self.guard()?;
        let r = self.fetch_blob_inner(digest, size, local);
        self.observe(r)
    }

    /// True if the server has an entry under `key` (HEAD of the `/ac/` value; its blobs are not
    /// checked: a reader checks them, and a writer re-uploading would send them again anyway).
    pub fn has_action(&self, key: &Blake3) -> Result<bool> {
        self.guard()?;
        if let Some(g) = &self.grpc {
            let r = self.retrying(|| g.get_action_result(key, self.timeouts.request)).map(|ar| ar.is_some());
            return self.observe(r);
        }
        let url = self.ac_url(key);
        let r = self.head_len(&url, false).map(|n| n.is_some());
        self.observe(r)
    }

    /// True if the server has the blob (HEAD; over gRPC FindMissingBlobs, which needs `size`).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        self.has_sized_blob(digest, 0)
    }

    /// [`Self::has_blob`] for a blob of known size.
    pub fn has_sized_blob(&self, digest: &Digest, size: u64) -> Result<bool> {
        self.guard()?;
        if let Some(g) = &self.grpc {
            let r = self.retrying(|| g.find_missing(&[(digest.clone(), size)])).map(|m| m.is_empty());
            return self.observe(r);
        }
        let url = self.cas_url(digest);
        let r = self.head_len(&url, false).map(|n| n.is_some());
        self.observe(r)
    }

    // ---- operations ----

    fn get_action_inner(&self, key: &Blake3) -> Result<Option<RemoteEntry>> {
        if let Some(g) = &self.grpc {
            return self.get_action_grpc(g, key);
        }
        let url = self.ac_url(key);
        let (resp, until) = self.get(&url, 0)?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            s if !s.is_success() => return Err(status_error("GET", &url, s)),
            _ => {}
        }
        let bad = |reason: String| RemoteError::BadEntry { key: key.to_hex(), url: url.clone(), reason };
        let bytes = read_limited(Deadline::new(resp, until), MAX_AC_BYTES, &url)?
            .ok_or_else(|| bad(format!("the value is larger than {MAX_AC_BYTES} bytes")))?;
        let decoded = entry::decode(&bytes).map_err(bad)?;

        let (rd, rsize) = &decoded.result_file;
        if *rsize > MAX_RESULT_FILE_BYTES {
            return Err(bad(format!("`{}` is {rsize} bytes", entry::RESULT_FILE)));
        }
        let rurl = self.cas_url(rd);
        let (resp, until) = self.get(&rurl, *rsize)?;
        match resp.status() {
            // The server dropped the result file (eviction): the entry is incomplete, a miss.
            StatusCode::NOT_FOUND => return Ok(None),
            s if !s.is_success() => return Err(status_error("GET", &rurl, s)),
            _ => {}
        }
        let body = read_limited(Deadline::new(resp, until), MAX_RESULT_FILE_BYTES, &rurl)?
            .ok_or_else(|| bad(format!("`{}` is larger than {MAX_RESULT_FILE_BYTES} bytes", entry::RESULT_FILE)))?;
        self.open_entry(key, &url, &body, &decoded).map(Some)
    }

    /// The result file's `body` as the entry `decoded` points at, once its bytes match the digest
    /// and size the entry lists (else [`RemoteError::Corrupt`], and the blob is replaced by the
    /// next writer).
    fn open_entry(&self, key: &Blake3, url: &str, body: &[u8], decoded: &entry::Decoded) -> Result<RemoteEntry> {
        let (rd, rsize) = &decoded.result_file;
        let actual = Digest::of_bytes(body);
        if &actual != rd || body.len() as u64 != *rsize {
            self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).insert(rd.clone());
            return Err(RemoteError::Corrupt {
                digest: rd.clone(),
                actual,
                bytes: body.len() as u64,
                url: self.base.clone(),
            });
        }
        let bad = |reason: String| RemoteError::BadEntry { key: key.to_hex(), url: url.to_string(), reason };
        let opened = entry::open(body).map_err(bad)?;
        let signer = self.check_signature(key, &opened).map_err(|reason| RemoteError::Untrusted {
            key: key.to_hex(),
            url: url.to_string(),
            reason,
        })?;
        let mut e = entry::parse_result_file(key, &opened.record, decoded).map_err(bad)?;
        e.signer = signer;
        Ok(e)
    }

    /// [`Self::get_action_inner`] over REAPI: GetActionResult, then the result file by
    /// BatchReadBlobs (or ByteStream), checked against its digest.
    fn get_action_grpc(&self, g: &Grpc, key: &Blake3) -> Result<Option<RemoteEntry>> {
        let url = self.ac_url(key);
        let bad = |reason: String| RemoteError::BadEntry { key: key.to_hex(), url: url.clone(), reason };
        let timeout = self.lookup_timeout()?;
        let Some(ar) = self.retrying(|| g.get_action_result(key, timeout))? else { return Ok(None) };
        let decoded = entry::decode_result(&ar).map_err(bad)?;
        let (rd, rsize) = &decoded.result_file;
        if *rsize > MAX_RESULT_FILE_BYTES {
            return Err(bad(format!("`{}` is {rsize} bytes", entry::RESULT_FILE)));
        }
        let mut body = Vec::with_capacity(*rsize as usize);
        let timeout = self.lookup_timeout()?;
        // The server dropped the result file (eviction): the entry is incomplete, a miss.
        let Some(_) = g.read_blob(rd, *rsize, timeout, &mut body)? else { return Ok(None) };
        self.open_entry(key, &url, &body, &decoded).map(Some)
    }

    /// The timeout of a request on the critical path: what the build's budget has left, at most
    /// the configured request timeout.
    fn lookup_timeout(&self) -> Result<Duration> {
        self.budget.request_timeout(self.timeouts.request).ok_or_else(|| RemoteError::OverBudget {
            url: self.base.clone(),
            reason: self.budget.exhausted().unwrap_or_else(|| "the time budget is spent".into()),
        })
    }

    /// `f`, again after a retryable failure (as the HTTP requests are).
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if attempt < RETRIES && retryable(&e) && backoff(attempt + 1) < self.budget.remaining() => {
                    attempt += 1;
                    std::thread::sleep(backoff(attempt));
                }
                r => return r,
            }
        }
    }

    /// `Ok(None)` without trusted keys (nothing to check); `Ok(Some(key))` for a valid signature
    /// by a trusted key; otherwise why the entry is not trusted.
    fn check_signature(&self, key: &Blake3, opened: &entry::Opened) -> std::result::Result<Option<PublicKey>, String> {
        if self.trusted.is_empty() {
            return Ok(None);
        }
        match &opened.signature {
            None => Err("it is not signed, and this reader trusts only signed entries".to_string()),
            Some((pk, _)) if !self.trusted.contains(pk) => Err(format!(
                "it is signed by `{pk}`, which is not one of the trusted keys ({TRUSTED_KEYS_ENV} or \
                 `cache.remote_trusted_keys`)"
            )),
            Some((pk, sig)) if !pk.verify(key, &opened.record, sig) => {
                Err(format!("its signature by trusted key `{pk}` does not verify (forged or altered)"))
            }
            Some((pk, _)) => Ok(Some(*pk)),
        }
    }

    fn put_action_inner(
        &self,
        key: &Blake3,
        (result_json, components_json, exec_ms): (&str, &str, Option<u64>),
        blobs: &[Digest],
        local: &BlobDir,
        signer: &SigningKey,
    ) -> Result<PutStats> {
        let mut unique: Vec<Digest> = Vec::with_capacity(blobs.len());
        for d in blobs {
            if !unique.contains(d) {
                unique.push(d.clone());
            }
        }
        let mut sized = Vec::with_capacity(unique.len());
        for d in &unique {
            sized.push((d.clone(), local.size(d).map_err(|source| RemoteError::Local { source })?));
        }
        let mut stats = PutStats::default();
        if let Some(g) = &self.grpc {
            return self.put_action_grpc(
                g,
                key,
                (result_json, components_json, exec_ms),
                &unique,
                &sized,
                local,
                signer,
            );
        }
        for (d, size) in &sized {
            if self.upload_blob(d, *size, local)? {
                stats.blobs_uploaded += 1;
                stats.bytes_uploaded += size;
            } else {
                stats.blobs_present += 1;
            }
        }
        let record = entry::result_file_timed(key, result_json, components_json, &unique, exec_ms);
        let rf = entry::seal(key, &record, Some(signer));
        let rd = Digest::of_bytes(&rf);
        let rurl = self.cas_url(&rd);
        if self.is_corrupt(&rd) || self.head_len(&rurl, false)? != Some(rf.len() as u64) {
            self.put_bytes(&rurl, rf.clone())?;
        }
        let ac = entry::encode((&rd, rf.len() as u64), &sized);
        let url = self.ac_url(key);
        self.put_bytes(&url, ac)?;
        Ok(stats)
    }

    /// [`Self::put_action_inner`] over REAPI: one FindMissingBlobs for every blob and the result
    /// file, uploads of the missing ones (and of any served damaged in this build), then
    /// UpdateActionResult last.
    #[allow(clippy::too_many_arguments)]
    fn put_action_grpc(
        &self,
        g: &Grpc,
        key: &Blake3,
        (result_json, components_json, exec_ms): (&str, &str, Option<u64>),
        unique: &[Digest],
        sized: &[(Digest, u64)],
        local: &BlobDir,
        signer: &SigningKey,
    ) -> Result<PutStats> {
        if g.ac_read_only() {
            return Ok(PutStats { skipped_read_only: true, ..PutStats::default() });
        }
        let record = entry::result_file_timed(key, result_json, components_json, unique, exec_ms);
        let rf = entry::seal(key, &record, Some(signer));
        let rd = Digest::of_bytes(&rf);
        let mut all = sized.to_vec();
        all.push((rd.clone(), rf.len() as u64));
        let missing: HashSet<Digest> = self.retrying(|| g.find_missing(&all))?.into_iter().collect();
        let mut stats = PutStats::default();
        for (d, size) in sized {
            if !missing.contains(d) && !self.is_corrupt(d) {
                stats.blobs_present += 1;
                continue;
            }
            let (reader, bad_local) = verifying_reader(d, *size, local)?;
            match g.write_blob(d, *size, Box::new(reader)) {
                Ok(()) => {
                    self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).remove(d);
                    stats.blobs_uploaded += 1;
                    stats.bytes_uploaded += size;
                }
                Err(e) if *bad_local.lock().unwrap_or_else(|p| p.into_inner()) => {
                    return match local.verify(d) {
                        Err(source) => Err(RemoteError::Local { source }),
                        Ok(()) => Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if missing.contains(&rd) || self.is_corrupt(&rd) {
            g.write_blob(&rd, rf.len() as u64, Box::new(io::Cursor::new(rf.clone())))?;
        }
        let ar = entry::action_result((&rd, rf.len() as u64), sized);
        self.retrying(|| g.update_action_result(key, ar.clone()))?;
        Ok(stats)
    }

    fn is_corrupt(&self, d: &Digest) -> bool {
        self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).contains(d)
    }

    /// Uploads one blob unless the server has it with the right size (and it was not served
    /// damaged in this build: then it is replaced). True if uploaded.
    fn upload_blob(&self, d: &Digest, size: u64, local: &BlobDir) -> Result<bool> {
        let url = self.cas_url(d);
        if !self.is_corrupt(d) && self.head_len(&url, false)? == Some(size) {
            return Ok(false);
        }
        let mut attempt = 0;
        loop {
            match self.upload_blob_once(d, size, local, &url) {
                Err(e) if attempt < RETRIES && retryable(&e) => {
                    attempt += 1;
                    std::thread::sleep(backoff(attempt));
                }
                r => return r,
            }
        }
    }

    fn upload_blob_once(&self, d: &Digest, size: u64, local: &BlobDir, url: &str) -> Result<bool> {
        let (reader, bad_local) = verifying_reader(d, size, local)?;
        let rb = self.client()?.put(url).timeout(self.timeouts.upload(size)).body(Body::sized(reader, size));
        match self.put(url, rb) {
            Ok(()) => {
                self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).remove(d);
                Ok(true)
            }
            Err(e) if *bad_local.lock().unwrap_or_else(|p| p.into_inner()) => {
                // The request was aborted before its last byte, so the server stored nothing.
                // Re-hash to report (and remove) the corrupt local blob.
                match local.verify(d) {
                    Err(source) => Err(RemoteError::Local { source }),
                    Ok(()) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn fetch_blob_inner(&self, d: &Digest, size: u64, local: &BlobDir) -> Result<u64> {
        // A blob already in `local` is used only after re-hashing it, like a local hit's blobs
        // (the scheduler's `blobs_intact`): a hit must never rest on a damaged file that merely
        // has the right name. A corrupt one is removed by `verify` and downloaded again.
        if local.contains(d) {
            let p = local.path(d);
            let started = epoch_ns(std::time::SystemTime::now());
            let before = file_stamp(&p);
            if before.is_some() && self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(d) == before.as_ref() {
                return local.size(d).map_err(|source| RemoteError::Local { source });
            }
            match local.verify(d) {
                Ok(()) => {
                    // Remembered only if the file did not change while it was hashed and its last
                    // change is older than the racy window.
                    let racy_after = started - crate::cache::RACY_WINDOW.as_nanos() as i128;
                    let settled = |b: &FileStamp| b.3 < racy_after && b.4 < racy_after;
                    if let Some(st) = before.filter(|b| settled(b) && file_stamp(&p).as_ref() == Some(b)) {
                        self.verified.lock().unwrap_or_else(|e| e.into_inner()).insert(d.clone(), st);
                    }
                    return local.size(d).map_err(|source| RemoteError::Local { source });
                }
                Err(CasError::Corrupt { .. } | CasError::Missing { .. }) => {}
                Err(source) => return Err(RemoteError::Local { source }),
            }
        }
        let url = self.cas_url(d);
        let dest = local.path(d);
        let dir = dest.parent().expect("blob paths have a directory").to_path_buf();
        let io_err = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| RemoteError::Io { path, source }
        };
        // Same directory as the destination, so the rename is atomic; deleted on drop unless
        // persisted, so a failed or poisoned download leaves nothing behind.
        let tmp = crate::cas::new_temp(&dir, "remote-", false).map_err(io_err(&dir))?;
        let tmp_path = tmp.path().to_path_buf();
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp));
        let missing = || RemoteError::BlobMissing { digest: d.clone(), url: self.base.clone() };
        if let Some(g) = &self.grpc {
            if size == 0 && d != &Digest::of_bytes(b"") {
                return Err(RemoteError::Client {
                    reason: format!(
                        "blob `{d}`: a gRPC cache names blobs by digest and size, and the size is not known"
                    ),
                });
            }
            let timeout = self.lookup_timeout()?;
            g.read_blob(d, size, timeout, &mut w)?.ok_or_else(missing)?;
        } else {
            let (resp, until) = self.get(&url, size)?;
            let mut resp = Deadline::new(resp, until);
            match resp.status() {
                StatusCode::NOT_FOUND => return Err(missing()),
                s if !s.is_success() => return Err(status_error("GET", &url, s)),
                _ => {}
            }
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match resp.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => return Err(RemoteError::Read { method: "GET", url, source }),
                };
                w.write_all(&buf[..n]).map_err(io_err(&tmp_path))?;
            }
        }
        let (bw, actual, bytes) = w.finish();
        let tmp = bw.into_inner().map_err(|e| io_err(&tmp_path)(e.into_error()))?;
        if &actual != d {
            drop(tmp);
            self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).insert(d.clone());
            return Err(RemoteError::Corrupt { digest: d.clone(), actual, bytes, url: self.base.clone() });
        }
        tmp.as_file().sync_all().map_err(io_err(&tmp_path))?;
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        Ok(bytes)
    }

    // ---- HTTP helpers ----

    fn ac_url(&self, key: &Blake3) -> String {
        format!("{}/ac/{}", self.base, key.to_hex())
    }

    fn cas_url(&self, d: &Digest) -> String {
        format!("{}/cas/{}", self.base, d.hex())
    }

    fn client(&self) -> Result<&Client> {
        let c = self.http.get_or_init(|| {
            Client::builder()
                .connect_timeout(self.timeouts.connect)
                .timeout(self.timeouts.request)
                .user_agent(concat!("cbuild/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| e.to_string())
        });
        c.as_ref().map_err(|reason| RemoteError::Client { reason: reason.clone() })
    }

    fn send(&self, method: &'static str, url: &str, rb: RequestBuilder) -> Result<Response> {
        let rb = match &self.auth {
            Some(h) => rb.header(AUTHORIZATION, h.clone()),
            None => rb,
        };
        let rb = if self.extra_headers.is_empty() { rb } else { rb.headers(self.extra_headers.clone()) };
        rb.send().map_err(|e| {
            let reason = describe(&e, &self.timeouts);
            let unreachable = e.is_connect() || e.is_timeout();
            RemoteError::Transport { method, url: url.to_string(), reason, unreachable, source: e.without_url() }
        })
    }

    /// A GET on the critical path (a lookup): its timeout is what the build's budget has left
    /// (at most the configured request timeout), retried after a network error, a 5xx or a 429
    /// while the budget lasts. Returns the response (any status) and the deadline its body must
    /// arrive by (`size` bytes expected, 0 if unknown).
    fn get(&self, url: &str, size: u64) -> Result<(Response, Instant)> {
        let mut attempt = 0;
        loop {
            let timeout =
                self.budget.request_timeout(self.timeouts.request).ok_or_else(|| RemoteError::OverBudget {
                    url: self.base.clone(),
                    reason: self.budget.exhausted().unwrap_or_else(|| "the time budget is spent".into()),
                })?;
            let until = Instant::now() + timeout + Duration::from_secs(size / MIN_DOWNLOAD_RATE);
            let r = self.send("GET", url, self.client()?.get(url).timeout(timeout));
            let wait = match &r {
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => retry_after(resp),
                Ok(resp) if resp.status().is_server_error() => Some(backoff(attempt + 1)),
                Ok(_) => return r.map(|resp| (resp, until)),
                Err(e) if retryable(e) => Some(backoff(attempt + 1)),
                Err(_) => None,
            };
            match wait {
                Some(w) if attempt < RETRIES && w <= MAX_RETRY_WAIT && w < self.budget.remaining() => {
                    attempt += 1;
                    std::thread::sleep(w);
                }
                _ => return r.map(|resp| (resp, until)),
            }
        }
    }

    /// PUT of bytes (content-addressed, so a repeat is harmless), retried like [`Self::get`].
    fn put_bytes(&self, url: &str, body: Vec<u8>) -> Result<()> {
        let mut attempt = 0;
        loop {
            match self.put(url, self.client()?.put(url).body(body.clone())) {
                Err(e) if attempt < RETRIES && retryable(&e) => {
                    attempt += 1;
                    std::thread::sleep(backoff(attempt));
                }
                r => return r,
            }
        }
    }

    /// `Some(Content-Length)` if the server has the key (`Some(u64::MAX)` if it sends no length).
    /// Retried after a network error or a 5xx.
    fn head_len(&self, url: &str, _critical: bool) -> Result<Option<u64>> {
        let mut attempt = 0;
        let resp = loop {
            let r = self.send("HEAD", url, self.client()?.head(url));
            let again = match &r {
                Ok(resp) => resp.status().is_server_error() || resp.status() == StatusCode::TOO_MANY_REQUESTS,
                Err(e) => retryable(e),
            };
            if again && attempt < RETRIES {
                attempt += 1;
                std::thread::sleep(backoff(attempt));
                continue;
            }
            break r?;
        };
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(u64::MAX),
            )),
            s => Err(status_error("HEAD", url, s)),
        }
    }

    fn put(&self, url: &str, rb: RequestBuilder) -> Result<()> {
        let rb = rb.header(CONTENT_TYPE, "application/octet-stream");
        let resp = self.send("PUT", url, rb)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error("PUT", url, resp.status()))
        }
    }

    // ---- the latch ----

    fn guard(&self) -> Result<()> {
        match &*self.disabled.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(RemoteError::Disabled { url: self.base.clone(), reason: reason.clone() }),
        }
    }

    /// Trips the latch on the first error about the server; concurrent failures that lose the
    /// race become [`RemoteError::Disabled`], so exactly one error is worth a warning.
    fn read_guard(&self) -> Result<()> {
        match &*self.reads_off.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(RemoteError::Disabled { url: self.base.clone(), reason: reason.clone() }),
        }
    }

    /// Turns lookups off for the rest of the build (once; `e`'s message becomes the warning).
    fn reads_off(&self, e: &RemoteError) {
        let mut r = self.reads_off.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(e.to_string());
            *self.warning.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{}; uploads go on in the background", crate::model::error::chain(e)));
        }
    }

    /// Whether lookups are still made (not turned off by the budget or an error).
    pub fn reading(&self) -> bool {
        self.guard().is_ok() && self.read_guard().is_ok()
    }

    fn observe<T>(&self, r: Result<T>) -> Result<T> {
        match r {
            // The budget ran out inside a request: lookups off, the server is fine.
            Err(e @ RemoteError::OverBudget { .. }) => {
                self.reads_off(&e);
                Err(e)
            }
            Err(e) if e.disables_remote() => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if !e.disables_at_once() && n < FAILURES_TO_DISABLE {
                    return Err(e);
                }
                match self.trip_with(&e) {
                    true => Err(e),
                    false => Err(self.guard().err().unwrap_or(e)),
                }
            }
            Err(e) => {
                // The server answered (an entry problem is about one entry).
                self.failures.store(0, Ordering::Relaxed);
                Err(e)
            }
            Ok(v) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(v)
            }
        }
    }

    /// True if this call turned the remote off (and left `e` as the warning to print).
    fn trip_with(&self, e: &RemoteError) -> bool {
        let mut d = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        if d.is_some() {
            return false;
        }
        *d = Some(e.to_string());
        let msg = crate::model::error::chain(e);
        let warning = format!("{msg}; remote cache turned off for the rest of this build");
        *self.warning.lock().unwrap_or_else(|p| p.into_inner()) = Some(warning);
        true
    }
}

/// Worth another attempt: the server may answer next time (not: it cannot be reached at all,
/// which a retry would only make slower to report).
fn retryable(e: &RemoteError) -> bool {
    match e {
        RemoteError::Transport { unreachable, .. } => !unreachable,
        RemoteError::Read { .. } => true,
        RemoteError::Status { status, .. } => *status >= 500 || *status == 429,
        RemoteError::Grpc { code, unreachable, .. } => {
            use tonic::Code::*;
            !unreachable && matches!(code, Unavailable | ResourceExhausted | Aborted | Internal | Unknown)
        }
        _ => false,
    }
}

/// 50 ms, 200 ms, 800 ms …
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 << (2 * (attempt.saturating_sub(1)).min(4)))
}

/// The wait a 429 asks for (`Retry-After` in seconds; 100 ms without one).
fn retry_after(resp: &Response) -> Option<Duration> {
    match resp.headers().get(reqwest::header::RETRY_AFTER) {
        None => Some(Duration::from_millis(100)),
        Some(v) => v.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs),
    }
}

/// A response body that fails once its deadline passes, however slowly bytes trickle in.
struct Deadline {
    resp: Response,
    until: Instant,
}

impl Deadline {
    fn new(resp: Response, until: Instant) -> Deadline {
        Deadline { resp, until }
    }
    fn status(&self) -> StatusCode {
        self.resp.status()
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() > self.until {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the body did not arrive in time (trickling server)"));
        }
        self.resp.read(buf)
    }
}

fn status_error(method: &'static str, url: &str, s: StatusCode) -> RemoteError {
    RemoteError::Status { method, url: url.to_string(), status: s.as_u16(), hint: status_hint(s.as_u16()) }
}

/// A short reason with the root cause (e.g. `cannot connect: Connection refused (os error 111)`).
fn describe(e: &reqwest::Error, t: &Timeouts) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    let what = if e.is_timeout() {
        format!("timed out (connect timeout {:?}, request timeout {:?})", t.connect, t.request)
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "the connection failed".to_string()
    };
    format!("{what}: {root}")
}

/// The body, or `None` if it is longer than `limit`.
fn read_limited(resp: impl Read, limit: u64, url: &str) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    resp.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(|source| RemoteError::Read {
        method: "GET",
        url: url.to_string(),
        source,
    })?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// A [`VerifyingReader`] over the local blob `d` and the flag it sets when the bytes do not match.
fn verifying_reader(d: &Digest, size: u64, local: &BlobDir) -> Result<(VerifyingReader, Arc<Mutex<bool>>)> {
    let file = local.open_blob(d).map_err(|source| RemoteError::Local { source })?;
    let bad = Arc::new(Mutex::new(false));
    let reader = VerifyingReader {
        file,
        hasher: HashingWriter::new(io::sink()),
        remaining: size,
        expected: d.clone(),
        bad: bad.clone(),
    };
    Ok((reader, bad))
}

/// Reads a local blob for upload, hashing it on the way; if the bytes do not match the digest the
/// last chunk is withheld and the read fails, which aborts the request before the server has the
/// whole body, so a corrupt local blob is never stored remotely under the wrong name.
struct VerifyingReader {
    file: std::fs::File,
    hasher: HashingWriter<io::Sink>,
    remaining: u64,
    expected: Digest,
    bad: Arc<Mutex<bool>>,
}

impl VerifyingReader {
    fn fail(&self, what: &str) -> io::Error {
        *self.bad.lock().unwrap_or_else(|p| p.into_inner()) = true;
        io::Error::new(io::ErrorKind::InvalidData, format!("local blob `{}` {what}", self.expected))
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let cap = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..cap])?;
        if n == 0 {
            return Err(self.fail("is shorter than its recorded size"));
        }
        self.hasher.write_all(&buf[..n])?;
        self.remaining -= n as u64;
        if self.remaining == 0 {
            let h = std::mem::replace(&mut self.hasher, HashingWriter::new(io::sink()));
            let (_, actual, _) = h.finish();
            if actual != self.expected {
                return Err(self.fail("does not match its digest"));
            }
        }
        Ok(n)
    }
}
