//! What the CNB runners share: the build image's root filesystem (extracted once per digest), the
//! scratch tree mounted into the sandbox (`/workspace`, `/layers`, `/platform`, `/cnb`), buildpack
//! trees from the CAS, and running a buildpack executable with its output prefixed.

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::app_dir::{AppDir, Want};
use super::ctx::RunCtx;
use crate::cnb::buildpack_toml::{escape_id, BuildpackDescriptor, BuildpackRef, Distro, OrderGroup, RunTarget};
use crate::execution::events::Event;
use crate::execution::sandbox::{self, Mount, RootFs, SandboxSpec};
use crate::model::action::{ActionId, ActionOutput, CnbPhase, Input, OutFile};
use crate::model::digest::Digest;
use crate::oci::extract::{extract_layers, ExtractOptions};
use crate::oci::Image;

/// Directories cbuild mounts over; they must exist in the build image's root (read-only).
pub const MOUNT_POINTS: [&str; 4] = ["workspace", "layers", "platform", "cnb"];

/// The root filesystem of an image, extracted once per manifest digest under the sandbox scratch
/// root (reachable by the sandbox user) and reused by every detect/build action.
pub fn ensure_rootfs(img: &Image, cas: &crate::cas::BlobDir) -> Result<PathBuf, ActionError> {
    let base = sandbox::scratch_root().map_err(|e| ActionError::of(&e))?.join("rootfs");
    std::fs::create_dir_all(&base).map_err(|e| format!("creating `{}`: {e}", base.display()))?;
    set_mode(&base, 0o711);
    // `-s2`: extracted with `sanitize` (no set-id bits, nothing group/other-writable, no device
    // nodes) and sandbox ids shifted (`sandbox::ID_SHIFT`): this tree is shared by every sandbox and
    // reachable by other local users, none of whom owns anything in it.
    let dir = base.join(format!("{}-s2", img.digest().hex()));
    let done = dir.join(".cbuild-complete");
    if done.is_file() {
        // Its mtime says when it was last used: `cbuild cache gc` keeps what a build may be using.
        if let Ok(f) = std::fs::File::options().write(true).open(&done) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        return Ok(dir);
    }
    let tmp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(&base).map_err(|e| ActionError::of(&e))?;
    let root = tmp.path().join("root");
    let layers: Vec<Digest> = img.layers().iter().map(|l| l.digest.clone()).collect();
    extract_layers(
        cas,
        &layers,
        &root,
        &ExtractOptions { sanitize: true, id_shift: sandbox::id_shift(), ..ExtractOptions::default() },
    )
    .map_err(|e| format!("extracting build image `{}`: {e}", img.digest()))?;
    for m in MOUNT_POINTS {
        let p = root.join(m);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::create_dir_all(&p).map_err(|e| format!("creating mount point `/{m}`: {e}"))?;
            set_mode(&p, 0o755);
        }
    }
    set_mode(tmp.path(), 0o755);
    std::fs::write(root.join(".cbuild-complete"), b"").map_err(|e| ActionError::of(&e))?;
    let kept = tmp.keep();
    match std::fs::rename(kept.join("root"), &dir) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&kept);
        }
        Err(_) if dir.join(".cbuild-complete").is_file() => {
            // Another process won the race; ours is a duplicate.
            let _ = std::fs::remove_dir_all(&kept);
        }
        Err(e) => return Err(ActionError::env(format!("installing the root filesystem at `{}`: {e}", dir.display()))),
    }
    Ok(dir)
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// The scratch tree of one detect or build run, mounted into the sandbox.
pub struct Scratch {
    _dir: tempfile::TempDir,
    pub workspace: PathBuf,
    pub layers: PathBuf,
    pub platform: PathBuf,
    pub cnb: PathBuf,
    /// `/tmp` of every buildpack of this run: one dir on disk, shared as in the lifecycle's single
    /// build container (libcnb's tracing hands files to later buildpacks there), not a tmpfs of
    /// half the RAM per sandbox.
    pub tmp: PathBuf,
}

