//! The CNB detect phase as one action: every buildpack of the builder's order runs `bin/detect` in
//! the sandbox over the app (read-only), then the group and build plan are resolved exactly like the
//! lifecycle's detector (`cnb::plan::resolve_order`). Output: group + plan (JSON).

use crate::execution::ActionError;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::cnb_common::{self as common, Scratch};
use super::ctx::{output_digest, RunCtx};
use crate::cache::{ComponentValue, KeyBuilder, ShownText};
use crate::cnb::buildpack_toml::{escape_id, BuildpackRef};
use crate::cnb::env::{buildpack_process_env, detect_args, detect_cnb_vars, filtered_base_env, DetectVars};
use crate::cnb::plan::{parse_detect_plan, resolve_order, DetectOutcome, GroupMember, Plan};
use crate::cnb::CnbError;
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, CnbPhase};
use crate::oci::Image;

/// What detection decided, passed to the build phase.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DetectResult {
    pub group: Vec<GroupMember>,
    pub plan: Plan,
}

/// Key components shared by detect and build.
pub fn phase_key(
    mut kb: KeyBuilder,
    p: &CnbPhase,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    // Collected (app paths come sorted, so the map is built in bulk), not inserted one by one.
    let app = p
        .app
        .iter()
        .map(|(rel, i)| Ok((rel.clone(), common::app_entry_text(i, deps, ctx)?)))
        .collect::<Result<BTreeMap<String, ShownText>, ActionError>>()?;
    let build_image = match deps.get(&p.build_image).map(|o| o.as_ref()) {
        Some(ActionOutput::Image { manifest, .. }) => manifest.to_string(),
        _ => return Err("internal: build image missing".into()),
    };
    // The run image's target, not its digest: an OS update of the run image (same distro) is a
    // rebase, not a rebuild.
    let run_target = match run_image(p, deps, ctx)? {
        Some(run) => {
            let (os, arch) = run.platform();
            let labels = run.config().config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
            format!(
                "{os}/{arch}/{} distro={}:{}",
                run.config().variant().clone().unwrap_or_default(),
                labels.get("io.buildpacks.base.distro.name").map(String::as_str).unwrap_or(""),
                labels.get("io.buildpacks.base.distro.version").map(String::as_str).unwrap_or("")
            )
        }
        None => String::new(),
    };
    kb = kb
        .component("app", ComponentValue::map(app))
        .component("build_image", build_image)
        .component("run_target", run_target)
        .component("stack_id", p.stack_id.as_str())
        .component("user", format!("{}:{}", p.uid, p.gid))
        .component("env", ComponentValue::env_map(&p.env))
        .component("network", p.network.to_string())
        // The build's /workspace files and layer tars carry SOURCE_DATE_EPOCH as their mtime.
        .component("source_date_epoch", ctx.source_date_epoch.to_string());
    // Only with bindings, so keys of phases without any are unchanged.
    if !p.bindings.is_empty() {
        let loaded = super::cnb_bindings::load_all(&p.bindings, &ctx.bindings, &ctx.root)?;
        let key = super::cnb_bindings::hmac_key(ctx.cache.dir())?;
        let values: BTreeMap<String, String> =
            loaded.iter().map(|b| (b.name.clone(), super::cnb_bindings::key_value(b, &key))).collect();
        kb = kb.component("bindings", ComponentValue::map(values));
    }
    Ok(kb)
}

/// Detect reads the whole order and every buildpack of the builder.
pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::CnbDetect(p) = &a.kind else { unreachable!() };
    let bp_digest = |id: &ActionId| deps.get(id).map(|o| output_digest(o)).ok_or("internal: missing buildpack");
    let mut order = Vec::new();
    for g in &p.order {
        let mut members = Vec::new();
        for (id, opt) in g {
            members.push(format!("{}{}", bp_digest(id)?, if *opt { "?" } else { "" }));
        }
        order.push(members.join(","));
    }
    let mut bps = Vec::new();
    for id in &p.buildpacks {
        bps.push(bp_digest(id)?);
    }
    let mut kb = phase_key(kb, p, deps, ctx)?
        .component("order", ComponentValue::list(order))
        .component("buildpacks", ComponentValue::list(bps));
    // Only when set, so keys of phases without a builder image or project.toml are unchanged.
    if let Some(b) = p.builder {
        kb = kb
            .component("builder", bp_digest(&b)?)
            .component("identity_from_builder", p.identity_from_builder.to_string());
    }
    if let Some(pg) = &p.project {
        kb = kb.component("project_groups", project_groups_key(pg, deps)?);
    }
    if let Some(c) = &p.config {
        kb = kb.component("builder_config", serde_json::to_string(c).map_err(|e| ActionError::of(&e))?);
    }
    Ok(kb)
}

