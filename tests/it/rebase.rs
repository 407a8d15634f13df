//! Rebase: in the workspace (`cbuild rebase //...` after a run image change: only exports run,
//! results equal clean builds) and on a real registry (manifest-only: no app layer is downloaded,
//! bytes do not grow with the app layer), with every refusal case and `--force`. Registry tests use
//! namespaces of the registry the test binary shares.

use crate::common;
use common::registry::Registry;
use common::TestContext;

fn ok(cx: &TestContext, args: &[&str]) -> common::Run {
    let r = cx.run(args);
    assert_eq!(r.code, 0, "{args:?}\n{}\n{}", r.stdout, r.stderr);
    r
}

/// A workspace whose stack's run image is pulled from the registry (`base/run:1`), an app with a
/// big file, pushed as `apps/app:1`; `base/run:2` is a patched run image.
fn setup(reg: &Registry, big: usize, labels: &str) -> (TestContext, String) {
    let ex = TestContext::from_examples();
    ok(&ex, &["push", "//stacks:run-image", "--tag", &reg.tag("base/run:1")]);
    // A patched run image (one more layer) and an arm64-labelled one, pushed too.
    ex.write("stacks/patch.txt", "security fix\n");
    let st = std::fs::read_to_string(ex.root().join("stacks/BUILD.star")).unwrap();
    ex.write(
        "stacks/BUILD.star",
        &(st + "\nlayer(name = \"patch\", srcs = [\"patch.txt\"], prefix = \"/etc/patches\")\noci_image(name = \"run-2\", base = \":run-image\", layers = [\":patch\"])\noci_image(name = \"run-arm\", layers = [\":patch\"], architecture = \"arm64\")\noci_image(name = \"run-other\", base = \":run-image\", labels = {\"io.buildpacks.base.distro.name\": \"alpine\"})\n"),
    );
    ok(&ex, &["push", "//stacks:run-2", "--tag", &reg.tag("base/run:2")]);
    ok(&ex, &["push", "//stacks:run-2", "--tag", &reg.tag("elsewhere/run:2")]);
    ok(&ex, &["push", "//stacks:run-arm", "--tag", &reg.tag("base/run:arm")]);
    ok(&ex, &["push", "//stacks:run-other", "--tag", &reg.tag("base/run:other")]);
    // The app workspace: the stack's run image comes from the registry.
    let st = std::fs::read_to_string(ex.root().join("stacks/BUILD.star")).unwrap();
    ex.write(
        "stacks/BUILD.star",
        &(st.replace("run_image = \":run-image\"", "run_image = \":pulled\"")
            + &format!("\noci_pull(name = \"pulled\", image = \"{}\")\n", reg.tag("base/run:1"))),
    );
    ex.write("services/api/public/big.bin", &"x".repeat(big));
    ex.write(
        "services/api/BUILD.star",
        &format!("cnb_image(name = \"image\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//builders:default\", labels = {labels})\n"),
    );
    let app = reg.tag("apps/api:1");
    ok(&ex, &["push", "//services/api:image", "--tag", &app]);
    (ex, app)
}

fn app_layer_gets(reg: &Registry, ex: &TestContext) -> usize {
    // The app layer digests of the built image.
    let r = ex.run(&["inspect", "--json", "//services/api:image"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let layers: Vec<String> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["created_by"] == "application")
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 1);
    reg.log().lines().filter(|l| l.contains("GET") && layers.iter().any(|d| l.contains(&format!("/blobs/{d}")))).count()
}

fn bytes_uploaded(stdout: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    v["bytes_uploaded"].as_u64().unwrap()
}