impl Scratch {
    pub fn new(prefix: &str) -> Result<Scratch, ActionError> {
        let dir = sandbox::scratch_dir(prefix)?;
        set_mode(dir.path(), 0o755);
        let s = Scratch {
            workspace: dir.path().join("workspace"),
            layers: dir.path().join("layers"),
            platform: dir.path().join("platform"),
            cnb: dir.path().join("cnb"),
            tmp: dir.path().join("tmp"),
            _dir: dir,
        };
        for d in [&s.workspace, &s.layers, &s.platform.join("env"), &s.cnb.join("buildpacks"), &s.tmp] {
            std::fs::create_dir_all(d).map_err(|e| ActionError::of(&e))?;
        }
        Ok(s)
    }

    /// The sandbox mounts: app and layers as given, platform and buildpacks read-only.
    pub fn mounts(&self, app_writable: bool) -> Vec<Mount> {
        vec![
            Mount { src: self.workspace.clone(), dst: "/workspace".into(), writable: app_writable },
            Mount::writable(&self.layers, "/layers"),
            Mount::read_only(&self.platform, "/platform"),
            Mount::read_only(&self.cnb, "/cnb"),
        ]
    }

    /// Writes the phase's service bindings under `<platform>/bindings/` (the bytes read when the
    /// key was made), readable by the build user only.
    pub fn write_bindings(
        &self,
        p: &crate::model::action::CnbPhase,
        ctx: &RunCtx,
        host_ids: (u32, u32),
    ) -> Result<(), ActionError> {
        let loaded = super::cnb_bindings::load_all(&p.bindings, &ctx.bindings, &ctx.root)?;
        super::cnb_bindings::write(&self.platform, &loaded, host_ids)
    }

    /// Writes a builder image's `/cnb/build-config/env/` files; returns the build-config dir to
    /// apply (`None` when there are none, as for a workspace builder).
    pub fn write_build_config(&self, env: &BTreeMap<String, String>) -> Result<Option<PathBuf>, ActionError> {
        if env.is_empty() {
            return Ok(None);
        }
        let dir = self.cnb.join("build-config");
        std::fs::create_dir_all(dir.join("env")).map_err(|e| ActionError::of(&e))?;
        for (k, v) in env {
            // Names come from an image: one path component each.
            if k.is_empty() || k.contains('/') || k == "." || k == ".." {
                return Err(ActionError::user(format!("builder build-config env file `{k}` is not a file name")));
            }
            std::fs::write(dir.join("env").join(k), v).map_err(|e| ActionError::of(&e))?;
        }
        Ok(Some(dir))
    }

    /// Writes `<platform>/env/NAME` files (contents verbatim).
    pub fn write_platform_env(&self, env: &BTreeMap<String, String>) -> Result<(), ActionError> {
        for (k, v) in env {
            if k.is_empty() || k.contains('/') || k.contains('=') || k == "." || k == ".." {
                return Err(ActionError::user(format!("platform env name `{k}` is not a valid variable name")));
            }
            std::fs::write(self.platform.join("env").join(k), v).map_err(|e| ActionError::of(&e))?;
        }
        Ok(())
    }
}

/// What the app's `/workspace` must hold: each file with an identity covering its content, mode
/// and (for sources) stat, so an unchanged entry of a kept workspace can be recognised.
pub fn app_wants(
    app: &[(String, Input)],
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<BTreeMap<String, Want>, ActionError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for (rel, i) in app {
        let w = match i {
            Input::Source(p) => {
                let src = ctx.root.join(p);
                let md = std::fs::symlink_metadata(&src).map_err(|e| format!("reading `{}`: {e}", src.display()))?;
                if md.file_type().is_symlink() {
                    let target = std::fs::read_link(&src).map_err(|e| ActionError::of(&e))?;
                    Want::Symlink { target }
                } else {
                    let hash = match ctx.sources.digest(p) {
                        Some(h) => h.to_string(),
                        None => ctx.cache.file_hasher().hash_file(&src).map_err(|e| ActionError::of(&e))?.to_string(),
                    };
                    let id = format!("src:{hash}:{:o}:{}:{}.{}", md.mode(), md.size(), md.mtime(), md.mtime_nsec());
                    // Only the executable bit is kept (as git does): checkouts made with umask 022
                    // and 002 build the same image.
                    let mode = if md.mode() & 0o111 != 0 { 0o755 } else { 0o644 };
                    Want::File { src, id, mode: Some(mode) }
                }
            }
            Input::Output { action, path } => Want::of_output(action, path, deps, ctx.cache.cas())?,
        };
        out.insert(rel.clone(), w);
    }
    Ok(out)
}

