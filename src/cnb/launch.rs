//! What buildpacks declare for the image (buildpack.md › launch.toml, build.toml, store.toml) and
//! what the platform makes of it (platform.md › exporter): the merged `<layers>/config/metadata.toml`
//! the launcher reads, the entrypoint and env of the image, and the `io.buildpacks.*` label JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::buildpack_toml::{exec_env_from_value, BuildpackApi};
use super::plan::GroupMember;
use super::{CnbError, Phase};

/// Where the launcher lives in the image.
pub const LAUNCHER_PATH: &str = "/cnb/lifecycle/launcher";
/// Directory of the lifecycle in the image (stripped from PATH by the launcher).
pub const LIFECYCLE_DIR: &str = "/cnb/lifecycle";
/// Directory of the process-type symlinks in the image.
pub const PROCESS_DIR: &str = "/cnb/process";
/// Default layers dir in build and app images.
pub const DEFAULT_LAYERS_DIR: &str = "/layers";
/// Default app dir in build and app images.
pub const DEFAULT_APP_DIR: &str = "/workspace";
/// Characters the lifecycle rejects in process types [L].
pub const FORBIDDEN_PROCESS_TYPE_CHARS: &str = "/><:|&\\";

/// A process declared in launch.toml, normalised across APIs: `command` is always a list
/// (API < 0.9: one string), `direct` is always true from API 0.9.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub r#type: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub direct: bool,
    pub default: bool,
    /// Ignored (None) before API 0.8.
    pub working_dir: Option<String>,
    /// API 0.12: exec environments the process applies to (empty = all).
    pub exec_env: Vec<String>,
}

/// `[[labels]]` of launch.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

/// `[[slices]]` of launch.toml: Go `filepath.Match` globs relative to the app dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    #[serde(default)]
    pub paths: Vec<String>,
}

/// A parsed launch.toml (`[[bom]]` is deprecated and ignored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchToml {
    pub processes: Vec<Process>,
    pub labels: Vec<Label>,
    pub slices: Vec<Slice>,
}

fn str_array(v: &toml::Value, what: &str) -> Result<Vec<String>, String> {
    let arr = v.as_array().ok_or_else(|| format!("`{what}` must be an array of strings"))?;
    arr.iter()
        .map(|e| e.as_str().map(str::to_string).ok_or_else(|| format!("`{what}` must be an array of strings")))
        .collect()
}

fn table_array<'a>(t: &'a toml::Table, key: &str) -> Result<Vec<&'a toml::Table>, String> {
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(a)) => {
            a.iter().map(|e| e.as_table().ok_or_else(|| format!("`{key}` must be an array of tables"))).collect()
        }
        Some(_) => Err(format!("`{key}` must be an array of tables (`[[{key}]]`)")),
    }
}

/// Checks a process type [L]: non-empty and none of `/><:|&\`.
pub fn validate_process_type(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("a process has an empty `type`".into());
    }
    if let Some(c) = t.chars().find(|c| FORBIDDEN_PROCESS_TYPE_CHARS.contains(*c)) {
        return Err(format!("process type `{t}` contains the forbidden character `{c}`"));
    }
    Ok(())
}

