//! The remote cache under network faults, through the CLI: a fault-injecting proxy
//! (`common::fault_proxy`) in front of the real nginx cache server delays, fails (5xx, 429), drops,
//! loses answers, truncates, bit-flips and trickles requests. Whatever happens, no wrong result is
//! used or stored, a slow remote is turned off by the build's time budget, lost uploads are
//! back-filled by the next build, and a damaged blob on the server is replaced.

use std::time::{Duration, Instant};

use crate::common;
use common::cache_server::CacheServer;
use common::fault_proxy::{Fault, FaultProxy, Seen};
use common::TestContext;

const PATTERNS: &[&str] = &["//tools/...", "//services/api:image"];

struct Built {
    summary: serde_json::Value,
    warnings: Vec<String>,
    secs: f64,
}

fn build(cx: &TestContext, remote: Option<&str>, env: &[(&str, &str)]) -> Built {
    let mut args: Vec<&str> = Vec::new();
    if let Some(r) = remote {
        args.extend(["--remote-cache", r]);
    }
    args.extend(["build", "--json"]);
    args.extend_from_slice(PATTERNS);
    let t = Instant::now();
    let out = cx.cmd().envs(env.iter().copied()).args(&args).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let ev: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let warnings =
        ev.iter().filter(|e| e["type"] == "warning").filter_map(|e| e["message"].as_str().map(String::from)).collect();
    Built { summary: ev.last().unwrap().clone(), warnings, secs }
}

fn digests(s: &serde_json::Value) -> Vec<(String, String)> {
    s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["label"].as_str().unwrap().into(), t["image_digest"].as_str().unwrap().into()))
        .collect()
}

/// The proxy URL for `srv` (same path prefix, the proxy's port).
fn via(srv: &CacheServer, proxy: &FaultProxy) -> String {
    let rest = srv.url.trim_start_matches("http://");
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    format!("{}{path}", proxy.url())
}

fn upstream_port(srv: &CacheServer) -> u16 {
    let rest = srv.url.trim_start_matches("http://");
    let host = rest.split('/').next().unwrap();
    host.rsplit(':').next().unwrap().parse().unwrap()
}

/// Every blob the server stores hashes to its name: nothing wrong was stored.
fn assert_server_blobs_whole(srv: &CacheServer) {
    let cas = srv.data().join("cas");
    let Ok(rd) = std::fs::read_dir(&cas) else { return };
    for e in rd {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with('.') {
            continue;
        }
        let got = common::support::sha256_hex(&std::fs::read(&p).unwrap());
        assert_eq!(got, name, "the server stores a damaged blob `{}`", p.display());
    }
}

#[test]
fn a_slow_or_trickling_remote_is_turned_off_by_the_time_budget() {
    // No remote: the local time of this build on this machine.
    let base = build(&TestContext::from_examples(), None, &[]);
    for fault in [Fault::Delay(Duration::from_millis(1000)), Fault::Trickle(Duration::from_millis(300))] {
        let srv = CacheServer::shared();
        // Something to trickle: a writer fills the server first (directly).
        let keys = common::keygen();
        build(&TestContext::from_examples(), Some(&srv.url), &keys.writer());
        let f = fault.clone();
        let proxy = FaultProxy::start(upstream_port(&srv), move |_: &Seen| f.clone());
        // A reader with an empty cache, and a writer (uploads in the background) after an edit.
        let b = build(&TestContext::from_examples(), Some(&via(&srv, &proxy)), &keys.reader());
        assert_eq!(digests(&b.summary), digests(&base.summary), "{fault:?}");
        assert!(
            b.warnings.iter().any(|w| w.contains("building locally is faster") || w.contains("turned off")),
            "{fault:?}: the remote is turned off: {:?}",
            b.warnings
        );
        // The bound the budget gives (GRACE + 15 % of the build for lookups), with room for a
        // loaded 2-core machine; without the budget this build took 20× the local time.
        let limit = base.secs * 1.5 + 3.0;
        eprintln!("{fault:?}: local {:.2} s, with the slow remote {:.2} s (limit {limit:.2} s)", base.secs, b.secs);
        assert!(b.secs < limit, "{fault:?}: {:.2} s against {:.2} s without a remote", b.secs, base.secs);
    }
}

/// A small deterministic generator (xorshift), so a failing seed can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_fault(rng: &mut Rng) -> Fault {
    match rng.next() % 20 {
        0 => Fault::Status(500),
        1 => Fault::Status(503),
        2 => Fault::TooMany(0),
        3 => Fault::Drop,
        4 => Fault::LoseAnswer,
        5 => Fault::Truncate,
        6 => Fault::FlipBit,
        7 => Fault::Trickle(Duration::from_millis(2)),
        8 => Fault::Delay(Duration::from_millis(50)),
        _ => Fault::Pass,
    }
}

