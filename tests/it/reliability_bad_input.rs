//! Bad-input corpus through the CLI: each class must give a clear error (naming what and where),
//! the right exit code (2 = user/BUILD/configuration error, 1 = build failure), no panic, and
//! leave the cache intact: the good target built before still comes from the cache unchanged,
//! and no action entry exists for the failed action.
//!
//! Covered elsewhere, not repeated: located BUILD diagnostics for 17 kinds of BUILD errors
//! (`cli_load.rs`, snapshot tests), `../`/symlink/hard-link escapes in layers through the API
//! (`oci_images.rs::malicious_layers_are_refused_naming_the_entry`), `.deb` path traversal and
//! malformed `.deb`s (`debian_deb.rs::refuses_dotdot_entries_naming_the_package`,
//! `refuses_escaping_symlinks_and_writing_through_them`, `refuses_malformed_debs_naming_the_package`),
//! malformed buildpack.toml API / `<layer>.toml` shape (`cnb_platform.rs::malformed_buildpack_files_are_named`),
//! a corrupt registry blob (`registry_push_pull.rs::corrupt_registry_blob_is_refused_naming_the_digest`).

use crate::common;
use crate::common::support;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{FakeServer, Response};
use common::registry::Registry;
use support::Ws;

const GOOD: &str = "//tools:tool";

/// A workspace (a copy of examples/) whose cache already holds `//tools:tool`: a copy of one
/// template workspace and cache built once per test binary (copying is faster than building).
fn primed() -> (Ws, BTreeMap<String, String>) {
    // Statics are never dropped: the template's dirs are removed by an atexit hook instead.
    static TEMPLATE: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf, BTreeMap<String, String>)> =
        std::sync::OnceLock::new();
    extern "C" fn remove_template() {
        if let Some((root, cache, _)) = TEMPLATE.get() {
            let _ = std::fs::remove_dir_all(root);
            let _ = std::fs::remove_dir_all(cache);
        }
    }
    let (root, cache, good) = TEMPLATE.get_or_init(|| {
        let ws = support::examples();
        let d = ws.ok(&[GOOD]);
        let cache = ws.cache.clone();
        let owned_cache = ws._own_cache;
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(remove_template) };
        (ws.dir.keep(), owned_cache.map(|c| c.keep()).unwrap_or(cache), d)
    });
    let ws = support::copy_of(root, None);
    common::copy_tree(cache, &ws.cache);
    (ws, good.clone())
}

/// Number of action entries for (label, kind) in the cache database.
fn entries(ws: &Ws, label: &str, kind: Option<&str>) -> i64 {
    let db = ws.cache.join("cache.sqlite");
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    match kind {
        Some(k) => c
            .query_row("SELECT count(*) FROM actions WHERE label = ?1 AND kind = ?2", [label, k], |r| r.get(0))
            .unwrap(),
        None => c.query_row("SELECT count(*) FROM actions WHERE label = ?1", [label], |r| r.get(0)).unwrap(),
    }
}

/// Runs the bad build and checks the common contract; returns the combined output.
fn expect_failure(
    ws: &Ws,
    good: &BTreeMap<String, String>,
    args: &[&str],
    code: i32,
    needles: &[&str],
    failed: Option<(&str, Option<&str>)>,
) -> String {
    let t = Instant::now();
    let o = ws.build(args);
    let all = o.all();
    assert_eq!(o.code, code, "exit code for {args:?}:\n{all}");
    assert!(!all.contains("panicked") && !all.contains("RUST_BACKTRACE"), "a panic: {all}");
    for n in needles {
        assert!(all.contains(n), "the error should mention `{n}`:\n{all}");
    }
    assert!(t.elapsed() < Duration::from_secs(90), "took {:?}", t.elapsed());
    let first = o
        .failures()
        .lines()
        .next()
        .map(String::from)
        .or_else(|| o.stderr.lines().find(|l| l.contains("error")).map(String::from))
        .unwrap_or_default();
    eprintln!("OBSERVED {args:?} exit {} in {:?}: {first}", o.code, t.elapsed());
    if let Some((label, kind)) = failed {
        assert_eq!(entries(ws, label, kind), 0, "a cache entry exists for the failed {label} {kind:?}");
    }
    // The cache is intact: the good target is a pure cache hit with the same digest.
    let again = ws.build(&[GOOD]);
    assert_eq!(again.code, 0, "good build after the bad one: {}", again.all());
    assert_eq!(again.summary()["executed"], 0, "the good target was rebuilt: {}", again.stdout);
    assert_eq!(&again.digests(), good);
    all
}