/// Puts the app into the `/workspace` of detect (read-only) or build (writable), owned by the build
/// user with the SOURCE_DATE_EPOCH mtime (like pack, which sends the app as a tar with 1980
/// timestamps: a file's mtime must not leak the checkout time into what buildpacks produce, e.g.
/// Python's .pyc headers). The target's kept app dir is reconciled in place (see
/// [`app_dir`](super::app_dir)); when another build holds it, `fresh` is filled instead. Returns
/// the workspace to mount, the held app dir and the app's [`app_fingerprint`].
///
/// `trust_held`: a detect of this build that left the app dir in [`HeldApps`](super::app_dir::HeldApps) for the same app
/// hands it over as it is, not reconciled again. Detect mounted it read-only and kept it locked
/// from its reconcile on, so it is exactly what a reconcile would make (the build phase skips
/// the walk: ≈ 20 ms of a one-file edit of a 4,000-file app, issue 23). Detect itself always
/// reconciles.
#[allow(clippy::too_many_arguments)]
pub fn materialize_app(
    app: &[(String, Input)],
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
    label: &str,
    fresh: &Path,
    uid: u32,
    gid: u32,
    trust_held: bool,
) -> Result<(PathBuf, Option<AppDir>, Option<blake3::Hash>), ActionError> {
    let held = ctx.held_apps.take(label);
    // Needed to trust a held dir (build) or to hand one over (detect); not otherwise.
    let fp = (held.is_some() || !trust_held).then(|| app_fingerprint(app, deps, ctx, uid, gid)).flatten();
    if let Some((held_fp, dir)) = held {
        if trust_held && Some(held_fp) == fp {
            return Ok((dir.workspace.clone(), Some(dir), fp));
        }
        // Reconciled below like any kept dir (its lock is ours already).
        dir.reconcile(&app_wants(app, deps, ctx)?, uid, gid, ctx.source_date_epoch)?;
        return Ok((dir.workspace.clone(), Some(dir), fp));
    }
    let want = app_wants(app, deps, ctx)?;
    if let Some(dir) = AppDir::open(&ctx.cache, label)? {
        dir.reconcile(&want, uid, gid, ctx.source_date_epoch)?;
        return Ok((dir.workspace.clone(), Some(dir), fp));
    }
    super::app_dir::populate_fresh(fresh, &want, uid, gid, ctx.source_date_epoch)?;
    Ok((fresh.to_path_buf(), None, fp))
}

