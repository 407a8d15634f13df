//! The remote cache over REAPI v2 gRPC (`grpc://host:port[/instance]`, `grpcs://` for TLS): the
//! transport half of [`RemoteCache`](super::RemoteCache) for servers that speak the Remote Execution
//! API — BuildGrid, Buildbarn, BuildBuddy, NativeLink, EngFlow, bazel-remote's gRPC port. The
//! entry layout ([`super::entry`]), signatures, validation, budget and latch are the HTTP path's;
//! only the calls differ:
//!
//! ```text
//! capabilities  GetCapabilities (once): SHA256 offered, batch size limit, AC updates allowed
//! AC            GetActionResult / UpdateActionResult under the action digest (below)
//! CAS           FindMissingBlobs, BatchReadBlobs / BatchUpdateBlobs up to the batch limit,
//!               ByteStream Read / Write (`{instance}/blobs/…`, `{instance}/uploads/{uuid}/blobs/…`)
//! ```
//!
//! * **Action digest.** REAPI keys the action cache by the SHA256 digest of an `Action` message.
//!   cbuild's key is a blake3 over everything the action reads ([`crate::cache::key`]); its AC key
//!   is the SHA256 digest of the bytes `cbuild-action-v1 <blake3 hex>` ([`action_digest`]): a
//!   well-formed digest in the server's function, one-to-one with our key, never colliding with a
//!   Bazel action's (no `Action` message has those bytes). Nothing is stored under it in the CAS.
//! * **Blocking over async.** Callers block (scheduler `spawn_blocking` threads, like the HTTP
//!   client); the calls run on one process-wide runtime thread ([`runtime`]) and are waited for
//!   through a channel with the call's deadline, which works from any thread (no nested
//!   `block_on`) and bounds every call, a stalled stream included.
//! * **Bindings** are the generated ones of the `bazel-remote-apis` crate (tonic + prost); the
//!   HTTP protocol's `/ac/` value is the same `ActionResult` type.

use std::future::Future;
use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream as bs;
use re::action_cache_client::ActionCacheClient;
use re::capabilities_client::CapabilitiesClient;
use re::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::config::Timeouts;
use super::error::{RemoteError, Result};
use crate::model::digest::{Blake3, Digest};

/// Largest gRPC message this client sends or accepts in a batch: the usual server limit (gRPC's
/// default of 4 MiB) minus room for the request's other fields.
const MAX_MESSAGE: usize = 4 << 20;
const BATCH_OVERHEAD: u64 = 64 << 10;
/// Bytes per ByteStream `WriteRequest` (well under the message limit, as Bazel's 16 KiB–1 MiB).
const WRITE_CHUNK: usize = 1 << 20;
/// Slowest transfer accepted, as the HTTP client's: a body must arrive within the request timeout
/// plus `size / MIN_RATE` seconds.
const MIN_RATE: u64 = 1 << 20;
/// `digest_function::Value::Sha256`.
const SHA256: i32 = re::digest_function::Value::Sha256 as i32;

/// One REAPI endpoint: where, which instance, which headers; connected and capability-checked on
/// first use.
pub struct Grpc {
    /// `grpc[s]://host:port[/instance]`, for messages (no credentials: they live in `headers`).
    url: String,
    /// `http[s]://host:port` for tonic.
    origin: String,
    tls_domain: Option<String>,
    instance: String,
    /// Sent with every call (`authorization` from the credentials, `--remote-header`s). Values
    /// are never printed.
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    timeouts: Timeouts,
    conn: OnceLock<std::result::Result<Conn, RemoteError>>,
}

#[derive(Clone)]
struct Conn {
    channel: Channel,
    /// Largest batch (sum of blob sizes) for BatchRead/UpdateBlobs.
    batch_limit: u64,
    /// The server refuses AC writes (`update_enabled: false`).
    ac_read_only: bool,
    /// The server runs actions (`execution_capabilities.exec_enabled`, SHA256).
    exec_enabled: bool,
}

/// `Ok(Some(_))`/`Ok(None)` for found/not found.
type Found<T> = Result<Option<T>>;

