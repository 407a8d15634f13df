//! The project descriptor (`project.toml`, buildpacks/spec `extensions/project-descriptor.md`,
//! schema 0.2 and 0.3 as pack reads them): which app files a build sees (`include`/`exclude`,
//! gitignore syntax), build-time env, the buildpack group and pre/post groups, and the `[_]`
//! metadata that becomes the `io.buildpacks.project.metadata` label. Pure: the caller reads the file.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::distribution::line_col;

/// A project.toml that cannot be used, located: file, key, line and column.
#[derive(Debug, thiserror::Error)]
#[error("`{file}`{}{}: {reason}", if key.is_empty() { String::new() } else { format!(": `{key}`") }, at.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default())]
pub struct ProjectError {
    pub file: String,
    pub key: String,
    pub at: Option<(usize, usize)>,
    pub reason: String,
}

impl crate::model::error::Kinded for ProjectError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        crate::model::error::ErrorKind::User
    }
}

/// Project descriptor schemas cbuild reads.
pub const SCHEMAS: [&str; 2] = ["0.2", "0.3"];

/// A buildpack of a group: by `id` (resolved from the builder, `version` optional) or by `uri` (a
/// workspace label `//pkg:name`, or `urn:cnb:builder:<id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub id: String,
    pub version: String,
    /// A workspace label naming a `buildpack` target (analysis resolves it).
    pub label: Option<String>,
    pub optional: bool,
    /// Where it was written (`io.buildpacks.group[1]`), for errors.
    pub key: String,
    pub at: (usize, usize),
}

/// What a build takes from project.toml.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProjectDescriptor {
    pub schema: String,
    /// Gitignore patterns: only matching app files are built (`None`: no include list).
    pub include: Option<Vec<String>>,
    /// Gitignore patterns: matching app files are left out.
    pub exclude: Option<Vec<String>>,
    /// `[[io.buildpacks.group]]`: replaces the builder's order with this one group.
    pub group: Vec<GroupEntry>,
    /// `[[io.buildpacks.pre.group]]` / `post`: added before/after every group of the order.
    pub pre: Vec<GroupEntry>,
    pub post: Vec<GroupEntry>,
    /// `[[io.buildpacks.build.env]]`: build-time env (platform env of every buildpack).
    pub env: BTreeMap<String, String>,
    /// The `io.buildpacks.project.metadata` label (canonical JSON), `None` when `[_]` says nothing.
    pub metadata_label: Option<String>,
    /// Things accepted but worth a warning (the deprecated `io.buildpacks.env.build`).
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "_")]
    project: Option<RawProject>,
    io: Option<RawIo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawProject {
    schema_version: Option<Spanned<String>>,
    id: Option<String>,
    name: Option<String>,
    version: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    documentation_url: Option<String>,
    source_url: Option<String>,
    #[serde(default)]
    licenses: Vec<RawLicense>,
    metadata: Option<toml::Table>,
}

#[derive(Deserialize, serde::Serialize)]
struct RawLicense {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
}

#[derive(Deserialize)]
struct RawIo {
    buildpacks: Option<RawBuildpacks>,
}

#[derive(Deserialize)]
struct RawBuildpacks {
    include: Option<Spanned<Vec<String>>>,
    exclude: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    group: Vec<Spanned<RawBp>>,
    pre: Option<RawGroupAdd>,
    post: Option<RawGroupAdd>,
    build: Option<RawBuild>,
    /// Deprecated `[[io.buildpacks.env.build]]` (schema 0.2 only).
    env: Option<RawEnv>,
}

#[derive(Deserialize)]
struct RawGroupAdd {
    #[serde(default)]
    group: Vec<Spanned<RawBp>>,
}

#[derive(Deserialize)]
struct RawBuild {
    #[serde(default)]
    env: Vec<Spanned<RawEnvVar>>,
}

#[derive(Deserialize)]
struct RawEnv {
    #[serde(default)]
    build: Vec<Spanned<RawEnvVar>>,
}

