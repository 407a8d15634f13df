//! The CNB distribution ecosystem (issue 17): builder images and buildpackages made by cbuild are
//! what pack/kpack consume and what cbuild itself consumes in another workspace (same app digest);
//! a builder image assembled with umoci/skopeo alone (no cbuild code) builds apps; project.toml
//! reaches the image; bad distribution input is a located exit-2 error that writes nothing.

use crate::common;
use common::registry::Registry;
use common::{run_harness, TestContext};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Runs cbuild with `--json`; returns (exit code, summary, stderr).
fn build(cx: &TestContext, pats: &[&str]) -> (i32, Value, String) {
    let mut a = vec!["build", "--json"];
    a.extend_from_slice(pats);
    let r = cx.run(&a);
    let summary = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or(Value::Null);
    (r.code, summary, r.stderr)
}

fn ok(cx: &TestContext, pats: &[&str]) -> Value {
    let (code, s, err) = build(cx, pats);
    assert_eq!(code, 0, "build {pats:?} failed:\n{err}");
    s
}

fn digest(summary: &Value, label: &str) -> String {
    summary["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == label)
        .unwrap_or_else(|| panic!("{label} not in {summary}"))["image_digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The config of the image of an OCI layout (its only manifest).
fn config(layout: &Path) -> Value {
    let read = |d: &str| -> Value {
        serde_json::from_slice(
            &std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap(),
        )
        .unwrap()
    };
    let idx: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = read(idx["manifests"][0]["digest"].as_str().unwrap());
    read(m["config"]["digest"].as_str().unwrap())
}

fn label(cfg: &Value, key: &str) -> String {
    cfg["config"]["Labels"][key].as_str().unwrap_or_else(|| panic!("no label {key}")).to_string()
}

fn validate(layout: &Path) {
    let (code, out) = run_harness("validate-oci.sh", &[layout.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: {out}", layout.display());
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A workspace with the example busybox stack (its run image tagged `run_ref`, so a builder image
/// can name it), the example buildpacks, and the example api service as `//app:img`.
fn workspace(run_ref: &str, builder_tags: &str) -> TestContext {
    let cx = TestContext::new();
    common::copy_tree(&examples().join("stacks"), &cx.root().join("stacks"));
    common::copy_tree(&examples().join("buildpacks"), &cx.root().join("buildpacks"));
    let stacks = std::fs::read_to_string(cx.root().join("stacks/BUILD.star")).unwrap();
    let tagged = stacks.replacen(
        "    cmd = [\"/bin/sh\"],\n",
        &format!("    cmd = [\"/bin/sh\"],\n    tags = [\"{run_ref}\"],\n"),
        1,
    );
    assert_ne!(stacks, tagged, "the example run image moved");
    cx.write("stacks/BUILD.star", &tagged);
    cx.write(
        "builders/BUILD.star",
        &format!(
            "builder(\n    name = \"default\",\n    stack = \"//stacks:default\",\n    order = [\n        \
             [\"//buildpacks:shell-web\", optional(\"//buildpacks:procfile\")],\n        [\"//buildpacks:procfile\"],\n        \
             [\"//buildpacks:static\"],\n    ],\n    tags = [{builder_tags}],\n    description = \"cbuild test builder\",\n)\n"
        ),
    );
    app(&cx, "\"//builders:default\"");
    cx
}

/// The example api service as `//app:img`, built by `builder`.
fn app(cx: &TestContext, builder: &str) {
    common::copy_tree(&examples().join("services/api"), &cx.root().join("app"));
    cx.write(
        "app/BUILD.star",
        &format!(
            "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = {builder}, env = {{\"BP_LOG_LEVEL\": \"info\"}})\n"
        ),
    );
}

/// No label value of `cfg` names a workspace label (`//pkg:name`): foreign tools resolve them all.
fn assert_no_workspace_labels(cfg: &Value) {
    for (k, v) in cfg["config"]["Labels"].as_object().unwrap() {
        let v = v.as_str().unwrap();
        assert!(!v.contains("\"//") && !v.starts_with("//"), "label {k} names a workspace label: {v}");
    }
}

#[test]
fn a_builder_image_made_by_cbuild_builds_the_same_app_from_the_registry() {
    let reg = Registry::shared();
    let (run_ref, builder_ref) = (reg.tag("cnb/run:1"), reg.tag("cnb/builder:1"));
    let a = workspace(&run_ref, &format!("\"{builder_ref}\""));
    let s = ok(&a, &["//builders:default", "//app:img"]);
    let in_graph = digest(&s, "//app:img");
    let layout = a.root().join("cbuild-out/builders/default");
    validate(&layout);
    let cfg = config(&layout);
    assert_no_workspace_labels(&cfg);
    let env: Vec<&str> = cfg["config"]["Env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(env.contains(&"CNB_USER_ID=1000") && env.contains(&"CNB_GROUP_ID=1000"), "{env:?}");
    let meta: Value = serde_json::from_str(&label(&cfg, "io.buildpacks.builder.metadata")).unwrap();
    assert_eq!(meta["stack"]["runImage"]["image"], run_ref.as_str());
    assert_eq!(meta["images"][0]["image"], run_ref.as_str());
    assert_eq!(meta["description"], "cbuild test builder");
    let layers: Value = serde_json::from_str(&label(&cfg, "io.buildpacks.buildpack.layers")).unwrap();
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    for id in ["examples/shell-web", "examples/procfile", "examples/static"] {
        let d = &layers[id]["0.1.0"]["layerDiffID"];
        assert!(diff_ids.contains(d), "{id}: {d} is a layer");
    }
    // The files pack and the lifecycle read, in the image.
    let bundle = tempfile::tempdir().unwrap();
    sh(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(bundle.path().join("b")));
    let rootfs = bundle.path().join("b/rootfs");
    let order = std::fs::read_to_string(rootfs.join("cnb/order.toml")).unwrap();
    assert!(order.contains("id = \"examples/shell-web\"") && order.contains("optional = true"), "{order}");
    assert!(std::fs::read_to_string(rootfs.join("cnb/run.toml")).unwrap().contains(&run_ref));
    assert!(std::fs::read_to_string(rootfs.join("cnb/stack.toml")).unwrap().contains(&run_ref));
    assert!(rootfs.join("cnb/buildpacks/examples_shell-web/0.1.0/bin/build").is_file());
    // Without a `lifecycle` image, the note says what pack needs.
    let r = a.run(&["build", "//builders:default"]);
    assert!(r.stderr.contains("--lifecycle-image"), "{}", r.stderr);

    let r = a.run(&["push", "//builders:default", "//stacks:run-image"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Another workspace (and cache): only the builder image, pulled.
    let b = TestContext::new();
    b.write(
        "builders/BUILD.star",
        &format!(
            "oci_pull(name = \"image\", image = \"{builder_ref}\")\nbuilder(name = \"default\", image = \":image\")\n"
        ),
    );
    app(&b, "\"//builders:default\"");
    let s = ok(&b, &["//app:img"]);
    assert_eq!(digest(&s, "//app:img"), in_graph, "the pulled builder image builds the same app image");
    let app_layout = b.root().join("cbuild-out/app/img");
    validate(&app_layout);
    let app_cfg = config(&app_layout);
    assert_no_workspace_labels(&app_cfg);
    let lc: Value = serde_json::from_str(&label(&app_cfg, "io.buildpacks.lifecycle.metadata")).unwrap();
    assert_eq!(lc["runImage"]["image"], run_ref.as_str());
    let (code, out) =
        run_harness("run-oci.sh", &["--entrypoint", "/cnb/process/version", app_layout.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // No change: nothing reruns but the run image lookup (a tag) and the builder pull.
    let s = ok(&b, &["//app:img"]);
    assert_eq!(s["executed"], 2, "{s}");
}

/// pack's builder.toml as a workspace builder (`builder(config = ...)`): the same order, so the same
/// app image; its build env and run image in the builder image where pack puts them.
#[test]
fn a_builder_toml_makes_the_same_builder_as_the_build_file() {
    let run_ref = "registry.example.com/cnb/run:1";
    let cx = workspace(run_ref, "");
    cx.write(
        "builders/builder.toml",
        &format!(
            "description = \"from builder.toml\"\n\
             [[buildpacks]]\nuri = \"../buildpacks/shell-web\"\n[[buildpacks]]\nuri = \"../buildpacks/procfile\"\n\
             [[buildpacks]]\nuri = \"../buildpacks/static\"\n\
             [[order]]\n[[order.group]]\nid = \"examples/shell-web\"\n[[order.group]]\nid = \"examples/procfile\"\noptional = true\n\
             [[order]]\n[[order.group]]\nid = \"examples/procfile\"\n\
             [[order]]\n[[order.group]]\nid = \"examples/static\"\nversion = \"0.1.0\"\n\
             [[build.env]]\nname = \"CBUILD_TEST_ENV\"\nvalue = \"from-builder-toml\"\nsuffix = \"default\"\n\
             [run]\n[[run.images]]\nimage = \"{run_ref}\"\n\
             [lifecycle]\nversion = \"0.20.0\"\n"
        ),
    );
    // A lifecycle image (what buildpacksio/lifecycle holds: /cnb/lifecycle/*, its version label).
    cx.write("lifecycle/lifecycle", "#!/bin/sh\necho lifecycle\n");
    cx.write("lifecycle/BUILD.star", "layer(name = \"l\", srcs = [\"lifecycle\"], prefix = \"/cnb/lifecycle\", mode = \"0755\")\n\
        oci_image(name = \"lifecycle\", layers = [\":l\"], labels = {\"io.buildpacks.lifecycle.version\": \"0.20.0\"})\n");
    let mut b = std::fs::read_to_string(cx.root().join("builders/BUILD.star")).unwrap();
    b.push_str(
        "builder(name = \"toml\", stack = \"//stacks:default\", config = \"builder.toml\", \
         buildpacks = [\"//buildpacks:shell-web\", \"//buildpacks:procfile\", \"//buildpacks:static\"], \
         lifecycle = \"//lifecycle\")\n",
    );
    cx.write("builders/BUILD.star", &b);
    let app = std::fs::read_to_string(cx.root().join("app/BUILD.star")).unwrap();
    cx.write(
        "app/BUILD.star",
        &format!("{app}{}", app.replace("\"img\"", "\"img-toml\"").replace("//builders:default", "//builders:toml")),
    );
    let r = cx.run(&["build", "--json", "//builders:default", "//builders:toml", "//app:img", "//app:img-toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("`lifecycle` not applied"), "{}", r.stderr);
    assert!(!r.stderr.contains("`//builders:toml`: the builder image has no lifecycle"), "{}", r.stderr);
    let s: Value = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap();
    assert_eq!(digest(&s, "//app:img-toml"), digest(&s, "//app:img"), "same order, same app image");
    let unpack = |name: &str| {
        let d = tempfile::tempdir().unwrap();
        let layout = cx.root().join("cbuild-out/builders").join(name);
        validate(&layout);
        sh(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(d.path().join("b")));
        d
    };
    let (a, t) = (unpack("default"), unpack("toml"));
    let read = |d: &tempfile::TempDir, f: &str| std::fs::read_to_string(d.path().join("b/rootfs").join(f)).unwrap();
    assert_eq!(
        read(&a, "cnb/order.toml"),
        read(&t, "cnb/order.toml"),
        "versions filled in as the BUILD file's labels give them"
    );
    assert_eq!(read(&t, "cnb/run.toml"), format!("[[images]]\nimage = \"{run_ref}\"\n"));
    assert_eq!(read(&t, "cnb/build-config/env/CBUILD_TEST_ENV.default"), "from-builder-toml");
    let meta: Value = serde_json::from_str(&label(
        &config(&cx.root().join("cbuild-out/builders/toml")),
        "io.buildpacks.builder.metadata",
    ))
    .unwrap();
    assert_eq!(meta["description"], "from builder.toml");
    assert_eq!(meta["lifecycle"]["version"], "0.20.0");
    assert_eq!(read(&t, "cnb/lifecycle/lifecycle"), "#!/bin/sh\necho lifecycle\n");
    // An id the builder's buildpacks do not provide: named with its key, exit 2, nothing written.
    let bad = std::fs::read_to_string(cx.root().join("builders/builder.toml"))
        .unwrap()
        .replace("examples/static", "examples/gone");
    cx.write("builders/builder.toml", &bad);
    let _ = std::fs::remove_dir_all(cx.root().join("cbuild-out/app"));
    let r = cx.run(&["build", "//app:img-toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("builders/builder.toml")
            && r.stderr.contains("order[2].group[0]")
            && r.stderr.contains("examples/gone@0.1.0"),
        "{}",
        r.stderr
    );
    assert!(!cx.root().join("cbuild-out/app/img-toml").exists());
}

#[test]
fn a_buildpackage_and_a_cnb_made_by_cbuild_build_the_same_app_elsewhere() {
    let reg = Registry::shared();
    let (run_ref, pkg_ref) = (reg.tag("cnb/run:1"), reg.tag("cnb/shell-web:1"));
    let a = workspace(&run_ref, "");
    let mut bps = std::fs::read_to_string(a.root().join("buildpacks/BUILD.star")).unwrap();
    bps.push_str(&format!(
        "buildpack_package(name = \"shell-web-pkg\", buildpack = \":shell-web\", tags = [\"{pkg_ref}\"])\n\
         buildpack_package(name = \"procfile-file\", buildpack = \":procfile\", format = \"file\")\n"
    ));
    a.write("buildpacks/BUILD.star", &bps);
    let s = ok(&a, &["//buildpacks:shell-web-pkg", "//buildpacks:procfile-file", "//app:img"]);
    let in_graph = digest(&s, "//app:img");
    let pkg = a.root().join("cbuild-out/buildpacks/shell-web-pkg");
    validate(&pkg);
    let cfg = config(&pkg);
    let meta: Value = serde_json::from_str(&label(&cfg, "io.buildpacks.buildpackage.metadata")).unwrap();
    assert_eq!((meta["id"].as_str(), meta["version"].as_str()), (Some("examples/shell-web"), Some("0.1.0")));
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1, "one layer per buildpack");
    let cnb = a.root().join("cbuild-out/buildpacks/procfile-file.cnb");
    // The .cnb is an OCI layout tar skopeo reads, holding the same image as the layout.
    let inspected: Value =
        serde_json::from_str(&sh(Command::new("skopeo").arg("inspect").arg(format!("oci-archive:{}", cnb.display()))))
            .unwrap();
    assert_eq!(inspected["Digest"], digest(&s, "//buildpacks:procfile-file").as_str());
    let unpacked = tempfile::tempdir().unwrap();
    sh(Command::new("tar").arg("-xf").arg(&cnb).arg("-C").arg(unpacked.path()));
    validate(unpacked.path());
    assert_eq!(a.run(&["push", "//buildpacks:shell-web-pkg", "//stacks:run-image"]).code, 0);

    // Another workspace: shell-web from the registry, procfile from the .cnb, static as sources.
    let c = TestContext::new();
    common::copy_tree(&a.root().join("stacks"), &c.root().join("stacks"));
    common::copy_tree(&examples().join("buildpacks/static"), &c.root().join("buildpacks/static"));
    std::fs::copy(&cnb, c.root().join("buildpacks/procfile.cnb")).unwrap();
    c.write(
        "buildpacks/BUILD.star",
        &format!(
            "oci_pull(name = \"shell-web-pkg\", image = \"{pkg_ref}\")\n\
             buildpack(name = \"shell-web\", image = \":shell-web-pkg\")\n\
             buildpack(name = \"procfile\", archive = \"procfile.cnb\")\n\
             buildpack(name = \"static\", srcs = glob([\"static/**\"]))\n"
        ),
    );
    let builders = std::fs::read_to_string(a.root().join("builders/BUILD.star")).unwrap();
    c.write("builders/BUILD.star", &builders);
    app(&c, "\"//builders:default\"");
    let s = ok(&c, &["//app:img"]);
    assert_eq!(digest(&s, "//app:img"), in_graph, "buildpackage + .cnb build the same app image");
    validate(&c.root().join("cbuild-out/app/img"));
}

/// A busybox base layout made by the harness (no cbuild code): `DIR:latest`.
fn busybox_layout(dir: &Path) {
    let (code, out) = run_harness("mk-busybox-oci.sh", &[dir.to_str().unwrap(), "latest"]);
    assert_eq!(code, 0, "{out}");
}

/// A tiny buildpack (API 0.10) whose build writes `$GREETING` into a launch layer and declares a
/// `web` process printing it.
fn env_echo_buildpack(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(
        dir.join("buildpack.toml"),
        "api = \"0.10\"\n[buildpack]\nid = \"test/env-echo\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("bin/detect"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::write(
        dir.join("bin/build"),
        "#!/bin/sh\nset -e\nmkdir -p \"$1/out\"\nprintf '%s' \"$GREETING\" > \"$1/out/greeting\"\n\
         printf '[types]\\nlaunch = true\\n' > \"$1/out.toml\"\n\
         printf '[[processes]]\\ntype = \"web\"\\ncommand = [\"cat\", \"/layers/test_env-echo/out/greeting\"]\\ndefault = true\\n' > \"$1/launch.toml\"\n",
    )
    .unwrap();
    for f in ["bin/detect", "bin/build"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A builder image assembled with umoci alone, following the distribution spec: `base` plus one
/// layer holding `/cnb/buildpacks/test_env-echo/1.0.0/`, `/cnb/order.toml` (if given),
/// `/cnb/run.toml` naming `run_ref` and `/cnb/build-config/env/GREETING`, and the
/// `io.buildpacks.buildpack.layers` and `io.buildpacks.builder.metadata` labels. Returns `out`.
fn umoci_builder(base: &Path, out: &Path, order_toml: Option<&str>, run_ref: &str) {
    common::copy_tree(base, out);
    let image = format!("{}:latest", out.display());
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    sh(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    env_echo_buildpack(&rootfs.join("cnb/buildpacks/test_env-echo/1.0.0"));
    if let Some(o) = order_toml {
        std::fs::write(rootfs.join("cnb/order.toml"), o).unwrap();
    }
    std::fs::write(rootfs.join("cnb/run.toml"), format!("[[images]]\nimage = \"{run_ref}\"\n")).unwrap();
    std::fs::create_dir_all(rootfs.join("cnb/build-config/env")).unwrap();
    std::fs::write(rootfs.join("cnb/build-config/env/GREETING"), "hello from the builder's build-config").unwrap();
    sh(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    let cfg: Value =
        serde_json::from_str(&sh(Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci:{image}"))))
            .unwrap();
    let diff = cfg["rootfs"]["diff_ids"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    let layers = format!("{{\"test/env-echo\":{{\"1.0.0\":{{\"api\":\"0.10\",\"layerDiffID\":\"{diff}\"}}}}}}");
    let meta = format!(
        "{{\"description\":\"umoci-made\",\"buildpacks\":[{{\"id\":\"test/env-echo\",\"version\":\"1.0.0\"}}],\"stack\":{{\"runImage\":{{\"image\":\"{run_ref}\"}}}},\"lifecycle\":{{\"version\":\"0.20.0\"}},\"createdBy\":{{\"name\":\"umoci\",\"version\":\"\"}}}}"
    );
    sh(Command::new("umoci").args(["config", "--image", &image]).args([
        "--config.label",
        &format!("io.buildpacks.buildpack.layers={layers}"),
        "--config.label",
        &format!("io.buildpacks.builder.metadata={meta}"),
    ]));
    sh(Command::new("umoci").args(["gc", "--layout"]).arg(out));
}

const ORDER_ENV_ECHO: &str = "[[order]]\n[[order.group]]\nid = \"test/env-echo\"\nversion = \"1.0.0\"\n";

/// A workspace building `//app:img` with the builder image in the layout `builder-layout/`.
fn imported_builder_workspace(layout: &Path) -> TestContext {
    let cx = TestContext::new();
    common::copy_tree(layout, &cx.root().join("builders/builder-layout"));
    cx.write(
        "builders/BUILD.star",
        "oci_import(name = \"image\", layout = \"builder-layout\")\nbuilder(name = \"default\", image = \":image\")\n",
    );
    cx.write("app/hello.txt", "hi\n");
    cx.write("app/BUILD.star", "cnb_image(name = \"img\", srcs = [\"hello.txt\"], builder = \"//builders:default\")\n");
    cx
}

#[test]
fn a_builder_image_assembled_with_umoci_and_skopeo_alone_builds_apps() {
    let reg = Registry::shared();
    let run_ref = reg.tag("umoci/run:1");
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    busybox_layout(&base);
    // The run image is the same busybox base, put in the registry by skopeo.
    sh(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", base.display()))
        .arg(format!("docker://{run_ref}")));
    let builder = tmp.path().join("builder");
    umoci_builder(&base, &builder, Some(ORDER_ENV_ECHO), &run_ref);
    let cx = imported_builder_workspace(&builder);
    let s = ok(&cx, &["//app:img"]);
    let layout = cx.root().join("cbuild-out/app/img");
    validate(&layout);
    let cfg = config(&layout);
    let lc: Value = serde_json::from_str(&label(&cfg, "io.buildpacks.lifecycle.metadata")).unwrap();
    assert_eq!(lc["runImage"]["image"], run_ref.as_str(), "the run image comes from /cnb/run.toml");
    assert_eq!(label(&cfg, "io.buildpacks.stack.id"), "io.cbuild.test.busybox");
    assert_eq!(cfg["config"]["User"], "1000:1000");
    // The buildpack saw the builder's build-config env; the app runs under runc.
    let (code, out) = run_harness("run-oci.sh", &[layout.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "hello from the builder's build-config");
    assert_eq!(digest(&s, "//app:img"), digest(&ok(&cx, &["//app:img"]), "//app:img"));
}

/// Buildpacks `bps/<name>` (API 0.10, id `test/<name>`) with the given `bin/build` body.
fn write_bps(cx: &TestContext, bps: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let mut build = String::new();
    for (name, body) in bps {
        cx.write(
            &format!("bps/{name}/buildpack.toml"),
            &format!(
                "api = \"0.10\"\n[buildpack]\nid = \"test/{name}\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n"
            ),
        );
        cx.write(&format!("bps/{name}/bin/detect"), "#!/bin/sh\nexit 0\n");
        cx.write(&format!("bps/{name}/bin/build"), &format!("#!/bin/sh\nset -e\n{body}\n"));
        for f in ["bin/detect", "bin/build"] {
            std::fs::set_permissions(cx.root().join(format!("bps/{name}/{f}")), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        build.push_str(&format!("buildpack(name = \"{name}\", srcs = glob([\"{name}/**\"]))\n"));
    }
    cx.write("bps/BUILD.star", &build);
}

const PROJECT_TOML: &str = r#"[_]
schema-version = "0.3"
id = "acme.app"
version = "2.0.1"
source-url = "https://git.example/acme/app"

[_.metadata]
team = "core"

[io.buildpacks]
exclude = ["secret.txt", "logs/"]

[[io.buildpacks.group]]
id = "test/second"

[[io.buildpacks.pre.group]]
uri = "//bps:pre"

[[io.buildpacks.build.env]]
name = "GREETING"
value = "hello from project.toml"

[[io.buildpacks.build.env]]
name = "WHO"
value = "project.toml"
"#;

/// The busybox stack, buildpacks `first`, `second` (records env and app files in a launch layer)
/// and `pre` (a label), a builder ordering first then second, and an app with a project.toml.
fn project_workspace(project_toml: &str) -> TestContext {
    let cx = TestContext::new();
    common::copy_tree(&examples().join("stacks"), &cx.root().join("stacks"));
    let web = "printf '[[processes]]\\ntype = \"web\"\\ncommand = [\"true\"]\\ndefault = true\\n' > \"$1/launch.toml\"";
    write_bps(
        &cx,
        &[
            ("first", web),
            (
                "second",
                &format!(
                    "mkdir -p \"$1/out\"\nprintf '%s|%s' \"$GREETING\" \"$WHO\" > \"$1/out/env\"\nfind . -type f | sort > \"$1/out/files\"\n\
                     printf '[types]\\nlaunch = true\\n' > \"$1/out.toml\"\n{web}"
                ),
            ),
            ("pre", "printf '[[labels]]\\nkey = \"org.test.pre\"\\nvalue = \"ran\"\\n' > \"$1/launch.toml\""),
        ],
    );
    cx.write(
        "builders/BUILD.star",
        "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:first\"], [\"//bps:second\"]])\n",
    );
    cx.write("app/app.txt", "app\n");
    cx.write("app/secret.txt", "do not ship\n");
    cx.write("app/logs/x.log", "log\n");
    cx.write("app/project.toml", project_toml);
    cx.write(
        "app/BUILD.star",
        "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//builders:b\", \
         env = {\"WHO\": \"BUILD.star\"}, buildpacks = [\"//bps:pre\"])\n",
    );
    cx
}

/// The file `path` of the image of `layout` (unpacked with umoci).
fn image_file(layout: &Path, path: &str) -> Option<String> {
    let d = tempfile::tempdir().unwrap();
    sh(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(d.path().join("b")));
    std::fs::read_to_string(d.path().join("b/rootfs").join(path.trim_start_matches('/'))).ok()
}

#[test]
fn project_toml_excludes_env_groups_and_metadata_reach_the_image() {
    let cx = project_workspace(PROJECT_TOML);
    ok(&cx, &["//app:img"]);
    let layout = cx.root().join("cbuild-out/app/img");
    validate(&layout);
    let cfg = config(&layout);
    // Groups: project.toml's group (by id, from the builder) replaced the builder's order, with
    // the pre group (by label) before it.
    let bm: Value = serde_json::from_str(&label(&cfg, "io.buildpacks.build.metadata")).unwrap();
    let ids: Vec<&str> = bm["buildpacks"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["test/pre", "test/second"]);
    assert_eq!(label(&cfg, "org.test.pre"), "ran");
    // Metadata: `[_]` in the lifecycle's shape.
    let pm: Value = serde_json::from_str(&label(&cfg, "io.buildpacks.project.metadata")).unwrap();
    assert_eq!(pm["source"]["type"], "project");
    assert_eq!(pm["source"]["version"]["declared"], "2.0.1");
    assert_eq!(pm["source"]["metadata"]["url"], "https://git.example/acme/app");
    assert_eq!(pm["source"]["metadata"]["team"], "core");
    // Env: project.toml's, under the BUILD file's (WHO).
    let env = image_file(&layout, "/layers/test_second/out/env").unwrap();
    assert_eq!(env, "hello from project.toml|BUILD.star");
    // Excluded before the build: the buildpack never saw them, the image does not hold them.
    let files = image_file(&layout, "/layers/test_second/out/files").unwrap();
    assert!(files.contains("./app.txt") && files.contains("./project.toml"), "{files}");
    assert!(!files.contains("secret") && !files.contains("logs"), "{files}");
    assert!(image_file(&layout, "/workspace/secret.txt").is_none());
    assert!(image_file(&layout, "/workspace/logs/x.log").is_none());
    assert!(image_file(&layout, "/workspace/app.txt").is_some());
    // An excluded file changes nothing; a project.toml change rebuilds.
    cx.write("app/secret.txt", "still not shipped\n");
    let (_, s, _) = build(&cx, &["//app:img"]);
    assert_eq!(s["executed"], 0, "{s}");
    cx.write("app/project.toml", &PROJECT_TOML.replace("hello from project.toml", "changed"));
    ok(&cx, &["//app:img"]);
    assert_eq!(image_file(&layout, "/layers/test_second/out/env").unwrap(), "changed|BUILD.star");
    // `project_toml = ""` ignores it: the builder's order and no exclusions.
    let b = std::fs::read_to_string(cx.root().join("app/BUILD.star")).unwrap();
    cx.write("app/BUILD.star", &b.replace("builder = ", "project_toml = \"\", builder = "));
    ok(&cx, &["//app:img"]);
    let cfg = config(&layout);
    let bm: Value = serde_json::from_str(&label(&cfg, "io.buildpacks.build.metadata")).unwrap();
    assert_eq!(bm["buildpacks"][0]["id"], "test/first");
    assert_eq!(label(&cfg, "io.buildpacks.project.metadata"), "{}");
}

/// A build that must fail with exit 2, naming every `needles`, leaving no layout of `//app:img`.
fn refused(cx: &TestContext, needles: &[&str]) {
    let _ = std::fs::remove_dir_all(cx.root().join("cbuild-out/app"));
    let r = cx.run(&["build", "//app:img"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "`{n}` not in:\n{}\n{}", r.stderr, r.stdout);
    }
    assert!(!cx.root().join("cbuild-out/app/img").exists(), "a layout was written");
}

#[test]
fn bad_distribution_input_is_a_located_error_and_writes_nothing() {
    // project.toml: unknown schema, include and exclude, a group id no buildpack provides.
    let cx = project_workspace(&PROJECT_TOML.replace("\"0.3\"", "\"0.7\""));
    refused(&cx, &["app/project.toml", "_.schema-version", "line 2", "0.7"]);
    cx.write("app/project.toml", &PROJECT_TOML.replace("exclude = [", "include = [\"app.txt\"]\nexclude = ["));
    refused(&cx, &["app/project.toml", "io.buildpacks.exclude", "mutually exclusive"]);
    cx.write("app/project.toml", &PROJECT_TOML.replace("id = \"test/second\"", "id = \"test/nobody\""));
    refused(
        &cx,
        &["app/project.toml", "io.buildpacks.group[0]", "test/nobody", "no buildpack of the builder provides"],
    );

    // Builder images: no /cnb/order.toml (nor an order label), an order naming a missing buildpack.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    busybox_layout(&base);
    let no_order = tmp.path().join("no-order");
    umoci_builder(&base, &no_order, None, "127.0.0.1:1/unused/run:1");
    let cx = imported_builder_workspace(&no_order);
    refused(&cx, &["builder image `//builders:image`", "/cnb/order.toml", "missing"]);
    let bad_order = tmp.path().join("bad-order");
    umoci_builder(
        &base,
        &bad_order,
        Some(&format!("{ORDER_ENV_ECHO}[[order]]\n[[order.group]]\nid = \"test/missing\"\nversion = \"2.0.0\"\n")),
        "127.0.0.1:1/unused/run:1",
    );
    let cx = imported_builder_workspace(&bad_order);
    refused(&cx, &["builder image `//builders:image`", "/cnb/order.toml", "order[1].group[0]", "test/missing@2.0.0"]);

    // A buildpackage whose label disagrees with its layers; a .cnb that is not an OCI layout.
    let a = TestContext::new();
    common::copy_tree(&examples().join("buildpacks/procfile"), &a.root().join("bps/procfile"));
    a.write("bps/BUILD.star", "buildpack(name = \"procfile\", srcs = glob([\"procfile/**\"]))\nbuildpack_package(name = \"pkg\", buildpack = \":procfile\")\n");
    ok(&a, &["//bps:pkg"]);
    let pkg = tmp.path().join("pkg");
    common::copy_tree(&a.root().join("cbuild-out/bps/pkg"), &pkg);
    let cfg = config(&pkg);
    let lie = label(&cfg, "io.buildpacks.buildpack.layers").replace("\"0.1.0\"", "\"9.9.9\"");
    let meta = label(&cfg, "io.buildpacks.buildpackage.metadata").replace("\"0.1.0\"", "\"9.9.9\"");
    sh(Command::new("umoci").args(["config", "--image"]).arg(format!("{}:latest", pkg.display())).args([
        "--config.label",
        &format!("io.buildpacks.buildpack.layers={lie}"),
        "--config.label",
        &format!("io.buildpacks.buildpackage.metadata={meta}"),
    ]));
    let cx = TestContext::new();
    common::copy_tree(&examples().join("stacks"), &cx.root().join("stacks"));
    common::copy_tree(&pkg, &cx.root().join("bps/pkg-layout"));
    cx.write(
        "bps/BUILD.star",
        "oci_import(name = \"pkg\", layout = \"pkg-layout\")\nbuildpack(name = \"procfile\", image = \":pkg\")\n",
    );
    cx.write(
        "builders/BUILD.star",
        "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:procfile\"]])\n",
    );
    cx.write("app/Procfile", "web: true\n");
    cx.write("app/BUILD.star", "cnb_image(name = \"img\", srcs = [\"Procfile\"], builder = \"//builders:b\")\n");
    refused(
        &cx,
        &[
            "buildpackage `//bps:pkg`",
            "examples/procfile.9.9.9",
            "/cnb/buildpacks/examples_procfile/9.9.9/buildpack.toml",
        ],
    );
    cx.write("bps/not-a-layout.cnb", "this is not a tar\n");
    cx.write("bps/BUILD.star", "buildpack(name = \"procfile\", archive = \"not-a-layout.cnb\")\n");
    refused(&cx, &["bps/not-a-layout.cnb"]);
}
