//! CNB SBOM files (Buildpack API ≥ 0.7): which `*.sbom.<ext>.json` files of `<layers>/<id>/` a
//! buildpack wrote count, for what (`launch`, `build`, a layer), the media-type checks the lifecycle
//! makes, and where each goes in `<layers>/sbom/{launch,build,cache}/<escaped-id>/[<layer>/]sbom.<ext>`
//! (the SBOM layer of the image holds `launch/`). Pure: the build runner reads and stores the files.
//!
//! Follows the reference lifecycle (`buildpack/bom.go` `processSBOMFiles`): the glob is
//! `*.sbom.*.json`; the owner is the file name up to its first `.` (`launch`, `build`, else a layer,
//! counted only when the buildpack left a `<layer>.toml` for it); a layer's SBOM goes to `launch/`
//! when the layer is a launch layer, else to `build/`, and also to `cache/` when it is cached; only
//! counted files are checked: an unknown format is an error, and so is a media type the buildpack
//! did not declare in `sbom-formats`.

use std::path::Path;

use super::error::{CnbError, Phase};
use super::layer_toml::LayerTypes;

/// The SBOM formats of the Buildpack API: file extension and media type.
pub const FORMATS: [(&str, &str); 3] = [
    ("cdx.json", "application/vnd.cyclonedx+json"),
    ("spdx.json", "application/spdx+json"),
    ("syft.json", "application/vnd.syft+json"),
];

/// Largest SBOM file cbuild reads from a buildpack's layers dir.
pub const MAX_SBOM_BYTES: u64 = 64 << 20;

/// What an SBOM file describes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SbomOwner {
    /// `launch.sbom.<ext>`: what the buildpack put in the image outside its layers.
    Launch,
    /// `build.sbom.<ext>`: what it used during the build.
    Build,
    /// `<layer>.sbom.<ext>`: one layer.
    Layer(String),
}

/// A file of `<layers>/<id>/` that matches `*.sbom.*.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbomFileName {
    pub owner: SbomOwner,
    /// `cdx.json`, `spdx.json` or `syft.json`; `None`: not a format of the Buildpack API.
    pub ext: Option<&'static str>,
}

/// Classifies a file name of a buildpack's layers dir; `None` when it is not an SBOM file (the
/// lifecycle's glob `*.sbom.*.json`).
pub fn classify(file_name: &str) -> Option<SbomFileName> {
    let i = file_name.find(".sbom.")?;
    // `*.sbom.*.json`: anything (even nothing) between `.sbom.` and `.json`.
    if !file_name[i + ".sbom.".len()..].ends_with(".json") {
        return None;
    }
    // The owner: the name up to the first `.` (lifecycle: `strings.SplitN(file, ".", 2)[0]`).
    let owner = match file_name.split('.').next().unwrap_or("") {
        "launch" => SbomOwner::Launch,
        "build" => SbomOwner::Build,
        layer => SbomOwner::Layer(layer.to_string()),
    };
    let ext = FORMATS.iter().map(|(e, _)| *e).find(|e| file_name.ends_with(&format!(".sbom.{e}")));
    Some(SbomFileName { owner, ext })
}

/// The media type of an SBOM file extension.
pub fn media_type(ext: &str) -> Option<&'static str> {
    FORMATS.iter().find(|(e, _)| *e == ext).map(|(_, m)| *m)
}

/// The extension of an SBOM media type (parameters ignored).
pub fn extension(media_type: &str) -> Option<&'static str> {
    let base = media_type.split(';').next().unwrap_or("").trim();
    FORMATS.iter().find(|(_, m)| *m == base).map(|(e, _)| *e)
}

/// Checks a counted SBOM file the way the lifecycle does: a format of the Buildpack API, declared in
/// the buildpack's `sbom-formats`. `shown` is the file's path as the buildpack sees it.
pub fn check(name: &SbomFileName, declared: &[String], buildpack: &str, shown: &Path) -> Result<(), CnbError> {
    let Some(ext) = name.ext else {
        return Err(CnbError::invalid(
            Phase::Build,
            buildpack,
            shown,
            "unsupported SBOM file format (the Buildpack API has `.sbom.cdx.json`, `.sbom.spdx.json` and `.sbom.syft.json`)",
        ));
    };
    let mt = media_type(ext).unwrap_or_default();
    // Declared types may carry parameters (`application/vnd.cyclonedx+json; version=1.4`).
    if declared.iter().any(|d| d.split(';').next().unwrap_or("").trim() == mt) {
        return Ok(());
    }
    Err(CnbError::invalid(
        Phase::Build,
        buildpack,
        shown,
        format!(
            "undeclared SBOM media type `{mt}`: buildpack.toml declares {} (add it to `[buildpack] sbom-formats`)",
            if declared.is_empty() { "none".to_string() } else { format!("{declared:?}") }
        ),
    ))
}

