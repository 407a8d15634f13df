//! Image tarballs: writing a docker-archive (`docker load`, `skopeo docker-archive:`) that is at the
//! same time an OCI archive (like `docker save` ≥ 25), and reading either kind — or a legacy
//! `docker save` tar — into a [`BlobDir`] with every digest verified.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{io_err, OciError, Result};
use super::image::{canonical_json, our_digest, Image};
use super::layer::{diff_id_of_blob, LayerBlob};
use super::layout::{index_json, is_index, parse_index, select_descriptor, Selector, OCI_LAYOUT_FILE};
use super::tar::{TarWriter, DEFAULT_MTIME};
use crate::cas::BlobDir;
use crate::model::digest::Digest;

/// Files of an archive kept in memory (JSON documents) are at most this big.
const MAX_JSON: u64 = 16 << 20;

/// One element of a docker-archive's `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn archive_err(path: &Path, reason: impl Into<String>) -> OciError {
    OciError::Archive { path: path.to_path_buf(), reason: reason.into() }
}

/// Writes `image` as a tar at `path` (atomically: temp file + rename): `manifest.json` for
/// `docker load`/skopeo (Config, RepoTags, Layers pointing at `blobs/sha256/<hex>`), plus
/// `oci-layout` and `index.json`, so the same file is an OCI archive too. Layers stay as stored
/// (compressed); docker ≥ 1.10 and containers/image decompress them by magic. The tar is
/// deterministic. All blobs must be in `blobs`.
pub fn write_docker_archive(path: &Path, image: &Image, blobs: &BlobDir, repo_tags: &[String]) -> Result<()> {
    let result = crate::fs::write_atomic_with(path, |f| {
        let mut w =
            write_docker_archive_to(io::BufWriter::new(f), image, blobs, repo_tags).map_err(io::Error::other)?;
        io::Write::flush(&mut w)
    });
    result.map_err(|e| match e.downcast::<OciError>() {
        Ok(inner) => inner,
        Err(e) => OciError::Io { path: path.to_path_buf(), source: e },
    })
}

/// [`write_docker_archive`] as a stream into `out` (a container engine's `load`, a pipe); returns
/// `out` unflushed. Blobs are copied from `blobs` as they are written: nothing is held in memory
/// but the JSON documents.
pub fn write_docker_archive_to<W: io::Write>(
    out: W,
    image: &Image,
    blobs: &BlobDir,
    repo_tags: &[String],
) -> Result<W> {
    image.write_to(blobs)?;
    let mut wanted: BTreeSet<&Digest> = BTreeSet::new();
    wanted.insert(image.digest());
    wanted.insert(image.config_digest());
    for l in image.layers() {
        wanted.insert(&l.digest);
    }
    for d in &wanted {
        blobs.size(d)?;
    }
    let manifest = vec![DockerManifestEntry {
        config: blob_name(image.config_digest()),
        repo_tags: Some(repo_tags.to_vec()),
        layers: image.layers().iter().map(|l| blob_name(&l.digest)).collect(),
    }];
    let manifest_json = serde_json::to_vec(&manifest).map_err(|source| OciError::Json {
        subject: "manifest.json".into(),
        what: "cannot serialise",
        source,
    })?;
    let index = docker_index_json(image, repo_tags.first().map(String::as_str))?;
    let mut t = TarWriter::new(out, DEFAULT_MTIME);
    t.append_dir("blobs", 0o755, 0, 0)?;
    t.append_dir("blobs/sha256", 0o755, 0, 0)?;
    for d in &wanted {
        let p = blobs.path(d);
        let f = File::open(&p).map_err(io_err(&p))?;
        let size = f.metadata().map_err(io_err(&p))?.len();
        t.append_file(&blob_name(d), 0o644, 0, 0, size, BufReader::new(f), &p)?;
    }
    t.append_bytes("index.json", 0o644, &index)?;
    t.append_bytes("manifest.json", 0o644, &manifest_json)?;
    t.append_bytes("oci-layout", 0o644, OCI_LAYOUT_FILE)?;
    Ok(t.finish()?.0)
}