/// The project.toml groups as a key component (a label's buildpack by its tree's digest).
pub fn project_groups_key(
    pg: &crate::model::action::ProjectGroups,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
) -> Result<String, ActionError> {
    let one = |r: &crate::model::action::ProjectRef| -> Result<String, ActionError> {
        let who = match r.action {
            Some(a) => output_digest(deps.get(&a).ok_or("internal: missing buildpack")?),
            None => format!("{}@{}", r.id, r.version),
        };
        Ok(format!("{who}{}", if r.optional { "?" } else { "" }))
    };
    let list = |v: &[crate::model::action::ProjectRef]| -> Result<String, ActionError> {
        Ok(v.iter().map(one).collect::<Result<Vec<_>, _>>()?.join(","))
    };
    Ok(format!("group={} pre={} post={}", list(&pg.group)?, list(&pg.pre)?, list(&pg.post)?))
}

/// The build image as a value, and its root filesystem extracted (cached per digest).
pub async fn build_image(
    p: &CnbPhase,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<(Image, std::path::PathBuf), ActionError> {
    let out = deps.get(&p.build_image).ok_or("internal: build image missing")?;
    let ActionOutput::Image { manifest, .. } = out.as_ref() else { return Err("internal: build image missing".into()) };
    let manifest = manifest.clone();
    super::pull::ensure_local(out, ctx).await?;
    let ctx2 = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let img = Image::load(ctx2.cache.cas(), &manifest).map_err(|e| ActionError::of(&e))?;
        // A foreign platform's buildpacks run under emulation: say so before extracting anything.
        let (os, arch) = img.platform();
        crate::execution::emulation::check_arch(&os, &arch).map_err(ActionError::env)?;
        let root = common::ensure_rootfs(&img, ctx2.cache.cas())?;
        Ok::<_, ActionError>((img, root))
    })
    .await
    .map_err(|e| ActionError::of(&e))?
}

/// The env every buildpack process starts from: the build image's config env, its user's HOME and
/// CNB_STACK_ID, filtered as the lifecycle does.
pub fn base_env(
    img: &Image,
    rootfs: &Path,
    p: &CnbPhase,
    view: &common::PhaseView,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<(crate::cnb::env_files::EnvMap, crate::cnb::buildpack_toml::RunTarget), ActionError> {
    let (mut env, _) = common::image_env_and_target(img, rootfs);
    env.insert("HOME".into(), common::home_of(rootfs, view.uid));
    env.insert("CNB_STACK_ID".into(), view.stack_id.clone());
    let run = run_image(p, deps, ctx)?;
    let target = common::base_target(img, run.as_ref(), rootfs)?;
    Ok((filtered_base_env(env), target))
}

/// The stack's run image as a value (manifest and config: a shallow pull's layers stay remote).
fn run_image(
    p: &CnbPhase,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<Option<Image>, ActionError> {
    let Some(id) = p.run_image else { return Ok(None) };
    match deps.get(&id).map(|o| o.as_ref()) {
        Some(ActionOutput::Image { manifest, .. }) => {
            Image::load(ctx.cache.cas(), manifest).map(Some).map_err(|e| ActionError::of(&e))
        }
        _ => Err("internal: run image missing".into()),
    }
}

/// What one buildpack's detect needs (see [`run`]).
struct OneDetect<'a> {
    ctx: &'a Arc<RunCtx>,
    label: &'a str,
    p: &'a CnbPhase,
    scratch: &'a Scratch,
    layers_root: &'a crate::fs::confined::Root,
    base: &'a crate::cnb::env_files::EnvMap,
    target: &'a crate::cnb::buildpack_toml::RunTarget,
    build_config: Option<&'a Path>,
    view: &'a common::PhaseView,
    rootfs: &'a Path,
}

impl OneDetect<'_> {
    /// Runs `bp`'s `bin/detect` (its plan file is in place): the outcome, a note for the error
    /// message when it did not pass normally, and whether it was skipped for its targets.
    async fn run(&self, bp: &common::Bp) -> Result<(DetectOutcome, Option<String>, bool), ActionError> {
        let esc = escape_id(&bp.desc.info.id);
        let plan_rel = Path::new(".detect").join(&esc).join("plan.toml");
        let plan_sb = format!("/layers/.detect/{esc}/plan.toml");
        if !bp.files.contains_key("bin/detect") {
            return Ok((
                DetectOutcome::Error(-1),
                Some(format!("buildpack `{}` has no bin/detect", bp.label())),
                false,
            ));
        }
        if !bp.desc.supports_target(&bp.bin_files(), self.target) {
            let note = format!(
                "buildpack `{}` supports no target matching the build image ({}/{})",
                bp.label(),
                self.target.os,
                self.target.arch
            );
            return Ok((DetectOutcome::Error(-1), Some(note), true));
        }
        let mut vars = detect_cnb_vars(&DetectVars {
            api: bp.desc.api,
            buildpack_dir: Path::new(&bp.sandbox_dir()),
            platform_dir: Path::new("/platform"),
            plan_path: Path::new(&plan_sb),
            target: Some(self.target),
            exec_env: None,
        });
        vars.extend(common::binding_vars(self.p));
        let env =
            buildpack_process_env(self.base, bp.desc.info.clear_env, &self.scratch.platform, self.build_config, &vars)
                .map_err(|e| ActionError::of(&e))?;
        let mut argv = vec![format!("{}/bin/detect", bp.sandbox_dir())];
        argv.extend(detect_args(Path::new("/platform"), Path::new(&plan_sb)));
        let code = common::run_buildpack(
            self.ctx,
            self.label,
            "detect",
            bp,
            self.rootfs,
            self.scratch.mounts(false),
            &self.scratch.tmp,
            argv,
            env,
            self.view.uid,
            self.view.gid,
            self.p.network,
        )
        .await?;
        Ok(match code {
            0 => {
                // Written by the buildpack: confined (a symlink to a host file is an error, so no
                // host line can reach a parse error), bounded.
                let parsed = self
                    .layers_root
                    .read_to_string_opt(&plan_rel, 16 << 20)
                    .map_err(|source| crate::cnb::CnbError::Io {
                        phase: crate::cnb::Phase::Detect,
                        buildpack: bp.label(),
                        file: plan_sb.clone().into(),
                        source,
                    })
                    .and_then(|t| parse_detect_plan(&t.unwrap_or_default(), &bp.label(), Path::new(&plan_sb)));
                match parsed {
                    Ok(plan) => (DetectOutcome::Pass(plan), None, false),
                    Err(e) => (DetectOutcome::Error(-1), Some(e.to_string()), false),
                }
            }
            100 => (DetectOutcome::Fail, None, false),
            c => (
                DetectOutcome::Error(c),
                Some(format!("buildpack `{}`: bin/detect exited with status {c}", bp.label())),
                false,
            ),
        })
    }
}

