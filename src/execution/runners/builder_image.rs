//! The `builder_image` runner: a `builder` target as a builder image pack and kpack consume
//! (distribution.md › Builder): the stack's build image, one layer per buildpack at
//! `/cnb/buildpacks/<id>/<version>/`, a layer with `/cnb/order.toml`, `/cnb/run.toml`,
//! `/cnb/stack.toml` and the `/workspace`, `/layers` dirs, `/cnb/lifecycle` from a lifecycle image
//! when one is given, `CNB_USER_ID`/`CNB_GROUP_ID`, and the `io.buildpacks.builder.metadata`,
//! `io.buildpacks.buildpack.layers`, `io.buildpacks.buildpack.order` labels. Every reference it
//! writes is a registry reference (analysis refuses a workspace-only run image).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cnb_dist::{self, bytes_entry};
use super::ctx::{output_digest, RunCtx};
use crate::cache::{ComponentValue, KeyBuilder};
use crate::cnb::buildpack_toml::{BuildpackRef, OrderGroup};
use crate::cnb::distribution::{
    self as dist, BuilderMetadata, CreatedBy, LayersLabel, LifecycleInfo, ModuleInfo, OrderToml, RunImage, RunToml,
    StackMetadata, StackToml,
};
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::oci::image::{append_layer, with_config, ConfigPatch};
use crate::oci::layer::Compression;
use crate::oci::tar::TarEntry;
use crate::oci::tree::{ImageTree, NodeKind};
use crate::oci::Image;

pub fn key(kb: KeyBuilder, a: &Action, deps: &super::seam::Deps, ctx: &RunCtx) -> Result<KeyBuilder, ActionError> {
    let ActionKind::BuilderImage(s) = &a.kind else { unreachable!() };
    let d = |id: &usize| deps.get(id).map(|o| output_digest(o)).ok_or("internal: missing dependency");
    let mut order = Vec::new();
    for g in &s.order {
        let mut m = Vec::new();
        for (id, opt) in g {
            m.push(format!("{}{}", d(id)?, if *opt { "?" } else { "" }));
        }
        order.push(m.join(","));
    }
    let bps = s.buildpacks.iter().map(d).collect::<Result<Vec<_>, _>>()?;
    Ok(kb
        .component("build_image", d(&s.build_image)?)
        .component("order", ComponentValue::list(order))
        .component("buildpacks", ComponentValue::list(bps))
        .component("run_image", s.run_image.as_str())
        .component("run_image_mirrors", ComponentValue::list(s.run_image_mirrors.clone()))
        .component("stack_id", s.stack_id.as_str())
        .component("user", format!("{}:{}", s.uid, s.gid))
        .component(
            "lifecycle",
            match &s.lifecycle {
                Some(l) => d(l)?,
                None => String::new(),
            },
        )
        .component("description", s.description.as_str())
        .component("config", serde_json::to_string(&s.config).map_err(|e| ActionError::of(&e))?)
        .component("created_by", env!("CARGO_PKG_VERSION"))
        .component("source_date_epoch", ctx.source_date_epoch.to_string()))
}

pub async fn run(a: &Action, deps: &super::seam::Deps, ctx: &Arc<RunCtx>) -> Result<ActionOutput, ActionError> {
    let ActionKind::BuilderImage(s) = &a.kind else { unreachable!() };
    // The lifecycle's files are read from its image, so its layers must be here.
    if let Some(l) = &s.lifecycle {
        super::pull::ensure_local(deps.get(l).ok_or("internal: lifecycle image missing")?, ctx).await?;
    }
    let (a, deps, ctx2) = (a.clone(), deps.clone(), ctx.clone());
    tokio::task::spawn_blocking(move || assemble(&a, &deps, &ctx2)).await.map_err(|e| ActionError::of(&e))?
}