impl std::fmt::Debug for Grpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grpc")
            .field("url", &self.url)
            .field("instance", &self.instance)
            .field("headers", &self.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

/// The process-wide runtime the gRPC calls run on: one worker thread, never dropped (a runtime
/// dropped inside another runtime's task panics, and a `RemoteCache` may be dropped anywhere).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cbuild-grpc")
            .enable_all()
            .build()
            .expect("a tokio runtime with one thread can be built")
    })
}

/// The AC key of a cbuild action: the SHA256 digest of `cbuild-action-v1 <blake3 hex>`.
pub fn action_digest(key: &Blake3) -> re::Digest {
    let bytes = format!("cbuild-action-v1 {}", key.to_hex());
    proto_digest(&Digest::of_bytes(bytes.as_bytes()), bytes.len() as u64)
}

/// A REAPI digest of `d` (sha256) and `size`.
pub fn proto_digest(d: &Digest, size: u64) -> re::Digest {
    re::Digest { hash: d.hex().to_string(), size_bytes: size as i64 }
}

impl Grpc {
    /// An endpoint for `url` (`grpc://host:port[/instance/name]` or `grpcs://…`, already checked
    /// by [`super::config::parse_base_url`]). `instance` overrides the URL's path.
    pub fn new(url: &str, instance: Option<&str>, headers: &[(String, String)], timeouts: Timeouts) -> Result<Grpc> {
        let bad = |reason: String| RemoteError::BadUrl { url: url.to_string(), reason };
        let u = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let tls = match u.scheme() {
            "grpc" => false,
            "grpcs" => true,
            s => return Err(bad(format!("`{s}` is not a gRPC scheme (`grpc` or `grpcs`)"))),
        };
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("there is no host".into()))?;
        let port = u.port().unwrap_or(if tls { 443 } else { 80 });
        let origin = format!("{}://{host}:{port}", if tls { "https" } else { "http" });
        let path_instance = u.path().trim_matches('/').to_string();
        let instance = instance.map(|s| s.trim_matches('/').to_string()).unwrap_or(path_instance);
        let mut hs = Vec::with_capacity(headers.len());
        for (k, v) in headers {
            let key = AsciiMetadataKey::from_str(&k.to_ascii_lowercase())
                .map_err(|_| RemoteError::BadAuth { reason: format!("`{k}` is not a valid gRPC header name") })?;
            let mut val = AsciiMetadataValue::try_from(v.as_str()).map_err(|_| RemoteError::BadAuth {
                reason: format!("the value of header `{k}` contains characters a header cannot carry (not shown)"),
            })?;
            val.set_sensitive(true);
            hs.push((key, val));
        }
        Ok(Grpc {
            url: url.trim_end_matches('/').to_string(),
            origin,
            tls_domain: tls.then(|| host.trim_start_matches('[').trim_end_matches(']').to_string()),
            instance,
            headers: hs,
            timeouts,
            conn: OnceLock::new(),
        })
    }

    /// `grpc[s]://host:port[/instance]` (no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The instance name calls are made against (`""` is the default instance).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// True if the server said its action cache takes no updates from clients.
    pub fn ac_read_only(&self) -> bool {
        matches!(self.conn.get(), Some(Ok(c)) if c.ac_read_only)
    }

    /// Whether the server executes actions (Capabilities: `exec_enabled` with SHA256); connects
    /// on first use.
    pub fn exec_enabled(&self) -> Result<bool> {
        Ok(self.conn(self.timeouts.connect + self.timeouts.request)?.exec_enabled)
    }

    /// The connected channel (for the Execution, Operations and Bots calls of
    /// [`super::exec`] and the worker, which run on [`spawn`](Self::spawn)).
    pub fn channel(&self) -> Result<Channel> {
        Ok(self.conn(self.timeouts.connect + self.timeouts.request)?.channel)
    }

    /// A request carrying this endpoint's headers and `timeout` (`grpc-timeout`).
    pub fn with_headers<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        self.request(msg, timeout)
    }

    /// A gRPC status of `method` as a [`RemoteError`] naming this endpoint.
    pub fn error(&self, method: &'static str, s: Status) -> RemoteError {
        self.status_err(method, s)
    }

    /// Runs `fut` on the process-wide gRPC runtime (awaitable from any runtime).
    pub fn spawn<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> tokio::task::JoinHandle<T> {
        runtime().spawn(fut)
    }

    /// One unary call of a service without generated bindings here (the Remote Workers API's
    /// `Bots`): `path` is `/package.Service/Method`. Blocking, bounded by `timeout`.
    pub fn unary<Req, Resp>(
        &self,
        method: &'static str,
        path: &'static str,
        msg: Req,
        timeout: Duration,
    ) -> Result<Resp>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let conn = self.conn(timeout)?;
        let req = self.request(msg, timeout);
        self.call(method, timeout, async move {
            let mut g = tonic::client::Grpc::new(conn.channel);
            g.ready().await.map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            g.unary(req, tonic::codegen::http::uri::PathAndQuery::from_static(path), codec).await
        })
    }

    /// Uploads `bytes` as a blob unless the server has it.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<re::Digest> {
        let d = Digest::of_bytes(bytes);
        let n = bytes.len() as u64;
        if !self.find_missing(&[(d.clone(), n)])?.is_empty() {
            self.write_blob(&d, n, Box::new(std::io::Cursor::new(bytes.to_vec())))?;
        }
        Ok(proto_digest(&d, n))
    }

    /// Downloads a small blob (a message) whole, checking its digest.
    pub fn get_bytes(&self, d: &re::Digest) -> Result<Vec<u8>> {
        let digest = Digest::from_hex(&d.hash).map_err(|_| self.garbage("BatchReadBlobs", &d.hash))?;
        let size = u64::try_from(d.size_bytes).map_err(|_| self.garbage("BatchReadBlobs", "a negative size"))?;
        let mut out = Vec::new();
        match self.read_blob(&digest, size, self.timeouts.request, &mut out)? {
            Some(_) if Digest::of_bytes(&out) == digest => Ok(out),
            Some(_) => Err(self.garbage("BatchReadBlobs", &format!("blob `{}` does not match its digest", d.hash))),
            None => Err(RemoteError::Grpc {
                method: "BatchReadBlobs",
                url: self.url.clone(),
                code: Code::NotFound,
                message: format!("blob `{}` is not in the CAS", d.hash),
                unreachable: false,
            }),
        }
    }

    // ---- the calls ----

    /// The `ActionResult` stored under `key`'s action digest, `None` on NOT_FOUND.
    pub fn get_action_result(&self, key: &Blake3, timeout: Duration) -> Found<re::ActionResult> {
        let conn = self.conn(timeout)?;
        let req = re::GetActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action_digest(key)),
            inline_stdout: false,
            inline_stderr: false,
            digest_function: SHA256,
            ..Default::default()
        };
        let mut c = ActionCacheClient::new(conn.channel).max_decoding_message_size(16 << 20);
        let req = self.request(req, timeout);
        not_found_is_none(self.call("GetActionResult", timeout, async move { c.get_action_result(req).await }))
    }

    /// Stores `result` under `key`'s action digest.
    pub fn update_action_result(&self, key: &Blake3, result: re::ActionResult) -> Result<()> {
        let conn = self.conn(self.timeouts.request)?;
        let req = re::UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action_digest(key)),
            action_result: Some(result),
            digest_function: SHA256,
            ..Default::default()
        };
        let mut c = ActionCacheClient::new(conn.channel);
        let timeout = self.timeouts.request;
        let req = self.request(req, timeout);
        self.call("UpdateActionResult", timeout, async move { c.update_action_result(req).await }).map(|_| ())
    }

    /// Which of `blobs` the server lacks.
    pub fn find_missing(&self, blobs: &[(Digest, u64)]) -> Result<Vec<Digest>> {
        let conn = self.conn(self.timeouts.request)?;
        let req = re::FindMissingBlobsRequest {
            instance_name: self.instance.clone(),
            blob_digests: blobs.iter().map(|(d, n)| proto_digest(d, *n)).collect(),
            digest_function: SHA256,
        };
        let mut c = ContentAddressableStorageClient::new(conn.channel);
        let timeout = self.timeouts.request;
        let req = self.request(req, timeout);
        let resp = self.call("FindMissingBlobs", timeout, async move { c.find_missing_blobs(req).await })?;
        resp.missing_blob_digests
            .iter()
            .map(|d| Digest::from_hex(&d.hash).map_err(|_| self.garbage("FindMissingBlobs", &d.hash)))
            .collect()
    }

    /// Downloads a blob of `size` bytes into `out`: `Ok(None)` if the server does not have it.
    /// Small blobs go in one BatchReadBlobs, larger ones through ByteStream Read. The bytes are
    /// not checked here (the caller hashes them on the way).
    pub fn read_blob(&self, d: &Digest, size: u64, timeout: Duration, out: &mut dyn Write) -> Found<u64> {
        let conn = self.conn(timeout)?;
        let until = Instant::now() + timeout + Duration::from_secs(size / MIN_RATE);
        if size <= conn.batch_limit {
            let req = re::BatchReadBlobsRequest {
                instance_name: self.instance.clone(),
                digests: vec![proto_digest(d, size)],
                digest_function: SHA256,
                ..Default::default()
            };
            let mut c = ContentAddressableStorageClient::new(conn.channel).max_decoding_message_size(MAX_MESSAGE * 2);
            let req = self.request(req, timeout);
            let resp = self.call("BatchReadBlobs", timeout, async move { c.batch_read_blobs(req).await })?;
            let Some(r) = resp.responses.into_iter().find(|r| r.digest.as_ref().is_some_and(|x| x.hash == d.hex()))
            else {
                return Err(self.garbage("BatchReadBlobs", "an answer without the blob asked for"));
            };
            match r.status.as_ref().map(|s| s.code).unwrap_or(0) {
                0 => {}
                5 => return Ok(None), // NOT_FOUND
                code => return Err(self.rpc_status("BatchReadBlobs", code, r.status.map(|s| s.message))),
            }
            out.write_all(&r.data).map_err(|source| self.read_err("BatchReadBlobs", source))?;
            return Ok(Some(r.data.len() as u64));
        }
        let resource = self.resource(&format!("blobs/{}/{size}", d.hex()));
        let mut c = bs::byte_stream_client::ByteStreamClient::new(conn.channel);
        let req = self.request(bs::ReadRequest { resource_name: resource, read_offset: 0, read_limit: 0 }, timeout);
        let stream = match self.call("ByteStream.Read", timeout, async move { c.read(req).await }) {
            Err(RemoteError::Grpc { code: Code::NotFound, .. }) => return Ok(None),
            r => r?,
        };
        let mut stream = Some(stream);
        let mut total = 0u64;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.read_err(
                    "ByteStream.Read",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the blob did not arrive in time (trickling server)",
                    ),
                ));
            }
            let mut s = stream.take().expect("the stream is put back after each message");
            let (next, s) = match self.call_raw("ByteStream.Read", left, async move {
                let m = s.message().await;
                Ok::<_, std::convert::Infallible>((m, s))
            })? {
                Ok(v) => v,
                Err(never) => match never {},
            };
            stream = Some(s);
            match next {
                Ok(Some(m)) => {
                    total += m.data.len() as u64;
                    if total > size {
                        return Err(self.garbage("ByteStream.Read", "more bytes than the blob's size"));
                    }
                    out.write_all(&m.data).map_err(|source| self.read_err("ByteStream.Read", source))?;
                }
                Ok(None) => return Ok(Some(total)),
                Err(s) if s.code() == Code::NotFound && total == 0 => return Ok(None),
                Err(s) => return Err(self.status_err("ByteStream.Read", s)),
            }
        }
    }

    /// Uploads `size` bytes read from `src` as blob `d`: one BatchUpdateBlobs up to the batch
    /// limit, else a ByteStream Write in chunks. `src` fails (and the upload is not finished)
    /// when the local bytes do not match `d`, so the server never commits them.
    pub fn write_blob(&self, d: &Digest, size: u64, mut src: Box<dyn Read + Send>) -> Result<()> {
        let conn = self.conn(self.timeouts.request)?;
        let timeout = self.timeouts.upload(size);
        if size <= conn.batch_limit {
            let mut data = Vec::with_capacity(size as usize);
            src.read_to_end(&mut data).map_err(|source| RemoteError::Read {
                method: "BatchUpdateBlobs",
                url: self.url.clone(),
                source,
            })?;
            let req = re::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests: vec![re::batch_update_blobs_request::Request {
                    digest: Some(proto_digest(d, size)),
                    data,
                    ..Default::default()
                }],
                digest_function: SHA256,
            };
            let mut c = ContentAddressableStorageClient::new(conn.channel).max_encoding_message_size(MAX_MESSAGE * 2);
            let req = self.request(req, timeout);
            let resp = self.call("BatchUpdateBlobs", timeout, async move { c.batch_update_blobs(req).await })?;
            for r in resp.responses {
                if let Some(s) = r.status.filter(|s| s.code != 0) {
                    return Err(self.rpc_status("BatchUpdateBlobs", s.code, Some(s.message)));
                }
            }
            return Ok(());
        }
        let resource = self.resource(&format!("uploads/{}/blobs/{}/{size}", upload_id(d), d.hex()));
        // Chunks are read on the runtime thread as the server takes them; a failing read ends the
        // stream without `finish_write`, which leaves the upload uncommitted.
        let failed: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>> = Default::default();
        let failed_in = failed.clone();
        let chunks = futures_stream(move |offset: i64| {
            let mut buf = vec![0u8; WRITE_CHUNK];
            let mut n = 0;
            while n < buf.len() {
                match src.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        *failed_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return None;
                    }
                }
            }
            if n == 0 && offset != 0 {
                return None;
            }
            buf.truncate(n);
            let finish = offset as u64 + n as u64 >= size;
            Some(bs::WriteRequest {
                resource_name: if offset == 0 { resource.clone() } else { String::new() },
                write_offset: offset,
                finish_write: finish,
                data: buf,
            })
        });
        let mut c = bs::byte_stream_client::ByteStreamClient::new(conn.channel);
        let req = self.request(chunks, timeout);
        let r = self.call("ByteStream.Write", timeout, async move { c.write(req).await });
        if let Some(source) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(RemoteError::Read { method: "ByteStream.Write", url: self.url.clone(), source });
        }
        let resp = r?;
        // A server that already has the blob may end the write early with the full size.
        if resp.committed_size != size as i64 {
            return Err(self.garbage("ByteStream.Write", &format!("committed {} bytes of {size}", resp.committed_size)));
        }
        Ok(())
    }

    // ---- plumbing ----

    fn resource(&self, tail: &str) -> String {
        match self.instance.as_str() {
            "" => tail.to_string(),
            i => format!("{i}/{tail}"),
        }
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        for (k, v) in &self.headers {
            r.metadata_mut().insert(k.clone(), v.clone());
        }
        r
    }

    /// Connects and checks the server's capabilities, once; the outcome (also a failure) is kept,
    /// so a server that cannot be used costs one connect timeout per build.
    fn conn(&self, timeout: Duration) -> Result<Conn> {
        match self.conn.get_or_init(|| self.connect(timeout)) {
            Ok(c) => Ok(c.clone()),
            Err(e) => Err(clone_setup_error(e)),
        }
    }

    /// `timeout`: for GetCapabilities, the first call's (on the critical path: the budget's).
    fn connect(&self, timeout: Duration) -> std::result::Result<Conn, RemoteError> {
        let unusable = |reason: String| RemoteError::Client { reason: format!("`{}`: {reason}", self.url) };
        let mut ep = Endpoint::from_shared(self.origin.clone())
            .map_err(|e| unusable(e.to_string()))?
            .connect_timeout(self.timeouts.connect)
            .tcp_nodelay(true)
            .user_agent(concat!("cbuild/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| unusable(e.to_string()))?;
        if let Some(domain) = &self.tls_domain {
            let tls = ClientTlsConfig::new().with_webpki_roots().domain_name(domain.clone());
            ep = ep.tls_config(tls).map_err(|e| unusable(format!("TLS set-up: {e}")))?;
        }
        let connect_timeout = self.timeouts.connect + Duration::from_millis(500);
        let channel = self.call_raw("connect", connect_timeout, async move { ep.connect().await }).and_then(|r| {
            r.map_err(|e| RemoteError::Grpc {
                method: "connect",
                url: self.url.clone(),
                code: Code::Unavailable,
                message: match &self.tls_domain {
                    // rustls meeting a plaintext HTTP/2 server: "received corrupt message of type
                    // InvalidContentType".
                    Some(_) => {
                        format!("{} (grpcs:// speaks TLS; if the server does not, use grpc://)", describe_transport(&e))
                    }
                    None => describe_transport(&e),
                },
                unreachable: true,
            })
        })?;
        let mut c = CapabilitiesClient::new(channel.clone());
        let req = self.request(re::GetCapabilitiesRequest { instance_name: self.instance.clone() }, timeout);
        // Any failure here means the server cannot be used at all (not one bad answer): the remote
        // is turned off at once, with a hint when the endpoint does not speak gRPC.
        let caps = self.call("GetCapabilities", timeout, async move { c.get_capabilities(req).await }).map_err(
            |e| match e {
                RemoteError::Grpc { method, url, code, message, .. } => {
                    let message = if message.contains("h2 protocol error") || code == Code::Unimplemented {
                        format!("{message} (is this a REAPI gRPC server? For a Bazel HTTP cache use http://)")
                    } else {
                        message
                    };
                    RemoteError::Grpc { method, url, code, message, unreachable: true }
                }
                other => other,
            },
        )?;
        let cache = caps.cache_capabilities.ok_or_else(|| {
            unusable(format!(
                "the server offers no remote cache for instance `{}` (no cache capabilities)",
                self.instance
            ))
        })?;
        if !cache.digest_functions.is_empty() && !cache.digest_functions.contains(&SHA256) {
            let names: Vec<String> = cache
                .digest_functions
                .iter()
                .map(|f| {
                    re::digest_function::Value::try_from(*f)
                        .map(|v| v.as_str_name().to_string())
                        .unwrap_or_else(|_| f.to_string())
                })
                .collect();
            return Err(unusable(format!(
                "the server offers digest functions {} but not SHA256, which cbuild's blobs are named by",
                names.join(", ")
            )));
        }
        let server_limit = u64::try_from(cache.max_batch_total_size_bytes).unwrap_or(0);
        let cap = MAX_MESSAGE as u64 - BATCH_OVERHEAD;
        let batch_limit = if server_limit == 0 { cap } else { server_limit.saturating_sub(BATCH_OVERHEAD).min(cap) };
        let ac_read_only = cache.action_cache_update_capabilities.is_some_and(|u| !u.update_enabled);
        let exec_enabled = caps
            .execution_capabilities
            .as_ref()
            .is_some_and(|e| e.exec_enabled && (e.digest_function == SHA256 || e.digest_functions.contains(&SHA256)));
        Ok(Conn { channel, batch_limit, ac_read_only, exec_enabled })
    }

    /// Runs `fut` on the gRPC runtime and waits for it at most `timeout` (plus a grace for the
    /// runtime to report its own deadline first), mapping a gRPC status to [`RemoteError::Grpc`].
    fn call<T: Send + 'static>(
        &self,
        method: &'static str,
        timeout: Duration,
        fut: impl Future<Output = std::result::Result<tonic::Response<T>, Status>> + Send + 'static,
    ) -> Result<T> {
        match self.call_raw(method, timeout, fut)? {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_err(method, s)),
        }
    }

    fn call_raw<T: Send + 'static, E: Send + 'static>(
        &self,
        method: &'static str,
        timeout: Duration,
        fut: impl Future<Output = std::result::Result<T, E>> + Send + 'static,
    ) -> Result<std::result::Result<T, E>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let task = runtime().spawn(async move {
            let r = tokio::time::timeout(timeout, fut).await;
            let _ = tx.send(r);
        });
        let waited = rx.recv_timeout(timeout + Duration::from_secs(1));
        match waited {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) | Err(_) => {
                task.abort();
                Err(RemoteError::Grpc {
                    method,
                    url: self.url.clone(),
                    code: Code::DeadlineExceeded,
                    message: format!("no answer within {timeout:?}"),
                    unreachable: method == "connect",
                })
            }
        }
    }

    fn status_err(&self, method: &'static str, s: Status) -> RemoteError {
        // tonic reports a failed connection (refused, TLS mismatch, reset) as UNAVAILABLE with the
        // transport error as source.
        let message = match std::error::Error::source(&s) {
            Some(src) if s.message().is_empty() || s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                format!("{} ({})", s.message(), root_cause(src)).trim_start().to_string()
            }
            _ => s.message().to_string(),
        };
        // tonic reports its own client-side deadline (`grpc-timeout`) as CANCELLED.
        let code = match s.code() {
            Code::Cancelled if s.message().contains("Timeout expired") => Code::DeadlineExceeded,
            c => c,
        };
        RemoteError::Grpc { method, url: self.url.clone(), code, message, unreachable: false }
    }

    fn rpc_status(&self, method: &'static str, code: i32, message: Option<String>) -> RemoteError {
        RemoteError::Grpc {
            method,
            url: self.url.clone(),
            code: Code::from_i32(code),
            message: message.unwrap_or_default(),
            unreachable: false,
        }
    }

    fn garbage(&self, method: &'static str, what: &str) -> RemoteError {
        RemoteError::Grpc {
            method,
            url: self.url.clone(),
            code: Code::Internal,
            message: format!("malformed answer: {what}"),
            unreachable: false,
        }
    }

    fn read_err(&self, method: &'static str, source: std::io::Error) -> RemoteError {
        RemoteError::Read { method, url: self.url.clone(), source }
    }
}

