//! An image's config as a sandbox spec, with `cbuild run` semantics (what `docker run` does with
//! entrypoint, cmd, env, user and working directory), over an extracted root file system. Used by
//! `image_test`'s command and service checks; it spawns nothing itself.

use std::collections::BTreeMap;
use std::path::Path;

use super::sandbox::{RootFs, SandboxSpec};
use crate::oci::Image;

/// What replaces parts of the image's config.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replaces the entrypoint *and* the cmd (as container-structure-test's `command` + `args`).
    pub argv: Option<Vec<String>>,
    /// Replaces the entrypoint only.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the cmd only (`cbuild run IMAGE -- ARGS`).
    pub cmd: Option<Vec<String>>,
    /// Added to (and overriding) the image's env.
    pub env: BTreeMap<String, String>,
}

/// The [`SandboxSpec`] that runs `img` (extracted at `rootfs`) the way `cbuild run` does: argv,
/// env, user (looked up in the image's `/etc/passwd`), `HOME`, a default `PATH`, working directory;
/// no network (a namespace with loopback only).
pub fn container_spec(img: &Image, rootfs: &Path, o: &Overrides) -> Result<SandboxSpec, String> {
    let (os, arch) = img.platform();
    super::emulation::check_arch(&os, &arch)?;
    let cfg = img.config().config().clone().unwrap_or_default();
    let argv: Vec<String> = match &o.argv {
        Some(a) => a.clone(),
        None => {
            let entrypoint = o.entrypoint.clone().unwrap_or_else(|| cfg.entrypoint().clone().unwrap_or_default());
            // A new entrypoint drops the image's cmd, as `docker run --entrypoint` does.
            let cmd = match (&o.cmd, &o.entrypoint) {
                (Some(c), _) => c.clone(),
                (None, Some(_)) => vec![],
                (None, None) => cfg.cmd().clone().unwrap_or_default(),
            };
            entrypoint.into_iter().chain(cmd).collect()
        }
    };
    if argv.is_empty() {
        return Err("the image has no entrypoint or cmd".into());
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for kv in cfg.env().clone().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env.extend(o.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (uid, gid, home) = resolve_user(rootfs, &cfg.user().clone().unwrap_or_default())?;
    env.entry("HOME".into()).or_insert(home);
    env.entry("PATH".into()).or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut spec = SandboxSpec::new(RootFs::Dir(rootfs.to_path_buf()), argv);
    spec.cwd = cfg.working_dir().clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    spec.env = env;
    spec.uid = uid;
    spec.gid = gid;
    spec.network = false;
    Ok(spec)
}

/// `uid[:gid]` or a user name (looked up in the image's /etc/passwd and /etc/group), with the home
/// dir; `""` is root.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, String), String> {
    // Resolved inside the image: an image whose /etc is a symlink to a host path reads nothing of the host.
    let passwd = String::from_utf8_lossy(&crate::fs::confined::read_image_file(rootfs, "etc/passwd")).into_owned();
    let group = String::from_utf8_lossy(&crate::fs::confined::read_image_file(rootfs, "etc/group")).into_owned();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entries = || passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 6);
    let (uid, mut gid, home) = if u.is_empty() {
        (0, 0, "/root".to_string())
    } else if let Ok(uid) = u.parse::<u32>() {
        let e = entries().find(|f| f[2] == uid.to_string());
        (
            uid,
            e.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(uid),
            e.map(|f| f[5].to_string()).unwrap_or_else(|| "/".into()),
        )
    } else {
        let f = entries().find(|f| f[0] == u).ok_or_else(|| format!("user `{u}` is not in the image's /etc/passwd"))?;
        (
            f[2].parse().map_err(|_| format!("bad uid for `{u}` in /etc/passwd"))?,
            f[3].parse().unwrap_or(0),
            f[5].to_string(),
        )
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?,
        };
    }
    Ok((uid, gid, home))
}
