//! The CNB distribution formats (buildpacks/spec `distribution.md`, `platform.md` › Files), read
//! and written: the labels of builder images and buildpackages (`io.buildpacks.builder.metadata`,
//! `io.buildpacks.buildpack.layers`, `io.buildpacks.buildpackage.metadata`,
//! `io.buildpacks.buildpack.order`) and the builder's `/cnb/order.toml`, `/cnb/run.toml`,
//! `/cnb/stack.toml` and `/cnb/system.toml`. Pure: reading layers is `execution`'s job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::buildpack_toml::{BuildpackDescriptor, BuildpackRef, OrderGroup};

/// Builder metadata (description, buildpacks, run images, lifecycle, creator).
pub const BUILDER_METADATA: &str = "io.buildpacks.builder.metadata";
/// Every buildpack of a builder or buildpackage: id → version → api, order, layer diff id.
pub const BUILDPACK_LAYERS: &str = "io.buildpacks.buildpack.layers";
/// A builder's order as JSON (pack writes it beside `/cnb/order.toml`).
pub const BUILDPACK_ORDER: &str = "io.buildpacks.buildpack.order";
/// The buildpack a buildpackage stands for: id, version, homepage, targets.
pub const BUILDPACKAGE_METADATA: &str = "io.buildpacks.buildpackage.metadata";
/// The deprecated stack id label.
pub const STACK_ID: &str = "io.buildpacks.stack.id";

/// A distribution file or label that breaks the spec, located: the image (or file) it came from,
/// the file or label, and the key.
#[derive(Debug, thiserror::Error)]
#[error("{subject}: `{file}`{}: {reason}", if key.is_empty() { String::new() } else { format!(": `{key}`") })]
pub struct DistError {
    /// `builder image `…``, `buildpackage `…``.
    pub subject: String,
    /// `/cnb/order.toml`, `io.buildpacks.buildpack.layers`, ….
    pub file: String,
    /// The key inside it (`order[0].group[1]`), or empty.
    pub key: String,
    pub reason: String,
}

impl DistError {
    pub fn new(subject: &str, file: &str, key: impl Into<String>, reason: impl Into<String>) -> DistError {
        DistError { subject: subject.to_string(), file: file.to_string(), key: key.into(), reason: reason.into() }
    }
}

/// Bad distribution input is the workspace's to fix (it names the image): exit 2.
impl crate::model::error::Kinded for DistError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        crate::model::error::ErrorKind::User
    }
}

/// One buildpack in [`BUILDPACK_LAYERS`] (pack's `dist.ModuleLayerInfo`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    #[serde(default)]
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<OrderGroup>,
    #[serde(rename = "layerDiffID", default)]
    pub layer_diff_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// [`BUILDPACK_LAYERS`]: id → version → layer info (BTreeMaps: canonical JSON).
pub type LayersLabel = BTreeMap<String, BTreeMap<String, LayerInfo>>;

/// Parses [`BUILDPACK_LAYERS`].
pub fn parse_layers_label(subject: &str, text: &str) -> Result<LayersLabel, DistError> {
    serde_json::from_str(text).map_err(|e| DistError::new(subject, BUILDPACK_LAYERS, "", format!("not valid: {e}")))
}

/// The [`LayerInfo`] of a buildpack (its descriptor and the diff id of its layer).
pub fn layer_info(desc: &BuildpackDescriptor, diff_id: &str) -> LayerInfo {
    LayerInfo {
        api: desc.api.to_string(),
        stacks: (!desc.stacks.is_empty()).then(|| serde_json::to_value(&desc.stacks).unwrap_or_default()),
        targets: (!desc.targets.is_empty()).then(|| targets_json(desc)),
        order: desc.order.clone(),
        layer_diff_id: diff_id.to_string(),
        homepage: desc.info.homepage.clone(),
        name: desc.info.name.clone(),
    }
}

