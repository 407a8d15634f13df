//! Deterministic, streaming layer compression and detection: a pigz-style parallel gzip encoder
//! (fixed level and block size, output independent of the thread count), multithreaded zstd with
//! fixed parameters, and magic-number detection for decompression.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => super::MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => super::MEDIA_TYPE_LAYER_ZSTD,
            Compression::None => super::MEDIA_TYPE_LAYER_TAR,
        }
    }

    /// The compression a layer media type (OCI or Docker, distributable or not) declares; `None`
    /// (the Rust one) for a media type that is not a layer.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// gzip level of every layer cbuild writes (changing it changes every layer digest).
///
/// Level 2 of zlib-rs (zlib-ng's `deflate_fast`), chosen on the benchmark's 113 MB source tree
/// (bench/notes/profile.md): 103 MB/s per core and 35.2 % of the input, against level 6's 38 MB/s
/// and 33.1 %, level 1's 170 MB/s and 48.0 % (`deflate_quick`: static Huffman codes only), and
/// classic zlib's level 1 (`pigz -1`) at 37.5 %. The CNB lifecycle writes its layers at Go's
/// `gzip.BestSpeed` (go-containerregistry's default) for the same reason: the layers of a build
/// are written far more often than they are pulled cold.
pub const GZIP_LEVEL: u32 = 2;
/// zstd level of every layer cbuild writes (changing it changes every layer digest).
pub const ZSTD_LEVEL: i32 = 3;
/// Content-defined chunk sizes of the gzip encoder (FastCDC 2020: minimum, normal, maximum).
/// Changing them, or the `fastcdc` version (its gear table), changes every gzip layer digest.
pub const CHUNK_MIN: usize = 128 << 10;
pub const CHUNK_AVG: usize = 512 << 10;
pub const CHUNK_MAX: usize = 2 << 20;
/// Chunks smaller than this are not worth an index lookup (only a stream's tail can be this small).
const INDEX_MIN: usize = 64 << 10;
/// The identity of the gzip encoding (part of every cache key that names a gzip blob): the
/// chunking, the level and the deflate implementation.
pub const GZIP_CODEC: &str = "pargz-cdc/fastcdc5-128K-512K-2M/l2/zlib-rs";

/// Where already compressed chunks can be found again: the cache remembers, for each chunk the
/// encoder produced, the blob and byte range that hold its deflate bytes. A chunk whose
/// uncompressed bytes (blake3) were compressed before is copied, not deflated again, so a small
/// edit in a big layer costs one chunk of deflate. Deflate is deterministic and chunks are
/// independent, so the bytes are the same either way.
pub trait BlockIndex: Send + Sync {
    /// The deflate bytes of a chunk whose uncompressed bytes hash to `raw` (`raw_len` long),
    /// verified against the blake3 recorded with them, and that blake3 (the encoder records it
    /// again without hashing the bytes a second time); `None` when unknown or no longer intact.
    fn get(&self, raw: &[u8; 32], raw_len: u64) -> Option<(Vec<u8>, [u8; 32])>;
    /// Records where the chunks of the stored blob `blob` are.
    fn put(&self, blob: &crate::model::digest::Digest, chunks: &[BlockRecord]);
    /// The chunks other encoders of this process are deflating or have just deflated (see
    /// [`SharedChunks`]); `None`: every encoder deflates on its own.
    fn shared(&self) -> Option<&SharedChunks> {
        None
    }
}

