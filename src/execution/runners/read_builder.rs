//! The `read_builder` runner: reads a builder image the way the lifecycle does (platform.md ›
//! Files, distribution.md › Builder) — each buildpack's tree from its own layer (found through the
//! `io.buildpacks.buildpack.layers` label), `/cnb/order.toml`, `/cnb/run.toml` (or `stack.toml`),
//! `/cnb/system.toml` and `/cnb/build-config/env/` from the top layers only, the build user from
//! `CNB_USER_ID`/`CNB_GROUP_ID`. The image itself stays the build image; nothing is extracted here.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cnb_dist::{self, BuilderInfo};
use super::ctx::RunCtx;
use crate::cache::KeyBuilder;
use crate::cnb::buildpack_toml::{same_id, BuildpackRef, OrderGroup};
use crate::cnb::distribution::{
    self as dist, parse_toml, BuilderMetadata, DistError, OrderToml, RunImage, RunToml, StackToml, SystemToml,
    BUILDER_METADATA, BUILDPACK_LAYERS, BUILDPACK_ORDER,
};
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::model::digest::Digest;
use crate::oci::Image;

/// The distribution files read from the top layers.
const FILES: [&str; 4] = ["cnb/order.toml", "cnb/run.toml", "cnb/stack.toml", "cnb/system.toml"];
const BUILD_ENV_DIR: &str = "cnb/build-config/env";
/// Largest distribution file read.
const MAX_TOML: u64 = 16 << 20;

pub async fn run(a: &Action, deps: &super::seam::Deps, ctx: &Arc<RunCtx>) -> Result<ActionOutput, ActionError> {
    let ActionKind::ReadBuilder { image, name } = &a.kind else { unreachable!() };
    let out = deps.get(image).ok_or("internal: builder image missing")?.clone();
    let ActionOutput::Image { manifest, .. } = out.as_ref() else {
        return Err("internal: builder image missing".into());
    };
    let img = Image::load(ctx.cache.cas(), manifest).map_err(|e| ActionError::of(&e))?;
    let subject = format!("builder image `{name}`");
    let labels = cnb_dist::labels(&img);
    let layers_text = labels.get(BUILDPACK_LAYERS).ok_or_else(|| {
        ActionError::of(&DistError::new(&subject, BUILDPACK_LAYERS, "", "missing: this is not a builder image"))
    })?;
    let layers_label = dist::parse_layers_label(&subject, layers_text).map_err(|e| ActionError::of(&e))?;
    let wanted = cnb_dist::layer_of_each(&img, &layers_label, &subject).map_err(|e| ActionError::of(&e))?;
    let files = top_files(&img, &out, ctx).await?;
    let bp_layers: Vec<Digest> = wanted.iter().map(|(_, _, d)| d.clone()).collect();
    super::pull::ensure_blobs(&out, &bp_layers, ctx).await?;
    let ctx2 = ctx.clone();
    let subj = subject.clone();
    let buildpacks = tokio::task::spawn_blocking(move || cnb_dist::read_trees(&ctx2, &wanted, &subj))
        .await
        .map_err(|e| ActionError::of(&e))??;
    cnb_dist::check_composites(ctx, &buildpacks, &subject)?;

    let metadata: Option<BuilderMetadata> = match labels.get(BUILDER_METADATA) {
        Some(t) => Some(serde_json::from_str(t).map_err(|e| {
            ActionError::of(&DistError::new(&subject, BUILDER_METADATA, "", format!("not valid: {e}")))
        })?),
        None => None,
    };
    let order = order(&files, &labels, metadata.as_ref(), &subject)?;
    let provided = |r: &BuildpackRef| {
        buildpacks.iter().any(|b| same_id(&b.id, &r.id) && (r.version.is_empty() || b.version == r.version))
    };
    let order_file = if files.contains_key("cnb/order.toml") { "/cnb/order.toml" } else { BUILDPACK_ORDER };
    dist::check_order(&subject, order_file, &order, &provided).map_err(|e| ActionError::of(&e))?;
    let run_images = run_images(&files, metadata.as_ref(), &subject)?;
    let system: SystemToml = match files.get("cnb/system.toml") {
        Some(t) => parse_toml(&subject, "/cnb/system.toml", t).map_err(|e| ActionError::of(&e))?,
        None => SystemToml::default(),
    };
    for (key, list) in [
        ("system.pre.buildpacks", &system.system.pre.buildpacks),
        ("system.post.buildpacks", &system.system.post.buildpacks),
    ] {
        for (i, r) in list.iter().enumerate() {
            if !provided(r) {
                return Err(ActionError::of(&DistError::new(
                    &subject,
                    "/cnb/system.toml",
                    format!("{key}[{i}]"),
                    format!("names `{}`, which the image does not provide", dist::shown(r)),
                )));
            }
        }
    }
    let env = cnb_dist::env(&img);
    let id = |var: &str| -> Result<u32, ActionError> {
        let v = env.get(var).ok_or_else(|| {
            ActionError::of(&DistError::new(
                &subject,
                "config",
                format!("Env {var}"),
                "missing: the build user is unknown",
            ))
        })?;
        match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ActionError::of(&DistError::new(
                &subject,
                "config",
                format!("Env {var}"),
                format!("`{v}` is not a non-root user or group id (buildpacks never run as root)"),
            ))),
        }
    };
    let (uid, gid) = (id("CNB_USER_ID")?, id("CNB_GROUP_ID")?);
    let stack_id = labels.get(dist::STACK_ID).or_else(|| env.get("CNB_STACK_ID")).cloned().unwrap_or_default();
    let build_env = files
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&format!("{BUILD_ENV_DIR}/")).map(|n| (n.to_string(), v.clone())))
        .collect();
    let info = BuilderInfo {
        name: name.clone(),
        buildpacks,
        order,
        run_images,
        stack_id,
        uid,
        gid,
        build_env,
        system_pre: system.system.pre.buildpacks,
        system_post: system.system.post.buildpacks,
    };
    let blobs = cnb_dist::tree_blobs(&info.buildpacks);
    let json = serde_json::to_string(&info).map_err(|e| ActionError::of(&e))?;
    Ok(ActionOutput::Data { json, blobs })
}