#[derive(Deserialize)]
struct RawEnvVar {
    name: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
struct RawBp {
    id: Option<String>,
    version: Option<String>,
    uri: Option<String>,
    #[serde(default)]
    optional: bool,
    script: Option<toml::Value>,
}

impl ProjectDescriptor {
    /// Parses project.toml text; `file` (workspace-relative) is named in errors.
    pub fn parse(text: &str, file: &str) -> Result<ProjectDescriptor, ProjectError> {
        let err = |key: &str, at: Option<usize>, reason: String| ProjectError {
            file: file.to_string(),
            key: key.to_string(),
            at: at.map(|o| line_col(text, o)),
            reason,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| err("", e.span().map(|s| s.start), e.message().to_string()))?;
        let project = raw.project;
        let schema = match project.as_ref().and_then(|p| p.schema_version.as_ref()) {
            Some(s) if SCHEMAS.contains(&s.get_ref().as_str()) => s.get_ref().clone(),
            Some(s) => {
                return Err(err(
                    "_.schema-version",
                    Some(s.span().start),
                    format!("unknown schema version `{}`; cbuild reads {}", s.get_ref(), SCHEMAS.join(" and ")),
                ))
            }
            None => {
                return Err(err(
                    "_.schema-version",
                    None,
                    format!(
                        "missing (schema 0.1 has no `[_]` table and is not read); add `[_]` `schema-version = \"0.2\"` ({})",
                        SCHEMAS.join(" and ")
                    ),
                ))
            }
        };
        let mut d = ProjectDescriptor { schema: schema.clone(), ..Default::default() };
        if let Some(bps) = raw.io.and_then(|io| io.buildpacks) {
            if let (Some(_), Some(ex)) = (&bps.include, &bps.exclude) {
                return Err(err(
                    "io.buildpacks.exclude",
                    Some(ex.span().start),
                    "`include` and `exclude` are both set; they are mutually exclusive".into(),
                ));
            }
            for (k, pats) in [("include", &bps.include), ("exclude", &bps.exclude)] {
                if let Some(p) = pats {
                    for (i, g) in p.get_ref().iter().enumerate() {
                        Patterns::new(std::slice::from_ref(g))
                            .map_err(|reason| err(&format!("io.buildpacks.{k}[{i}]"), Some(p.span().start), reason))?;
                    }
                }
            }
            d.include = bps.include.map(|s| s.into_inner());
            d.exclude = bps.exclude.map(|s| s.into_inner());
            let entries = |list: Vec<Spanned<RawBp>>, key: &str| -> Result<Vec<GroupEntry>, ProjectError> {
                let mut out = Vec::new();
                for (i, s) in list.into_iter().enumerate() {
                    let start = s.span().start;
                    let k = format!("{key}[{i}]");
                    let b = s.into_inner();
                    if b.script.is_some() {
                        return Err(err(
                            &format!("{k}.script"),
                            Some(start),
                            "inline (script) buildpacks are not supported: write the buildpack as a `buildpack` target and name its label in `uri`".into(),
                        ));
                    }
                    let (id, label) = match (b.id, b.uri) {
                        (Some(_), Some(_)) => {
                            return Err(err(&k, Some(start), "has both `id` and `uri`; give one".into()))
                        }
                        (None, None) => return Err(err(&k, Some(start), "needs an `id` or a `uri`".into())),
                        (Some(id), None) => (id, None),
                        (None, Some(uri)) => {
                            if b.version.is_some() {
                                return Err(err(
                                    &k,
                                    Some(start),
                                    "has both `uri` and `version`; a `uri` names one version".into(),
                                ));
                            }
                            if let Some(id) = uri.strip_prefix("urn:cnb:builder:") {
                                (id.split('@').next().unwrap_or(id).to_string(), None)
                            } else if uri.starts_with("//") || uri.starts_with(':') {
                                (String::new(), Some(uri))
                            } else {
                                return Err(err(
                                    &format!("{k}.uri"),
                                    Some(start),
                                    format!("`{uri}`: cbuild resolves a group by `id` (from the builder), `urn:cnb:builder:<id>` or a workspace label (`//pkg:name` of a `buildpack` target, which may read an image or a .cnb); it fetches nothing a URI names"),
                                ));
                            }
                        }
                    };
                    out.push(GroupEntry {
                        id,
                        version: b.version.unwrap_or_default(),
                        label,
                        optional: b.optional,
                        key: k,
                        at: line_col(text, start),
                    });
                }
                Ok(out)
            };
            d.group = entries(bps.group, "io.buildpacks.group")?;
            d.pre = entries(bps.pre.map(|g| g.group).unwrap_or_default(), "io.buildpacks.pre.group")?;
            d.post = entries(bps.post.map(|g| g.group).unwrap_or_default(), "io.buildpacks.post.group")?;
            let mut env_list: Vec<(String, Spanned<RawEnvVar>)> = Vec::new();
            if let Some(b) = bps.build {
                env_list
                    .extend(b.env.into_iter().enumerate().map(|(i, e)| (format!("io.buildpacks.build.env[{i}]"), e)));
            }
            if let Some(e) = bps.env {
                if !e.build.is_empty() {
                    let start = e.build[0].span().start;
                    if schema != "0.2" {
                        return Err(err(
                            "io.buildpacks.env.build",
                            Some(start),
                            format!("not part of schema {schema}: use `[[io.buildpacks.build.env]]`"),
                        ));
                    }
                    if !env_list.is_empty() {
                        return Err(err(
                            "io.buildpacks.env.build",
                            Some(start),
                            "set together with `[[io.buildpacks.build.env]]`; keep only the latter".into(),
                        ));
                    }
                    d.warnings.push(format!(
                        "`{file}`: `[[io.buildpacks.env.build]]` is deprecated; use `[[io.buildpacks.build.env]]`"
                    ));
                    env_list.extend(
                        e.build.into_iter().enumerate().map(|(i, e)| (format!("io.buildpacks.env.build[{i}]"), e)),
                    );
                }
            }
            for (k, s) in env_list {
                let start = s.span().start;
                let v = s.into_inner();
                let name = v.name.unwrap_or_default();
                if name.is_empty()
                    || name.contains('=')
                    || name.contains('/')
                    || name.contains('\0')
                    || name == "."
                    || name == ".."
                {
                    return Err(err(&format!("{k}.name"), Some(start), format!("`{name}` is not a variable name")));
                }
                let value = v.value.ok_or_else(|| err(&format!("{k}.value"), Some(start), "missing".into()))?;
                d.env.insert(name, value);
            }
        }
        d.metadata_label = project.and_then(metadata_label);
        Ok(d)
    }
}

/// The `io.buildpacks.project.metadata` label, in the lifecycle's shape (`source.type = "project"`,
/// `version.declared`, `metadata.url` = `source-url`) with the rest of `[_]` (id, name, authors,
/// documentation-url, licenses and the free-form `[_.metadata]` keys) in `source.metadata`.
fn metadata_label(p: RawProject) -> Option<String> {
    let mut meta = serde_json::Map::new();
    if let Some(m) = &p.metadata {
        if let serde_json::Value::Object(o) = super::launch::toml_to_json(m) {
            meta.extend(o);
        }
    }
    for (k, v) in
        [("id", &p.id), ("name", &p.name), ("documentation-url", &p.documentation_url), ("url", &p.source_url)]
    {
        if let Some(v) = v {
            meta.insert(k.into(), v.clone().into());
        }
    }
    if !p.authors.is_empty() {
        meta.insert("authors".into(), p.authors.clone().into());
    }
    if !p.licenses.is_empty() {
        meta.insert("licenses".into(), serde_json::to_value(&p.licenses).unwrap_or_default());
    }
    if meta.is_empty() && p.version.is_none() {
        return None;
    }
    let mut source = serde_json::Map::new();
    source.insert("type".into(), "project".into());
    if let Some(v) = &p.version {
        source.insert("version".into(), serde_json::json!({ "declared": v }));
    }
    if !meta.is_empty() {
        source.insert("metadata".into(), serde_json::Value::Object(meta));
    }
    Some(super::launch::canonical_json(&serde_json::json!({ "source": source })))
}

/// Compiled gitignore patterns (git's rules: the last matching pattern decides, `!` re-includes, a
/// trailing `/` matches directories only, a pattern with a `/` before its end is anchored at the app
/// root, otherwise it matches at any depth; `*` stays within one component, `**` crosses them).
pub struct Patterns {
    rules: Vec<(globset::GlobSet, bool)>,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns, String> {
        let mut rules = Vec::new();
        for raw in patterns {
            let mut p = raw.trim_end_matches(' ').to_string();
            if p.is_empty() || p.starts_with('#') {
                continue;
            }
            let negate = p.starts_with('!');
            if negate {
                p.remove(0);
            }
            let dir_only = p.ends_with('/');
            let p = p.trim_end_matches('/');
            let anchored = p.starts_with('/') || p.contains('/');
            let p = p.trim_start_matches('/');
            if p.is_empty() {
                return Err(format!("`{raw}` matches nothing"));
            }
            let base = if anchored { p.to_string() } else { format!("**/{p}") };
            let mut b = globset::GlobSetBuilder::new();
            let glob = |g: &str| {
                globset::GlobBuilder::new(g).literal_separator(true).build().map_err(|e| format!("`{raw}`: {e}"))
            };
            // A matching directory takes everything below it; a file matches only without the `/`.
            b.add(glob(&format!("{base}/**"))?);
            if !dir_only {
                b.add(glob(&base)?);
            }
            rules.push((b.build().map_err(|e| format!("`{raw}`: {e}"))?, !negate));
        }
        Ok(Patterns { rules })
    }