/// `[[targets]]` as pack writes them in labels (`os`, `arch`, `variant`, `distros`).
fn targets_json(desc: &BuildpackDescriptor) -> serde_json::Value {
    serde_json::Value::Array(
        desc.targets
            .iter()
            .map(|t| {
                let mut m = serde_json::Map::new();
                m.insert("os".into(), t.os.clone().into());
                m.insert("arch".into(), t.arch.clone().into());
                if !t.arch_variant.is_empty() {
                    m.insert("variant".into(), t.arch_variant.clone().into());
                }
                if !t.distros.is_empty() {
                    let d: Vec<serde_json::Value> =
                        t.distros.iter().map(|d| serde_json::json!({"name": d.name, "version": d.version})).collect();
                    m.insert("distros".into(), serde_json::Value::Array(d));
                }
                serde_json::Value::Object(m)
            })
            .collect(),
    )
}

/// One `[[images]]` of run.toml (and `images` of the builder metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImage {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// `/cnb/run.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunToml {
    #[serde(default)]
    pub images: Vec<RunImage>,
}

/// `/cnb/stack.toml` (deprecated by run.toml; still written and read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackToml {
    #[serde(rename = "run-image", default)]
    pub run_image: RunImage,
    #[serde(rename = "build-image", default, skip_serializing_if = "Option::is_none")]
    pub build_image: Option<RunImage>,
}

/// `/cnb/order.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderToml {
    #[serde(default)]
    pub order: Vec<OrderGroup>,
}

/// `[system.pre]` / `[system.post]` of `/cnb/system.toml` (Platform API 0.15).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemBuildpacks {
    #[serde(default)]
    pub buildpacks: Vec<BuildpackRef>,
}

/// `/cnb/system.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemToml {
    #[serde(default)]
    pub system: System,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct System {
    #[serde(default)]
    pub pre: SystemBuildpacks,
    #[serde(default)]
    pub post: SystemBuildpacks,
}

/// Parses a TOML distribution file of `subject`, naming it in errors.
pub fn parse_toml<T: serde::de::DeserializeOwned>(subject: &str, file: &str, text: &str) -> Result<T, DistError> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        let at = e.span().map(|s| line_col(text, s.start)).map(|(l, c)| format!(" (line {l}, column {c})"));
        DistError::new(subject, file, "", format!("{msg}{}", at.unwrap_or_default()))
    })
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// A module in the builder metadata's `buildpacks` (pack's `dist.ModuleInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

/// [`BUILDER_METADATA`] (pack's `builder.Metadata`). Unknown fields are kept out; older builders'
/// `groups` (an order) are read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuilderMetadata {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub buildpacks: Vec<ModuleInfo>,
    #[serde(default)]
    pub stack: StackMetadata,
    #[serde(default)]
    pub images: Vec<RunImage>,
    #[serde(default)]
    pub lifecycle: LifecycleInfo,
    #[serde(rename = "createdBy", default)]
    pub created_by: CreatedBy,
    /// Builders made by pack before order.toml existed: `[{"buildpacks": [{id, version}]}]`.
    #[serde(default, skip_serializing)]
    pub groups: Vec<LegacyGroup>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyGroup {
    #[serde(default)]
    pub buildpacks: Vec<BuildpackRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackMetadata {
    #[serde(rename = "runImage", default)]
    pub run_image: RunImage,
}

/// The lifecycle a builder carries (`version` empty: none).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleInfo {
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apis: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedBy {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
}

/// [`BUILDPACKAGE_METADATA`] (pack's `buildpack.Metadata`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildpackageMetadata {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<serde_json::Value>,
}

impl BuildpackageMetadata {
    /// The metadata of a buildpackage standing for `desc`.
    pub fn of(desc: &BuildpackDescriptor) -> BuildpackageMetadata {
        BuildpackageMetadata {
            id: desc.info.id.clone(),
            version: desc.info.version.clone(),
            homepage: desc.info.homepage.clone(),
            stacks: (!desc.stacks.is_empty()).then(|| serde_json::to_value(&desc.stacks).unwrap_or_default()),
            targets: (!desc.targets.is_empty()).then(|| targets_json(desc)),
        }
    }
}