#[test]
fn under_random_faults_no_wrong_result_is_used_or_stored() {
    let clean = build(&TestContext::from_examples(), None, &[]);
    for seed in [0x9e37_79b9_7f4a_7c15u64, 0xdead_beef_cafe_f00d, 0x0123_4567_89ab_cdef] {
        let srv = CacheServer::shared();
        let keys = common::keygen();
        let mut rng = Rng(seed);
        let proxy = FaultProxy::start(upstream_port(&srv), move |_: &Seen| random_fault(&mut rng));
        let url = via(&srv, &proxy);
        // A writer through the faults: uploads may fail, nothing wrong may land on the server.
        let a = build(&TestContext::from_examples(), Some(&url), &keys.writer());
        assert_eq!(digests(&a.summary), digests(&clean.summary), "seed {seed:#x}");
        assert_server_blobs_whole(&srv);
        // A reader through the faults, then the same reader's cache offline: both equal a clean build.
        let b = TestContext::from_examples();
        let rb = build(&b, Some(&url), &keys.reader());
        assert_eq!(digests(&rb.summary), digests(&clean.summary), "seed {seed:#x}: {:?}", rb.warnings);
        let again = build(&b, None, &[]);
        assert_eq!(again.summary["executed"], 0, "seed {seed:#x}");
        assert_eq!(digests(&again.summary), digests(&clean.summary), "seed {seed:#x}");
        // A reader without faults uses only whole entries.
        let c = build(&TestContext::from_examples(), Some(&srv.url), &keys.reader());
        assert_eq!(digests(&c.summary), digests(&clean.summary), "seed {seed:#x}");
        let faults = proxy.log().iter().filter(|(_, _, f)| *f != Fault::Pass).count();
        eprintln!(
            "seed {seed:#x}: {} requests, {faults} faulted; reader got {} remote hits",
            proxy.log().len(),
            rb.summary["cached_remote"]
        );
        // Per-entry problems are one summary line each, not one warning per action.
        let lines = rb.warnings.iter().filter(|w| w.contains(" × ")).count();
        assert!(lines <= 8, "{:?}", rb.warnings);
    }
}

#[test]
fn lost_uploads_are_back_filled_by_the_next_build() {
    let srv = CacheServer::shared();
    let keys = common::keygen();
    let proxy =
        FaultProxy::start(
            upstream_port(&srv),
            |s: &Seen| {
                if s.method == "PUT" {
                    Fault::Status(500)
                } else {
                    Fault::Pass
                }
            },
        );
    let url = via(&srv, &proxy);
    let a = TestContext::from_examples();
    let first = build(&a, Some(&url), &keys.writer());
    assert!(first.summary["executed"].as_u64().unwrap() > 5);
    assert!(first.warnings.iter().any(|w| w.contains("upload") || w.contains("PUT")), "{:?}", first.warnings);
    // The server works again: a no-op build of the same checkout uploads what was lost.
    proxy.set(|_: &Seen| Fault::Pass);
    let second = build(&a, Some(&url), &keys.writer());
    assert_eq!(second.summary["executed"], 0);
    assert!(proxy.log().iter().any(|(m, _, f)| m == "PUT" && *f == Fault::Pass), "nothing was back-filled");
    // A fresh runner now executes nothing.
    let b = build(&TestContext::from_examples(), Some(&srv.url), &keys.reader());
    assert_eq!(b.summary["executed"], 0, "{:?}", b.warnings);
    assert_eq!(digests(&b.summary), digests(&first.summary));
    // And a third no-op build of A asks the server nothing (uploads are remembered).
    let before = proxy.log().len();
    let third = build(&a, Some(&url), &keys.writer());
    assert_eq!(third.summary["executed"], 0);
    assert_eq!(proxy.log().len(), before, "{:?}", &proxy.log()[before..]);
}

#[test]
fn a_damaged_blob_with_the_right_size_is_replaced_by_the_next_writer() {
    let srv = CacheServer::shared();
    let keys = common::keygen();
    let first = build(&TestContext::from_examples(), Some(&srv.url), &keys.writer());
    // Damage the largest blob in place (same size).
    let cas = srv.data().join("cas");
    let biggest = std::fs::read_dir(&cas)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let m = bytes.len() / 2;
    bytes[m] ^= 0x01;
    std::fs::write(&biggest, &bytes).unwrap();
    // A writer with an empty cache: finds the damage, builds locally, uploads the blob again.
    let b = build(&TestContext::from_examples(), Some(&srv.url), &keys.writer());
    assert_eq!(digests(&b.summary), digests(&first.summary));
    assert!(b.warnings.iter().any(|w| w.contains("corrupt")), "{:?}", b.warnings);
    assert_server_blobs_whole(&srv);
    // Now a reader gets everything.
    let c = build(&TestContext::from_examples(), Some(&srv.url), &keys.reader());
    assert_eq!(c.summary["executed"], 0, "{:?}", c.warnings);
}
