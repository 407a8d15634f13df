//! Deterministic, streaming layer compression and detection: a pigz-style parallel gzip encoder
//! (fixed level and block size, output independent of the thread count), multithreaded zstd with
//! fixed parameters, and magic-number detection for decompression.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::layer::Compression;

/// gzip level of every layer cbuild writes (changing it changes every layer digest).
pub const GZIP_LEVEL: u32 = 6;
/// zstd level of every layer cbuild writes (changing it changes every layer digest).
pub const ZSTD_LEVEL: i32 = 3;
/// Uncompressed bytes per independently deflated gzip block.
pub const GZIP_BLOCK: usize = 1 << 20;

fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8)
}

/// A compressing writer that must be finished explicitly.
pub trait FinishWrite: Write {
    /// Flushes the trailer; the stream is complete only after this.
    fn finish_box(self: Box<Self>) -> io::Result<()>;
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
    fn finish_box(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite for ParGzEncoder<W> {
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        (*self).finish().map(|_| ())
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
    fn finish_box(self: Box<Self>) -> io::Result<()> {
        self.0.finish().map(|_| ())
    }
}

/// A deterministic compressing writer over `out` for `c`.
pub fn encoder<'a, W: Write + 'a>(c: Compression, out: W) -> io::Result<Box<dyn FinishWrite + 'a>> {
    Ok(match c {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(ParGzEncoder::new(out, workers())),
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

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

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

/// A parallel gzip writer in the style of `pigz --independent`: the input is cut into
/// [`GZIP_BLOCK`]-byte blocks, each deflated on its own (level [`GZIP_LEVEL`], sync-flushed to a byte
/// boundary) and concatenated in order into one gzip member. The bytes depend only on the input,
/// never on the number of threads or their timing. The header has no name and mtime 0, OS 255.
/// Memory is bounded by a few blocks per thread.
pub struct ParGzEncoder<W: Write> {
    out: W,
    threads: usize,
    block: Vec<u8>,
    crc: flate2::Crc,
    pool: Option<Pool>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    header_done: bool,
}

impl<W: Write> ParGzEncoder<W> {
    /// An encoder using up to `threads` compression threads (1 compresses inline).
    pub fn new(out: W, threads: usize) -> ParGzEncoder<W> {
        ParGzEncoder {
            out,
            threads: threads.max(1),
            block: Vec::with_capacity(GZIP_BLOCK),
            crc: flate2::Crc::new(),
            pool: None,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown): nothing host-specific
            self.out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
            self.header_done = true;
        }
        Ok(())
    }

    fn dispatch(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK));
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.threads == 1 {
            let c = deflate_block(&data, false)?;
            self.header()?;
            self.next_out += 1;
            return self.out.write_all(&c);
        }
        if self.pool.is_none() {
            self.pool = Some(spawn_pool(self.threads));
        }
        let in_flight_max = (self.threads * 2) as u64;
        self.pool
            .as_ref()
            .expect("pool")
            .jobs
            .as_ref()
            .expect("open")
            .send((seq, data))
            .map_err(|_| io::Error::other("gzip worker died"))?;
        while self.next_seq - self.next_out > in_flight_max {
            self.collect_one()?;
        }
        // write whatever is ready without waiting
        loop {
            let r = self.pool.as_ref().expect("pool").done.try_recv();
            match r {
                Ok((s, c)) => {
                    self.pending.insert(s, c?);
                    self.write_ready()?;
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (s, c) = self.pool.as_ref().expect("pool").done.recv().map_err(|_| io::Error::other("gzip worker died"))?;
        self.pending.insert(s, c?);
        self.write_ready()
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(c) = self.pending.remove(&self.next_out) {
            self.header()?;
            self.out.write_all(&c)?;
            self.next_out += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        while self.next_out < self.next_seq {
            self.collect_one()?;
        }
        self.pool = None;
        let last = std::mem::take(&mut self.block);
        let c = deflate_block(&last, true)?;
        self.header()?;
        self.out.write_all(&c)?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZIP_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if self.block.len() == GZIP_BLOCK {
            self.dispatch()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn spawn_pool(threads: usize) -> Pool {
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(threads);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let handles = (0..threads)
        .map(|_| {
            let rx = Arc::clone(&jobs_rx);
            let tx = done_tx.clone();
            std::thread::spawn(move || loop {
                let job = match rx.lock() {
                    Ok(g) => g.recv(),
                    Err(_) => return,
                };
                let Ok((seq, data)) = job else { return };
                if tx.send((seq, deflate_block(&data, false))).is_err() {
                    return;
                }
            })
        })
        .collect();
    Pool { jobs: Some(jobs_tx), done: done_rx, handles }
}

/// Raw deflate of one block: sync-flushed (byte aligned, not final) or finished (final block).
fn deflate_block(data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = c.total_in() as usize;
        let status = c.compress_vec(&data[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            _ if !last && all_in && out.len() < out.capacity() => break,
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
        for n in [0, 1, 100, GZIP_BLOCK - 1, GZIP_BLOCK, GZIP_BLOCK + 1, 3 * GZIP_BLOCK + 17] {
            let d = sample(n);
            let z = pargz(&d, 2, 70_000);
            assert_eq!(&z[..4], &[0x1f, 0x8b, 8, 0]);
            assert_eq!(gunzip(&z), d, "n={n}");
        }
    }

    #[test]
    fn gzip_is_independent_of_threads_and_write_sizes() {
        let d = sample(5 * GZIP_BLOCK + 12_345);
        let one = pargz(&d, 1, 4096);
        assert_eq!(one, pargz(&d, 2, 1 << 20));
        assert_eq!(one, pargz(&d, 4, 333));
        assert!(one.len() < d.len() / 2);
    }

    #[test]
    fn gzip_is_readable_by_system_gzip() {
        let d = sample(2 * GZIP_BLOCK + 5);
        let z = pargz(&d, 2, 1 << 16);
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.gz");
        std::fs::write(&p, &z).unwrap();
        match std::process::Command::new("gzip").arg("-t").arg(&p).status() {
            Ok(s) => assert!(s.success()),
            Err(_) => eprintln!("gzip not installed; skipped"),
        }
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
