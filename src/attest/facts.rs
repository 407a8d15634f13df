//! What an image is made of, read from the action graph and the build's outputs: the OS packages of
//! the Debian images it sits on (from their lock files), the buildpacks that built it (id, version,
//! a digest of their tree), the images under it and used to build it, the buildpacks' own SBOM
//! files in its SBOM layer, and the workspace files that define it. Nothing here formats a document.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::error::AttestError;
use crate::cas::BlobDir;
use crate::model::action::{ActionGraph, ActionId, ActionKind, ActionOutput, OutFile};
use crate::model::digest::Digest;
use crate::model::label::Label;

/// Everything the documents say about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// The target (`//services/api:image`).
    pub label: String,
    /// The image manifest: digest, size, media type.
    pub manifest: Digest,
    pub manifest_size: u64,
    pub media_type: String,
    pub os: String,
    pub architecture: String,
    /// RFC 3339, from SOURCE_DATE_EPOCH (the documents' only timestamp).
    pub created: String,
    /// Images whose layers this image holds (a run image, an `oci_image`'s base, ...), bottom last.
    pub bases: Vec<ImageRef>,
    /// Images used to build it whose layers it does not hold (build images, builders, a hermetic
    /// genrule's image).
    pub build_images: Vec<ImageRef>,
    /// Debian packages in the image (from the locks of the Debian images it holds).
    pub packages: Vec<DebPackage>,
    /// Debian packages of the build images (not in the image).
    pub build_packages: Vec<DebPackage>,
    /// The buildpacks of the group that built it, in group order.
    pub buildpacks: Vec<BuildpackUse>,
    /// The buildpacks' SBOM files in its SBOM layer.
    pub cnb_sboms: Vec<CnbSbom>,
    /// Workspace files that define the target and what it depends on (BUILD.star, loaded `.star`
    /// files, lock files, cbuild.toml), with their sha256, sorted by path.
    pub definition_files: Vec<(String, Digest)>,
}

/// An image the subject holds or was built with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    /// `run-image`, `base`, `build-image`, `builder`, `buildpackage`, `genrule-image`.
    pub role: String,
    /// The target that provides it (`//stacks:run-image`).
    pub label: String,
    /// The registry reference it was pulled from (`oci_pull`).
    pub reference: Option<String>,
    /// The workspace layout or archive it was imported from (`oci_import`).
    pub layout: Option<String>,
    /// Its manifest digest.
    pub digest: Digest,
}

/// One Debian package, as its lock pins it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// sha256 of the `.deb`.
    pub sha256: Digest,
    /// `pool/main/...`.
    pub filename: String,
    pub suite: String,
    /// The lock file (workspace path) and the `debian_image` target.
    pub lock: String,
    pub image: String,
    /// The licence short names its DEP-5 `copyright` file in the image states
    /// (`/usr/share/doc/<name>/copyright`); `None` when the image has no machine-readable one
    /// (or the package is not in the image).
    pub licenses: Option<Vec<String>>,
}

/// A buildpack of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildpackUse {
    pub id: String,
    pub version: String,
    pub homepage: Option<String>,
    /// `[[buildpack.licenses]] type` values.
    pub licenses: Vec<String>,
    /// sha256 of its tree (the canonical JSON listing of its files: path → content digest and
    /// executable bit), when its tree is known.
    pub digest: Option<Digest>,
    /// The `buildpack` target, or the image it came from (a builder or buildpackage).
    pub source: String,
}

/// A CNB SBOM file of the image's SBOM layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CnbSbom {
    pub buildpack: String,
    /// The layer it describes (`None`: the buildpack's `launch.sbom.<ext>`).
    pub layer: Option<String>,
    /// `cdx.json`, `spdx.json`, `syft.json`.
    pub format: String,
    /// Its path in the image (`/layers/sbom/launch/<escaped-id>/...`).
    pub path: String,
    pub sha256: Digest,
    /// SHA-1 of the file (SPDX 2.3 requires one for files).
    pub sha1: String,
    pub size: u64,
}

