//! Supply chain: the buildpacks' CNB SBOM files in the image's SBOM layer (and read back with
//! `cbuild sbom`), cbuild's own SBOMs (SPDX 2.3, CycloneDX 1.5) checked by independent validators,
//! provenance, the attestations attached in the layout and in a real registry (tag-schema
//! fallback), and `cbuild verify`.

use crate::common;
use std::path::Path;

use common::TestContext;
use serde_json::Value;

/// What the fixture buildpack writes as its launch SBOM (CycloneDX) and its layer's (SPDX).
const LAUNCH_CDX: &str = r#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[{"type":"library","name":"fixture-runtime","version":"1.2.3"}]}"#;
const LAYER_SPDX: &str = r#"{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","name":"deps"}"#;

/// A workspace on the busybox stack with one buildpack (`fixture/sbom`, API 0.10) that writes a
/// launch SBOM, a build SBOM, an SBOM for its launch+cache layer `deps` and one for its cache-only
/// layer `tools`; `bin/build` reports which layer SBOMs were restored.
fn sbom_workspace(extra_build: &str) -> TestContext {
    use std::os::unix::fs::PermissionsExt;
    let cx = TestContext::new();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    common::copy_tree(&ex.join("stacks"), &cx.root().join("stacks"));
    cx.write(
        "bps/sbom/buildpack.toml",
        "api = \"0.10\"\n[buildpack]\nid = \"fixture/sbom\"\nversion = \"1.0.0\"\n\
         sbom-formats = [\"application/vnd.cyclonedx+json\", \"application/spdx+json\"]\n[[targets]]\nos = \"linux\"\n",
    );
    cx.write("bps/sbom/bin/detect", "#!/bin/sh\nexit 0\n");
    cx.write(
        "bps/sbom/bin/build",
        &format!(
            r#"#!/bin/sh
set -e
L="$1"
for f in deps.sbom.spdx.json tools.sbom.cdx.json launch.sbom.cdx.json build.sbom.cdx.json; do
  if [ -f "$L/$f" ]; then echo "restored $f"; fi
done
mkdir -p "$L/deps" "$L/tools"
echo dep > "$L/deps/dep.txt"
echo tool > "$L/tools/tool.txt"
printf '[types]\nlaunch = true\ncache = true\n' > "$L/deps.toml"
printf '[types]\ncache = true\n' > "$L/tools.toml"
printf '%s' '{LAUNCH_CDX}' > "$L/launch.sbom.cdx.json"
printf '%s' '{LAYER_SPDX}' > "$L/deps.sbom.spdx.json"
printf '%s' '{{"bomFormat":"CycloneDX","specVersion":"1.5","version":1}}' > "$L/tools.sbom.cdx.json"
printf '%s' '{{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"metadata":{{"component":{{"type":"application","name":"build-tools"}}}}}}' > "$L/build.sbom.cdx.json"
printf '[[processes]]\ntype = "web"\ncommand = ["true"]\ndefault = true\n' > "$L/launch.toml"
{extra_build}
"#
        ),
    );
    for f in ["bin/detect", "bin/build"] {
        let p = cx.root().join("bps/sbom").join(f);
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    cx.write("bps/BUILD.star", "buildpack(name = \"sbom\", srcs = glob([\"sbom/**\"]))\n");
    cx.write("builders/BUILD.star", "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:sbom\"]])\n");
    cx.write("app/app.txt", "v1\n");
    cx.write(
        "app/BUILD.star",
        "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//builders:b\")\n",
    );
    cx
}

/// The JSON summary and the output lines of the buildpacks of `cbuild build --json`.
fn build_json(cx: &TestContext, pats: &[&str]) -> (i32, Vec<Value>, String) {
    let mut a = vec!["build", "--json"];
    a.extend_from_slice(pats);
    let r = cx.run(&a);
    let events: Vec<Value> = r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (r.code, events, r.stderr)
}

fn output_lines(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "output").map(|e| format!("{}\n", e["line"].as_str().unwrap_or(""))).collect()
}

