//! OCI image layout directories: writing one image (`oci-layout`, `index.json` with exactly one
//! manifest, `blobs/sha256/…` hard-linked from a [`BlobDir`]) so readers never see a half layout,
//! and reading one (by ref name or platform, through nested indexes) into a `BlobDir`, verified.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use super::error::{io_err, OciError, Result};
use super::image::{canonical_json, our_digest, Image};
use crate::cas::BlobDir;
use crate::model::digest::Digest;

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Which manifest of a layout (or archive) to take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// The `org.opencontainers.image.ref.name` annotation to look for; `None`: the only manifest.
    pub ref_name: Option<String>,
    /// `(os, architecture)` to pick from a multi-platform index; `None`: the host's.
    pub platform: Option<(String, String)>,
}

impl Selector {
    /// Select by ref name.
    pub fn by_ref(name: &str) -> Selector {
        Selector { ref_name: Some(name.to_string()), platform: None }
    }
}

/// The host's `(os, architecture)` in OCI words (`linux`, `amd64`/`arm64`/...).
pub fn host_platform() -> (String, String) {
    let p = crate::model::platform::Platform::host();
    (p.os, p.architecture)
}

/// The `index.json` for one image (canonical JSON), optionally with a ref name annotation.
pub fn index_json(image: &Image, ref_name: Option<&str>) -> Result<Vec<u8>> {
    layout_index_json(image.descriptor(), ref_name)
}

/// A layout's `index.json` naming one descriptor (an image or an index), with a ref name.
fn layout_index_json(mut d: Descriptor, ref_name: Option<&str>) -> Result<Vec<u8>> {
    if let Some(r) = ref_name {
        d.set_annotations(Some([(super::ANNOTATION_REF_NAME.to_string(), r.to_string())].into()));
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![d])
        .build()
        .map_err(|source| OciError::Spec { subject: "index.json".into(), source })?;
    canonical_json(&index, "index.json")
}

/// Writes `image` as the only manifest of the OCI layout `dir` (created or updated in place),
/// taking every blob from `blobs` (layers must be there: see [`Image::missing_layers`]). Blobs are
/// hard-linked where possible, copied otherwise; `index.json` is replaced atomically last, so a
/// reader sees the old layout or the new one, never a mix. Blobs no longer referenced are removed
/// afterwards. Returns the manifest digest.
pub fn write_layout(dir: &Path, image: &Image, blobs: &BlobDir, ref_name: Option<&str>) -> Result<Digest> {
    image.write_to(blobs)?;
    let mut wanted: Vec<&Digest> = vec![image.digest(), image.config_digest()];
    wanted.extend(image.layers().iter().map(|l| &l.digest));
    write_layout_of(dir, &wanted, &index_json(image, ref_name)?, blobs)?;
    Ok(image.digest().clone())
}

/// Writes an image index (the index blob and every image's blobs) as the one entry of the OCI
/// layout `dir`, as [`write_layout`] does for an image: `index.json` names the index (a nested
/// index, as BuildKit and skopeo write multi-platform layouts). Returns the index digest.
pub fn write_index_layout(
    dir: &Path,
    index: &super::index::Index,
    blobs: &BlobDir,
    ref_name: Option<&str>,
) -> Result<Digest> {
    let mut wanted: Vec<&Digest> = vec![&index.digest];
    for image in &index.images {
        image.write_to(blobs)?;
        wanted.extend([image.digest(), image.config_digest()]);
        wanted.extend(image.layers().iter().map(|l| &l.digest));
    }
    write_layout_of(dir, &wanted, &layout_index_json(index.descriptor(), ref_name)?, blobs)?;
    Ok(index.digest.clone())
}