/// What an app entry is keyed by: its input's digest and, for a source, from the stamp taken when
/// it was hashed (no I/O: keys are made on every build), its link text or `+x`. A symlink is copied
/// into the app as a link: its text is what the image holds (`index.html` and `../site/index.html`
/// may name the same file, never the same link). A file's executable bit reaches the image (the
/// copy is 0755 or 0644, like git, whatever the checkout's umask), so it is keyed like an output's
/// `+x`.
pub fn app_entry_text(
    i: &Input,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<crate::cache::ShownText, ActionError> {
    let Input::Source(src) = i else { return super::ctx::input_digest(i, deps, ctx) };
    let (digest, st) = ctx.sources.get(src).ok_or_else(|| format!("internal: source `{src}` was not hashed"))?;
    let st = st.ok_or_else(|| format!("internal: source `{src}` was not stamped"))?;
    let mut d = crate::cache::ShownText::hash(false, digest.0);
    match st.link_target() {
        Some(t) => d.push_str(&link_text(t)),
        None if st.executable() => d.push_str("+x"),
        None => {}
    }
    Ok(d)
}

/// How a link's text is keyed: ` -> target` as shown when it is UTF-8; otherwise its bytes,
/// escaped, under another prefix (a lossy display would give two different targets one key).
fn link_text(t: &Path) -> String {
    match t.to_str() {
        Some(s) => format!(" -> {s}"),
        None => format!(" ->bytes {}", t.as_os_str().as_encoded_bytes().escape_ascii()),
    }
}

/// What [`app_wants`] would give, without its I/O: every app entry's path and [`app_entry_text`],
/// the owner and the mtime. `None` when a source has no stamp (a remote worker's staged sources).
/// Within one build, equal fingerprints mean equal wants: sources are re-checked against their
/// stamps after every action.
pub fn app_fingerprint(
    app: &[(String, Input)],
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
    uid: u32,
    gid: u32,
) -> Option<blake3::Hash> {
    let mut h = blake3::Hasher::new_derive_key("cbuild 2026 app dir fingerprint");
    h.update(format!("{uid}:{gid}:{}\0", ctx.source_date_epoch).as_bytes());
    for (rel, i) in app {
        let text = app_entry_text(i, deps, ctx).ok()?;
        h.update(rel.as_bytes()).update(b"\0").update(text.to_string().as_bytes()).update(b"\0");
    }
    Some(h.finalize())
}

/// A buildpack available to the phase: its tree in the CAS and its parsed buildpack.toml.
#[derive(Clone)]
pub struct Bp {
    /// The `buildpack` action it is (`None`: read from an image with others).
    pub action: Option<ActionId>,
    /// Its position among the phase's buildpacks.
    pub seq: usize,
    /// The digest keys name it by (a tree's digest, whatever action made it).
    pub digest: String,
    pub desc: BuildpackDescriptor,
    pub files: BTreeMap<String, OutFile>,
}

impl Bp {
    /// `/cnb/buildpacks/<escaped-id>/<version>` (the sandbox path).
    pub fn sandbox_dir(&self) -> String {
        format!("/cnb/buildpacks/{}/{}", escape_id(&self.desc.info.id), self.desc.info.version)
    }
    pub fn label(&self) -> String {
        format!("{}@{}", self.desc.info.id, self.desc.info.version)
    }
    /// The `bin/*` files it has (target inference).
    pub fn bin_files(&self) -> Vec<&str> {
        self.files.keys().filter_map(|k| k.strip_prefix("bin/")).collect()
    }
}

/// Parses one buildpack tree.
fn parse_tree(files: &BTreeMap<String, OutFile>, ctx: &RunCtx) -> Result<BuildpackDescriptor, ActionError> {
    let toml = files.get("buildpack.toml").ok_or("internal: buildpack tree without buildpack.toml")?;
    let text = String::from_utf8(ctx.cache.cas().read_verified(&toml.digest).map_err(|e| ActionError::of(&e))?)
        .map_err(|_| "buildpack.toml is not UTF-8".to_string())?;
    BuildpackDescriptor::parse(&text, Path::new("buildpack.toml")).map_err(|e| ActionError::of(&e))
}

/// What a detect or build phase works with once its dependencies are known: every buildpack
/// (workspace trees, buildpackages, a builder image's), the order (the builder's, or project.toml's
/// group, with system and pre/post buildpacks merged in) and the build user.
pub struct PhaseView {
    pub bps: Vec<Bp>,
    pub order: Vec<OrderGroup>,
    pub uid: u32,
    pub gid: u32,
    pub stack_id: String,
    /// `/cnb/build-config/env/` of a builder image: file name → contents.
    pub build_config_env: BTreeMap<String, String>,
}

impl PhaseView {
    /// Finds a buildpack by reference (composite orders may leave the version empty).
    pub fn find(&self, r: &BuildpackRef) -> Option<&Bp> {
        find(&self.bps, r)
    }
}

/// Finds a buildpack by reference (composite orders may leave the version empty).
pub fn find<'a>(bps: &'a [Bp], r: &BuildpackRef) -> Option<&'a Bp> {
    bps.iter().find(|b| {
        crate::cnb::buildpack_toml::same_id(&b.desc.info.id, &r.id)
            && (r.version.is_empty() || b.desc.info.version == r.version)
    })
}

