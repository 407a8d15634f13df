//! Where the chunks of gzip layers are (`gzip_chunks`): for each chunk the layer encoder wrote, the
//! blake3 of its uncompressed bytes → the blob and byte range holding its deflate bytes, and their
//! blake3. A later layer that contains the same chunk copies those bytes instead of deflating
//! again (see `oci::compress::BlockIndex`), so editing one file of a big layer costs one chunk of
//! compression. No bytes are stored twice: rows point into blobs the CAS already holds, and go with
//! them (`gc`). A row whose bytes no longer match is a miss, never wrong output.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};

use super::{Cache, Result};
use crate::model::digest::Digest;
use crate::oci::compress::{BlockIndex, BlockRecord};

/// A chunk larger than this is not looked up (the encoder never makes one; a row claiming one is
/// damaged).
const MAX_CHUNK_BYTES: u64 = 64 << 20;

impl Cache {
    /// The deflate bytes of the chunk `raw` (blake3 of `raw_len` uncompressed bytes) made by
    /// `codec`, read from the blob that holds them and checked against their recorded blake3.
    pub fn gzip_chunk(&self, codec: &str, raw: &[u8; 32], raw_len: u64) -> Result<Option<(Vec<u8>, [u8; 32])>> {
        let row = self.db.read(
            || "reading a gzip chunk location".to_string(),
            |tx| {
                tx.prepare_cached(
                    "SELECT blob, offset, len, zhash FROM gzip_chunks WHERE codec = ?1 AND raw = ?2 AND raw_len = ?3",
                )?
                .query_row(params![codec, &raw[..], raw_len as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, Vec<u8>>(3)?))
                })
                .optional()
            },
        )?;
        let Some((blob, offset, len, zhash)) = row else { return Ok(None) };
        let Ok(digest) = Digest::parse(&blob) else { return Ok(None) };
        if offset < 0 || len <= 0 || len as u64 > MAX_CHUNK_BYTES {
            return Ok(None);
        }
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(self.cas.path(&digest))?;
            f.seek(SeekFrom::Start(offset as u64))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        let Ok(zhash) = <[u8; 32]>::try_from(zhash.as_slice()) else { return Ok(None) };
        Ok(read().ok().filter(|b| blake3::hash(b).as_bytes() == &zhash).map(|b| (b, zhash)))
    }

    /// Records the chunks of the stored gzip blob `blob` (the newest location wins).
    pub fn put_gzip_chunks(&self, codec: &str, blob: &Digest, chunks: &[BlockRecord]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let b = blob.to_string();
        self.db.write(
            || format!("recording {} gzip chunks of `{b}`", chunks.len()),
            |tx| {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO gzip_chunks(codec, raw, raw_len, blob, offset, len, zhash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for c in chunks {
                    st.execute(params![
                        codec,
                        &c.raw[..],
                        c.raw_len as i64,
                        b,
                        c.offset as i64,
                        c.len as i64,
                        &c.zhash[..]
                    ])?;
                }
                Ok(())
            },
        )
    }
}

/// The cache as the gzip encoder's [`BlockIndex`]. Errors are misses: the index only saves work.
pub struct CacheChunkIndex {
    pub cache: Arc<Cache>,
    pub codec: &'static str,
}

impl BlockIndex for CacheChunkIndex {
    fn get(&self, raw: &[u8; 32], raw_len: u64) -> Option<(Vec<u8>, [u8; 32])> {
        self.cache.gzip_chunk(self.codec, raw, raw_len).ok().flatten()
    }
    fn put(&self, blob: &Digest, chunks: &[BlockRecord]) {
        let _ = self.cache.put_gzip_chunks(self.codec, blob, chunks);
    }
    fn shared(&self) -> Option<&crate::oci::compress::SharedChunks> {
        Some(crate::oci::compress::SharedChunks::process())
    }
}