/// The chunks the gzip encoders of one process deflate, shared among them while they run: two
/// layers written at the same time with the same content (every service's app layer holds the
/// same bundle of the shared library, built side by side on a cold cache) deflate each common
/// chunk once — the first encoder to reach it deflates it, the others wait for its bytes or, when
/// they come later, copy them — where the [`BlockIndex`] only knows the chunks of finished blobs.
///
/// Same bytes as deflating again (deflate is deterministic, chunks are keyed by the blake3 and
/// length of their uncompressed bytes, as in the index). Memory: deflated chunks are kept for
/// later encoders only once a second encoder has started in this process (a build writing one
/// layer keeps nothing), at most [`SharedChunks::KEEP_BYTES`], the oldest dropped first.
#[derive(Default)]
pub struct SharedChunks {
    state: Mutex<SharedState>,
    /// Chunks actually deflated by encoders using this table (tests count the sharing).
    deflated: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct SharedState {
    chunks: std::collections::HashMap<([u8; 32], u64), Arc<Slot>>,
    /// Kept chunks, oldest first, with their size.
    kept: std::collections::VecDeque<(([u8; 32], u64), usize)>,
    kept_bytes: usize,
    encoders: u64,
}

/// One chunk being deflated: `None` until its owner is done; then its bytes, or `None` again
/// when the owner failed (the waiters deflate it themselves).
#[derive(Default)]
struct Slot {
    bytes: Mutex<Option<Option<Arc<Vec<u8>>>>>,
    ready: std::sync::Condvar,
}

impl Slot {
    fn wait(&self) -> Option<Arc<Vec<u8>>> {
        let mut g = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(b) = g.as_ref() {
                return b.clone();
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn set(&self, b: Option<Arc<Vec<u8>>>) {
        *self.bytes.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
        self.ready.notify_all();
    }
}

/// Ownership of a chunk being deflated; dropping it without [`Claim::publish`] lets the waiters
/// deflate it themselves (nobody waits forever on a failed or panicked owner).
struct Claim<'a> {
    table: &'a SharedChunks,
    key: ([u8; 32], u64),
    slot: Arc<Slot>,
    done: bool,
}

impl Claim<'_> {
    fn publish(mut self, bytes: &[u8]) {
        self.done = true;
        self.table.deflated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = bytes.len();
        let keep = {
            let mut st = self.table.lock();
            let keep = st.encoders >= 2 && n <= SharedChunks::KEEP_BYTES;
            if keep {
                st.kept.push_back((self.key, n));
                st.kept_bytes += n;
                while st.kept_bytes > SharedChunks::KEEP_BYTES {
                    let Some((k, n)) = st.kept.pop_front() else { break };
                    st.kept_bytes -= n;
                    st.chunks.remove(&k);
                }
            } else {
                st.chunks.remove(&self.key);
            }
            keep
        };
        // Copied only for someone: kept for later encoders, or waited for right now (out of the
        // table, nobody new can find this slot; whoever holds it is counted).
        let wanted = keep || Arc::strong_count(&self.slot) > 1;
        self.slot.set(wanted.then(|| Arc::new(bytes.to_vec())));
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.table.lock().chunks.remove(&self.key);
            self.slot.set(None);
        }
    }
}

/// What [`SharedChunks::claim`] found.
enum Found<'a> {
    /// Deflate it and publish the bytes.
    Mine(Claim<'a>),
    /// Another encoder has (or will have) the bytes.
    Theirs(Arc<Slot>),
}

impl SharedChunks {
    /// Deflated bytes kept for encoders that reach a chunk later: a few service layers' common
    /// part (the benchmark's 20 MB library bundle deflates to ≈ 7 MB).
    pub const KEEP_BYTES: usize = 16 << 20;

    /// The table every encoder of this process that writes into the cache shares.
    pub fn process() -> &'static SharedChunks {
        static TABLE: std::sync::OnceLock<SharedChunks> = std::sync::OnceLock::new();
        TABLE.get_or_init(SharedChunks::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An encoder starts.
    fn enter(&self) {
        self.lock().encoders += 1;
    }

    fn claim(&self, key: ([u8; 32], u64)) -> Found<'_> {
        let mut st = self.lock();
        if let Some(slot) = st.chunks.get(&key) {
            return Found::Theirs(slot.clone());
        }
        let slot = Arc::new(Slot::default());
        st.chunks.insert(key, slot.clone());
        Found::Mine(Claim { table: self, key, slot, done: false })
    }

    /// Chunks deflated so far by encoders sharing this table.
    pub fn deflated(&self) -> usize {
        self.deflated.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One chunk of a gzip blob: the blake3 of its uncompressed bytes and their length, the byte range
/// of its deflate bytes in the blob, and their blake3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    pub raw: [u8; 32],
    pub raw_len: u64,
    pub offset: u64,
    pub len: u64,
    pub zhash: [u8; 32],
}

/// Where the cut after the chunk starting at `data[0]` goes (content-defined: an edit moves only
/// the cuts near it). With fewer than [`CHUNK_MAX`] bytes left, only at the end of the stream.
fn cut(data: &[u8]) -> usize {
    fastcdc::v2020::FastCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX).cut(0, data.len()).1
}

fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8)
}

/// A compressing writer that must be finished explicitly.
pub trait FinishWrite: Write {
    /// Flushes the trailer; the stream is complete only after this. Returns the chunks an index
    /// may record (gzip only; see [`BlockIndex`]).
    fn finish_box(self: Box<Self>) -> io::Result<Vec<BlockRecord>>;
}