/// A builder.toml reference resolved among the phase's buildpacks (its version filled in).
pub fn config_ref(r: &crate::model::action::ProjectRef, file: &str, bps: &[Bp]) -> Result<BuildpackRef, ActionError> {
    let want = BuildpackRef::new(&r.id, &r.version);
    let b = find(bps, &want).ok_or_else(|| {
        ActionError::user(format!(
            "`{file}`: `{}`: no buildpack of the builder's `buildpacks` provides `{}`",
            r.key,
            crate::cnb::distribution::shown(&want)
        ))
    })?;
    let mut out = BuildpackRef::new(&b.desc.info.id, &b.desc.info.version);
    out.optional = r.optional;
    Ok(out)
}

/// The [`PhaseView`] of a phase.
pub fn phase_view(
    p: &CnbPhase,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<PhaseView, ActionError> {
    use super::cnb_dist::{from_output, BuilderInfo, BuildpackSet};
    let mut bps: Vec<Bp> = Vec::new();
    // The buildpack a buildpackage action stands for.
    let mut tops: BTreeMap<ActionId, BuildpackRef> = BTreeMap::new();
    let push =
        |bps: &mut Vec<Bp>, action: Option<ActionId>, files: &BTreeMap<String, OutFile>| -> Result<(), ActionError> {
            let desc = parse_tree(files, ctx)?;
            // The first tree of an id@version wins (workspace trees come first).
            if bps.iter().any(|b| b.label() == format!("{}@{}", desc.info.id, desc.info.version)) {
                return Ok(());
            }
            let digest = super::ctx::output_digest(&ActionOutput::Files { files: files.clone() });
            bps.push(Bp { action, seq: bps.len(), digest, desc, files: files.clone() });
            Ok(())
        };
    for id in &p.buildpacks {
        match deps.get(id).map(|o| o.as_ref()) {
            Some(ActionOutput::Files { files }) => push(&mut bps, Some(*id), files)?,
            Some(o @ ActionOutput::Data { .. }) => {
                let set: BuildpackSet = from_output(o, "read_buildpackage")?;
                for b in &set.buildpacks {
                    push(&mut bps, None, &b.files)?;
                }
                tops.insert(*id, set.top);
            }
            _ => return Err("internal: a buildpack dependency has no tree".into()),
        }
    }
    let builder: Option<BuilderInfo> = match p.builder {
        Some(b) => Some(from_output(deps.get(&b).ok_or("internal: builder missing")?, "read_builder")?),
        None => None,
    };
    if let Some(b) = &builder {
        for ib in &b.buildpacks {
            push(&mut bps, None, &ib.files)?;
        }
    }
    let ref_of = |a: &ActionId| -> Result<BuildpackRef, ActionError> {
        if let Some(t) = tops.get(a) {
            return Ok(BuildpackRef::new(&t.id, &t.version));
        }
        let b = bps.iter().find(|b| b.action == Some(*a)).ok_or("internal: an order member is not a buildpack")?;
        Ok(BuildpackRef::new(&b.desc.info.id, &b.desc.info.version))
    };
    let mut order: Vec<OrderGroup> = if !p.order.is_empty() {
        let mut o = Vec::new();
        for g in &p.order {
            let mut group = Vec::new();
            for (a, opt) in g {
                let r = ref_of(a)?;
                group.push(if *opt { r.optional() } else { r });
            }
            o.push(OrderGroup { group });
        }
        o
    } else if let Some(c) = &p.config {
        let mut o = Vec::new();
        for g in &c.order {
            o.push(OrderGroup { group: g.iter().map(|r| config_ref(r, &c.file, &bps)).collect::<Result<_, _>>()? });
        }
        o
    } else {
        builder.as_ref().map(|b| b.order.clone()).ok_or("internal: a phase without an order")?
    };
    if let Some(pg) = &p.project {
        let resolve = |r: &crate::model::action::ProjectRef| -> Result<BuildpackRef, ActionError> {
            let mut br = match r.action {
                Some(a) => ref_of(&a)?,
                None => {
                    let want = BuildpackRef::new(&r.id, &r.version);
                    let b = find(&bps, &want).ok_or_else(|| {
                        let have: Vec<String> = bps.iter().map(|b| b.label()).collect();
                        ActionError::user(format!(
                            "`{}`: `{}`: no buildpack of the builder provides `{}` (it has {})",
                            pg.file,
                            r.key,
                            crate::cnb::distribution::shown(&want),
                            if have.is_empty() { "none".to_string() } else { have.join(", ") }
                        ))
                    })?;
                    BuildpackRef::new(&b.desc.info.id, &b.desc.info.version)
                }
            };
            br.optional = r.optional;
            Ok(br)
        };
        let list = |v: &[crate::model::action::ProjectRef]| v.iter().map(resolve).collect::<Result<Vec<_>, _>>();
        if !pg.group.is_empty() {
            order = vec![OrderGroup { group: list(&pg.group)? }];
        }
        order = crate::cnb::distribution::with_system(&order, &list(&pg.pre)?, &list(&pg.post)?);
    }
    let (mut uid, mut gid, mut stack_id) = (p.uid, p.gid, p.stack_id.clone());
    let mut build_config_env = BTreeMap::new();
    if let Some(c) = &p.config {
        let list = |v: &[crate::model::action::ProjectRef]| {
            v.iter().map(|r| config_ref(r, &c.file, &bps)).collect::<Result<Vec<_>, _>>()
        };
        order = crate::cnb::distribution::with_system(&order, &list(&c.system_pre)?, &list(&c.system_post)?);
        build_config_env = c.build_env.clone();
    }
    if let Some(b) = &builder {
        order = crate::cnb::distribution::with_system(&order, &b.system_pre, &b.system_post);
        build_config_env = b.build_env.clone();
        if p.identity_from_builder {
            (uid, gid, stack_id) = (b.uid, b.gid, b.stack_id.clone());
        }
    }
    Ok(PhaseView { bps, order, uid, gid, stack_id, build_config_env })
}

/// Copies each buildpack's tree to `<cnb>/buildpacks/<escaped-id>/<version>/` (read-only mount).
pub fn materialize_buildpacks(bps: &[Bp], ctx: &RunCtx, cnb: &Path) -> Result<(), ActionError> {
    for bp in bps {
        let dir = cnb.join(bp.sandbox_dir().trim_start_matches("/cnb/"));
        for (rel, f) in &bp.files {
            // Names of trees read from images (or a remote cache's answer for such a read): one
            // relative path each, never leading out of the buildpack's directory.
            crate::oci::tar::check_entry_path(rel)
                .map_err(|why| ActionError::user(format!("buildpack `{}`: file `{rel}`: {why}", bp.label())))?;
            let dst = dir.join(rel);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(|e| ActionError::of(&e))?;
            }
            std::fs::copy(ctx.cache.cas().path(&f.digest), &dst).map_err(|e| ActionError::of(&e))?;
            set_mode(&dst, if f.executable { 0o755 } else { 0o644 });
        }
    }
    for e in walkdir::WalkDir::new(cnb).into_iter().flatten() {
        if e.file_type().is_dir() {
            set_mode(e.path(), 0o755);
        }
    }
    Ok(())
}