// ---- BUILD files and settings (exit 2) -------------------------------------------------------

#[test]
fn build_syntax_error() {
    let (ws, good) = primed();
    ws.write("bad/BUILD.star", "layer(name = \"x\", srcs = [\n");
    expect_failure(&ws, &good, &["//bad:x"], 2, &["bad/BUILD.star"], None);
}

#[test]
fn build_type_error() {
    let (ws, good) = primed();
    ws.write("bad/BUILD.star", "layer(name = \"x\", srcs = \"a.txt\", prefix = 3)\n");
    ws.write("bad/a.txt", "a");
    expect_failure(&ws, &good, &["//bad:x"], 2, &["bad/BUILD.star"], None);
}

#[test]
fn build_runtime_error_in_starlark() {
    let (ws, good) = primed();
    ws.write("bad/BUILD.star", "X = {}[\"missing\"]\nlayer(name = \"x\", srcs = [])\n");
    expect_failure(&ws, &good, &["//bad:x"], 2, &["bad/BUILD.star", "missing"], None);
}

#[test]
fn load_cycle() {
    let (ws, good) = primed();
    ws.write("bad/a.star", "load(\"//bad:b.star\", \"B\")\nA = 1\n");
    ws.write("bad/b.star", "load(\"//bad:a.star\", \"A\")\nB = 1\n");
    ws.write("bad/BUILD.star", "load(\":a.star\", \"A\")\n");
    expect_failure(&ws, &good, &["//bad:x"], 2, &["cycle", "a.star", "b.star"], None);
}

