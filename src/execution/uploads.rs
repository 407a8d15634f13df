//! Remote-cache uploads off the critical path: a background queue that worker threads drain while
//! the build goes on, and that the end of the build waits for with a deadline.
//!
//! * An executed action's result is queued instead of uploaded before its dependents may start.
//! * A local hit whose entry this cache never uploaded to this remote (a lost upload, a build that
//!   ran without the remote, a result computed before the remote was configured) is *back-filled*:
//!   a HEAD of its `/ac/` value, and an upload if the server lacks it. Uploads that succeed (or find
//!   the entry present) are recorded in the local cache, so a later no-op build asks nothing.
//! * At the end the build waits for the queue at most `DRAIN_GRACE + DRAIN_FRACTION × build time`;
//!   what is left is abandoned with one warning, and the next build back-fills it.
//! * A failed upload is retried once at the end of the queue while the deadline allows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cache::Cache;
use crate::model::digest::{Blake3, Digest};
use crate::remote::{RemoteCache, RemoteError};

/// Always allowed for draining the queue at the end of a build.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Allowed per second of build time.
pub const DRAIN_FRACTION: f64 = 0.25;
/// Threads uploading at once.
const WORKERS: usize = 2;

/// One action result to upload.
pub struct Job {
    pub key: Blake3,
    pub result_json: String,
    pub components_json: String,
    pub blobs: Vec<Digest>,
    pub exec_ms: Option<u64>,
    /// A local hit: ask the server first (HEAD) and upload only if it lacks the entry.
    pub backfill: bool,
    /// Attempts so far.
    attempts: u32,
}

impl Job {
    pub fn new(
        key: Blake3,
        result_json: String,
        components_json: String,
        blobs: Vec<Digest>,
        exec_ms: Option<u64>,
        backfill: bool,
    ) -> Job {
        Job { key, result_json, components_json, blobs, exec_ms, backfill, attempts: 0 }
    }
}

/// What the queue did, for the end-of-build report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Entries uploaded.
    pub uploaded: usize,
    /// Back-fill checks that found the entry already on the server.
    pub present: usize,
    /// Entries whose upload failed (twice).
    pub failed: usize,
    /// Entries not uploaded when the deadline passed.
    pub abandoned: usize,
    /// The first failure, for the warning.
    pub first_error: Option<String>,
}

struct State {
    queue: VecDeque<Job>,
    /// Jobs taken by a worker and not finished.
    running: usize,
    report: DrainReport,
}

struct Shared {
    remote: Arc<RemoteCache>,
    cache: Arc<Cache>,
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The queue. Dropping it without [`Uploader::drain`] abandons what is left.
pub struct Uploader {
    shared: Arc<Shared>,
}

impl Uploader {
    pub fn new(remote: Arc<RemoteCache>, cache: Arc<Cache>) -> Uploader {
        let shared = Arc::new(Shared {
            remote,
            cache,
            state: Mutex::new(State { queue: VecDeque::new(), running: 0, report: DrainReport::default() }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        for i in 0..WORKERS {
            let s = shared.clone();
            // Detached: a worker still inside a request when the build drains is abandoned (its
            // upload writes the `/ac/` value last, so a cut-off upload leaves no entry).
            let _ = std::thread::Builder::new().name(format!("cbuild-upload-{i}")).spawn(move || worker(&s));
        }
        Uploader { shared }
    }

    /// Whether this cache has uploaded (or found) `key` on this remote before.
    pub fn known(&self, key: &Blake3) -> bool {
        self.shared.cache.remote_has(key, self.shared.remote.url()).unwrap_or(false)
    }

    /// Queues an upload.
    pub fn submit(&self, job: Job) {
        let mut st = self.shared.lock();
        st.queue.push_back(job);
        self.shared.changed.notify_all();
    }

    /// Waits until the queue is empty or `deadline` passed, then stops the workers.
    pub fn drain(&self, deadline: Duration) -> DrainReport {
        let until = Instant::now() + deadline;
        let mut st = self.shared.lock();
        while !(st.queue.is_empty() && st.running == 0) {
            let now = Instant::now();
            if now >= until || self.shared.remote.health() != crate::remote::RemoteHealth::Healthy {
                break;
            }
            st = self.shared.changed.wait_timeout(st, until - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        st.report.abandoned = st.queue.len() + st.running;
        st.queue.clear();
        self.shared.changed.notify_all();
        st.report.clone()
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn worker(s: &Shared) {
    loop {
        let mut job = {
            let mut st = s.lock();
            loop {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(j) = st.queue.pop_front() {
                    st.running += 1;
                    break j;
                }
                st = s.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let r = upload(s, &job);
        let mut st = s.lock();
        st.running -= 1;
        match r {
            Ok(Done::Uploaded) => st.report.uploaded += 1,
            Ok(Done::Present) => st.report.present += 1,
            // Once more, at the end of the queue; a remote that was turned off is not retried.
            Err(e) if job.attempts == 0 && !matches!(e, RemoteError::Disabled { .. }) => {
                job.attempts += 1;
                st.queue.push_back(job);
            }
            Err(e) => {
                st.report.failed += 1;
                if st.report.first_error.is_none() && !matches!(e, RemoteError::Disabled { .. }) {
                    st.report.first_error = Some(crate::execution::chain(&e));
                }
            }
        }
        s.changed.notify_all();
    }
}

enum Done {
    Uploaded,
    Present,
}

fn upload(s: &Shared, job: &Job) -> Result<Done, RemoteError> {
    let done = if job.backfill && s.remote.has_action(&job.key)? {
        Done::Present
    } else {
        s.remote.put_action(
            &job.key,
            &job.result_json,
            &job.components_json,
            &job.blobs,
            s.cache.cas(),
            job.exec_ms,
        )?;
        Done::Uploaded
    };
    // Remembered, so a later build neither uploads nor asks again.
    let _ = s.cache.mark_remote_has(&job.key, s.remote.url());
    Ok(done)
}

/// How long the end of a build that took `elapsed` waits for the queue.
pub fn drain_deadline(elapsed: Duration) -> Duration {
    DRAIN_GRACE + elapsed.mul_f64(DRAIN_FRACTION)
}