/// The target buildpacks are matched against (lifecycle `TargetSatisfiedForBuild`): os, arch and
/// variant of the run image's config (the build image's when there is none), the distro from the
/// run image's `io.buildpacks.base.distro.name`/`.version` labels, or else from the build image's
/// `/etc/os-release` (resolved inside the image). Build and run images must agree on os/arch.
pub fn base_target(build: &Image, run: Option<&Image>, rootfs: &Path) -> Result<RunTarget, ActionError> {
    let (_, mut target) = image_env_and_target(build, rootfs);
    let Some(run) = run else { return Ok(target) };
    let (os, arch) = run.platform();
    if (os.as_str(), arch.as_str()) != (target.os.as_str(), target.arch.as_str()) {
        return Err(ActionError::user(format!(
            "the stack's build image is {}/{} but its run image is {os}/{arch}: an app built on one would not run on the other",
            target.os, target.arch
        )));
    }
    target.arch_variant = run.config().variant().clone().unwrap_or_default();
    let labels = run.config().config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
    let name = labels.get("io.buildpacks.base.distro.name").cloned();
    let version = labels.get("io.buildpacks.base.distro.version").cloned();
    if name.is_some() || version.is_some() {
        target.distro = Some(Distro { name: name.unwrap_or_default(), version: version.unwrap_or_default() });
    }
    Ok(target)
}