#[test]
fn huge_glob_over_the_limit() {
    let (ws, good) = primed();
    for i in 0..60 {
        ws.write(&format!("bad/files/f{i}.txt"), "x");
    }
    ws.write("bad/BUILD.star", "layer(name = \"x\", srcs = glob([\"files/**\"]))\n");
    let o = ws.cmd().env("CBUILD_GLOB_LIMIT", "50").args(["build", "--json", "//bad:x"]).output().unwrap();
    let all = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{all}");
    assert!(all.contains("glob") && all.contains("50") && all.contains("bad/BUILD.star"), "{all}");
    // Under the limit it builds.
    let o = ws.cmd().env("CBUILD_GLOB_LIMIT", "100").args(["build", "--json", "//bad:x"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    expect_failure(&ws, &good, &["//bad:nope"], 2, &["nope"], None);
}

#[test]
fn malformed_label_and_unknown_target_on_the_command_line() {
    let (ws, good) = primed();
    expect_failure(&ws, &good, &["//tools:to ol"], 2, &["invalid label"], None);
    expect_failure(&ws, &good, &["//tools:missing"], 2, &["missing"], None);
}

#[test]
fn garbage_cbuild_toml() {
    let (ws, good) = primed();
    let saved = ws.read("cbuild.toml");
    ws.write("cbuild.toml", "[build\njobs = \"many\"\n");
    let o = ws.build(&[GOOD]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.all().contains("cbuild.toml"), "{}", o.all());
    ws.write("cbuild.toml", saved);
    expect_failure(&ws, &good, &["//tools:missing"], 2, &[], None);
}

#[test]
fn non_utf8_file_name_in_a_package() {
    let (ws, good) = primed();
    ws.write("bad/ok.txt", "ok");
    let name = std::ffi::OsStr::from_bytes(b"bad-\xff\xfe.txt");
    std::fs::write(ws.path("bad").join(name), "x").unwrap();
    ws.write(
        "bad/BUILD.star",
        "layer(name = \"x\", srcs = glob([\"*.txt\"]))\noci_image(name = \"img\", layers = [\":x\"])\n",
    );
    let o = ws.build(&["//bad:img"]);
    let all = o.all();
    assert!(!all.contains("panicked"), "{all}");
    // Either refused with a located error naming the package, or built (and then reproducibly).
    if o.code == 0 {
        assert_eq!(o.digests(), support::clean_digests(ws.root(), &["//bad:img"]));
    } else {
        assert_eq!(o.code, 2, "{all}");
        assert!(all.contains("bad"), "{all}");
    }
    expect_failure(&ws, &good, &["//tools:missing"], 2, &[], None);
}

// ---- genrules (exit 1, no entry) --------------------------------------------------------------

#[test]
fn failing_genrule_and_missing_output() {
    let (ws, good) = primed();
    ws.write("bad/BUILD.star", "genrule(name = \"g\", outs = [\"o.txt\"], cmd = \"echo boom >&2; exit 3\")\ngenrule(name = \"m\", outs = [\"o.txt\"], cmd = \"true\")\n");
    expect_failure(&ws, &good, &["//bad:g"], 1, &["//bad:g", "boom"], Some(("//bad:g", None)));
    expect_failure(&ws, &good, &["//bad:m"], 1, &["//bad:m", "o.txt"], Some(("//bad:m", None)));
}

// ---- buildpacks (exit 1, no entry) ------------------------------------------------------------

const BP_TOML: &str =
    "api = \"0.10\"\n[buildpack]\nid = \"rel/bad\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n";
const DETECT_OK: &str = "#!/bin/sh\nexit 0\n";
const BUILD_OK: &str = "#!/bin/sh\nset -eu\nprintf '[[processes]]\\ntype = \"web\"\\ncommand = [\"true\"]\\ndefault = true\\n' > \"$CNB_LAYERS_DIR/launch.toml\"\n";

/// A workspace with one buildpack `//bps:bad` (given files) and `//app:img` built with it.
fn cnb(bp_toml: &str, detect: &str, build: &str) -> (Ws, BTreeMap<String, String>) {
    let (ws, good) = primed();
    ws.write("bps/bad/buildpack.toml", bp_toml);
    for (f, t) in [("bin/detect", detect), ("bin/build", build)] {
        ws.write(&format!("bps/bad/{f}"), t);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ws.path(&format!("bps/bad/{f}")), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ws.write("bps/BUILD.star", "buildpack(name = \"bad\", srcs = glob([\"bad/**\"]))\n");
    ws.write("bld/BUILD.star", "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:bad\"]])\n");
    ws.write(
        "app/BUILD.star",
        "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//bld:b\")\n",
    );
    ws.write("app/x.txt", "x");
    (ws, good)
}

#[test]
fn sanity_the_fixture_buildpack_builds() {
    let (ws, _) = cnb(BP_TOML, DETECT_OK, BUILD_OK);
    ws.ok(&["//app:img"]);
}

#[test]
fn buildpack_toml_not_toml() {
    let (ws, good) = cnb("api = \"0.10\n[buildpack\nid=", DETECT_OK, BUILD_OK);
    expect_failure(&ws, &good, &["//app:img"], 2, &["buildpack.toml"], Some(("//app:img", Some("build"))));
}

#[test]
fn buildpack_toml_missing_id_and_bad_id() {
    let (ws, good) = cnb("api = \"0.10\"\n[buildpack]\nversion = \"1\"\n", DETECT_OK, BUILD_OK);
    expect_failure(&ws, &good, &["//app:img"], 2, &["buildpack.toml"], Some(("//app:img", Some("build"))));
    let (ws, good) = cnb(&BP_TOML.replace("rel/bad", "app"), DETECT_OK, BUILD_OK);
    expect_failure(&ws, &good, &["//app:img"], 2, &["buildpack.toml", "app"], Some(("//app:img", Some("build"))));
}

#[test]
fn buildpack_toml_errors_name_the_real_file() {
    let (ws, _) = cnb("api = \"0.10\"\n[buildpack]\nversion = \"1\"\n", DETECT_OK, BUILD_OK);
    let o = ws.build(&["//app:img"]);
    assert_eq!(o.code, 2, "a workspace buildpack's own buildpack.toml is the workspace's to fix");
    assert!(o.failures().contains("bps/bad/buildpack.toml"), "names the file that exists: {}", o.failures());
}

#[test]
fn detect_plan_garbage() {
    let (ws, good) = cnb(
        BP_TOML,
        "#!/bin/sh\nprintf '[[requires]\\nname = = \\001\\n' >> \"$CNB_BUILD_PLAN_PATH\"\nexit 0\n",
        BUILD_OK,
    );
    expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad", "plan"], Some(("//app:img", Some("detect"))));
}

#[test]
fn detect_plan_wrong_shape() {
    let (ws, good) = cnb(
        BP_TOML,
        "#!/bin/sh\nprintf 'requires = \"everything\"\\n' >> \"$CNB_BUILD_PLAN_PATH\"\nexit 0\n",
        BUILD_OK,
    );
    expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad"], Some(("//app:img", Some("detect"))));
}

#[test]
fn layer_toml_garbage() {
    let build =
        "#!/bin/sh\nmkdir -p \"$CNB_LAYERS_DIR/l\"\nprintf '[types\\nlaunch = yes\\n' > \"$CNB_LAYERS_DIR/l.toml\"\n";
    let (ws, good) = cnb(BP_TOML, DETECT_OK, build);
    expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad", "l.toml"], Some(("//app:img", Some("build"))));
}

#[test]
fn layer_toml_for_a_bad_layer_name() {
    // A `<layer>.toml` whose layer name escapes the layers dir is refused.
    let build = "#!/bin/sh\nprintf '[types]\\nlaunch = true\\n' > \"$CNB_LAYERS_DIR/..toml\"\nprintf '[types]\\nlaunch = true\\n' > \"$CNB_LAYERS_DIR/launch.toml.toml\"\n";
    let (ws, good) = cnb(BP_TOML, DETECT_OK, build);
    let out = expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad"], Some(("//app:img", Some("build"))));
    assert!(out.contains(".toml"), "{out}");
}

#[test]
fn launch_toml_garbage_and_wrong_types() {
    let (ws, good) = cnb(BP_TOML, DETECT_OK, "#!/bin/sh\nprintf '[[processes]\\n' > \"$CNB_LAYERS_DIR/launch.toml\"\n");
    expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad", "launch.toml"], Some(("//app:img", Some("build"))));
    let (ws, good) = cnb(
        BP_TOML,
        DETECT_OK,
        "#!/bin/sh\nprintf '[[processes]]\\ntype = 5\\ncommand = \"x\"\\n' > \"$CNB_LAYERS_DIR/launch.toml\"\n",
    );
    expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad", "launch.toml"], Some(("//app:img", Some("build"))));
    let (ws, good) = cnb(BP_TOML, DETECT_OK, "#!/bin/sh\nprintf '[[processes]]\\ntype = \"../../etc\"\\ncommand = [\"x\"]\\n' > \"$CNB_LAYERS_DIR/launch.toml\"\n");
    expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad", "launch.toml"], Some(("//app:img", Some("build"))));
}

#[test]
fn buildpack_build_fails_and_detect_errors() {
    let (ws, good) = cnb(BP_TOML, DETECT_OK, "#!/bin/sh\necho 'compiler exploded' >&2\nexit 7\n");
    expect_failure(
        &ws,
        &good,
        &["//app:img"],
        1,
        &["rel/bad", "compiler exploded"],
        Some(("//app:img", Some("build"))),
    );
    let (ws, good) = cnb(BP_TOML, "#!/bin/sh\nexit 42\n", BUILD_OK);
    expect_failure(&ws, &good, &["//app:img"], 1, &["rel/bad"], Some(("//app:img", Some("detect"))));
}

// ---- OCI layouts (oci_import) ------------------------------------------------------------------

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Writes an OCI layout under `imp/layout` with the given layer tar (uncompressed), config and
/// manifest transforms, and an `oci_import` + image using it.
fn layout(
    ws: &Ws,
    layer: &[u8],
    config: Option<&[u8]>,
    manifest_edit: impl Fn(String) -> String,
    index_edit: impl Fn(String) -> String,
) {
    let blobs = ws.path("imp/layout/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        h
    };
    let l = put(layer);
    let default_cfg = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"sha256:{l}\"]}}}}"
    );
    let cfg_bytes = config.map(|c| c.to_vec()).unwrap_or_else(|| default_cfg.into_bytes());
    let c = put(&cfg_bytes);
    let m = manifest_edit(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{c}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:{l}\",\"size\":{}}}]}}",
        cfg_bytes.len(),
        layer.len()
    ));
    let mh = put(m.as_bytes());
    let idx = index_edit(format!(
        "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{mh}\",\"size\":{},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"latest\"}}}}]}}",
        m.len()
    ));
    ws.write("imp/layout/index.json", idx);
    ws.write("imp/layout/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
    ws.write(
        "imp/BUILD.star",
        "oci_import(name = \"base\", layout = \"layout\")\nlayer(name = \"l\", srcs = [\"a.txt\"])\noci_image(name = \"img\", base = \":base\", layers = [\":l\"])\n",
    );
    ws.write("imp/a.txt", "a");
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the raw name like a hostile tool would.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn sanity_a_good_layout_imports() {
    let (ws, _) = primed();
    layout(&ws, &tar_of(&[("hello.txt", b"hi")]), None, |m| m, |i| i);
    ws.ok(&["//imp:img"]);
}

#[test]
fn layout_index_not_json() {
    let (ws, good) = primed();
    layout(&ws, &tar_of(&[("a", b"a")]), None, |m| m, |_| "{\"schemaVersion\":2,\"manifests\":[".into());
    expect_failure(&ws, &good, &["//imp:img"], 2, &["index.json"], Some(("//imp:base", None)));
}

#[test]
fn layout_manifest_not_json_and_wrong_schema() {
    let (ws, good) = primed();
    layout(&ws, &tar_of(&[("a", b"a")]), None, |_| "<html>not a manifest</html>".into(), |i| i);
    expect_failure(&ws, &good, &["//imp:img"], 2, &["sha256:"], Some(("//imp:base", None)));
    let (ws, good) = primed();
    layout(&ws, &tar_of(&[("a", b"a")]), None, |m| m.replace("\"layers\":[", "\"layers\":\"oops\",\"x\":["), |i| i);
    expect_failure(&ws, &good, &["//imp:img"], 2, &["sha256:"], Some(("//imp:base", None)));
}

#[test]
fn layout_config_invalid() {
    let (ws, good) = primed();
    layout(&ws, &tar_of(&[("a", b"a")]), Some(b"{\"architecture\": 42, \"rootfs\": \"none\""), |m| m, |i| i);
    expect_failure(&ws, &good, &["//imp:img"], 2, &["sha256:"], Some(("//imp:base", None)));
}

#[test]
fn layout_blob_does_not_match_its_digest() {
    let (ws, good) = primed();
    layout(&ws, &tar_of(&[("a", b"a")]), None, |m| m, |i| i);
    // Tamper the layer blob after the fact: its name no longer matches its content.
    let blobs = ws.path("imp/layout/blobs/sha256");
    let l = sha(&tar_of(&[("a", b"a")]));
    std::fs::write(blobs.join(&l), tar_of(&[("a", b"EVIL")])).unwrap();
    expect_failure(&ws, &good, &["//imp:img"], 2, &[&l[..12]], Some(("//imp:base", None)));
}

#[test]
fn layout_manifest_size_lies() {
    let (ws, good) = primed();
    layout(&ws, &tar_of(&[("a", b"a")]), None, |m| m, |i| i.replace("\"size\":", "\"size\":1"));
    expect_failure(&ws, &good, &["//imp:img"], 2, &["descriptor says"], Some(("//imp:base", None)));
}

#[test]
fn path_traversal_in_an_imported_layer_is_refused_when_extracted() {
    // oci_import only copies blobs; extraction (cbuild run) must refuse the `../` entry.
    let (ws, good) = primed();
    let outside = ws.path("escaped.txt");
    // A name of this process's own under /tmp (another test run may be at this point too).
    let escape = format!("/tmp/cbuild-rel-escape-{}.txt", std::process::id());
    let up = format!("../../../../../../../..{escape}");
    layout(&ws, &tar_of(&[(up.as_str(), b"x"), ("../escaped.txt", b"x")]), None, |m| m, |i| i);
    let _ = std::fs::remove_file(&escape);
    let o = ws.run(&["run", "--entrypoint", "/bin/true", "//imp:img"]);
    assert_ne!(o.code, 0, "{}", o.all());
    assert!(o.all().contains(".."), "the refusal names the entry: {}", o.all());
    assert!(!Path::new(&escape).exists() && !outside.exists(), "a file escaped the rootfs");
    expect_failure(&ws, &good, &["//tools:missing"], 2, &[], None);
}

// ---- Tar bombs, through the extraction API (bounded) --------------------------------------------

#[test]
fn tar_bomb_with_100k_entries_is_bounded() {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..100_000u32 {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_path(format!("d{}/f{i}", i % 100)).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    let d: cbuild::model::digest::Digest = format!("sha256:{}", sha(&bytes)).parse().unwrap();
    let t = Instant::now();
    let r = cbuild::oci::extract_layer(
        &bytes[..],
        &d,
        &root.path().join("r"),
        &cbuild::oci::ExtractOptions { chown: false, ..Default::default() },
    );
    // Either extracted (100k empty files is legal) or refused with a limit; never a hang or panic.
    match r {
        Ok(s) => {
            assert!(s.entries >= 100_000, "{s:?}");
            assert!(root.path().join("r/d99/f99999").is_file());
        }
        Err(e) => assert!(e.to_string().contains(&d.to_string()[..19]), "{e}"),
    }
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

#[test]
fn tar_header_claiming_a_huge_file_is_an_error_not_a_huge_write() {
    // A header that claims 8 GiB with a few bytes behind it (a truncated or "sparse-looking" bomb).
    let mut h = tar::Header::new_gnu();
    h.set_path("big.bin").unwrap();
    h.set_size(8 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 4096]);
    let root = tempfile::tempdir().unwrap();
    let d: cbuild::model::digest::Digest = format!("sha256:{}", sha(&bytes)).parse().unwrap();
    let r = cbuild::oci::extract_layer(
        &bytes[..],
        &d,
        &root.path().join("r"),
        &cbuild::oci::ExtractOptions { chown: false, ..Default::default() },
    );
    assert!(r.is_err(), "a truncated 8 GiB entry must be an error");
    let written: u64 = walkdir::WalkDir::new(root.path())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(written < 1 << 20, "{written} bytes written for a lying header");
    // A real sparse GNU entry (a 1 GiB hole) is either refused or written sparse (not 1 GiB of disk).
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path("sparse.bin").unwrap();
    h.set_size(0);
    h.set_mode(0o644);
    {
        let g = h.as_gnu_mut().unwrap();
        g.realsize = *b"00010000000\0"; // 1 GiB, octal
        g.sparse[0].offset = *b"00010000000\0";
        g.sparse[0].numbytes = *b"00000000000\0";
    }
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 1024]);
    let root = tempfile::tempdir().unwrap();
    let d: cbuild::model::digest::Digest = format!("sha256:{}", sha(&bytes)).parse().unwrap();
    let _ = cbuild::oci::extract_layer(
        &bytes[..],
        &d,
        &root.path().join("r"),
        &cbuild::oci::ExtractOptions { chown: false, ..Default::default() },
    );
    let used: u64 = walkdir::WalkDir::new(root.path())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    assert!(used < 64 << 20, "{used} bytes of disk for a sparse entry");
}

// ---- Registry answers ----------------------------------------------------------------------------

/// A fake registry: `answer(path)` → (status, content-type, body), with the headers a registry
/// sends; counts requests.
fn fake_registry(answer: impl Fn(&str) -> (u16, String, Vec<u8>) + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |req| {
        let (status, ct, body) = answer(&req.path);
        Response::new(status, body)
            .header("Content-Type", &ct)
            .header("Retry-After", "0")
            .header("Docker-Distribution-API-Version", "registry/2.0")
    })
}

const MT: &str = "application/vnd.oci.image.manifest.v1+json";

fn pull_ws(ws: &Ws, image: &str, digest: Option<&str>) {
    let pin = digest.map(|d| format!(", digest = \"{d}\"")).unwrap_or_default();
    ws.write("pull/BUILD.star", format!("oci_pull(name = \"base\", image = \"{image}\"{pin})\nlayer(name = \"l\", srcs = [\"a.txt\"])\noci_image(name = \"img\", base = \":base\", layers = [\":l\"])\n"));
    ws.write("pull/a.txt", "a");
}

fn registry_case(status: u16, body: &'static [u8], needles: &[&str], pinned: bool) {
    let (ws, good) = primed();
    let reg = fake_registry(move |p| {
        if p == "/v2/" {
            (200, "application/json".into(), b"{}".to_vec())
        } else {
            (status, "application/json".into(), body.to_vec())
        }
    });
    let pin = format!("sha256:{}", "a".repeat(64));
    pull_ws(&ws, &format!("{}/lib/base:1", reg.host()), pinned.then_some(pin.as_str()));
    let out = expect_failure(&ws, &good, &["//pull:img"], 36, needles, Some(("//pull:base", None)));
    assert!(out.contains(&reg.host()) || out.contains("lib/base"), "names the registry or repository: {out}");
    assert!(reg.requests() < 50, "bounded retries: {} requests", reg.requests());
}

#[test]
fn registry_answers_429() {
    registry_case(429, b"{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"slow down\"}]}", &["429"], true);
}

#[test]
fn registry_answers_500() {
    registry_case(500, b"internal error", &["500"], true);
}

#[test]
fn registry_answers_garbage_json() {
    // Unpinned, so the body reaches the manifest parser.
    registry_case(200, b"{\"schemaVersion\": 2, \"layers\": [", &["lib/base"], false);
}

#[test]
fn registry_answers_a_manifest_with_the_wrong_digest() {
    let (ws, good) = primed();
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MT}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{}\",\"size\":2}},\"layers\":[]}}",
        "b".repeat(64)
    );
    let real = format!("sha256:{}", sha(manifest.as_bytes()));
    let m2 = manifest.clone();
    let reg = fake_registry(move |p| {
        if p == "/v2/" {
            (200, "application/json".into(), b"{}".to_vec())
        } else if p.contains("/manifests/") {
            (200, MT.into(), m2.clone().into_bytes())
        } else {
            (404, "application/json".into(), b"{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}".to_vec())
        }
    });
    let pin = format!("sha256:{}", "c".repeat(64));
    pull_ws(&ws, &format!("{}/lib/base:1", reg.host()), Some(&pin));
    let out = expect_failure(&ws, &good, &["//pull:img"], 36, &[&pin[..20]], Some(("//pull:base", None)));
    assert!(out.contains(&real[..20]) || out.contains("digest"), "names the digests: {out}");
}