fn parse_process(p: &toml::Table, api: BuildpackApi) -> Result<Process, String> {
    let ty = match p.get("type") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => return Err("process `type` must be a string".into()),
        None => return Err("a process has no `type`".into()),
    };
    validate_process_type(&ty)?;
    let modern = api.at_least(0, 9);
    let command = match p.get("command") {
        None => Vec::new(),
        Some(toml::Value::String(s)) if !modern => vec![s.clone()],
        Some(v) if modern => str_array(v, "command")
            .map_err(|_| format!("process `{ty}`: `command` must be an array of strings from Buildpack API 0.9"))?,
        Some(_) => return Err(format!("process `{ty}`: `command` must be a string before Buildpack API 0.9")),
    };
    if command.is_empty() || command[0].is_empty() {
        return Err(format!("process `{ty}` has no `command`"));
    }
    let args = match p.get("args") {
        None => Vec::new(),
        Some(v) => str_array(v, "args").map_err(|e| format!("process `{ty}`: {e}"))?,
    };
    let direct = match (p.get("direct"), modern) {
        (Some(_), true) => {
            return Err(format!(
                "process `{ty}`: `direct` is not allowed from Buildpack API 0.9 (processes are always direct)"
            ))
        }
        (None, true) => true,
        (None, false) => false,
        (Some(toml::Value::Boolean(b)), false) => *b,
        (Some(_), false) => return Err(format!("process `{ty}`: `direct` must be a boolean")),
    };
    let default = match p.get("default") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err(format!("process `{ty}`: `default` must be a boolean")),
    };
    let working_dir = match p.get("working-dir") {
        _ if !api.at_least(0, 8) => None,
        None => None,
        Some(toml::Value::String(s)) if s.is_empty() => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(format!("process `{ty}`: `working-dir` must be a string")),
    };
    let exec_env = match p.get("exec-env") {
        None => Vec::new(),
        Some(v) => exec_env_from_value(v).map_err(|e| format!("process `{ty}`: {e}"))?,
    };
    Ok(Process { r#type: ty, command, args, direct, default, working_dir, exec_env })
}

/// Parses launch.toml written by a buildpack of Buildpack API `api`.
pub fn parse_launch_toml(text: &str, api: BuildpackApi, buildpack: &str, file: &Path) -> Result<LaunchToml, CnbError> {
    let t: toml::Table = toml::from_str(text).map_err(|e| CnbError::toml(Phase::Build, buildpack, file, e))?;
    let err = |r: String| CnbError::invalid(Phase::Build, buildpack, file, r);
    let mut out = LaunchToml::default();
    for p in table_array(&t, "processes").map_err(err)? {
        out.processes.push(parse_process(p, api).map_err(err)?);
    }
    if out.processes.iter().filter(|p| p.default).count() > 1 {
        return Err(err("more than one process has `default = true`".into()));
    }
    for l in table_array(&t, "labels").map_err(err)? {
        let label: Label =
            toml::Value::Table(l.clone()).try_into().map_err(|e| CnbError::toml(Phase::Build, buildpack, file, e))?;
        out.labels.push(label);
    }
    for s in table_array(&t, "slices").map_err(err)? {
        let slice: Slice =
            toml::Value::Table(s.clone()).try_into().map_err(|e| CnbError::toml(Phase::Build, buildpack, file, e))?;
        out.slices.push(slice);
    }
    Ok(out)
}

/// A parsed build.toml: the names of `[[unmet]]` (`[[bom]]` ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildToml {
    pub unmet: Vec<String>,
}

/// Parses build.toml; every `[[unmet]]` needs a `name`.
pub fn parse_build_toml(text: &str, buildpack: &str, file: &Path) -> Result<BuildToml, CnbError> {
    let t: toml::Table = toml::from_str(text).map_err(|e| CnbError::toml(Phase::Build, buildpack, file, e))?;
    let err = |r: String| CnbError::invalid(Phase::Build, buildpack, file, r);
    let mut unmet = Vec::new();
    for u in table_array(&t, "unmet").map_err(err)? {
        match u.get("name") {
            Some(toml::Value::String(s)) if !s.is_empty() => unmet.push(s.clone()),
            _ => return Err(err("an `[[unmet]]` entry has no `name`".into())),
        }
    }
    Ok(BuildToml { unmet })
}

/// store.toml: `[metadata]` that persists across builds through the lifecycle label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreToml {
    #[serde(default)]
    pub metadata: toml::Table,
}

impl StoreToml {
    /// Parses store.toml.
    pub fn parse(text: &str, buildpack: &str, file: &Path) -> Result<Self, CnbError> {
        toml::from_str(text).map_err(|e| CnbError::toml(Phase::Build, buildpack, file, e))
    }

    /// store.toml text (written back before the next build).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("store.toml serializes")
    }
}

/// A process of metadata.toml: after merging, with the buildpack that declared it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetadataProcess {
    pub r#type: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub direct: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    pub buildpack_id: String,
}

/// `<layers>/config/metadata.toml` (platform.md): what the launcher and the exporter need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BuildMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildpack_default_process_type: Option<String>,
    #[serde(default)]
    pub buildpacks: Vec<GroupMember>,
    /// Sorted by type.
    #[serde(default)]
    pub processes: Vec<MetadataProcess>,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub slices: Vec<Slice>,
}

