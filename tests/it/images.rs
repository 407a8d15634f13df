//! Images built from the example workspace through the CLI, checked by independent tools
//! (validate-oci.sh: oci-image-tool, skopeo, umoci) and really run (run-oci.sh: runc; and
//! `cbuild run`: bubblewrap): a command's output comes back, a server answers on loopback.

use crate::common;
use std::collections::BTreeMap;

use common::http::wait_get;
use common::{free_port, run_harness, TestContext};

fn build_json(cx: &TestContext, pats: &[&str]) -> BTreeMap<String, (String, String)> {
    let mut args = vec!["build", "--json"];
    args.extend_from_slice(pats);
    let r = cx.run(&args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["label"].as_str().unwrap().to_string(),
                (t["image_digest"].as_str().unwrap().to_string(), t["layout"].as_str().unwrap().to_string()),
            )
        })
        .collect()
}

#[test]
fn example_images_validate_and_run() {
    let cx = TestContext::from_examples();
    let images = build_json(&cx, &["//tools/...", "//stacks:all"]);
    assert_eq!(images.len(), 5, "{images:?}");
    for (label, (digest, layout)) in &images {
        let dir = cx.root().join(layout);
        let (code, out) = run_harness("validate-oci.sh", &[dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{label} failed validation:\n{out}");
        // The layout's index names exactly the digest the summary reports.
        let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(idx["manifests"][0]["digest"].as_str().unwrap(), digest);
    }
    let tool = cx.root().join(&images["//tools:tool-versioned"].1);
    let (code, out) = run_harness("run-oci.sh", &[tool.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hello from cbuild") && out.contains("version "), "{out}");
    let (code, out) =
        run_harness("run-oci.sh", &[cx.root().join(&images["//stacks:run-image"].1).to_str().unwrap(), "id"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("uid=1000(cnb) gid=1000(cnb)"), "{out}");
}

#[test]
fn web_image_answers_on_loopback_under_runc_and_cbuild_run() {
    let cx = TestContext::from_examples();
    let images = build_json(&cx, &["//tools:web"]);
    let layout = cx.root().join(&images["//tools:web"].1);
    // runc (run-oci.sh), like docker run --network host.
    let port = free_port();
    let mut child = std::process::Command::new(common::harness("run-oci.sh"))
        .args(["--timeout", "20", "-e", &format!("PORT={port}"), layout.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = wait_get(port, "/");
    let _ = nix_term(&child);
    let _ = child.wait();
    assert!(body.contains("served by cbuild"), "{body}");
    // cbuild run (bubblewrap), same image.
    let port = free_port();
    let mut child = cx
        .cmd()
        .args(["run", "-e", &format!("PORT={port}"), "//tools:web"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = wait_get(port, "/");
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("served by cbuild"), "{body}");
}

fn nix_term(c: &std::process::Child) -> std::io::Result<()> {
    // SAFETY: kill(2) on our own child's pid.
    let r = unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn cbuild_run_passes_args_env_user_and_exit_code() {
    let cx = TestContext::from_examples();
    let r = cx.run(&["run", "//stacks:run-image", "--", "sh", "-c", "echo uid=$(id -u) home=$HOME x=$X; exit 7"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "uid=1000 home=/home/cnb x=");
    let r =
        cx.run(&["run", "-e", "X=1", "-u", "root", "//stacks:run-image", "--", "sh", "-c", "echo uid=$(id -u) x=$X"]);
    assert_eq!(r.stdout.trim(), "uid=0 x=1", "{}", r.stderr);
    let r = cx.run(&["run", "//tools:tool-layer"]);
    assert_eq!(r.code, 2, "a layer is not an image: {}", r.stderr);
}

#[test]
fn two_copies_two_caches_identical_digests() {
    let a = TestContext::from_examples();
    let b = TestContext::from_examples();
    let da = build_json(&a, &["//tools/..."]);
    let db = build_json(&b, &["//tools/..."]);
    assert_eq!(
        da.iter().map(|(k, v)| (k, &v.0)).collect::<Vec<_>>(),
        db.iter().map(|(k, v)| (k, &v.0)).collect::<Vec<_>>()
    );
}

#[test]
fn docker_archive_export_is_accepted() {
    let cx = TestContext::from_examples();
    let out = cx.root().join("tool.tar");
    let r = cx.run(&["export", "//tools:tool", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let o = std::process::Command::new("skopeo")
        .args(["inspect", &format!("docker-archive:{}", out.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
    // Where a Docker engine runs, `docker load` is the real check (none is required).
    if std::process::Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false) {
        let o = std::process::Command::new("docker").args(["load", "-i", out.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "docker load: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn oci_import_of_a_real_layout_keeps_its_digest_and_serves_as_base() {
    let cx = TestContext::new();
    let layout = cx.root().join("base/bb");
    let (code, out) = run_harness("mk-busybox-oci.sh", &[layout.to_str().unwrap(), "1"]);
    assert_eq!(code, 0, "{out}");
    let want = out.split_whitespace().nth(1).unwrap().to_string();
    cx.write("base/BUILD.star", "oci_import(name = \"bb\", layout = \"bb\", tag = \"1\")\n");
    cx.write("app/BUILD.star", "layer(name = \"l\", srcs = [\"hi.sh\"], prefix = \"/app\", mode = \"0755\")\noci_image(name = \"app\", base = \"//base:bb\", layers = [\":l\"], entrypoint = [\"/app/hi.sh\"])\n");
    cx.write("app/hi.sh", "#!/bin/sh\necho imported base ok\n");
    let images = build_json(&cx, &["//base:bb", "//app:app"]);
    assert_eq!(images["//base:bb"].0, want, "import keeps the manifest digest");
    let (code, out) = run_harness("validate-oci.sh", &[cx.root().join(&images["//app:app"].1).to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let r = cx.run(&["run", "//app:app"]);
    assert_eq!(r.stdout.trim(), "imported base ok", "{}", r.stderr);
    // A tampered blob in the imported layout is refused, naming it.
    let blobs = layout.join("blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let r = cx.run(&["build", "//base:bb"]);
    assert_eq!(r.code, 2, "a damaged layout in the workspace is the workspace's to fix: {}", r.stderr);
    assert!(r.stderr.contains(victim.file_name().unwrap().to_str().unwrap()), "{}", r.stderr);
}
