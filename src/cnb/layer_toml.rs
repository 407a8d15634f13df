//! Layer Content Metadata `<layer>.toml` (buildpack.md › Layer Types): `[types]` + `[metadata]`,
//! reserved layer names, the restore matrix and what export does with a layer. Pure: the caller
//! reads files and moves directories.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CnbError, Phase};

/// `[types]` of a layer; all default to false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerTypes {
    #[serde(default)]
    pub launch: bool,
    #[serde(default)]
    pub build: bool,
    #[serde(default)]
    pub cache: bool,
}

impl LayerTypes {
    /// Shorthand in the (build, cache, launch) order of the spec's table.
    pub const fn bcl(build: bool, cache: bool, launch: bool) -> Self {
        LayerTypes { launch, build, cache }
    }

    /// No type set: the layer is renamed `<layer>.ignore` after the build.
    pub fn is_ignored(&self) -> bool {
        !self.launch && !self.build && !self.cache
    }
}

/// A parsed `<layer>.toml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerMetadataFile {
    pub types: LayerTypes,
    /// Free-form `[metadata]` (API 0.12 may carry `exec-env = [...]` here).
    pub metadata: toml::Table,
}

/// Layer names a buildpack may not use: they are the names of its own output files.
pub const FORBIDDEN_LAYER_NAMES: [&str; 3] = ["build", "launch", "store"];

/// Checks a layer name (the file stem of `<layer>.toml`): not `build`/`launch`/`store`, not
/// empty, no `/`, not a dot name.
pub fn check_layer_name(name: &str, buildpack: &str, file: &Path) -> Result<(), CnbError> {
    let reason = if FORBIDDEN_LAYER_NAMES.contains(&name) {
        format!("layer name `{name}` is reserved (`build`, `launch` and `store` are buildpack output files)")
    } else if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        format!("invalid layer name `{name}`")
    } else {
        return Ok(());
    };
    Err(CnbError::invalid(Phase::Build, buildpack, file, reason))
}

/// For a file name in `<layers>/<escaped-id>/`, the layer it describes: `foo.toml` → `foo`;
/// `launch.toml`, `build.toml`, `store.toml` and non-TOML files → `None`.
pub fn layer_name_of_file(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".toml")?;
    if stem.is_empty() || FORBIDDEN_LAYER_NAMES.contains(&stem) {
        return None;
    }
    Some(stem)
}

/// Parses `<layer>.toml`. `launch`/`build`/`cache` at the top level (the pre-0.6 shape) are an
/// error [L]; unknown keys are ignored.
pub fn parse_layer_toml(text: &str, buildpack: &str, file: &Path) -> Result<LayerMetadataFile, CnbError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| CnbError::toml(Phase::Build, buildpack, file, e))?;
    for k in ["launch", "build", "cache"] {
        if table.contains_key(k) {
            return Err(CnbError::invalid(
                Phase::Build,
                buildpack,
                file,
                format!("`{k}` is at the top level; since Buildpack API 0.6 it belongs under `[types]`"),
            ));
        }
    }
    let types = match table.get("types") {
        None => LayerTypes::default(),
        Some(v) => v.clone().try_into::<LayerTypes>().map_err(|e| CnbError::toml(Phase::Build, buildpack, file, e))?,
    };
    let metadata = match table.get("metadata") {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t.clone(),
        Some(_) => return Err(CnbError::invalid(Phase::Build, buildpack, file, "`metadata` must be a table")),
    };
    Ok(LayerMetadataFile { types, metadata })
}

/// What to put back before `bin/build` for a layer of the previous build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreAction {
    /// `<layer>.toml` and `<layer>/` from the cache.
    MetadataAndContents,
    /// `<layer>.toml` only, from the previous image's lifecycle label (no contents).
    MetadataOnly,
    /// Nothing.
    Nothing,
}

/// The restore matrix of buildpack.md › Layer Types, flags of the previous build as
/// (build, cache, launch): 111 110 011 010 → metadata + contents; 001 → metadata only;
/// 101 100 000 → nothing.
pub fn restore_action(previous: LayerTypes) -> RestoreAction {
    if previous.cache {
        RestoreAction::MetadataAndContents
    } else if previous.launch && !previous.build {
        RestoreAction::MetadataOnly
    } else {
        RestoreAction::Nothing
    }
}

/// The `<layer>.toml` written on restore: `[metadata]` only, never `[types]` (the buildpack must
/// set the types again).
pub fn restored_layer_toml(metadata: &toml::Table) -> String {
    #[derive(Serialize)]
    struct Restored<'a> {
        metadata: &'a toml::Table,
    }
    toml::to_string(&Restored { metadata }).expect("a TOML table serializes")
}