/// Merges the launch.toml of every buildpack of `group` (same order, same length) like the
/// lifecycle builder: a later process of the same type replaces an earlier one; the last
/// `default = true` wins and a later non-default process of the default's type clears it;
/// processes sorted by type; labels and slices concatenated in group order. With `exec_env`
/// (API 0.12), processes that list exec-envs without it are left out.
pub fn merge_launch(group: &[GroupMember], launches: &[LaunchToml], exec_env: Option<&str>) -> BuildMetadata {
    let mut by_type: BTreeMap<String, MetadataProcess> = BTreeMap::new();
    let mut default_type: Option<String> = None;
    let mut labels = Vec::new();
    let mut slices = Vec::new();
    for (bp, l) in group.iter().zip(launches) {
        for p in &l.processes {
            if let Some(e) = exec_env {
                if !p.exec_env.is_empty() && !p.exec_env.iter().any(|x| x == e) {
                    continue;
                }
            }
            if p.default {
                default_type = Some(p.r#type.clone());
            } else if default_type.as_deref() == Some(p.r#type.as_str()) {
                default_type = None;
            }
            by_type.insert(
                p.r#type.clone(),
                MetadataProcess {
                    r#type: p.r#type.clone(),
                    command: p.command.clone(),
                    args: p.args.clone(),
                    direct: p.direct,
                    working_dir: p.working_dir.clone(),
                    buildpack_id: bp.id.clone(),
                },
            );
        }
        labels.extend(l.labels.iter().cloned());
        slices.extend(l.slices.iter().cloned());
    }
    BuildMetadata {
        buildpack_default_process_type: default_type,
        buildpacks: group.to_vec(),
        processes: by_type.into_values().collect(),
        labels,
        slices,
    }
}

/// A TOML basic string: `"` with `\\`, `\"` and control characters escaped, so that the
/// launcher's small TOML reader needs only one string form.
pub fn toml_basic_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_array(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| toml_basic_string(s)).collect();
    format!("[{}]", parts.join(", "))
}

