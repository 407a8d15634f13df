//! Bounded property tests ("fuzzing") of the parsers that read untrusted text and bytes: labels and
//! patterns, queries, buildpack.toml / launch.toml / `<layer>.toml` / build.toml / store.toml /
//! order.toml / detect plans, Debian versions and relations, registry references, OCI manifests
//! and configs, and tar extraction of random and mutated layers. Property: never panics (errors
//! are values); labels and patterns round-trip (`parse(print(x)) == x`); Debian version order is
//! antisymmetric and reflexive.
//!
//! A hand-rolled seeded generator (mutations of valid seeds + token soup) instead of proptest: no
//! new dependency or Cargo.lock change. 256 cases per parser by default; `CBUILD_LONG_TESTS=1`
//! runs 20,000. A failing case prints its seed and input; replay with `CBUILD_RELIABILITY_SEED`.

use crate::common::support;

use std::cmp::Ordering;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use cbuild::model::label::{Label, PackagePath, Pattern};
use support::Rng;

fn cases() -> usize {
    if support::long() {
        20_000
    } else {
        256
    }
}

/// Runs `check` on `cases()` generated inputs; a panic is reported with the seed and the input.
fn fuzz<T: std::fmt::Debug>(name: &str, seed: u64, mut gen: impl FnMut(&mut Rng) -> T, check: impl Fn(&T)) {
    let seed = support::seed(seed);
    let mut rng = Rng::new(seed);
    for i in 0..cases() {
        let input = gen(&mut rng);
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            panic!("{name}: case {i} (seed {seed}) panicked on input {input:?}");
        }
    }
}

/// Random edits of a valid seed: byte flips, deletions, duplications, inserted tokens.
fn mutate(rng: &mut Rng, seed: &str, tokens: &[&str]) -> String {
    let mut s: Vec<u8> = seed.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(s.len() as u64 + 1) as usize;
        match rng.below(5) {
            0 if !s.is_empty() => {
                let i = at.min(s.len() - 1);
                s[i] = rng.next() as u8;
            }
            1 if !s.is_empty() => {
                let end = (at + 1 + rng.below(8) as usize).min(s.len());
                s.drain(at.min(end)..end);
            }
            2 => {
                let t = rng.pick(tokens).as_bytes().to_vec();
                s.splice(at..at, t);
            }
            3 if !s.is_empty() => {
                let from = rng.below(s.len() as u64) as usize;
                let piece: Vec<u8> = s[from..(from + 1 + rng.below(16) as usize).min(s.len())].to_vec();
                s.splice(at..at, piece);
            }
            _ => s.insert(at, rng.pick(tokens).as_bytes()[0]),
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// Token soup: a random sequence of `tokens`.
fn soup(rng: &mut Rng, tokens: &[&str], max: u64) -> String {
    (0..rng.below(max)).map(|_| *rng.pick(tokens)).collect()
}

fn gen_text(rng: &mut Rng, seeds: &[&str], tokens: &[&str]) -> String {
    if rng.below(3) == 0 {
        soup(rng, tokens, 40)
    } else {
        let seed = rng_pick_str(rng, seeds);
        mutate(rng, seed, tokens)
    }
}

fn rng_pick_str<'a>(rng: &mut Rng, v: &[&'a str]) -> &'a str {
    v[rng.below(v.len() as u64) as usize]
}

// ---- labels, patterns, queries ------------------------------------------------------------------

const LABEL_TOKENS: &[&str] = &[
    "//", "/", ":", "...", ".", "..", "a", "pkg", "_", "-", "@", "~", "all", "*", " ", "\u{e9}", "\0", "+", "=", ",",
    "x/y",
];

