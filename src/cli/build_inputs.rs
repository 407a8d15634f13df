//! Per-invocation build inputs, as pack has them: `--env K=V`, `--env K` (the host's value),
//! `--env-file F`, `--binding NAME=DIR`, and `--stamp`. Env values are keyed like BUILD env (as
//! digests); binding values are never stored (see `execution::runners::cnb_bindings`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli::output::Failure;

/// The flags (shared by every command that builds).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BuildInputArgs {
    /// Platform env for every cnb_image's buildpacks and env for every genrule: `K=V`, or `K` to
    /// pass the host's value. Repeatable; wins over BUILD env and --env-file.
    #[arg(long = "env", value_name = "K[=V]", global = true, help_heading = "Build inputs", hide_short_help = true)]
    pub env: Vec<String>,
    /// A file of `K=V` lines (`#` comments; a bare `K` takes the host's value), as `docker run --env-file`.
    #[arg(
        long = "env-file",
        value_name = "FILE",
        global = true,
        help_heading = "Build inputs",
        hide_short_help = true
    )]
    pub env_file: Vec<PathBuf>,
    /// A service binding for every cnb_image: NAME=DIR, DIR outside the workspace holding a `type`
    /// file and one file per key (mounted at /platform/bindings/NAME; values never stored).
    #[arg(
        long = "binding",
        value_name = "NAME=DIR",
        global = true,
        help_heading = "Build inputs",
        hide_short_help = true
    )]
    pub binding: Vec<String>,
    /// Fill `{GIT_SHA}`, `{GIT_BRANCH}`, `{BUILD_TIMESTAMP}` and `build.workspace_status` keys in
    /// tags and labels (only the final manifest changes; no layer or buildpack reruns).
    #[arg(long, global = true, help_heading = "Build inputs", hide_short_help = true)]
    pub stamp: bool,
    /// Build the requested image targets for these platforms (`os/arch[/variant]`, comma-separated
    /// or repeated), as `docker build --platform`: a target with `platforms` is restricted to them;
    /// several give an image index.
    #[arg(
        long = "platform",
        value_name = "OS/ARCH",
        value_delimiter = ',',
        global = true,
        help_heading = "Build inputs",
        hide_short_help = true
    )]
    pub platform: Vec<String>,
}

/// The resolved inputs.
#[derive(Clone, Debug, Default)]
pub struct BuildInputs {
    pub env: BTreeMap<String, String>,
    /// name → absolute directory (checked: exists, outside the workspace, has `type`).
    pub bindings: BTreeMap<String, String>,
    pub stamp: bool,
    /// `--platform`, parsed (empty: each target's own).
    pub platforms: Vec<crate::model::platform::Platform>,
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains(['=', '/', '\0']) && k != "." && k != ".."
}

/// `K=V` or `K` (host value); `what` names where it came from for errors.
fn env_entry(s: &str, what: &str) -> Result<(String, String), Failure> {
    let (k, v) = match s.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => {
            let v = crate::env::var(s).ok_or_else(|| {
                Failure::user_hint(
                    format!("{what}: `{s}` has no value and the environment has no `{s}`"),
                    format!("write `{s}=VALUE`, or set `{s}` in the environment"),
                )
            })?;
            (s.to_string(), v)
        }
    };
    if !valid_env_name(&k) {
        return Err(Failure::user(format!("{what}: `{k}` is not a valid variable name")));
    }
    Ok((k, v))
}

impl BuildInputArgs {
    /// Resolves the flags: env files read, host values looked up, bindings checked.
    pub fn resolve(&self, cwd: &Path, root: &Path) -> Result<BuildInputs, Failure> {
        let mut env = BTreeMap::new();
        for f in &self.env_file {
            let p = cwd.join(f);
            crate::fs::reads::note(&p, false);
            let text =
                std::fs::read_to_string(&p).map_err(|e| Failure::user(format!("--env-file `{}`: {e}", f.display())))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (k, v) = env_entry(line, &format!("{}:{}", f.display(), i + 1))?;
                env.insert(k, v);
            }
        }
        for e in &self.env {
            let (k, v) = env_entry(e, "--env")?;
            env.insert(k, v);
        }
        let mut bindings = BTreeMap::new();
        for b in &self.binding {
            let (name, dir) = b.split_once('=').ok_or_else(|| {
                Failure::user_hint(format!("--binding `{b}` is not NAME=DIR"), "e.g. --binding npm=$HOME/.bindings/npm")
            })?;
            let real = crate::execution::runners::cnb_bindings::check(name, &cwd.join(dir), root)?;
            bindings.insert(name.to_string(), real.display().to_string());
        }
        let platforms = crate::model::platform::parse_list(&self.platform)
            .map_err(|e| Failure::user_hint(format!("--platform: {e}"), "e.g. --platform linux/amd64,linux/arm64"))?;
        Ok(BuildInputs { env, bindings, stamp: self.stamp, platforms })
    }
}