    /// Whether the file at `path` (relative to the app root) matches: the last matching rule decides.
    pub fn matches(&self, path: &str) -> bool {
        let mut m = false;
        for (set, positive) in &self.rules {
            if set.is_match(path) {
                m = *positive;
            }
        }
        m
    }
}

impl ProjectDescriptor {
    /// The items of `items` whose path (relative to the app root) the build keeps; patterns
    /// compiled once (they were checked when parsed).
    pub fn filter<T>(&self, items: Vec<T>, path: impl Fn(&T) -> &str) -> Vec<T> {
        let inc = self.include.as_ref().and_then(|p| Patterns::new(p).ok());
        let exc = self.exclude.as_ref().and_then(|p| Patterns::new(p).ok());
        items
            .into_iter()
            .filter(|t| match (&inc, &exc) {
                (Some(i), _) => i.matches(path(t)),
                (None, Some(e)) => !e.matches(path(t)),
                (None, None) => true,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<ProjectDescriptor, ProjectError> {
        ProjectDescriptor::parse(t, "app/project.toml")
    }

    #[test]
    fn schema_0_2_and_0_3_are_read_others_refused_located() {
        assert_eq!(parse("[_]\nschema-version = \"0.2\"\n").unwrap().schema, "0.2");
        assert_eq!(parse("[_]\nschema-version = \"0.3\"\n").unwrap().schema, "0.3");
        let e = parse("# x\n[_]\nschema-version = \"0.9\"\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "`app/project.toml`: `_.schema-version` (line 3, column 18): unknown schema version `0.9`; cbuild reads 0.2 and 0.3"
        );
        assert!(parse("[project]\nid = \"x\"\n").unwrap_err().to_string().contains("`_.schema-version`"));
        let e = parse("[_\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn include_and_exclude_together_is_an_error_naming_the_key() {
        let e = parse("[_]\nschema-version = \"0.2\"\n[io.buildpacks]\ninclude = [\"a\"]\nexclude = [\"b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`io.buildpacks.exclude` (line 5"), "{e}");
        assert!(e.contains("mutually exclusive"), "{e}");
    }

    #[test]
    fn env_groups_and_metadata() {
        let d = parse(
            "[_]\nschema-version = \"0.3\"\nid = \"acme.app\"\nversion = \"1.2\"\nsource-url = \"https://git.example/app\"\n\
             [_.metadata]\nteam = \"core\"\n\
             [[io.buildpacks.build.env]]\nname = \"GREETING\"\nvalue = \"hi\"\n\
             [[io.buildpacks.group]]\nid = \"acme/a\"\nversion = \"1\"\n\
             [[io.buildpacks.group]]\nuri = \"//buildpacks:b\"\n\
             [[io.buildpacks.pre.group]]\nuri = \"urn:cnb:builder:acme/pre\"\n",
        )
        .unwrap();
        assert_eq!(d.env["GREETING"], "hi");
        assert_eq!(d.group.len(), 2);
        assert_eq!(d.group[1].label.as_deref(), Some("//buildpacks:b"));
        assert_eq!(d.pre[0].id, "acme/pre");
        assert_eq!(
            d.metadata_label.as_deref(),
            Some(
                r#"{"source":{"metadata":{"id":"acme.app","team":"core","url":"https://git.example/app"},"type":"project","version":{"declared":"1.2"}}}"#
            )
        );
        // The deprecated key: accepted in 0.2 with a warning, refused in 0.3.
        let t = "[[io.buildpacks.env.build]]\nname = \"A\"\nvalue = \"1\"\n";
        let d = parse(&format!("[_]\nschema-version = \"0.2\"\n{t}")).unwrap();
        assert_eq!((d.env["A"].as_str(), d.warnings.len()), ("1", 1));
        assert!(parse(&format!("[_]\nschema-version = \"0.3\"\n{t}")).unwrap_err().to_string().contains("0.3"));
        let e = parse("[_]\nschema-version = \"0.2\"\n[[io.buildpacks.group]]\nuri = \"docker://x/y\"\n").unwrap_err();
        assert_eq!(e.key, "io.buildpacks.group[0].uri");
    }

    #[test]
    fn gitignore_patterns() {
        let p = Patterns::new(&["*.log".into(), "/build/".into(), "docs/*.md".into(), "!keep.log".into()]).unwrap();
        assert!(p.matches("a.log") && p.matches("x/y/a.log"));
        assert!(!p.matches("keep.log"));
        assert!(p.matches("build/out") && !p.matches("src/build/out") && !p.matches("build"));
        assert!(p.matches("docs/a.md") && !p.matches("docs/x/a.md"));
        let inc = Patterns::new(&["cmd/".into(), "*.go".into()]).unwrap();
        assert!(inc.matches("cmd/main/x") && inc.matches("a/b.go") && !inc.matches("README"));
    }
}