#[test]
fn labels_and_patterns_never_panic_and_round_trip() {
    let seeds =
        ["//services/api:image", "//a", ":b", "//...", "//a/b/...", "//a:all", "//:root", "name", "@prelude//x:y"];
    let cur = PackagePath::parse("cur/pkg").unwrap();
    fuzz(
        "label",
        1,
        |r| gen_text(r, &seeds, LABEL_TOKENS),
        |s| {
            for current in [None, Some(&cur)] {
                // Names ending in `...` and relative `:all` have their own tests below (F4, F5).
                if let Ok(l) = Label::parse(s, current).map_err(|_| ()).and_then(|l| {
                    if l.name.ends_with("...") {
                        Err(())
                    } else {
                        Ok(l)
                    }
                }) {
                    assert_eq!(Label::parse(&l.to_string(), None).as_ref(), Ok(&l), "label {s:?} → {l}");
                }
                if let Ok(p) = Pattern::parse(s, current).map_err(|_| ()).and_then(|p| match &p {
                    Pattern::Target(l) if l.name.ends_with("...") || l.name == "all" || l.name == "*" => Err(()),
                    _ => Ok(p),
                }) {
                    assert_eq!(Pattern::parse(&p.to_string(), None).as_ref(), Ok(&p), "pattern {s:?} → {p}");
                }
            }
            let _ = PackagePath::parse(s);
        },
    );
}

#[test]
fn a_relative_label_whose_name_ends_in_dots_round_trips() {
    let cur = PackagePath::parse("p").unwrap();
    let l = Label::parse(":a...", Some(&cur)).expect("accepted today");
    assert_eq!(Label::parse(&l.to_string(), None), Ok(l), "parse(print(x)) == x");
}

#[test]
fn relative_all_pattern_means_every_target_of_the_package() {
    let cur = PackagePath::parse("p").unwrap();
    assert_eq!(Pattern::parse(":all", Some(&cur)), Ok(Pattern::Package(cur.clone())));
    let p = Pattern::parse(":all", Some(&cur)).unwrap();
    assert_eq!(Pattern::parse(&p.to_string(), None), Ok(p), "parse(print(x)) == x");
}

#[test]
fn generated_valid_labels_round_trip_exactly() {
    // Package segments allow letters, digits and `._-+@`; target names also `=,~` and `/`.
    const PKG: &[&str] = &["a", "api", "x-1", "v1.2", "_z", "A9", "p+q", "@at", "..a"];
    const SEG: &[&str] = &["a", "api", "x-1", "v1.2", "_z", "A9", "~t", "p+q", "k=v", "c,d", "@at"];
    fuzz(
        "valid label",
        2,
        |r| {
            let pkg: Vec<&str> = (0..r.below(4)).map(|_| *r.pick(PKG)).collect();
            let name: Vec<&str> = (0..1 + r.below(3)).map(|_| *r.pick(SEG)).collect();
            (pkg.join("/"), name.join("/"))
        },
        |(pkg, name)| {
            let text = format!("//{pkg}:{name}");
            let l = Label::parse(&text, None).unwrap_or_else(|e| panic!("valid label {text:?} refused: {e}"));
            assert_eq!(l.to_string(), text);
            assert_eq!(l.package.as_str(), pkg);
            assert_eq!(&l.name, name);
            assert_eq!(Label::parse(&l.to_string(), None).unwrap(), l);
        },
    );
}

#[test]
fn queries_never_panic() {
    const T: &[&str] = &[
        "deps(", "rdeps(", "kind(", ")", ",", " + ", " - ", " ^ ", "//...", "//a:b", "layer", "'", "\"", " ", "(", "1",
        "//x/...",
    ];
    let seeds =
        ["deps(//services/api:image)", "rdeps(//..., //a:b)", "kind(layer, //...) - //tools/...", "//a + //b ^ //c"];
    fuzz(
        "query",
        3,
        |r| gen_text(r, &seeds, T),
        |s| {
            let _ = cbuild::cli::query::parse(s, None);
            let _ = cbuild::cli::query::parse(s, Some(&PackagePath::parse("p").unwrap()));
        },
    );
}

// ---- CNB files ------------------------------------------------------------------------------------

const TOML_TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\n",
    " ",
    "{",
    "}",
    ",",
    ".",
    "true",
    "false",
    "1",
    "-1",
    "1e400",
    "0.10",
    "\"x\"",
    "processes",
    "types",
    "launch",
    "cache",
    "build",
    "requires",
    "provides",
    "or",
    "metadata",
    "buildpack",
    "id",
    "api",
    "version",
    "order",
    "group",
    "type",
    "command",
    "args",
    "direct",
    "default",
    "slices",
    "paths",
    "labels",
    "key",
    "value",
    "targets",
    "stacks",
    "\u{0}",
    "\\u0000",
    "\"\"\"",
    "#",
];

