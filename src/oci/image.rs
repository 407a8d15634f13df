//! Images as immutable values: a manifest and a config (oci-spec types) with their exact bytes, and
//! `mutate`-style functions that return new images (append a layer, change the config, rebase,
//! scratch). Serialisation is canonical JSON, so the same value always has the same digest.

use std::collections::{BTreeMap, BTreeSet};

use oci_spec::image::{
    Arch, Config, Descriptor, History, ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType, Os, RootFs,
};
use serde::Serialize;
use serde_json::Value;

use super::compress::Compression;
pub use super::digest::{our_digest, spec_digest};
use super::error::{OciError, Result};
use super::layer::LayerBlob;
use crate::cas::BlobDir;
use crate::model::digest::Digest;

/// The `created` time of images and history entries unless one is given (CNB's choice: one second
/// past 1980-01-01, so tools that treat the zero time specially show a real date).
pub const CREATED: &str = "1980-01-01T00:00:01Z";

/// An image: manifest + config, and the exact bytes whose digests name them. Cheap to clone; never
/// changed in place: the functions of this module return new values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    digest: Digest,
    config: ImageConfiguration,
    config_bytes: Vec<u8>,
    config_digest: Digest,
    layers: Vec<LayerBlob>,
}

/// Canonical JSON: object keys sorted at every level, no whitespace. oci-spec keeps labels and
/// annotations in `HashMap`s, whose order differs per process; sorting makes the bytes stable.
pub fn canonical_json<T: Serialize>(v: &T, subject: &str) -> Result<Vec<u8>> {
    let json = |source| OciError::Json { subject: subject.to_string(), what: "cannot serialise", source };
    let value = serde_json::to_value(v).map_err(json)?;
    serde_json::to_vec(&sorted(value)).map_err(json)
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        x => x,
    }
}

/// The config's history entries (none when it has no `history`).
pub fn history(c: &ImageConfiguration) -> &[History] {
    c.history().as_deref().unwrap_or(&[])
}

/// Parses a config, tolerating what real images omit (`history`).
fn parse_config(bytes: &[u8], subject: &str) -> Result<ImageConfiguration> {
    let json = |source| OciError::Json { subject: subject.to_string(), what: "not an image config", source };
    let mut v: Value = serde_json::from_slice(bytes).map_err(json)?;
    if let Some(obj) = v.as_object_mut() {
        if obj.get("history").is_none_or(Value::is_null) {
            obj.insert("history".into(), Value::Array(vec![]));
        }
    }
    serde_json::from_value(v).map_err(json)
}

