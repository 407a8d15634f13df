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
    cx.write(
        "builders/BUILD.star",
        "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:sbom\"]])\n",
    );
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
    let idx: Value =
        serde_json::from_slice(&std::fs::read(cx.root().join(layout).join("index.json")).unwrap()).unwrap();
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
    let diff_ids: Vec<&str> =
        cfg["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    let at = diff_ids.iter().position(|d| *d == sbom_sha).expect("the SBOM layer is in the image");
    // After the launch layers, before the app (the lifecycle's order).
    let hist: Vec<&str> =
        cfg["history"].as_array().unwrap().iter().map(|h| h["created_by"].as_str().unwrap_or("")).collect();
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
    assert!(
        r.stderr.contains("unsupported SBOM file format") && r.stderr.contains("deps.sbom.xml.json"),
        "{}",
        r.stderr
    );
    // A symlink where an SBOM file belongs is not followed.
    let cx = sbom_workspace("rm -f \"$L/launch.sbom.cdx.json\"; ln -s /etc/passwd \"$L/launch.sbom.cdx.json\"");
    let r = cx.run(&["build", "//app:img"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("launch.sbom.cdx.json"), "{}", r.stderr);
}

/// The shared `.deb` download cache of the tests (as in debian_examples.rs).
fn debs() -> std::path::PathBuf {
    let d = std::env::temp_dir().join("cbuild-test-debs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The venv python with the independent validators (scripts/install-deps.sh); `None` (after
/// `skip_unless_ci`) when it is missing.
fn validators() -> Option<std::path::PathBuf> {
    let venv =
        std::env::var_os("CBUILD_TOOLS_VENV").map(std::path::PathBuf::from).unwrap_or("/opt/cbuild-tools/venv".into());
    let py = venv.join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import spdx_tools, cyclonedx.validation.json, in_toto_attestation"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::skip_unless_ci(&format!("the SBOM validators in `{}` (scripts/install-deps.sh)", venv.display()));
        return None;
    }
    Some(venv)
}

/// Runs scripts/validate-sbom.py and `pyspdxtools -i` (SPDX files) on `files`; panics naming the
/// problems.
fn validate(venv: &Path, files: &[std::path::PathBuf]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate-sbom.py");
    let out = std::process::Command::new(venv.join("bin/python")).arg(script).args(files).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("OK ")).count(), files.len(), "{text}");
    for f in files.iter().filter(|f| f.to_string_lossy().ends_with(".spdx.json")) {
        let out = std::process::Command::new(venv.join("bin/pyspdxtools")).arg("-i").arg(f).output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "pyspdxtools -i {}: {}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The referrers layout beside an image layout: per title, (artifact manifest, document bytes).
fn attached(cx: &TestContext, layout: &str) -> std::collections::BTreeMap<String, (Value, Vec<u8>)> {
    let dir = format!("{layout}.referrers");
    let idx: Value = serde_json::from_slice(&std::fs::read(cx.root().join(&dir).join("index.json")).unwrap()).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for d in idx["manifests"].as_array().unwrap() {
        let m = layout_json(cx, &dir, d["digest"].as_str().unwrap());
        assert_eq!(d["artifactType"], m["artifactType"]);
        let l = &m["layers"][0];
        let p =
            cx.root().join(&dir).join("blobs/sha256").join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let title = l["annotations"]["org.opencontainers.image.title"].as_str().unwrap().to_string();
        out.insert(title, (m.clone(), std::fs::read(p).unwrap()));
    }
    out
}

/// Writes each attached document of `layout` to `dir` under its title; returns the paths.
fn write_attached(cx: &TestContext, layout: &str, dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for (title, (_, bytes)) in attached(cx, layout) {
        let name = format!("{}-{title}", layout.replace('/', "_"));
        std::fs::write(dir.join(&name), bytes).unwrap();
        v.push(dir.join(name));
    }
    v
}

/// (name, version, sha256) of every package of a lock file.
fn lock_packages(path: &Path) -> Vec<(String, String, String)> {
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut v: Vec<(String, String, String)> = t["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("name"), s("version"), s("sha256").trim_start_matches("sha256:").to_string())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn image_sboms_pass_independent_validators_and_list_the_lock_packages() {
    let Some(venv) = validators() else { return };
    let cx = TestContext::from_examples();
    let pats = ["//stacks/debian:run", "//services/hello-py:image", "//services/api:image", "//tools:tool"];
    let out = cx.cmd().env("CBUILD_DEBIAN_CACHE", debs()).arg("build").args(pats).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for l in ["stacks/debian/run", "services/hello-py/image", "services/api/image", "tools/tool"] {
        let layout = format!("cbuild-out/{l}");
        let (digest, _) = image_manifest(&cx, &layout);
        let att = attached(&cx, &layout);
        assert_eq!(att.keys().collect::<Vec<_>>(), ["provenance.intoto.json", "sbom.cdx.json", "sbom.spdx.json"]);
        for (m, _) in att.values() {
            assert_eq!(m["subject"]["digest"], digest.as_str(), "{l}: the subject is the image manifest");
        }
        files.extend(write_attached(&cx, &layout, docs.path()));
    }
    validate(&venv, &files);

    // The Debian images' SBOMs list exactly the run lock's packages (name, version, .deb sha256):
    // the stack's run image itself, and the Python app on it.
    let want = lock_packages(&cx.root().join("stacks/debian/run.lock"));
    assert!(want.len() > 10, "{want:?}");
    for layout in ["cbuild-out/stacks/debian/run", "cbuild-out/services/hello-py/image"] {
        let att = attached(&cx, layout);
        let spdx: Value = serde_json::from_slice(&att["sbom.spdx.json"].1).unwrap();
        let mut got: Vec<(String, String, String)> = spdx["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-Deb-"))
            .map(|p| {
                let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
                assert!(
                    purl.starts_with("pkg:deb/debian/") && (purl.contains("arch=amd64") || purl.contains("arch=all")),
                    "{purl}"
                );
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["versionInfo"].as_str().unwrap().to_string(),
                    p["checksums"][0]["checksumValue"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "{layout}: SPDX packages vs run.lock");
        // Licences as the packages' DEP-5 copyright files in the image state them.
        let dash = spdx["packages"].as_array().unwrap().iter().find(|p| p["name"] == "dash").unwrap();
        assert!(dash["licenseDeclared"].as_str().unwrap().contains("GPL-2.0-or-later"), "{dash}");
        assert!(dash["licenseComments"].as_str().unwrap().contains("/usr/share/doc/dash/copyright"), "{dash}");
        let cdx: Value = serde_json::from_slice(&att["sbom.cdx.json"].1).unwrap();
        let mut got: Vec<(String, String, String)> = cdx["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["purl"].as_str().unwrap_or("").starts_with("pkg:deb/"))
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap().to_string();
                (s("name"), s("version"), c["hashes"][0]["content"].as_str().unwrap().to_string())
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "{layout}: CycloneDX components vs run.lock");
        let dash = cdx["components"].as_array().unwrap().iter().find(|c| c["name"] == "dash").unwrap();
        assert!(
            dash["licenses"].as_array().unwrap().iter().any(|l| l["license"]["id"] == "GPL-2.0-or-later"),
            "{dash}"
        );
    }
    // The app's provenance names the buildpack, both stack images and the build lock's packages.
    let prov: Value =
        serde_json::from_slice(&attached(&cx, "cbuild-out/services/hello-py/image")["provenance.intoto.json"].1)
            .unwrap();
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    let names: Vec<&str> = deps.iter().filter_map(|d| d["name"].as_str()).collect();
    for n in
        ["services/hello-py/BUILD.star", "stacks/debian/build.lock", "stacks/debian/run.lock", "//stacks/debian:build"]
    {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("examples/python@")), "{names:?}");
    let build_lock = lock_packages(&cx.root().join("stacks/debian/build.lock"));
    let grep = deps.iter().filter_map(|d| d["uri"].as_str()).filter(|u| u.starts_with("pkg:deb/")).count();
    assert!(grep >= build_lock.len(), "every package of both locks: {grep} < {}", build_lock.len());
    assert_eq!(
        prov["predicate"]["runDetails"]["builder"]["id"],
        format!("urn:cbuild:builder:{}", env!("CARGO_PKG_VERSION"))
    );

    // Deterministic: another workspace path and an empty cache give the same bytes.
    let other = TestContext::from_examples();
    let out = other.cmd().env("CBUILD_DEBIAN_CACHE", debs()).arg("build").arg("//stacks/debian:run").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(attached(&cx, "cbuild-out/stacks/debian/run"), attached(&other, "cbuild-out/stacks/debian/run"));
}

#[test]
fn the_image_sbom_links_the_buildpack_sboms() {
    let cx = sbom_workspace("");
    let (code, _, stderr) = build_json(&cx, &["//app:img"]);
    assert_eq!(code, 0, "{stderr}");
    let att = attached(&cx, "cbuild-out/app/img");
    let spdx: Value = serde_json::from_slice(&att["sbom.spdx.json"].1).unwrap();
    let files = spdx["files"].as_array().unwrap();
    let f = files
        .iter()
        .find(|f| f["fileName"] == "./layers/sbom/launch/fixture_sbom/sbom.cdx.json")
        .unwrap_or_else(|| panic!("{files:?}"));
    assert!(f["checksums"].as_array().unwrap().iter().any(|c| c["checksumValue"] == sha256_hex(LAUNCH_CDX)), "{f}");
    assert!(files.iter().any(|f| f["fileName"] == "./layers/sbom/launch/fixture_sbom/deps/sbom.spdx.json"));
    let cdx: Value = serde_json::from_slice(&att["sbom.cdx.json"].1).unwrap();
    let bp = cdx["components"].as_array().unwrap().iter().find(|c| c["name"] == "fixture/sbom").unwrap();
    assert_eq!(bp["scope"], "excluded");
    let refs = bp["externalReferences"].as_array().unwrap();
    assert!(
        refs.iter().any(|r| r["type"] == "bom"
            && r["url"] == "file:///layers/sbom/launch/fixture_sbom/sbom.cdx.json"
            && r["hashes"][0]["content"] == sha256_hex(LAUNCH_CDX)),
        "{refs:?}"
    );
    if let Some(venv) = validators() {
        let d = tempfile::tempdir().unwrap();
        validate(&venv, &write_attached(&cx, "cbuild-out/app/img", d.path()));
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn inspect_lists_the_attachments_and_sbom_writes_them() {
    let cx = sbom_workspace("");
    let r = cx.run(&["inspect", "//app:img"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for t in ["attached", "sbom.spdx.json", "sbom.cdx.json", "provenance.intoto.json", "application/vnd.in-toto+json"] {
        assert!(r.stdout.contains(t), "{t}: {}", r.stdout);
    }
    let r = cx.run(&["inspect", "--json", "//app:img"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["referrers"]["layout"], "cbuild-out/app/img.referrers");
    assert_eq!(v["referrers"]["artifacts"].as_array().unwrap().len(), 3, "{v}");
    // `cbuild sbom` writes the attached documents beside the CNB files.
    let att = attached(&cx, "cbuild-out/app/img");
    let out = tempfile::tempdir().unwrap();
    let r = cx.run(&["sbom", "//app:img", "-o", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for t in ["sbom.spdx.json", "sbom.cdx.json", "provenance.intoto.json"] {
        assert_eq!(std::fs::read(out.path().join(t)).unwrap(), att[t].1, "{t}");
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("layers/sbom/launch/fixture_sbom/sbom.cdx.json")).unwrap(),
        LAUNCH_CDX
    );
}

/// `skopeo inspect --raw docker://REF` (plain HTTP), as JSON.
fn skopeo_raw(reference: &str) -> Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect --raw {reference}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `curl -s -o BODY -w %{http_code} URL` → (status, body).
fn curl(url: &str) -> (String, Vec<u8>) {
    let out = std::process::Command::new("curl").args(["-s", "-w", "\n%{http_code}", url]).output().expect("run curl");
    let mut body = out.stdout;
    let nl = body.iter().rposition(|b| *b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[nl + 1..]).to_string();
    body.truncate(nl);
    (code, body)
}

#[test]
fn push_attaches_sboms_and_provenance_found_through_the_tag_schema_fallback() {
    let reg = common::registry::Registry::shared();
    let cx = sbom_workspace("");
    let repo = reg.repo("sc/app");
    let tag = reg.tag("sc/app:1");
    let r = cx.run(&["push", "//app:img", "--tag", &tag]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("through the tag-schema fallback"), "{}", r.stderr);
    let (digest, _) = image_manifest(&cx, "cbuild-out/app/img");
    let local = attached(&cx, "cbuild-out/app/img");

    // Distribution 2.8 has no referrers API ...
    let (code, _) = curl(&format!("http://{}/v2/{repo}/referrers/{digest}", reg.host));
    assert_eq!(code, "404");
    // ... so the referrers are an index under the tag `sha256-<hex>` (OCI 1.1 tag schema).
    let fallback = format!("{}/{repo}:{}", reg.host, digest.replace(':', "-"));
    let index = skopeo_raw(&fallback);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let list = index["manifests"].as_array().unwrap();
    let types: Vec<&str> = list.iter().map(|d| d["artifactType"].as_str().unwrap()).collect();
    assert_eq!(types, ["application/spdx+json", "application/vnd.cyclonedx+json", "application/vnd.in-toto+json"]);
    for d in list {
        let m = skopeo_raw(&format!("{}/{repo}@{}", reg.host, d["digest"].as_str().unwrap()));
        assert_eq!(m["subject"]["digest"], digest.as_str(), "the subject is the image manifest");
        assert_eq!(m["artifactType"], d["artifactType"]);
        let layer = &m["layers"][0];
        let title = layer["annotations"]["org.opencontainers.image.title"].as_str().unwrap();
        let (code, body) = curl(&format!("http://{}/v2/{repo}/blobs/{}", reg.host, layer["digest"].as_str().unwrap()));
        assert_eq!(code, "200");
        assert_eq!(body, local[title].1, "{title}: the registry holds the layout's bytes");
    }
    let prov: Value = serde_json::from_slice(&local["provenance.intoto.json"].1).unwrap();
    assert_eq!(prov["subject"][0]["digest"]["sha256"], digest.trim_start_matches("sha256:"));

    // A second tag of the same repository and a second push add nothing to the fallback index.
    let r = cx.run(&["push", "//app:img", "--tag", &tag, "--tag", &reg.tag("sc/app:2")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(skopeo_raw(&fallback)["manifests"].as_array().unwrap().len(), 3);

    // Read back from the registry: the attached documents and the CNB SBOM layer's files.
    let out = tempfile::tempdir().unwrap();
    let r = cx.run(&["sbom", &tag, "-o", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("3 referrers found through the tag-schema fallback"), "{}", r.stderr);
    for t in ["sbom.spdx.json", "sbom.cdx.json", "provenance.intoto.json"] {
        assert_eq!(std::fs::read(out.path().join(t)).unwrap(), local[t].1, "{t}");
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("layers/sbom/launch/fixture_sbom/sbom.cdx.json")).unwrap(),
        LAUNCH_CDX
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("layers/sbom/launch/fixture_sbom/deps/sbom.spdx.json")).unwrap(),
        LAYER_SPDX
    );
}

#[test]
fn verify_finds_the_examples_reproducible_and_names_a_nondeterministic_genrule_and_layer() {
    let cx = TestContext::from_examples();
    let r = cx.cmd().env("CBUILD_DEBIAN_CACHE", debs()).args(["verify", "--json", "//..."]).output().unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&r.stderr));
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["different"], 0, "{v}");
    let targets = v["targets"].as_array().unwrap();
    assert!(targets.len() >= 20, "{v}");
    for l in ["//services/api:image", "//services/hello-py:image", "//stacks/debian:run", "//tools:tool-versioned"] {
        let t = targets.iter().find(|t| t["label"] == l).unwrap_or_else(|| panic!("{l} not verified: {v}"));
        assert_eq!(t["result"], "identical", "{t}");
        assert_eq!(t["recorded"], t["rebuilt"]);
    }
    // The recorded build is `cbuild build`'s: the layouts were written (the rebuild writes none).
    let (digest, _) = image_manifest(&cx, "cbuild-out/services/api/image");
    assert_eq!(targets.iter().find(|t| t["label"] == "//services/api:image").unwrap()["recorded"], digest.as_str());

    // A genrule that writes the time: its image is not reproducible, and verify says where.
    cx.write(
        "stamp/BUILD.star",
        r#"genrule(name = "now", outs = ["now.txt"], cmd = "date +%s%N > now.txt")
layer(name = "now-layer", srcs = [":now"], prefix = "/etc")
oci_image(name = "img", base = "//tools:tool", layers = [":now-layer"])
"#,
    );
    let r = cx.run(&["verify", "//stamp/...", "//tools:tool"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("//tools:tool identical"), "{}", r.stdout);
    let img =
        r.stdout.lines().position(|l| l.starts_with("//stamp:img DIFFERENT")).unwrap_or_else(|| panic!("{}", r.stdout));
    let next: Vec<&str> = r.stdout.lines().skip(img + 1).take(2).collect();
    let (_, base) = image_manifest(&cx, "cbuild-out/tools/tool");
    let n = base["layers"].as_array().unwrap().len();
    assert!(
        next[0].contains(&format!("first differing layer: #{n} `cbuild layer //stamp:now-layer`")),
        "the layer above //tools:tool's {n}: {}",
        r.stdout
    );
    assert!(next[1].contains("first differing action: `//stamp:now` genrule (files now.txt)"), "{}", r.stdout);
    assert!(r.stdout.contains("//stamp:now DIFFERENT"), "{}", r.stdout);
    assert!(r.stdout.contains("files differ: now.txt"), "{}", r.stdout);
    assert!(r.stderr.contains("4 targets rebuilt from an empty cache: 1 identical, 3 different"), "{}", r.stderr);
}

/// An in-memory OCI registry with the referrers API (distribution-spec v1.1): blobs, manifests by
/// tag and digest, `OCI-Subject` on a PUT of a manifest with a subject, `GET …/referrers/<digest>`.
/// Records every request line (`METHOD path`).
fn referrers_api_registry() -> (common::http::FakeServer, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use common::http::{FakeServer, Response};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    type Manifests = HashMap<String, (Vec<u8>, String)>;
    let blobs: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let manifests: Arc<Mutex<Manifests>> = Arc::default();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let log2 = log.clone();
    let sha = |b: &[u8]| {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
    };
    let server = FakeServer::start(move |req| {
        log2.lock().unwrap().push(format!("{} {}", req.method, req.path));
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let query = req.path.split_once('?').map(|x| x.1.to_string()).unwrap_or_default();
        if path == "/v2/" {
            return Response::new(200, "{}");
        }
        let Some(rest) = path.strip_prefix("/v2/") else { return Response::new(404, "") };
        if let Some((_, d)) = rest.split_once("/blobs/uploads/") {
            return match req.method.as_str() {
                "POST" => Response::new(202, "")
                    .header("Location", &format!("/v2/{}/blobs/uploads/u1", rest.split("/blobs/").next().unwrap())),
                "PUT" if !d.is_empty() => {
                    let digest =
                        query.split('&').find_map(|kv| kv.strip_prefix("digest=")).unwrap_or("").replace("%3A", ":");
                    assert_eq!(sha(&req.body), digest, "blob upload");
                    blobs.lock().unwrap().insert(digest, req.body.clone());
                    Response::new(201, "")
                }
                _ => Response::new(405, ""),
            };
        }
        if let Some((_, d)) = rest.split_once("/blobs/") {
            return match blobs.lock().unwrap().get(d) {
                Some(b) => Response::new(200, b.clone()).header("Docker-Content-Digest", d),
                None => Response::new(404, ""),
            };
        }
        if let Some((_, subject)) = rest.split_once("/referrers/") {
            let list: Vec<Value> = manifests
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with("sha256:"))
                .filter_map(|(k, (b, mt))| {
                    let m: Value = serde_json::from_slice(b).ok()?;
                    (m["subject"]["digest"] == subject).then(|| json_descriptor(k, b.len(), mt, &m))
                })
                .collect();
            let body = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": list});
            return Response::new(200, body.to_string())
                .header("Content-Type", "application/vnd.oci.image.index.v1+json");
        }
        if let Some((_, reference)) = rest.split_once("/manifests/") {
            let mut ms = manifests.lock().unwrap();
            return match req.method.as_str() {
                "PUT" => {
                    let d = sha(&req.body);
                    let mt = req.header("Content-Type").unwrap_or_default().to_string();
                    ms.insert(reference.to_string(), (req.body.clone(), mt.clone()));
                    ms.insert(d.clone(), (req.body.clone(), mt));
                    let m: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    let mut r = Response::new(201, "").header("Docker-Content-Digest", &d);
                    if let Some(s) = m["subject"]["digest"].as_str() {
                        r = r.header("OCI-Subject", s);
                    }
                    r
                }
                _ => match ms.get(reference) {
                    Some((b, mt)) => Response::new(200, b.clone())
                        .header("Content-Type", mt)
                        .header("Docker-Content-Digest", &sha(b)),
                    None => Response::new(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
                },
            };
        }
        Response::new(404, "")
    });
    (server, log)
}

fn json_descriptor(digest: &str, size: usize, media_type: &str, m: &Value) -> Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size, "artifactType": m["artifactType"], "annotations": m["annotations"]})
}

#[test]
fn a_registry_with_the_referrers_api_indexes_the_attachments_itself() {
    let (server, log) = referrers_api_registry();
    let cx = TestContext::from_examples();
    let tag = format!("{}/acme/tool:1", server.host());
    let r = cx.run(&["push", "//tools:tool", "--tag", &tag]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("through the referrers API"), "{}", r.stderr);
    let (digest, _) = image_manifest(&cx, "cbuild-out/tools/tool");
    // No fallback tag was written: the registry said it indexed the subject.
    let fallback = format!("/manifests/{}", digest.replace(':', "-"));
    assert!(!log.lock().unwrap().iter().any(|l| l.contains(&fallback)), "{:?}", log.lock().unwrap());
    let out = tempfile::tempdir().unwrap();
    let r = cx.run(&["sbom", &tag, "-o", out.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("3 referrers found through the referrers API"), "{}", r.stderr);
    let local = attached(&cx, "cbuild-out/tools/tool");
    for t in ["sbom.spdx.json", "sbom.cdx.json", "provenance.intoto.json"] {
        assert_eq!(std::fs::read(out.path().join(t)).unwrap(), local[t].1, "{t}");
    }
}
