//! Lazy bytes (`--remote-download toplevel`) against a real REAPI server (BuildGrid): runner B's
//! full hit of one image downloads about that image's own blobs, not its intermediate outputs;
//! an edit that makes B execute fetches what the executing actions read; a damaged blob left on
//! the server is never used (the build runs again downloading whole, with the same digests).

use std::path::Path;

use crate::common;
use common::buildgrid::BuildGrid;
use common::support::{self, Out, Ws};

const TARGET: &str = "//services/api:image";

fn build(ws: &Ws, url: &str, env: &[(&str, &str)], lazy: bool, args: &[&str]) -> Out {
    let mut a = vec!["--remote-cache", url];
    if lazy {
        a.extend(["--remote-download", "toplevel"]);
    }
    a.extend(["build", "--json"]);
    a.extend_from_slice(args);
    support::out_of(ws.cmd().envs(env.iter().copied()).args(&a))
}

fn ok(o: &Out) -> std::collections::BTreeMap<String, String> {
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.failures());
    o.digests()
}

/// Bytes of the regular files under `dir` (a CAS; hard links counted once per name is fine here:
/// a fresh cache has none).
fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// The examples with a salt in the api service, so this test's keys are its own on the shared server.
fn workspace(salt: &str) -> Ws {
    let ws = support::examples();
    ws.write("services/api/salt.txt", salt);
    ws
}

#[test]
fn a_full_hit_of_one_image_downloads_about_its_own_blobs() {
    let bg = BuildGrid::shared();
    let keys = BuildGrid::keys();
    let a = workspace("lazy full hit");
    let want = ok(&build(&a, &bg.url, &keys.writer(), false, &["//..."]));

    // Eager (the default): every blob of the closure's hits.
    let eager = support::copy_of(a.root(), None);
    let e = build(&eager, &bg.url, &keys.reader(), false, &[TARGET]);
    assert_eq!(ok(&e)[TARGET], want[TARGET]);
    assert_eq!(e.summary()["executed"], 0, "{}", e.stdout);
    let eager_bytes = bytes_under(&eager.cache.join("cas"));

    // Lazy: the image's blobs (manifest, config, layers) and small blobs only.
    let b = support::copy_of(a.root(), None);
    let l = build(&b, &bg.url, &keys.reader(), true, &[TARGET]);
    assert_eq!(ok(&l)[TARGET], want[TARGET]);
    assert_eq!(l.summary()["executed"], 0, "{}", l.stdout);
    let lazy_bytes = bytes_under(&b.cache.join("cas"));
    let own = bytes_under(&b.path("cbuild-out/services/api/image/blobs"));
    support::assert_blobs_whole(&b.path("cbuild-out/services/api/image/blobs/sha256"), "runner B's layout");
    assert!(lazy_bytes < eager_bytes, "lazy {lazy_bytes} B, eager {eager_bytes} B");
    // Small blobs (buildpack files, detect data) come along: allow a little over the image.
    assert!(lazy_bytes <= own + (own / 4).max(256 << 10), "lazy {lazy_bytes} B for an image of {own} B");

    // An edit on B: its detect/build/export execute and read their dependencies' bytes (the
    // build image, the buildpacks), fetched then; the result equals a clean build.
    b.write("services/api/server.sh", b.read("services/api/server.sh") + "\n# edited on lazy runner B\n");
    let edited = build(&b, &bg.url, &keys.reader(), true, &[TARGET]);
    let got = ok(&edited);
    assert!(edited.summary()["executed"].as_u64().unwrap() >= 1, "{}", edited.stdout);
    assert_eq!(got, support::clean_digests(b.root(), &[TARGET]));
}

#[test]
fn a_damaged_blob_left_on_the_server_is_never_used() {
    let bg = BuildGrid::shared();
    let keys = BuildGrid::keys();
    let a = workspace("lazy damaged blob");
    // A big file in the api's genrule-free path: the tools image's layer of 3 MiB random bytes.
    let mut rng = support::Rng::new(support::seed(0x1a2b_3c4d));
    a.write("big/blob.bin", rng.bytes(3 << 20));
    a.write(
        "big/BUILD.star",
        "layer(name = \"l\", srcs = [\"blob.bin\"], prefix = \"/data\")\n\
         genrule(name = \"copy\", srcs = [\"blob.bin\"], outs = [\"copy.bin\"], cmd = \"cp blob.bin copy.bin\")\n\
         layer(name = \"c\", srcs = [\":copy\"], prefix = \"/copy\")\n\
         oci_image(name = \"image\", base = \"//stacks:run-image\", layers = [\":l\", \":c\"], entrypoint = [\"/bin/true\"])\n",
    );
    let want = ok(&build(&a, &bg.url, &keys.writer(), false, &["//big:image"]));
    // Damage the genrule's output (an intermediate: the lazy runner leaves it on the server until
    // an edit makes the `c` layer execute) in BuildGrid's storage, same size.
    let copy = std::fs::read(a.path("big/blob.bin")).unwrap();
    let hex = cbuild::model::digest::Digest::of_bytes(&copy).hex().to_string();
    let stored = bg.cas_file(&hex);
    let mut bytes = std::fs::read(&stored).unwrap();
    let m = bytes.len() / 2;
    bytes[m] ^= 0x40;
    std::fs::write(&stored, &bytes).unwrap();

    // A lazy runner: the image's own blobs are intact, so its full hit works and never reads the
    // damaged one.
    let b = support::copy_of(a.root(), None);
    assert_eq!(ok(&build(&b, &bg.url, &keys.reader(), true, &["//big:image"])), want);
    // Editing the layer's prefix makes `c` execute: it needs the genrule's output, whose blob is
    // damaged: never used; the build runs again downloading whole, the genrule runs locally.
    b.write("big/BUILD.star", b.read("big/BUILD.star").replace("prefix = \"/copy\"", "prefix = \"/copy2\""));
    let o = build(&b, &bg.url, &keys.reader(), true, &["//big:image"]);
    let got = ok(&o);
    assert_eq!(got, support::clean_digests(b.root(), &["//big:image"]));
    assert!(o.all().contains("without lazy downloads"), "{}", o.all());
    support::assert_blobs_whole(&b.cache.join("cas"), "runner B's cache");
}
