//! Multi-platform images (`platforms`, `--platform`) through the CLI on `examples/multiarch`: a
//! Debian stack locked for amd64 and arm64 and a `cnb_image` built for both into one OCI image
//! index, checked by independent validators, run under user-mode emulation, pushed to a real
//! registry; a no-op and a one-file edit; bad platforms, bases and buildpacks. Needs the Debian
//! mirror of the machine's apt sources and qemu-user-static (scripts/install-deps.sh).

use std::path::Path;

use crate::common::{self, registry::Registry, TestContext};

fn debs() -> std::path::PathBuf {
    let d = std::env::temp_dir().join("cbuild-test-debs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of examples/multiarch (a workspace of its own).
fn workspace() -> TestContext {
    let cx = TestContext::new();
    common::copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multiarch"), cx.root());
    cx
}

/// Whether linux/arm64 programs run here (the emulator is registered with the fix-binary flag).
fn can_emulate_arm64() -> bool {
    if std::env::consts::ARCH == "aarch64" {
        return true;
    }
    std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")
        .is_ok_and(|t| t.starts_with("enabled") && t.lines().any(|l| l.starts_with("flags:") && l.contains('F')))
}

fn run(cx: &TestContext, args: &[&str]) -> common::Run {
    let out = cx.cmd().env("CBUILD_DEBIAN_CACHE", debs()).args(args).output().unwrap();
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `(label, mnemonic)` of every executed action of a `--json` build.
fn executed(stdout: &str) -> Vec<String> {
    let mut v: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "finished" && e["outcome"] == "executed")
        .map(|e| format!("{} {}", e["label"].as_str().unwrap_or(""), e["action"].as_str().unwrap_or("")))
        .collect();
    v.sort();
    v
}

fn summary(stdout: &str) -> serde_json::Value {
    stdout.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).unwrap()
}

#[test]
fn an_app_for_amd64_and_arm64_is_one_index_that_runs_validates_and_pushes() {
    if !can_emulate_arm64() {
        return common::skip_unless_ci("no qemu-aarch64 binfmt handler with the F flag (scripts/install-deps.sh)");
    }
    let cx = workspace();
    let r = run(&cx, &["build", "--json", "//:app"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Each platform its own detect, build and export; both Debian images per architecture (the
    // arm64 ones unpacked without emulation); one index.
    let ran = executed(&r.stdout);
    for (what, n) in [("//:app detect", 2), ("//:app build", 2), ("//:app export", 2), ("//:app index", 1)] {
        assert_eq!(ran.iter().filter(|x| *x == what).count(), n, "{what}: {ran:?}");
    }
    assert_eq!(ran.iter().filter(|x| x.ends_with(" debian")).count(), 4, "{ran:?}");
    // The arm64 buildpack ran on an aarch64 machine (emulated), the amd64 one natively.
    let logs = format!("{}{}", r.stdout, r.stderr);
    assert!(logs.contains("building for linux/arm64 on aarch64"), "{logs}");
    assert!(logs.contains("building for linux/amd64 on x86_64"), "{logs}");
    let digest = summary(&r.stdout)["targets"][0]["image_digest"].as_str().unwrap().to_string();

    // The layout: an index whose manifests carry their platforms, accepted by independent tools.
    let layout = cx.root().join("cbuild-out/app");
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}", layout.display())])
        .output()
        .expect("skopeo");
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let plats: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap())
        })
        .collect();
    assert_eq!(plats, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        cbuild::model::digest::Digest::of_bytes(&raw.stdout).to_string(),
        digest,
        "the index is the target's digest"
    );
    let (code, out) = common::run_harness("validate-oci.sh", &["--no-unpack", layout.to_str().unwrap()]);
    // umoci cannot pick a platform from a nested index ("tag is ambiguous"): its lines aside,
    // every check (blobs, diff_ids, oci-image-tool, skopeo) must pass for both platforms.
    let fails: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("FAIL") && !l.contains("umoci")).collect();
    assert!(fails.is_empty() && out.contains("latest>linux/arm64"), "exit {code}:\n{out}");
    assert!(out.contains("ok: oci-image-tool validate"), "{out}");

    // Run each platform's image; arm64 under emulation.
    let arm = run(&cx, &["run", "--platform", "linux/arm64", "//:app"]);
    assert_eq!(arm.code, 0, "{}", arm.stderr);
    assert!(arm.stdout.contains("hello from aarch64 (built on aarch64)"), "{}", arm.stdout);
    let host = run(&cx, &["run", "//:app"]);
    assert!(host.stdout.contains("hello from x86_64 (built on x86_64)"), "{}\n{}", host.stdout, host.stderr);
    let bad = run(&cx, &["run", "--platform", "linux/s390x", "//:app"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("linux/s390x"), "{}", bad.stderr);

    // A no-op executes nothing; one app file re-runs the app's actions for each platform only.
    let again = run(&cx, &["build", "--json", "//:app"]);
    assert_eq!(executed(&again.stdout), Vec::<String>::new());
    cx.write("hello.sh", "#!/bin/sh\necho \"hi from $(uname -m)\"\n");
    let edit = run(&cx, &["build", "--json", "//:app"]);
    assert_eq!(edit.code, 0, "{}", edit.stderr);
    assert_eq!(
        executed(&edit.stdout),
        [
            "//:app build",
            "//:app build",
            "//:app detect",
            "//:app detect",
            "//:app export",
            "//:app export",
            "//:app index"
        ]
    );

    // Push: every platform's manifest by digest, then the index; the registry's digest is ours.
    let reg = Registry::shared();
    let tag = reg.tag("multiarch/app:1");
    let p = run(&cx, &["push", "--json", "//:app", "--tag", &tag]);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    let local = summary(&run(&cx, &["build", "--json", "//:app"]).stdout)["targets"][0]["image_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let pushed = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{tag}")])
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    assert_eq!(cbuild::model::digest::Digest::of_bytes(&pushed.stdout).to_string(), local);
    let arm_remote = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--override-arch", "arm64", &format!("docker://{tag}")])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&arm_remote.stdout).unwrap();
    assert_eq!(v["Architecture"], "arm64", "{v}");

    // Registry-mode rebase of the index onto a new run image (another label, so another config
    // and digest per platform): each platform onto the run image's image of that platform.
    let run1 = reg.tag("multiarch/run:1");
    assert_eq!(run(&cx, &["push", "//:run", "--tag", &run1]).code, 0);
    let build_star = std::fs::read_to_string(cx.root().join("BUILD.star")).unwrap();
    cx.write(
        "BUILD.star",
        &build_star.replacen(
            "    lock = \"run.lock\",\n",
            "    lock = \"run.lock\",\n    labels = {\"rev\": \"2\"},\n",
            1,
        ),
    );
    let run2 = reg.tag("multiarch/run:2");
    let p2 = run(&cx, &["push", "//:run", "--tag", &run2]);
    assert_eq!(p2.code, 0, "{}", p2.stderr);
    let app2 = reg.tag("multiarch/app:2");
    let rb = run(&cx, &["rebase", &tag, "--run-image", &run2, "--tag", &app2, "--force"]);
    assert_eq!(rb.code, 0, "{}\n{}", rb.stdout, rb.stderr);
    assert!(rb.stdout.contains("rebased linux/amd64, linux/arm64"), "{}", rb.stdout);
    for arch in ["amd64", "arm64"] {
        let inspect = |r: &str, config: bool| -> serde_json::Value {
            let mut c = std::process::Command::new("skopeo");
            c.args(["inspect", "--tls-verify=false", "--override-arch", arch]);
            if config {
                c.arg("--config");
            }
            let o = c.arg(format!("docker://{r}")).output().unwrap();
            assert!(o.status.success(), "{r}: {}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice(&o.stdout).unwrap()
        };
        let (new_app, new_run) = (inspect(&app2, true), inspect(&run2, true));
        assert_eq!(new_app["architecture"], arch);
        // The new run image's layers for this platform at the bottom, and its digest recorded.
        let n = new_run["rootfs"]["diff_ids"].as_array().unwrap().len();
        assert_eq!(
            new_app["rootfs"]["diff_ids"].as_array().unwrap()[..n],
            new_run["rootfs"]["diff_ids"].as_array().unwrap()[..]
        );
        let top = new_run["rootfs"]["diff_ids"][n - 1].as_str().unwrap();
        let md = new_app["config"]["Labels"]["io.buildpacks.lifecycle.metadata"].as_str().unwrap();
        assert!(md.contains(&format!("\"topLayer\":\"{top}\"")), "{arch}: {md} does not record top layer {top}");
    }
}