/// The build image's env (`KEY=VALUE` list of its config) as a map, plus its platform target.
pub fn image_env_and_target(img: &Image, rootfs: &Path) -> (BTreeMap<String, String>, RunTarget) {
    let cfg = img.config().config().clone().unwrap_or_default();
    let env: BTreeMap<String, String> = cfg
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let (os, arch) = img.platform();
    let os_release =
        String::from_utf8_lossy(&crate::fs::confined::read_image_file(rootfs, "etc/os-release")).into_owned();
    let field = |k: &str| {
        os_release.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(|v| v.trim_matches('"').to_string())
    };
    let distro = match (field("ID"), field("VERSION_ID")) {
        (Some(name), Some(version)) => Some(Distro { name, version }),
        _ => None,
    };
    (env, RunTarget { os, arch, arch_variant: String::new(), distro })
}

/// Home directory of `uid` in the image's /etc/passwd (`/` if absent).
pub fn home_of(rootfs: &Path, uid: u32) -> String {
    String::from_utf8_lossy(&crate::fs::confined::read_image_file(rootfs, "etc/passwd"))
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2] == uid.to_string())
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| "/".into())
}

/// Runs a buildpack executable in the sandbox; its output goes to the reporter prefixed with the
/// target, phase and buildpack. Returns the exit code (or an error when it could not run).
#[allow(clippy::too_many_arguments)]
pub async fn run_buildpack(
    ctx: &RunCtx,
    label: &str,
    phase: &str,
    bp: &Bp,
    rootfs: &Path,
    mounts: Vec<Mount>,
    tmp: &Path,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    uid: u32,
    gid: u32,
    network: bool,
) -> Result<i32, String> {
    let mut spec = SandboxSpec::new(RootFs::Dir(rootfs.to_path_buf()), argv);
    spec.mounts = mounts;
    // The shared /tmp belongs to the sandbox user (its parent, the scratch dir, is cbuild's).
    let (huid, hgid) = sandbox::host_ids(uid, gid);
    std::os::unix::fs::lchown(tmp, Some(huid), Some(hgid)).map_err(|e| format!("{phase}: preparing /tmp: {e}"))?;
    set_mode(tmp, 0o700);
    spec.tmp = Some(tmp.to_path_buf());
    spec.cwd = "/workspace".into();
    spec.env = env;
    spec.uid = uid;
    spec.gid = gid;
    spec.network = network;
    let reporter = ctx.reporter.clone();
    let action = format!("{phase} {}", bp.label());
    let out = sandbox::run(&spec, |line| {
        reporter.event(&Event::Output {
            label: label.to_string(),
            action: action.clone(),
            stream: format!("{:?}", line.stream).to_lowercase(),
            line: line.text,
        });
    })
    .await
    .map_err(|e| format!("{phase}: buildpack `{}`: {e}", bp.label()))?;
    if out.timed_out || out.output_limit_exceeded {
        return Err(format!("{phase}: buildpack `{}` {}", bp.label(), out.failure_message(&spec).unwrap_or_default()));
    }
    Ok(out.exit_code.unwrap_or(128 + out.signal.unwrap_or(0)))
}

/// `SERVICE_BINDING_ROOT` for buildpacks of a phase with bindings (platform spec).
pub fn binding_vars(p: &crate::model::action::CnbPhase) -> Vec<(String, String)> {
    if p.bindings.is_empty() {
        Vec::new()
    } else {
        vec![("SERVICE_BINDING_ROOT".to_string(), "/platform/bindings".to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::link_text;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn link_texts_that_differ_are_keyed_apart() {
        // UTF-8 text keeps the shown form existing keys were made with.
        assert_eq!(link_text(Path::new("../site/index.html")), " -> ../site/index.html");
        // Two non-UTF-8 targets a lossy display would show alike (`\u{FFFD}`), and the UTF-8 text
        // that display would give.
        let a = link_text(Path::new(OsStr::from_bytes(b"a\xff")));
        let b = link_text(Path::new(OsStr::from_bytes(b"a\xfe")));
        let lossy = link_text(Path::new("a\u{FFFD}"));
        assert_ne!(a, b);
        assert_ne!(a, lossy);
        assert_eq!(a, " ->bytes a\\xff");
    }
}