/// pack's `builder.toml` (what `pack builder create --config` reads), the parts a workspace builder
/// takes: description, order, run images, build env, system buildpacks, and the ids of its
/// `[[buildpacks]]` (whose URIs the BUILD file maps to targets).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuilderToml {
    pub description: String,
    /// `[[buildpacks]]`: (id, uri) as written (id may be empty).
    pub buildpacks: Vec<(String, String)>,
    pub order: Vec<OrderGroup>,
    /// `[[run.images]]`, else `[stack] run-image` and `run-image-mirrors`.
    pub run_images: Vec<RunImage>,
    /// `[stack] id`.
    pub stack_id: String,
    /// `[[build.env]]` as build-config env files: `NAME`, `NAME.<suffix>`, `NAME.delim` → contents.
    pub build_env: BTreeMap<String, String>,
    pub system: System,
    /// Keys read but not applied (`[lifecycle]`, extensions), for a note.
    pub ignored: Vec<String>,
}

#[derive(Deserialize)]
struct RawBuilderToml {
    #[serde(default)]
    description: String,
    #[serde(default)]
    buildpacks: Vec<RawModule>,
    #[serde(default)]
    order: Vec<OrderGroup>,
    stack: Option<RawStack>,
    build: Option<RawBuild>,
    run: Option<RunToml>,
    #[serde(default)]
    system: System,
    lifecycle: Option<toml::Value>,
    extensions: Option<toml::Value>,
    #[serde(rename = "order-extensions")]
    order_extensions: Option<toml::Value>,
}

#[derive(Deserialize)]
struct RawModule {
    #[serde(default)]
    id: String,
    #[serde(default)]
    uri: String,
}

#[derive(Deserialize)]
struct RawStack {
    #[serde(default)]
    id: String,
    #[serde(rename = "run-image", default)]
    run_image: String,
    #[serde(rename = "run-image-mirrors", default)]
    run_image_mirrors: Vec<String>,
}

#[derive(Deserialize)]
struct RawBuild {
    #[serde(default)]
    env: Vec<RawBuildEnv>,
}

#[derive(Deserialize)]
struct RawBuildEnv {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    suffix: String,
    #[serde(default)]
    delim: String,
}

impl BuilderToml {
    /// Parses builder.toml text; `file` (workspace-relative) locates errors.
    pub fn parse(text: &str, file: &str) -> Result<BuilderToml, DistError> {
        let raw: RawBuilderToml = parse_toml("builder config", file, text)?;
        let err = |key: String, reason: String| DistError::new("builder config", file, key, reason);
        let mut build_env = BTreeMap::new();
        for (i, e) in raw.build.map(|b| b.env).unwrap_or_default().into_iter().enumerate() {
            if e.name.is_empty() || e.name.contains(['/', '.', '=', '\0']) {
                return Err(err(format!("build.env[{i}].name"), format!("`{}` is not a variable name", e.name)));
            }
            let file_name = match e.suffix.as_str() {
                "" => e.name.clone(),
                "default" | "override" | "append" | "prepend" => format!("{}.{}", e.name, e.suffix),
                other => {
                    return Err(err(
                        format!("build.env[{i}].suffix"),
                        format!("`{other}`: one of default, override, append, prepend"),
                    ))
                }
            };
            build_env.insert(file_name, e.value);
            if !e.delim.is_empty() {
                build_env.insert(format!("{}.delim", e.name), e.delim);
            }
        }
        let mut run_images: Vec<RunImage> =
            raw.run.map(|r| r.images).unwrap_or_default().into_iter().filter(|i| !i.image.is_empty()).collect();
        let stack = raw.stack.unwrap_or(RawStack {
            id: String::new(),
            run_image: String::new(),
            run_image_mirrors: Vec::new(),
        });
        if run_images.is_empty() && !stack.run_image.is_empty() {
            run_images.push(RunImage { image: stack.run_image, mirrors: stack.run_image_mirrors });
        }
        let mut ignored = Vec::new();
        for (k, v) in [
            ("lifecycle", &raw.lifecycle),
            ("extensions", &raw.extensions),
            ("order-extensions", &raw.order_extensions),
        ] {
            if v.is_some() {
                ignored.push(k.to_string());
            }
        }
        Ok(BuilderToml {
            description: raw.description,
            buildpacks: raw.buildpacks.into_iter().map(|m| (m.id, m.uri)).collect(),
            order: raw.order,
            run_images,
            stack_id: stack.id,
            build_env,
            system: raw.system,
            ignored,
        })
    }
}