/// Which of `<layers>/sbom/{launch,build,cache}` a counted SBOM file is copied to (lifecycle
/// `copySBOMFiles`). A layer SBOM needs the layer's types; `None` for a layer the buildpack left no
/// `<layer>.toml` for (such files are not counted).
pub fn destinations(owner: &SbomOwner, layer_types: Option<LayerTypes>) -> Vec<&'static str> {
    match owner {
        SbomOwner::Launch => vec!["launch"],
        SbomOwner::Build => vec!["build"],
        SbomOwner::Layer(_) => match layer_types {
            None => Vec::new(),
            Some(t) => {
                let mut v = vec![if t.launch { "launch" } else { "build" }];
                if t.cache {
                    v.push("cache");
                }
                v
            }
        },
    }
}

/// The path of an SBOM file under `<layers>/sbom/<kind>/`: `<escaped-id>/sbom.<ext>` or
/// `<escaped-id>/<layer>/sbom.<ext>`.
pub fn sbom_dir_path(escaped_id: &str, layer: Option<&str>, ext: &str) -> String {
    match layer {
        Some(l) => format!("{escaped_id}/{l}/sbom.{ext}"),
        None => format!("{escaped_id}/sbom.{ext}"),
    }
}

/// The file name a restored layer SBOM gets back in the buildpack's layers dir.
pub fn restored_file_name(layer: &str, ext: &str) -> String {
    format!("{layer}.sbom.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(f: &str) -> Option<SbomOwner> {
        classify(f).map(|c| c.owner)
    }

    #[test]
    fn classifies_launch_build_and_layer_files() {
        assert_eq!(
            classify("launch.sbom.cdx.json"),
            Some(SbomFileName { owner: SbomOwner::Launch, ext: Some("cdx.json") })
        );
        assert_eq!(classify("build.sbom.spdx.json").unwrap().owner, SbomOwner::Build);
        assert_eq!(
            classify("jdk.sbom.syft.json"),
            Some(SbomFileName { owner: SbomOwner::Layer("jdk".into()), ext: Some("syft.json") })
        );
        // The owner ends at the first dot, as in the lifecycle.
        assert_eq!(owner("a.b.sbom.cdx.json"), Some(SbomOwner::Layer("a".into())));
    }

    #[test]
    fn unknown_formats_are_sbom_files_without_an_extension() {
        assert_eq!(classify("jdk.sbom.some-format.json").unwrap().ext, None);
        assert_eq!(classify("launch.sbom.cdx.xml"), None);
        assert_eq!(classify("jdk.toml"), None);
        assert_eq!(classify("launch.toml"), None);
        assert_eq!(classify("sbom.cdx.json"), None);
    }

    #[test]
    fn media_types_must_be_declared() {
        let c = classify("launch.sbom.spdx.json").unwrap();
        let shown = Path::new("/layers/a/launch.sbom.spdx.json");
        let e = check(&c, &["application/vnd.cyclonedx+json".into()], "a@1", shown).unwrap_err();
        assert!(e.to_string().contains("undeclared SBOM media type `application/spdx+json`"), "{e}");
        assert_eq!(e.exit_code(), 51);
        check(&c, &["application/spdx+json; version=2.3".into()], "a@1", shown).unwrap();
        let u = classify("launch.sbom.x.json").unwrap();
        assert!(check(&u, &[], "a@1", shown).unwrap_err().to_string().contains("unsupported SBOM file format"));
    }

    #[test]
    fn layer_sboms_go_where_the_layer_types_say() {
        let l = SbomOwner::Layer("x".into());
        assert_eq!(destinations(&l, Some(LayerTypes::bcl(false, true, true))), ["launch", "cache"]);
        assert_eq!(destinations(&l, Some(LayerTypes::bcl(true, false, false))), ["build"]);
        assert_eq!(destinations(&l, Some(LayerTypes::bcl(false, true, false))), ["build", "cache"]);
        assert!(destinations(&l, None).is_empty());
        assert_eq!(destinations(&SbomOwner::Launch, None), ["launch"]);
        assert_eq!(sbom_dir_path("acme_x", Some("jdk"), "cdx.json"), "acme_x/jdk/sbom.cdx.json");
        assert_eq!(extension("application/spdx+json"), Some("spdx.json"));
    }
}