struct Plain<W: Write>(W);
impl<W: Write> Write for Plain<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl<W: Write> FinishWrite for Plain<W> {
    fn finish_box(mut self: Box<Self>) -> io::Result<Vec<BlockRecord>> {
        self.0.flush().map(|_| Vec::new())
    }
}

impl<W: Write> FinishWrite for ParGzEncoder<W> {
    fn finish_box(self: Box<Self>) -> io::Result<Vec<BlockRecord>> {
        (*self).finish_with_records().map(|(_, r)| r)
    }
}

/// zstd behind a writer whose `flush` does nothing: a zstd flush ends a block, which would make
/// the bytes depend on who flushes when.
struct Zstd<W: Write>(zstd::stream::write::Encoder<'static, W>);
impl<W: Write> Write for Zstd<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl<W: Write> FinishWrite for Zstd<W> {
    fn finish_box(self: Box<Self>) -> io::Result<Vec<BlockRecord>> {
        self.0.finish().map(|_| Vec::new())
    }
}

/// A deterministic compressing writer over `out` for `c`.
pub fn encoder<'a, W: Write + 'a>(c: Compression, out: W) -> io::Result<Box<dyn FinishWrite + 'a>> {
    indexed_encoder(c, out, None)
}

/// [`encoder`] whose gzip chunks are looked up in, and can later be recorded to, `index`.
pub fn indexed_encoder<'a, W: Write + 'a>(
    c: Compression,
    out: W,
    index: Option<Arc<dyn BlockIndex>>,
) -> io::Result<Box<dyn FinishWrite + 'a>> {
    Ok(match c {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(ParGzEncoder::with_index(out, workers(), index)),
        Compression::Zstd => Box::new(Zstd(zstd_encoder(out, workers() as u32)?)),
    })
}

/// zstd with fixed parameters. With `nbWorkers >= 1` zstd's output does not depend on the worker
/// count (zstd.h, ZSTD_c_nbWorkers), so one worker on a small machine gives the same bytes.
pub fn zstd_encoder<W: Write>(out: W, threads: u32) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut e = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    e.multithread(threads.max(1))?;
    e.include_checksum(true)?;
    e.include_contentsize(false)?;
    Ok(e)
}

