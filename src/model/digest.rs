//! Content digests: `sha256:<hex>` OCI/registry digests (the CAS key) and blake3 hashes (action keys,
//! source-file fingerprints). A `…Digest` is always a content hash; nothing here hashes Rust values.

use std::fmt;
use std::io::{self, Read};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// An OCI content digest, always `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a valid `sha256:<hex>` digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a sha256 digest (expected `sha256:` followed by 64 lowercase hex digits)")]
pub struct BadDigest(pub String);

impl Digest {
    /// Parses `sha256:<64 hex>`.
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| BadDigest(s.to_string()))?;
        Digest::from_hex(hex).map_err(|_| BadDigest(s.to_string()))
    }

    /// Builds a digest from 64 lowercase hex digits (no `sha256:` prefix).
    pub fn from_hex(hex: &str) -> Result<Digest, BadDigest> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Digest { hex: hex.to_string() })
        } else {
            Err(BadDigest(hex.to_string()))
        }
    }

    /// The sha256 digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest { hex: hex_of(&Sha256::digest(bytes)) }
    }

    /// The sha256 digest of everything `r` yields, streamed.
    pub fn of_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = r.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        Ok((Digest { hex: hex_of(&h.finalize()) }, n))
    }

    /// The 64 hex digits without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl std::str::FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A writer adaptor that hashes (sha256) and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: io::Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), written: 0 }
    }
    /// Returns the inner writer, the digest and the byte count of what went through.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest { hex: hex_of(&self.hasher.finalize()) }, self.written)
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// [`HashingWriter`] whose sha256 runs on a thread of its own once [`HASH_BLOCK`] bytes went
/// through, so a layer's producer (tar, content-defined chunking) and its hashes use two
/// cores: sha256 runs at about 1.6 GB/s even with the CPU's SHA instructions, the largest part of
/// writing a layer whose chunks are found in the index (issue 23). The bytes are copied into
/// blocks of [`HASH_BLOCK`] handed to the thread in order (at most [`HASH_IN_FLIGHT`] at a time,
/// so memory stays bounded); a smaller stream is hashed inline and never starts a thread. If the
/// thread cannot be started, hashing stays inline.
pub struct BackgroundHashingWriter<W> {
    inner: W,
    block: Vec<u8>,
    hasher: Hasher,
    written: u64,
}

/// Where the full blocks go: nowhere yet (no block filled), a thread, or inline (no thread could
/// be started).
enum Hasher {
    NotYet,
    Thread(HashWorker),
    Inline(Sha256),
}

/// Bytes handed to the hashing thread at a time.
pub const HASH_BLOCK: usize = 1 << 20;
/// Blocks queued for the hashing thread before the writer waits.
pub const HASH_IN_FLIGHT: usize = 4;

struct HashWorker {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// Blocks the thread is done with, for reuse.
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: std::thread::JoinHandle<Sha256>,
}

impl HashWorker {
    fn spawn() -> io::Result<HashWorker> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(HASH_IN_FLIGHT);
        let (back_tx, back) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new().name("cbuild-sha256".into()).spawn(move || {
            let mut h = Sha256::new();
            for b in rx {
                h.update(&b);
                let _ = back_tx.send(b);
            }
            h
        })?;
        Ok(HashWorker { tx, back, handle })
    }
}

impl<W: io::Write> BackgroundHashingWriter<W> {
    pub fn new(inner: W) -> Self {
        BackgroundHashingWriter { inner, block: Vec::new(), hasher: Hasher::NotYet, written: 0 }
    }

    /// Hands the full block to the thread (started on the first one), or hashes it inline.
    fn pass_block(&mut self) -> io::Result<()> {
        if let Hasher::NotYet = self.hasher {
            self.hasher = HashWorker::spawn().map_or_else(|_| Hasher::Inline(Sha256::new()), Hasher::Thread);
        }
        match &mut self.hasher {
            Hasher::Thread(w) => {
                let mut next = w.back.try_recv().unwrap_or_default();
                next.clear();
                let full = std::mem::replace(&mut self.block, next);
                w.tx.send(full).map_err(|_| io::Error::other("the sha256 thread ended early"))
            }
            Hasher::Inline(h) => {
                h.update(&self.block);
                self.block.clear();
                Ok(())
            }
            Hasher::NotYet => Err(io::Error::other("internal: the sha256 hasher was not set up")),
        }
    }

