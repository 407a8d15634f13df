//! The example Debian stack (pinned locks) through the CLI: the Python service builds, validates
//! and answers HTTP; the stack is reproducible from two empty caches; a lock change moves every app
//! image onto the new run image without running a buildpack. Needs the configured Debian mirror
//! (.deb downloads are shared between tests through CBUILD_DEBIAN_CACHE).

use crate::common;
use common::TestContext;

fn debs() -> std::path::PathBuf {
    let d = std::env::temp_dir().join("cbuild-test-debs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn build(cx: &TestContext, pats: &[&str]) -> (serde_json::Value, Vec<serde_json::Value>) {
    let out = cx.cmd().env("CBUILD_DEBIAN_CACHE", debs()).arg("build").arg("--json").args(pats).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ev: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (ev.last().unwrap().clone(), ev)
}

fn digest_of(s: &serde_json::Value, label: &str) -> String {
    s["targets"].as_array().unwrap().iter().find(|t| t["label"] == label).unwrap()["image_digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn python_service_on_the_debian_stack() {
    let a = TestContext::from_examples();
    let (sa, _) = build(&a, &["//services/hello-py:image", "//stacks/debian:run"]);
    for l in ["cbuild-out/services/hello-py/image", "cbuild-out/stacks/debian/run"] {
        let (code, out) = common::run_harness("validate-oci.sh", &[a.root().join(l).to_str().unwrap()]);
        assert_eq!(code, 0, "{l}: {out}");
    }
    let port = common::free_port();
    let mut child = a
        .cmd()
        .env("CBUILD_DEBIAN_CACHE", debs())
        .args(["run", "-e", &format!("PORT={port}"), "//services/hello-py:image"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = common::http::wait_get(port, "/");
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("\"service\": \"hello-py\""), "{body}");
    // Two empty caches, another path: identical stack and app digests.
    let b = TestContext::from_examples();
    let (sb, _) = build(&b, &["//services/hello-py:image", "//stacks/debian:run"]);
    assert_eq!(digest_of(&sa, "//stacks/debian:run"), digest_of(&sb, "//stacks/debian:run"));
    assert_eq!(digest_of(&sa, "//services/hello-py:image"), digest_of(&sb, "//services/hello-py:image"));
}

#[test]
fn a_lock_change_rebases_every_app_image_without_running_a_buildpack() {
    let cx = TestContext::from_examples();
    let (before, _) = build(&cx, &["//services/hello-py:image"]);
    // A package change in the run image: add one package and re-lock (the platform team's change).
    let st = std::fs::read_to_string(cx.root().join("stacks/debian/BUILD.star")).unwrap();
    cx.write(
        "stacks/debian/BUILD.star",
        &st.replacen("packages = COMMON + [\"python3\"],", "packages = COMMON + [\"python3\", \"sed\"],", 1),
    );
    let r = cx.cmd().env("CBUILD_DEBIAN_CACHE", debs()).args(["lock", "//stacks/debian:run"]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("+ sed"), "{}", String::from_utf8_lossy(&r.stderr));
    let (after, ev) = build(&cx, &["//services/hello-py:image"]);
    let ran: Vec<String> = ev
        .iter()
        .filter(|e| e["type"] == "finished" && e["outcome"] == "executed")
        .map(|e| format!("{} {}", e["label"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(ran, vec!["//stacks/debian:run debian", "//services/hello-py:image export"], "no detect or build");
    assert_ne!(digest_of(&before, "//services/hello-py:image"), digest_of(&after, "//services/hello-py:image"));
    let clean = TestContext::new();
    common::copy_tree(cx.root(), clean.root());
    let _ = std::fs::remove_dir_all(clean.root().join("cbuild-out"));
    let (c, _) = build(&clean, &["//services/hello-py:image"]);
    assert_eq!(
        digest_of(&c, "//services/hello-py:image"),
        digest_of(&after, "//services/hello-py:image"),
        "equals a clean build on the new run image"
    );
}

#[test]
fn a_missing_lock_is_a_clear_error() {
    let cx = TestContext::from_examples();
    std::fs::remove_file(cx.root().join("stacks/debian/run.lock")).unwrap();
    let r = cx.run(&["build", "//stacks/debian:run"]);
    assert_eq!(r.code, 2, "a missing lock is an error of the workspace (exit 2)");
    assert!(
        r.stderr.contains("stacks/debian/run.lock") && r.stderr.contains("cbuild lock //stacks/debian:run"),
        "{}",
        r.stderr
    );
}