impl BuildMetadata {
    /// metadata.toml text. Written by hand in a fixed shape (top-level key, then `[[buildpacks]]`,
    /// `[[processes]]`, `[[labels]]`, `[[slices]]`; only basic strings, booleans and one-line
    /// string arrays) so that the launcher can read it with a few lines of code; any TOML parser
    /// reads it too.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let kv = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "{k} = {v}");
        };
        if let Some(d) = &self.buildpack_default_process_type {
            kv(&mut out, "buildpack-default-process-type", toml_basic_string(d));
        }
        for b in &self.buildpacks {
            out.push_str("\n[[buildpacks]]\n");
            kv(&mut out, "id", toml_basic_string(&b.id));
            kv(&mut out, "version", toml_basic_string(&b.version));
            kv(&mut out, "api", toml_basic_string(&b.api));
            if let Some(h) = &b.homepage {
                kv(&mut out, "homepage", toml_basic_string(h));
            }
        }
        for p in &self.processes {
            out.push_str("\n[[processes]]\n");
            kv(&mut out, "type", toml_basic_string(&p.r#type));
            kv(&mut out, "command", toml_array(&p.command));
            kv(&mut out, "args", toml_array(&p.args));
            kv(&mut out, "direct", p.direct.to_string());
            if let Some(w) = &p.working_dir {
                kv(&mut out, "working-dir", toml_basic_string(w));
            }
            kv(&mut out, "buildpack-id", toml_basic_string(&p.buildpack_id));
        }
        for l in &self.labels {
            out.push_str("\n[[labels]]\n");
            kv(&mut out, "key", toml_basic_string(&l.key));
            kv(&mut out, "value", toml_basic_string(&l.value));
        }
        for s in &self.slices {
            out.push_str("\n[[slices]]\n");
            kv(&mut out, "paths", toml_array(&s.paths));
        }
        out
    }

    /// Parses metadata.toml (ours or the lifecycle's).
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, CnbError> {
        toml::from_str(text).map_err(|e| CnbError::toml(Phase::Export, "config", file, e))
    }

    /// The process of type `t`.
    pub fn find_process(&self, t: &str) -> Option<&MetadataProcess> {
        self.processes.iter().find(|p| p.r#type == t)
    }

    /// Buildpack `[[labels]]` as image labels; the last buildpack wins per key.
    pub fn image_labels(&self) -> BTreeMap<String, String> {
        self.labels.iter().map(|l| (l.key.clone(), l.value.clone())).collect()
    }

    /// The image entrypoint: `/cnb/process/<type>` for the platform's choice (which must exist)
    /// or else the buildpacks' default, otherwise the bare launcher.
    pub fn entrypoint(&self, platform_process: Option<&str>) -> Result<String, CnbError> {
        if let Some(t) = platform_process {
            if self.find_process(t).is_none() {
                let known: Vec<&str> = self.processes.iter().map(|p| p.r#type.as_str()).collect();
                return Err(CnbError::invalid(
                    Phase::Export,
                    "config",
                    "metadata.toml",
                    format!("process type `{t}` was chosen as default but the buildpacks declare only {known:?}"),
                ));
            }
            return Ok(process_path(t));
        }
        Ok(match &self.buildpack_default_process_type {
            Some(t) if self.find_process(t).is_some() => process_path(t),
            _ => LAUNCHER_PATH.to_string(),
        })
    }

    /// The `io.buildpacks.build.metadata` label value (canonical JSON).
    pub fn build_label(&self, launcher: &LauncherMetadata) -> String {
        let label = BuildMetadataLabel {
            bom: None,
            buildpacks: self
                .buildpacks
                .iter()
                .map(|b| BuildpackLabelRef {
                    id: b.id.clone(),
                    version: b.version.clone(),
                    homepage: b.homepage.clone(),
                })
                .collect(),
            launcher: launcher.clone(),
            processes: self
                .processes
                .iter()
                .map(|p| ProcessLabel {
                    r#type: p.r#type.clone(),
                    command: p.command.clone(),
                    args: p.args.clone(),
                    direct: p.direct,
                    working_dir: p.working_dir.clone(),
                    buildpack_id: p.buildpack_id.clone(),
                })
                .collect(),
            buildpack_default_process_type: self.buildpack_default_process_type.clone(),
        };
        canonical_json(&serde_json::to_value(&label).expect("label serializes"))
    }
}

/// `/cnb/process/<type>`.
pub fn process_path(t: &str) -> String {
    format!("{PROCESS_DIR}/{t}")
}

/// The env of the app image config [L]: `CNB_LAYERS_DIR`, `CNB_APP_DIR`, `CNB_PLATFORM_API`,
/// `CNB_DEPRECATION_MODE=quiet` and `PATH=/cnb/process:/cnb/lifecycle:<run image PATH>`.
pub fn image_env(
    run_image_path: Option<&str>,
    layers_dir: &str,
    app_dir: &str,
    platform_api: &str,
) -> Vec<(String, String)> {
    let mut path = format!("{PROCESS_DIR}:{LIFECYCLE_DIR}");
    if let Some(p) = run_image_path.filter(|p| !p.is_empty()) {
        path.push(':');
        path.push_str(p);
    }
    vec![
        ("CNB_LAYERS_DIR".into(), layers_dir.into()),
        ("CNB_APP_DIR".into(), app_dir.into()),
        ("CNB_PLATFORM_API".into(), platform_api.into()),
        ("CNB_DEPRECATION_MODE".into(), "quiet".into()),
        ("PATH".into(), path),
    ]
}

/// `{ "sha": "sha256:..." }` of one image layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSha {
    pub sha: String,
}

/// One buildpack layer in the lifecycle label: diffID, `[metadata]` as JSON and its types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerLabel {
    pub sha: String,
    pub data: serde_json::Value,
    pub build: bool,
    pub launch: bool,
    pub cache: bool,
}

impl LayerLabel {
    /// Builds the entry from a layer's diffID, types and `[metadata]`.
    pub fn new(sha: &str, types: super::layer_toml::LayerTypes, metadata: &toml::Table) -> Self {
        LayerLabel {
            sha: sha.to_string(),
            data: toml_to_json(metadata),
            build: types.build,
            launch: types.launch,
            cache: types.cache,
        }
    }

    /// `[metadata]` back as TOML (restore "metadata only" from the previous image).
    pub fn metadata(&self) -> toml::Table {
        json_to_toml(&self.data)
    }
}

/// A buildpack in the lifecycle label: `key` is its id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildpackLayersLabel {
    pub key: String,
    pub version: String,
    pub layers: BTreeMap<String, LayerLabel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreLabel>,
}

/// store.toml in the lifecycle label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreLabel {
    pub metadata: serde_json::Value,
}