#[test]
fn platform_errors_name_target_and_platform() {
    let cx = workspace();
    // A platform that does not parse: a usage error.
    let r = run(&cx, &["build", "--platform", "linux/sparc", "//:app"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("linux/sparc") && r.stderr.contains("unknown architecture"), "{}", r.stderr);
    // `--platform` outside the target's own platforms.
    let r = run(&cx, &["build", "--platform", "linux/ppc64le", "//:app"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`//:app` is not built for linux/ppc64le"), "{}", r.stderr);
    // A base that lacks a platform the app asks for.
    let build = std::fs::read_to_string(cx.root().join("BUILD.star")).unwrap();
    cx.write(
        "BUILD.star",
        &build.replacen(
            "    platforms = PLATFORMS,\n    stack_id",
            "    platforms = [\"linux/amd64\"],\n    stack_id",
            1,
        ),
    );
    let r = run(&cx, &["build", "//:app"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`//:run` has no image for platform linux/arm64 (its platforms: linux/amd64)"),
        "{}",
        r.stderr
    );
    assert!(!cx.root().join("cbuild-out/app").exists(), "nothing is written");
    // A lock without the architecture's section.
    cx.write(
        "BUILD.star",
        &build
            .replace("PLATFORMS = [\"linux/amd64\", \"linux/arm64\"]", "PLATFORMS = [\"linux/amd64\", \"linux/386\"]"),
    );
    let r = run(&cx, &["build", "//:run"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("has no packages for architecture `i386`")
            && r.stderr.contains("cbuild lock --platform linux/i386 //:run"),
        "{}",
        r.stderr
    );
    assert!(!cx.root().join("cbuild-out/run").exists(), "nothing is written");
}

#[test]
fn a_buildpack_without_a_target_for_a_platform_is_a_located_configuration_error() {
    if !can_emulate_arm64() {
        return common::skip_unless_ci("no qemu-aarch64 binfmt handler with the F flag (scripts/install-deps.sh)");
    }
    let cx = workspace();
    let toml = std::fs::read_to_string(cx.root().join("hello/buildpack.toml")).unwrap();
    cx.write("hello/buildpack.toml", &toml.replace("[[targets]]\nos = \"linux\"\narch = \"arm64\"\n", ""));
    let r = run(&cx, &["build", "//:app"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`examples/hello-arch@0.1.0` supports no target matching the build image (linux/arm64)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("//:app"), "{}", r.stderr);
    // The amd64 platform alone still builds.
    let r = run(&cx, &["build", "--platform", "linux/amd64", "//:app"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let raw = std::fs::read_to_string(cx.root().join("cbuild-out/app/index.json")).unwrap();
    assert!(raw.contains("application/vnd.oci.image.manifest.v1+json"), "one platform: a single manifest: {raw}");
}

#[test]
fn a_pulled_multi_platform_base_gives_each_platform_its_own_base() {
    let cx = workspace();
    let reg = Registry::shared();
    let base = reg.tag("multiarch/base:1");
    let p = run(&cx, &["push", "--json", "//:run", "--tag", &base]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    let index = summary(&p.stdout)["targets"][0]["image_digest"].as_str().unwrap().to_string();
    let other = TestContext::new();
    other.write(
        "BUILD.star",
        &format!(
            r#"
oci_pull(name = "base", image = "{base}", digest = "{index}")
layer(name = "files", srcs = ["hello.txt"], prefix = "/srv")
oci_image(name = "img", base = ":base", layers = [":files"], platforms = ["linux/amd64", "linux/arm64"])
oci_image(name = "s390x", base = ":base", platforms = ["linux/s390x"])
"#
        ),
    );
    other.write("hello.txt", "hi\n");
    let r = other.run(&["build", "//:img"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let layout = other.root().join("cbuild-out/img");
    let (code, out) = common::run_harness("validate-oci.sh", &["--no-unpack", layout.to_str().unwrap()]);
    let fails: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("FAIL") && !l.contains("umoci")).collect();
    assert!(fails.is_empty(), "exit {code}:\n{out}");
    for arch in ["amd64", "arm64"] {
        let cfg = |r: &str| -> serde_json::Value {
            let o = std::process::Command::new("skopeo")
                .args(["inspect", "--config", "--override-arch", arch, "--tls-verify=false", r])
                .output()
                .unwrap();
            assert!(o.status.success(), "{r}: {}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice(&o.stdout).unwrap()
        };
        let (mine, theirs) = (cfg(&format!("oci:{}", layout.display())), cfg(&format!("docker://{base}")));
        assert_eq!(mine["architecture"], arch);
        assert_eq!(mine["rootfs"]["diff_ids"][0], theirs["rootfs"]["diff_ids"][0], "{arch}: the base for {arch}");
        assert_eq!(mine["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    }
    // A platform the registry's index lacks: a located error naming it and what there is.
    let r = other.run(&["build", "//:s390x"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("linux/s390x") && r.stderr.contains("linux/arm64"), "{}", r.stderr);
    assert!(!other.root().join("cbuild-out/s390x").exists());
}

#[test]
fn the_debian_example_stack_builds_hello_py_for_two_platforms() {
    if !can_emulate_arm64() {
        return common::skip_unless_ci("no qemu-aarch64 binfmt handler with the F flag (scripts/install-deps.sh)");
    }
    let cx = TestContext::from_examples();
    // The plain build: one manifest, the host's.
    let one = run(&cx, &["build", "--json", "//services/hello-py:image"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    let single = summary(&one.stdout)["targets"][0]["image_digest"].as_str().unwrap().to_string();
    // `--platform` on a target without `platforms`: the stack's Debian images from their locks'
    // amd64 and arm64 sections, python3 under emulation for arm64, one index.
    let both = run(&cx, &["build", "--json", "--platform", "linux/amd64,linux/arm64", "//services/hello-py:image"]);
    assert_eq!(both.code, 0, "{}\n{}", both.stdout, both.stderr);
    let raw = std::fs::read(cx.root().join("cbuild-out/services/hello-py/image/index.json")).unwrap();
    let top: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(top["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json");
    let idx_digest = top["manifests"][0]["digest"].as_str().unwrap();
    let idx_file = cx.root().join("cbuild-out/services/hello-py/image/blobs/sha256").join(&idx_digest[7..]);
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(idx_file).unwrap()).unwrap();
    // The amd64 image of the index is the very image of the plain build (same actions, same keys).
    assert_eq!(idx["manifests"][0]["platform"]["architecture"], "amd64");
    assert_eq!(idx["manifests"][0]["digest"], single.as_str());
    assert_eq!(idx["manifests"][1]["platform"]["architecture"], "arm64");
    let m = run(
        &cx,
        &["run", "--platform", "linux/arm64", "--entrypoint", "", "//services/hello-py:image", "--", "uname", "-m"],
    );
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert_eq!(m.stdout.trim(), "aarch64");
    let py = run(
        &cx,
        &[
            "run",
            "--platform",
            "linux/arm64",
            "--entrypoint",
            "",
            "//services/hello-py:image",
            "--",
            "python3",
            "-c",
            "import platform; print(platform.machine())",
        ],
    );
    assert_eq!(py.stdout.trim(), "aarch64", "{}", py.stderr);
    // Both platforms again: nothing runs.
    let again = run(&cx, &["build", "--json", "--platform", "linux/amd64,linux/arm64", "//services/hello-py:image"]);
    assert_eq!(executed(&again.stdout), Vec::<String>::new());
}