/// `index.json` of an archive: like a layout's, plus `io.containerd.image.name` (what docker ≥ 25
/// writes) so containerd-based loaders keep the name.
fn docker_index_json(image: &Image, tag: Option<&str>) -> Result<Vec<u8>> {
    let Some(tag) = tag else {
        return index_json(image, None);
    };
    let short = tag.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t).unwrap_or("latest");
    let mut v: serde_json::Value = serde_json::from_slice(&index_json(image, Some(short))?)
        .map_err(|source| OciError::Json { subject: "index.json".into(), what: "cannot serialise", source })?;
    v["manifests"][0]["annotations"]["io.containerd.image.name"] = serde_json::Value::String(tag.to_string());
    canonical_json(&v, "index.json")
}

/// Reads an image from a docker-archive (new or legacy `docker save` layout) or an OCI archive
/// (an OCI layout in a tar) at `path`. Every file is streamed into `blobs`; files named
/// `blobs/sha256/<hex>` must hash to their name, legacy layers must match the config's diff_ids.
/// `sel.ref_name` picks by RepoTag (docker) or ref name (OCI); otherwise the only image.
pub fn read_archive(path: &Path, sel: &Selector, blobs: &BlobDir) -> Result<Image> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut ar = tar::Archive::new(BufReader::with_capacity(1 << 20, f));
    // name -> (digest, size) of every regular file; small JSON documents also in memory
    let mut files: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    let mut json: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let terr = |source| OciError::TarRead { subject: path.display().to_string(), source };
    for entry in ar.entries().map_err(terr)? {
        let mut entry = entry.map_err(terr)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
        let size = entry.size();
        let keep = size <= MAX_JSON
            && (name.ends_with(".json") || name == "oci-layout" || name == "repositories" || name.ends_with("/json"));
        let (d, n) = if keep {
            let mut b = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut b).map_err(terr)?;
            let d = blobs.put_bytes(&b)?;
            json.insert(name.clone(), b);
            (d, size)
        } else {
            blobs.put_stream::<OciError>(|w| {
                io::copy(&mut entry, w)
                    .map_err(|source| OciError::TarRead { subject: format!("{}:{name}", path.display()), source })?;
                Ok(())
            })?
        };
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let want = Digest::from_hex(hex)
                .map_err(|source| OciError::BadDigest { subject: format!("{}:{name}", path.display()), source })?;
            if want != d {
                return Err(OciError::DigestMismatch {
                    subject: format!("{}:{name}", path.display()),
                    expected: want,
                    actual: d,
                });
            }
        }
        files.insert(name, (d, n));
    }
    if let Some(index) = json.get("index.json") {
        return from_oci_index(path, index, &files, sel, blobs);
    }
    let Some(mj) = json.get("manifest.json") else {
        return Err(archive_err(path, "it has neither `index.json` nor `manifest.json`; not an image archive"));
    };
    from_docker_manifest(path, mj, &files, sel, blobs)
}

fn from_oci_index(
    path: &Path,
    index: &[u8],
    files: &BTreeMap<String, (Digest, u64)>,
    sel: &Selector,
    blobs: &BlobDir,
) -> Result<Image> {
    let index = parse_index(index, &format!("{}:index.json", path.display()))?;
    let fail = |reason: String| archive_err(path, reason);
    let mut desc = select_descriptor(index.manifests(), sel, true, &fail)?.clone();
    let present = |d: &Digest| -> Result<()> {
        match files.get(&blob_name(d)) {
            Some((got, _)) if got == d => Ok(()),
            _ => Err(archive_err(path, format!("blob `{d}` is not in the archive"))),
        }
    };
    for _ in 0..8 {
        let d = our_digest(desc.digest(), &format!("{}:index.json", path.display()))?;
        present(&d)?;
        if !is_index(desc.media_type().as_ref()) {
            let img = Image::load(blobs, &d)?;
            for l in img.layers() {
                present(&l.digest)?;
                let size = files[&blob_name(&l.digest)].1;
                if size != l.size {
                    return Err(OciError::SizeMismatch { digest: l.digest.clone(), expected: l.size, actual: size });
                }
            }
            return Ok(img);
        }
        let nested = parse_index(&blobs.read_verified(&d)?, &d.to_string())?;
        desc = select_descriptor(nested.manifests(), sel, false, &fail)?.clone();
    }
    Err(archive_err(path, "indexes nest more than 8 deep"))
}

