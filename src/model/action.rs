//! The action graph: plain data produced by analysis and consumed by execution. An action is one
//! unit of cached work, a pure function of its inputs' digests. No Starlark value reaches this far.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::label::Label;

/// Index of an action in its [`ActionGraph`].
pub type ActionId = usize;

/// Where an input file comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Input {
    /// A workspace source file (workspace-relative path); hashed through the stat cache.
    Source(String),
    /// A file produced by another action (its output `path`).
    Output { action: ActionId, path: String },
}

/// One file placed into a layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFile {
    pub input: Input,
    /// Destination path inside the image, relative to `/` (no leading slash).
    pub dest: String,
}

/// Image configuration requested by an `oci_image` target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigSpec {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
    /// The platform's variant (`v7` of `linux/arm/v7`) when the image is built for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What an action does, with every parameter it depends on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// Run `cmd` in a sandbox where only `srcs` are visible; keep `outs`.
    Genrule {
        srcs: Vec<(String, Input)>,
        outs: Vec<String>,
        cmd: String,
        env: BTreeMap<String, String>,
        /// The image whose root file system the command runs in (`None`: the host's tools).
        #[serde(default)]
        image: Option<ActionId>,
    },
    /// Pack files into one reproducible layer.
    Layer {
        files: Vec<LayerFile>,
        /// Explicit mode for every file; `None` keeps 0755 for executables and 0644 otherwise.
        mode: Option<u32>,
        uid: u32,
        gid: u32,
        symlinks: BTreeMap<String, String>,
        /// Extra directories: path → (mode, uid, gid).
        dirs: BTreeMap<String, (u32, u32, u32)>,
        compression: String,
    },
    /// Bring in an image from an OCI layout directory or an archive in the workspace.
    ImportImage { path: String, tag: Option<String>, files: Vec<String> },
    /// Assemble an image: base (dependency action or scratch) + layers + config.
    /// Store a buildpack's tree (paths relative to the directory holding buildpack.toml) in the
    /// CAS and check its buildpack.toml.
    Buildpack { root: String, files: Vec<(String, Input)> },
    /// A root filesystem image from the Debian packages a lock file pins.
    DebianImage(DebianSpec),
    /// Resolve a registry reference to a manifest + config (shallow; layers stay remote).
    PullImage { image: String, digest: Option<String>, platform: Option<String> },
    /// Run every buildpack's `bin/detect` of a builder's order against the app and resolve the group
    /// and build plan (CNB detect phase).
    CnbDetect(CnbPhase),
    /// Run the chosen group's `bin/build` (CNB build phase); produces launch layers, the app layer and
    /// metadata. Depends on the build image only, never on the run image (so a new run image rebases).
    CnbBuild { phase: CnbPhase, detect: ActionId },
    /// Assemble the app image: run image + launch layers + app + launcher + config + process types.
    CnbExport(CnbExportSpec),
    /// `layer_labels` name each layer's target in the image history (`created_by`).
    Image { base: Option<ActionId>, layers: Vec<ActionId>, layer_labels: Vec<String>, config: ImageConfigSpec },
    /// Read a builder image the way the lifecycle does (`/cnb/buildpacks`, `/cnb/order.toml`,
    /// `/cnb/run.toml`, the build user, build-config env, system buildpacks). `name` (a reference
    /// or label) names the image in errors. Output: [`Data`](ActionOutput::Data).
    ReadBuilder { image: ActionId, name: String },
    /// Read a buildpackage image (or a `.cnb` imported as one): one tree per buildpack, and the one
    /// it stands for. Output: [`Data`](ActionOutput::Data).
    ReadBuildpackage { image: ActionId, name: String },
    /// The run image a builder image names (`/cnb/run.toml`), resolved in its registry on every
    /// build (the builder names it by tag). Output: a shallow image, as `PullImage`.
    BuilderRunImage { builder: ActionId },
    /// A builder image (distribution spec) assembled from a `builder` target.
    BuilderImage(BuilderImageSpec),
    /// A buildpackage image (distribution spec) of a buildpack and, for a composite, the
    /// buildpacks its order names.
    Buildpackage { buildpack: ActionId, buildpacks: Vec<ActionId>, os: String, architecture: String },
    /// Check an image (`image_test`): structure, commands run in it, a service it starts. Its
    /// output is a pass ([`super::test_spec::TestResult`]); a failure is an error, never stored.
    ///
    /// An `integration_test` is the same kind of action (a verdict, cached and reported the same
    /// way) with `integration` set: its own runner starts every image of `integration` together
    /// and runs its test command; `image` is then its first image and `spec` holds no checks, only
    /// the timeout and the run policy.
    ImageTest {
        image: ActionId,
        spec: super::test_spec::TestSpec,
        /// A container-structure-test file (workspace-relative), read when the test runs.
        config: Option<String>,
        /// Set for an `integration_test`.
        #[serde(default)]
        integration: Option<Box<super::test_spec::IntegrationSpec>>,
    },
    /// An OCI image index over one image per platform (a target with several `platforms`): the
    /// images' manifests in the given order, each descriptor carrying its config's platform.
    ImageIndex {
        images: Vec<ActionId>,
        /// The platform each image is built for (`os/arch[/variant]`), checked against its config.
        platforms: Vec<String>,
    },
}