/// Every reference of `order` names a buildpack `provided` has (by id, and version when given),
/// and so does every composite's own order, recursively. `file` and `subject` locate errors.
pub fn check_order(
    subject: &str,
    file: &str,
    order: &[OrderGroup],
    provided: &dyn Fn(&BuildpackRef) -> bool,
) -> Result<(), DistError> {
    for (gi, g) in order.iter().enumerate() {
        if g.group.is_empty() {
            return Err(DistError::new(subject, file, format!("order[{gi}]"), "an empty group"));
        }
        for (mi, r) in g.group.iter().enumerate() {
            if r.id.is_empty() {
                return Err(DistError::new(subject, file, format!("order[{gi}].group[{mi}]"), "no `id`"));
            }
            if !provided(r) {
                return Err(DistError::new(
                    subject,
                    file,
                    format!("order[{gi}].group[{mi}]"),
                    format!(
                        "names `{}`, which the image does not provide (not in its `{BUILDPACK_LAYERS}` label)",
                        shown(r)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `id@version`, or `id` when the reference leaves the version open.
pub fn shown(r: &BuildpackRef) -> String {
    if r.version.is_empty() {
        r.id.clone()
    } else {
        r.key()
    }
}

/// System buildpacks merged into every group (platform.md › system.toml): `pre` before, `post`
/// after, each unless the group already has its id; a system buildpack is tried as optional when
/// the builder says so.
pub fn with_system(order: &[OrderGroup], pre: &[BuildpackRef], post: &[BuildpackRef]) -> Vec<OrderGroup> {
    if pre.is_empty() && post.is_empty() {
        return order.to_vec();
    }
    order
        .iter()
        .map(|g| {
            let has = |r: &BuildpackRef| g.group.iter().any(|m| super::buildpack_toml::same_id(&m.id, &r.id));
            let mut group: Vec<BuildpackRef> = pre.iter().filter(|r| !has(r)).cloned().collect();
            group.extend(g.group.iter().cloned());
            group.extend(post.iter().filter(|r| !has(r)).cloned());
            OrderGroup { group }
        })
        .collect()
}

/// TOML text of a distribution file (`order.toml`, `run.toml`, ...).
pub fn to_toml<T: Serialize>(v: &T) -> String {
    toml::to_string(v).expect("distribution files always serialise")
}

/// Canonical JSON of a label value (struct fields in order, maps sorted).
pub fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("distribution labels always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_run_stack_and_system_files_read_and_write() {
        let o: OrderToml = parse_toml(
            "b",
            "/cnb/order.toml",
            "[[order]]\n[[order.group]]\nid = \"a/x\"\nversion = \"1\"\n[[order.group]]\nid = \"b\"\nversion = \"2\"\noptional = true\n",
        )
        .unwrap();
        assert_eq!(o.order[0].group.len(), 2);
        assert!(o.order[0].group[1].optional);
        let again: OrderToml = parse_toml("b", "f", &to_toml(&o)).unwrap();
        assert_eq!(again, o);
        let r: RunToml =
            parse_toml("b", "f", "[[images]]\nimage = \"r.example/run:1\"\nmirrors = [\"m.example/run:1\"]\n").unwrap();
        assert_eq!(r.images[0].mirrors, ["m.example/run:1"]);
        let s: StackToml =
            parse_toml("b", "f", "[run-image]\nimage = \"r/run\"\n[build-image]\nimage = \"r/b\"\n").unwrap();
        assert_eq!(s.run_image.image, "r/run");
        let sys: SystemToml =
            parse_toml("b", "f", "[system.pre]\nbuildpacks = [{ id = \"p\", version = \"1\", optional = true }]\n")
                .unwrap();
        assert_eq!(sys.system.pre.buildpacks[0].id, "p");
    }

    #[test]
    fn builder_toml_is_read_like_pack_reads_it() {
        let b = BuilderToml::parse(
            "description = \"acme\"\n[[buildpacks]]\nuri = \"docker://r/x\"\nid = \"a/x\"\n\
             [[order]]\n[[order.group]]\nid = \"a/x\"\nversion = \"1\"\n\
             [stack]\nid = \"s\"\nrun-image = \"r/run:1\"\nrun-image-mirrors = [\"m/run:1\"]\nbuild-image = \"r/build:1\"\n\
             [[build.env]]\nname = \"A\"\nvalue = \"1\"\n[[build.env]]\nname = \"P\"\nvalue = \"/x\"\nsuffix = \"prepend\"\ndelim = \":\"\n\
             [lifecycle]\nversion = \"0.20.0\"\n",
            "b/builder.toml",
        )
        .unwrap();
        assert_eq!(b.description, "acme");
        assert_eq!(b.buildpacks, [("a/x".to_string(), "docker://r/x".to_string())]);
        assert_eq!(b.run_images, [RunImage { image: "r/run:1".into(), mirrors: vec!["m/run:1".into()] }]);
        assert_eq!(b.stack_id, "s");
        let env: Vec<(&str, &str)> = b.build_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("A", "1"), ("P.delim", ":"), ("P.prepend", "/x")]);
        assert_eq!(b.ignored, ["lifecycle"]);
        let e = BuilderToml::parse("[[build.env]]\nname = \"A\"\nsuffix = \"later\"\n", "b/builder.toml").unwrap_err();
        assert_eq!(e.key, "build.env[0].suffix");
    }

    #[test]
    fn toml_errors_are_located() {
        let e = parse_toml::<OrderToml>("builder image `x`", "/cnb/order.toml", "[[order]]\ngroup = 3\n").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("builder image `x`: `/cnb/order.toml`: "), "{m}");
        assert!(m.contains("line 2"), "{m}");
    }

    #[test]
    fn an_order_naming_a_missing_buildpack_names_the_key() {
        let order = vec![OrderGroup { group: vec![BuildpackRef::new("a", "1"), BuildpackRef::new("gone", "2")] }];
        let e = check_order("builder image `x`", "/cnb/order.toml", &order, &|r| r.id == "a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "builder image `x`: `/cnb/order.toml`: `order[0].group[1]`: names `gone@2`, which the image does not \
             provide (not in its `io.buildpacks.buildpack.layers` label)"
        );
    }

    #[test]
    fn system_buildpacks_wrap_every_group_unless_present() {
        let order = vec![
            OrderGroup { group: vec![BuildpackRef::new("a", "1")] },
            OrderGroup { group: vec![BuildpackRef::new("pre", "9"), BuildpackRef::new("b", "1")] },
        ];
        let out = with_system(&order, &[BuildpackRef::new("pre", "1")], &[BuildpackRef::new("post", "1").optional()]);
        let ids = |g: &OrderGroup| g.group.iter().map(|r| r.key()).collect::<Vec<_>>();
        assert_eq!(ids(&out[0]), ["pre@1", "a@1", "post@1"]);
        assert_eq!(ids(&out[1]), ["pre@9", "b@1", "post@1"]);
    }

    #[test]
    fn labels_round_trip_in_packs_shape() {
        let mut l = LayersLabel::new();
        l.entry("a/x".into()).or_default().insert(
            "1".into(),
            LayerInfo { api: "0.10".into(), layer_diff_id: "sha256:ab".into(), ..Default::default() },
        );
        let j = to_json(&l);
        assert_eq!(j, r#"{"a/x":{"1":{"api":"0.10","layerDiffID":"sha256:ab"}}}"#);
        assert_eq!(parse_layers_label("s", &j).unwrap(), l);
        let m: BuilderMetadata = serde_json::from_str(
            r#"{"description":"d","buildpacks":[{"id":"a","version":"1"}],"stack":{"runImage":{"image":"r/run","mirrors":["m/run"]}},"images":[{"image":"r/run"}],"lifecycle":{"version":"0.20.0"},"createdBy":{"name":"pack","version":"0.36"},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(m.stack.run_image.mirrors, ["m/run"]);
        assert_eq!(m.lifecycle.version, "0.20.0");
    }
}