fn from_docker_manifest(
    path: &Path,
    mj: &[u8],
    files: &BTreeMap<String, (Digest, u64)>,
    sel: &Selector,
    blobs: &BlobDir,
) -> Result<Image> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(mj).map_err(|source| OciError::Json {
        subject: format!("{}:manifest.json", path.display()),
        what: "not a docker-archive manifest",
        source,
    })?;
    let chosen = match &sel.ref_name {
        Some(want) => entries
            .iter()
            .find(|e| e.repo_tags.iter().flatten().any(|t| t == want || t.rsplit_once(':').map(|x| x.1) == Some(want)))
            .ok_or_else(|| archive_err(path, format!("no image is tagged `{want}`")))?,
        None if entries.len() == 1 => &entries[0],
        None => return Err(archive_err(path, format!("it holds {} images; choose one by tag", entries.len()))),
    };
    let file = |name: &str| -> Result<&(Digest, u64)> {
        files
            .get(name.trim_start_matches("./"))
            .ok_or_else(|| archive_err(path, format!("`{name}` is named in manifest.json but missing")))
    };
    let (cd, _) = file(&chosen.config)?;
    let config_bytes = blobs.read_verified(cd)?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).map_err(|source| OciError::Json {
        subject: chosen.config.clone(),
        what: "not an image config",
        source,
    })?;
    let diff_ids: Vec<&str> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if diff_ids.len() != chosen.layers.len() {
        return Err(archive_err(
            path,
            format!("{} layers but {} diff_ids in `{}`", chosen.layers.len(), diff_ids.len(), chosen.config),
        ));
    }
    let mut layers = Vec::new();
    for (name, want) in chosen.layers.iter().zip(diff_ids) {
        let (d, size) = file(name)?;
        let want = Digest::parse(want)
            .map_err(|source| OciError::BadDigest { subject: format!("{} diff_id", chosen.config), source })?;
        let (actual, compression) = diff_id_of_blob(blobs, d)?;
        if actual != want {
            return Err(OciError::DiffIdMismatch { layer: d.clone(), expected: want, actual });
        }
        layers.push(LayerBlob {
            diff_id: actual,
            digest: d.clone(),
            size: *size,
            media_type: compression.media_type().into(),
            compression,
        });
    }
    Image::from_config_bytes(config_bytes, &layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::{append_layer, scratch};
    use crate::oci::layer::{write_layer, Compression, LayerOptions};
    use crate::oci::tar::TarEntry;

    fn image(t: &Path, blobs: &BlobDir, c: Compression) -> Image {
        let f = t.join("f");
        std::fs::write(&f, "hello").unwrap();
        let l = write_layer(
            vec![TarEntry::file("a.txt", &f, 0o644)],
            &LayerOptions { compression: c, ..Default::default() },
            blobs,
            &|_, _| None,
        )
        .unwrap();
        append_layer(&scratch("linux", "amd64").unwrap(), &l, "test").unwrap()
    }

    #[test]
    fn writes_and_reads_back_deterministically() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let img = image(t.path(), &blobs, Compression::Gzip);
        let a = t.path().join("a.tar");
        let b = t.path().join("b.tar");
        let tags = vec!["example.com/app:v1".to_string()];
        write_docker_archive(&a, &img, &blobs, &tags).unwrap();
        write_docker_archive(&b, &img, &blobs, &tags).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let other = BlobDir::open(t.path().join("cas2")).unwrap();
        // as an OCI archive (index.json present)
        assert_eq!(read_archive(&a, &Selector::default(), &other).unwrap(), img);
        assert_eq!(read_archive(&a, &Selector::by_ref("v1"), &other).unwrap(), img);
        assert_eq!(read_archive(&a, &Selector::by_ref("example.com/app:v1"), &other).unwrap(), img);
        let names: Vec<String> = tar::Archive::new(File::open(&a).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.last().unwrap(), "oci-layout");
        assert!(names.contains(&"manifest.json".to_string()));
    }

    /// A legacy `docker save` tar: `<id>/layer.tar`, `<id>.json`, manifest.json, no index.json.
    fn legacy_archive(t: &Path, img: &Image, blobs: &BlobDir, layer_bytes: Option<Vec<u8>>) -> std::path::PathBuf {
        let p = t.join("legacy.tar");
        let mut w = TarWriter::new(File::create(&p).unwrap(), DEFAULT_MTIME);
        let cfg = format!("{}.json", img.config_digest().hex());
        w.append_bytes(&cfg, 0o644, img.config_bytes()).unwrap();
        let mut layers = vec![];
        for (i, l) in img.layers().iter().enumerate() {
            let mut raw = Vec::new();
            crate::oci::compress::decoder(BufReader::new(blobs.open_blob(&l.digest).unwrap()))
                .unwrap()
                .1
                .read_to_end(&mut raw)
                .unwrap();
            let name = format!("layer{i}/layer.tar");
            w.append_bytes(&name, 0o644, layer_bytes.as_deref().unwrap_or(&raw)).unwrap();
            layers.push(name);
        }
        let m = vec![DockerManifestEntry { config: cfg, repo_tags: Some(vec!["app:latest".into()]), layers }];
        w.append_bytes("manifest.json", 0o644, &serde_json::to_vec(&m).unwrap()).unwrap();
        w.finish().unwrap();
        p
    }

    #[test]
    fn reads_a_legacy_docker_save() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let img = image(t.path(), &blobs, Compression::Gzip);
        let p = legacy_archive(t.path(), &img, &blobs, None);
        let other = BlobDir::open(t.path().join("cas2")).unwrap();
        let back = read_archive(&p, &Selector::by_ref("latest"), &other).unwrap();
        assert_eq!(back.config_digest(), img.config_digest());
        assert_eq!(back.diff_ids(), img.diff_ids());
        assert_eq!(back.layers()[0].compression, Compression::None);
        // a layer whose content does not match the config's diff_id is refused, naming it
        let p = legacy_archive(t.path(), &img, &blobs, Some(b"not the layer".to_vec()));
        let err = read_archive(&p, &Selector::default(), &other).unwrap_err();
        assert!(matches!(err, OciError::DiffIdMismatch { .. }), "{err}");
    }

    #[test]
    fn refuses_a_blob_under_a_wrong_name() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("bad.tar");
        let mut w = TarWriter::new(File::create(&p).unwrap(), DEFAULT_MTIME);
        let name = format!("blobs/sha256/{}", Digest::of_bytes(b"x").hex());
        w.append_bytes(&name, 0o644, b"y").unwrap();
        w.finish().unwrap();
        let err = read_archive(&p, &Selector::default(), &BlobDir::open(t.path().join("c")).unwrap()).unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&name), "{err}");
        // not an archive at all
        let q = t.path().join("empty.tar");
        TarWriter::new(File::create(&q).unwrap(), 0).finish().unwrap();
        assert!(read_archive(&q, &Selector::default(), &BlobDir::open(t.path().join("c")).unwrap()).is_err());
    }
}
