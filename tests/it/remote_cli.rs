//! Remote cache through the CLI against a real server (nginx WebDAV via http-cache.sh, a path
//! prefix of the shared one unless a test stops it): runner B
//! with an empty cache and another checkout path executes nothing runner A did; a corrupt blob on
//! the server is detected and rebuilt; a dead server costs one warning and a local build. Runner A
//! signs with a key pair from `cbuild cache keygen`; runner B trusts its public key.

use crate::common;
use common::cache_server::CacheServer;
use common::TestContext;

fn build(cx: &TestContext, url: &str, extra: &[&str]) -> (serde_json::Value, Vec<serde_json::Value>, String) {
    build_env(cx, url, &[], extra)
}

fn build_env(
    cx: &TestContext,
    url: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (serde_json::Value, Vec<serde_json::Value>, String) {
    let mut args = vec!["--remote-cache", url, "build", "--json"];
    args.extend_from_slice(extra);
    let out = cx.cmd().envs(env.iter().copied()).args(&args).output().unwrap();
    let r = common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: cx.filter(&String::from_utf8_lossy(&out.stderr)),
    };
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ev: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (ev.last().unwrap().clone(), ev, r.stderr)
}

fn digests(s: &serde_json::Value) -> Vec<(String, String)> {
    s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["label"].as_str().unwrap().into(), t["image_digest"].as_str().unwrap().into()))
        .collect()
}

const PATTERNS: &[&str] = &["//services/api:image", "//services/worker:image", "//tools/..."];

#[test]
fn runner_b_rebuilds_nothing_runner_a_built() {
    let srv = CacheServer::shared();
    let keys = common::keygen();
    let a = TestContext::from_examples();
    let b = TestContext::from_examples(); // another checkout path, another empty cache
    let (sa, _, _) = build_env(&a, &srv.url, &keys.writer(), PATTERNS);
    assert!(sa["executed"].as_u64().unwrap() > 10);
    let (sb, evb, errb) = build_env(&b, &srv.url, &keys.reader(), PATTERNS);
    assert_eq!(sb["executed"], 0, "{sb}");
    // B trusts A's key, so nothing is unauthenticated; without a key of its own it only reads.
    assert!(!evb.iter().any(|e| e["type"] == "warning"), "{evb:?}");
    assert!(errb.contains("note: remote cache") && errb.contains("read-only"), "{errb}");
    assert_eq!(sb["cached_remote"], sa["executed"]);
    assert!(!evb.iter().any(|e| e["type"] == "finished" && e["outcome"] == "executed"));
    assert_eq!(digests(&sa), digests(&sb));
    let (code, out) =
        common::run_harness("validate-oci.sh", &[b.root().join("cbuild-out/services/api/image").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // Read-only mode (pull requests) reads but never writes.
    let c = TestContext::from_examples();
    c.write("tools/hello.sh", "#!/bin/sh\necho changed\n");
    let before = srv.access_log().matches("PUT").count();
    let r = c.run(&["--remote-cache", &srv.url, "--remote-cache-mode", "read-only", "build", "//tools:tool"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = srv.access_log().matches("PUT").count();
    assert_eq!(before, after, "read-only mode wrote to the server");
}

#[test]
fn a_corrupt_blob_on_the_server_is_detected_and_the_action_rebuilt() {
    let srv = CacheServer::shared();
    let keys = common::keygen();
    let a = TestContext::from_examples();
    let (sa, _, _) = build_env(&a, &srv.url, &keys.writer(), &["//tools:tool"]);
    // Corrupt every CAS blob larger than 1 KiB on the server (the busybox layer among them).
    let cas = srv.data().join("cas");
    let mut n = 0;
    for e in std::fs::read_dir(&cas).unwrap() {
        let p = e.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        if bytes.len() > 1024 {
            let m = bytes.len() / 2;
            bytes[m] ^= 0x55;
            std::fs::write(&p, bytes).unwrap();
            n += 1;
        }
    }
    assert!(n > 0);
    let b = TestContext::from_examples();
    let (sb, ev, _) = build_env(&b, &srv.url, &keys.reader(), &["//tools:tool"]);
    assert!(sb["executed"].as_u64().unwrap() >= 1, "poisoned entries are ignored and rebuilt: {sb}");
    let warnings: Vec<&str> =
        ev.iter().filter(|e| e["type"] == "warning").filter_map(|e| e["message"].as_str()).collect();
    assert!(
        warnings.iter().any(|w| w.contains("remote cache") && w.contains("sha256:")),
        "the corruption is reported, naming the blob: {warnings:?}"
    );
    assert_eq!(digests(&sa), digests(&sb), "the result is still correct");
}

#[test]
fn a_dead_server_costs_one_warning_and_a_local_build() {
    let srv = CacheServer::start(None);
    let url = srv.url.clone();
    srv.stop();
    let cx = TestContext::from_examples();
    let t = std::time::Instant::now();
    let (s, ev, _) = build(&cx, &url, &["//tools/..."]);
    assert!(s["executed"].as_u64().unwrap() > 0);
    let warnings: Vec<&str> =
        ev.iter().filter(|e| e["type"] == "warning").filter_map(|e| e["message"].as_str()).collect();
    assert_eq!(warnings.iter().filter(|w| w.contains("remote cache")).count(), 1, "{warnings:?}");
    // Without --json the same single warning is on stderr.
    let cx2 = TestContext::from_examples();
    let r = cx2.run(&["--remote-cache", &url, "build", "//tools:tool"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.stderr.matches("warning: remote cache").count(), 1, "{}", r.stderr);
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn remote_cache_credentials_are_never_printed() {
    let srv = CacheServer::shared();
    let cx = TestContext::from_examples();
    let r = cx
        .cmd()
        .env("CBUILD_REMOTE_CACHE_TOKEN", "planted-secret-token-42")
        .args(["--remote-cache", &srv.url, "build", "--json", "//tools:tool"])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{all}");
    assert!(!all.contains("planted-secret-token-42"));
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", "planted-secret-token-42"])
        .arg(cx.cache.path())
        .arg(cx.root().join("cbuild-out"))
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "secret found in {}", String::from_utf8_lossy(&grep.stdout));
}