/// What [`collect`] reads.
pub struct Inputs<'a> {
    /// The workspace root (lock files and BUILD files are read from it).
    pub root: &'a Path,
    pub graph: &'a ActionGraph,
    /// The build's outputs, by action.
    pub outputs: &'a [Option<Arc<ActionOutput>>],
    pub cas: &'a BlobDir,
    pub source_date_epoch: u64,
    /// Per package (`services/api`, `""` for the root): the BUILD and `.star` files it loads.
    pub package_files: &'a BTreeMap<String, BTreeSet<String>>,
    /// Where facts that take a while to read are remembered (per image digest), if anywhere.
    pub memo_dir: Option<&'a Path>,
}

/// Collects the facts of image target `label` whose (possibly stamped) manifest is `manifest`.
pub fn collect(inp: &Inputs<'_>, label: &Label, manifest: &Digest) -> Result<ImageFacts, AttestError> {
    let id = *inp
        .graph
        .target_outputs
        .get(label)
        .ok_or_else(|| AttestError::internal(format!("`{label}` has no output")))?;
    let img = crate::oci::Image::load(inp.cas, manifest).map_err(|e| AttestError::of("reading the image", e))?;
    let (os, architecture) = img.platform();
    let facts = ImageFacts {
        label: label.to_string(),
        manifest: manifest.clone(),
        manifest_size: img.manifest_bytes().len() as u64,
        media_type: img.manifest_media_type(),
        os,
        architecture,
        created: rfc3339(inp.source_date_epoch),
        bases: Vec::new(),
        build_images: Vec::new(),
        packages: Vec::new(),
        build_packages: Vec::new(),
        buildpacks: Vec::new(),
        cnb_sboms: Vec::new(),
        definition_files: Vec::new(),
    };
    let mut w = Walker { inp, facts, seen: BTreeSet::new(), packages: BTreeSet::new(), locks: BTreeSet::new() };
    w.visit(id, Role::Subject)?;
    let mut facts = w.facts;
    // Definition files: every package the walk reached, plus the lock files and cbuild.toml.
    let mut files: BTreeSet<String> = w.locks;
    files.insert("cbuild.toml".to_string());
    for p in &w.packages {
        files.extend(inp.package_files.get(p).into_iter().flatten().cloned());
    }
    for f in files {
        let path = inp.root.join(&f);
        match std::fs::read(&path) {
            Ok(bytes) => facts.definition_files.push((f, Digest::of_bytes(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AttestError::Io { path: path.display().to_string(), source: e }),
        }
    }
    facts.packages.sort();
    facts.packages.dedup();
    facts.build_packages.sort();
    facts.build_packages.dedup();
    facts.build_packages.retain(|p| !facts.packages.contains(p));
    facts.build_images.sort();
    facts.build_images.dedup();
    Ok(facts)
}

/// How the walk reached an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// The image the documents describe.
    Subject,
    /// An image whose layers the subject holds, in this role (`run-image`, `base`).
    InImage(&'static str),
    /// Used to build the subject (`build-image`, `builder`, ...), not in it.
    Build(&'static str),
}

struct Walker<'a, 'b> {
    inp: &'b Inputs<'a>,
    facts: ImageFacts,
    seen: BTreeSet<(ActionId, Role)>,
    /// Packages (as strings) of every action reached.
    packages: BTreeSet<String>,
    /// Lock files read.
    locks: BTreeSet<String>,
}

impl Walker<'_, '_> {
    fn output(&self, id: ActionId) -> Option<&ActionOutput> {
        self.inp.outputs.get(id).and_then(|o| o.as_deref())
    }

    fn manifest_of(&self, id: ActionId) -> Option<Digest> {
        match self.output(id) {
            Some(ActionOutput::Image { manifest, .. }) => Some(manifest.clone()),
            _ => None,
        }
    }

    /// Records an image the subject holds or was built with.
    fn record(&mut self, id: ActionId, role: Role, reference: Option<String>) {
        self.record_from(id, role, reference, None)
    }

    fn record_from(&mut self, id: ActionId, role: Role, reference: Option<String>, layout: Option<String>) {
        let Some(digest) = self.manifest_of(id) else { return };
        let label = self.inp.graph.actions[id].label.to_string();
        match role {
            Role::Subject => {}
            Role::InImage(r) => {
                let r = ImageRef { role: r.to_string(), label, reference, layout, digest };
                if !self.facts.bases.contains(&r) {
                    self.facts.bases.push(r);
                }
            }
            Role::Build(r) => {
                self.facts.build_images.push(ImageRef { role: r.to_string(), label, reference, layout, digest })
            }
        }
    }

    fn visit(&mut self, id: ActionId, role: Role) -> Result<(), AttestError> {
        if !self.seen.insert((id, role)) {
            return Ok(());
        }
        let a = &self.inp.graph.actions[id];
        self.packages.insert(a.label.package.as_str().to_string());
        let in_image = matches!(role, Role::Subject | Role::InImage(_));
        match &a.kind {
            ActionKind::Image { base, layers, .. } => {
                self.record(id, role, None);
                if let Some(b) = base {
                    self.visit(*b, if in_image { Role::InImage("base") } else { Role::Build("build-base") })?;
                }
                for l in layers {
                    self.visit(*l, Role::Build("input"))?;
                }
            }
            ActionKind::DebianImage(spec) => {
                self.record(id, role, None);
                let file = crate::debian::Lock::read(&self.inp.root.join(&spec.lock))
                    .map_err(|e| AttestError::of(&format!("reading `{}`", spec.lock), e))?;
                // The section of the image's own architecture (a multi-platform lock has several).
                let lock = file.for_architecture(&spec.architecture).unwrap_or(file);
                self.locks.insert(spec.lock.clone());
                let pkgs = lock.packages.iter().map(|p| DebPackage {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    architecture: p.architecture.clone(),
                    sha256: p.sha256.clone(),
                    filename: p.filename.clone(),
                    suite: lock.suite.clone(),
                    lock: spec.lock.clone(),
                    image: a.label.to_string(),
                    licenses: None,
                });
                if in_image {
                    let licenses = self.deb_licenses(id, &lock)?;
                    self.facts.packages.extend(pkgs.map(|mut p| {
                        p.licenses = licenses.get(&p.name).cloned().flatten();
                        p
                    }));
                } else {
                    self.facts.build_packages.extend(pkgs);
                }
            }
            ActionKind::PullImage { image, .. } => self.record(id, role, Some(image.clone())),
            ActionKind::ImportImage { path, .. } => self.record_from(id, role, None, Some(path.clone())),
            ActionKind::BuilderRunImage { builder } => {
                self.record(id, role, None);
                self.visit(*builder, Role::Build("builder"))?;
            }
            ActionKind::CnbExport(spec) => {
                self.visit(spec.run_image, if in_image { Role::InImage("run-image") } else { role })?;
                if let Some(b) = spec.builder {
                    self.visit(b, Role::Build("builder"))?;
                }
                if in_image {
                    self.buildpacks(spec.build)?;
                }
                self.visit(spec.build, Role::Build("input"))?;
            }
            ActionKind::CnbBuild { phase, .. } | ActionKind::CnbDetect(phase) => {
                self.visit(phase.build_image, Role::Build("build-image"))?;
                for d in &a.deps {
                    if *d != phase.build_image && Some(*d) != phase.run_image {
                        self.visit(*d, Role::Build("input"))?;
                    }
                }
            }
            ActionKind::ReadBuilder { image, .. } => self.visit(*image, Role::Build("builder"))?,
            ActionKind::ReadBuildpackage { image, .. } => self.visit(*image, Role::Build("buildpackage"))?,
            ActionKind::Genrule { image: Some(img), .. } => {
                self.visit(*img, Role::Build("genrule-image"))?;
                for d in a.deps.iter().filter(|d| *d != img) {
                    self.visit(*d, Role::Build("input"))?;
                }
            }
            _ => {
                if role == Role::Subject {
                    self.record(id, role, None);
                }
                if let Role::Build(r) = role {
                    if r != "input" {
                        self.record(id, role, None);
                    }
                }
                for d in &a.deps {
                    self.visit(*d, Role::Build("input"))?;
                }
            }
        }
        Ok(())
    }

    /// The licences each package of `lock` states in Debian image `id` (its DEP-5 copyright files,
    /// read from the image's layers without extracting them; symlinked doc directories followed
    /// inside the image). Remembered per image digest in `memo_dir`: reading the layers of a
    /// Debian image takes a while, and its digest fixes the answer.
    fn deb_licenses(
        &self,
        id: ActionId,
        lock: &crate::debian::Lock,
    ) -> Result<BTreeMap<String, Option<Vec<String>>>, AttestError> {
        let Some(manifest) = self.manifest_of(id) else { return Ok(BTreeMap::new()) };
        let memo = self.inp.memo_dir.map(|d| d.join(format!("deb-licenses-v1-{}.json", manifest.hex())));
        if let Some(bytes) = memo.as_ref().and_then(|m| std::fs::read(m).ok()) {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                return Ok(v);
            }
        }
        let img =
            crate::oci::Image::load(self.inp.cas, &manifest).map_err(|e| AttestError::of("reading the image", e))?;
        let layers: Vec<Digest> = img.layers().iter().map(|l| l.digest.clone()).collect();
        if layers.iter().any(|d| !self.inp.cas.contains(d)) {
            return Ok(BTreeMap::new());
        }
        let tree = crate::oci::tree::ImageTree::read(self.inp.cas, &layers)
            .map_err(|e| AttestError::of("reading the Debian image's layers", e))?;
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        for p in &lock.packages {
            if let Some((path, _)) = tree.resolve(&format!("usr/share/doc/{}/copyright", p.name)) {
                want.insert(p.name.clone(), path);
            }
        }
        let paths: Vec<String> = want.values().cloned().collect();
        let contents =
            tree.contents(self.inp.cas, &paths, 4 << 20).map_err(|e| AttestError::of("reading copyright files", e))?;
        let out: BTreeMap<String, Option<Vec<String>>> = lock
            .packages
            .iter()
            .map(|p| {
                let text = want.get(&p.name).and_then(|path| contents.get(path));
                let l = text.and_then(|t| crate::debian::copyright::licenses(&String::from_utf8_lossy(t)));
                (p.name.clone(), l)
            })
            .collect();
        if let (Some(m), Ok(json)) = (memo, serde_json::to_vec(&out)) {
            let _ = crate::fs::write_atomic(&m, &json);
        }
        Ok(out)
    }

    /// The buildpacks of the group of build action `build` and their SBOM files in the image.
    fn buildpacks(&mut self, build: ActionId) -> Result<(), AttestError> {
        let ActionKind::CnbBuild { phase, .. } = &self.inp.graph.actions[build].kind else { return Ok(()) };
        let Some(ActionOutput::Data { json, .. }) = self.output(build) else { return Ok(()) };
        let r: crate::execution::runners::cnb_build::BuildResult =
            serde_json::from_str(json).map_err(|e| AttestError::internal(format!("a build result: {e}")))?;
        // Every buildpack tree the phase had: (tree, where it came from).
        let mut trees: Vec<(BTreeMap<String, OutFile>, String)> = Vec::new();
        let mut sets = phase.buildpacks.clone();
        sets.extend(phase.builder);
        for bp in sets {
            let from = self.inp.graph.actions[bp].label.to_string();
            match self.output(bp) {
                Some(ActionOutput::Files { files }) => trees.push((files.clone(), from)),
                Some(o @ ActionOutput::Data { .. }) => {
                    let set = crate::execution::runners::cnb_dist::from_output::<serde_json::Value>(o, "buildpacks")
                        .unwrap_or_default();
                    for b in set["buildpacks"].as_array().into_iter().flatten() {
                        if let Ok(files) = serde_json::from_value::<BTreeMap<String, OutFile>>(b["files"].clone()) {
                            trees.push((files, from.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut described: Vec<(crate::cnb::buildpack_toml::BuildpackDescriptor, Digest, String)> = Vec::new();
        for (files, from) in trees {
            let Some(toml) = files.get("buildpack.toml") else { continue };
            let Ok(bytes) = self.inp.cas.read_verified(&toml.digest) else { continue };
            let Ok(text) = String::from_utf8(bytes) else { continue };
            let Ok(desc) = crate::cnb::buildpack_toml::BuildpackDescriptor::parse(&text, Path::new("buildpack.toml"))
            else {
                continue;
            };
            let digest = Digest::of_bytes(ActionOutput::Files { files }.to_json().as_bytes());
            described.push((desc, digest, from));
        }
        for m in &r.group {
            let found = described.iter().find(|(d, _, _)| {
                crate::cnb::buildpack_toml::same_id(&d.info.id, &m.id) && d.info.version == m.version
            });
            self.facts.buildpacks.push(BuildpackUse {
                id: m.id.clone(),
                version: m.version.clone(),
                homepage: m.homepage.clone().or_else(|| found.and_then(|f| f.0.info.homepage.clone())),
                licenses: found
                    .map(|f| f.0.info.licenses.iter().filter_map(|l| l.kind.clone()).collect())
                    .unwrap_or_default(),
                digest: found.map(|f| f.1.clone()),
                source: found.map(|f| f.2.clone()).unwrap_or_default(),
            });
        }
        // SBOM files of the SBOM layer, as the build runner lays them out.
        if r.sbom_layer.is_some() {
            for b in &r.buildpacks {
                let esc = crate::cnb::buildpack_toml::escape_id(&b.id);
                let mut files: Vec<(Option<String>, &String, &Digest)> =
                    b.launch_sbom.iter().map(|(e, d)| (None, e, d)).collect();
                for (name, l) in b.layers.iter().filter(|(_, l)| l.types.launch) {
                    files.extend(l.sbom.iter().map(|(e, d)| (Some(name.clone()), e, d)));
                }
                for (layer, ext, d) in files {
                    let bytes =
                        self.inp.cas.read_verified(d).map_err(|e| AttestError::of("reading a buildpack SBOM", e))?;
                    self.facts.cnb_sboms.push(CnbSbom {
                        buildpack: b.id.clone(),
                        path: format!(
                            "/layers/sbom/launch/{}",
                            crate::cnb::sbom::sbom_dir_path(&esc, layer.as_deref(), ext)
                        ),
                        layer,
                        format: ext.clone(),
                        sha256: d.clone(),
                        sha1: sha1_hex(&bytes),
                        size: bytes.len() as u64,
                    });
                }
            }
        }
        Ok(())
    }
}

/// SHA-1 (hex) of bytes: SPDX 2.3 files must carry one.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref())
}

/// Seconds since the epoch as RFC 3339 (`1980-01-01T00:00:01Z`).
pub fn rfc3339(secs: u64) -> String {
    crate::execution::runners::image::rfc3339(secs)
}

/// A package URL of a Debian package: `pkg:deb/debian/<name>@<version>?arch=<arch>&distro=<suite>`.
pub fn deb_purl(p: &DebPackage) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}&distro={}",
        pct(&p.name),
        pct(&p.version),
        pct(&p.architecture),
        pct(&p.suite)
    )
}

/// A package URL of an OCI image: `pkg:oci/<name>@sha256%3A<hex>` (with `repository_url` when it
/// came from a registry).
pub fn oci_purl(name: &str, digest: &Digest, arch: Option<&str>, repository: Option<&str>) -> String {
    let mut q = Vec::new();
    if let Some(a) = arch {
        q.push(format!("arch={}", pct(a)));
    }
    if let Some(r) = repository {
        q.push(format!("repository_url={}", pct_keep_slash(r)));
    }
    let query = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
    format!("pkg:oci/{}@{}{query}", pct(&name.to_lowercase()), pct(&digest.to_string()))
}

/// Percent-encodes everything but the unreserved characters (purl spec).
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_keep_slash(s: &str) -> String {
    s.split('/').map(pct).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_encode_versions_and_digests() {
        let p = DebPackage {
            name: "libstdc++6".into(),
            version: "1:12.2.0-14+deb12u1".into(),
            architecture: "amd64".into(),
            sha256: Digest::of_bytes(b""),
            filename: String::new(),
            suite: "bookworm".into(),
            lock: String::new(),
            image: String::new(),
            licenses: None,
        };
        assert_eq!(deb_purl(&p), "pkg:deb/debian/libstdc%2B%2B6@1%3A12.2.0-14%2Bdeb12u1?arch=amd64&distro=bookworm");
        let d = Digest::of_bytes(b"x");
        let u = oci_purl("Image", &d, Some("amd64"), Some("127.0.0.1:5000/acme/app"));
        assert!(u.starts_with("pkg:oci/image@sha256%3A"), "{u}");
        assert!(u.ends_with("?arch=amd64&repository_url=127.0.0.1%3A5000/acme/app"), "{u}");
    }

    #[test]
    fn sha1_and_time() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(rfc3339(315_532_801), "1980-01-01T00:00:01Z");
    }
}