/// What the detect and build phases of a `cnb_image` share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnbPhase {
    /// App files: path relative to /workspace → input.
    pub app: Vec<(String, Input)>,
    /// The builder's order: groups of (buildpack action, optional).
    pub order: Vec<Vec<(ActionId, bool)>>,
    /// Every buildpack action available (order members and composite children).
    pub buildpacks: Vec<ActionId>,
    pub build_image: ActionId,
    /// The stack's run image: its target (os, arch, variant, `io.buildpacks.base.distro.*`
    /// labels) is what buildpacks are matched against and see as `CNB_TARGET_*`, as in the
    /// lifecycle (whose analyzer reads it from the run image).
    #[serde(default)]
    pub run_image: Option<ActionId>,
    pub stack_id: String,
    pub uid: u32,
    pub gid: u32,
    /// Platform env (`<platform>/env/NAME`).
    pub env: BTreeMap<String, String>,
    pub network: bool,
    /// Service bindings: name → absolute host directory (read at build time, values never stored).
    #[serde(default)]
    pub bindings: BTreeMap<String, String>,
    /// A `ReadBuilder` action (`builder(image = ...)`): its buildpacks join `buildpacks`, its order
    /// is used when `order` is empty, its build-config env and system buildpacks apply.
    #[serde(default)]
    pub builder: Option<ActionId>,
    /// uid, gid and stack id come from the builder image (no `stack` given to the builder).
    #[serde(default)]
    pub identity_from_builder: bool,
    /// Groups from the app's project.toml, resolved against the phase's buildpacks when it runs.
    #[serde(default)]
    pub project: Option<ProjectGroups>,
    /// A builder.toml (`builder(config = ...)`): its order by id (when `order` is empty), build
    /// env and system buildpacks.
    #[serde(default)]
    pub config: Option<BuilderConfig>,
}

/// What a workspace builder takes from pack's builder.toml, as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderConfig {
    /// The builder.toml (workspace-relative), named in errors.
    pub file: String,
    /// `[[order]]`: groups of buildpacks by id (and version), resolved when the phase runs.
    pub order: Vec<Vec<ProjectRef>>,
    /// `[[build.env]]` as build-config env files (`NAME[.suffix]`, `NAME.delim`) → contents.
    pub build_env: BTreeMap<String, String>,
    pub system_pre: Vec<ProjectRef>,
    pub system_post: Vec<ProjectRef>,
}

/// `[[io.buildpacks.group]]` and pre/post groups of a project.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectGroups {
    /// The project.toml (workspace-relative), named in errors.
    pub file: String,
    /// Replaces the builder's order with one group (empty: the builder's order).
    pub group: Vec<ProjectRef>,
    pub pre: Vec<ProjectRef>,
    pub post: Vec<ProjectRef>,
}

/// A buildpack of a project.toml group: by id (and version), or a `buildpack` target's action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRef {
    pub id: String,
    pub version: String,
    pub action: Option<ActionId>,
    pub optional: bool,
    /// Where it is written (`io.buildpacks.group[0] (line 5, column 1)`).
    pub key: String,
}

