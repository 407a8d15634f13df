//! Registry integration through the CLI against a real registry (distribution 2.8 via
//! registry.sh): push, re-push, cross-repository mount, basic auth, and `oci_pull` bases that
//! stay shallow. Tests without auth use namespaces of the registry the test binary shares.

use crate::common;
use common::registry::{skopeo_digest, Registry};
use common::TestContext;
use std::path::{Path, PathBuf};

fn layout_digest(cx: &TestContext, layout: &str) -> String {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cx.root().join(layout).join("index.json")).unwrap()).unwrap();
    idx["manifests"][0]["digest"].as_str().unwrap().to_string()
}

fn pushed_lines(stderr: &str) -> Vec<String> {
    stderr.lines().filter(|l| l.starts_with("pushed ")).map(String::from).collect()
}

#[test]
fn push_repush_and_mount() {
    let reg = Registry::shared();
    let cx = TestContext::from_examples();
    let r = cx.run(&["build", "//stacks:run-image", "//tools:tool"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let base = reg.tag("base/run:1");
    let r = cx.run(&["push", "//stacks:run-image", "--tag", &base]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(pushed_lines(&r.stderr)[0].contains("3 uploaded"), "{}", r.stderr);
    assert_eq!(skopeo_digest(&base, None), layout_digest(&cx, "cbuild-out/stacks/run-image"));
    let r = cx.run(&["push", "//stacks:run-image", "--tag", &base]);
    assert!(pushed_lines(&r.stderr)[0].contains(": 0 uploaded (0 bytes), 0 mounted, 3 already there"), "{}", r.stderr);
    // Another repository: the shared base layers are mounted, not uploaded.
    let r = cx.run(&["push", "//tools:tool", "--tag", &reg.tag("apps/tool:1")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(pushed_lines(&r.stderr)[0].contains("2 mounted"), "{}", r.stderr);
    assert!(reg.log().contains("mount="), "no mount in the registry log");
    assert_eq!(skopeo_digest(&reg.tag("apps/tool:1"), None), layout_digest(&cx, "cbuild-out/tools/tool"));
}

#[test]
fn basic_auth_needs_credentials_from_docker_config() {
    let reg = Registry::start(Some("alice:s3cret-pw"));
    let cx = TestContext::from_examples();
    assert_eq!(cx.run(&["build", "//tools:tool"]).code, 0);
    let tag = reg.tag("team/tool:1");
    let cfg = tempfile::tempdir().unwrap();
    let r = cx.cmd().env("DOCKER_CONFIG", cfg.path()).args(["push", "//tools:tool", "--tag", &tag]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "credentials are the user's to fix: {err}");
    assert!(err.contains(&reg.host) && err.contains("team/tool"), "names registry and repository: {err}");
    assert!(err.to_lowercase().contains("docker login") || err.contains("config.json"), "hints at credentials: {err}");
    let auth = common::b64("alice:s3cret-pw");
    std::fs::write(
        cfg.path().join("config.json"),
        format!("{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}", reg.host),
    )
    .unwrap();
    let r = cx
        .cmd()
        .env("DOCKER_CONFIG", cfg.path())
        .args(["push", "//tools:tool", "--tag", &tag, "--json"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "{out}");
    assert!(!out.contains("s3cret-pw") && !out.contains(&auth), "credentials never printed");
    assert_eq!(skopeo_digest(&tag, Some("alice:s3cret-pw")), layout_digest(&cx, "cbuild-out/tools/tool"));
}

fn write_pull_workspace(cx: &TestContext, image: &str, digest: Option<&str>) {
    let pin = digest.map(|d| format!(", digest = \"{d}\"")).unwrap_or_default();
    cx.write("base/BUILD.star", &format!("oci_pull(name = \"run\", image = \"{image}\"{pin})\n"));
    cx.write(
        "app/BUILD.star",
        "layer(name = \"l\", srcs = [\"hi.sh\"], prefix = \"/app\", mode = \"0755\")\noci_image(name = \"img\", base = \"//base:run\", layers = [\":l\"], entrypoint = [\"/app/hi.sh\"])\n",
    );
    cx.write("app/hi.sh", "#!/bin/sh\necho pulled base ok\n");
}

fn blob_gets(log: &str, digest: &str) -> usize {
    log.lines().filter(|l| l.contains("GET") && l.contains(&format!("/blobs/{digest}"))).count()
}

#[test]
fn oci_pull_is_shallow_and_serves_as_base_and_run_image() {
    let reg = Registry::shared();
    let ex = TestContext::from_examples();
    assert_eq!(ex.run(&["build", "//stacks:run-image"]).code, 0);
    let base = reg.tag("base/run:1");
    let r = ex.run(&["push", "//stacks:run-image", "--tag", &base]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let digest = skopeo_digest(&base, None);
    let base_layers: Vec<String> = {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                ex.root().join("cbuild-out/stacks/run-image/blobs/sha256").join(digest.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
        .unwrap();
        m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
    };

    // Push an app built on the pulled base to the same registry: the base layers are never downloaded.
    let cx = TestContext::new();
    write_pull_workspace(&cx, &base, Some(&digest));
    let r = cx.run(&["push", "//app:img", "--tag", &reg.tag("apps/pulled:1")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = reg.log();
    for d in &base_layers {
        assert_eq!(blob_gets(&log, d), 0, "base layer {d} was downloaded for a registry-to-registry push");
    }
    assert!(pushed_lines(&r.stderr)[0].contains("mounted"), "{}", r.stderr);
    // So the push writes no layout for it and prints none (`Layouts::LocalOnly` in build.rs).
    assert!(r.stderr.contains("note: no layout written for `//app:img`"), "{}", r.stderr);
    assert!(
        r.stdout.trim().ends_with(" -") && !cx.root().join("cbuild-out/app/img/index.json").exists(),
        "{}",
        r.stdout
    );
    // Building a local layout needs the bytes: now they are fetched (and verified), the image runs.
    let r = cx.run(&["build", "--json", "//app:img"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (code, out) = common::run_harness("validate-oci.sh", &[cx.root().join("cbuild-out/app/img").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let r = cx.run(&["run", "//app:img"]);
    assert_eq!(r.stdout.trim(), "pulled base ok", "{}", r.stderr);
    // A second build pulls nothing: the pinned pull is cached.
    let r = cx.run(&["build", "--json", "//app:img"]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["executed"], 0, "{}", r.stdout);

    // Unpinned: works, warns with the resolved digest.
    let cx2 = TestContext::new();
    write_pull_workspace(&cx2, &base, None);
    let r = cx2.run(&["build", "//app:img"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("not pinned") && r.stderr.contains(&digest), "{}", r.stderr);
    // It resolves on every build but is never stored: no row piles up per build.
    let r = cx2.run(&["build", "//app:img"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let db = rusqlite::Connection::open(cx2.cache.path().join("cache.sqlite")).unwrap();
    let rows: i64 = db.query_row("SELECT COUNT(*) FROM actions WHERE kind = 'pull'", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "unpinned pull results were stored");

    // A wrong pin is refused, naming both digests.
    let cx3 = TestContext::new();
    let wrong = format!("sha256:{}", "0".repeat(64));
    write_pull_workspace(&cx3, &base, Some(&wrong));
    let r = cx3.run(&["build", "//app:img"]);
    assert_eq!(r.code, 2, "a moved pin is the workspace's to update: {}", r.stderr);

    // The pulled image as a stack's run image: an example service builds and runs on it.
    let st = std::fs::read_to_string(ex.root().join("stacks/BUILD.star")).unwrap();
    ex.write(
        "stacks/BUILD.star",
        &(st.replace("run_image = \":run-image\"", "run_image = \":pulled-run\"")
            + &format!("\noci_pull(name = \"pulled-run\", image = \"{base}\", digest = \"{digest}\")\n")),
    );
    let r = ex.run(&["build", "//services/worker:image"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = ex.run(&["run", "--entrypoint", "/cnb/process/once", "//services/worker:image"]);
    assert_eq!(r.stdout.trim(), "worker ran once", "{}", r.stderr);
    let _ = (PathBuf::new(), Path::new(""));
}