/// The shared part of writing a layout: link `wanted` blobs in, `oci-layout`, `index.json` last,
/// then remove blobs no longer referenced.
fn write_layout_of(dir: &Path, wanted: &[&Digest], index_json: &[u8], blobs: &BlobDir) -> Result<()> {
    for d in wanted {
        blobs.size(d)?; // a missing layer is an error naming it
    }
    let bdir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&bdir).map_err(io_err(&bdir))?;
    for d in wanted {
        let src = blobs.path(d);
        let dst = bdir.join(d.hex());
        if same_file(&src, &dst) {
            continue;
        }
        crate::cas::link_or_copy(&src, &dst).map_err(io_err(&dst))?;
    }
    let layout_file = dir.join("oci-layout");
    if fs::read(&layout_file).ok().as_deref() != Some(OCI_LAYOUT_FILE) {
        crate::fs::write_atomic(&layout_file, OCI_LAYOUT_FILE).map_err(io_err(&layout_file))?;
    }
    let index = dir.join("index.json");
    crate::fs::write_atomic(&index, index_json).map_err(io_err(&index))?;
    // Garbage: blobs of an earlier image at this path.
    let keep: BTreeSet<&str> = wanted.iter().map(|d| d.hex()).collect();
    for e in fs::read_dir(&bdir).map_err(io_err(&bdir))? {
        let e = e.map_err(io_err(&bdir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !keep.contains(name.as_ref()) && !name.starts_with('.') {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Writes `image` as an OCI layout tar (what pack calls a `.cnb` file; `skopeo` reads it as
/// `oci-archive:`): `oci-layout`, `index.json`, then the blobs in digest order, every entry with
/// mtime `mtime` and root-owned, so the bytes depend on the image only. Written to a temp file and
/// renamed into place.
pub fn write_oci_archive(
    path: &Path,
    image: &Image,
    blobs: &BlobDir,
    ref_name: Option<&str>,
    mtime: u64,
) -> Result<()> {
    let mut wanted: Vec<&Digest> = vec![image.digest(), image.config_digest()];
    wanted.extend(image.layers().iter().map(|l| &l.digest));
    wanted.sort();
    wanted.dedup();
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(io_err(parent))?;
    let mut w = super::tar::TarWriter::new(io::BufWriter::new(tmp.as_file()), mtime);
    w.append_bytes("oci-layout", 0o644, OCI_LAYOUT_FILE)?;
    w.append_bytes("index.json", 0o644, &index_json(image, ref_name)?)?;
    w.append_dir("blobs", 0o755, 0, 0)?;
    w.append_dir("blobs/sha256", 0o755, 0, 0)?;
    for d in wanted {
        let src = blobs.path(d);
        let size = blobs.size(d)?;
        let f = fs::File::open(&src).map_err(io_err(&src))?;
        w.append_file(&format!("blobs/sha256/{}", d.hex()), 0o644, 0, 0, size, io::BufReader::new(f), &src)?;
    }
    let (mut out, _) = w.finish()?;
    io::Write::flush(&mut out).map_err(io_err(path))?;
    drop(out);
    tmp.as_file().sync_all().map_err(io_err(path))?;
    // Readable like the layout's blobs (a temp file is created 0600).
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644)).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| OciError::Io { path: path.to_path_buf(), source: e.error })?;
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn layout_err(dir: &Path, reason: impl Into<String>) -> OciError {
    OciError::Layout { path: dir.to_path_buf(), reason: reason.into() }
}

/// Picks the descriptor `sel` asks for from an index's manifests. `subject` names the index.
pub(crate) fn select_descriptor<'a>(
    manifests: &'a [Descriptor],
    sel: &Selector,
    top_level: bool,
    fail: &dyn Fn(String) -> OciError,
) -> Result<&'a Descriptor> {
    let ref_of = |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(super::ANNOTATION_REF_NAME).cloned());
    if top_level {
        if let Some(want) = &sel.ref_name {
            let hits: Vec<&Descriptor> = manifests
                .iter()
                .filter(|d| {
                    ref_of(d).as_deref() == Some(want.as_str())
                        || d.annotations().as_ref().and_then(|a| a.get("io.containerd.image.name")) == Some(want)
                })
                .collect();
            return match hits.as_slice() {
                [one] => Ok(one),
                [] => {
                    let refs: Vec<String> = manifests.iter().filter_map(ref_of).collect();
                    Err(fail(format!("no manifest has ref name `{want}` (it has: {})", refs.join(", "))))
                }
                _ => Err(fail(format!("{} manifests have ref name `{want}`", hits.len()))),
            };
        }
        if manifests.len() == 1 {
            return Ok(&manifests[0]);
        }
    }
    let (os, arch) = sel.platform.clone().unwrap_or_else(host_platform);
    let hits: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
        })
        .collect();
    match hits.first() {
        Some(d) => Ok(d),
        None if manifests.len() == 1 => Ok(&manifests[0]),
        None => {
            let refs: Vec<String> = manifests.iter().filter_map(ref_of).collect();
            Err(fail(format!(
                "{} manifests and none for {os}/{arch}; choose one by ref name (refs: {})",
                manifests.len(),
                refs.join(", ")
            )))
        }
    }
}

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == super::MEDIA_TYPE_INDEX || media_type == super::MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

/// Parses an index document.
pub(crate) fn parse_index(bytes: &[u8], subject: &str) -> Result<ImageIndex> {
    serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        subject: subject.to_string(),
        what: "not an image index",
        source,
    })
}