const BUILDPACK_TOMLS: &[&str] = &[
    "api = \"0.10\"\n[buildpack]\nid = \"a/b\"\nversion = \"1.0.0\"\n[[targets]]\nos = \"linux\"\n",
    "api = \"0.7\"\n[buildpack]\nid = \"x\"\nversion = \"1\"\n[[stacks]]\nid = \"*\"\n",
    "api = \"0.9\"\n[buildpack]\nid = \"c\"\nversion = \"1\"\n[[order]]\n[[order.group]]\nid = \"a/b\"\nversion = \"1.0.0\"\noptional = true\n",
];

const LAUNCH_TOMLS: &[&str] = &[
    "[[processes]]\ntype = \"web\"\ncommand = [\"sh\", \"-c\", \"x\"]\nargs = [\"a\"]\ndefault = true\nworking-dir = \"/w\"\n[[labels]]\nkey = \"k\"\nvalue = \"v\"\n[[slices]]\npaths = [\"static/*\"]\n",
    "[[processes]]\ntype = \"web\"\ncommand = \"httpd\"\nargs = [\"-f\"]\ndirect = true\n",
];

const LAYER_TOMLS: &[&str] = &[
    "[types]\nlaunch = true\ncache = true\nbuild = false\n[metadata]\nsha = \"x\"\n[metadata.nested]\na = [1, 2]\n",
    "launch = true\n",
];

const PLANS: &[&str] = &[
    "[[provides]]\nname = \"shell\"\n[[requires]]\nname = \"shell\"\n[requires.metadata]\nentry = \"server.sh\"\n",
    "[[or]]\n[[or.provides]]\nname = \"a\"\n[[or.requires]]\nname = \"a\"\n",
    "[[requires]]\nname = \"x\"\nversion = \"1\"\n",
];

#[test]
fn cnb_toml_parsers_never_panic() {
    let f = Path::new("/layers/x/file.toml");
    let api = cbuild::cnb::buildpack_toml::BuildpackApi::parse("0.10").unwrap();
    let api07 = cbuild::cnb::buildpack_toml::BuildpackApi::parse("0.7").unwrap();
    fuzz(
        "buildpack.toml",
        10,
        |r| gen_text(r, BUILDPACK_TOMLS, TOML_TOKENS),
        |s| {
            let _ = cbuild::cnb::buildpack_toml::BuildpackDescriptor::parse(s, f);
        },
    );
    fuzz(
        "launch.toml",
        11,
        |r| gen_text(r, LAUNCH_TOMLS, TOML_TOKENS),
        |s| {
            let _ = cbuild::cnb::launch::parse_launch_toml(s, api, "a/b", f);
            let _ = cbuild::cnb::launch::parse_launch_toml(s, api07, "a/b", f);
        },
    );
    fuzz(
        "<layer>.toml",
        12,
        |r| gen_text(r, LAYER_TOMLS, TOML_TOKENS),
        |s| {
            let _ = cbuild::cnb::layer_toml::parse_layer_toml(s, "a/b", f);
        },
    );
    fuzz(
        "detect plan",
        13,
        |r| gen_text(r, PLANS, TOML_TOKENS),
        |s| {
            let _ = cbuild::cnb::plan::parse_detect_plan(s, "a/b", f);
        },
    );
    fuzz(
        "build.toml / store.toml / order.toml",
        14,
        |r| gen_text(r, &[PLANS[0], LAYER_TOMLS[0], BUILDPACK_TOMLS[2]], TOML_TOKENS),
        |s| {
            let _ = cbuild::cnb::launch::parse_build_toml(s, "a/b", f);
            let _ = cbuild::cnb::launch::StoreToml::parse(s, "a/b", f);
            let _ = cbuild::cnb::plan::parse_order_toml(s, f);
        },
    );
    // The distribution files of builder images and project.toml (issue 17).
    use cbuild::cnb::distribution as dist;
    fuzz(
        "project.toml / order.toml / run.toml / stack.toml / system.toml",
        15,
        |r| gen_text(r, DIST_TOMLS, TOML_TOKENS),
        |s| {
            let _ = cbuild::cnb::project::ProjectDescriptor::parse(s, "app/project.toml");
            let _ = dist::parse_toml::<dist::OrderToml>("b", "/cnb/order.toml", s);
            let _ = dist::parse_toml::<dist::RunToml>("b", "/cnb/run.toml", s);
            let _ = dist::parse_toml::<dist::StackToml>("b", "/cnb/stack.toml", s);
            let _ = dist::parse_toml::<dist::SystemToml>("b", "/cnb/system.toml", s);
            let _ = dist::parse_layers_label("b", s);
        },
    );
}

