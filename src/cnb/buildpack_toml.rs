//! `buildpack.toml` (buildpack.md › Data Format): API versions, ids, targets, deprecated stacks and
//! composite orders, plus the id escaping of the platform directory layout. Parsing only; the
//! caller reads the file and tells us whether `bin/build` exists.

use std::cmp::Ordering;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CnbError, Phase};

/// A Buildpack API version `<major>.<minor>` (`"1"` means `1.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuildpackApi {
    pub major: u32,
    pub minor: u32,
}

impl BuildpackApi {
    /// Oldest Buildpack API we run (lifecycle 0.21 supports 0.7–0.12).
    pub const MIN: BuildpackApi = BuildpackApi::new(0, 7);
    /// Newest Buildpack API we run.
    pub const MAX: BuildpackApi = BuildpackApi::new(0, 12);

    pub const fn new(major: u32, minor: u32) -> Self {
        BuildpackApi { major, minor }
    }

    /// Parses `"0.10"` or `"1"`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (major, minor) = match s.split_once('.') {
            Some((a, b)) => (a, b),
            None => (s, "0"),
        };
        let num = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                t.parse::<u32>().ok()
            }
        };
        Some(BuildpackApi::new(num(major)?, num(minor)?))
    }

    /// Whether this platform runs buildpacks of this API.
    pub fn is_supported(self) -> bool {
        self >= Self::MIN && self <= Self::MAX
    }

    /// `self >= major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= BuildpackApi::new(major, minor)
    }
}

impl PartialOrd for BuildpackApi {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BuildpackApi {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor).cmp(&(other.major, other.minor))
    }
}

impl fmt::Display for BuildpackApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A parsed `buildpack.toml`. `order` non-empty means a composite buildpack (no `bin/`).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildpackDescriptor {
    pub api: BuildpackApi,
    pub info: BuildpackInfo,
    /// `[[order]]` of a composite buildpack.
    pub order: Vec<OrderGroup>,
    /// Deprecated `[[stacks]]` (since 0.10).
    pub stacks: Vec<Stack>,
    /// `[[targets]]` as written (see [`BuildpackDescriptor::effective_targets`] for inference).
    pub targets: Vec<Target>,
    /// `[metadata]`, free form.
    pub metadata: toml::Table,
    /// Things that are accepted but worth telling the user (deprecations, spec violations the
    /// lifecycle tolerates).
    pub warnings: Vec<String>,
}

/// `[buildpack]` of buildpack.toml.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildpackInfo {
    pub id: String,
    /// Not validated as semver: the lifecycle does not, and real buildpacks use `v1` etc. [!]; but
    /// a single safe directory name ([`validate_version`]).
    pub version: String,
    pub name: Option<String>,
    pub homepage: Option<String>,
    pub description: Option<String>,
    pub keywords: Vec<String>,
    pub clear_env: bool,
    pub sbom_formats: Vec<String>,
    pub licenses: Vec<License>,
    /// API 0.12 exec-env; both `exec-env = ["..."]` (lifecycle) and `[[exec-env]] name` (spec).
    pub exec_env: Vec<String>,
}

/// `[[buildpack.licenses]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct License {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// `[[stacks]]` (deprecated).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mixins: Vec<String>,
}

/// A target a buildpack supports; an empty string is a wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub os: String,
    pub arch: String,
    /// Read from `arch-variant` (what the lifecycle reads [!]) or, failing that, `variant` (spec).
    pub arch_variant: String,
    pub distros: Vec<Distro>,
}

/// `[[targets.distros]]`; empty strings are wildcards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distro {
    pub name: String,
    pub version: String,
}

/// The target of the run image (analyzed.toml `[run-image.target]`), empty = unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTarget {
    pub os: String,
    pub arch: String,
    pub arch_variant: String,
    pub distro: Option<Distro>,
}