#[test]
fn registry_rebase_is_manifest_only() {
    let reg = Registry::shared();
    let (ex, app) = setup(&reg, 10_000, "{}");
    let before = app_layer_gets(&reg, &ex);
    let r = ok(&ex, &["rebase", "--json", &app, "--run-image", &reg.tag("base/run:2")]);
    let small = bytes_uploaded(&r.stdout);
    assert_eq!(app_layer_gets(&reg, &ex), before, "no app layer was downloaded");
    // The rebased image in the registry: new run layers under the same app layers, labels updated.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{app}")])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let md: serde_json::Value =
        serde_json::from_str(v["Labels"]["io.buildpacks.lifecycle.metadata"].as_str().unwrap()).unwrap();
    let layers = v["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3 + 5, "3 run image layers + web launch layer + app + launcher + config + process types");
    let v2: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(md["runImage"]["reference"], v2["run_image"]);
    // The rebased image validates and runs like a fresh one.
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{app}"),
            &format!("oci:{}:app", dir.path().join("l").display()),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, out) = common::run_harness("validate-oci.sh", &[&format!("{}:app", dir.path().join("l").display())]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = common::run_harness(
        "run-oci.sh",
        &["--entrypoint", "cat", &format!("{}:app", dir.path().join("l").display()), "/etc/patches/patch.txt"],
    );
    assert_eq!((code, out.trim()), (0, "security fix"));
    // Bytes sent do not grow with the app layer: 100x bigger app, same order of bytes.
    let reg2 = Registry::shared();
    let (ex2, app2) = setup(&reg2, 1_000_000, "{}");
    let r = ok(&ex2, &["rebase", "--json", &app2, "--run-image", &reg2.tag("base/run:2")]);
    let big = bytes_uploaded(&r.stdout);
    assert!(big < small + 4096 && small < 64 * 1024, "bytes uploaded: small app {small}, 100x app {big}");
    assert_eq!(app_layer_gets(&reg2, &ex2), 0);
}

#[test]
fn refusals_and_force() {
    let reg = Registry::shared();
    let (ex, app) = setup(&reg, 100, "{\"io.buildpacks.rebasable\": \"false\"}");
    let refuse = |run: &str, want: &str| {
        let r = ex.run(&["rebase", &app, "--run-image", &reg.tag(run)]);
        assert_eq!(r.code, 1, "{run}: {}", r.stderr);
        assert!(r.stderr.contains(want) && r.stderr.contains("--force"), "{run}: wanted `{want}` in:\n{}", r.stderr);
    };
    refuse("base/run:2", "io.buildpacks.rebasable=false");
    refuse("base/run:arm", "target mismatch: the image is linux/amd64, the new run image is linux/arm64");
    refuse("base/run:other", "`io.buildpacks.base.distro.name` is `busybox` on the image but `alpine`");
    // An explicit --run-image elsewhere is honoured (as `pack rebase`), with a warning; the other
    // checks still apply (here: not rebasable).
    refuse("elsewhere/run:2", "io.buildpacks.rebasable=false");
    // --force rebases with one warning per skipped check.
    let r = ok(&ex, &["rebase", &app, "--run-image", &reg.tag("elsewhere/run:2"), "--force"]);
    assert!(
        r.stderr.contains("--force: skipped the check that refuses when the image says it is not rebasable"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("as --run-image asks"), "{}", r.stderr);
    assert!(r.stdout.contains("rebased onto"), "{}", r.stdout);
    // A non-CNB image is refused clearly.
    let r = ex.run(&["rebase", &reg.tag("base/run:1"), "--run-image", &reg.tag("base/run:2")]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a Cloud Native Buildpacks app image"), "{}", r.stderr);
}

#[test]
fn stack_id_model_images_are_checked_by_stack_id() {
    let reg = Registry::shared();
    let ex = TestContext::from_examples();
    ok(&ex, &["push", "//stacks:run-image", "--tag", &reg.tag("base/run:1")]);
    // An image shaped like one from an old platform (no CNB_PLATFORM_API, stack id label).
    let r = ok(&ex, &["inspect", "--json", "//stacks:run-image"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let top = v["layers"][1]["diff_id"].as_str().unwrap().to_string();
    let md = format!(
        "{{\\\"runImage\\\":{{\\\"topLayer\\\":\\\"{top}\\\",\\\"reference\\\":\\\"\\\",\\\"image\\\":\\\"{}\\\"}}}}",
        reg.tag("base/run")
    );
    ex.write(
        "old/BUILD.star",
        &format!("layer(name = \"l\", srcs = [\"f\"])\noci_image(name = \"img\", base = \"//stacks:run-image\", layers = [\":l\"], labels = {{\"io.buildpacks.lifecycle.metadata\": \"{md}\", \"io.buildpacks.stack.mixins\": \"[\\\"curl\\\"]\"}})\n\
oci_image(name = \"run-b\", base = \"//stacks:run-image\", labels = {{\"io.buildpacks.stack.id\": \"other.stack\"}})\n\
oci_image(name = \"run-c\", base = \"//stacks:run-image\", labels = {{\"io.buildpacks.stack.mixins\": \"[\\\"curl\\\"]\"}})\n"),
    );
    ex.write("old/f", "x");
    ok(&ex, &["push", "//old:img", "--tag", &reg.tag("apps/old:1")]);
    ok(&ex, &["push", "//old:run-b", "--tag", &reg.tag("base/run:b")]);
    ok(&ex, &["push", "//old:run-c", "--tag", &reg.tag("base/run:c")]);
    let app = reg.tag("apps/old:1");
    let r = ex.run(&["rebase", &app, "--run-image", &reg.tag("base/run:b")]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("stack mismatch") && r.stderr.contains("other.stack"), "{}", r.stderr);
    let r = ex.run(&["rebase", &app, "--run-image", &reg.tag("base/run:1")]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lacks mixins [\"curl\"]"), "{}", r.stderr);
    let r = ok(&ex, &["rebase", &app, "--run-image", &reg.tag("base/run:c")]);
    assert!(r.stdout.contains("rebased onto"), "{}", r.stdout);
}

#[test]
fn workspace_rebase_reports_each_image() {
    let cx = TestContext::from_examples();
    let r = ok(&cx, &["rebase", "//services/api:image", "//services/site:image"]);
    assert!(r.stdout.contains("//services/api:image: rebuilt"), "{}", r.stdout);
    let r = ok(&cx, &["rebase", "//services/api:image", "//services/site:image"]);
    assert!(
        r.stdout.contains("//services/api:image: already current")
            && r.stdout.contains("//services/site:image: already current"),
        "{}",
        r.stdout
    );
    cx.write("stacks/patch.txt", "fix\n");
    let st = std::fs::read_to_string(cx.root().join("stacks/BUILD.star")).unwrap();
    cx.write(
        "stacks/BUILD.star",
        &(st.replace("oci_image(\n    name = \"build-image\",\n    base = \":run-image\",", "oci_image(\n    name = \"build-image\",\n    base = \":run-base\",")
            .replace("oci_image(\n    name = \"run-image\",", "oci_image(\n    name = \"run-base\",")
            + "\nlayer(name = \"patch\", srcs = [\"patch.txt\"], prefix = \"/etc/patches\")\noci_image(name = \"run-image\", base = \":run-base\", layers = [\":patch\"])\n"),
    );
    let r = ok(&cx, &["rebase", "//services/api:image", "//services/site:image"]);
    assert!(
        r.stdout.contains("//services/api:image: rebased") && r.stdout.contains("//services/site:image: rebased"),
        "{}",
        r.stdout
    );
}

/// A run image built in the graph is recorded by where it is pushed (its first tag), not by its
/// workspace label, so a registry rebase without `--run-image` (as `pack rebase`) finds it, and a
/// patched image pushed to the same tag is picked up.
#[test]
fn graph_built_run_image_is_recorded_by_its_tag_and_rebased_without_run_image() {
    let reg = Registry::shared();
    let ex = TestContext::from_examples();
    let run_tag = reg.tag("base/run:1");
    let st = std::fs::read_to_string(ex.root().join("stacks/BUILD.star")).unwrap();
    let st2 = st.replacen(
        "    name = \"run-image\",\n",
        &format!("    name = \"run-image\",\n    tags = [\"{run_tag}\"],\n"),
        1,
    );
    assert_ne!(st, st2, "the example stack changed; update this test");
    ex.write(
        "stacks/BUILD.star",
        &(st2 + "\nlayer(name = \"patch\", srcs = [\"patch.txt\"], prefix = \"/etc/patches\")\noci_image(name = \"run-2\", base = \":run-image\", layers = [\":patch\"])\n"),
    );
    ex.write("stacks/patch.txt", "security fix\n");
    ok(&ex, &["push", "//stacks:run-image"]);
    let app = reg.tag("apps/site:1");
    ok(&ex, &["push", "//services/site:image", "--tag", &app]);
    let r = ok(&ex, &["inspect", "--json", "//services/site:image"]);
    assert!(r.stdout.contains(&format!("\\\"image\\\":\\\"{run_tag}\\\"")), "runImage.image is the tag: {}", r.stdout);
    // A patched run image pushed to the same tag; rebase with no --run-image.
    ok(&ex, &["push", "//stacks:run-2", "--tag", &run_tag]);
    let r = ok(&ex, &["rebase", &app]);
    assert!(r.stdout.contains("rebased onto") && r.stdout.contains(&run_tag), "{}", r.stdout);
}
