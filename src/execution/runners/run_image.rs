//! The `run_image` runner: the run image a builder image names (`/cnb/run.toml`'s first image,
//! then its mirrors in turn), resolved in its registry as `oci_pull` does, shallow. A builder
//! names its run image by tag, so it is resolved on every build (never answered from the cache);
//! the export keyed on the result is cached while the digest stays the same.

use std::sync::Arc;

use super::cnb_dist::{self, BuilderInfo};
use super::ctx::{output_digest, RunCtx};
use crate::cache::KeyBuilder;
use crate::cnb::distribution::DistError;
use crate::execution::ActionError;
use crate::model::action::{Action, ActionKind, ActionOutput};
use crate::model::reference::Reference;

pub async fn run(a: &Action, deps: &super::seam::Deps, ctx: &Arc<RunCtx>) -> Result<ActionOutput, ActionError> {
    let ActionKind::BuilderRunImage { builder } = &a.kind else { unreachable!() };
    let info: BuilderInfo =
        cnb_dist::from_output(deps.get(builder).ok_or("internal: builder missing")?, "read_builder")?;
    let subject = format!("builder image `{}`", info.name);
    let Some(first) = info.run_images.first() else {
        return Err(ActionError::of(&DistError::new(&subject, "/cnb/run.toml", "images", "names no run image"))
            .hint("give the builder a stack: `builder(image = ..., stack = \"//stacks:default\")`"));
    };
    let mut names = vec![first.image.clone()];
    names.extend(first.mirrors.iter().cloned());
    let mut last = None;
    for n in &names {
        let r = Reference::parse(n).map_err(|e| {
            ActionError::of(&DistError::new(&subject, "/cnb/run.toml", "images[0].image", format!("`{n}`: {e}")))
        })?;
        match ctx.registry()?.resolve(&r, None).await {
            Ok(resolved) => return super::pull::shallow_output(resolved, ctx),
            Err(e) => last = Some(ActionError::of(&e).context(format!("run image `{n}` of {subject}"))),
        }
    }
    Err(last.unwrap_or_else(|| ActionError::internal("no run image tried")))
}

/// The `run_image` action kind's [`Runner`](super::seam::Runner).
pub struct RunImageRunner;

impl super::seam::Runner for RunImageRunner {
    fn mnemonic(&self) -> &'static str {
        "run_image"
    }
    fn version(&self) -> u32 {
        1
    }
    fn cacheable(&self, _a: &Action) -> bool {
        // The builder names a tag, which can move.
        false
    }
    fn key(
        &self,
        kb: KeyBuilder,
        a: &Action,
        deps: &super::seam::Deps,
        _ctx: &RunCtx,
    ) -> Result<KeyBuilder, ActionError> {
        let ActionKind::BuilderRunImage { builder } = &a.kind else { unreachable!() };
        let b = deps.get(builder).ok_or("internal: builder missing")?;
        Ok(kb.component("builder", output_digest(b)).component("unpinned", "resolved on every build"))
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