    /// Returns the inner writer, the digest and the byte count of what went through.
    pub fn finish(self) -> io::Result<(W, Digest, u64)> {
        let BackgroundHashingWriter { inner, block, hasher, written } = self;
        let h = match hasher {
            Hasher::Thread(HashWorker { tx, back, handle }) => {
                if !block.is_empty() {
                    tx.send(block).map_err(|_| io::Error::other("the sha256 thread ended early"))?;
                }
                drop(tx);
                drop(back);
                handle.join().map_err(|_| io::Error::other("the sha256 thread panicked"))?
            }
            Hasher::Inline(mut h) => {
                h.update(&block);
                h
            }
            Hasher::NotYet => Sha256::new().chain_update(&block),
        };
        Ok((inner, Digest { hex: hex_of(&h.finalize()) }, written))
    }
}

impl<W: io::Write> io::Write for BackgroundHashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            if self.block.capacity() == 0 {
                self.block.reserve_exact(HASH_BLOCK);
            }
            let take = rest.len().min(HASH_BLOCK - self.block.len());
            self.block.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.block.len() == HASH_BLOCK {
                self.pass_block()?;
            }
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A blake3 hash (32 bytes), used for action keys and source-file fingerprints.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blake3(pub [u8; 32]);

impl Blake3 {
    pub fn of_bytes(b: &[u8]) -> Blake3 {
        Blake3(*blake3::hash(b).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        hex_of(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Blake3> {
        let v = hex::decode(s).ok()?;
        Some(Blake3(v.try_into().ok()?))
    }
}

impl fmt::Display for Blake3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HexBuf::of(&self.0).as_str())
    }
}

impl fmt::Debug for Blake3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", HexBuf::of(&self.0).as_str())
    }
}

/// Lowercase hex of 32 bytes on the stack (`hex::encode` goes through a char iterator, several
/// times slower on the hot paths that format every source's digest).
pub struct HexBuf([u8; 64]);

impl HexBuf {
    pub fn of(bytes: &[u8; 32]) -> HexBuf {
        let mut b = [0u8; 64];
        // 64 bytes of room for 32 bytes: cannot fail.
        let _ = hex::encode_to_slice(bytes, &mut b);
        HexBuf(b)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits were written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Lowercase hex of a 32-byte hash as a `String`.
fn hex_of(bytes: &[u8]) -> String {
    match <&[u8; 32]>::try_from(bytes) {
        Ok(b) => HexBuf::of(b).as_str().to_string(),
        Err(_) => hex::encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of_bytes(b"hello");
        assert_eq!(d.to_string(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for s in ["", "sha256:", "md5:00", "sha256:ABCDEF", &format!("sha256:{}", "0".repeat(63))] {
            assert!(Digest::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn the_background_hasher_agrees_with_the_inline_one_at_every_size() {
        use std::io::Write;
        // Around the block size: inline only, exactly one block, blocks and a tail, many blocks
        // (more than are in flight, so blocks are reused), written in odd-sized pieces.
        for n in [0, 1, HASH_BLOCK - 1, HASH_BLOCK, HASH_BLOCK + 1, 3 * HASH_BLOCK + 7, 9 * HASH_BLOCK + 1] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let mut a = HashingWriter::new(Vec::new());
            let mut b = BackgroundHashingWriter::new(Vec::new());
            for piece in data.chunks(100_003) {
                a.write_all(piece).unwrap();
                b.write_all(piece).unwrap();
            }
            let (wa, da, na) = a.finish();
            let (wb, db, nb) = b.finish().unwrap();
            assert_eq!((da, na), (db, nb), "{n} bytes");
            assert_eq!(wa, wb, "{n} bytes pass through unchanged");
        }
    }

    #[test]
    fn reader_and_writer_agree() {
        use std::io::Write;
        let (d, n) = Digest::of_reader(&b"abc"[..]).unwrap();
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (_, d2, n2) = w.finish();
        assert_eq!((d, n), (d2, n2));
    }
}