/// The order: `/cnb/order.toml`, else the `io.buildpacks.buildpack.order` label, else the groups
/// of an old builder's metadata label.
fn order(
    files: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    metadata: Option<&BuilderMetadata>,
    subject: &str,
) -> Result<Vec<OrderGroup>, ActionError> {
    if let Some(t) = files.get("cnb/order.toml") {
        let o: OrderToml = parse_toml(subject, "/cnb/order.toml", t).map_err(|e| ActionError::of(&e))?;
        if o.order.is_empty() {
            return Err(ActionError::of(&DistError::new(subject, "/cnb/order.toml", "order", "has no groups")));
        }
        return Ok(o.order);
    }
    if let Some(t) = labels.get(BUILDPACK_ORDER) {
        let o: Vec<OrderGroup> = serde_json::from_str(t)
            .map_err(|e| ActionError::of(&DistError::new(subject, BUILDPACK_ORDER, "", format!("not valid: {e}"))))?;
        if !o.is_empty() {
            return Ok(o);
        }
    }
    if let Some(m) = metadata.filter(|m| !m.groups.is_empty()) {
        return Ok(m.groups.iter().map(|g| OrderGroup { group: g.buildpacks.clone() }).collect());
    }
    Err(ActionError::of(&DistError::new(
        subject,
        "/cnb/order.toml",
        "",
        format!("missing, and neither the `{BUILDPACK_ORDER}` nor the `{BUILDER_METADATA}` label has an order"),
    ))
    .hint("give the builder an order: `builder(image = ..., order = [[...]])`"))
}

/// Run images: `/cnb/run.toml`, else `/cnb/stack.toml`, else the metadata label (`images`, then
/// `stack.runImage`). May be empty (then a `stack` must be given to the builder).
fn run_images(
    files: &BTreeMap<String, String>,
    metadata: Option<&BuilderMetadata>,
    subject: &str,
) -> Result<Vec<RunImage>, ActionError> {
    if let Some(t) = files.get("cnb/run.toml") {
        let r: RunToml = parse_toml(subject, "/cnb/run.toml", t).map_err(|e| ActionError::of(&e))?;
        return Ok(r.images.into_iter().filter(|i| !i.image.is_empty()).collect());
    }
    if let Some(t) = files.get("cnb/stack.toml") {
        let s: StackToml = parse_toml(subject, "/cnb/stack.toml", t).map_err(|e| ActionError::of(&e))?;
        if !s.run_image.image.is_empty() {
            return Ok(vec![s.run_image]);
        }
    }
    if let Some(m) = metadata {
        let imgs: Vec<RunImage> = m.images.iter().filter(|i| !i.image.is_empty()).cloned().collect();
        if !imgs.is_empty() {
            return Ok(imgs);
        }
        if !m.stack.run_image.image.is_empty() {
            return Ok(vec![m.stack.run_image.clone()]);
        }
    }
    Ok(Vec::new())
}