#[test]
fn registry_blob_with_the_wrong_digest() {
    let (ws, good) = primed();
    let cfg =
        b"{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}"
            .to_vec();
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MT}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{}\",\"size\":{}}},\"layers\":[]}}",
        sha(&cfg),
        cfg.len()
    );
    let pin = format!("sha256:{}", sha(manifest.as_bytes()));
    let reg = fake_registry(move |p| {
        if p == "/v2/" {
            (200, "application/json".into(), b"{}".to_vec())
        } else if p.contains("/manifests/") {
            (200, MT.into(), manifest.clone().into_bytes())
        } else {
            // The config blob with other bytes of the same length.
            (200, "application/octet-stream".into(), cfg.iter().map(|b| if *b == b'x' { b'y' } else { *b }).collect())
        }
    });
    pull_ws(&ws, &format!("{}/lib/base:1", reg.host()), Some(&pin));
    expect_failure(&ws, &good, &["//pull:img"], 36, &["sha256:"], Some(("//pull:base", None)));
}

#[test]
fn real_registry_answers_401_and_404() {
    let reg = Registry::start(Some("rel:secret-pw-401"));
    let (ws, good) = primed();
    let cfg = tempfile::tempdir().unwrap();
    pull_ws(&ws, &reg.tag("lib/base:1"), None);
    let o = ws.cmd().env("DOCKER_CONFIG", cfg.path()).args(["build", "--json", "//pull:img"]).output().unwrap();
    let all = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "401: {all}");
    assert!(
        all.contains(&reg.host)
            && (all.contains("401") || all.to_lowercase().contains("unauthorized") || all.contains("credentials")),
        "401: {all}"
    );
    let reg2 = Registry::shared();
    pull_ws(&ws, &reg2.tag("lib/nothing-here:1"), None);
    let out = expect_failure(&ws, &good, &["//pull:img"], 2, &["lib/nothing-here"], Some(("//pull:base", None)));
    assert!(out.contains("404") || out.to_lowercase().contains("not found") || out.contains("unknown"), "404: {out}");
}
