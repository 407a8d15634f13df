//! Layer blobs: a layer's entries → its uncompressed digest (diff_id) → a compressed blob in a
//! [`BlobDir`]. The same uncompressed layer is never compressed twice: the caller's `known`
//! mapping (the cache's diff_id → blob index) is asked between hashing and compressing.

use std::io::{self, Read, Write};
use std::sync::Arc;

use oci_spec::image::{Descriptor, MediaType};

use super::compress;
pub use super::compress::Compression;
use super::error::{OciError, Result};
use super::tar::{write_prepared, LayerEntries, TarEntry, TarOptions, DEFAULT_MTIME};
use crate::cas::BlobDir;
use crate::model::digest::{BackgroundHashingWriter, Digest, HashingWriter};

/// Options of [`write_layer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// mtime of every entry: [`DEFAULT_MTIME`] (1980-01-01) or `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
    /// Look for an earlier compression of the same tar first: a pre-pass hashes the tar (sha256)
    /// and asks `known`. Worth it when the content is often unchanged (a buildpack's restored
    /// layer); `false` when it is expected new (a `layer` action runs only when a file changed):
    /// the tar is then read and hashed once, while compressing (issue 23: ≈ 30 % of a one-file
    /// edit's layer time). The blob is the same either way.
    pub probe: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions { compression: Compression::Gzip, mtime: DEFAULT_MTIME, probe: true }
    }
}

/// A layer stored in a [`BlobDir`]: its uncompressed digest (the config's diff_id), the stored blob's
/// digest and size (the manifest's descriptor) and media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub compression: Compression,
}

impl LayerBlob {
    /// The manifest descriptor of this layer.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(MediaType::from(self.media_type.as_str()), self.size, super::digest::spec_digest(&self.digest))
    }
}

/// Writes a layer of `entries` into `blobs`. With [`LayerOptions::probe`], first the tar is
/// streamed into sha256 only (the diff_id); if `known(diff_id, compression)` names a blob that
/// `blobs` holds, that blob is returned untouched; otherwise the tar is streamed again through the
/// compressor into `blobs` (and its diff_id re-checked: a source file modified in between is an
/// error). Without, the tar is streamed once through the compressor. Memory does not grow with
/// the layer size.
pub fn write_layer(
    entries: Vec<TarEntry>,
    opts: &LayerOptions,
    blobs: &BlobDir,
    known: &dyn Fn(&Digest, Compression) -> Option<LayerBlob>,
) -> Result<LayerBlob> {
    let entries = LayerEntries::new(entries)?;
    write_prepared_layer(&entries, opts, blobs, known, None)
}

/// [`write_layer`] for entries that are already validated and ordered; gzip chunks compressed
/// before are copied from `index` (same bytes, see [`compress::BlockIndex`]) and this layer's
/// chunks are recorded there.
pub fn write_prepared_layer(
    entries: &LayerEntries,
    opts: &LayerOptions,
    blobs: &BlobDir,
    known: &dyn Fn(&Digest, Compression) -> Option<LayerBlob>,
    index: Option<Arc<dyn compress::BlockIndex>>,
) -> Result<LayerBlob> {
    let tar_opts = TarOptions { mtime: opts.mtime };
    if opts.compression != Compression::None && opts.probe {
        let (_, diff_id, _) = write_prepared(entries, &tar_opts, HashingWriter::new(io::sink()))?.0.finish();
        if let Some(hit) = reuse(known, &diff_id, opts.compression, blobs) {
            return Ok(hit);
        }
        let blob = store(blobs, opts.compression, index, |w| write_prepared(entries, &tar_opts, w).map(|_| ()))?;
        if blob.diff_id != diff_id {
            return Err(OciError::LayerChanged { first: diff_id, second: blob.diff_id });
        }
        return Ok(blob);
    }
    let index = index.filter(|_| opts.compression != Compression::None);
    store(blobs, opts.compression, index, |w| write_prepared(entries, &tar_opts, w).map(|_| ()))
}