fn assemble(a: &Action, deps: &super::seam::Deps, ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    let ActionKind::BuilderImage(s) = &a.kind else { unreachable!() };
    let cas = ctx.cache.cas();
    let base_out = deps.get(&s.build_image).ok_or("internal: build image missing")?;
    let ActionOutput::Image { manifest, .. } = base_out.as_ref() else {
        return Err("internal: build image missing".into());
    };
    let mut img = Image::load(cas, manifest).map_err(|e| ActionError::of(&e))?;
    let (trees, tops) = cnb_dist::trees_of(&s.buildpacks, deps, ctx)?;

    let mut layers_label = LayersLabel::new();
    let mut modules = Vec::new();
    for (desc, files) in &trees {
        let blob = cnb_dist::buildpack_layer(desc, files, ctx)?;
        img = append_layer(&img, &blob, &format!("buildpack:{}", desc.key())).map_err(|e| ActionError::of(&e))?;
        layers_label
            .entry(desc.info.id.clone())
            .or_default()
            .insert(desc.info.version.clone(), dist::layer_info(desc, &blob.diff_id.to_string()));
        modules.push(ModuleInfo {
            id: desc.info.id.clone(),
            name: desc.info.name.clone(),
            version: desc.info.version.clone(),
            homepage: desc.info.homepage.clone(),
        });
    }
    // A builder.toml's references by id, resolved among the trees (versions filled in).
    let by_id = |r: &crate::model::action::ProjectRef, file: &str| -> Result<BuildpackRef, ActionError> {
        let (d, _) = trees
            .iter()
            .find(|(d, _)| {
                crate::cnb::buildpack_toml::same_id(&d.info.id, &r.id)
                    && (r.version.is_empty() || d.info.version == r.version)
            })
            .ok_or_else(|| {
                ActionError::user(format!(
                    "`{file}`: `{}`: no buildpack of the builder's `buildpacks` provides `{}`",
                    r.key,
                    dist::shown(&BuildpackRef::new(&r.id, &r.version))
                ))
            })?;
        let mut out = BuildpackRef::new(&d.info.id, &d.info.version);
        out.optional = r.optional;
        Ok(out)
    };
    let mut system = dist::System::default();
    if let Some(c) = &s.config {
        system.pre.buildpacks = c.system_pre.iter().map(|r| by_id(r, &c.file)).collect::<Result<_, _>>()?;
        system.post.buildpacks = c.system_post.iter().map(|r| by_id(r, &c.file)).collect::<Result<_, _>>()?;
    }
    let config_order: Option<Vec<OrderGroup>> = match &s.config {
        Some(c) if s.order.is_empty() => Some(
            c.order
                .iter()
                .map(|g| {
                    Ok(OrderGroup { group: g.iter().map(|r| by_id(r, &c.file)).collect::<Result<_, ActionError>>()? })
                })
                .collect::<Result<_, ActionError>>()?,
        ),
        _ => None,
    };
    let order: Vec<OrderGroup> = s
        .order
        .iter()
        .map(|g| OrderGroup {
            group: g
                .iter()
                .map(|(id, opt)| {
                    let r = tops.get(id).cloned().unwrap_or_default();
                    let r = BuildpackRef::new(&r.id, &r.version);
                    if *opt {
                        r.optional()
                    } else {
                        r
                    }
                })
                .collect(),
        })
        .collect();
    let order = config_order.unwrap_or(order);
    if order.iter().flat_map(|g| &g.group).any(|r| r.id.is_empty()) {
        return Err(ActionError::internal("an order member of the builder is not a buildpack"));
    }
    let run = RunImage { image: s.run_image.clone(), mirrors: s.run_image_mirrors.clone() };
    let files: Vec<(&str, String)> = vec![
        ("cnb/order.toml", dist::to_toml(&OrderToml { order: order.clone() })),
        ("cnb/run.toml", dist::to_toml(&RunToml { images: vec![run.clone()] })),
        ("cnb/stack.toml", dist::to_toml(&StackToml { run_image: run.clone(), build_image: None })),
    ];
    let mut entries = vec![
        TarEntry::dir("cnb", 0o755),
        TarEntry::dir("workspace", 0o755).owned_by(s.uid, s.gid),
        TarEntry::dir("layers", 0o755).owned_by(s.uid, s.gid),
        TarEntry::dir("platform", 0o755),
        TarEntry::dir("platform/env", 0o755),
    ];
    for (p, text) in &files {
        entries.push(bytes_entry(p, text.as_bytes(), 0o644, ctx)?);
    }
    if !system.pre.buildpacks.is_empty() || !system.post.buildpacks.is_empty() {
        entries.push(bytes_entry(
            "cnb/system.toml",
            dist::to_toml(&dist::SystemToml { system }).as_bytes(),
            0o644,
            ctx,
        )?);
    }
    // builder.toml's `[[build.env]]`, where pack puts it and the lifecycle reads it.
    let build_env = s.config.as_ref().map(|c| c.build_env.clone()).unwrap_or_default();
    if !build_env.is_empty() {
        entries.push(TarEntry::dir("cnb/build-config", 0o755));
        entries.push(TarEntry::dir("cnb/build-config/env", 0o755));
        for (name, value) in &build_env {
            entries.push(bytes_entry(&format!("cnb/build-config/env/{name}"), value.as_bytes(), 0o644, ctx)?);
        }
    }
    let blob = super::layer::write_layer_cached(entries, Compression::Gzip, ctx)?;
    img = append_layer(&img, &blob, "builder: order.toml, run.toml, stack.toml").map_err(|e| ActionError::of(&e))?;

    let mut lifecycle = LifecycleInfo::default();
    if let Some(l) = &s.lifecycle {
        let (blob, info) =
            lifecycle_layer(deps.get(l).ok_or("internal: lifecycle image missing")?, &a.label.to_string(), ctx)?;
        img = append_layer(&img, &blob, "lifecycle").map_err(|e| ActionError::of(&e))?;
        lifecycle = info;
    }

    let metadata = BuilderMetadata {
        description: s.description.clone(),
        buildpacks: modules,
        stack: StackMetadata { run_image: run.clone() },
        images: vec![run],
        lifecycle,
        created_by: CreatedBy { name: "cbuild".into(), version: env!("CARGO_PKG_VERSION").into() },
        groups: Vec::new(),
    };
    let mut labels = BTreeMap::new();
    labels.insert(dist::BUILDER_METADATA.to_string(), dist::to_json(&metadata));
    labels.insert(dist::BUILDPACK_LAYERS.to_string(), dist::to_json(&layers_label));
    labels.insert(dist::BUILDPACK_ORDER.to_string(), dist::to_json(&order));
    if !s.stack_id.is_empty() {
        labels.insert(dist::STACK_ID.to_string(), s.stack_id.clone());
    }
    let patch = ConfigPatch {
        env: vec![("CNB_USER_ID".into(), s.uid.to_string()), ("CNB_GROUP_ID".into(), s.gid.to_string())],
        user: Some(format!("{}:{}", s.uid, s.gid)),
        labels,
        ..Default::default()
    };
    img = with_config(&img, &patch).map_err(|e| ActionError::of(&e))?;
    img = crate::oci::image::with_created(&img, &super::image::created(None, ctx.source_date_epoch))
        .map_err(|e| ActionError::of(&e))?;
    let (manifest, size) = img.write_to(cas).map_err(|e| ActionError::of(&e))?;
    Ok(super::image::image_output(&img, manifest, size, super::image::remote_of(base_out)))
}

