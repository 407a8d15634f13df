//! The seam every action kind implements ([`Runner`]), and the helpers runners share. Kept apart
//! from `runners/mod.rs` (which dispatches to the runners) so that runner files depend on the seam
//! only, never on the dispatch.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::ctx::RunCtx;
use crate::cache::KeyBuilder;
use crate::execution::ActionError;
use crate::model::action::{Action, ActionId, ActionOutput, Input};

/// What a runner's [`Runner::run`] returns.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<ActionOutput, ActionError>> + Send + 'a>>;

/// The dependencies' outputs of an action, by action id.
pub type Deps = BTreeMap<ActionId, Arc<ActionOutput>>;

/// The seam of one action kind.
pub trait Runner: Sync {
    /// The kind's name in keys, events and `explain` (`ActionKind::mnemonic`).
    fn mnemonic(&self) -> &'static str;
    /// Bumped when the kind's output for the same inputs would change (so old entries, local or in
    /// a shared remote cache, are not reused). Pinned-digest tests are tied to
    /// [`output_fingerprint`], so a changed digest without a bump (or a codec id change) fails.
    fn version(&self) -> u32;
    /// Whether outputs of this kind can become bytes of an image (then its version is part of
    /// [`output_fingerprint`](super::output_fingerprint), which pinned image digests are tied to).
    /// `false` for a kind whose output is a verdict (a test's pass), never image content.
    fn makes_image_bytes(&self) -> bool {
        true
    }
    /// The workspace sources the action reads, each with whether it follows a last-component
    /// symlink (`true`) or copies it as a link (`false`). The executor hashes them before (their
    /// digests are in `RunCtx::sources`) and refuses to store a result if one changed meanwhile.
    fn sources(&self, _a: &Action) -> Vec<(String, bool)> {
        Vec::new()
    }
    /// Whether a result may be answered from, and stored in, the cache (an unpinned registry tag
    /// may not: it depends on something outside every input).
    fn cacheable(&self, _a: &Action) -> bool {
        true
    }
    /// The key's components (every input, declared).
    fn key(&self, kb: KeyBuilder, a: &Action, deps: &Deps, ctx: &RunCtx) -> Result<KeyBuilder, ActionError>;
    /// Runs the action (after a cache miss).
    fn run<'a>(&'a self, a: &'a Action, deps: &'a Deps, ctx: &'a Arc<RunCtx>) -> RunFuture<'a>;
}

/// A synchronous runner body on tokio's blocking pool (tar, compression, CAS writes).
pub fn blocking<'a>(
    a: &Action,
    deps: &Deps,
    ctx: &Arc<RunCtx>,
    f: fn(&Action, &Deps, &RunCtx) -> Result<ActionOutput, ActionError>,
) -> RunFuture<'a> {
    let (a, deps, ctx) = (a.clone(), deps.clone(), ctx.clone());
    Box::pin(async move {
        tokio::task::spawn_blocking(move || f(&a, &deps, &ctx))
            .await
            .map_err(|e| ActionError::internal(format!("runner task failed: {e}")))?
    })
}

/// The workspace paths among `inputs` (outputs of other actions are not sources).
pub fn source_paths<'a>(inputs: impl IntoIterator<Item = &'a Input>) -> Vec<String> {
    inputs
        .into_iter()
        .filter_map(|i| match i {
            Input::Source(p) => Some(p.clone()),
            Input::Output { .. } => None,
        })
        .collect()
}
