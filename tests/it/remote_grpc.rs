//! The remote cache over REAPI v2 gRPC against a real server (BuildGrid, `common::buildgrid`):
//! two runners sharing it, blobs over ByteStream, and what goes wrong — an unreachable server, TLS
//! against a plaintext server, a wrong instance name, an HTTP cache addressed as gRPC, a poisoned or missing blob, a read-only
//! runner — each a warning and a local build with the same digests, nothing wrong stored.

use std::collections::BTreeMap;

use crate::common;
use common::buildgrid::BuildGrid;
use common::support::{self, Out, Ws};

/// `cbuild --remote-cache URL build --json ARGS` in `ws` with `env`.
fn build(ws: &Ws, url: &str, env: &[(&str, &str)], args: &[&str]) -> Out {
    let mut a = vec!["--remote-cache", url, "build", "--json"];
    a.extend_from_slice(args);
    support::out_of(ws.cmd().envs(env.iter().copied()).args(&a))
}

fn ok(o: &Out) -> BTreeMap<String, String> {
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.failures());
    o.digests()
}

fn warnings(o: &Out) -> Vec<String> {
    o.events()
        .iter()
        .filter(|e| e["type"] == "warning")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

/// The examples plus an image with a layer larger than a gRPC batch (4 MiB): it goes up by
/// ByteStream Write and comes back by ByteStream Read. `salt` keeps this test's keys its own.
fn workspace(salt: &str) -> Ws {
    let ws = support::examples();
    let mut rng = support::Rng::new(support::seed(0x5eed_9a1c) ^ salt.len() as u64);
    let mut big = rng.bytes(6 << 20);
    big.extend_from_slice(salt.as_bytes());
    ws.write("big/blob.bin", big);
    ws.write(
        "big/BUILD.star",
        "layer(name = \"l\", srcs = [\"blob.bin\"], prefix = \"/data\")\n\
         oci_image(name = \"image\", base = \"//stacks:run-image\", layers = [\":l\"], entrypoint = [\"/bin/true\"])\n",
    );
    ws
}

const TARGETS: &[&str] = &["//services/api:image", "//services/worker:image", "//tools/...", "//big:image"];

#[test]
fn two_runners_share_buildgrid_and_runner_b_executes_nothing() {
    let bg = BuildGrid::shared();
    let keys = BuildGrid::keys();
    let a = workspace("two runners");
    let want = ok(&build(&a, &bg.url, &keys.writer(), TARGETS));

    // Runner B: another checkout, an empty cache, trusting A's key: every action from BuildGrid.
    let b = support::copy_of(a.root(), None);
    let hit = build(&b, &bg.url, &keys.reader(), TARGETS);
    assert_eq!(ok(&hit), want);
    let s = hit.summary();
    assert_eq!(s["executed"], 0, "{}", hit.stdout);
    assert!(s["cached_remote"].as_u64().unwrap() > 20, "{s}");
    assert!(warnings(&hit).is_empty(), "{:?}", warnings(&hit));
    // The 6 MiB layer came back whole (ByteStream Read; verified by sha256 on the way).
    support::assert_blobs_whole(&b.path("cbuild-out/big/image/blobs/sha256"), "runner B's big image");

    // A one-file edit on B: only what depends on it runs; the result equals a clean build.
    b.write("services/api/server.sh", b.read("services/api/server.sh") + "\n# edited on runner B\n");
    let edited = build(&b, &bg.url, &keys.reader(), TARGETS);
    let got = ok(&edited);
    let executed = edited.summary()["executed"].as_u64().unwrap();
    assert!((1..=4).contains(&executed), "{}", edited.stdout);
    assert_eq!(got, support::clean_digests(b.root(), TARGETS));
    assert_ne!(got["//services/api:image"], want["//services/api:image"]);
}

#[test]
fn a_server_that_cannot_be_used_is_one_warning_and_a_local_build() {
    let bg = BuildGrid::shared();
    let ws = support::examples();
    let want = ws.ok(&["//tools:tool"]);
    let tls = bg.url.replacen("grpc://", "grpcs://", 1);
    let wrong_instance = format!("{}/no/such/instance", bg.url);
    // An HTTP cache (nginx) addressed as gRPC.
    let http = common::cache_server::CacheServer::shared();
    let not_grpc = http.url.replacen("http://", "grpc://", 1);
    for (url, expect) in [
        ("grpc://127.0.0.1:1", "Connection refused"),
        (tls.as_str(), "if the server does not, use grpc://"),
        (wrong_instance.as_str(), "check the instance name"),
        (not_grpc.as_str(), "For a Bazel HTTP cache use http://"),
    ] {
        let fresh = support::copy_of(ws.root(), None);
        let o = build(&fresh, url, &[], &["//tools:tool"]);
        assert_eq!(ok(&o), want, "{url}");
        assert_eq!(o.summary()["cached_remote"], 0);
        let w = warnings(&o);
        assert_eq!(w.len(), 1, "{url}: {w:?}");
        assert!(w[0].contains(expect) && w[0].contains("turned off for the rest of this build"), "{url}: {w:?}");
    }
    // Malformed settings are user errors (exit 2) naming the setting; none echoes a header's value.
    for (flag, env) in [(Some("0"), None), (Some("soon"), None), (None, Some("-1")), (None, Some("NaN"))] {
        let mut c = ws.cmd();
        if let Some(e) = env {
            c.env("CBUILD_REMOTE_TIMEOUT", e);
        }
        c.args(["--remote-cache", &bg.url]);
        if let Some(f) = flag {
            c.args(["--remote-timeout", f]);
        }
        let o = support::out_of(c.args(["build", "//tools:tool"]));
        assert_eq!(o.code, 2, "{flag:?} {env:?}: {}", o.stderr);
        assert!(o.stderr.contains("remote-timeout") || o.stderr.contains("CBUILD_REMOTE_TIMEOUT"), "{}", o.stderr);
    }
    let o = ws.run(&["--remote-cache", &bg.url, "--remote-header", "x-api-key", "build", "//tools:tool"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = support::out_of(ws.cmd().env("CBUILD_REMOTE_HEADERS", "x-api-key=s3cret\u{7}").args([
        "--remote-cache",
        &bg.url,
        "build",
        "//tools:tool",
    ]));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("x-api-key") && !o.stderr.contains("s3cret"), "{}", o.stderr);
}

#[test]
fn poisoned_and_missing_blobs_on_the_server_are_never_used_or_kept() {
    let bg = BuildGrid::shared();
    let keys = BuildGrid::keys();
    let a = workspace("poison");
    let want = ok(&build(&a, &bg.url, &keys.writer(), &["//big:image"]));

    // Flip a byte of the big layer on the server (same size: only hashing can tell).
    let layer = big_layer(&a);
    let file = bg.cas_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let b = support::copy_of(a.root(), None);
    let o = build(&b, &bg.url, &keys.reader(), &["//big:image"]);
    assert_eq!(ok(&o), want);
    let w = warnings(&o);
    assert!(w.iter().any(|w| w.contains(&layer) && w.contains("corrupt")), "{w:?}\n{}\n{}", o.stdout, o.stderr);
    support::assert_blobs_whole(&b.cache.join("cas"), "runner B's cache after a poisoned blob");

    // Missing on the server (evicted): a miss for that action, built locally. (BuildGrid's action
    // cache checks that an entry's outputs are still in its CAS and answers NOT_FOUND itself; a
    // server that does not is caught by the client: `remote_cache.rs` covers that over HTTP.)
    std::fs::remove_file(&file).unwrap();
    let c = support::copy_of(a.root(), None);
    let o = build(&c, &bg.url, &keys.reader(), &["//big:image"]);
    assert_eq!(ok(&o), want);
    assert!(o.summary()["executed"].as_u64().unwrap() >= 1, "{}", o.stdout);

    // A read-only runner (no signing key) does not repair it; a writer does, and then a fresh
    // reader gets everything from the server again.
    let o = build(&support::copy_of(a.root(), None), &bg.url, &[], &["//big:image"]);
    assert_eq!(ok(&o), want);
    assert!(!file.exists(), "a runner without a signing key uploaded the blob");
    let o = build(&support::copy_of(a.root(), None), &bg.url, &keys.writer(), &["//big:image"]);
    assert_eq!(ok(&o), want);
    assert!(file.exists(), "the writer's build put the blob back");
    let o = build(&support::copy_of(a.root(), None), &bg.url, &keys.reader(), &["//big:image"]);
    assert_eq!(ok(&o), want);
    assert_eq!(o.summary()["executed"], 0, "{}", o.stdout);
}

/// The sha256 hex of the largest blob of `//big:image`'s layout (its 6 MiB layer).
fn big_layer(ws: &Ws) -> String {
    let dir = ws.path("cbuild-out/big/image/blobs/sha256");
    let mut blobs: Vec<(u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.metadata().unwrap().len(), e.file_name().to_string_lossy().into_owned()))
        .collect();
    blobs.sort();
    let (size, hex) = blobs.pop().unwrap();
    assert!(size > 4 << 20, "{size}");
    hex
}

#[test]
fn a_slow_grpc_cache_is_turned_off_by_the_time_budget() {
    let bg = BuildGrid::shared();
    let keys = BuildGrid::keys();
    let a = workspace("slow");
    ok(&build(&a, &bg.url, &keys.writer(), TARGETS));
    // No remote: the local time of this build on this machine.
    let local = support::copy_of(a.root(), None);
    let t = std::time::Instant::now();
    let want = local.ok(TARGETS);
    let base = t.elapsed().as_secs_f64();
    // 1 s on every chunk of bytes, both ways: each call costs at least 2 s.
    let proxy = common::tcp_delay::DelayProxy::start(
        bg.url.trim_start_matches("grpc://").to_string(),
        std::time::Duration::from_millis(1000),
    );
    let b = support::copy_of(a.root(), None);
    let t = std::time::Instant::now();
    let o = build(&b, &format!("grpc://{}", proxy.addr), &keys.reader(), TARGETS);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(ok(&o), want);
    let w = warnings(&o);
    assert!(w.iter().any(|w| w.contains("turned off")), "{w:?}");
    // The bound the budget gives (1 s grace + 15 % of the build), with room for a loaded 2-core
    // machine, as for the HTTP cache in `remote_faults`.
    let limit = base * 1.5 + 3.0;
    eprintln!("local {base:.2} s, through a 1 s-latency gRPC cache {secs:.2} s (limit {limit:.2} s)");
    assert!(secs < limit, "{secs:.2} s against {base:.2} s without a remote");

    // `--remote-timeout 0.5`: the first call gives up after half a second.
    let c = support::copy_of(a.root(), None);
    let remote = format!("grpc://{}", proxy.addr);
    let o = support::out_of(
        c.cmd()
            .envs(keys.reader())
            .args(["--remote-cache", &remote, "--remote-timeout", "0.5", "build", "--json"])
            .args(TARGETS),
    );
    assert_eq!(ok(&o), want);
    let w = warnings(&o);
    assert!(w.iter().any(|w| w.contains("DEADLINE_EXCEEDED") && w.contains("turned off")), "{w:?}");
}
