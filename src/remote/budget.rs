//! The remote cache's time budget for one build: a remote that costs more than it saves is turned
//! off for the rest of the build, so a slow or trickling server can never make a build much slower
//! than no cache at all.
//!
//! What counts: the wall time during which at least one lookup (the critical path: an action waits
//! for it) was in flight, minus the execution time remote hits saved (each entry records how long
//! its action ran). Uploads run in the background and do not count; they get their own deadline
//! when the build drains them ([`super::Uploader`]).
//!
//! The allowance is `GRACE + FRACTION × elapsed build time`: with `FRACTION = 0.15` a build that
//! takes `L` seconds locally takes at most about `L / 0.85 + GRACE` with a useless remote — and
//! every single request gets at most the allowance left as its timeout, so one hung request cannot
//! overshoot it by a request timeout.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Waste always allowed (connection set-up, a first miss).
pub const GRACE: Duration = Duration::from_millis(1000);
/// Waste allowed per second of build time.
pub const FRACTION: f64 = 0.15;
/// The smallest timeout a request gets while the budget is not spent (below it, a healthy server
/// on a loaded machine would time out).
const MIN_REQUEST: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct State {
    inflight: usize,
    busy_since: Option<Instant>,
    busy: Duration,
    saved: Duration,
}

/// Time spent on remote lookups against time they saved. `Send + Sync`.
#[derive(Debug)]
pub struct Budget {
    started: Instant,
    grace: Duration,
    fraction: f64,
    state: Mutex<State>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(GRACE, FRACTION)
    }
}

/// Marks a lookup in flight until dropped.
pub struct Busy<'a>(&'a Budget);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.inflight -= 1;
        if s.inflight == 0 {
            if let Some(t) = s.busy_since.take() {
                s.busy += t.elapsed();
            }
        }
    }
}

impl Budget {
    pub fn new(grace: Duration, fraction: f64) -> Budget {
        Budget {
            started: Instant::now(),
            grace,
            fraction,
            state: Mutex::new(State { inflight: 0, busy_since: None, busy: Duration::ZERO, saved: Duration::ZERO }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts counting a lookup's time (until the guard is dropped).
    pub fn busy(&self) -> Busy<'_> {
        let mut s = self.lock();
        if s.inflight == 0 {
            s.busy_since = Some(Instant::now());
        }
        s.inflight += 1;
        Busy(self)
    }

    /// A remote hit saved `d` of execution.
    pub fn credit(&self, d: Duration) {
        self.lock().saved += d;
    }

    /// Wall time with a lookup in flight so far.
    pub fn spent(&self) -> Duration {
        let s = self.lock();
        s.busy + s.busy_since.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Time lookups may still cost before the remote is turned off; zero when spent.
    pub fn remaining(&self) -> Duration {
        let (spent, saved) = {
            let s = self.lock();
            (s.busy + s.busy_since.map(|t| t.elapsed()).unwrap_or_default(), s.saved)
        };
        let allowed = self.grace + self.started.elapsed().mul_f64(self.fraction) + saved;
        allowed.saturating_sub(spent)
    }

    /// The timeout for the next request: what the budget has left (at least [`MIN_REQUEST`]),
    /// never more than `cap` (the configured request timeout). `None` when the budget is spent.
    pub fn request_timeout(&self, cap: Duration) -> Option<Duration> {
        let r = self.remaining();
        (!r.is_zero()).then(|| r.max(MIN_REQUEST).min(cap))
    }

    /// Why the remote should be turned off, when the budget is spent.
    pub fn exhausted(&self) -> Option<String> {
        if !self.remaining().is_zero() {
            return None;
        }
        let s = self.lock();
        let spent = s.busy + s.busy_since.map(|t| t.elapsed()).unwrap_or_default();
        Some(format!(
            "it cost {:.1} s of waiting in {:.1} s of build time and saved {:.1} s: building locally is faster",
            spent.as_secs_f64(),
            self.started.elapsed().as_secs_f64(),
            s.saved.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lookups_count_once_and_hits_buy_time() {
        let b = Budget::new(Duration::from_millis(100), 0.0);
        {
            let _a = b.busy();
            let _c = b.busy();
            std::thread::sleep(Duration::from_millis(60));
        }
        let spent = b.spent();
        assert!(spent >= Duration::from_millis(60) && spent < Duration::from_millis(110), "{spent:?}");
        assert!(b.exhausted().is_none());
        {
            let _a = b.busy();
            std::thread::sleep(Duration::from_millis(60));
        }
        assert!(b.exhausted().is_some_and(|m| m.contains("building locally is faster")));
        assert_eq!(b.request_timeout(Duration::from_secs(10)), None);
        b.credit(Duration::from_secs(5));
        assert!(b.exhausted().is_none());
        let t = b.request_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(t, Duration::from_secs(2), "capped by the configured timeout");
    }

    #[test]
    fn the_allowance_grows_with_build_time() {
        let b = Budget::new(Duration::ZERO, 0.5);
        std::thread::sleep(Duration::from_millis(100));
        let r = b.remaining();
        assert!(r >= Duration::from_millis(50), "{r:?}");
        let t = b.request_timeout(Duration::from_secs(9)).unwrap();
        assert!(t >= MIN_REQUEST && t <= Duration::from_secs(9), "{t:?}");
    }
}