/// Parameters of a builder image assembled from a `builder` target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderImageSpec {
    pub build_image: ActionId,
    /// The order: groups of (buildpack action, optional), as in [`CnbPhase::order`].
    pub order: Vec<Vec<(ActionId, bool)>>,
    /// Every buildpack action (order members and composite children).
    pub buildpacks: Vec<ActionId>,
    /// Registry reference of the run image, and its mirrors (run.toml, stack.toml, labels).
    pub run_image: String,
    pub run_image_mirrors: Vec<String>,
    pub stack_id: String,
    pub uid: u32,
    pub gid: u32,
    /// An image holding a lifecycle in `/cnb/lifecycle` (copied into the builder).
    pub lifecycle: Option<ActionId>,
    pub description: String,
    /// A builder.toml's order (when `order` is empty), build env and system buildpacks.
    #[serde(default)]
    pub config: Option<BuilderConfig>,
}

/// Parameters of a `debian_image`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebianSpec {
    /// Workspace-relative path of the lock file.
    pub lock: String,
    /// The requested packages (must equal the lock's `requested`).
    pub packages: Vec<String>,
    pub suite: String,
    pub architecture: String,
    pub uid: u32,
    pub gid: u32,
    pub user_name: String,
    pub stack_id: String,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// Parameters of a `cnb_image`'s export (image assembly).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnbExportSpec {
    pub build: ActionId,
    pub run_image: ActionId,
    /// The run image's name as recorded in `runImage.image` (its label or a registry reference).
    pub run_image_name: String,
    pub run_image_mirrors: Vec<String>,
    pub stack_id: String,
    pub uid: u32,
    pub gid: u32,
    /// Default process type (`ENTRYPOINT /cnb/process/<type>`).
    pub process: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// A `ReadBuilder` action whose run.toml names the run image (and its mirrors) and whose
    /// config gives the user and stack id, instead of the fields above.
    #[serde(default)]
    pub builder: Option<ActionId>,
    /// The `io.buildpacks.project.metadata` label from project.toml (JSON).
    #[serde(default)]
    pub project_metadata: Option<String>,
}

impl ActionKind {
    /// Short name used in progress output, `explain` and the cache (`layer`, `image`, ...).
    pub fn mnemonic(&self) -> &'static str {
        match self {
            ActionKind::Buildpack { .. } => "buildpack",
            ActionKind::PullImage { .. } => "pull",
            ActionKind::DebianImage(_) => "debian",
            ActionKind::CnbDetect(_) => "detect",
            ActionKind::CnbBuild { .. } => "build",
            ActionKind::CnbExport(_) => "export",
            ActionKind::Genrule { .. } => "genrule",
            ActionKind::Layer { .. } => "layer",
            ActionKind::ImportImage { .. } => "import",
            ActionKind::Image { .. } => "image",
            ActionKind::ImageTest { integration: Some(_), .. } => "integration_test",
            ActionKind::ImageTest { .. } => "image_test",
            ActionKind::ReadBuilder { .. } => "read_builder",
            ActionKind::ReadBuildpackage { .. } => "read_buildpackage",
            ActionKind::BuilderRunImage { .. } => "run_image",
            ActionKind::BuilderImage(_) => "builder_image",
            ActionKind::Buildpackage { .. } => "buildpackage",
            ActionKind::ImageIndex { .. } => "index",
        }
    }
}

/// One node of the action graph.
#[derive(Clone, Debug)]
pub struct Action {
    pub id: ActionId,
    /// The target the action belongs to.
    pub label: Label,
    pub kind: ActionKind,
    /// Actions whose outputs this one reads; always smaller ids (the graph is built in topological order).
    pub deps: Vec<ActionId>,
}

