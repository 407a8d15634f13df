//! The remote action cache over the Bazel HTTP cache protocol (`GET/HEAD/PUT {base}/ac/<key>` and
//! `{base}/cas/<sha256>`), so nginx WebDAV, bazel-remote and S3 proxies serve it unchanged. No
//! local cache, printing or settings resolution here: the scheduler and `cli` wire it in.
//!
//! ```text
//! put_action: HEAD/PUT cas/<blob>… ─► PUT cas/<cbuild-result.json> ─► PUT ac/<key>   (AC last)
//! get_action: GET ac/<key> ─► ActionResult ─► GET cas/<cbuild-result.json> ─► RemoteEntry
//! fetch_blob: GET cas/<sha256> ─► temp file, sha256 checked ─► BlobDir   (lazily, per blob)
//! ```
//!
//! Trust (RELIABILITY.md, "Remote cache trust"): only holders of a signing key write (every entry
//! is an Ed25519 signature over the action key and the entry record, [`signing`]); readers that
//! list trusted public keys use only entries signed by one of them, others use any entry and are
//! warned once. Every entry is checked against its action before use ([`validate`]); whatever is
//! wrong with an entry makes it a miss with a warning, never a local cache entry.
//!
//! Encoding decisions:
//! * CAS keys are the sha256 of the bytes (our OCI digests), so bazel-remote's CAS check passes.
//! * The action key is our blake3 hex (64 hex digits), which both servers accept as an AC key.
//! * The AC value is a serialized REAPI `ActionResult` ([`proto`]), as bazel-remote requires: its
//!   `output_files` are every referenced blob (`blobs/<n>`) plus `cbuild-result.json`, whose CAS
//!   blob holds our result and key components (see [`entry`]). bazel-remote's AC validation
//!   (every referenced CAS blob exists) therefore passes, and the whole entry is content-addressed
//!   except the small AC value itself, which is checked against the key it is served under.
//! * The few protobuf messages are hand-encoded ([`proto`], ~150 lines with field numbers from
//!   `remote_execution.proto`) rather than generated with `prost`: that would add `prost`,
//!   `prost-build`, a `protoc` at build time and the REAPI/googleapis protos, for three messages.
//!
//! Why blocking `reqwest`: [`crate::cas::BlobDir`] and [`crate::cache::Cache`] are synchronous
//! and streaming a download through a `Read` into a temp file (or an upload from a `File` with
//! `Body::sized`) keeps memory flat without extra `reqwest` features; the scheduler already calls
//! the local cache through `spawn_blocking`, and calls this the same way.

pub mod budget;
pub mod client;
pub mod config;
pub mod entry;
pub mod error;
pub mod grpc;
pub mod signing;
pub mod validate;

pub use budget::Budget;
pub use client::{PutStats, RemoteCache, RemoteHealth, RemoteHit};
pub use config::{RemoteAuth, RemoteMode, Timeouts, AUTH_ENV, TOKEN_ENV};
pub use entry::RemoteEntry;
pub use error::{RemoteError, Result};
pub use signing::{PublicKey, SigningKey, SIGNING_KEY_ENV, TRUSTED_KEYS_ENV};
pub use validate::Expected;