impl StoreLabel {
    /// From a parsed store.toml.
    pub fn new(store: &StoreToml) -> Self {
        StoreLabel { metadata: toml_to_json(&store.metadata) }
    }
}

/// `runImage` of the lifecycle label (what rebase needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunImageLabel {
    #[serde(rename = "topLayer")]
    pub top_layer: String,
    pub reference: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// Deprecated `stack.runImage` of the lifecycle label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackLabel {
    #[serde(rename = "runImage")]
    pub run_image: StackRunImage,
}

/// `stack.runImage { image, mirrors }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRunImage {
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// The `io.buildpacks.lifecycle.metadata` label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleMetadata {
    #[serde(default)]
    pub app: Vec<LayerSha>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<LayerSha>,
    #[serde(default)]
    pub buildpacks: Vec<BuildpackLayersLabel>,
    #[serde(default)]
    pub config: LayerSha,
    #[serde(default)]
    pub launcher: LayerSha,
    #[serde(rename = "process-types", default)]
    pub process_types: LayerSha,
    #[serde(rename = "runImage", default)]
    pub run_image: RunImageLabel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackLabel>,
}

impl LifecycleMetadata {
    /// The label value (canonical JSON).
    pub fn to_label(&self) -> String {
        canonical_json(&serde_json::to_value(self).expect("label serializes"))
    }

    /// Reads the label of a previous image.
    pub fn from_label(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The layers of buildpack `id` in the previous image.
    pub fn buildpack(&self, id: &str) -> Option<&BuildpackLayersLabel> {
        self.buildpacks.iter().find(|b| b.key == id)
    }
}

/// `launcher` of the build label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LauncherMetadata {
    pub version: String,
    pub source: LauncherSource,
}

/// `launcher.source`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LauncherSource {
    pub git: LauncherGit,
}

/// `launcher.source.git`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LauncherGit {
    pub repository: String,
    pub commit: String,
}

/// A buildpack in the build label: no `api`, like the lifecycle [!].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildpackLabelRef {
    pub id: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
}

/// A process in the build label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessLabel {
    pub r#type: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub direct: bool,
    #[serde(rename = "working-dir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "buildpackID")]
    pub buildpack_id: String,
}

/// The `io.buildpacks.build.metadata` label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildMetadataLabel {
    /// Deprecated BOM: left out, as the lifecycle does for Platform API ≥ 0.9 (its
    /// `files.BuildMetadata.MarshalJSON`); SBOMs are files in the SBOM layer instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bom: Option<Vec<serde_json::Value>>,
    pub buildpacks: Vec<BuildpackLabelRef>,
    pub launcher: LauncherMetadata,
    pub processes: Vec<ProcessLabel>,
    #[serde(rename = "buildpack-default-process-type", default, skip_serializing_if = "Option::is_none")]
    pub buildpack_default_process_type: Option<String>,
}

