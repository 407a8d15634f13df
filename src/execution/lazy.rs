//! Lazy bytes (issue 19): a remote-cache hit records its output, and its large blobs (layer tars,
//! files over [`LAZY_MIN`](crate::remote::client::LAZY_MIN)) stay on the server until something
//! needs their bytes:
//!
//! ```text
//! remote hit ──► output known (manifests/configs fetched and checked) ──► dependents' keys
//!      │                                     │
//!      │ a dependent executes (locally or remotely): the hits of its whole closure are fetched first
//!      │ a requested target's output (layout, push, run, export): fetched by the session
//!      ▼
//! fetched (each blob sha256-checked) ──► stored in the local cache (only now: a local entry
//!                                        always has its blobs)
//! ```
//!
//! A hit never fetched is not stored locally: the next build looks it up again (one request) —
//! never a local entry without its bytes. A key that reads a dependency's bytes and fails is
//! retried after fetching (the scheduler does that), so laziness never changes a key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::ActionError;
use crate::cache::Cache;
use crate::model::action::{ActionGraph, ActionId};
use crate::model::digest::{Blake3, Digest};
use crate::remote::RemoteCache;

/// What storing a fetched hit locally needs.
pub struct Store {
    pub key: Blake3,
    pub name: String,
    pub label: String,
    pub result_json: String,
    pub blobs: Vec<Digest>,
}

struct Pending {
    blobs: Vec<(Digest, u64)>,
    store: Store,
    /// Set once fetched (or failed: the error, for every consumer).
    done: tokio::sync::OnceCell<Result<(), String>>,
}

/// The build's lazy hits.
#[derive(Default)]
pub struct Lazy {
    /// `None`: lazy bytes are off (every hit is fetched whole).
    remote: Option<Arc<RemoteCache>>,
    pending: Mutex<BTreeMap<ActionId, Arc<Pending>>>,
    /// A pending blob could not be fetched (the caller builds again without lazy bytes).
    failed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy").field("pending", &self.unfetched().len()).finish()
    }
}

impl Lazy {
    pub fn new(remote: Option<Arc<RemoteCache>>) -> Lazy {
        Lazy { remote, pending: Mutex::default(), failed: Default::default() }
    }

    /// Whether remote hits may leave blobs on the server.
    pub fn enabled(&self) -> bool {
        self.remote.is_some()
    }

    /// Whether a pending blob could not be downloaded (damaged or gone from the server).
    pub fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a hit of `id` whose `blobs` are still remote.
    pub fn add(&self, id: ActionId, blobs: Vec<(Digest, u64)>, store: Store) {
        let p = Arc::new(Pending { blobs, store, done: tokio::sync::OnceCell::new() });
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, p);
    }

    /// Actions whose blobs were never needed (nor fetched).
    pub fn unfetched(&self) -> Vec<ActionId> {
        let m = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().filter(|(_, p)| !p.done.initialized()).map(|(id, _)| *id).collect()
    }

    fn closure(&self, g: &ActionGraph, roots: &[ActionId]) -> Vec<Arc<Pending>> {
        let m = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_empty() {
            return Vec::new();
        }
        let mut seen = BTreeSet::new();
        let mut todo: Vec<ActionId> = roots.to_vec();
        let mut out = Vec::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(p) = m.get(&id) {
                out.push(p.clone());
            }
            todo.extend(g.actions.get(id).map(|a| a.deps.clone()).unwrap_or_default());
        }
        out
    }

    /// Fetches the pending blobs of `roots` and everything they depend on (before one of them is
    /// read by an executing action), storing each fetched hit in the local cache.
    pub async fn ensure(&self, g: &ActionGraph, roots: &[ActionId], cache: &Arc<Cache>) -> Result<(), ActionError> {
        for p in self.closure(g, roots) {
            let (remote, cache2, p2) = (self.remote.clone(), cache.clone(), p.clone());
            let r = p
                .done
                .get_or_init(|| async move {
                    tokio::task::spawn_blocking(move || fetch(remote.as_deref(), &cache2, &p2))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                })
                .await;
            if let Err(e) = r {
                self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(missing(&p.store, e));
            }
        }
        Ok(())
    }

    /// [`Self::ensure`] from outside the scheduler (blocking): the session, for the outputs of
    /// the requested targets.
    pub fn ensure_blocking(&self, roots: &[ActionId], cache: &Arc<Cache>) -> Result<(), ActionError> {
        let own: BTreeSet<ActionId> = roots.iter().copied().collect();
        let m = self.pending.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (id, p) in m {
            if !own.contains(&id) || p.done.initialized() {
                continue;
            }
            let r = fetch(self.remote.as_deref(), cache, &p);
            let _ = p.done.set(r.clone());
            if let Err(e) = r {
                self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(missing(&p.store, &e));
            }
        }
        Ok(())
    }
}

fn missing(s: &Store, e: &str) -> ActionError {
    ActionError::env(format!("the remote-cache blobs of `{}` {} could not be downloaded: {e}", s.label, s.name))
        .hint("the build runs again without lazy downloads (`--remote-download all`)")
}

/// Downloads a hit's pending blobs (each verified against its sha256), then stores the hit in
/// the local cache.
fn fetch(remote: Option<&RemoteCache>, cache: &Cache, p: &Pending) -> Result<(), String> {
    let remote = remote.ok_or("no remote cache")?;
    for (d, size) in &p.blobs {
        if cache.cas().contains(d) {
            continue;
        }
        let got = remote.fetch_sized_blob(d, *size, cache.cas()).map_err(|e| e.to_string())?;
        if got != *size {
            return Err(format!("blob `{d}` is {got} bytes, the entry lists {size}"));
        }
    }
    let s = &p.store;
    cache.put_action(&s.key, &s.name, &s.label, &s.result_json, &s.blobs).map_err(|e| crate::execution::chain(&e))
}