impl Image {
    /// Builds an image from a manifest and config given as bytes (as read from a registry, layout
    /// or archive), checking that they agree: the config digest and size, one diff_id per layer,
    /// sha256 digests, layer media types.
    pub fn from_bytes(manifest_bytes: Vec<u8>, config_bytes: Vec<u8>) -> Result<Image> {
        let digest = Digest::of_bytes(&manifest_bytes);
        let subject = digest.to_string();
        let v: Value = serde_json::from_slice(&manifest_bytes).map_err(|source| OciError::Json {
            subject: subject.clone(),
            what: "not JSON",
            source,
        })?;
        if v.get("manifests").is_some() {
            return Err(OciError::InvalidImage { subject, reason: "it is an image index, not a manifest".into() });
        }
        let manifest: ImageManifest = serde_json::from_value(v).map_err(|source| OciError::Json {
            subject: subject.clone(),
            what: "not an image manifest",
            source,
        })?;
        if manifest.schema_version() != 2 {
            return Err(OciError::InvalidImage {
                subject,
                reason: format!("schemaVersion is {}, not 2", manifest.schema_version()),
            });
        }
        let config_digest = our_digest(manifest.config().digest(), &subject)?;
        let actual = Digest::of_bytes(&config_bytes);
        if actual != config_digest {
            return Err(OciError::DigestMismatch { subject: "config".into(), expected: config_digest, actual });
        }
        if manifest.config().size() != config_bytes.len() as u64 {
            return Err(OciError::SizeMismatch {
                digest: config_digest,
                expected: manifest.config().size(),
                actual: config_bytes.len() as u64,
            });
        }
        let config = parse_config(&config_bytes, &config_digest.to_string())?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(OciError::InvalidImage {
                subject,
                reason: format!(
                    "{} layers but {} diff_ids in config `{config_digest}`",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (i, (l, diff)) in manifest.layers().iter().zip(diff_ids).enumerate() {
            let what = format!("{subject} layer {i}");
            let digest = our_digest(l.digest(), &what)?;
            let diff_id = Digest::parse(diff)
                .map_err(|source| OciError::BadDigest { subject: format!("{what} diff_id"), source })?;
            let media_type = l.media_type().to_string();
            let compression = Compression::from_media_type(&media_type).ok_or_else(|| OciError::InvalidImage {
                subject: subject.clone(),
                reason: format!("layer {i} `{digest}` has media type `{media_type}`, which is not a layer"),
            })?;
            layers.push(LayerBlob { diff_id, digest, size: l.size(), media_type, compression });
        }
        Ok(Image { manifest, manifest_bytes, digest, config, config_bytes, config_digest, layers })
    }

    /// Builds an image from values: the config and manifest are serialised canonically.
    fn from_values(
        config: ImageConfiguration,
        layers: Vec<Descriptor>,
        annotations: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Image> {
        let config_bytes = canonical_json(&config, "image config")?;
        let config_digest = Digest::of_bytes(&config_bytes);
        let cdesc = Descriptor::new(MediaType::ImageConfig, config_bytes.len() as u64, spec_digest(&config_digest));
        let mut b = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(cdesc)
            .layers(layers);
        if let Some(a) = annotations {
            b = b.annotations(a);
        }
        let manifest = b.build().map_err(|source| OciError::Spec { subject: "image manifest".into(), source })?;
        let manifest_bytes = canonical_json(&manifest, "image manifest")?;
        Image::from_bytes(manifest_bytes, config_bytes)
    }

    /// Builds an OCI manifest around existing config bytes (kept exactly, e.g. from a
    /// docker-archive) and the given layers.
    pub fn from_config_bytes(config_bytes: Vec<u8>, layers: &[LayerBlob]) -> Result<Image> {
        let cd = Digest::of_bytes(&config_bytes);
        let cdesc = Descriptor::new(MediaType::ImageConfig, config_bytes.len() as u64, spec_digest(&cd));
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(cdesc)
            .layers(layers.iter().map(LayerBlob::descriptor).collect::<Vec<_>>())
            .build()
            .map_err(|source| OciError::Spec { subject: "image manifest".into(), source })?;
        Image::from_bytes(canonical_json(&manifest, "image manifest")?, config_bytes)
    }

    /// Reads a manifest and its config from `blobs`, both verified against their digests.
    pub fn load(blobs: &BlobDir, manifest_digest: &Digest) -> Result<Image> {
        let m = blobs.read_verified(manifest_digest)?;
        let v: Value = serde_json::from_slice(&m).map_err(|source| OciError::Json {
            subject: manifest_digest.to_string(),
            what: "not JSON",
            source,
        })?;
        let cd = v.pointer("/config/digest").and_then(Value::as_str).ok_or_else(|| OciError::InvalidImage {
            subject: manifest_digest.to_string(),
            reason: "it has no config digest (an index?)".into(),
        })?;
        let cd = Digest::parse(cd)
            .map_err(|source| OciError::BadDigest { subject: format!("{manifest_digest} config"), source })?;
        let c = blobs.read_verified(&cd)?;
        Image::from_bytes(m, c)
    }

    /// Stores the config and the manifest in `blobs` (layers are the caller's: see
    /// [`Image::missing_layers`]); returns the manifest digest and size.
    pub fn write_to(&self, blobs: &BlobDir) -> Result<(Digest, u64)> {
        blobs.put_bytes(&self.config_bytes)?;
        let d = blobs.put_bytes(&self.manifest_bytes)?;
        Ok((d, self.manifest_bytes.len() as u64))
    }

    /// The layers whose blobs `blobs` does not hold (a shallow base image's).
    pub fn missing_layers(&self, blobs: &BlobDir) -> Vec<&LayerBlob> {
        self.layers.iter().filter(|l| !blobs.contains(&l.digest)).collect()
    }

    /// The manifest digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// The manifest.
    pub fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }
    /// The manifest's exact bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }
    /// The manifest's media type (OCI unless the image was loaded as a Docker one).
    pub fn manifest_media_type(&self) -> String {
        self.manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| super::MEDIA_TYPE_MANIFEST.to_string())
    }
    /// The config.
    pub fn config(&self) -> &ImageConfiguration {
        &self.config
    }
    /// The config's exact bytes.
    pub fn config_bytes(&self) -> &[u8] {
        &self.config_bytes
    }
    /// The config digest (Docker's "image id").
    pub fn config_digest(&self) -> &Digest {
        &self.config_digest
    }
    /// The layers, bottom first, with their diff_ids.
    pub fn layers(&self) -> &[LayerBlob] {
        &self.layers
    }
    /// The diff_ids, bottom first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
    /// `(os, architecture)` as the config names them (`linux`, `amd64`).
    pub fn platform(&self) -> (String, String) {
        (self.config.os().to_string(), self.config.architecture().to_string())
    }
    /// A descriptor of the manifest (for an index), with the platform.
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            MediaType::from(self.manifest_media_type().as_str()),
            self.manifest_bytes.len() as u64,
            spec_digest(&self.digest),
        );
        let mut p = oci_spec::image::Platform::default();
        p.set_os(self.config.os().clone());
        p.set_architecture(self.config.architecture().clone());
        p.set_variant(self.config.variant().clone());
        d.set_platform(Some(p));
        d
    }
}

