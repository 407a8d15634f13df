//! Real buildpacks through the whole platform: the example services (validated by independent
//! tools, run by runc and `cbuild run`), incremental rebuilds, the CNB layer/env/process rules with
//! fixture buildpacks, and a hostile buildpack contained by the sandbox.

use crate::common;
use std::collections::BTreeMap;

use common::http::wait_get;
use common::{free_port, run_harness, TestContext};
use serde_json::Value;

/// The example services on the busybox stack (offline; hello-py needs the Debian mirror).
const BUSYBOX_SERVICES: &[&str] = &["//services/api:image", "//services/site:image", "//services/worker:image"];

struct Build {
    summary: Value,
    events: Vec<Value>,
    stderr: String,
    code: i32,
}

impl Build {
    fn executed(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .events
            .iter()
            .filter(|e| e["type"] == "finished" && e["outcome"] == "executed")
            .map(|e| (e["label"].as_str().unwrap().to_string(), e["action"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    }
    fn digests(&self) -> BTreeMap<String, String> {
        self.summary["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["label"].as_str().unwrap().to_string(), t["image_digest"].as_str().unwrap().to_string()))
            .collect()
    }
    fn output(&self) -> String {
        self.events
            .iter()
            .filter(|e| e["type"] == "output")
            .map(|e| format!("{}\n", e["line"].as_str().unwrap()))
            .collect()
    }
}

fn build(cx: &TestContext, pats: &[&str]) -> Build {
    let mut a = vec!["build", "--json"];
    a.extend_from_slice(pats);
    let r = cx.run(&a);
    let events: Vec<Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = events.last().cloned().unwrap_or(Value::Null);
    Build { summary, events, stderr: r.stderr, code: r.code }
}

fn ok(cx: &TestContext, pats: &[&str]) -> Build {
    let b = build(cx, pats);
    assert_eq!(
        b.code,
        0,
        "build failed:\n{}\n{:#?}",
        b.stderr,
        b.events.iter().filter(|e| e["type"] != "finished").collect::<Vec<_>>()
    );
    b
}

fn manifest_of(cx: &TestContext, label_dir: &str) -> Value {
    let dir = cx.root().join("cbuild-out").join(label_dir);
    let idx: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(d)).unwrap()).unwrap()
}

fn config_of(cx: &TestContext, label_dir: &str) -> Value {
    let m = manifest_of(cx, label_dir);
    let d = m["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    serde_json::from_slice(
        &std::fs::read(cx.root().join("cbuild-out").join(label_dir).join("blobs/sha256").join(d)).unwrap(),
    )
    .unwrap()
}

#[test]
fn example_services_build_validate_and_run() {
    let cx = TestContext::from_examples();
    let b = ok(&cx, &["//services/api:image", "//services/site:image", "//services/worker:image"]);
    let d = b.digests();
    assert_eq!(d.len(), 3);
    for s in ["api", "site", "worker"] {
        let (code, out) = run_harness(
            "validate-oci.sh",
            &[cx.root().join(format!("cbuild-out/services/{s}/image")).to_str().unwrap()],
        );
        assert_eq!(code, 0, "{s}: {out}");
    }
    // The api answers HTTP on loopback under runc; its default process is web.
    let port = free_port();
    let layout = cx.root().join("cbuild-out/services/api/image");
    let mut child = std::process::Command::new(common::harness("run-oci.sh"))
        .args(["--timeout", "20", "-e", &format!("PORT={port}"), layout.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = wait_get(port, "/");
    let version = wait_get(port, "/version");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(body.contains("\"service\":\"api\""), "{body}");
    // /cnb/process/<other-type> selects another process.
    let (code, out) = run_harness("run-oci.sh", &["--entrypoint", "/cnb/process/version", layout.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(version.contains(out.trim()), "version process `{}` vs served `{version}`", out.trim());
    let (code, out) = run_harness(
        "run-oci.sh",
        &["--entrypoint", "/cnb/process/once", cx.root().join("cbuild-out/services/worker/image").to_str().unwrap()],
    );
    assert_eq!((code, out.trim()), (0, "worker ran once"));
    // The static site (API 0.7 direct process) via `cbuild run`.
    let port = free_port();
    let mut child = cx
        .cmd()
        .args(["run", "//services/site:image", "--", "-p", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let body = wait_get(port, "/");
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("static site built by cbuild"), "{body}");
    // Labels and config shaped like pack's.
    let cfg = config_of(&cx, "services/api/image");
    let c = &cfg["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/cnb/process/web"]));
    assert_eq!(c["WorkingDir"], "/workspace");
    assert_eq!(c["User"], "1000:1000", "the run image's user");
    let md: Value = serde_json::from_str(c["Labels"]["io.buildpacks.lifecycle.metadata"].as_str().unwrap()).unwrap();
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(md["runImage"]["topLayer"], diff_ids[1], "the run image has two layers");
    // An untagged run image built in the graph records no registry name, never its workspace label
    // (a registry rebase could not resolve it); a tagged one records its tag (rebase.rs).
    assert_eq!(md["runImage"]["image"], "");
    assert!(md["buildpacks"][0]["layers"]["web"]["launch"].as_bool().unwrap());
    assert_eq!(c["Labels"]["org.example.server"], "shell-web");
    assert_eq!(c["Labels"]["io.buildpacks.base.distro.name"], "busybox", "base labels come from the run image");
    let bm: Value = serde_json::from_str(c["Labels"]["io.buildpacks.build.metadata"].as_str().unwrap()).unwrap();
    assert_eq!(
        bm["processes"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect::<Vec<_>>(),
        ["version", "web"]
    );
}

#[test]
fn editing_one_service_reruns_only_its_detect_build_and_export() {
    let cx = TestContext::from_examples();
    let first = ok(&cx, BUSYBOX_SERVICES);
    let m1 = manifest_of(&cx, "services/api/image");
    cx.write("services/api/public/index.html", "{\"service\":\"api\",\"status\":\"edited\"}\n");
    let second = ok(&cx, BUSYBOX_SERVICES);
    assert_eq!(
        second.executed(),
        vec![
            ("//services/api:image".into(), "build".into()),
            ("//services/api:image".into(), "detect".into()),
            ("//services/api:image".into(), "export".into())
        ]
    );
    assert!(second.output().contains("cached build count: 2"), "the cache layer was restored:\n{}", second.output());
    let m2 = manifest_of(&cx, "services/api/image");
    let l1 = m1["layers"].as_array().unwrap();
    let l2 = m2["layers"].as_array().unwrap();
    assert_eq!(l1.len(), l2.len());
    let changed: Vec<usize> = (0..l1.len()).filter(|i| l1[*i]["digest"] != l2[*i]["digest"]).collect();
    // run image (2) + web launch layer + app + launcher + config + process types: only the app changes.
    assert_eq!(changed, vec![3], "only the app layer changes");
    assert_ne!(m1["config"]["digest"], m2["config"]["digest"]);
    assert_eq!(first.digests()["//services/site:image"], second.digests()["//services/site:image"]);
    assert_ne!(first.digests()["//services/api:image"], second.digests()["//services/api:image"]);
    // explain names the file for the build action.
    let r = cx.run(&["explain", "//services/api:image"]);
    assert!(r.stdout.contains("public/index.html changed"), "{}", r.stdout);
}

#[test]
fn a_new_run_image_reruns_only_the_export_and_equals_a_clean_build() {
    let cx = TestContext::from_examples();
    ok(&cx, &["//services/api:image"]);
    // A new OS layer: the run image changes, the build image does not.
    let stacks = std::fs::read_to_string(cx.root().join("stacks/BUILD.star")).unwrap();
    cx.write("stacks/patch.txt", "security fix 1\n");
    cx.write(
        "stacks/BUILD.star",
        &(stacks.replace("oci_image(\n    name = \"build-image\",\n    base = \":run-image\",", "oci_image(\n    name = \"build-image\",\n    base = \":run-base\",")
            .replace("oci_image(\n    name = \"run-image\",", "oci_image(\n    name = \"run-base\",")
            + "\nlayer(name = \"patch\", srcs = [\"patch.txt\"], prefix = \"/etc/patches\")\noci_image(name = \"run-image\", base = \":run-base\", layers = [\":patch\"])\n"),
    );
    let b = ok(&cx, &["//services/api:image"]);
    let ran: Vec<String> =
        b.executed().into_iter().filter(|(l, _)| l.starts_with("//services")).map(|(_, a)| a).collect();
    assert_eq!(ran, vec!["export"], "no detect or build on a run-image change");
    let clean = TestContext::new();
    common::copy_tree(cx.root(), clean.root());
    let _ = std::fs::remove_dir_all(clean.root().join("cbuild-out"));
    let c = ok(&clean, &["//services/api:image"]);
    assert_eq!(b.digests(), c.digests(), "rebased image equals a clean build on the new run image");
}

fn fixture_workspace(bps: &[&str], order: &str, app: &[(&str, &str)], env: &str) -> TestContext {
    let cx = TestContext::new();
    let ex = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    common::copy_tree(&ex.join("stacks"), &cx.root().join("stacks"));
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildpacks");
    let mut bp_build = String::new();
    for b in bps {
        common::copy_tree(&fx.join(b), &cx.root().join("bps").join(b));
        bp_build.push_str(&format!("buildpack(name = \"{b}\", srcs = glob([\"{b}/**\"]))\n"));
    }
    cx.write("bps/BUILD.star", &bp_build);
    cx.write("builders/BUILD.star", &format!("builder(name = \"b\", stack = \"//stacks:default\", order = {order})\n"));
    for (p, t) in app {
        cx.write(&format!("app/{p}"), t);
    }
    cx.write("app/BUILD.star", &format!("cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//builders:b\", env = {env})\n"));
    cx
}

#[test]
fn layer_types_env_rules_processes_and_reuse() {
    let cx = fixture_workspace(
        &["layers-a", "layers-b"],
        "[[\"//bps:layers-a\", \"//bps:layers-b\"]]",
        &[("app.txt", "v1\n"), ("static/site.css", "body{}\n"), ("static/sub/deep.css", "x\n")],
        "{\"PLATFORM_VAR\": \"pv\", \"FIXTURE_OVERRIDE\": \"platform\"}",
    );
    let b = ok(&cx, &["//app:img"]);
    let out = b.output();
    assert!(out.contains("A: uid=1000 api-0.7 layers=/layers/fixture_layers-a"), "{out}");
    // env.build: no delimiter without .delim (a), `:` with it (b), default, override; the platform
    // env overrides non-path variables last, as the lifecycle does.
    assert!(
        out.contains("B: FIXTURE_LIST=a:b FIXTURE_DEFAULT=dflt FIXTURE_OVERRIDE=platform PLATFORM_VAR=pv"),
        "{out}"
    );
    assert!(out.contains("B: tool-ran target=linux/amd64"), "{out}");
    assert!(out.contains("A: plan has tool") && out.contains("B: plan empty (tool was met by layers-a)"), "{out}");
    assert!(out.contains("A: cache count 1"), "{out}");
    // Process override: B's web replaces A's; A's other process stays; user args replace args (0.10).
    let r = cx.run(&["run", "//app:img"]);
    assert_eq!(r.stdout.trim(), "from-b from-a b-bin default-arg", "{}", r.stderr);
    let r = cx.run(&["run", "//app:img", "--", "user-arg"]);
    assert_eq!(r.stdout.trim(), "from-b from-a b-bin user-arg", "{}", r.stderr);
    let r = cx.run(&["run", "--entrypoint", "/cnb/process/a-only", "//app:img"]);
    assert_eq!(r.stdout.trim(), "runtime-v1", "{}", r.stderr);
    let cfg1 = config_of(&cx, "app/img");
    assert_eq!(cfg1["config"]["Labels"]["org.example.fixture"], "b");
    // The slice `static/*` is its own layer before the rest of the app (static/sub/deep.css is not
    // matched by `*`, so it stays in the remainder).
    let lm: Value =
        serde_json::from_str(cfg1["config"]["Labels"]["io.buildpacks.lifecycle.metadata"].as_str().unwrap()).unwrap();
    assert_eq!(lm["app"].as_array().unwrap().len(), 2, "{lm}");
    let hist: Vec<String> = cfg1["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(hist.contains(&"application slice 1".to_string()) && hist.contains(&"application".to_string()), "{hist:?}");
    let r = cx.run(&[
        "run",
        "--entrypoint",
        "cat",
        "//app:img",
        "--",
        "/workspace/static/site.css",
        "/workspace/static/sub/deep.css",
    ]);
    assert_eq!(r.stdout, "body{}\nx\n", "{}", r.stderr);
    // Generated app files are in the app layer.
    let r = cx.run(&["run", "--entrypoint", "cat", "//app:img", "--", "/workspace/generated.txt"]);
    assert_eq!(r.stdout.trim(), "generated");
    // Second build after an app change: the cache layer is restored with contents, the launch layer
    // with metadata only, and A reuses it by not recreating it: same diff_id in the new image.
    cx.write("app/app.txt", "v2\n");
    let b2 = ok(&cx, &["//app:img"]);
    let out2 = b2.output();
    assert!(out2.contains("A: cache count 2"), "{out2}");
    assert!(out2.contains("A: reusing runtime layer from the previous image"), "{out2}");
    let md = |cfg: &Value| -> Value {
        serde_json::from_str(cfg["config"]["Labels"]["io.buildpacks.lifecycle.metadata"].as_str().unwrap()).unwrap()
    };
    let cfg2 = config_of(&cx, "app/img");
    assert_eq!(
        md(&cfg1)["buildpacks"][0]["layers"]["runtime"]["sha"],
        md(&cfg2)["buildpacks"][0]["layers"]["runtime"]["sha"]
    );
    assert_eq!(md(&cfg2)["buildpacks"][0]["layers"]["runtime"]["data"]["generation"], "1");
    let r = cx.run(&["run", "--entrypoint", "/cnb/process/a-only", "//app:img"]);
    assert_eq!(r.stdout.trim(), "runtime-v1", "the reused layer is in the image: {}", r.stderr);
}

#[test]
fn detection_picks_the_first_passing_group_and_reports_failures() {
    // layers-b requires `tool` which only layers-a provides: alone it fails plan resolution.
    let cx = fixture_workspace(
        &["layers-a", "layers-b"],
        "[[\"//bps:layers-b\"], [\"//bps:layers-a\", optional(\"//bps:layers-b\")]]",
        &[("app.txt", "x")],
        "{}",
    );
    let b = ok(&cx, &["//app:img"]);
    let bm: Value = serde_json::from_str(
        config_of(&cx, "app/img")["config"]["Labels"]["io.buildpacks.build.metadata"].as_str().unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = bm["buildpacks"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fixture/layers-a", "fixture/layers-b"], "group 2 with the optional member");
    drop(b);
    // No app.txt: layers-a fails detection, layers-b alone has an unmet requirement → no group.
    let cx = fixture_workspace(
        &["layers-a", "layers-b"],
        "[[\"//bps:layers-a\"], [\"//bps:layers-b\"]]",
        &[("other.txt", "x")],
        "{}",
    );
    let b = build(&cx, &["//app:img"]);
    assert_eq!(b.code, 1);
    let err: String =
        b.events.iter().filter(|e| e["type"] == "failed").map(|e| e["error"].as_str().unwrap().to_string()).collect();
    assert!(err.contains("fixture/layers-a") && err.contains("fixture/layers-b"), "{err}");
}

#[test]
fn hostile_buildpack_is_contained_and_never_root() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let cx = fixture_workspace(
        &["hostile"],
        "[[\"//bps:hostile\"]]",
        &[("x", "x")],
        &format!("{{\"SECRET_PATH\": \"{}\", \"HOST_PORT\": \"{port}\"}}", secret.display()),
    );
    let b = build(&cx, &["//app:img"]);
    let out = b.output();
    assert_eq!(b.code, 0, "{out}\n{}", b.stderr);
    assert!(out.contains("HOSTILE-CONTAINED") && !out.contains("ESCAPE"), "{out}");
    assert!(listener.accept().is_err(), "no connection reached the host listener");
    assert!(!std::path::Path::new("/etc/hostile").exists());
    // No process of the sandbox survives the build.
    let leftovers =
        std::process::Command::new("sh").args(["-c", "ps -eo args | grep -c '^sleep 3171$'"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&leftovers.stdout).trim(), "0");
}

#[test]
fn malformed_buildpack_files_are_named() {
    let cx = fixture_workspace(
        &["layers-a", "layers-b"],
        "[[\"//bps:layers-a\", \"//bps:layers-b\"]]",
        &[("app.txt", "x")],
        "{}",
    );
    cx.write("bps/layers-a/buildpack.toml", "api = \"0.3\"\n[buildpack]\nid = \"fixture/layers-a\"\nversion = \"1\"\n");
    let b = build(&cx, &["//app:img"]);
    assert_eq!(b.code, 2, "a workspace buildpack's own buildpack.toml is the workspace's to fix");
    let err: String =
        b.events.iter().filter(|e| e["type"] == "failed").map(|e| e["error"].as_str().unwrap().to_string()).collect();
    assert!(err.contains("0.3") && err.contains("buildpack.toml"), "{err}");
    // A <layer>.toml with types at the top level is an error naming the buildpack and file.
    let cx = fixture_workspace(
        &["layers-a", "layers-b"],
        "[[\"//bps:layers-a\", \"//bps:layers-b\"]]",
        &[("app.txt", "x")],
        "{}",
    );
    let build_sh = std::fs::read_to_string(cx.root().join("bps/layers-a/bin/build")).unwrap();
    cx.write(
        "bps/layers-a/bin/build",
        &build_sh.replace(
            "printf '[types]\\ncache = true\\n' > \"$L/ccache.toml\"",
            "printf 'cache = true\\n' > \"$L/ccache.toml\"",
        ),
    );
    let b = build(&cx, &["//app:img"]);
    assert_eq!(b.code, 1);
    let err: String =
        b.events.iter().filter(|e| e["type"] == "failed").map(|e| e["error"].as_str().unwrap().to_string()).collect();
    assert!(err.contains("fixture/layers-a") && err.contains("ccache.toml"), "{err}");
}

/// The `launch.toml` line every inline test buildpack writes (one default `web` process).
const WEB_PROCESS: &str =
    "printf '[[processes]]\\ntype = \"web\"\\ncommand = [\"true\"]\\ndefault = true\\n' > \"$1/launch.toml\"";

/// Writes buildpacks `bps/<name>` (API 0.10, linux target plus `targets_extra`), each with the
/// given `bin/detect` and `bin/build` scripts, and `bps/BUILD.star` listing them.
fn write_buildpacks(cx: &TestContext, id_prefix: &str, bps: &[(&str, &str, String, String)]) {
    use std::os::unix::fs::PermissionsExt;
    let mut bp_build = String::new();
    for (name, targets_extra, detect, build) in bps {
        cx.write(
            &format!("bps/{name}/buildpack.toml"),
            &format!(
                "api = \"0.10\"\n[buildpack]\nid = \"{id_prefix}/{name}\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n{targets_extra}"
            ),
        );
        cx.write(&format!("bps/{name}/bin/detect"), &format!("#!/bin/sh\n{detect}\n"));
        cx.write(&format!("bps/{name}/bin/build"), &format!("#!/bin/sh\nset -e\n{build}\n"));
        for f in ["bin/detect", "bin/build"] {
            let p = cx.root().join(format!("bps/{name}/{f}"));
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        bp_build.push_str(&format!("buildpack(name = \"{name}\", srcs = glob([\"{name}/**\"]))\n"));
    }
    cx.write("bps/BUILD.star", &bp_build);
}

/// The lifecycle's detector stops at the first group that passes: buildpacks of later groups never
/// run `bin/detect` (their output would show buildpacks that never mattered).
#[test]
fn detect_stops_at_the_first_passing_group() {
    let cx = fixture_workspace(&[], "[[\"//bps:first\"], [\"//bps:second\"]]", &[("app.txt", "x\n")], "{}");
    write_buildpacks(
        &cx,
        "order",
        &[
            ("first", "", "echo FIRST-DETECT-RAN\nexit 0".into(), WEB_PROCESS.into()),
            ("second", "", "echo SECOND-DETECT-RAN\nexit 0".into(), WEB_PROCESS.into()),
        ],
    );
    let b = ok(&cx, &["//app:img"]);
    let out = b.output();
    assert!(out.contains("FIRST-DETECT-RAN"), "{out}");
    assert!(!out.contains("SECOND-DETECT-RAN"), "a buildpack of a later group ran detect:\n{out}");

    // When the first group fails, the second one runs and is chosen.
    cx.write("bps/first/bin/detect", "#!/bin/sh\necho FIRST-DETECT-RAN\nexit 100\n");
    let b = ok(&cx, &["//app:img"]);
    let out = b.output();
    assert!(out.contains("FIRST-DETECT-RAN") && out.contains("SECOND-DETECT-RAN"), "{out}");
}

/// The lifecycle runs a build's buildpacks in one container, so they share `/tmp` (libcnb's
/// tracing hands files to later buildpacks there): a file the first buildpack leaves in /tmp is
/// there for the second.
#[test]
fn buildpacks_of_one_build_share_tmp() {
    let cx = fixture_workspace(&[], "[[\"//bps:first\", \"//bps:second\"]]", &[("app.txt", "x\n")], "{}");
    write_buildpacks(
        &cx,
        "tmp",
        &[
            ("first", "", "exit 0".into(), format!("echo handed-over > /tmp/handoff\n{WEB_PROCESS}")),
            ("second", "", "exit 0".into(), format!("echo \"SECOND-SAW: $(cat /tmp/handoff)\"\n{WEB_PROCESS}")),
        ],
    );
    let b = ok(&cx, &["//app:img"]);
    assert!(b.output().contains("SECOND-SAW: handed-over"), "{}", b.output());
}

/// `CNB_TARGET_DISTRO_*` come from the run image's `io.buildpacks.base.distro.*` labels (the
/// example build image has no /etc/os-release), and a buildpack naming distros matches only a
/// base that names a matching one — as the lifecycle does (libcnb buildpacks refuse to detect
/// without a distro).
#[test]
fn target_distro_comes_from_the_run_image_labels() {
    let cx = fixture_workspace(&[], "[[\"//bps:first\"], [\"//bps:second\"]]", &[("app.txt", "x\n")], "{}");
    // The build image has no /etc/os-release; the run image's labels name the distro.
    std::fs::remove_file(cx.root().join("stacks/rootfs/etc/os-release")).unwrap();
    let stacks = std::fs::read_to_string(cx.root().join("stacks/BUILD.star")).unwrap();
    let stacks = stacks
        .replace("\"io.buildpacks.base.distro.name\": \"busybox\"", "\"io.buildpacks.base.distro.name\": \"labelled\"")
        .replace("\"io.buildpacks.base.distro.version\": \"1\"", "\"io.buildpacks.base.distro.version\": \"7\"");
    assert!(stacks.contains("labelled") && stacks.contains("\"7\""), "the example stack changed; update this test");
    cx.write("stacks/BUILD.star", &stacks);
    let detect = |name: &str| format!("echo \"{name} DISTRO=$CNB_TARGET_DISTRO_NAME:$CNB_TARGET_DISTRO_VERSION\"");
    write_buildpacks(
        &cx,
        "distro",
        &[
            (
                "first",
                "[[targets.distros]]\nname = \"ubuntu\"\nversion = \"22.04\"\n",
                detect("first"),
                WEB_PROCESS.into(),
            ),
            (
                "second",
                "[[targets.distros]]\nname = \"labelled\"\nversion = \"7\"\n",
                detect("second"),
                WEB_PROCESS.into(),
            ),
        ],
    );
    let b = ok(&cx, &["//app:img"]);
    let out = b.output();
    assert!(!out.contains("first DISTRO"), "an ubuntu buildpack ran detect on a busybox base:\n{out}");
    assert!(out.contains("second DISTRO=labelled:7"), "{out}");
}

/// A build that changes only a cache-only layer (a counter) gives the same image: export reads
/// only launch layers, app and config layers, so it is a cache hit.
#[test]
fn a_cache_only_layer_change_does_not_rerun_export() {
    let cx = fixture_workspace(
        &["layers-a", "layers-b"],
        "[[\"//bps:layers-a\", \"//bps:layers-b\"]]",
        &[("app.txt", "v1\n")],
        "{}",
    );
    let first = ok(&cx, &["//app:img"]);
    // An edit to layers-b that changes nothing it writes: build reruns, the counter moves.
    let p = cx.root().join("bps/layers-b/bin/build");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("{text}\n# a comment\n")).unwrap();
    let b = ok(&cx, &["//app:img"]);
    assert!(b.output().contains("A: cache count 2"), "{}", b.output());
    let outcome = |action: &str| {
        b.events
            .iter()
            .find(|e| e["type"] == "finished" && e["label"] == "//app:img" && e["action"] == action)
            .map(|e| e["outcome"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(outcome("build"), "executed");
    assert_eq!(outcome("export"), "cached_local", "{:#?}", b.events);
    assert_eq!(first.summary["targets"], b.summary["targets"]);
}