/// The distribution files of the builder, from its top layers down: the first layer that has a
/// file (or a whiteout of it, or an opaque directory above it) decides it; the walk stops at the
/// first layer with nothing under `/cnb` (the build image's own layers below never hold the
/// builder's files), so a builder's base layers are neither fetched nor read here.
async fn top_files(
    img: &Image,
    out: &Arc<ActionOutput>,
    ctx: &Arc<RunCtx>,
) -> Result<BTreeMap<String, String>, ActionError> {
    // path → contents, or None when a higher layer removed it.
    let mut decided: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut hidden_below: Vec<String> = Vec::new();
    for layer in img.layers().iter().rev() {
        super::pull::ensure_blobs(out, std::slice::from_ref(&layer.digest), ctx).await?;
        let (ctx2, d) = (ctx.clone(), layer.digest.clone());
        let scan =
            tokio::task::spawn_blocking(move || scan_layer(&ctx2, &d)).await.map_err(|e| ActionError::of(&e))??;
        for (p, v) in scan.files {
            if !decided.contains_key(&p) && !hidden_below.iter().any(|h| p.starts_with(&format!("{h}/"))) {
                decided.insert(p, v);
            }
        }
        hidden_below.extend(scan.opaque);
        if !scan.has_cnb {
            break;
        }
    }
    let mut found = BTreeMap::new();
    for (p, v) in decided {
        if let Some(b) = v {
            let text = String::from_utf8(b)
                .map_err(|_| ActionError::user(format!("`/{p}` of the builder image is not UTF-8")))?;
            found.insert(p, text);
        }
    }
    Ok(found)
}

/// What one layer says about the distribution files.
struct LayerScan {
    has_cnb: bool,
    /// Wanted paths this layer has (contents) or whites out (`None`).
    files: Vec<(String, Option<Vec<u8>>)>,
    /// Directories this layer marks opaque (what lower layers put there is gone).
    opaque: Vec<String>,
}

/// Reads one layer's entries once: the wanted files' bytes (at most [`MAX_TOML`] each), whiteouts
/// of them, opaque markers, and whether anything lies under `cnb/`.
fn scan_layer(ctx: &RunCtx, d: &Digest) -> Result<LayerScan, ActionError> {
    use std::io::Read;
    let terr = |e: std::io::Error| ActionError::env(format!("reading layer `{d}`: {e}"));
    ctx.cache.cas().verify(d).map_err(|e| ActionError::of(&e))?;
    let f = ctx.cache.cas().open_blob(d).map_err(|e| ActionError::of(&e))?;
    let (_, r) = crate::oci::compress::decoder(std::io::BufReader::with_capacity(1 << 20, f)).map_err(terr)?;
    let mut ar = tar::Archive::new(r);
    let mut scan = LayerScan { has_cnb: false, files: Vec::new(), opaque: Vec::new() };
    let wanted = |p: &str| {
        FILES.contains(&p)
            || p.strip_prefix(BUILD_ENV_DIR)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    };
    for e in ar.entries().map_err(terr)? {
        let mut e = e.map_err(terr)?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let p = raw.split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/");
        if p == "cnb" || p.starts_with("cnb/") {
            scan.has_cnb = true;
        }
        let (dir, base) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
        if base == ".wh..wh..opq" {
            scan.opaque.push(dir.to_string());
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            let gone = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
            if wanted(&gone) {
                scan.files.push((gone.clone(), None));
            }
            // A whited-out directory takes what lower layers had below it.
            scan.opaque.push(gone);
            continue;
        }
        if wanted(&p) && e.header().entry_type() == tar::EntryType::Regular {
            let mut buf = Vec::new();
            (&mut e).take(MAX_TOML).read_to_end(&mut buf).map_err(terr)?;
            scan.files.push((p, Some(buf)));
        }
    }
    Ok(scan)
}

/// The `read_builder` action kind's [`Runner`](super::seam::Runner).
pub struct ReadBuilderRunner;

impl super::seam::Runner for ReadBuilderRunner {
    fn mnemonic(&self) -> &'static str {
        "read_builder"
    }
    fn version(&self) -> u32 {
        1
    }
    fn key(
        &self,
        kb: KeyBuilder,
        a: &Action,
        deps: &super::seam::Deps,
        _ctx: &RunCtx,
    ) -> Result<KeyBuilder, ActionError> {
        let ActionKind::ReadBuilder { image, name } = &a.kind else { unreachable!() };
        let img = deps.get(image).ok_or("internal: builder image missing")?;
        Ok(kb.component("image", super::ctx::image_identity(img)).component("name", name.as_str()))
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