const DIST_TOMLS: &[&str] = &[
    "[_]\nschema-version = \"0.2\"\nversion = \"1\"\n[_.metadata]\nk = 1\n[io.buildpacks]\nexclude = [\"a/\", \"!b\"]\n\
     [[io.buildpacks.group]]\nid = \"x\"\n[[io.buildpacks.pre.group]]\nuri = \"//a:b\"\n[[io.buildpacks.build.env]]\nname = \"A\"\nvalue = \"1\"\n",
    "[[order]]\n[[order.group]]\nid = \"a\"\nversion = \"1\"\noptional = true\n",
    "[[images]]\nimage = \"r/run:1\"\nmirrors = [\"m/run:1\"]\n[run-image]\nimage = \"r\"\n[system.pre]\nbuildpacks = [{ id = \"p\" }]\n",
];

// ---- Debian ---------------------------------------------------------------------------------------

const DEB_TOKENS: &[&str] = &[
    "1", "0", "9", ":", "-", "~", "+", ".", "a", "Z", "deb", "ubuntu", " ", "(", ")", ">=", "<<", "=", "|", ",", "[",
    "]", "!", "amd64", ":any", "<", ">>", "\n",
];

#[test]
fn debian_versions_never_panic_and_order_consistently() {
    let seeds = ["1.2.3-1", "2:1.0~rc1-0+deb12u1", "1.36.1-9", "0", "1:2", "1.0-", "~", "10a-1b"];
    fuzz(
        "debian version",
        20,
        |r| (gen_text(r, &seeds, DEB_TOKENS), gen_text(r, &seeds, DEB_TOKENS)),
        |(a, b)| {
            let _ = cbuild::debian::Version::parse(a);
            assert_eq!(cbuild::debian::compare_versions(a, a), Ordering::Equal, "{a:?} vs itself");
            assert_eq!(
                cbuild::debian::compare_versions(a, b),
                cbuild::debian::compare_versions(b, a).reverse(),
                "{a:?} vs {b:?}"
            );
            if let (Ok(va), Ok(vb)) = (cbuild::debian::Version::parse(a), cbuild::debian::Version::parse(b)) {
                assert_eq!(va.cmp(&vb), vb.cmp(&va).reverse());
            }
        },
    );
}

#[test]
fn debian_relations_never_panic() {
    let seeds = [
        "libc6 (>= 2.34), libgcc-s1 | libgcc1",
        "python3:any (>= 3.11~) [amd64 !arm64]",
        "awk",
        "a (= 1:2-3), b (<< 4)",
    ];
    fuzz(
        "debian relations",
        21,
        |r| gen_text(r, &seeds, DEB_TOKENS),
        |s| {
            let _ = cbuild::debian::relation::parse_relations(s);
            let _ = cbuild::debian::relation::parse_provides(s);
            let _ = cbuild::debian::relation::parse_relation(s);
        },
    );
}

#[test]
fn registry_references_never_panic() {
    const T: &[&str] = &[
        "registry.example.com",
        ":5000",
        "/",
        "a",
        "b-c",
        ":",
        "tag",
        "@",
        "sha256:",
        "0123456789abcdef",
        "localhost",
        "..",
        "_",
        "UPPER",
        " ",
        "[::1]",
    ];
    let seeds = ["registry.example.com:5000/acme/api:1.2@sha256:0000000000000000000000000000000000000000000000000000000000000000", "busybox", "127.0.0.1:5000/x/y:z"];
    fuzz(
        "reference",
        22,
        |r| gen_text(r, &seeds, T),
        |s| {
            let _ = cbuild::registry::reference::Reference::parse(s);
        },
    );
}