/// An empty image for `os`/`arch` (e.g. `linux`, `amd64`), created at [`CREATED`].
pub fn scratch(os: &str, arch: &str) -> Result<Image> {
    scratch_for(os, arch, None)
}

/// An empty image for `os`/`arch`/`variant` (`linux`, `arm`, `v7`).
pub fn scratch_for(os: &str, arch: &str, variant: Option<&str>) -> Result<Image> {
    let mut config = ImageConfiguration::default();
    config.set_os(Os::from(os));
    config.set_architecture(Arch::from(arch));
    config.set_variant(variant.map(String::from));
    config.set_created(Some(CREATED.to_string()));
    config.set_config(Some(Config::default()));
    config.set_rootfs(RootFs::default());
    config.set_history(Some(vec![]));
    Image::from_values(config, vec![], None)
}

/// The layer descriptors of `img` as OCI media types (Docker ones mapped), for a rebuilt manifest.
fn oci_layers(img: &Image) -> Vec<Descriptor> {
    img.manifest
        .layers()
        .iter()
        .zip(&img.layers)
        .map(|(d, l)| {
            let mut d = d.clone();
            if d.media_type().to_string().starts_with("application/vnd.docker.image.rootfs.diff.") {
                d.set_media_type(MediaType::from(l.compression.media_type()));
            }
            d
        })
        .collect()
}

/// Makes sure every layer has a history entry (base images without history get plain ones), so
/// appended layers line up with theirs.
fn aligned_history(config: &ImageConfiguration, layers: usize) -> Vec<History> {
    let h = history(config).to_vec();
    let non_empty = h.iter().filter(|e| e.empty_layer() != Some(true)).count();
    if non_empty >= layers {
        return h;
    }
    let mut h = h;
    for _ in non_empty..layers {
        let mut e = History::default();
        e.set_created(config.created().clone());
        h.push(e);
    }
    h
}

/// A new image: `img` plus `layer` on top, with a history entry `created_by` (time: the config's
/// `created`, else [`CREATED`]).
pub fn append_layer(img: &Image, layer: &LayerBlob, created_by: &str) -> Result<Image> {
    let mut config = img.config.clone();
    let mut history = aligned_history(&config, img.layers.len());
    let mut e = History::default();
    e.set_created(Some(config.created().clone().unwrap_or_else(|| CREATED.to_string())));
    e.set_created_by(Some(created_by.to_string()));
    history.push(e);
    config.set_history(Some(history));
    config.rootfs_mut().diff_ids_mut().push(layer.diff_id.to_string());
    let mut layers = oci_layers(img);
    layers.push(layer.descriptor());
    Image::from_values(config, layers, img.manifest.annotations().clone())
}