impl Target {
    /// Lifecycle `TargetSatisfiedForBuild`: os, arch, variant equal or either side empty; distro
    /// checked only when both sides name one.
    pub fn satisfied_by(&self, run: &RunTarget) -> bool {
        fn m(a: &str, b: &str) -> bool {
            a.is_empty() || b.is_empty() || a == b
        }
        if !m(&run.os, &self.os) || !m(&run.arch, &self.arch) {
            return false;
        }
        if !m(&run.arch_variant, &self.arch_variant) {
            return false;
        }
        // A buildpack naming distros needs a base that names one (lifecycle ≥ 0.18).
        if self.distros.is_empty() {
            return true;
        }
        match &run.distro {
            None => false,
            Some(d) => self.distros.iter().any(|t| m(&d.name, &t.name) && m(&d.version, &t.version)),
        }
    }
}

/// One `[[order]]` entry: a group of buildpack references.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderGroup {
    #[serde(default)]
    pub group: Vec<BuildpackRef>,
}

/// A reference to a buildpack inside an order (`id`, `version`, `optional`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildpackRef {
    pub id: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    #[serde(rename = "exec-env", default, skip_serializing_if = "Vec::is_empty", deserialize_with = "de_exec_env")]
    pub exec_env: Vec<String>,
}

impl BuildpackRef {
    /// A required reference to `id@version`.
    pub fn new(id: &str, version: &str) -> Self {
        BuildpackRef { id: id.to_string(), version: version.to_string(), optional: false, exec_env: Vec::new() }
    }

    /// The same reference marked optional.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// `id@version`, the memoisation key of detection.
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

impl fmt::Display for BuildpackRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

fn de_exec_env<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    exec_env_from_value(&v).map_err(serde::de::Error::custom)
}

/// Accepts `["production"]` (lifecycle) and `[{ name = "production" }]` (spec) [!].
pub(crate) fn exec_env_from_value(v: &toml::Value) -> Result<Vec<String>, String> {
    let arr = v.as_array().ok_or_else(|| "`exec-env` must be an array".to_string())?;
    arr.iter()
        .map(|e| match e {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Table(t) => t
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .ok_or_else(|| "`exec-env` entries need a string `name`".to_string()),
            _ => Err("`exec-env` entries must be strings or tables with `name`".to_string()),
        })
        .collect()
}

/// The `CNB_EXEC_ENV` value when the platform does not choose one.
pub const DEFAULT_EXEC_ENV: &str = "production";

/// SBOM media types a buildpack may declare.
pub const SBOM_FORMATS: [&str; 3] =
    ["application/vnd.cyclonedx+json", "application/spdx+json", "application/vnd.syft+json"];

/// Ids that would collide with directories the platform owns under `<layers>`.
const RESERVED_IDS: [&str; 4] = ["app", "config", "generated", "sbom"];

/// Escapes a buildpack id for directory names: `acme/hello` → `acme_hello` [L].
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

/// Longest id (escaped) or version cbuild accepts: each becomes one directory name (`NAME_MAX`).
const MAX_NAME: usize = 255;

/// `s` for an error message: control characters (a hostile file may hold terminal escapes) are
/// shown escaped; anything else as is.
fn shown(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Checks a buildpack id: letters, digits, `.`, `/`, `-`, and not a reserved name.
pub fn validate_id(id: &str) -> Result<(), String> {
    check_id(id, "buildpack.id")
}

/// Buildpack API › buildpack.toml: the id has only letters, digits, `.`, `/` and `-` and is none of
/// [`RESERVED_IDS`]. cbuild also refuses an empty, `.` or `..` part between slashes: the escaped id
/// is a directory name (`/cnb/buildpacks/<escaped-id>/`, `<layers>/<escaped-id>/`). `field` names
/// the TOML key in messages.
fn check_id(id: &str, field: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-'))) {
        return Err(format!(
            "`{field}` `{}` contains `{}`; only letters, digits, `.`, `/` and `-` are allowed",
            shown(id),
            shown(&c.to_string())
        ));
    }
    if RESERVED_IDS.iter().any(|r| r.eq_ignore_ascii_case(id)) {
        return Err(format!("`{field}` `{id}` is reserved"));
    }
    if id.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(format!(
            "`{field}` `{id}` has an empty, `.` or `..` part between slashes; ids look like `acme/hello-world`"
        ));
    }
    if id.len() > MAX_NAME {
        return Err(format!("`{field}` is longer than {MAX_NAME} bytes"));
    }
    Ok(())
}