/// The action graph of one build, with which action produces each requested target's result.
#[derive(Clone, Debug, Default)]
pub struct ActionGraph {
    pub actions: Vec<Action>,
    /// For each analysed target, the action producing its main output (an image, a layer, files).
    pub target_outputs: BTreeMap<Label, ActionId>,
    /// Targets whose output is an image (their layout is written to cbuild-out/).
    pub image_targets: Vec<Label>,
    /// Test targets (`image_test`): their action is in `target_outputs`.
    pub test_targets: Vec<Label>,
    /// Registry references each image target is pushed to (`tags`).
    pub image_tags: BTreeMap<Label, Vec<String>>,
    /// Targets of kinds whose actions are not implemented yet (rule kind), reported, never silent.
    pub not_buildable: Vec<(Label, String)>,
    /// Image targets also written as an OCI layout tar beside their layout
    /// (`buildpack_package(format = "file")`: `cbuild-out/<package>/<name>.cnb`).
    pub archives: Vec<Label>,
    /// Notes analysis has for the user (printed as `note:` unless quiet).
    pub notes: Vec<String>,
    /// The actions of each target, to find an equal one (see [`ActionGraph::add`]).
    by_label: BTreeMap<Label, Vec<ActionId>>,
}

impl ActionGraph {
    /// Adds an action, or returns the target's equal action already in the graph: a target analysed
    /// for two platforms whose actions do not depend on the platform (a `debian_image` asked for
    /// its own architecture by default and by name) gets one action, run once.
    pub fn add(&mut self, label: &Label, kind: ActionKind, mut deps: Vec<ActionId>) -> ActionId {
        deps.sort_unstable();
        deps.dedup();
        let mine = self.by_label.entry(label.clone()).or_default();
        if let Some(&same) = mine.iter().find(|&&i| self.actions[i].kind == kind && self.actions[i].deps == deps) {
            return same;
        }
        let id = self.actions.len();
        debug_assert!(deps.iter().all(|d| *d < id));
        mine.push(id);
        self.actions.push(Action { id, label: label.clone(), kind, deps });
        id
    }
}

/// The result of an action as stored in the cache (canonical JSON) and passed to dependents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionOutput {
    /// Output files (genrule): path → content digest in the CAS.
    Files { files: BTreeMap<String, OutFile> },
    /// A compressed layer blob.
    Layer { diff_id: Digest, digest: Digest, size: u64, media_type: String },
    /// Structured data of a CNB phase (JSON) with the blobs it references.
    Data { json: String, blobs: Vec<Digest> },
    /// An image: its manifest in the CAS (config and layers are reachable from it). Layers listed in
    /// `remote` are not in the CAS (a shallow `oci_pull` base): they are fetched from their registry
    /// only when their bytes are needed.
    Image {
        manifest: Digest,
        manifest_size: u64,
        config: Digest,
        blobs: Vec<Digest>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remote: Vec<RemoteBlob>,
    },
    /// An image index in the CAS and the images it lists (each an [`ActionOutput::Image`], in
    /// the index's order).
    Index { index: Digest, index_size: u64, images: Vec<ActionOutput> },
}

/// A layer that lives in a registry, not in the local CAS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteBlob {
    pub digest: Digest,
    /// A reference to an image in the repository holding it (`registry/repo@sha256:...`).
    pub source: String,
}

/// One output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutFile {
    pub digest: Digest,
    pub executable: bool,
}

impl ActionOutput {
    /// Every CAS blob the output references (so the cache keeps them and checks they exist).
    pub fn blobs(&self) -> Vec<Digest> {
        match self {
            ActionOutput::Files { files } => files.values().map(|f| f.digest.clone()).collect(),
            ActionOutput::Layer { digest, .. } => vec![digest.clone()],
            ActionOutput::Data { blobs, .. } => blobs.clone(),
            ActionOutput::Image { manifest, config, blobs, .. } => {
                // `blobs` lists local layers only; remote ones are not the cache's to keep.
                let mut v = vec![manifest.clone(), config.clone()];
                v.extend(blobs.iter().cloned());
                v
            }
            ActionOutput::Index { index, images, .. } => {
                let mut v = vec![index.clone()];
                v.extend(images.iter().flat_map(|i| i.blobs()));
                v
            }
        }
    }

    /// The remote (registry-held) layers of an image or of every image of an index.
    pub fn remote_blobs(&self) -> Vec<&RemoteBlob> {
        match self {
            ActionOutput::Image { remote, .. } => remote.iter().collect(),
            ActionOutput::Index { images, .. } => images.iter().flat_map(|i| i.remote_blobs()).collect(),
            _ => Vec::new(),
        }
    }

    /// Canonical JSON (struct field order is fixed, maps are BTreeMaps).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("action outputs always serialise")
    }
}