/// Which compression `magic` (the first bytes of a blob) shows.
pub fn detect(magic: &[u8]) -> Compression {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `r` in the decompressor its magic number asks for; returns the detected compression.
pub fn decoder<'a, R: BufRead + 'a>(mut r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let c = detect(r.fill_buf()?);
    Ok(match c {
        Compression::None => (c, Box::new(r)),
        // MultiGzDecoder: a gzip file may hold several members (pigz --independent, bgzip)
        Compression::Gzip => (c, Box::new(flate2::bufread::MultiGzDecoder::new(r))),
        Compression::Zstd => (c, Box::new(zstd::stream::read::Decoder::with_buffer(r)?)),
    })
}

/// A chunk to compress: its sequence number, its bytes and a spare buffer for the output.
type Job = (u64, Vec<u8>, Vec<u8>);
/// A compressed chunk, with the input buffer handed back for the next chunk.
type Done = (u64, io::Result<Compressed>, Vec<u8>);

/// Buffers kept for reuse, per kind (input, output), per compression thread: about what is in
/// flight (two chunks per thread). The encoder reuses its chunk buffers instead of allocating (and
/// the allocator mapping and zeroing) ≥ 256 KiB per chunk again, so that cbuild can map big
/// blocks on their own (see `main.rs`) at no CPU cost.
const SPARE_PER_THREAD: usize = 2;

/// One chunk, deflated (or found in the index): its bytes, its [`BlockRecord`] key and, when it
/// came from the index, the blake3 of its bytes (already checked there).
struct Compressed {
    bytes: Vec<u8>,
    raw: Option<([u8; 32], u64)>,
    zhash: Option<[u8; 32]>,
    crc: flate2::Crc,
}

/// Deflates one chunk (sync-flushed, independent of every other chunk), or copies its bytes from
/// `index` when the same uncompressed bytes were compressed before, or from another encoder of
/// this process deflating the same chunk (`index`'s [`SharedChunks`]).
fn compress_chunk(data: &[u8], index: Option<&dyn BlockIndex>, out: Vec<u8>) -> io::Result<Compressed> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let raw = match index {
        Some(_) if data.len() >= INDEX_MIN => Some((*blake3::hash(data).as_bytes(), data.len() as u64)),
        _ => None,
    };
    let (Some(ix), Some((h, n))) = (index, raw) else {
        return Ok(Compressed { bytes: deflate_into(data, false, out)?, raw, zhash: None, crc });
    };
    if let Some((bytes, zhash)) = ix.get(&h, n) {
        return Ok(Compressed { bytes, raw, zhash: Some(zhash), crc });
    }
    let Some(table) = ix.shared() else {
        return Ok(Compressed { bytes: deflate_into(data, false, out)?, raw, zhash: None, crc });
    };
    match table.claim((h, n)) {
        Found::Mine(claim) => {
            let bytes = deflate_into(data, false, out)?;
            claim.publish(&bytes);
            Ok(Compressed { bytes, raw, zhash: None, crc })
        }
        Found::Theirs(slot) => match slot.wait() {
            Some(b) => Ok(Compressed { bytes: b.as_ref().clone(), raw, zhash: None, crc }),
            None => Ok(Compressed { bytes: deflate_into(data, false, out)?, raw, zhash: None, crc }),
        },
    }
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A parallel gzip writer in the style of `pigz --independent --rsyncable`: the input is cut into
/// content-defined chunks (FastCDC, [`CHUNK_MIN`]..[`CHUNK_MAX`]), each deflated on its own (level
/// [`GZIP_LEVEL`], sync-flushed to a byte boundary) and concatenated in order into one gzip member
/// that ends with an empty final block. The bytes depend only on the input, never on the number of
/// threads, their timing or the index. Because cuts follow the content, an edit changes only the
/// chunks around it; with a [`BlockIndex`] every other chunk is copied from an earlier blob instead
/// of deflated again. The header has no name and mtime 0, OS 255. Memory is bounded by a few chunks
/// per thread.
pub struct ParGzEncoder<W: Write> {
    out: W,
    threads: usize,
    buf: Vec<u8>,
    crc: flate2::Crc,
    index: Option<Arc<dyn BlockIndex>>,
    pool: Option<Pool>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, Compressed>,
    /// Chunk buffers to reuse: input (`buf`'s next) and output (deflated bytes).
    spare_in: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    /// Bytes written to `out` so far (header included): the offset of the next chunk.
    written: u64,
    records: Vec<BlockRecord>,
}

impl<W: Write> ParGzEncoder<W> {
    /// An encoder using up to `threads` compression threads (1 compresses inline).
    pub fn new(out: W, threads: usize) -> ParGzEncoder<W> {
        ParGzEncoder::with_index(out, threads, None)
    }

    /// [`ParGzEncoder::new`] that reuses chunks found in `index`.
    pub fn with_index(out: W, threads: usize, index: Option<Arc<dyn BlockIndex>>) -> ParGzEncoder<W> {
        if let Some(t) = index.as_ref().and_then(|ix| ix.shared()) {
            t.enter();
        }
        ParGzEncoder {
            out,
            threads: threads.max(1),
            buf: Vec::with_capacity(CHUNK_MAX),
            crc: flate2::Crc::new(),
            index,
            pool: None,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            spare_in: Vec::new(),
            spare_out: Vec::new(),
            written: 0,
            records: Vec::new(),
        }
    }

    /// Writes `bytes` after the gzip header (written before the first bytes).
    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.header()?;
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn header(&mut self) -> io::Result<()> {
        if self.written == 0 {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown): nothing host-specific
            const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
            self.out.write_all(&HEADER)?;
            self.written = HEADER.len() as u64;
        }
        Ok(())
    }

    fn emit_chunk(&mut self, c: Compressed) -> io::Result<()> {
        self.header()?; // the chunk's offset counts the header
        if let Some((raw, raw_len)) = c.raw {
            self.records.push(BlockRecord {
                raw,
                raw_len,
                offset: self.written,
                len: c.bytes.len() as u64,
                zhash: c.zhash.unwrap_or_else(|| *blake3::hash(&c.bytes).as_bytes()),
            });
        }
        self.crc.combine(&c.crc);
        self.emit(&c.bytes)?;
        if self.spare_out.len() < self.spare_max() {
            self.spare_out.push(c.bytes);
        }
        Ok(())
    }

    fn spare_max(&self) -> usize {
        self.threads * SPARE_PER_THREAD + 1
    }

    fn recycle_in(&mut self, mut data: Vec<u8>) {
        if self.spare_in.len() < self.spare_max() {
            data.clear();
            self.spare_in.push(data);
        }
    }

    /// Compresses the first `n` buffered bytes as one chunk.
    fn dispatch(&mut self, n: usize) -> io::Result<()> {
        let mut next = self.spare_in.pop().unwrap_or_default();
        next.reserve(CHUNK_MAX);
        next.extend_from_slice(&self.buf[n..]);
        self.buf.truncate(n);
        let data = std::mem::replace(&mut self.buf, next);
        let out = self.spare_out.pop().unwrap_or_default();
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.threads == 1 {
            let c = compress_chunk(&data, self.index.as_deref(), out)?;
            self.recycle_in(data);
            self.next_out += 1;
            return self.emit_chunk(c);
        }
        if self.pool.is_none() {
            self.pool = Some(spawn_pool(self.threads, self.index.clone())?);
        }
        let in_flight_max = (self.threads * 2) as u64;
        self.pool
            .as_ref()
            .expect("pool")
            .jobs
            .as_ref()
            .expect("open")
            .send((seq, data, out))
            .map_err(|_| io::Error::other("gzip worker died"))?;
        while self.next_seq - self.next_out > in_flight_max {
            self.collect_one()?;
        }
        // write whatever is ready without waiting
        loop {
            let r = self.pool.as_ref().expect("pool").done.try_recv();
            match r {
                Ok((s, c, data)) => {
                    self.recycle_in(data);
                    self.pending.insert(s, c?);
                    self.write_ready()?;
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (s, c, data) =
            self.pool.as_ref().expect("pool").done.recv().map_err(|_| io::Error::other("gzip worker died"))?;
        self.recycle_in(data);
        self.pending.insert(s, c?);
        self.write_ready()
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(c) = self.pending.remove(&self.next_out) {
            self.emit_chunk(c)?;
            self.next_out += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes the final block and trailer, returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.finish_with_records().map(|(w, _)| w)
    }

    /// [`ParGzEncoder::finish`], also returning where each chunk went (see [`BlockIndex`]).
    pub fn finish_with_records(mut self) -> io::Result<(W, Vec<BlockRecord>)> {
        while !self.buf.is_empty() {
            let n = cut(&self.buf);
            self.dispatch(n)?;
        }
        while self.next_out < self.next_seq {
            self.collect_one()?;
        }
        self.pool = None;
        // An empty final block: every chunk, the last one too, stays reusable.
        let last = deflate_block(&[], true)?;
        self.emit(&last)?;
        let trailer = [self.crc.sum().to_le_bytes(), self.crc.amount().to_le_bytes()].concat();
        self.emit(&trailer)?;
        self.out.flush()?;
        let records = std::mem::take(&mut self.records);
        Ok((self.out, records))
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK_MAX - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == CHUNK_MAX {
            // A full window: the cut is where it would be with the whole stream at hand.
            let cut = cut(&self.buf);
            self.dispatch(cut)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn spawn_pool(threads: usize, index: Option<Arc<dyn BlockIndex>>) -> io::Result<Pool> {
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(threads);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let handles = (0..threads)
        .map(|_| {
            let rx = Arc::clone(&jobs_rx);
            let tx = done_tx.clone();
            let index = index.clone();
            // Named, so a profile tells compression from the tar producer.
            std::thread::Builder::new().name("cbuild-gzip".into()).spawn(move || loop {
                let job = match rx.lock() {
                    Ok(g) => g.recv(),
                    Err(_) => return,
                };
                let Ok((seq, data, out)) = job else { return };
                let c = compress_chunk(&data, index.as_deref(), out);
                if tx.send((seq, c, data)).is_err() {
                    return;
                }
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Pool { jobs: Some(jobs_tx), done: done_rx, handles })
}

/// Raw deflate of one block: sync-flushed (byte aligned, not final) or finished (final block).
fn deflate_block(data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    deflate_into(data, last, Vec::new())
}

/// [`deflate_block`] into `out` (cleared first; a reused buffer of any capacity).
///
/// The bytes must not depend on that capacity. zlib's sync flush does: when a flush ends exactly
/// at the end of the output space, the next call (which the caller must make) emits a second,
/// empty flush block (zlib.h: "make sure that avail_out is greater than six to avoid repeated
/// flush markers due to avail_out == 0 on return"). So the output window of every call is a
/// function of the input alone: the windows a fresh `Vec` of `data.len() / 2 + 1024` bytes, grown
/// as `Vec::reserve` grows it, gave before buffers were reused (the same bytes as every earlier
/// cbuild), whatever the capacity of `out`.
fn deflate_into(data: &[u8], last: bool, mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    out.clear();
    let mut window_end = data.len() / 2 + 1024;
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        if window_end - out.len() < 1024 {
            // `Vec::reserve(cap.max(64 KiB))`'s amortized growth: twice the capacity or what is
            // asked for, whichever is more.
            window_end = (window_end * 2).max(out.len() + window_end.max(64 * 1024));
        }
        let len = out.len();
        out.resize(window_end, 0);
        let (in_before, out_before) = (c.total_in(), c.total_out());
        let status = c.compress(&data[in_before as usize..], &mut out[len..], flush).map_err(io::Error::other);
        out.truncate(len + (c.total_out() - out_before) as usize);
        let status = status?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            _ if !last && all_in && out.len() < window_end => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        // compressible but not trivial
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 1;
        while v.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let word = ["alpha ", "beta ", "gamma ", "delta\n", "layer ", "tar "][(x >> 16) as usize % 6];
            v.extend_from_slice(word.as_bytes());
            if x.is_multiple_of(7) {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v.truncate(n);
        v
    }

    fn pargz(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut e = ParGzEncoder::new(Vec::new(), threads);
        for c in data.chunks(chunk.max(1)) {
            e.write_all(c).unwrap();
        }
        e.finish().unwrap()
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn gzip_round_trips_at_block_edges() {
        for n in [0, 1, 100, CHUNK_MAX - 1, CHUNK_MAX, CHUNK_MAX + 1, 3 * CHUNK_MAX + 17] {
            let d = sample(n);
            let z = pargz(&d, 2, 70_000);
            assert_eq!(&z[..4], &[0x1f, 0x8b, 8, 0]);
            assert_eq!(gunzip(&z), d, "n={n}");
        }
    }

    #[test]
    fn gzip_is_independent_of_threads_and_write_sizes() {
        let d = sample(5 * CHUNK_MAX + 12_345);
        let one = pargz(&d, 1, 4096);
        assert_eq!(one, pargz(&d, 2, 1 << 20));
        assert_eq!(one, pargz(&d, 4, 333));
        assert!(one.len() < d.len() / 2);
    }

    /// An in-memory [`BlockIndex`] over one earlier output, counting lookups and hits; with
    /// `table`, its encoders share chunks in flight.
    #[derive(Default)]
    struct MemIndex {
        blob: Mutex<Vec<u8>>,
        rows: Mutex<Vec<BlockRecord>>,
        lookups: std::sync::atomic::AtomicUsize,
        hits: std::sync::atomic::AtomicUsize,
        table: Option<SharedChunks>,
    }

    impl BlockIndex for MemIndex {
        fn get(&self, raw: &[u8; 32], raw_len: u64) -> Option<(Vec<u8>, [u8; 32])> {
            use std::sync::atomic::Ordering::SeqCst;
            self.lookups.fetch_add(1, SeqCst);
            let rows = self.rows.lock().unwrap();
            let r = rows.iter().find(|r| &r.raw == raw && r.raw_len == raw_len)?;
            let b = self.blob.lock().unwrap()[r.offset as usize..(r.offset + r.len) as usize].to_vec();
            (blake3::hash(&b).as_bytes() == &r.zhash).then(|| {
                self.hits.fetch_add(1, SeqCst);
                (b, r.zhash)
            })
        }
        fn put(&self, _: &crate::model::digest::Digest, _: &[BlockRecord]) {}
        fn shared(&self) -> Option<&SharedChunks> {
            self.table.as_ref()
        }
    }

    #[test]
    fn encoders_running_at_once_deflate_a_common_chunk_once_and_write_the_same_bytes() {
        let data = sample(12 * CHUNK_AVG);
        let alone = pargz(&data, 2, 100_000);
        for threads in [1, 2, 3] {
            let ix = Arc::new(MemIndex { table: Some(SharedChunks::default()), ..Default::default() });
            // Both encoders exist before either writes (as two layers written side by side).
            let index: Arc<dyn BlockIndex> = ix.clone();
            let encoders: Vec<_> =
                (0..2).map(|_| ParGzEncoder::with_index(Vec::new(), threads, Some(index.clone()))).collect();
            let outs: Vec<(Vec<u8>, Vec<BlockRecord>)> = std::thread::scope(|s| {
                let hs: Vec<_> = encoders
                    .into_iter()
                    .map(|mut e| {
                        let data = &data;
                        s.spawn(move || {
                            for c in data.chunks(100_000) {
                                e.write_all(c).unwrap();
                            }
                            e.finish_with_records().unwrap()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (out, _) in &outs {
                assert_eq!(out, &alone, "{threads} threads: the same bytes as an encoder on its own");
            }
            let chunks = outs[0].1.len();
            assert!(chunks >= 6, "{chunks} chunks");
            let t = ix.table.as_ref().unwrap();
            assert_eq!(t.deflated(), chunks, "{threads} threads: each common chunk deflated once, not twice");
            // What is kept for later encoders is bounded.
            let st = t.lock();
            assert!(st.kept_bytes > 0 && st.kept_bytes <= SharedChunks::KEEP_BYTES, "{}", st.kept_bytes);
            assert_eq!(st.chunks.len(), chunks);
        }
    }

    #[test]
    fn a_single_encoder_keeps_nothing_a_failed_owner_releases_its_waiters_and_memory_is_bounded() {
        let t = SharedChunks::default();
        t.enter();
        let Found::Mine(c) = t.claim(([1; 32], 10)) else { panic!("first claim") };
        c.publish(b"deflated");
        assert!(t.lock().chunks.is_empty(), "one encoder: published bytes are not kept");
        t.enter();
        let Found::Mine(c) = t.claim(([2; 32], 10)) else { panic!("first claim") };
        let Found::Theirs(slot) = t.claim(([2; 32], 10)) else { panic!("second claim waits") };
        drop(c); // the owner failed
        assert_eq!(slot.wait(), None, "the waiter deflates it itself");
        let Found::Mine(c) = t.claim(([2; 32], 10)) else { panic!("claimable again") };
        c.publish(b"bytes");
        let Found::Theirs(slot) = t.claim(([2; 32], 10)) else { panic!("kept") };
        assert_eq!(slot.wait().as_deref().map(Vec::as_slice), Some(&b"bytes"[..]));
        // Past the bound the oldest kept chunks go.
        let big = vec![7u8; SharedChunks::KEEP_BYTES / 3 + 1];
        for i in 0..4u8 {
            let Found::Mine(c) = t.claim(([100 + i; 32], 1)) else { panic!("new chunk") };
            c.publish(&big);
        }
        let st = t.lock();
        assert!(st.kept_bytes <= SharedChunks::KEEP_BYTES, "{}", st.kept_bytes);
        assert!(!st.chunks.contains_key(&([2; 32], 10)) && !st.chunks.contains_key(&([100; 32], 1)), "oldest dropped");
        assert!(st.chunks.contains_key(&([103; 32], 1)), "newest kept");
    }

    fn pargz_indexed(data: &[u8], threads: usize, ix: &Arc<MemIndex>) -> (Vec<u8>, Vec<BlockRecord>) {
        let index: Arc<dyn BlockIndex> = ix.clone();
        let mut e = ParGzEncoder::with_index(Vec::new(), threads, Some(index));
        for c in data.chunks(100_000) {
            e.write_all(c).unwrap();
        }
        e.finish_with_records().unwrap()
    }

    #[test]
    fn an_edit_recompresses_only_the_chunks_around_it() {
        use std::sync::atomic::Ordering::SeqCst;
        let mut a = sample(9 * CHUNK_AVG);
        // Incompressible stretches too, like the binaries in a real layer.
        let mut x: u64 = 7;
        for b in &mut a[3 * CHUNK_AVG..4 * CHUNK_AVG] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let ix = Arc::new(MemIndex::default());
        let (za, rows) = pargz_indexed(&a, 2, &ix);
        assert_eq!(za, pargz(&a, 1, 4096), "the index must not change the bytes");
        assert!(rows.len() >= 6, "{} chunks for {} bytes", rows.len(), a.len());
        assert!(rows.iter().all(|r| r.raw_len as usize >= CHUNK_MIN || r.offset + r.len + 20 > za.len() as u64));
        *ix.blob.lock().unwrap() = za;
        *ix.rows.lock().unwrap() = rows.clone();
        ix.lookups.store(0, SeqCst);

        // Insert 11 bytes in the middle: every cut after the edit moves by 11 bytes.
        let mut b = a.clone();
        b.splice(5 * CHUNK_AVG..5 * CHUNK_AVG, *b"edited here");
        let (zb, _) = pargz_indexed(&b, 2, &ix);
        assert_eq!(zb, pargz(&b, 2, 1 << 16), "reused chunks must give the bytes a fresh encoder gives");
        assert_eq!(gunzip(&zb), b);
        let (lookups, hits) = (ix.lookups.load(SeqCst), ix.hits.load(SeqCst));
        assert!(lookups - hits <= 2, "{} of {lookups} chunks deflated again after an 11-byte edit", lookups - hits);

        // A damaged stored chunk is a miss, not wrong output.
        let r = &rows[0];
        ix.blob.lock().unwrap()[r.offset as usize + 1] ^= 0xff;
        let (zc, _) = pargz_indexed(&b, 2, &ix);
        assert_eq!(zc, zb);
    }

    #[test]
    fn gzip_is_readable_by_system_gzip() {
        let d = sample(2 * CHUNK_MAX + 5);
        let z = pargz(&d, 2, 1 << 16);
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.gz");
        std::fs::write(&p, &z).unwrap();
        match std::process::Command::new("gzip").arg("-t").arg(&p).status() {
            Ok(s) => assert!(s.success()),
            Err(_) => eprintln!("gzip not installed; skipped"),
        }
    }

    /// Partly compressible bytes (xorshift), where a sync flush can end exactly at the end of a
    /// window.
    fn mixed(n: usize) -> Vec<u8> {
        let mut x: u64 = 7;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(3) {
                    (x >> 20) as u8
                } else {
                    b'a' + (x % 5) as u8
                }
            })
            .collect()
    }

    /// What `deflate_into` wrote before it took reused buffers: a fresh `Vec` of
    /// `len / 2 + 1024` bytes, grown by `reserve`; the bytes every pinned digest was made with.
    fn deflate_fresh_vec(data: &[u8]) -> Vec<u8> {
        use flate2::{Compress, FlushCompress, Status};
        let mut c = Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
        let mut out = Vec::with_capacity(data.len() / 2 + 1024);
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(64 * 1024));
            }
            let consumed = c.total_in() as usize;
            let status = c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync).unwrap();
            let all_in = c.total_in() as usize == data.len();
            if status == Status::StreamEnd || (all_in && out.len() < out.capacity()) {
                return out;
            }
        }
    }

    /// A reused output buffer's capacity must not change the bytes. CI found one layer of the
    /// Debian example's run image with two digests from two empty caches: a sync flush that ended
    /// exactly at the end of a reused buffer made zlib write a second, empty flush block (5 bytes),
    /// and which buffer a chunk got depended on thread timing. 20,000 of these bytes deflate to
    /// 13,924 bytes; a buffer of capacity 13,920 gave 13,929 before the fix.
    #[test]
    fn deflate_bytes_do_not_depend_on_the_reused_buffer() {
        for n in [0, 1, 1000, 20_000, 70_000, 300_000] {
            let data = mixed(n);
            let want = deflate_fresh_vec(&data);
            let exact = want.len();
            let caps =
                [0, 1, 64, n / 2 + 1024, exact.saturating_sub(8), exact - 4, exact - 1, exact, exact + 1, 4 << 20];
            let around = (exact.saturating_sub(40)..exact + 40).collect::<Vec<_>>();
            for cap in caps.into_iter().chain(around) {
                let mut reused = Vec::with_capacity(cap);
                reused.extend(std::iter::repeat_n(0xAA, cap / 3));
                let got = deflate_into(&data, false, reused).unwrap();
                assert!(got == want, "{n} bytes into a buffer of capacity {cap}: {} bytes, want {exact}", got.len());
            }
        }
        // The whole encoder, whose threads hand buffers around: the same bytes as one thread.
        let d = mixed(3 * CHUNK_MAX);
        let one = pargz(&d, 1, 1 << 16);
        for _ in 0..3 {
            assert!(pargz(&d, 2, 1 << 16) == one);
        }
        assert_eq!(gunzip(&one), d);
    }

    #[test]
    fn zstd_is_independent_of_threads() {
        let d = sample(12 << 20);
        let enc = |t: u32| {
            let mut e = zstd_encoder(Vec::new(), t).unwrap();
            e.write_all(&d).unwrap();
            e.finish().unwrap()
        };
        let a = enc(1);
        assert_eq!(a, enc(2));
        assert_eq!(zstd::decode_all(&a[..]).unwrap(), d);
    }

    #[test]
    fn detects_and_decodes() {
        let d = sample(1000);
        let gz = pargz(&d, 1, 100);
        let zs = zstd::encode_all(&d[..], 3).unwrap();
        for (blob, want) in [(&gz, Compression::Gzip), (&zs, Compression::Zstd), (&d, Compression::None)] {
            let (c, mut r) = decoder(io::BufReader::new(&blob[..])).unwrap();
            assert_eq!(c, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, d);
        }
        assert_eq!(detect(b""), Compression::None);
    }
}
