//! `cbuild run LABEL [-- ARGS]`: build an image target if needed and run it locally the way
//! `docker run --read-only --network host` would (entrypoint, cmd, env, user, workdir), in a
//! bubblewrap sandbox over the image's extracted root filesystem — no daemon.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::execution::sandbox::{self, RootFs, SandboxSpec};
use crate::oci::extract::{extract_layers, ExtractOptions};
use crate::oci::Image;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The image target, e.g. //tools:tool.
    pub label: String,
    /// Arguments replacing the image's Cmd (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Replace the image's entrypoint ('' clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Set an environment variable (repeatable): -e KEY=VALUE.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Run as this user instead of the image's: UID[:GID] or a name from the image's /etc/passwd.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory instead of the image's.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Network: `host` (servers are reachable on the host's loopback) or `none`.
    #[arg(long, default_value = "host", value_parser = ["host", "none"])]
    pub net: String,
}

pub fn run(g: &GlobalArgs, a: RunArgs) -> Result<ExitCode, Failure> {
    let mut g2 = g.clone();
    g2.quiet = true;
    let s = Settings::resolve(&g2)?;
    let built = super::session::build(s, std::slice::from_ref(&a.label), false)?;
    if !built.report.ok() {
        super::session::print_summary(&built);
        return Ok(crate::cli::output::report_exit_code(&built.report));
    }
    let Some((label, manifest, _)) = built.images.first() else {
        return Err(Failure::user(format!("`{}` is not an image target; `cbuild run` runs images", a.label)));
    };
    let manifest = &super::session::platform_image(&built, label, manifest)?;
    let blobs = built.cache.cas();
    let img = Image::load(blobs, manifest).map_err(Failure::env)?;
    let (os, arch) = img.platform();
    crate::execution::emulation::check_arch(&os, &arch).map_err(|m| Failure::env(anyhow::anyhow!(m)))?;
    let scratch = sandbox::scratch_dir("run-").map_err(|e| Failure::env(anyhow::anyhow!(e)))?;
    let rootfs = scratch.path().join("rootfs");
    let digests: Vec<_> = img.layers().iter().map(|l| l.digest.clone()).collect();
    // Sanitized as the build image roots are: the scratch dir is reachable by other local users
    // while the container runs (set-id bits would be theirs to use; they are useless in the
    // sandbox, which runs with no_new_privs).
    extract_layers(
        blobs,
        &digests,
        &rootfs,
        &ExtractOptions { sanitize: true, id_shift: sandbox::id_shift(), ..ExtractOptions::default() },
    )
    .map_err(|e| Failure::env(anyhow::anyhow!("extracting `{label}`: {e}")))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755));
    }
    let cfg = img.config().config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &a.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !a.args.is_empty() {
        a.args.clone()
    } else if a.entrypoint.is_some() {
        vec![]
    } else {
        cfg.cmd().clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(Failure::user(format!("`{label}` has no entrypoint or cmd; pass a command after `--`")));
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for kv in cfg.env().clone().unwrap_or_default().iter().chain(a.env.iter()) {
        match kv.split_once('=') {
            Some((k, v)) => env.insert(k.to_string(), v.to_string()),
            None => return Err(Failure::user(format!("environment entry `{kv}` is not KEY=VALUE"))),
        };
    }
    let user = a.user.clone().or_else(|| cfg.user().clone()).unwrap_or_default();
    // The same lookup as `image_test`'s commands and services (execution::container).
    let (uid, gid, home) = crate::execution::container::resolve_user(&rootfs, &user).map_err(Failure::user)?;
    env.entry("HOME".into()).or_insert(home);
    env.entry("PATH".into()).or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    check_exec_size(&argv, &env).map_err(Failure::user)?;
    let mut spec = SandboxSpec::new(RootFs::Dir(rootfs.clone()), argv);
    spec.cwd =
        a.workdir.clone().or_else(|| cfg.working_dir().clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    spec.env = env;
    spec.uid = uid;
    spec.gid = gid;
    spec.network = a.net == "host";
    let status = sandbox::interactive_command(&spec).map_err(Failure::env)?.status().map_err(Failure::env)?;
    drop(scratch);
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Refuses a command line and environment the kernel would refuse at exec (`E2BIG`, "Argument list
/// too long"), saying which part is too large: an image config can carry any number of env entries.
fn check_exec_size(argv: &[String], env: &BTreeMap<String, String>) -> Result<(), String> {
    // One string may not exceed MAX_ARG_STRLEN (32 pages); all together must fit in ARG_MAX.
    const MAX_ARG_STRLEN: usize = 32 * 4096;
    // SAFETY: sysconf has no preconditions.
    let arg_max = match unsafe { libc::sysconf(libc::_SC_ARG_MAX) } {
        n if n > 0 => n as usize,
        _ => 2 << 20,
    };
    let ptr = std::mem::size_of::<usize>();
    if let Some((k, v)) = env.iter().find(|(k, v)| k.len() + v.len() + 2 > MAX_ARG_STRLEN) {
        return Err(format!(
            "environment variable `{k}` is {} bytes; a process accepts at most {MAX_ARG_STRLEN} bytes per entry",
            k.len() + v.len() + 1
        ));
    }
    if let Some(a) = argv.iter().find(|a| a.len() + 1 > MAX_ARG_STRLEN) {
        let head: String = a.chars().take(40).collect();
        return Err(format!("argument `{head}…` is {} bytes; a process accepts at most {MAX_ARG_STRLEN}", a.len()));
    }
    let env_bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2 + ptr).sum();
    let arg_bytes: usize = argv.iter().map(|a| a.len() + 1 + ptr).sum();
    if env_bytes + arg_bytes > arg_max {
        return Err(format!(
            "the image's environment ({} entries, {env_bytes} bytes) and command ({arg_bytes} bytes) exceed the \
             kernel's limit for a process (ARG_MAX = {arg_max} bytes); remove entries from the image config or \
             override fewer with -e",
            env.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_environment_is_named_not_e2big() {
        let argv = vec!["/bin/true".to_string()];
        let mut env = BTreeMap::new();
        assert!(check_exec_size(&argv, &env).is_ok());
        for i in 0..1_000_000 {
            env.insert(format!("V{i}"), "x".into());
        }
        let e = check_exec_size(&argv, &env).unwrap_err();
        assert!(e.contains("1000000 entries") && e.contains("ARG_MAX"), "{e}");
        let mut one = BTreeMap::new();
        one.insert("BIG".to_string(), "y".repeat(200_000));
        let e = check_exec_size(&argv, &one).unwrap_err();
        assert!(e.contains("`BIG`"), "{e}");
    }
}