fn reuse(
    known: &dyn Fn(&Digest, Compression) -> Option<LayerBlob>,
    diff_id: &Digest,
    c: Compression,
    blobs: &BlobDir,
) -> Option<LayerBlob> {
    let hit = known(diff_id, c)?;
    let ok = &hit.diff_id == diff_id && hit.compression == c && blobs.size(&hit.digest).ok() == Some(hit.size);
    ok.then_some(hit)
}

/// Compresses an existing uncompressed layer tar read from `tar` into `blobs` (one pass).
pub fn compress_tar(tar: impl Read, compression: Compression, blobs: &BlobDir) -> Result<LayerBlob> {
    let mut tar = tar;
    store(blobs, compression, None, |w| {
        io::copy(&mut tar, w).map_err(|source| OciError::LayerWrite { subject: "uncompressed tar".into(), source })?;
        Ok(())
    })
}

/// Streams `fill`'s tar through the compressor into `blobs`, hashing the uncompressed bytes too.
fn store(
    blobs: &BlobDir,
    c: Compression,
    index: Option<Arc<dyn compress::BlockIndex>>,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<LayerBlob> {
    let mut diff = None;
    let mut chunks = Vec::new();
    let (digest, size) = blobs.put_stream::<OciError>(|w| {
        let enc = compress::indexed_encoder(c, w, index.clone())
            .map_err(|source| OciError::LayerWrite { subject: "compressor".into(), source })?;
        let mut hw = BackgroundHashingWriter::new(enc);
        fill(&mut hw)?;
        let (enc, d, _) =
            hw.finish().map_err(|source| OciError::LayerWrite { subject: "uncompressed tar".into(), source })?;
        chunks = enc.finish_box().map_err(|source| OciError::LayerWrite { subject: format!("{d}"), source })?;
        diff = Some(d);
        Ok(())
    })?;
    if let Some(ix) = &index {
        ix.put(&digest, &chunks);
    }
    let diff_id = diff.expect("put_stream ran the closure");
    Ok(LayerBlob { diff_id, digest, size, media_type: c.media_type().to_string(), compression: c })
}

/// The diff_id of a stored layer blob: the sha256 of its uncompressed bytes (decompressed by magic).
pub fn diff_id_of_blob(blobs: &BlobDir, digest: &Digest) -> Result<(Digest, Compression)> {
    let f = blobs.open_blob(digest)?;
    let path = blobs.path(digest);
    let (c, r) = compress::decoder(io::BufReader::new(f)).map_err(super::error::io_err(&path))?;
    let (d, _) = Digest::of_reader(r).map_err(|source| OciError::TarRead { subject: digest.to_string(), source })?;
    Ok((d, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn entries(dir: &std::path::Path, content: &[u8]) -> Vec<TarEntry> {
        let f = dir.join("src.txt");
        std::fs::write(&f, content).unwrap();
        vec![TarEntry::file("app/a.txt", &f, 0o644), TarEntry::symlink("app/b", "a.txt")]
    }

    #[test]
    fn media_types_round_trip() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            assert_eq!(Compression::from_media_type(c.media_type()), Some(c));
        }
        assert_eq!(Compression::Gzip.media_type(), "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(Compression::Zstd.media_type(), "application/vnd.oci.image.layer.v1.tar+zstd");
        assert_eq!(Compression::None.media_type(), "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type("application/vnd.oci.image.config.v1+json"), None);
    }

    #[test]
    fn writes_each_compression_with_right_diff_id() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("blobs")).unwrap();
        let es = entries(t.path(), b"content");
        let (tar, _) = crate::oci::tar::write_tar(es.clone(), &TarOptions::default(), Vec::new()).unwrap();
        let want = Digest::of_bytes(&tar);
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let lb =
                write_layer(es.clone(), &LayerOptions { compression: c, ..Default::default() }, &blobs, &|_, _| None)
                    .unwrap();
            assert_eq!(lb.diff_id, want, "{c:?}");
            assert_eq!(lb.size, blobs.size(&lb.digest).unwrap());
            blobs.verify(&lb.digest).unwrap();
            assert_eq!(diff_id_of_blob(&blobs, &lb.digest).unwrap(), (want.clone(), c));
            assert_eq!(lb.descriptor().size(), lb.size);
            if c == Compression::None {
                assert_eq!(lb.digest, lb.diff_id);
            }
        }
    }

    #[test]
    fn is_reproducible_across_blob_dirs() {
        let t = tempfile::tempdir().unwrap();
        let es = entries(t.path(), b"same");
        let a =
            write_layer(es.clone(), &LayerOptions::default(), &BlobDir::open(t.path().join("a")).unwrap(), &|_, _| {
                None
            })
            .unwrap();
        let b = write_layer(es, &LayerOptions::default(), &BlobDir::open(t.path().join("b")).unwrap(), &|_, _| None)
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn reuses_a_known_blob_without_compressing() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("blobs")).unwrap();
        let es = entries(t.path(), b"reuse me");
        let first = write_layer(es.clone(), &LayerOptions::default(), &blobs, &|_, _| None).unwrap();
        let asked = Cell::new(0);
        // a fake "known" blob: if it is returned, nothing was compressed
        let fake_digest = blobs.put_bytes(b"pretend compressed").unwrap();
        let fake = LayerBlob { digest: fake_digest.clone(), size: 18, ..first.clone() };
        let got = write_layer(es.clone(), &LayerOptions::default(), &blobs, &|d, c| {
            asked.set(asked.get() + 1);
            assert_eq!((d, c), (&first.diff_id, Compression::Gzip));
            Some(fake.clone())
        })
        .unwrap();
        assert_eq!(asked.get(), 1);
        assert_eq!(got.digest, fake_digest);
        // a known blob that is missing from the dir, or of another size, is not trusted
        std::fs::remove_file(blobs.path(&fake_digest)).unwrap();
        let got = write_layer(es, &LayerOptions::default(), &blobs, &|_, _| Some(fake.clone())).unwrap();
        assert_eq!(got, first);
    }

    #[test]
    fn compress_tar_matches_write_layer() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("blobs")).unwrap();
        let es = entries(t.path(), b"x");
        let (tar, _) = crate::oci::tar::write_tar(es.clone(), &TarOptions::default(), Vec::new()).unwrap();
        for c in [Compression::Gzip, Compression::Zstd] {
            let a = compress_tar(&tar[..], c, &blobs).unwrap();
            let b =
                write_layer(es.clone(), &LayerOptions { compression: c, ..Default::default() }, &blobs, &|_, _| None)
                    .unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn multi_block_layers_use_the_parallel_path_and_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("blobs")).unwrap();
        let f = t.path().join("big");
        let data: Vec<u8> =
            (0..(3 * compress::CHUNK_MAX + 777) as u32).map(|i| (i % 251) as u8 ^ (i >> 13) as u8).collect();
        std::fs::write(&f, &data).unwrap();
        let es = vec![TarEntry::file("big", &f, 0o644)];
        let (tar, _) = crate::oci::tar::write_tar(es.clone(), &TarOptions::default(), Vec::new()).unwrap();
        for c in [Compression::Gzip, Compression::Zstd] {
            let lb =
                write_layer(es.clone(), &LayerOptions { compression: c, ..Default::default() }, &blobs, &|_, _| None)
                    .unwrap();
            assert_eq!(lb.diff_id, Digest::of_bytes(&tar));
            assert_eq!(diff_id_of_blob(&blobs, &lb.digest).unwrap().0, lb.diff_id);
            assert!(lb.size < tar.len() as u64);
        }
    }

    #[test]
    fn bad_entries_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path()).unwrap();
        let err = write_layer(vec![TarEntry::dir("../x", 0o755)], &LayerOptions::default(), &blobs, &|_, _| None)
            .unwrap_err();
        assert!(err.to_string().contains("`../x`"), "{err}");
    }
}