/// NOT_FOUND as `Ok(None)`.
fn not_found_is_none<T>(r: Result<T>) -> Found<T> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(RemoteError::Grpc { code: Code::NotFound, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The set-up error kept in the `OnceLock`, again for each later call.
fn clone_setup_error(e: &RemoteError) -> RemoteError {
    match e {
        RemoteError::Grpc { method, url, code, message, unreachable } => RemoteError::Grpc {
            method,
            url: url.clone(),
            code: *code,
            message: message.clone(),
            unreachable: *unreachable,
        },
        RemoteError::BadUrl { url, reason } => RemoteError::BadUrl { url: url.clone(), reason: reason.clone() },
        other => RemoteError::Client { reason: other.to_string() },
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(s) = root.source() {
        root = s;
    }
    root.to_string()
}

fn describe_transport(e: &tonic::transport::Error) -> String {
    format!("cannot connect: {}", root_cause(e))
}

/// A fresh upload id in UUID form (REAPI wants a UUID per upload; uniqueness is what matters).
fn upload_id(d: &Digest) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = format!("{}-{}-{now}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), d.hex());
    let h = blake3::hash(seed.as_bytes()).to_hex();
    let h = h.as_str();
    // Version 4 / variant 10 bits set, as a random UUID's.
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// A stream of `WriteRequest`s made by `next(offset)` until it returns `None`.
fn futures_stream(
    mut next: impl FnMut(i64) -> Option<bs::WriteRequest> + Send + 'static,
) -> impl tokio_stream::Stream<Item = bs::WriteRequest> + Send + 'static {
    let mut offset = 0i64;
    let mut done = false;
    tokio_stream::iter(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let r = next(offset)?;
        offset += r.data.len() as i64;
        done = r.finish_write;
        Some(r)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_digests_are_sha256_of_the_tagged_key() {
        let k = Blake3::of_bytes(b"x");
        let d = action_digest(&k);
        assert_eq!(d.size_bytes, 17 + 64);
        assert_eq!(d.hash.len(), 64);
        assert_ne!(d, action_digest(&Blake3::of_bytes(b"y")));
    }

    #[test]
    fn urls_instances_and_headers() {
        let t = Timeouts::default();
        let g = Grpc::new("grpc://127.0.0.1:8980/main/ci", None, &[], t).unwrap();
        assert_eq!((g.origin.as_str(), g.instance()), ("http://127.0.0.1:8980", "main/ci"));
        assert_eq!(g.resource("blobs/ab/1"), "main/ci/blobs/ab/1");
        let g = Grpc::new("grpcs://cache.example:443", Some("x"), &[("X-Api-Key".into(), "s3cret".into())], t).unwrap();
        assert_eq!(
            (g.origin.as_str(), g.instance(), g.tls_domain.as_deref()),
            ("https://cache.example:443", "x", Some("cache.example"))
        );
        assert_eq!(g.resource("blobs/ab/1"), "x/blobs/ab/1");
        assert!(!format!("{g:?}").contains("s3cret"));
        let e = Grpc::new("grpc://h:1", None, &[("bad header".into(), "v".into())], t).unwrap_err();
        assert!(e.to_string().contains("bad header"), "{e}");
        let e = Grpc::new("grpc://h:1", None, &[("k".into(), "s3cret\n".into())], t).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let id = upload_id(&Digest::of_bytes(b"a"));
        assert_eq!((id.len(), &id[14..15], &id[19..20]), (36, "4", "8"));
        assert_ne!(id, upload_id(&Digest::of_bytes(b"a")));
    }
}
