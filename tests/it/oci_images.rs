//! Integration tests of `cbuild::oci`: images built from files are validated by independent tools
//! (oci-image-tool, skopeo, umoci via `shared/harness/validate-oci.sh`), are reproducible to the
//! byte, import/extract a real busybox base, and malicious layers are refused.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cbuild::cas::BlobDir;
use cbuild::model::digest::Digest;
use cbuild::oci::{
    append_layer, entries_from_dir, extract_layers, read_archive, read_layout, rebase, scratch, with_config,
    write_docker_archive, write_layer, write_layout, Compression, ConfigPatch, ExtractOptions, Image, LayerBlob,
    LayerOptions, OciError, Selector,
};

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false)
}

/// The validator and every tool it drives, or `None` (and a note) to skip.
fn validator() -> Option<PathBuf> {
    let script = common::harness_path("validate-oci.sh");
    let missing: Vec<&str> =
        ["jq", "skopeo", "umoci", "oci-image-tool", "zstd", "gzip"].into_iter().filter(|t| !have(t)).collect();
    if !script.exists() || !missing.is_empty() {
        common::skip_unless_ci(&format!("validate-oci.sh or tools missing: {missing:?}"));
        return None;
    }
    Some(script)
}

fn run_validator(layout: &Path, tag: &str) -> Option<(bool, String)> {
    let script = validator()?;
    let out = Command::new("bash")
        .arg(&script)
        .arg(format!("{}:{tag}", layout.display()))
        .env("REQUIRE_ALL", "1")
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("SKIP"), "a check was skipped:\n{text}");
    Some((out.status.success(), text))
}

fn validate(layout: &Path, tag: &str) {
    if let Some((ok, text)) = run_validator(layout, tag) {
        assert!(ok, "validate-oci.sh failed:\n{text}");
    }
}