/// `/cnb/lifecycle/` of a lifecycle image (`buildpacksio/lifecycle`, or any image holding one) as
/// one layer, with the version and APIs its labels declare.
fn lifecycle_layer(
    out: &ActionOutput,
    label: &str,
    ctx: &RunCtx,
) -> Result<(crate::oci::layer::LayerBlob, LifecycleInfo), ActionError> {
    let ActionOutput::Image { manifest, .. } = out else { return Err("internal: lifecycle image missing".into()) };
    let cas = ctx.cache.cas();
    let img = Image::load(cas, manifest).map_err(|e| ActionError::of(&e))?;
    let layers: Vec<_> = img.layers().iter().map(|l| l.digest.clone()).collect();
    let tree = ImageTree::read(cas, &layers).map_err(|e| ActionError::of(&e))?;
    let mut entries = vec![TarEntry::dir("cnb", 0o755), TarEntry::dir("cnb/lifecycle", 0o755)];
    let mut want = Vec::new();
    for (p, n) in tree.below("cnb/lifecycle") {
        match &n.kind {
            NodeKind::Dir => entries.push(TarEntry::dir(p, n.mode & 0o7777)),
            NodeKind::Symlink(t) => entries.push(TarEntry::symlink(p, t.clone())),
            NodeKind::File | NodeKind::Hardlink(_) => want.push((p.to_string(), n.mode & 0o777)),
            NodeKind::Other => {}
        }
    }
    if want.is_empty() {
        return Err(ActionError::user(format!(
            "`{label}`: the `lifecycle` image `{}` has no files in `/cnb/lifecycle`",
            img.digest()
        ))
        .hint("name an image holding a lifecycle, e.g. an oci_pull of buildpacksio/lifecycle"));
    }
    let paths: Vec<String> = want.iter().map(|(p, _)| p.clone()).collect();
    let bytes = tree.contents(cas, &paths, 1 << 30).map_err(|e| ActionError::of(&e))?;
    for (p, mode) in want {
        let b = bytes.get(&p).map(Vec::as_slice).unwrap_or_default();
        entries.push(bytes_entry(&p, b, mode, ctx)?);
    }
    let blob = super::layer::write_layer_cached(entries, Compression::Gzip, ctx)?;
    let labels = cnb_dist::labels(&img);
    let info = LifecycleInfo {
        version: labels.get("io.buildpacks.lifecycle.version").cloned().unwrap_or_default(),
        api: None,
        apis: labels.get("io.buildpacks.lifecycle.apis").and_then(|t| serde_json::from_str(t).ok()),
    };
    Ok((blob, info))
}

/// The `builder_image` action kind's [`Runner`](super::seam::Runner).
pub struct BuilderImageRunner;

impl super::seam::Runner for BuilderImageRunner {
    fn mnemonic(&self) -> &'static str {
        "builder_image"
    }
    fn version(&self) -> u32 {
        1
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        // A builder.toml, read at analysis time (what it says is in the key): a source, so
        // `affected` lists the builder when it changes.
        let ActionKind::BuilderImage(s) = &a.kind else { return Vec::new() };
        s.config.iter().map(|c| (c.file.clone(), true)).collect()
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