/// Copies (hard-links) one blob of a layout into `blobs` after checking its digest and size.
fn import_blob(dir: &Path, blobs: &BlobDir, d: &Digest, size: Option<u64>) -> Result<()> {
    let src = dir.join("blobs").join("sha256").join(d.hex());
    let meta = fs::metadata(&src).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            layout_err(dir, format!("blob `{d}` is missing"))
        } else {
            OciError::Io { path: src.clone(), source: e }
        }
    })?;
    if let Some(want) = size {
        if meta.len() != want {
            return Err(OciError::SizeMismatch { digest: d.clone(), expected: want, actual: meta.len() });
        }
    }
    // Copied, never hard-linked: the layout is a workspace input a user may edit in place, and a
    // shared inode would silently change the cached blob with it. Hashed while copying.
    if blobs.contains(d) {
        let f = fs::File::open(&src).map_err(io_err(&src))?;
        let (actual, _) = Digest::of_reader(BufReader::new(f)).map_err(io_err(&src))?;
        if &actual != d {
            return Err(OciError::DigestMismatch { subject: src.display().to_string(), expected: d.clone(), actual });
        }
        // The blob store's copy is used only if intact too; a damaged one (which `verify` removes)
        // is replaced from the layout's good bytes below.
        match blobs.verify(d) {
            Ok(()) => return Ok(()),
            Err(crate::cas::CasError::Corrupt { .. } | crate::cas::CasError::Missing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let f = fs::File::open(&src).map_err(io_err(&src))?;
    let (actual, _) =
        blobs.put_stream::<OciError>(|w| io::copy(&mut BufReader::new(f), w).map(|_| ()).map_err(io_err(&src)))?;
    if &actual != d {
        // What was stored is a valid blob under its own digest; only the claim was wrong.
        return Err(OciError::DigestMismatch { subject: src.display().to_string(), expected: d.clone(), actual });
    }
    Ok(())
}

/// Reads the image `sel` names from the OCI layout `dir`, importing its manifest, config and layers
/// into `blobs` (every digest and size verified; a wrong one is refused naming the blob). Nested
/// indexes are followed to the selected (default: host) platform.
pub fn read_layout(dir: &Path, sel: &Selector, blobs: &BlobDir) -> Result<Image> {
    let lf = dir.join("oci-layout");
    let layout: serde_json::Value = serde_json::from_slice(&fs::read(&lf).map_err(io_err(&lf))?)
        .map_err(|source| OciError::Json { subject: lf.display().to_string(), what: "not JSON", source })?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()).is_none() {
        return Err(layout_err(dir, "`oci-layout` has no imageLayoutVersion"));
    }
    let ip = dir.join("index.json");
    let index = parse_index(&fs::read(&ip).map_err(io_err(&ip))?, &ip.display().to_string())?;
    let fail = |reason: String| layout_err(dir, reason);
    let mut desc = select_descriptor(index.manifests(), sel, true, &fail)?.clone();
    for _depth in 0..8 {
        let d = our_digest(desc.digest(), &format!("{} manifest", dir.display()))?;
        import_blob(dir, blobs, &d, Some(desc.size()))?;
        if !is_index(desc.media_type().as_ref()) {
            let m: serde_json::Value = serde_json::from_slice(&blobs.read_verified(&d)?)
                .map_err(|source| OciError::Json { subject: d.to_string(), what: "not JSON", source })?;
            let cd = m.pointer("/config/digest").and_then(|v| v.as_str()).unwrap_or_default();
            let cd =
                Digest::parse(cd).map_err(|source| OciError::BadDigest { subject: format!("{d} config"), source })?;
            let csize = m.pointer("/config/size").and_then(|v| v.as_u64());
            import_blob(dir, blobs, &cd, csize)?;
            let img = Image::load(blobs, &d)?;
            for l in img.layers() {
                import_blob(dir, blobs, &l.digest, Some(l.size))?;
            }
            return Ok(img);
        }
        let nested = parse_index(&blobs.read_verified(&d)?, &d.to_string())?;
        desc = select_descriptor(nested.manifests(), sel, false, &fail)?.clone();
    }
    Err(layout_err(dir, "indexes nest more than 8 deep"))
}

/// The path of a blob inside a layout directory.
pub fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::{append_layer, scratch};
    use crate::oci::layer::{write_layer, LayerOptions};
    use crate::oci::tar::TarEntry;

    fn image(t: &Path, blobs: &BlobDir, content: &str) -> Image {
        let f = t.join(format!("f-{content}"));
        fs::write(&f, content).unwrap();
        let l = write_layer(vec![TarEntry::file("a.txt", &f, 0o644)], &LayerOptions::default(), blobs, &|_, _| None)
            .unwrap();
        append_layer(&scratch("linux", "amd64").unwrap(), &l, "test").unwrap()
    }

    #[test]
    fn writes_reads_and_replaces() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let img = image(t.path(), &blobs, "one");
        let dir = t.path().join("out/layout");
        write_layout(&dir, &img, &blobs, Some("latest")).unwrap();
        assert_eq!(fs::read(dir.join("oci-layout")).unwrap(), OCI_LAYOUT_FILE);
        let idx: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(idx["manifests"][0]["annotations"][super::super::ANNOTATION_REF_NAME], "latest");
        assert_eq!(idx["manifests"][0]["digest"], img.digest().to_string());
        // hard-linked from the CAS
        assert!(same_file(&blobs.path(&img.layers()[0].digest), &blob_path(&dir, &img.layers()[0].digest)));
        // read back into another CAS
        let other = BlobDir::open(t.path().join("cas2")).unwrap();
        let back = read_layout(&dir, &Selector::by_ref("latest"), &other).unwrap();
        assert_eq!(back, img);
        assert!(other.contains(&img.layers()[0].digest));
        assert_eq!(read_layout(&dir, &Selector::default(), &other).unwrap(), img);
        assert!(read_layout(&dir, &Selector::by_ref("nope"), &other).unwrap_err().to_string().contains("`nope`"));
        // replace: old blobs go away, exactly one manifest remains
        let img2 = image(t.path(), &blobs, "two");
        write_layout(&dir, &img2, &blobs, None).unwrap();
        assert!(!blob_path(&dir, &img.layers()[0].digest).exists());
        assert_eq!(fs::read_dir(dir.join("blobs/sha256")).unwrap().count(), 3);
        assert_eq!(read_layout(&dir, &Selector::default(), &other).unwrap(), img2);
    }

    #[test]
    fn refuses_a_corrupt_blob_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let img = image(t.path(), &blobs, "x");
        let dir = t.path().join("layout");
        // copy (not link) so corrupting the layout does not corrupt the CAS
        write_layout(&dir, &img, &blobs, None).unwrap();
        let lp = blob_path(&dir, &img.layers()[0].digest);
        let mut bytes = fs::read(&lp).unwrap();
        fs::remove_file(&lp).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0xff;
        fs::write(&lp, &bytes).unwrap();
        let other = BlobDir::open(t.path().join("cas2")).unwrap();
        let err = read_layout(&dir, &Selector::default(), &other).unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&img.layers()[0].digest.to_string()), "{err}");
        assert!(!other.contains(&img.layers()[0].digest));
        // a missing layer is named too
        fs::remove_file(&lp).unwrap();
        let err = read_layout(&dir, &Selector::default(), &other).unwrap_err();
        assert!(err.to_string().contains(&img.layers()[0].digest.to_string()), "{err}");
    }

    #[test]
    fn follows_a_nested_index_to_the_platform() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let amd = image(t.path(), &blobs, "amd");
        let arm = {
            let l = amd.layers()[0].clone();
            append_layer(&scratch("linux", "arm64").unwrap(), &l, "arm").unwrap()
        };
        let dir = t.path().join("layout");
        write_layout(&dir, &amd, &blobs, None).unwrap();
        arm.write_to(&blobs).unwrap();
        for img in [&arm] {
            for d in [img.digest(), img.config_digest()] {
                fs::copy(blobs.path(d), blob_path(&dir, d)).unwrap();
            }
        }
        // nested index: [amd, arm] under one top-level descriptor with a ref name
        let nested = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![amd.descriptor(), arm.descriptor()])
            .build()
            .unwrap();
        let nb = canonical_json(&nested, "n").unwrap();
        let nd = Digest::of_bytes(&nb);
        fs::write(blob_path(&dir, &nd), &nb).unwrap();
        let mut top = Descriptor::new(MediaType::ImageIndex, nb.len() as u64, super::super::image::spec_digest(&nd));
        top.set_annotations(Some([(super::super::ANNOTATION_REF_NAME.to_string(), "multi".to_string())].into()));
        let index = ImageIndexBuilder::default().schema_version(2u32).manifests(vec![top]).build().unwrap();
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        let other = BlobDir::open(t.path().join("cas2")).unwrap();
        let sel = |a: &str| Selector { ref_name: Some("multi".into()), platform: Some(("linux".into(), a.into())) };
        assert_eq!(read_layout(&dir, &sel("arm64"), &other).unwrap(), arm);
        assert_eq!(read_layout(&dir, &sel("amd64"), &other).unwrap(), amd);
        let err = read_layout(&dir, &sel("s390x"), &other).unwrap_err();
        assert!(err.to_string().contains("linux/s390x"), "{err}");
    }

    #[test]
    fn missing_layer_blob_is_refused_when_writing() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let img = image(t.path(), &blobs, "x");
        fs::remove_file(blobs.path(&img.layers()[0].digest)).unwrap();
        let err = write_layout(&t.path().join("l"), &img, &blobs, None).unwrap_err();
        assert!(err.to_string().contains(&img.layers()[0].digest.to_string()), "{err}");
    }
}
