//! The `debian` runner: a root filesystem image from the packages a lock file pins. Only the lock is
//! used (never the live archive index); every `.deb` is verified against it; downloads are cached
//! by sha256 in the cache directory, shared by every workspace using it.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::ctx::RunCtx;
use crate::cache::{ComponentValue, KeyBuilder};
use crate::debian::{self, DebCache, Lock, RootfsOptions, StackUser};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput};
use crate::oci::image::{append_layer, scratch, with_config, with_created, ConfigPatch};
use crate::oci::layer::{Compression, LayerOptions};

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    _deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::DebianImage(s) = &a.kind else { unreachable!() };
    let lock = ctx.sources.digest(&s.lock).ok_or_else(|| format!("internal: lock `{}` not hashed", s.lock))?;
    Ok(kb
        .component("lock", format!("blake3:{lock}"))
        // The run uses the packages as a set (checked against the lock's sorted `requested`):
        // reordering them in BUILD changes nothing and must not rebuild.
        .component("packages", ComponentValue::list(sorted_unique(&s.packages)))
        .component("suite", s.suite.as_str())
        .component("architecture", s.architecture.as_str())
        .component("user", format!("{}:{}:{}", s.user_name, s.uid, s.gid))
        .component("stack_id", s.stack_id.as_str())
        .component("env", ComponentValue::map(s.env.clone()))
        .component("labels", ComponentValue::map(s.labels.clone()))
        .component("created", super::image::created(None, ctx.source_date_epoch)))
}

fn sorted_unique(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

pub fn run(a: &Action, ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    let ActionKind::DebianImage(s) = &a.kind else { unreachable!() };
    let file = Lock::read(&ctx.root.join(&s.lock)).map_err(|e| ActionError::of(&e))?;
    // A multi-platform lock holds one section per architecture; this image uses its own.
    let lock = file.for_architecture(&s.architecture).ok_or_else(|| {
        ActionError::user(format!(
            "the lock `{}` has no packages for architecture `{}` (it has: {})",
            s.lock,
            s.architecture,
            file.architectures().join(", ")
        ))
        .hint(format!("add it: cbuild lock --platform linux/{} {}", s.architecture, a.label))
    })?;
    if sorted_unique(&s.packages) != lock.requested || lock.suite != s.suite || lock.architecture != s.architecture {
        return Err(ActionError::user(format!(
            "the lock `{}` was made for {:?} ({}/{}), but the target asks for {:?} ({}/{})",
            s.lock,
            lock.requested,
            lock.suite,
            lock.architecture,
            sorted_unique(&s.packages),
            s.suite,
            s.architecture,
        ))
        .hint(format!("refresh it: cbuild lock {}", a.label)));
    }
    // `<dir>/debs/sha256/<hex>`: the cache dir by default, or CBUILD_DEBIAN_CACHE (shared by caches).
    let deb_dir = crate::env::var_os(crate::env::DEBIAN_CACHE)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ctx.cache.dir().to_path_buf());
    let debs = DebCache::open(&deb_dir).map_err(|e| ActionError::of(&e))?;
    let setting = ctx.debian_archive.clone();
    debian::fetch_debs(&lock, &debs, || debian::Archive::new(debian::find_archive(setting.as_deref())?))
        .map_err(|e| ActionError::of(&e))?;
    let opts = RootfsOptions {
        user: StackUser {
            name: s.user_name.clone(),
            uid: s.uid,
            group: s.user_name.clone(),
            gid: s.gid,
            home: format!("/home/{}", s.user_name),
            shell: "/bin/sh".into(),
        },
        stack_id: s.stack_id.clone(),
        merged_usr: true,
        layer: LayerOptions { compression: Compression::Gzip, mtime: ctx.source_date_epoch, probe: true },
    };
    let rl = debian::build_rootfs_layer(&lock, &debs, &opts, ctx.cache.cas()).map_err(|e| ActionError::of(&e))?;
    let img = scratch("linux", oci_arch(&s.architecture)).map_err(|e| ActionError::of(&e))?;
    let img = append_layer(&img, &rl.layer, &format!("debian packages ({} from {})", lock.packages.len(), s.lock))
        .map_err(|e| ActionError::of(&e))?;
    let mut env: Vec<(String, String)> =
        vec![("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())];
    env.extend(rl.env.clone());
    env.extend(s.env.clone());
    let mut labels = rl.labels.clone();
    labels.extend(s.labels.clone());
    let patch = ConfigPatch {
        entrypoint: None,
        cmd: Some(vec!["/bin/sh".into()]),
        env,
        user: Some(format!("{}:{}", s.uid, s.gid)),
        workdir: Some("/".into()),
        labels,
        exposed_ports: Vec::new(),
    };
    let img = with_config(&img, &patch).map_err(|e| ActionError::of(&e))?;
    let img =
        with_created(&img, &super::image::created(None, ctx.source_date_epoch)).map_err(|e| ActionError::of(&e))?;
    let (manifest, size) = img.write_to(ctx.cache.cas()).map_err(|e| ActionError::of(&e))?;
    Ok(super::image::image_output(&img, manifest, size, Vec::new()))
}

/// The `debian` action kind's [`Runner`](super::seam::Runner).
pub struct Debian;

impl super::seam::Runner for Debian {
    fn mnemonic(&self) -> &'static str {
        "debian"
    }
    fn version(&self) -> u32 {
        2
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        let ActionKind::DebianImage(d) = &a.kind else { return Vec::new() };
        vec![(d.lock.clone(), true)]
    }
    fn key(
        &self,
        kb: KeyBuilder,
        a: &Action,
        deps: &super::seam::Deps,
        ctx: &RunCtx,
    ) -> Result<KeyBuilder, ActionError> {
        key(kb, a, deps, ctx)
    }
    fn run<'a>(
        &'a self,
        a: &'a Action,
        deps: &'a super::seam::Deps,
        ctx: &'a Arc<RunCtx>,
    ) -> super::seam::RunFuture<'a> {
        super::seam::blocking(a, deps, ctx, |a, _, ctx| run(a, ctx))
    }
}

/// The OCI name of a Debian architecture (`i386` is `386`, `ppc64el` is `ppc64le`, `armhf` is `arm`).
fn oci_arch(debian: &str) -> &str {
    match debian {
        "i386" => "386",
        "ppc64el" => "ppc64le",
        "armhf" | "armel" => "arm",
        "mips64el" => "mips64le",
        a => a,
    }
}