/// Checks a buildpack version. Its form is not enforced (the lifecycle does not, and real
/// buildpacks use `v1`, `some_name_version`, `0.0.1-rc.1+build` [!]), but it is a directory name
/// (`/cnb/buildpacks/<escaped-id>/<version>/`), so it must be one safe path component: not empty,
/// no `/`, not `.` or `..`, no NUL or other control character, at most 255 bytes.
pub fn validate_version(version: &str) -> Result<(), String> {
    check_version(version, "buildpack.version")
}

fn check_version(v: &str, field: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(format!("`{field}` `{}` contains the control character `{}`", shown(v), c.escape_default()));
    }
    if v.contains('/') {
        return Err(format!(
            "`{field}` `{v}` contains `/`; a version is one directory name (`/cnb/buildpacks/<id>/<version>`)"
        ));
    }
    if v == "." || v == ".." {
        return Err(format!("`{field}` `{v}` is not a version (`.` and `..` name directories)"));
    }
    if v.len() > MAX_NAME {
        return Err(format!("`{field}` is longer than {MAX_NAME} bytes"));
    }
    Ok(())
}

/// Checks an `[[order.group]]` entry: its `id` like [`validate_id`]; its `version`, when given (a
/// composite may leave it empty), like [`validate_version`]. For every parser of orders
/// (buildpack.toml here, order.toml in `plan`).
pub fn validate_ref(r: &BuildpackRef) -> Result<(), String> {
    check_id(&r.id, "order.group.id")?;
    if !r.version.is_empty() {
        check_version(&r.version, "order.group.version")?;
    }
    Ok(())
}