/// A change to an image's runtime config. `None`/empty fields keep what the image has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigPatch {
    /// Replaces the entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the command.
    pub cmd: Option<Vec<String>>,
    /// Sets variables (replacing one of the same name, else appended in this order).
    pub env: Vec<(String, String)>,
    /// Replaces the user (`uid[:gid]` or a name).
    pub user: Option<String>,
    /// Replaces the working directory.
    pub workdir: Option<String>,
    /// Adds or replaces labels.
    pub labels: BTreeMap<String, String>,
    /// Adds exposed ports (`8080/tcp`).
    pub exposed_ports: Vec<String>,
}

/// A new image with `patch` applied to the runtime config of `img`.
pub fn with_config(img: &Image, patch: &ConfigPatch) -> Result<Image> {
    let mut config = img.config.clone();
    let mut c = config.config().clone().unwrap_or_default();
    if let Some(e) = &patch.entrypoint {
        c.set_entrypoint(Some(e.clone()));
    }
    if let Some(e) = &patch.cmd {
        c.set_cmd(Some(e.clone()));
    }
    if !patch.env.is_empty() {
        let mut env = c.env().clone().unwrap_or_default();
        for (k, v) in &patch.env {
            let kv = format!("{k}={v}");
            match env.iter_mut().find(|e| e.split('=').next() == Some(k.as_str())) {
                Some(slot) => *slot = kv,
                None => env.push(kv),
            }
        }
        c.set_env(Some(env));
    }
    if let Some(u) = &patch.user {
        c.set_user(Some(u.clone()));
    }
    if let Some(w) = &patch.workdir {
        c.set_working_dir(Some(w.clone()));
    }
    if !patch.labels.is_empty() {
        let mut labels = c.labels().clone().unwrap_or_default();
        labels.extend(patch.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        c.set_labels(Some(labels));
    }
    if !patch.exposed_ports.is_empty() {
        let mut ports: BTreeSet<String> = c.exposed_ports().clone().unwrap_or_default().into_iter().collect();
        ports.extend(patch.exposed_ports.iter().cloned());
        c.set_exposed_ports(Some(ports.into_iter().collect()));
    }
    config.set_config(Some(c));
    Image::from_values(config, oci_layers(img), img.manifest.annotations().clone())
}

/// A new image whose config `created` is `created` (RFC 3339).
pub fn with_created(img: &Image, created: &str) -> Result<Image> {
    let mut config = img.config.clone();
    config.set_created(Some(created.to_string()));
    Image::from_values(config, oci_layers(img), img.manifest.annotations().clone())
}

/// Moves `orig` from `old_base` onto `new_base`, like go-containerregistry's `mutate.Rebase`: the
/// old base's layers must be the bottom of `orig`; they are replaced by the new base's layers (and
/// history and platform), while `orig`'s own layers, config and history stay as they are. A new base
/// of another OS/architecture is refused.
pub fn rebase(orig: &Image, old_base: &Image, new_base: &Image) -> Result<Image> {
    rebase_with(orig, old_base, new_base, false)
}

/// [`rebase`], with `allow_platform_change` to accept a new base of another OS/architecture.
pub fn rebase_with(orig: &Image, old_base: &Image, new_base: &Image, allow_platform_change: bool) -> Result<Image> {
    let err = |reason: String| OciError::Rebase { image: orig.digest.clone(), reason };
    let n_old = old_base.layers.len();
    if orig.layers.len() < n_old {
        return Err(err(format!(
            "it has {} layers, fewer than the old base `{}` ({n_old})",
            orig.layers.len(),
            old_base.digest
        )));
    }
    for (i, (a, b)) in orig.layers.iter().zip(&old_base.layers).enumerate() {
        if a.digest != b.digest || a.diff_id != b.diff_id {
            return Err(err(format!(
                "its layer {i} is `{}` but the old base `{}` has `{}` there; the old base is not its base",
                a.digest, old_base.digest, b.digest
            )));
        }
    }
    if !allow_platform_change && orig.platform() != new_base.platform() {
        let (o, a) = orig.platform();
        let (no, na) = new_base.platform();
        return Err(err(format!("the new base `{}` is {no}/{na}, the image is {o}/{a}", new_base.digest)));
    }
    // The original's own history: after the old base's history when it is a prefix, else after
    // the entry of its n_old-th layer.
    let oh = history(&orig.config);
    let bh = history(&old_base.config);
    let split = if !bh.is_empty() && oh.len() >= bh.len() && oh[..bh.len()] == bh[..] {
        bh.len()
    } else {
        let mut seen = 0;
        let mut at = 0;
        for (i, e) in oh.iter().enumerate() {
            if seen == n_old {
                break;
            }
            if e.empty_layer() != Some(true) {
                seen += 1;
            }
            at = i + 1;
        }
        if seen < n_old {
            oh.len()
        } else {
            at
        }
    };
    let mut history = aligned_history(&new_base.config, new_base.layers.len());
    history.extend(oh[split..].iter().cloned());

    let mut config = orig.config.clone();
    config.set_os(new_base.config.os().clone());
    config.set_architecture(new_base.config.architecture().clone());
    config.set_variant(new_base.config.variant().clone());
    config.set_os_version(new_base.config.os_version().clone());
    config.set_os_features(new_base.config.os_features().clone());
    let mut diff_ids: Vec<String> = new_base.layers.iter().map(|l| l.diff_id.to_string()).collect();
    diff_ids.extend(orig.layers[n_old..].iter().map(|l| l.diff_id.to_string()));
    config.rootfs_mut().set_diff_ids(diff_ids);
    config.set_history(Some(history));

    let mut layers = oci_layers(new_base);
    layers.extend(oci_layers(orig).into_iter().skip(n_old));
    Image::from_values(config, layers, orig.manifest.annotations().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_layer(n: u8) -> LayerBlob {
        LayerBlob {
            diff_id: Digest::of_bytes(&[n, 0]),
            digest: Digest::of_bytes(&[n, 1]),
            size: 100 + n as u64,
            media_type: Compression::Gzip.media_type().into(),
            compression: Compression::Gzip,
        }
    }

    fn img_with(layers: &[u8]) -> Image {
        let mut img = scratch("linux", "amd64").unwrap();
        for &n in layers {
            img = append_layer(&img, &fake_layer(n), &format!("layer {n}")).unwrap();
        }
        img
    }

    #[test]
    fn scratch_is_canonical_and_stable() {
        let s = scratch("linux", "amd64").unwrap();
        assert_eq!(
            std::str::from_utf8(s.config_bytes()).unwrap(),
            r#"{"architecture":"amd64","config":{},"created":"1980-01-01T00:00:01Z","history":[],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
        assert_eq!(s, scratch("linux", "amd64").unwrap());
        assert!(s.layers().is_empty());
        assert_eq!(s.platform(), ("linux".into(), "amd64".into()));
        let m: Value = serde_json::from_slice(s.manifest_bytes()).unwrap();
        assert_eq!(m["mediaType"], super::super::MEDIA_TYPE_MANIFEST);
        assert_eq!(m["config"]["mediaType"], super::super::MEDIA_TYPE_CONFIG);
        assert!(!s.manifest_bytes().contains(&b'\n'));
    }

    #[test]
    fn append_adds_layer_diff_id_and_history() {
        let img = img_with(&[1, 2]);
        assert_eq!(img.layers(), &[fake_layer(1), fake_layer(2)]);
        assert_eq!(img.config().rootfs().diff_ids().len(), 2);
        let h = history(img.config());
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].created_by().as_deref(), Some("layer 2"));
        assert_eq!(h[1].created().as_deref(), Some(CREATED));
        assert_eq!(img.manifest().layers()[1].size(), 102);
    }

    #[test]
    fn labels_serialise_in_sorted_order() {
        let mut p = ConfigPatch::default();
        for k in ["zeta", "alpha", "mid", "beta", "omega", "kappa"] {
            p.labels.insert(k.into(), "v".into());
        }
        p.exposed_ports = vec!["8080/tcp".into(), "443/tcp".into(), "53/udp".into()];
        let a = with_config(&img_with(&[1]), &p).unwrap();
        let s = String::from_utf8(a.config_bytes().to_vec()).unwrap();
        assert!(s.contains(r#""ExposedPorts":{"443/tcp":{},"53/udp":{},"8080/tcp":{}}"#), "{s}");
        assert!(s.contains(r#""Labels":{"alpha":"v","beta":"v","kappa":"v","mid":"v","omega":"v","zeta":"v"}"#), "{s}");
        for _ in 0..5 {
            assert_eq!(with_config(&img_with(&[1]), &p).unwrap().digest(), a.digest());
        }
    }

    #[test]
    fn with_config_sets_and_merges() {
        let p = ConfigPatch {
            entrypoint: Some(vec!["/app".into()]),
            cmd: Some(vec!["serve".into()]),
            env: vec![("PATH".into(), "/bin".into()), ("A".into(), "1".into())],
            user: Some("1000:1000".into()),
            workdir: Some("/workspace".into()),
            labels: [("l".to_string(), "1".to_string())].into(),
            exposed_ports: vec!["80/tcp".into()],
        };
        let a = with_config(&img_with(&[1]), &p).unwrap();
        let p2 = ConfigPatch {
            env: vec![("PATH".into(), "/usr/bin".into())],
            labels: [("m".to_string(), "2".to_string())].into(),
            ..Default::default()
        };
        let b = with_config(&a, &p2).unwrap();
        let c = b.config().config().clone().unwrap();
        assert_eq!(c.entrypoint().as_deref(), Some(&["/app".to_string()][..]));
        assert_eq!(c.cmd().as_deref(), Some(&["serve".to_string()][..]));
        assert_eq!(c.env().as_deref(), Some(&["PATH=/usr/bin".to_string(), "A=1".to_string()][..]));
        assert_eq!(c.user().as_deref(), Some("1000:1000"));
        assert_eq!(c.working_dir().as_deref(), Some("/workspace"));
        assert_eq!(c.labels().as_ref().unwrap().len(), 2);
        assert_eq!(b.layers(), a.layers());
        assert_ne!(b.digest(), a.digest());
        assert_eq!(with_config(&b, &ConfigPatch::default()).unwrap().digest(), b.digest());
    }

    #[test]
    fn round_trips_through_blobs() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path()).unwrap();
        let img = with_created(&img_with(&[1, 2, 3]), "2024-01-02T03:04:05Z").unwrap();
        let (d, size) = img.write_to(&blobs).unwrap();
        assert_eq!((&d, size), (img.digest(), img.manifest_bytes().len() as u64));
        assert_eq!(Image::load(&blobs, &d).unwrap(), img);
        assert_eq!(img.missing_layers(&blobs).len(), 3);
        // corrupt config: refused naming the digest
        std::fs::write(blobs.path(img.config_digest()), b"{}").unwrap();
        let err = Image::load(&blobs, &d).unwrap_err();
        assert!(err.to_string().contains(&img.config_digest().to_string()), "{err}");
    }

    #[test]
    fn from_bytes_rejects_inconsistent_documents() {
        let img = img_with(&[1]);
        // config digest mismatch
        assert!(matches!(
            Image::from_bytes(img.manifest_bytes().to_vec(), b"{}".to_vec()),
            Err(OciError::DigestMismatch { .. })
        ));
        // not JSON / an index
        assert!(Image::from_bytes(b"nope".to_vec(), vec![]).is_err());
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#.to_vec();
        assert!(matches!(Image::from_bytes(idx, vec![]), Err(OciError::InvalidImage { .. })));
        // layer/diff_id count mismatch
        let mut config: Value = serde_json::from_slice(img.config_bytes()).unwrap();
        config["rootfs"]["diff_ids"] = Value::Array(vec![]);
        let cb = serde_json::to_vec(&config).unwrap();
        let mut m: Value = serde_json::from_slice(img.manifest_bytes()).unwrap();
        m["config"]["digest"] = Value::String(Digest::of_bytes(&cb).to_string());
        m["config"]["size"] = Value::from(cb.len());
        let err = Image::from_bytes(serde_json::to_vec(&m).unwrap(), cb).unwrap_err();
        assert!(err.to_string().contains("1 layers but 0 diff_ids"), "{err}");
    }

    #[test]
    fn config_without_history_loads() {
        let cb = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
            Digest::of_bytes(&cb),
            cb.len()
        );
        let img = Image::from_bytes(m.into_bytes(), cb).unwrap();
        assert!(history(img.config()).is_empty());
        assert_eq!(img.manifest_media_type(), "application/vnd.docker.distribution.manifest.v2+json");
        // mutating turns it into an OCI manifest and gives the layers history
        let b = append_layer(&img, &fake_layer(9), "x").unwrap();
        assert_eq!(b.manifest_media_type(), super::super::MEDIA_TYPE_MANIFEST);
    }

    #[test]
    fn rebase_swaps_the_base() {
        let old = img_with(&[1, 2]);
        let new = img_with(&[5, 6, 7]);
        let app = with_config(
            &append_layer(&append_layer(&old, &fake_layer(3), "app 3").unwrap(), &fake_layer(4), "app 4").unwrap(),
            &ConfigPatch { user: Some("cnb".into()), ..Default::default() },
        )
        .unwrap();
        let r = rebase(&app, &old, &new).unwrap();
        let ds: Vec<&Digest> = r.layers().iter().map(|l| &l.digest).collect();
        let want: Vec<Digest> = [5, 6, 7, 3, 4].iter().map(|&n| fake_layer(n).digest).collect();
        assert_eq!(ds, want.iter().collect::<Vec<_>>());
        let h: Vec<Option<String>> = history(r.config()).iter().map(|h| h.created_by().clone()).collect();
        assert_eq!(h, ["layer 5", "layer 6", "layer 7", "app 3", "app 4"].map(|s| Some(s.to_string())));
        assert_eq!(r.config().config().as_ref().unwrap().user().as_deref(), Some("cnb"));
        assert_eq!(r.diff_ids().len(), 5);
        // rebasing back gives the original image again
        assert_eq!(rebase(&r, &new, &old).unwrap().digest(), app.digest());
    }

    #[test]
    fn rebase_refuses_a_wrong_base_or_platform() {
        let old = img_with(&[1, 2]);
        let app = append_layer(&old, &fake_layer(3), "app").unwrap();
        let other = img_with(&[1, 9]);
        let err = rebase(&app, &other, &img_with(&[5])).unwrap_err();
        assert!(err.to_string().contains("layer 1"), "{err}");
        let err = rebase(&app, &img_with(&[1, 2, 3, 4]), &img_with(&[5])).unwrap_err();
        assert!(err.to_string().contains("fewer"), "{err}");
        let arm = append_layer(&scratch("linux", "arm64").unwrap(), &fake_layer(5), "x").unwrap();
        assert!(rebase(&app, &old, &arm).is_err());
        assert_eq!(rebase_with(&app, &old, &arm, true).unwrap().platform().1, "arm64");
    }

    #[test]
    fn rebase_pads_history_of_bases_without_it() {
        let old = img_with(&[1]);
        let mut cfg = img_with(&[5]).config().clone();
        cfg.set_history(Some(vec![]));
        let new = Image::from_values(cfg, oci_layers(&img_with(&[5])), None).unwrap();
        let app = append_layer(&old, &fake_layer(3), "app").unwrap();
        let r = rebase(&app, &old, &new).unwrap();
        assert_eq!(history(r.config()).len(), 2);
        assert_eq!(history(r.config())[1].created_by().as_deref(), Some("app"));
    }
}