pub async fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<ActionOutput, ActionError> {
    let ActionKind::CnbDetect(p) = &a.kind else { unreachable!() };
    let label = a.label.to_string();
    let view = common::phase_view(p, deps, ctx)?;
    let bps = &view.bps;
    let (img, rootfs) = build_image(p, deps, ctx).await?;
    let mut scratch = Scratch::new("detect-")?;
    // The read-only /workspace is the target's kept app dir brought up to date (the build phase
    // reconciles the same dir next, finding nothing to do). Not hard links to the sources: a new
    // link changes a source's ctime, which made every later build re-hash the app and would fail
    // the executor's "source changed while the action ran" check.
    let (huid, hgid) = crate::execution::sandbox::host_ids(view.uid, view.gid);
    let (workspace, app_dir, app_fp) =
        common::materialize_app(&p.app, deps, ctx, &label, &scratch.workspace, huid, hgid, false)?;
    scratch.workspace = workspace;
    scratch.write_platform_env(&p.env)?;
    scratch.write_bindings(p, ctx, (huid, hgid))?;
    common::materialize_buildpacks(bps, ctx, &scratch.cnb)?;
    let build_config = scratch.write_build_config(&view.build_config_env)?;
    // Detect's `/layers` is writable by every buildpack: touched only through `layers_root`.
    let layers_root = crate::fs::confined::Root::open(&scratch.layers).map_err(|e| ActionError::of(&e))?;
    layers_root.chown_tree(Path::new(""), huid, hgid).map_err(|e| ActionError::of(&e))?;
    let (base, target) = base_env(&img, &rootfs, p, &view, deps, ctx)?;

    // Detect runs lazily, in the order the resolver asks (groups in turn, as the lifecycle's
    // detector): a buildpack of a group after the first passing one never runs. The resolver is
    // cheap and deterministic, so it is simply re-run after each batch of new outcomes until it
    // asks for nothing it does not know; each id@version runs at most once. A batch is the first
    // buildpack the resolver asks for and the other members of its group not run yet, run at the
    // same time, as the lifecycle's detector runs a group's buildpacks concurrently (a one-file
    // edit's detect of a two-buildpack group: 2 sandboxes at once, not in turn; issue 23).
    let mut outcomes: HashMap<String, DetectOutcome> = HashMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut mismatched = 0;
    let order = &view.order;
    let one = OneDetect {
        ctx,
        label: &label,
        p,
        scratch: &scratch,
        layers_root: &layers_root,
        base: &base,
        target: &target,
        build_config: build_config.as_deref(),
        view: &view,
        rootfs: &rootfs,
    };
    let res = loop {
        let mut missing: Option<usize> = None;
        let res = resolve_order(
            order,
            |r: &BuildpackRef| {
                view.find(r).map(|b| b.desc.clone()).ok_or_else(|| {
                    CnbError::invalid(crate::cnb::Phase::Detect, r.to_string(), "buildpack.toml", "a composite order names a buildpack the builder does not provide (add it to the composite's `deps`)")
                })
            },
            |r: &BuildpackRef| {
                let Some(b) = view.find(r).filter(|b| !b.desc.is_composite()) else { return DetectOutcome::Error(-1) };
                match outcomes.get(&b.label()) {
                    Some(o) => o.clone(),
                    None => {
                        missing.get_or_insert(b.seq);
                        // Provisional; this resolution is thrown away once `missing` has run.
                        DetectOutcome::Fail
                    }
                }
            },
        );
        let Some(first) = missing else { break res };
        let mut batch = vec![first];
        if let Some(g) = order.iter().find(|g| g.group.iter().any(|r| view.find(r).is_some_and(|b| b.seq == first))) {
            for r in &g.group {
                let Some(b) = view.find(r).filter(|b| !b.desc.is_composite()) else { continue };
                if !batch.contains(&b.seq) && !outcomes.contains_key(&b.label()) {
                    batch.push(b.seq);
                }
            }
        }
        for &seq in &batch {
            let esc = escape_id(&bps[seq].desc.info.id);
            layers_root.create_dir_all(&Path::new(".detect").join(&esc), 0o755).map_err(|e| ActionError::of(&e))?;
            layers_root
                .write_file(&Path::new(".detect").join(&esc).join("plan.toml"), b"", 0o644)
                .map_err(|e| ActionError::of(&e))?;
        }
        layers_root.chown_tree(Path::new(".detect"), huid, hgid).map_err(|e| ActionError::of(&e))?;
        let ran = futures_util::future::join_all(batch.iter().map(|&seq| one.run(&bps[seq]))).await;
        for (&seq, r) in batch.iter().zip(ran) {
            let (outcome, note, mismatch) = r?;
            notes.extend(note);
            mismatched += mismatch as usize;
            outcomes.insert(bps[seq].label(), outcome);
        }
    };
    match res {
        Ok(r) => {
            let json = serde_json::to_string(&DetectResult { group: r.group, plan: r.plan })
                .map_err(|e| ActionError::of(&e))?;
            // Read-only in every sandbox above and still locked: the build phase of this target
            // takes it as it is (`materialize_app`).
            if let (Some(dir), Some(fp)) = (app_dir, app_fp) {
                ctx.held_apps.put(&label, fp, dir);
            }
            Ok(ActionOutput::Data { json, blobs: Vec::new() })
        }
        Err(e) => {
            let mut err = ActionError::of(&e);
            // Nothing ran: every buildpack tried was for other platforms. That is the target's
            // configuration (its `platforms`), not the app's code.
            if !notes.is_empty() && mismatched == notes.len() {
                err = ActionError::user(err.message).hint(format!(
                    "build `{}` for a platform its buildpacks support (`platforms`, --platform), or use buildpacks with a [[targets]] entry for {}/{}",
                    a.label, target.os, target.arch
                ));
            }
            for n in notes {
                err.message.push_str(&format!("\n  {n}"));
            }
            Err(err)
        }
    }
}

/// The `detect` action kind's [`Runner`](super::seam::Runner).
pub struct Detect;

impl super::seam::Runner for Detect {
    fn mnemonic(&self) -> &'static str {
        "detect"
    }
    fn version(&self) -> u32 {
        2
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        let ActionKind::CnbDetect(p) = &a.kind else { return Vec::new() };
        // App files are copied into /workspace as they are: a symlink stays a link.
        let mut v: Vec<(String, bool)> =
            super::seam::source_paths(p.app.iter().map(|(_, i)| i)).into_iter().map(|p| (p, false)).collect();
        // The project.toml and builder.toml read at analysis time (what they say is in the key) are
        // sources even when not app files (a project.toml's own `exclude`), so `affected` sees edits.
        for f in p.project.iter().map(|pg| &pg.file).chain(p.config.iter().map(|c| &c.file)) {
            if !v.iter().any(|(s, _)| s == f) {
                v.push((f.clone(), true));
            }
        }
        v
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
        Box::pin(run(a, deps, ctx))
    }
}
