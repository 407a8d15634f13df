//! `cbuild export LABEL --format docker-archive|oci -o PATH`: an image target as a tar that
//! `docker load` accepts, or as an OCI layout directory anywhere.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::oci::Image;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The image target, e.g. //tools:tool.
    pub label: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "docker-archive")]
    pub format: ExportFormat,
    /// Where to write (a .tar for docker-archive, a directory for oci).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Repository tag recorded in the archive (docker load names the image after it).
    #[arg(long)]
    pub tag: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    /// `docker load`-able tar (also an OCI archive).
    DockerArchive,
    /// An OCI image layout directory.
    Oci,
}

pub fn run(g: &GlobalArgs, a: ExportArgs) -> Result<ExitCode, Failure> {
    let mut g2 = g.clone();
    g2.quiet = true;
    g2.json = false;
    let s = Settings::resolve(&g2)?;
    let cwd = s.cwd.clone();
    let built = super::session::build(s, std::slice::from_ref(&a.label), false)?;
    if !built.report.ok() {
        super::session::print_summary(&built);
        return Ok(crate::cli::output::report_exit_code(&built.report));
    }
    let Some((label, manifest, _)) = built.images.first() else {
        return Err(Failure::user(format!("`{}` is not an image target", a.label)));
    };
    let manifest = &super::session::platform_image(&built, label, manifest)?;
    let img = Image::load(built.cache.cas(), manifest).map_err(Failure::env)?;
    let out = if a.output.is_absolute() { a.output.clone() } else { cwd.join(&a.output) };
    let tag = match &a.tag {
        Some(t) => t.clone(),
        None => default_tag(&crate::model::label::Label::parse(label, None).map_err(|e| Failure::user(e.to_string()))?),
    };
    match a.format {
        ExportFormat::DockerArchive => {
            crate::oci::docker_archive::write_docker_archive(&out, &img, built.cache.cas(), &[tag])
                .map_err(Failure::env)?
        }
        ExportFormat::Oci => {
            crate::oci::layout::write_layout(&out, &img, built.cache.cas(), Some("latest")).map_err(Failure::env)?;
        }
    }
    crate::outln!("{label} {manifest} {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The image name of a target without `tags` (`export`, `load`): `cbuild.local/<package>/<name>:latest`,
/// lowercased, with characters a repository name may not hold replaced by `-`.
pub fn default_tag(l: &crate::model::label::Label) -> String {
    let path = if l.package.is_root() { l.name.clone() } else { format!("{}/{}", l.package, l.name) };
    let repo: Vec<String> = path
        .to_lowercase()
        .split('/')
        .map(|c| {
            let c: String =
                c.chars().map(|ch| if ch.is_ascii_alphanumeric() || "._-".contains(ch) { ch } else { '-' }).collect();
            // A path component starts and ends with a letter or digit.
            let t = c.trim_matches(|ch: char| !ch.is_ascii_alphanumeric());
            if t.is_empty() {
                "x".to_string()
            } else {
                t.to_string()
            }
        })
        .collect();
    format!("cbuild.local/{}:latest", repo.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tags() {
        let t = |s: &str| default_tag(&crate::model::label::Label::parse(s, None).unwrap());
        assert_eq!(t("//tools:tool"), "cbuild.local/tools/tool:latest");
        assert_eq!(t("//services/API:Image"), "cbuild.local/services/api/image:latest");
        assert_eq!(t("//:img"), "cbuild.local/img:latest");
        assert_eq!(t("//a:_x+y_"), "cbuild.local/a/x-y:latest");
    }
}