/// Buildpack ids compare case-insensitively.
pub fn same_id(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[derive(Deserialize)]
struct RawDescriptor {
    api: Option<toml::Value>,
    buildpack: Option<RawInfo>,
    #[serde(default)]
    order: Vec<OrderGroup>,
    #[serde(default)]
    stacks: Vec<Stack>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    metadata: toml::Table,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawInfo {
    id: Option<String>,
    version: Option<String>,
    name: Option<String>,
    homepage: Option<String>,
    description: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    clear_env: bool,
    #[serde(default)]
    sbom_formats: Vec<String>,
    #[serde(default)]
    licenses: Vec<License>,
    exec_env: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawTarget {
    #[serde(default)]
    os: String,
    #[serde(default)]
    arch: String,
    arch_variant: Option<String>,
    variant: Option<String>,
    #[serde(default)]
    distros: Vec<RawDistro>,
}

#[derive(Deserialize)]
struct RawDistro {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
}

impl BuildpackDescriptor {
    /// Parses buildpack.toml text. `file` is used in messages only. Fails with exit code 12 for
    /// unsupported APIs (like the lifecycle) and with a message for a bad id or missing fields.
    pub fn parse(text: &str, file: &Path) -> Result<Self, CnbError> {
        let where_ = file.display().to_string();
        let raw: RawDescriptor = toml::from_str(text).map_err(|e| CnbError::toml(Phase::Load, &where_, file, e))?;
        let info =
            raw.buildpack.ok_or_else(|| CnbError::invalid(Phase::Load, &where_, file, "missing `[buildpack]`"))?;
        let id = info.id.unwrap_or_default();
        let version = info.version.unwrap_or_default();
        let name = format!("{}@{}", shown(&id), shown(&version));
        validate_id(&id).map_err(|r| CnbError::invalid(Phase::Load, &name, file, r))?;
        if version.is_empty() {
            return Err(CnbError::invalid(Phase::Load, &name, file, "`buildpack.version` is missing"));
        }
        validate_version(&version).map_err(|r| CnbError::invalid(Phase::Load, &name, file, r))?;
        let api_text = match &raw.api {
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let api =
            BuildpackApi::parse(&api_text).filter(|a| a.is_supported()).ok_or_else(|| CnbError::UnsupportedApi {
                phase: Phase::Load,
                buildpack: name.clone(),
                file: file.to_path_buf(),
                api: api_text.clone(),
            })?;
        let exec_env = match &info.exec_env {
            Some(v) => exec_env_from_value(v).map_err(|r| CnbError::invalid(Phase::Load, &name, file, r))?,
            None => Vec::new(),
        };
        let mut warnings = Vec::new();
        for f in &info.sbom_formats {
            if !SBOM_FORMATS.contains(&f.as_str()) {
                warnings.push(format!("unknown `sbom-formats` entry `{f}`"));
            }
        }
        if !raw.stacks.is_empty() && api.at_least(0, 10) {
            warnings.push("`[[stacks]]` is deprecated since Buildpack API 0.10; use `[[targets]]`".into());
        }
        if !raw.order.is_empty() && !raw.stacks.is_empty() {
            // Spec: a composite MUST NOT declare stacks. The lifecycle ignores them; so do we.
            warnings.push("a composite buildpack must not declare `[[stacks]]`; ignored".into());
        }
        for g in &raw.order {
            for r in &g.group {
                if r.id.is_empty() {
                    return Err(CnbError::invalid(Phase::Load, &name, file, "an `[[order.group]]` entry has no `id`"));
                }
                validate_ref(r).map_err(|reason| CnbError::invalid(Phase::Load, &name, file, reason))?;
            }
        }
        let targets = raw
            .targets
            .into_iter()
            .map(|t| Target {
                os: t.os,
                arch: t.arch,
                arch_variant: t.arch_variant.or(t.variant).unwrap_or_default(),
                distros: t.distros.into_iter().map(|d| Distro { name: d.name, version: d.version }).collect(),
            })
            .collect();
        Ok(BuildpackDescriptor {
            api,
            info: BuildpackInfo {
                id,
                version,
                name: info.name,
                homepage: info.homepage,
                description: info.description,
                keywords: info.keywords,
                clear_env: info.clear_env,
                sbom_formats: info.sbom_formats,
                licenses: info.licenses,
                exec_env,
            },
            order: raw.order,
            stacks: raw.stacks,
            targets,
            metadata: raw.metadata,
            warnings,
        })
    }

    /// Whether this is a composite buildpack (has `[[order]]`).
    pub fn is_composite(&self) -> bool {
        !self.order.is_empty()
    }

    /// `id@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.info.id, self.info.version)
    }

    /// Targets with the lifecycle's inference when none are declared [L]: `[[stacks]] id = "*"`
    /// matches anything, `io.buildpacks.stacks.bionic` is linux/amd64 ubuntu 18.04; otherwise
    /// `bin/build.exe|.bat` → windows and `bin/build` → linux. `bin_files` are the names in `bin/`.
    /// An empty result means "no constraint".
    pub fn effective_targets(&self, bin_files: &[&str]) -> Vec<Target> {
        if !self.targets.is_empty() {
            return self.targets.clone();
        }
        let mut out = Vec::new();
        // The lifecycle infers ubuntu 18.04 from the bionic stack only for Buildpack API ≥ 0.10
        // or when it is the only stack listed.
        let bionic_is_target = self.api >= BuildpackApi::new(0, 10) || self.stacks.len() == 1;
        for s in &self.stacks {
            if s.id == "io.buildpacks.stacks.bionic" {
                if !bionic_is_target {
                    continue;
                }
                out.push(Target {
                    os: "linux".into(),
                    arch: "amd64".into(),
                    arch_variant: String::new(),
                    distros: vec![Distro { name: "ubuntu".into(), version: "18.04".into() }],
                });
            } else if s.id == "*" {
                out.push(Target::default());
            }
        }
        if !out.is_empty() {
            return out;
        }
        if bin_files.iter().any(|f| *f == "build.exe" || *f == "build.bat") {
            out.push(Target { os: "windows".into(), ..Target::default() });
        }
        if bin_files.contains(&"build") {
            out.push(Target { os: "linux".into(), ..Target::default() });
        }
        out
    }

    /// Whether the buildpack may run on `run` (Platform ≥ 0.12 target check before detect).
    pub fn supports_target(&self, bin_files: &[&str], run: &RunTarget) -> bool {
        let targets = self.effective_targets(bin_files);
        targets.is_empty() || targets.iter().any(|t| t.satisfied_by(run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<BuildpackDescriptor, CnbError> {
        BuildpackDescriptor::parse(t, Path::new("/cnb/buildpacks/x/buildpack.toml"))
    }

    const SIMPLE: &str = r#"
api = "0.10"
[buildpack]
id = "acme/hello-world"
version = "0.0.2"
name = "Hello"
homepage = "https://example.com"
clear-env = true
keywords = ["a"]
sbom-formats = ["application/vnd.cyclonedx+json"]
[[buildpack.licenses]]
type = "MIT"
[[targets]]
os = "linux"
arch = "amd64"
[[targets.distros]]
name = "ubuntu"
version = "22.04"
[metadata]
x = 1
"#;

    #[test]
    fn parses_simple_buildpack() {
        let d = parse(SIMPLE).unwrap();
        assert_eq!(d.api, BuildpackApi::new(0, 10));
        assert_eq!(d.info.id, "acme/hello-world");
        assert_eq!(d.info.homepage.as_deref(), Some("https://example.com"));
        assert!(d.info.clear_env);
        assert_eq!(d.info.licenses[0].kind.as_deref(), Some("MIT"));
        assert_eq!(d.targets[0].distros[0].version, "22.04");
        assert!(!d.is_composite());
        assert!(d.warnings.is_empty());
        assert_eq!(d.key(), "acme/hello-world@0.0.2");
    }

    #[test]
    fn api_versions_accepted_and_refused_with_exit_12() {
        for ok in ["0.7", "0.8", "0.9", "0.10", "0.11", "0.12"] {
            let t = SIMPLE.replace("\"0.10\"", &format!("\"{ok}\""));
            assert!(parse(&t).is_ok(), "{ok}");
        }
        for bad in ["0.6", "0.13", "1", "x", ""] {
            let t = SIMPLE.replace("\"0.10\"", &format!("\"{bad}\""));
            let e = parse(&t).unwrap_err();
            assert_eq!(e.exit_code(), 12, "{bad}");
            assert!(e.to_string().contains("acme/hello-world@0.0.2"), "{e}");
        }
        let missing = SIMPLE.replace("api = \"0.10\"", "");
        assert_eq!(parse(&missing).unwrap_err().exit_code(), 12);
    }

    #[test]
    fn api_parsing_and_ordering() {
        assert_eq!(BuildpackApi::parse("1"), Some(BuildpackApi::new(1, 0)));
        assert_eq!(BuildpackApi::parse("0.10"), Some(BuildpackApi::new(0, 10)));
        assert!(BuildpackApi::new(0, 10) > BuildpackApi::new(0, 9));
        assert!(BuildpackApi::parse("0.x").is_none());
        assert!(BuildpackApi::parse("-1.0").is_none());
        assert_eq!(BuildpackApi::new(0, 12).to_string(), "0.12");
    }

    #[test]
    fn id_rules() {
        assert!(validate_id("acme/hello-world.x").is_ok());
        assert!(validate_id("a_b").is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id("").is_err());
        for r in ["app", "config", "generated", "sbom", "SBOM"] {
            assert!(validate_id(r).is_err(), "{r}");
        }
        let t = SIMPLE.replace("acme/hello-world", "config");
        let e = parse(&t).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        assert!(same_id("Acme/Go", "acme/go"));
    }

    #[test]
    fn version_not_enforced_but_required() {
        for v in ["v1", "some_name_version", "1.2.3"] {
            let t = SIMPLE.replace("0.0.2", v);
            assert_eq!(parse(&t).unwrap().info.version, v);
        }
        let t = SIMPLE.replace("version = \"0.0.2\"", "");
        assert!(parse(&t).unwrap_err().to_string().contains("version"));
    }

    #[test]
    fn version_is_one_safe_directory_name() {
        for v in ["1.2.3", "0.0.1-rc.1+build", "v1", "some_name_version", "1.0 beta", "...", "2024.01.01~x"] {
            assert!(validate_version(v).is_ok(), "{v}");
            let t = SIMPLE.replace("0.0.2", v);
            assert_eq!(parse(&t).unwrap().info.version, v);
        }
        for v in ["1/../../x", "..", ".", "a/b", "/abs", "1\\u0000", "1\\n2", "1\\u001b[31m", ""] {
            let t = SIMPLE.replace("\"0.0.2\"", &format!("\"{v}\""));
            let e = parse(&t).unwrap_err();
            let m = e.to_string();
            assert!(m.contains("buildpack.version"), "{v}: {m}");
            assert!(m.contains("/cnb/buildpacks/x/buildpack.toml"), "{v}: {m}");
            assert!(!m.chars().any(|c| c.is_control()), "{v}: control characters reach the message: {m:?}");
            assert_eq!(e.exit_code(), 12);
        }
        assert!(validate_version(&"1".repeat(256)).is_err());
        assert!(validate_version(&"1".repeat(255)).is_ok());
        let e = parse(&SIMPLE.replace("0.0.2", "1/../../x")).unwrap_err().to_string();
        assert!(e.contains("`1/../../x` contains `/`"), "{e}");
    }

    #[test]
    fn id_parts_are_directory_names() {
        for ok in ["acme/hello-world", "io.buildpacks.x", "a", "a.b/c-d/e", "..."] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["..", ".", "a/..", "../x", "/a", "a/", "a//b", "a/./b", "a\\u0000", "a\\u001b"] {
            let t = SIMPLE.replace("acme/hello-world", bad);
            let e = parse(&t).unwrap_err().to_string();
            assert!(e.contains("buildpack.id"), "{bad}: {e}");
            assert!(!e.chars().any(|c| c.is_control()), "{bad}: {e:?}");
        }
        assert!(validate_id(&"a".repeat(256)).is_err());
    }

    #[test]
    fn order_group_refs_are_validated() {
        let base = "api = \"0.7\"\n[buildpack]\nid = \"acme/meta\"\nversion = \"1\"\n[[order]]\n[[order.group]]\n";
        assert!(parse(&format!("{base}id = \"acme/a\"\nversion = \"1.0.0\"\n")).is_ok());
        assert!(parse(&format!("{base}id = \"acme/a\"\n")).is_ok(), "a composite may leave the version empty");
        for (entry, field) in [
            ("id = \"acme/a\"\nversion = \"../../x\"", "order.group.version"),
            ("id = \"acme/a\"\nversion = \"..\"", "order.group.version"),
            ("id = \"../..\"\nversion = \"1\"", "order.group.id"),
            ("id = \"a b\"\nversion = \"1\"", "order.group.id"),
            ("id = \"sbom\"\nversion = \"1\"", "order.group.id"),
        ] {
            let e = parse(&format!("{base}{entry}\n")).unwrap_err();
            let m = e.to_string();
            assert!(m.contains(field) && m.contains("/cnb/buildpacks/x/buildpack.toml"), "{entry}: {m}");
            assert_eq!(e.exit_code(), 12);
        }
        assert!(validate_ref(&BuildpackRef::new("acme/a", "1/x")).is_err());
        assert!(validate_ref(&BuildpackRef::new("acme/a", "")).is_ok());
    }

    #[test]
    fn escape_id_replaces_slashes() {
        assert_eq!(escape_id("acme/hello-world"), "acme_hello-world");
        assert_eq!(escape_id("a/b/c"), "a_b_c");
    }

    #[test]
    fn exec_env_in_both_shapes() {
        let t = SIMPLE.replace("clear-env = true", "clear-env = true\nexec-env = [\"production\", \"test\"]");
        assert_eq!(parse(&t).unwrap().info.exec_env, ["production", "test"]);
        let t = SIMPLE.replace(
            "[[buildpack.licenses]]",
            "[[buildpack.exec-env]]\nname = \"development\"\n[[buildpack.licenses]]",
        );
        assert_eq!(parse(&t).unwrap().info.exec_env, ["development"]);
        let t = SIMPLE.replace("clear-env = true", "clear-env = true\nexec-env = 3");
        assert!(parse(&t).is_err());
    }

    #[test]
    fn arch_variant_wins_over_variant() {
        let t = SIMPLE.replace("arch = \"amd64\"", "arch = \"arm\"\nvariant = \"v6\"");
        assert_eq!(parse(&t).unwrap().targets[0].arch_variant, "v6");
        let t = SIMPLE.replace("arch = \"amd64\"", "arch = \"arm\"\nvariant = \"v6\"\narch-variant = \"v7\"");
        assert_eq!(parse(&t).unwrap().targets[0].arch_variant, "v7");
    }

    #[test]
    fn target_matching_wildcards() {
        let t = Target {
            os: "linux".into(),
            arch: "amd64".into(),
            arch_variant: String::new(),
            distros: vec![Distro { name: "ubuntu".into(), version: "22.04".into() }],
        };
        let mut run = RunTarget { os: "linux".into(), arch: "amd64".into(), arch_variant: "v1".into(), distro: None };
        // A buildpack that names distros needs a base that names one (the lifecycle: no match).
        assert!(!t.satisfied_by(&run));
        run.distro = Some(Distro { name: "ubuntu".into(), version: "22.04".into() });
        assert!(t.satisfied_by(&run));
        run.distro = Some(Distro { name: "debian".into(), version: "12".into() });
        assert!(!t.satisfied_by(&run));
        run.arch = "arm64".into();
        assert!(!t.satisfied_by(&run));
        assert!(Target::default().satisfied_by(&run));
    }

    #[test]
    fn target_inference_from_stacks_and_bin() {
        let base = "api = \"0.9\"\n[buildpack]\nid = \"a\"\nversion = \"1\"\n";
        let d = parse(&format!("{base}[[stacks]]\nid = \"*\"\n")).unwrap();
        assert_eq!(d.effective_targets(&[]), vec![Target::default()]);
        let d = parse(&format!("{base}[[stacks]]\nid = \"io.buildpacks.stacks.bionic\"\n")).unwrap();
        let t = d.effective_targets(&["build"]);
        assert_eq!((t[0].os.as_str(), t[0].arch.as_str()), ("linux", "amd64"));
        assert_eq!(t[0].distros[0].version, "18.04");
        // API < 0.10 with several stacks: bionic is not turned into a target (lifecycle).
        let d = parse(&format!(
            "{base}[[stacks]]\nid = \"io.buildpacks.stacks.bionic\"\n[[stacks]]\nid = \"io.buildpacks.stacks.jammy\"\n"
        ))
        .unwrap();
        assert_eq!(d.effective_targets(&["build"]), vec![Target { os: "linux".into(), ..Target::default() }]);
        let d = parse(&format!("{base}[[stacks]]\nid = \"io.buildpacks.stacks.jammy\"\n")).unwrap();
        assert_eq!(d.effective_targets(&["build", "detect"])[0].os, "linux");
        let d = parse(base).unwrap();
        assert_eq!(d.effective_targets(&["build.exe"])[0].os, "windows");
        assert!(d.effective_targets(&[]).is_empty());
        let run = RunTarget { os: "linux".into(), arch: "arm64".into(), ..RunTarget::default() };
        assert!(d.supports_target(&["build"], &run));
        assert!(!d.supports_target(&["build.bat"], &run));
    }

    #[test]
    fn stacks_deprecated_warning_from_0_10() {
        let base = "api = \"0.10\"\n[buildpack]\nid = \"a\"\nversion = \"1\"\n[[stacks]]\nid = \"*\"\n";
        assert_eq!(parse(base).unwrap().warnings.len(), 1);
    }

    #[test]
    fn composite_order() {
        let t = r#"
api = "0.7"
[buildpack]
id = "acme/meta"
version = "1"
[[order]]
[[order.group]]
id = "acme/a"
version = "1"
[[order.group]]
id = "acme/b"
version = "2"
optional = true
exec-env = ["test"]
[[order]]
[[order.group]]
id = "acme/c"
version = "3"
"#;
        let d = parse(t).unwrap();
        assert!(d.is_composite());
        assert_eq!(d.order.len(), 2);
        assert_eq!(
            d.order[0].group[1],
            BuildpackRef { id: "acme/b".into(), version: "2".into(), optional: true, exec_env: vec!["test".into()] }
        );
        let with_stacks = format!("{t}[[stacks]]\nid = \"*\"\n");
        assert!(!parse(&with_stacks).unwrap().warnings.is_empty());
        let no_id = t.replace("id = \"acme/c\"", "");
        assert!(parse(&no_id).is_err());
    }

    #[test]
    fn malformed_toml_is_an_error_naming_the_file() {
        let e = parse("api = ").unwrap_err();
        assert!(e.to_string().contains("/cnb/buildpacks/x/buildpack.toml"), "{e}");
        assert!(parse("api = \"0.9\"").is_err());
    }
}