// ---- OCI ------------------------------------------------------------------------------------------

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "null",
    "true",
    "1",
    "-1",
    "1e999",
    "\"sha256:",
    "0",
    "\"digest\"",
    "\"size\"",
    "\"layers\"",
    "\"config\"",
    "\"mediaType\"",
    "\"schemaVersion\"",
    "2",
    "\"rootfs\"",
    "\"diff_ids\"",
    "\\u0000",
    "\"os\"",
];

#[test]
fn oci_manifests_and_configs_never_panic() {
    let d = format!("sha256:{}", "ab".repeat(32));
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{d}\",\"size\":10}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{d}\",\"size\":5}}],\"annotations\":{{\"a\":\"b\"}}}}"
    );
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Env\":[\"A=b\"],\"Entrypoint\":[\"/x\"],\"Labels\":{{\"k\":\"v\"}}}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{d}\"]}},\"history\":[{{\"created_by\":\"x\"}}]}}");
    let (m, c) = (manifest.as_str(), config.as_str());
    fuzz(
        "manifest+config",
        30,
        |r| (gen_text(r, &[m], JSON_TOKENS).into_bytes(), gen_text(r, &[c], JSON_TOKENS).into_bytes()),
        |(m, c)| {
            let _ = cbuild::oci::Image::from_bytes(m.clone(), c.clone());
        },
    );
    // Raw bytes too (not UTF-8).
    fuzz(
        "manifest bytes",
        31,
        |r| {
            let n = r.below(512) as usize;
            (r.bytes(n), config.clone().into_bytes())
        },
        |(m, c)| {
            let _ = cbuild::oci::Image::from_bytes(m.clone(), c.clone());
        },
    );
}

fn sample_tar(rng: &mut Rng) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..1 + rng.below(5) {
        let mut h = tar::Header::new_gnu();
        let n = rng.below(2000) as usize;
        let data = rng.bytes(n);
        match rng.below(4) {
            0 => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_path(format!("d{i}/")).unwrap();
                h.set_mode(0o755);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            1 => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_path(format!("l{i}")).unwrap();
                h.set_link_name(if rng.below(2) == 0 { "f0" } else { "../../x" }).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            2 => {
                h.set_path(format!("d{}/.wh.f{i}", rng.below(3))).unwrap();
                h.set_size(0);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            _ => {
                h.set_path(format!("f{i}")).unwrap();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, b).unwrap();
    e.finish().unwrap()
}

#[test]
fn tar_extraction_of_random_and_mutated_layers_never_panics_or_escapes() {
    let outer = tempfile::tempdir().unwrap();
    let sentinel = outer.path().join("x");
    fuzz(
        "extract_layer",
        40,
        |r| {
            let t = sample_tar(r);
            let mut v = match r.below(4) {
                0 => {
                    let n = r.below(4096) as usize;
                    r.bytes(n)
                }
                1 => gz(&t),
                _ => t,
            };
            // Flip a few bytes (headers, checksums, sizes, gzip stream).
            for _ in 0..r.below(6) {
                if !v.is_empty() {
                    let i = r.below(v.len() as u64) as usize;
                    v[i] = r.next() as u8;
                }
            }
            if r.below(4) == 0 && !v.is_empty() {
                let n = r.below(v.len() as u64) as usize;
                v.truncate(n);
            }
            v
        },
        |bytes| {
            let root = outer.path().join("a/b/root");
            let _ = std::fs::remove_dir_all(&root);
            let d = cbuild::model::digest::Digest::of_bytes(bytes);
            let _ = cbuild::oci::extract_layer(
                &bytes[..],
                &d,
                &root,
                &cbuild::oci::ExtractOptions { chown: false, ..Default::default() },
            );
            assert!(!sentinel.exists() && !outer.path().join("a/x").exists(), "an entry escaped the root");
        },
    );
}