fn write(p: &Path, content: &str, mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Source trees of a small two-layer app: `app/` (a script and data) and `cfg/`.
fn sources(dir: &Path, greeting: &str) -> (PathBuf, PathBuf) {
    let app = dir.join("app");
    let cfg = dir.join("cfg");
    mkdir(&app);
    mkdir(&app.join("data"));
    mkdir(&cfg);
    write(&app.join("hello.sh"), "#!/bin/sh\necho hello\n", 0o755);
    write(&app.join("data/greeting.txt"), greeting, 0o644);
    std::os::unix::fs::symlink("data/greeting.txt", app.join("greeting")).unwrap();
    write(&cfg.join("app.toml"), "port = 8080\n", 0o640);
    (app, cfg)
}

/// Builds the two-layer app image on `base` from the trees in `dir`.
fn build(dir: &Path, blobs: &BlobDir, base: &Image, greeting: &str, compression: Compression) -> Image {
    let (app, cfg) = sources(dir, greeting);
    let opts = LayerOptions { compression, ..Default::default() };
    let l1 =
        write_layer(entries_from_dir(&app, "/opt/app", 1000, 1000, None).unwrap(), &opts, blobs, &|_, _| None).unwrap();
    let l2 = write_layer(entries_from_dir(&cfg, "etc/app", 0, 0, None).unwrap(), &opts, blobs, &|_, _| None).unwrap();
    let img = append_layer(base, &l1, "cbuild layer //app:files").unwrap();
    let img = append_layer(&img, &l2, "cbuild layer //app:config").unwrap();
    with_config(
        &img,
        &ConfigPatch {
            entrypoint: Some(vec!["/opt/app/hello.sh".into()]),
            cmd: Some(vec!["--serve".into()]),
            env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
            user: Some("1000:1000".into()),
            workdir: Some("/opt/app".into()),
            labels: [("org.opencontainers.image.title".to_string(), "hello".to_string())].into(),
            exposed_ports: vec!["8080/tcp".into()],
        },
    )
    .unwrap()
}

#[test]
fn two_layer_image_layout_passes_the_validators() {
    let t = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(t.path().join("cas")).unwrap();
    let img = build(&t.path().join("src"), &blobs, &scratch("linux", "amd64").unwrap(), "hi\n", Compression::Gzip);
    let layout = t.path().join("out/app");
    write_layout(&layout, &img, &blobs, Some("latest")).unwrap();
    validate(&layout, "latest");
    // and it reads back identically
    let again =
        read_layout(&layout, &Selector::by_ref("latest"), &BlobDir::open(t.path().join("cas2")).unwrap()).unwrap();
    assert_eq!(again, img);
}

#[test]
fn zstd_layers_pass_the_validators() {
    let t = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(t.path().join("cas")).unwrap();
    let img = build(&t.path().join("src"), &blobs, &scratch("linux", "amd64").unwrap(), "hi\n", Compression::Zstd);
    assert!(img.layers().iter().all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"));
    let layout = t.path().join("out/app");
    write_layout(&layout, &img, &blobs, Some("zstd")).unwrap();
    // oci-image-tool 1.0.0-rc1 and Debian's umoci predate zstd layers and refuse the media type;
    // every other check (digests, diff_ids through `zstd -d`, `tar -t`, skopeo inspect/copy) must pass.
    let Some((ok, text)) = run_validator(&layout, "zstd") else {
        return;
    };
    if !ok {
        let fails: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("FAIL:")).collect();
        assert!(!fails.is_empty(), "{text}");
        for f in fails {
            let tool_limit = (f.contains("oci-image-tool") || f.contains("umoci")) && f.contains("tar+zstd");
            assert!(tool_limit, "unexpected failure {f}:\n{text}");
        }
    }
    assert!(text.contains("ok: zstd: manifest"), "{text}");
    assert!(text.contains("ok: skopeo copy"), "{text}");
}

#[test]
fn same_inputs_give_the_same_digest_everywhere() {
    let digest = |base: &Path| {
        let blobs = BlobDir::open(base.join("cas")).unwrap();
        let img = build(&base.join("src"), &blobs, &scratch("linux", "amd64").unwrap(), "hi\n", Compression::Gzip);
        let layout = base.join("layout");
        write_layout(&layout, &img, &blobs, Some("latest")).unwrap();
        (img.digest().clone(), fs::read(layout.join("index.json")).unwrap())
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::Builder::new().prefix("other-place-").tempdir().unwrap();
    let (da, ia) = digest(a.path());
    let (db, ib) = digest(b.path());
    assert_eq!(da, db);
    assert_eq!(ia, ib);
    // A change here changes every image cbuild builds: only on purpose (tar format, gzip level,
    // JSON canonical form, CREATED). Last changed on purpose by the content-defined gzip chunks
    // (`oci::compress::GZIP_CODEC`: chunks sync-flushed, an empty final block).
    // Tied to the kind versions and codec ids (see engine.rs `assert_pinned`).
    let fp = cbuild::execution::runners::output_fingerprint();
    let pinned = GOLDEN.iter().find(|(f, _)| *f == fp).map(|(_, d)| *d);
    assert_eq!(
        (fp.as_str(), Some(da.to_string().as_str())),
        (fp.as_str(), pinned),
        "a pinned digest changes only with a kind version or codec id bump (`Runner::version` of the kind, execution::runners)"
    );
}
/// (output fingerprint, digest) pairs; the second adds the distribution kinds of issue 17, which
/// change no existing kind's output.
const GOLDEN: &[(&str, &str)] = &[
    (
        "genrule=1,layer=2,import=1,image=3,buildpack=1,pull=1,debian=2,detect=2,build=3,export=2;gzip=pargz-cdc/fastcdc5-128K-512K-2M/l6/zlib-rs;zstd=zstd/l3-mt;none=none",
        GOLDEN_TWO_LAYER_DIGEST,
    ),
    (
        "genrule=1,layer=2,import=1,image=3,buildpack=1,pull=1,debian=2,detect=2,build=3,export=2,read_builder=1,read_buildpackage=1,run_image=1,builder_image=1,buildpackage=1;gzip=pargz-cdc/fastcdc5-128K-512K-2M/l6/zlib-rs;zstd=zstd/l3-mt;none=none",
        GOLDEN_TWO_LAYER_DIGEST,
    ),
    // The `index` kind of issue 21: new, no existing output changed.
    (
        "genrule=1,layer=2,import=1,image=3,buildpack=1,pull=1,debian=2,detect=2,build=3,export=2,read_builder=1,read_buildpackage=1,run_image=1,builder_image=1,buildpackage=1,index=1;gzip=pargz-cdc/fastcdc5-128K-512K-2M/l6/zlib-rs;zstd=zstd/l3-mt;none=none",
        GOLDEN_TWO_LAYER_DIGEST,
    ),
    // gzip level 6 -> 2 (issue 23): every gzip layer changes, so the image does.
    (
        "genrule=1,layer=2,import=1,image=3,buildpack=1,pull=1,debian=2,detect=2,build=3,export=2,read_builder=1,read_buildpackage=1,run_image=1,builder_image=1,buildpackage=1,index=1;gzip=pargz-cdc/fastcdc5-128K-512K-2M/l2/zlib-rs;zstd=zstd/l3-mt;none=none",
        "sha256:b98a835f2c99898f6ca2a92109abb972c0774ff1afb3347f2cda91434fe69f53",
    ),
    // genrule version 2 (issue 23: the kept, normalized input tree): this image has no genrule.
    (
        "genrule=2,layer=2,import=1,image=3,buildpack=1,pull=1,debian=2,detect=2,build=3,export=2,read_builder=1,read_buildpackage=1,run_image=1,builder_image=1,buildpackage=1,index=1;gzip=pargz-cdc/fastcdc5-128K-512K-2M/l2/zlib-rs;zstd=zstd/l3-mt;none=none",
        "sha256:b98a835f2c99898f6ca2a92109abb972c0774ff1afb3347f2cda91434fe69f53",
    ),
];
/// The digest of gzip level 6 (before issue 23).
const GOLDEN_TWO_LAYER_DIGEST: &str = "sha256:ddae2b5d989a94adc7ad977a93fb5798de5a5a47789a0818740eced13cdb9416";

#[test]
fn changing_one_file_changes_one_layer_the_config_and_the_manifest() {
    let t = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(t.path().join("cas")).unwrap();
    let base = scratch("linux", "amd64").unwrap();
    let a = build(&t.path().join("a"), &blobs, &base, "hi\n", Compression::Gzip);
    let b = build(&t.path().join("b"), &blobs, &base, "hello\n", Compression::Gzip);
    let changed: Vec<usize> = (0..2).filter(|&i| a.layers()[i].digest != b.layers()[i].digest).collect();
    assert_eq!(changed, [0], "only the app layer changes");
    assert_ne!(a.layers()[0].diff_id, b.layers()[0].diff_id);
    assert_eq!(a.layers()[1], b.layers()[1]);
    assert_ne!(a.config_digest(), b.config_digest());
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn known_layers_are_not_compressed_again() {
    let t = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(t.path().join("cas")).unwrap();
    let (app, _) = sources(&t.path().join("src"), "x");
    let entries = entries_from_dir(&app, "app", 0, 0, None).unwrap();
    let first = write_layer(entries.clone(), &LayerOptions::default(), &blobs, &|_, _| None).unwrap();
    // what the cache would answer: diff_id -> blob
    let index = std::cell::RefCell::new(Vec::<LayerBlob>::new());
    index.borrow_mut().push(first.clone());
    let before = fs::metadata(blobs.path(&first.digest)).unwrap().modified().unwrap();
    let again = write_layer(entries, &LayerOptions::default(), &blobs, &|d, c| {
        index.borrow().iter().find(|l| &l.diff_id == d && l.compression == c).cloned()
    })
    .unwrap();
    assert_eq!(again, first);
    assert_eq!(fs::metadata(blobs.path(&first.digest)).unwrap().modified().unwrap(), before);
}

#[test]
fn docker_archive_is_accepted_by_skopeo() {
    let t = tempfile::tempdir().unwrap();
    let blobs = BlobDir::open(t.path().join("cas")).unwrap();
    let img = build(&t.path().join("src"), &blobs, &scratch("linux", "amd64").unwrap(), "hi\n", Compression::Gzip);
    let tar = t.path().join("image.tar");
    write_docker_archive(&tar, &img, &blobs, &["example.com/acme/hello:v1".to_string()]).unwrap();
    // read back by cbuild, as an OCI archive
    let back = read_archive(&tar, &Selector::default(), &BlobDir::open(t.path().join("cas2")).unwrap()).unwrap();
    assert_eq!(back, img);
    if !have("skopeo") {
        common::skip_unless_ci("skopeo missing");
        return;
    }
    let out = Command::new("skopeo").arg("inspect").arg(format!("docker-archive:{}", tar.display())).output().unwrap();
    assert!(out.status.success(), "skopeo inspect docker-archive: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["Architecture"], "amd64");
    // the same file as an OCI archive
    let out = Command::new("skopeo").arg("inspect").arg(format!("oci-archive:{}", tar.display())).output().unwrap();
    assert!(out.status.success(), "skopeo inspect oci-archive: {}", String::from_utf8_lossy(&out.stderr));
    // skopeo copy docker-archive: -> oci: gives a layout the validators accept
    let copy = t.path().join("copied");
    let out = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("docker-archive:{}", tar.display()))
        .arg(format!("oci:{}:copied", copy.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    validate(&copy, "copied");
    // and cbuild imports skopeo's layout: same config (layers may be recompressed by skopeo)
    let imported =
        read_layout(&copy, &Selector::by_ref("copied"), &BlobDir::open(t.path().join("cas3")).unwrap()).unwrap();
    assert_eq!(imported.diff_ids(), img.diff_ids());
}

/// Builds a raw layer tar whose names the tar crate's safe setters would refuse.
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, arg) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_mtime(315_532_800);
        let data: &[u8] = if *kind == tar::EntryType::Regular { arg.as_bytes() } else { b"" };
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            h.as_old_mut().linkname[..arg.len()].copy_from_slice(arg.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn extract_raw(t: &Path, layers: &[Vec<u8>]) -> (PathBuf, Vec<Digest>, Result<cbuild::oci::ExtractStats, OciError>) {
    let blobs = BlobDir::open(t.join("cas")).unwrap();
    let digests: Vec<Digest> = layers.iter().map(|l| blobs.put_bytes(l).unwrap()).collect();
    let root = t.join("rootfs");
    let r = extract_layers(&blobs, &digests, &root, &ExtractOptions::default());
    (root, digests, r)
}

fn assert_refused(r: Result<cbuild::oci::ExtractStats, OciError>, layer: &Digest, entry: &str) {
    let err = r.expect_err("must be refused");
    let msg = err.to_string();
    assert!(matches!(err, OciError::UnsafeEntry { .. }), "{msg}");
    assert!(msg.contains(&format!("layer `{layer}`")), "{msg}");
    assert!(msg.contains(&format!("entry `{entry}`")), "{msg}");
}

#[test]
fn malicious_layers_are_refused_naming_the_entry() {
    use tar::EntryType::{Link, Regular, Symlink};
    // path traversal
    let t = tempfile::tempdir().unwrap();
    let (_, ds, r) = extract_raw(t.path(), &[raw_tar(&[("../x", Regular, "pwned")])]);
    assert_refused(r, &ds[0], "../x");
    assert!(!t.path().join("x").exists());

    // a symlink escaping the root, placed by an earlier layer, then written through
    let t = tempfile::tempdir().unwrap();
    let escape = format!("/..{}", t.path().display()); // absolute, and climbs out with `..`
    let (_, ds, r) =
        extract_raw(t.path(), &[raw_tar(&[("esc", Symlink, &escape)]), raw_tar(&[("esc/pwned", Regular, "x")])]);
    assert_refused(r, &ds[1], "esc/pwned");
    assert!(!t.path().join("pwned").exists());

    // an absolute symlink is the image's path, never the host's: writing through it stays inside
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    fs::create_dir(&host).unwrap();
    let (root, _, r) = extract_raw(
        t.path(),
        &[raw_tar(&[("abs", Symlink, host.to_str().unwrap())]), raw_tar(&[("abs/pwned", Regular, "x")])],
    );
    r.unwrap();
    assert!(!host.join("pwned").exists());
    assert!(root.join(host.strip_prefix("/").unwrap()).join("pwned").exists());

    // a hard link to the host's /etc/passwd
    let t = tempfile::tempdir().unwrap();
    let (_, ds, r) = extract_raw(t.path(), &[raw_tar(&[("passwd", Link, "/etc/passwd")])]);
    assert_refused(r, &ds[0], "passwd");
    let (_, ds, r) = extract_raw(&t.path().join("2"), &[raw_tar(&[("passwd", Link, "../../../../../../etc/passwd")])]);
    assert_refused(r, &ds[0], "passwd");

    // `..` inside a symlink chain: a -> b/c, b -> ., c -> ../..
    let t = tempfile::tempdir().unwrap();
    let (_, ds, r) = extract_raw(
        t.path(),
        &[raw_tar(&[("a", Symlink, "b/c"), ("b", Symlink, "."), ("c", Symlink, "../.."), ("a/pwned", Regular, "x")])],
    );
    assert_refused(r, &ds[0], "a/pwned");
    assert!(!t.path().join("pwned").exists());
}

/// A real busybox base from the harness (needs root), or `None` to skip.
fn busybox(dir: &Path) -> Option<Digest> {
    let script = common::harness_path("mk-busybox-oci.sh");
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !script.exists() || !root || !Path::new("/bin/busybox").exists() {
        common::skip_unless_ci("mk-busybox-oci.sh needs root and busybox-static");
        return None;
    }
    let out = Command::new("bash").arg(&script).arg(dir).output().unwrap();
    assert!(out.status.success(), "mk-busybox-oci.sh: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let d = line.split_whitespace().nth(1).expect("prints OUTDIR:TAG DIGEST SIZE");
    Some(Digest::parse(d).unwrap())
}

#[test]
fn busybox_base_imports_extracts_and_carries_an_app() {
    let t = tempfile::tempdir().unwrap();
    let Some(want) = busybox(&t.path().join("busybox")) else {
        return;
    };
    let blobs = BlobDir::open(t.path().join("cas")).unwrap();
    let base = read_layout(&t.path().join("busybox"), &Selector::by_ref("latest"), &blobs).unwrap();
    assert_eq!(base.digest(), &want, "importing keeps the manifest bytes");

    // extract the base: a usable rootfs
    let root = t.path().join("rootfs");
    let digests: Vec<Digest> = base.layers().iter().map(|l| l.digest.clone()).collect();
    let stats = extract_layers(&blobs, &digests, &root, &ExtractOptions::default()).unwrap();
    assert!(stats.entries > 100, "{stats:?}");
    assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
    let meta = fs::metadata(root.join("home/cnb")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1000);
    assert_eq!(fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    let out = Command::new(root.join("bin/busybox")).args(["echo", "alive"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");

    // an app on top validates (umoci unpacks it as root), and rebases onto a new base
    let app = build(&t.path().join("src"), &blobs, &base, "hi\n", Compression::Gzip);
    let layout = t.path().join("out");
    write_layout(&layout, &app, &blobs, Some("app")).unwrap();
    validate(&layout, "app");

    let new_base = {
        let extra = t.path().join("extra");
        mkdir(&extra);
        write(&extra.join("security-update"), "patched\n", 0o644);
        let l = write_layer(
            entries_from_dir(&extra, "etc", 0, 0, None).unwrap(),
            &LayerOptions::default(),
            &blobs,
            &|_, _| None,
        )
        .unwrap();
        append_layer(&base, &l, "os update").unwrap()
    };
    let rebased = rebase(&app, &base, &new_base).unwrap();
    assert_eq!(rebased.layers().len(), app.layers().len() + 1);
    assert_eq!(&rebased.layers()[2..], &app.layers()[1..], "app layers stay byte-identical");
    assert_eq!(rebased.config().config(), app.config().config());
    write_layout(&layout, &rebased, &blobs, Some("app")).unwrap();
    validate(&layout, "app");
    // extracting the rebased image: the update and the app are both there
    let root2 = t.path().join("rootfs2");
    let digests: Vec<Digest> = rebased.layers().iter().map(|l| l.digest.clone()).collect();
    extract_layers(&blobs, &digests, &root2, &ExtractOptions::default()).unwrap();
    assert!(root2.join("etc/security-update").exists());
    assert_eq!(fs::read_to_string(root2.join("opt/app/greeting")).unwrap(), "hi\n");
}
