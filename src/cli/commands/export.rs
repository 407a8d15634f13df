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
        return Ok(super::build::exit_code(&built.report));
    }
    let Some((label, manifest, _)) = built.images.first() else {
        return Err(Failure::user(format!("`{}` is not an image target", a.label)));
    };
    let img = Image::load(built.cache.cas(), manifest).map_err(Failure::env)?;
    let out = if a.output.is_absolute() { a.output.clone() } else { cwd.join(&a.output) };
    let tag = a.tag.clone().unwrap_or_else(|| {
        let l = label.trim_start_matches("//").replace(':', "/");
        format!("cbuild.local/{}:latest", l.to_lowercase())
    });
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
