//! `cbuild load LABEL [--engine docker|podman] [--tag REF]`: build an image target (the same
//! session as `build`) and stream it as a docker-archive into a local Docker or Podman image store
//! ([`crate::cli::engine`]), tagged with `--tag`, else the target's `tags`, else the name `export`
//! gives it (`cbuild.local/<package>/<name>:latest`). Not named `load.rs`: `commands::load` is the
//! graph-loading helper every command uses.

use std::process::ExitCode;

use clap::Args;

use crate::cli::engine::{self, Engine};
use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::oci::Image;

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The image target, e.g. //tools:tool.
    pub label: String,
    /// The engine to load into [default: Docker's socket, else Podman's, else the podman or docker
    /// command]. Sockets: DOCKER_HOST (default unix:///var/run/docker.sock), CONTAINER_HOST,
    /// $XDG_RUNTIME_DIR/podman/podman.sock, /run/podman/podman.sock.
    #[arg(long, value_enum)]
    pub engine: Option<Engine>,
    /// Name the image REF (repeatable) instead of the target's `tags`; `:latest` is added to a
    /// reference without a tag.
    #[arg(long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
}

pub fn run(g: &GlobalArgs, a: LoadArgs) -> Result<ExitCode, Failure> {
    // Before building: with no engine there is nothing to load into.
    let route = engine::find_route(a.engine).map_err(|tried| no_engine(a.engine, &tried))?;
    let mut g2 = g.clone();
    g2.quiet = true;
    g2.json = false;
    let s = Settings::resolve(&g2)?;
    let built = super::session::build(s, std::slice::from_ref(&a.label), false)?;
    if !built.report.ok() {
        super::session::print_summary(&built);
        return Ok(ExitCode::from(1));
    }
    let Some((label, manifest, _)) = built.images.first() else {
        return Err(Failure::user(format!("`{}` is not an image target; `cbuild load` loads images", a.label)));
    };
    let manifest = &super::session::platform_image(&built, label, manifest)?;
    let l = crate::model::label::Label::parse(label, None).map_err(|e| Failure::user(e.to_string()))?;
    let wanted = if a.tags.is_empty() { built.graph.image_tags.get(&l).cloned().unwrap_or_default() } else { a.tags };
    let tags = if wanted.is_empty() {
        vec![super::export::default_tag(&l)]
    } else {
        wanted.iter().map(|t| load_tag(t)).collect::<Result<Vec<_>, _>>()?
    };
    let img = Image::load(built.cache.cas(), manifest).map_err(Failure::env)?;
    let cas = built.cache.cas();
    let messages = engine::load(&route, |w| {
        crate::oci::docker_archive::write_docker_archive_to(w, &img, cas, &tags)?;
        Ok(())
    })
    .map_err(|e| Failure::Environment {
        error: e.context(format!("loading `{label}` through {route}")),
        hints: vec![
            start_hint(Some(route.engine())),
            format!("or write a docker-archive instead: cbuild export {label} -o image.tar"),
        ],
    })?;
    if !g.quiet {
        for m in &messages {
            eprintln!("{m}");
        }
    }
    if g.json {
        crate::outln!(
            "{}",
            serde_json::json!({"type": "loaded", "label": label, "image_digest": manifest.to_string(), "tags": tags,
                "engine": route.to_string()})
        );
    } else {
        for t in &tags {
            crate::outln!("{label} {manifest} {t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A repository tag engines accept in a docker-archive's RepoTags: `name:tag`, no digest.
fn load_tag(t: &str) -> Result<String, Failure> {
    if t.contains('@') {
        return Err(Failure::user_hint(
            format!("`{t}` names a digest; an image is loaded under a tag"),
            "pass --tag registry.example.com/team/app:1 (or a name without @sha256:…)",
        ));
    }
    let last = t.rsplit('/').next().unwrap_or(t);
    if t.is_empty() || last.is_empty() || last.starts_with(':') {
        return Err(Failure::user(format!("`{t}` is not an image name")));
    }
    Ok(if last.contains(':') { t.to_string() } else { format!("{t}:latest") })
}

fn no_engine(engine: Option<Engine>, tried: &[String]) -> Failure {
    let what = engine.map(|e| e.name()).unwrap_or("Docker or Podman");
    Failure::Environment {
        error: anyhow::anyhow!("no {what} engine is reachable; tried:\n  {}", tried.join("\n  ")),
        hints: vec![start_hint(engine), "or write a docker-archive instead: cbuild export LABEL -o image.tar".into()],
    }
}

fn start_hint(engine: Option<Engine>) -> String {
    match engine {
        Some(Engine::Podman) => "install Podman (apt-get install podman): `podman load` needs no service".into(),
        Some(Engine::Docker) => {
            "start Docker (systemctl start docker) or point DOCKER_HOST at its socket (unix:///path/docker.sock)".into()
        }
        None => "start Docker (systemctl start docker) or point DOCKER_HOST at its socket, or install Podman \
                 (apt-get install podman)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(load_tag("app").unwrap(), "app:latest");
        assert_eq!(load_tag("registry:5000/team/app").unwrap(), "registry:5000/team/app:latest");
        assert_eq!(load_tag("registry:5000/team/app:1").unwrap(), "registry:5000/team/app:1");
        assert!(load_tag("app@sha256:00").is_err());
        assert!(load_tag("").is_err());
        assert!(load_tag("team/").is_err());
    }
}
