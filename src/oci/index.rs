//! OCI image indexes of a multi-platform image: one manifest per platform, each descriptor
//! carrying its image's platform (from its config), in canonical JSON so the same images in the
//! same order always give the same index digest.

use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};
use serde_json::Value;

use super::digest::spec_digest;
use super::error::{OciError, Result};
use super::image::{canonical_json, Image};
use crate::cas::BlobDir;
use crate::model::digest::Digest;

/// An image index and its images, in its order.
#[derive(Clone, Debug)]
pub struct Index {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub images: Vec<Image>,
}

/// `os/architecture[/variant]` of an image's config.
pub fn platform_of(image: &Image) -> String {
    let (os, arch) = image.platform();
    match image.config().variant() {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

impl Index {
    /// The index over `images`; two images of one platform are an error (a registry client would
    /// pick either).
    pub fn of(images: Vec<Image>) -> Result<Index> {
        let mut seen: Vec<String> = Vec::new();
        for i in &images {
            let p = platform_of(i);
            if seen.contains(&p) {
                return Err(OciError::InvalidImage {
                    subject: "image index".into(),
                    reason: format!("two of its images are for {p}"),
                });
            }
            seen.push(p);
        }
        let manifests: Vec<Descriptor> = images.iter().map(Image::descriptor).collect();
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .map_err(|source| OciError::Spec { subject: "image index".into(), source })?;
        let bytes = canonical_json(&index, "image index")?;
        Ok(Index { digest: Digest::of_bytes(&bytes), bytes, images })
    }

    /// Reads the index `digest` and every image it lists from `blobs` (each verified).
    pub fn load(blobs: &BlobDir, digest: &Digest) -> Result<Index> {
        let bytes = blobs.read_verified(digest)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|source| OciError::Json {
            subject: digest.to_string(),
            what: "not JSON",
            source,
        })?;
        let mut images = Vec::new();
        for m in v.get("manifests").and_then(Value::as_array).into_iter().flatten() {
            let d = m.get("digest").and_then(Value::as_str).unwrap_or_default();
            let d = Digest::parse(d)
                .map_err(|source| OciError::BadDigest { subject: format!("{digest} manifest"), source })?;
            images.push(Image::load(blobs, &d)?);
        }
        Ok(Index { digest: digest.clone(), bytes, images })
    }

    /// Stores the index blob in `blobs` (the images are the caller's).
    pub fn write_to(&self, blobs: &BlobDir) -> Result<()> {
        blobs.put_bytes(&self.bytes)?;
        Ok(())
    }

    /// A descriptor of the index (for a layout's `index.json`).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(MediaType::ImageIndex, self.bytes.len() as u64, spec_digest(&self.digest))
    }

    /// The image for `platform` (`os/arch[/variant]`; a platform without a variant matches an
    /// image with one), if the index has one.
    pub fn image_for(&self, platform: &str) -> Option<&Image> {
        self.images.iter().find(|i| platform_of(i) == platform).or_else(|| {
            self.images.iter().find(|i| {
                let (os, arch) = i.platform();
                format!("{os}/{arch}") == platform
            })
        })
    }

    /// Every platform of the index, in its order.
    pub fn platforms(&self) -> Vec<String> {
        self.images.iter().map(platform_of).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::scratch;

    #[test]
    fn lists_each_platform_once_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(tmp.path()).unwrap();
        let a = scratch("linux", "amd64").unwrap();
        let b = scratch("linux", "arm64").unwrap();
        for i in [&a, &b] {
            i.write_to(&blobs).unwrap();
        }
        let idx = Index::of(vec![a.clone(), b.clone()]).unwrap();
        idx.write_to(&blobs).unwrap();
        let v: Value = serde_json::from_slice(&idx.bytes).unwrap();
        assert_eq!(v["mediaType"], crate::oci::MEDIA_TYPE_INDEX);
        assert_eq!(v["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(v["manifests"][0]["digest"], a.digest().to_string());
        let back = Index::load(&blobs, &idx.digest).unwrap();
        assert_eq!(back.platforms(), vec!["linux/amd64", "linux/arm64"]);
        assert_eq!(back.image_for("linux/arm64").unwrap().digest(), b.digest());
        // The same images give the same bytes; two of one platform are refused.
        assert_eq!(Index::of(vec![a.clone(), b]).unwrap().digest, idx.digest);
        let e = Index::of(vec![a.clone(), a]).unwrap_err().to_string();
        assert!(e.contains("two of its images are for linux/amd64"), "{e}");
    }
}