fn layout_json(cx: &TestContext, layout: &str, digest: &str) -> Value {
    let p = cx.root().join(layout).join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn image_manifest(cx: &TestContext, layout: &str) -> (String, Value) {
    let idx: Value = serde_json::from_slice(&std::fs::read(cx.root().join(layout).join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m = layout_json(cx, layout, &d);
    (d, m)
}

#[test]
fn buildpack_sboms_are_in_the_sbom_layer_at_the_spec_paths_and_read_back() {
    let cx = sbom_workspace("");
    let (code, events, stderr) = build_json(&cx, &["//app:img"]);
    assert_eq!(code, 0, "{stderr}\n{events:?}");
    let (_, m) = image_manifest(&cx, "cbuild-out/app/img");
    let cfg = layout_json(&cx, "cbuild-out/app/img", m["config"]["digest"].as_str().unwrap());
    let labels = &cfg["config"]["Labels"];
    let lm: Value = serde_json::from_str(labels["io.buildpacks.lifecycle.metadata"].as_str().unwrap()).unwrap();
    let sbom_sha = lm["sbom"]["sha"].as_str().expect("the lifecycle metadata names the SBOM layer").to_string();
    let diff_ids: Vec<&str> = cfg["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    let at = diff_ids.iter().position(|d| *d == sbom_sha).expect("the SBOM layer is in the image");
    // After the launch layers, before the app (the lifecycle's order).
    let hist: Vec<&str> = cfg["history"].as_array().unwrap().iter().map(|h| h["created_by"].as_str().unwrap_or("")).collect();
    assert_eq!(hist[at], "sbom", "{hist:?}");
    assert_eq!(hist[at - 1], "buildpack:fixture/sbom:deps", "{hist:?}");
    assert_eq!(hist[at + 1], "application", "{hist:?}");
    // `bom` is left out of the build metadata (Platform API ≥ 0.9).
    let bm: Value = serde_json::from_str(labels["io.buildpacks.build.metadata"].as_str().unwrap()).unwrap();
    assert!(bm.get("bom").is_none(), "{bm}");

    // In the image at the spec paths (as a container sees them).
    for (path, want) in [
        ("/layers/sbom/launch/fixture_sbom/sbom.cdx.json", LAUNCH_CDX),
        ("/layers/sbom/launch/fixture_sbom/deps/sbom.spdx.json", LAYER_SPDX),
    ] {
        let r = cx.run(&["run", "--entrypoint", "cat", "//app:img", "--", path]);
        assert_eq!((r.code, r.stdout.as_str()), (0, want), "{path}: {}", r.stderr);
    }
    // The cache-only layer's SBOM and the build SBOM are not in the image.
    let r = cx.run(&["run", "--entrypoint", "find", "//app:img", "--", "/layers/sbom"]);
    assert!(!r.stdout.contains("tools") && !r.stdout.contains("/build"), "{}", r.stdout);

    // Read back.
    let out = tempfile::tempdir().unwrap();
    let r = cx.run(&["sbom", "//app:img", "-o", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let read = |rel: &str| std::fs::read_to_string(out.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(read("layers/sbom/launch/fixture_sbom/sbom.cdx.json"), LAUNCH_CDX);
    assert_eq!(read("layers/sbom/launch/fixture_sbom/deps/sbom.spdx.json"), LAYER_SPDX);
    assert!(read("layers/sbom/build/fixture_sbom/sbom.cdx.json").contains("build-tools"));

    // Rebuild after an app change: the SBOMs of the cached and launch layers are restored (the
    // launch and build SBOMs are not), and the image's SBOM layer is the same.
    cx.write("app/app.txt", "v2\n");
    let (code, events, stderr) = build_json(&cx, &["//app:img"]);
    assert_eq!(code, 0, "{stderr}");
    let out2 = output_lines(&events);
    assert!(out2.contains("restored deps.sbom.spdx.json") && out2.contains("restored tools.sbom.cdx.json"), "{out2}");
    assert!(!out2.contains("restored launch.sbom") && !out2.contains("restored build.sbom"), "{out2}");
    let (_, m2) = image_manifest(&cx, "cbuild-out/app/img");
    let cfg2 = layout_json(&cx, "cbuild-out/app/img", m2["config"]["digest"].as_str().unwrap());
    let lm2: Value =
        serde_json::from_str(cfg2["config"]["Labels"]["io.buildpacks.lifecycle.metadata"].as_str().unwrap()).unwrap();
    assert_eq!(lm2["sbom"]["sha"], sbom_sha);
}

#[test]
fn an_undeclared_or_unknown_sbom_format_fails_the_build_naming_the_file() {
    let cx = sbom_workspace("printf '{}' > \"$L/launch.sbom.syft.json\"");
    let r = cx.run(&["build", "//app:img"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("/layers/fixture_sbom/launch.sbom.syft.json"), "{}", r.stderr);
    assert!(r.stderr.contains("undeclared SBOM media type `application/vnd.syft+json`"), "{}", r.stderr);
    let cx = sbom_workspace("printf '{}' > \"$L/deps.sbom.xml.json\"");
    let r = cx.run(&["build", "//app:img"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("unsupported SBOM file format") && r.stderr.contains("deps.sbom.xml.json"), "{}", r.stderr);
    // A symlink where an SBOM file belongs is not followed.
    let cx = sbom_workspace("rm -f \"$L/launch.sbom.cdx.json\"; ln -s /etc/passwd \"$L/launch.sbom.cdx.json\"");
    let r = cx.run(&["build", "//app:img"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("launch.sbom.cdx.json"), "{}", r.stderr);
}