/// What export does with a layer after the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDisposition {
    /// No types: rename `<layer>` to `<layer>.ignore`.
    Ignore,
    /// `launch = true` with contents: becomes an image layer.
    Export,
    /// `launch = true` without `<layer>/`: reuse the previous image's layer by diffID.
    ReusePrevious,
    /// build/cache only: not in the image (cached if `cache = true`).
    NotInImage,
}

/// Decides the [`LayerDisposition`]; `cache = true` without contents is an error.
pub fn layer_disposition(
    name: &str,
    types: LayerTypes,
    has_dir: bool,
    buildpack: &str,
    file: &Path,
) -> Result<LayerDisposition, CnbError> {
    if types.is_ignored() {
        return Ok(LayerDisposition::Ignore);
    }
    if !has_dir && types.cache {
        return Err(CnbError::invalid(
            Phase::Export,
            buildpack,
            file,
            format!("layer `{name}` is `cache = true` but has no contents directory"),
        ));
    }
    Ok(match (types.launch, has_dir) {
        (true, true) => LayerDisposition::Export,
        (true, false) => LayerDisposition::ReusePrevious,
        (false, _) => LayerDisposition::NotInImage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Result<LayerMetadataFile, CnbError> {
        parse_layer_toml(t, "acme/go@1", Path::new("/layers/acme_go/go.toml"))
    }

    #[test]
    fn parses_types_and_metadata() {
        let l = p(
            "[types]\nlaunch = true\ncache = true\n[metadata]\nversion = \"1.2\"\n[metadata.x]\ny = 1\nunknown = 3\n",
        )
        .unwrap();
        assert_eq!(l.types, LayerTypes::bcl(false, true, true));
        assert_eq!(l.metadata["version"].as_str(), Some("1.2"));
        let empty = p("").unwrap();
        assert!(empty.types.is_ignored());
        assert!(empty.metadata.is_empty());
    }

    #[test]
    fn top_level_flags_are_an_error() {
        for k in ["launch", "build", "cache"] {
            let e = p(&format!("{k} = true\n")).unwrap_err();
            let s = e.to_string();
            assert!(s.contains(&format!("`{k}`")) && s.contains("acme/go@1") && s.contains("go.toml"), "{s}");
        }
        assert!(p("[types]\nlaunch = \"yes\"\n").is_err());
        assert!(p("metadata = 1\n").is_err());
        assert!(p("[types\n").is_err());
    }

    #[test]
    fn forbidden_names() {
        for n in ["build", "launch", "store", "", "a/b", ".."] {
            assert!(check_layer_name(n, "a@1", Path::new("x")).is_err(), "{n}");
        }
        assert!(check_layer_name("node_modules", "a@1", Path::new("x")).is_ok());
        assert_eq!(layer_name_of_file("jdk.toml"), Some("jdk"));
        assert_eq!(layer_name_of_file("launch.toml"), None);
        assert_eq!(layer_name_of_file("store.toml"), None);
        assert_eq!(layer_name_of_file("jdk.sbom.cdx.json"), None);
    }

    #[test]
    fn restore_matrix() {
        use RestoreAction::*;
        let cases = [
            ((true, true, true), MetadataAndContents),
            ((true, true, false), MetadataAndContents),
            ((false, true, true), MetadataAndContents),
            ((false, true, false), MetadataAndContents),
            ((true, false, true), Nothing),
            ((true, false, false), Nothing),
            ((false, false, false), Nothing),
            ((false, false, true), MetadataOnly),
        ];
        for ((b, c, l), want) in cases {
            assert_eq!(restore_action(LayerTypes::bcl(b, c, l)), want, "{b}{c}{l}");
        }
    }

    #[test]
    fn restored_toml_has_metadata_only() {
        let l = p("[types]\nlaunch = true\n[metadata]\nv = \"1\"\n[metadata.n]\nk = 2\n").unwrap();
        let text = restored_layer_toml(&l.metadata);
        assert!(!text.contains("types") && !text.contains("launch"), "{text}");
        let back = p(&text).unwrap();
        assert!(back.types.is_ignored());
        assert_eq!(back.metadata, l.metadata);
        let empty = restored_layer_toml(&toml::Table::new());
        assert!(p(&empty).unwrap().metadata.is_empty(), "{empty}");
    }

    #[test]
    fn dispositions() {
        use LayerDisposition::*;
        let f = Path::new("x.toml");
        let d = |b, c, l, dir| layer_disposition("x", LayerTypes::bcl(b, c, l), dir, "a@1", f);
        assert_eq!(d(false, false, false, true).unwrap(), Ignore);
        assert_eq!(d(false, false, true, true).unwrap(), Export);
        assert_eq!(d(false, false, true, false).unwrap(), ReusePrevious);
        assert_eq!(d(true, true, false, true).unwrap(), NotInImage);
        assert!(d(false, true, true, false).is_err());
        assert!(d(false, true, false, false).is_err());
    }
}