/// A TOML table as JSON (datetimes become strings).
pub fn toml_to_json(t: &toml::Table) -> serde_json::Value {
    fn conv(v: &toml::Value) -> serde_json::Value {
        match v {
            toml::Value::String(s) => s.clone().into(),
            toml::Value::Integer(i) => (*i).into(),
            toml::Value::Float(f) => {
                serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            toml::Value::Boolean(b) => (*b).into(),
            toml::Value::Datetime(d) => d.to_string().into(),
            toml::Value::Array(a) => a.iter().map(conv).collect(),
            toml::Value::Table(t) => t.iter().map(|(k, v)| (k.clone(), conv(v))).collect(),
        }
    }
    conv(&toml::Value::Table(t.clone()))
}

/// JSON back to a TOML table; `null`s are dropped and a non-object gives an empty table.
pub fn json_to_toml(v: &serde_json::Value) -> toml::Table {
    fn conv(v: &serde_json::Value) -> Option<toml::Value> {
        Some(match v {
            serde_json::Value::Null => return None,
            serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => toml::Value::Integer(i),
                None => toml::Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => toml::Value::String(s.clone()),
            serde_json::Value::Array(a) => toml::Value::Array(a.iter().filter_map(conv).collect()),
            serde_json::Value::Object(o) => {
                toml::Value::Table(o.iter().filter_map(|(k, v)| Some((k.clone(), conv(v)?))).collect())
            }
        })
    }
    match conv(v) {
        Some(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// JSON with object keys sorted and no whitespace, so label bytes (and image digests) do not
/// depend on map implementations.
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, e) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(e, out);
                }
                out.push(']');
            }
            serde_json::Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("string serializes"));
                    out.push(':');
                    write(&o[k], out);
                }
                out.push('}');
            }
            other => out.push_str(&serde_json::to_string(other).expect("scalar serializes")),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cnb::layer_toml::LayerTypes;

    const API_08: BuildpackApi = BuildpackApi::new(0, 8);
    const API_09: BuildpackApi = BuildpackApi::new(0, 9);

    fn parse(t: &str, api: BuildpackApi) -> Result<LaunchToml, CnbError> {
        parse_launch_toml(t, api, "acme/web@1", Path::new("/layers/acme_web/launch.toml"))
    }

    fn member(id: &str) -> GroupMember {
        GroupMember { id: id.into(), version: "1".into(), api: "0.10".into(), homepage: None }
    }

    fn proc(t: &str, default: bool) -> Process {
        Process { r#type: t.into(), command: vec![format!("run-{t}")], direct: true, default, ..Process::default() }
    }

    #[test]
    fn modern_processes_are_direct_arrays() {
        let l = parse(
            r#"
[[processes]]
type = "web"
command = ["node", "server.js"]
args = ["--port", "8080"]
default = true
working-dir = "/workspace/app"
exec-env = ["production"]
[[labels]]
key = "k"
value = "v"
[[slices]]
paths = ["public/*"]
[[bom]]
name = "ignored"
"#,
            API_09,
        )
        .unwrap();
        let p = &l.processes[0];
        assert_eq!(p.command, ["node", "server.js"]);
        assert_eq!(p.args, ["--port", "8080"]);
        assert!(p.direct && p.default);
        assert_eq!(p.working_dir.as_deref(), Some("/workspace/app"));
        assert_eq!(p.exec_env, ["production"]);
        assert_eq!(l.labels[0].value, "v");
        assert_eq!(l.slices[0].paths, ["public/*"]);
    }

    #[test]
    fn modern_rejects_direct_and_string_command() {
        let e = parse("[[processes]]\ntype = \"web\"\ncommand = [\"a\"]\ndirect = true\n", API_09).unwrap_err();
        assert!(e.to_string().contains("`direct`") && e.to_string().contains("acme/web@1"), "{e}");
        assert!(parse("[[processes]]\ntype = \"web\"\ncommand = \"a b\"\n", API_09).is_err());
    }

    #[test]
    fn legacy_processes_are_strings_with_direct_flag() {
        let l = parse(
            "[[processes]]\ntype = \"web\"\ncommand = \"echo hi\"\nargs = [\"x\"]\n[[processes]]\ntype = \"w\"\ncommand = \"/bin/w\"\ndirect = true\nworking-dir = \"/x\"\n",
            API_08,
        )
        .unwrap();
        assert_eq!(l.processes[0].command, ["echo hi"]);
        assert!(!l.processes[0].direct);
        assert!(l.processes[1].direct);
        assert_eq!(l.processes[1].working_dir.as_deref(), Some("/x"));
        assert!(parse("[[processes]]\ntype = \"web\"\ncommand = [\"a\"]\n", API_08).is_err());
        // working-dir is ignored before 0.8.
        let l = parse("[[processes]]\ntype = \"w\"\ncommand = \"w\"\nworking-dir = \"/x\"\n", BuildpackApi::new(0, 7))
            .unwrap();
        assert_eq!(l.processes[0].working_dir, None);
    }

    #[test]
    fn process_type_rules_and_single_default() {
        for bad in ["a/b", "a>b", "a<b", "a:b", "a|b", "a&b", "a\\b", ""] {
            let t = format!("[[processes]]\ntype = {}\ncommand = [\"x\"]\n", toml_basic_string(bad));
            assert!(parse(&t, API_09).is_err(), "{bad}");
        }
        assert!(parse("[[processes]]\ntype = \"web-1.x_y\"\ncommand = [\"x\"]\n", API_09).is_ok());
        let two = "[[processes]]\ntype = \"a\"\ncommand = [\"x\"]\ndefault = true\n[[processes]]\ntype = \"b\"\ncommand = [\"x\"]\ndefault = true\n";
        assert!(parse(two, API_09).unwrap_err().to_string().contains("default"));
        assert!(parse("[[processes]]\ntype = \"a\"\n", API_09).is_err());
        assert!(parse("processes = 1", API_09).is_err());
    }

    #[test]
    fn build_and_store_toml() {
        let b = parse_build_toml("[[unmet]]\nname = \"node\"\n[[bom]]\nname = \"x\"\n", "a@1", Path::new("build.toml"))
            .unwrap();
        assert_eq!(b.unmet, ["node"]);
        assert!(parse_build_toml("[[unmet]]\n", "a@1", Path::new("build.toml")).is_err());
        let s = StoreToml::parse("[metadata]\nrun = 3\n", "a@1", Path::new("store.toml")).unwrap();
        assert_eq!(s.metadata["run"].as_integer(), Some(3));
        assert_eq!(StoreToml::parse(&s.to_toml(), "a@1", Path::new("s")).unwrap(), s);
    }

    #[test]
    fn merge_defaults_overrides_and_sorting() {
        let a = LaunchToml {
            processes: vec![proc("web", true), proc("worker", false)],
            labels: vec![Label { key: "k".into(), value: "a".into() }],
            slices: vec![],
        };
        let b = LaunchToml {
            processes: vec![proc("a-task", false)],
            labels: vec![Label { key: "k".into(), value: "b".into() }],
            slices: vec![Slice { paths: vec!["x".into()] }],
        };
        let md = merge_launch(&[member("a"), member("b")], &[a.clone(), b], None);
        assert_eq!(md.buildpack_default_process_type.as_deref(), Some("web"));
        let types: Vec<_> = md.processes.iter().map(|p| p.r#type.as_str()).collect();
        assert_eq!(types, ["a-task", "web", "worker"]);
        assert_eq!(md.processes[0].buildpack_id, "b");
        assert_eq!(md.image_labels()["k"], "b");
        assert_eq!(md.slices.len(), 1);

        // Later default wins.
        let c = LaunchToml { processes: vec![proc("worker", true)], ..LaunchToml::default() };
        let md = merge_launch(&[member("a"), member("c")], &[a.clone(), c], None);
        assert_eq!(md.buildpack_default_process_type.as_deref(), Some("worker"));
        assert_eq!(md.find_process("worker").unwrap().buildpack_id, "c");

        // A non-default override of the default type clears the default.
        let d = LaunchToml { processes: vec![proc("web", false)], ..LaunchToml::default() };
        let md = merge_launch(&[member("a"), member("d")], &[a.clone(), d], None);
        assert_eq!(md.buildpack_default_process_type, None);
        assert_eq!(md.find_process("web").unwrap().buildpack_id, "d");

        // exec-env filter.
        let mut e = proc("dev", false);
        e.exec_env = vec!["development".into()];
        let l = LaunchToml { processes: vec![e], ..LaunchToml::default() };
        assert!(merge_launch(&[member("e")], std::slice::from_ref(&l), Some("production")).processes.is_empty());
        assert_eq!(merge_launch(&[member("e")], &[l], Some("development")).processes.len(), 1);
    }

    #[test]
    fn metadata_toml_round_trips_through_a_real_parser() {
        let mut p = proc("web", true);
        p.command = vec!["sh".into(), "-c".into(), "echo \"hi\"\n\tthere \\ \u{1}".into()];
        p.args = vec!["ünïcode".into()];
        p.working_dir = Some("/w".into());
        let l = LaunchToml {
            processes: vec![p, proc("worker", false)],
            labels: vec![Label { key: "a.b".into(), value: "x=\"y\"".into() }],
            slices: vec![Slice { paths: vec!["*.js".into(), "a b".into()] }],
        };
        let mut m = member("acme/web");
        m.homepage = Some("https://h".into());
        let md = merge_launch(&[m], &[l], None);
        let text = md.to_toml();
        let back = BuildMetadata::from_toml(&text, Path::new("metadata.toml")).unwrap();
        assert_eq!(back, md);
        assert!(text.starts_with("buildpack-default-process-type = \"web\"\n"), "{text}");
        assert!(text.contains("\\u0001"));
    }

    #[test]
    fn entrypoint_and_image_env() {
        let l = LaunchToml { processes: vec![proc("web", true), proc("worker", false)], ..LaunchToml::default() };
        let md = merge_launch(&[member("a")], &[l], None);
        assert_eq!(md.entrypoint(None).unwrap(), "/cnb/process/web");
        assert_eq!(md.entrypoint(Some("worker")).unwrap(), "/cnb/process/worker");
        assert!(md.entrypoint(Some("nope")).unwrap_err().to_string().contains("`nope`"));
        let none = merge_launch(&[member("a")], &[LaunchToml::default()], None);
        assert_eq!(none.entrypoint(None).unwrap(), LAUNCHER_PATH);
        let env = image_env(Some("/usr/bin:/bin"), "/layers", "/workspace", "0.12");
        assert!(env.contains(&("PATH".into(), "/cnb/process:/cnb/lifecycle:/usr/bin:/bin".into())));
        assert!(env.contains(&("CNB_DEPRECATION_MODE".into(), "quiet".into())));
        assert!(env.contains(&("CNB_PLATFORM_API".into(), "0.12".into())));
    }

    #[test]
    fn build_label_json() {
        let mut p = proc("web", true);
        p.args = vec!["a".into()];
        let l = LaunchToml { processes: vec![p], ..LaunchToml::default() };
        let mut m = member("acme/web");
        m.homepage = Some("https://h".into());
        let md = merge_launch(&[m], &[l], None);
        let launcher = LauncherMetadata {
            version: "0.1.0".into(),
            source: LauncherSource {
                git: LauncherGit { repository: "github.com/x/cbuild".into(), commit: "abc".into() },
            },
        };
        let s = md.build_label(&launcher);
        assert_eq!(
            s,
            r#"{"buildpack-default-process-type":"web","buildpacks":[{"homepage":"https://h","id":"acme/web","version":"1"}],"launcher":{"source":{"git":{"commit":"abc","repository":"github.com/x/cbuild"}},"version":"0.1.0"},"processes":[{"args":["a"],"buildpackID":"acme/web","command":["run-web"],"direct":true,"type":"web"}]}"#
        );
        let back: BuildMetadataLabel = serde_json::from_str(&s).unwrap();
        assert_eq!(back.processes[0].buildpack_id, "acme/web");
    }

    #[test]
    fn lifecycle_label_json_round_trip() {
        let mut meta = toml::Table::new();
        meta.insert("version".into(), "1.2".into());
        meta.insert("n".into(), 3.into());
        let mut layers = BTreeMap::new();
        layers.insert("jdk".to_string(), LayerLabel::new("sha256:aa", LayerTypes::bcl(false, true, true), &meta));
        let md = LifecycleMetadata {
            app: vec![LayerSha { sha: "sha256:app".into() }],
            sbom: None,
            buildpacks: vec![BuildpackLayersLabel {
                key: "acme/java".into(),
                version: "1".into(),
                layers,
                store: Some(StoreLabel::new(&StoreToml { metadata: meta.clone() })),
            }],
            config: LayerSha { sha: "sha256:cfg".into() },
            launcher: LayerSha { sha: "sha256:l".into() },
            process_types: LayerSha { sha: "sha256:p".into() },
            run_image: RunImageLabel {
                top_layer: "sha256:top".into(),
                reference: "sha256:ref".into(),
                image: "reg/run".into(),
                mirrors: vec!["mirror/run".into()],
            },
            stack: None,
        };
        let s = md.to_label();
        assert!(s.starts_with(r#"{"app":[{"sha":"sha256:app"}],"buildpacks":[{"key":"acme/java","layers":{"jdk":{"build":false,"cache":true,"data":{"n":3,"version":"1.2"},"launch":true,"sha":"sha256:aa"}}"#), "{s}");
        assert!(s.contains(r#""process-types":{"sha":"sha256:p"}"#));
        assert!(s.contains(r#""runImage":{"image":"reg/run","mirrors":["mirror/run"],"reference":"sha256:ref","topLayer":"sha256:top"}"#));
        let back = LifecycleMetadata::from_label(&s).unwrap();
        assert_eq!(back, md);
        assert_eq!(back.buildpack("acme/java").unwrap().layers["jdk"].metadata(), meta);
    }

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let v: serde_json::Value = serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":2,"x":"\n"}]},"a":null}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":null,"b":{"a":[{"x":"\n","y":2}],"z":1}}"#);
    }
}
