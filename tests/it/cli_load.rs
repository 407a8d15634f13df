//! Loading and query through the CLI: located diagnostics for every class of bad BUILD input (snapshot
//! tests, exit code 2), queries on the example workspace, and a generated 1,000-package workspace.

use crate::common;
use common::TestContext;

fn bad(files: &[(&str, &str)], args: &[&str]) -> String {
    let cx = TestContext::new();
    for (p, t) in files {
        cx.write(p, t);
    }
    let r = cx.run(args);
    assert_eq!(r.code, 2, "expected exit code 2 for a user error; stderr:\n{}", r.stderr);
    assert!(r.stdout.is_empty(), "nothing on stdout for an error: {}", r.stdout);
    r.stderr
}

#[test]
fn syntax_error() {
    insta::assert_snapshot!(bad(&[("app/BUILD.star", "layer(name = \"x\", srcs = [\n")], &["query", "//..."]));
}

#[test]
fn unknown_rule() {
    insta::assert_snapshot!(bad(&[("app/BUILD.star", "\nlayr(name = \"x\", srcs = [])\n")], &["query", "//..."]));
}

#[test]
fn unknown_attribute() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "layer(\n    name = \"x\",\n    srcz = [],\n)\n")],
        &["query", "//..."]
    ));
}

#[test]
fn wrongly_typed_attribute() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "oci_image(name = \"img\", entrypoint = \"/bin/sh\")\n")],
        &["query", "//app:img"]
    ));
}

#[test]
fn missing_required_attribute() {
    insta::assert_snapshot!(bad(&[("app/BUILD.star", "genrule(name = \"g\", outs = [\"o\"])\n")], &["query", "//..."]));
}

#[test]
fn duplicate_target_name() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "genrule(name = \"g\", outs = [\"o\"], cmd = \"true\")\ngenrule(name = \"g\", outs = [\"p\"], cmd = \"true\")\n")],
        &["query", "//..."]
    ));
}

#[test]
fn label_to_missing_package() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "oci_image(name = \"img\", base = \"//nowhere:base\")\n")],
        &["query", "//app:img"]
    ));
}

#[test]
fn label_to_missing_target() {
    insta::assert_snapshot!(bad(
        &[
            ("app/BUILD.star", "oci_image(name = \"img\", layers = [\"//lib:layr\"])\n"),
            ("lib/BUILD.star", "layer(name = \"layer\", srcs = [\"f\"])\n"),
            ("lib/f", "x"),
        ],
        &["query", "deps(//app:img)"]
    ));
}

#[test]
fn malformed_label_in_attribute() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "oci_image(name = \"img\", base = \"//a b:c\")\n")],
        &["query", "//..."]
    ));
}

#[test]
fn malformed_label_on_command_line() {
    insta::assert_snapshot!(bad(&[("app/BUILD.star", "")], &["build", "//app:"]));
}

#[test]
fn load_cycle() {
    insta::assert_snapshot!(bad(
        &[
            ("app/BUILD.star", "load(\"//defs:a.star\", \"x\")\n"),
            ("defs/a.star", "load(\"//defs:b.star\", \"y\")\nx = y\n"),
            ("defs/b.star", "load(\"//defs:a.star\", \"x\")\ny = 1\n"),
        ],
        &["query", "//app/..."]
    ));
}

#[test]
fn dependency_cycle() {
    insta::assert_snapshot!(bad(
        &[
            ("a/BUILD.star", "oci_image(name = \"a\", base = \"//b:b\")\n"),
            ("b/BUILD.star", "oci_image(name = \"b\", base = \"//c:c\")\n"),
            ("c/BUILD.star", "oci_image(name = \"c\", base = \"//a:a\")\n"),
        ],
        &["query", "deps(//a:a)"]
    ));
}

#[test]
fn glob_escaping_the_package() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "layer(name = \"l\", srcs = glob([\"../secrets/*\"]))\n"), ("secrets/k", "x")],
        &["query", "//app:l"]
    ));
}

#[test]
fn source_file_outside_package() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "layer(name = \"l\", srcs = [\"../secrets/k\"])\n"), ("secrets/k", "x")],
        &["query", "//app:l"]
    ));
}

#[test]
fn invalid_attribute_value_choice() {
    insta::assert_snapshot!(bad(
        &[("app/BUILD.star", "layer(name = \"l\", srcs = [\"f\"], compression = \"lz4\")\n"), ("app/f", "x")],
        &["query", "//app:l"]
    ));
}

#[test]
fn no_workspace() {
    let d = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cbuild"))
        .current_dir(d.path())
        .args(["query", "//..."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e =
        String::from_utf8_lossy(&out.stderr).replace(&d.path().canonicalize().unwrap().display().to_string(), "[DIR]");
    insta::assert_snapshot!(e);
}

#[test]
fn bad_cbuild_toml() {
    let cx = TestContext::new();
    cx.write("cbuild.toml", "[build]\njobz = 2\n");
    let r = cx.run(&["query", "//..."]);
    assert_eq!(r.code, 2);
    insta::assert_snapshot!(r.stderr);
}

#[test]
fn macros_and_checked_rules_from_star_files() {
    let cx = TestContext::new();
    cx.write(
        "tools/defs.star",
        "def script_image(name, script):\n    layer(name = name + \"-layer\", srcs = [script], prefix = \"/app\")\n    oci_image(name = name, layers = [\":\" + name + \"-layer\"], entrypoint = [\"/app/\" + script])\n\n\
def _impl(ctx):\n    genrule(name = ctx.name, outs = [ctx.attr.out], cmd = \"echo \" + ctx.attr.text + \" > $OUTS\")\n\n\
echo_file = rule(impl = _impl, attrs = {\"out\": attr.string(mandatory = True), \"text\": attr.string(default = \"hi\")})\n",
    );
    cx.write("app/BUILD.star", "load(\"//tools:defs.star\", \"script_image\", \"echo_file\")\nscript_image(name = \"img\", script = \"run.sh\")\necho_file(name = \"e\", out = \"e.txt\")\n");
    cx.write("app/run.sh", "echo hi\n");
    let r = cx.run(&["query", "//...", "--output", "label"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "//app:e\n//app:img\n//app:img-layer\n");
    let r = cx.run(&["query", "kind(genrule, //...)", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["attrs"]["cmd"], "echo hi > $OUTS");
    // A checked macro rejects unknown attributes like any rule.
    cx.write(
        "app/BUILD.star",
        "load(\"//tools:defs.star\", \"echo_file\")\necho_file(name = \"e\", outt = \"e.txt\")\n",
    );
    let r = cx.run(&["query", "//..."]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unknown attribute `outt` for rule `macro`") || r.stderr.contains("unknown attribute `outt`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("app/BUILD.star:2:1"), "{}", r.stderr);
}

#[test]
fn examples_query_and_dot() {
    let cx = TestContext::from_examples();
    let r = cx.run(&["query", "//..."]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for l in
        ["//services/api:image", "//stacks:default", "//builders:default", "//buildpacks:shell-web", "//tools:tool"]
    {
        assert!(r.stdout.lines().any(|x| x == l), "{l} missing from:\n{}", r.stdout);
    }
    let r = cx.run(&["query", "deps(//services/api:image)", "--output", "dot"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"//services/api:image\" -> \"//builders:default\""), "{}", r.stdout);
    if std::process::Command::new("dot").arg("-V").output().is_ok() {
        let mut child = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(r.stdout.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "dot rejected the graph");
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
    let r = cx.run(&["query", "rdeps(//..., //stacks:default)"]);
    assert!(r.stdout.contains("//services/site:image") && !r.stdout.contains("//tools:tool\n"), "{}", r.stdout);
    let r = cx.run(&["query", "kind(cnb_image, //services/...)"]);
    assert_eq!(
        r.stdout,
        "//services/api:image\n//services/hello-py:image\n//services/site:image\n//services/worker:image\n"
    );
    // somepath: one chain from the app to the busybox binary; allpaths: every target on any chain
    // (the build image too); no path the other way round.
    let some = cx.run(&["query", "somepath(//services/api:image, //stacks:busybox-bin)"]);
    assert_eq!(some.code, 0, "{}", some.stderr);
    let all = cx.run(&["query", "allpaths(//services/api:image, //stacks:busybox-bin)"]);
    let (some, all): (Vec<&str>, Vec<&str>) = (some.stdout.lines().collect(), all.stdout.lines().collect());
    assert!(some.contains(&"//services/api:image") && some.contains(&"//stacks:busybox-bin"), "{some:?}");
    assert!(some.iter().all(|l| all.contains(l)) && all.len() > some.len(), "{some:?} ⊂ {all:?}");
    assert!(all.contains(&"//stacks:build-image") && all.contains(&"//stacks:run-image"), "{all:?}");
    assert!(!all.contains(&"//tools:tool"), "{all:?}");
    let none = cx.run(&["query", "somepath(//stacks:busybox-bin, //services/api:image)"]);
    assert_eq!((none.code, none.stdout.as_str()), (0, ""), "{}", none.stderr);
}

#[test]
fn thousand_generated_packages_load() {
    let cx = TestContext::new();
    cx.write("lib/BUILD.star", "layer(name = \"base\", srcs = glob([\"*.txt\"]))\n").write("lib/a.txt", "a");
    for i in 0..1000 {
        cx.write(&format!("pkgs/p{i:04}/f.txt"), &i.to_string());
        let base = if i > 0 { format!("//pkgs/p{:04}:img", i - 1) } else { "scratch".to_string() };
        cx.write(
            &format!("pkgs/p{i:04}/BUILD.star"),
            &format!("layer(name = \"layer\", srcs = glob([\"*.txt\"]))\noci_image(name = \"img\", base = \"{base}\", layers = [\"//lib:base\", \":layer\"])\n"),
        );
    }
    let r = cx.run(&["query", "//..."]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 2001);
    let r = cx.run(&["query", "deps(//pkgs/p0999:img)"]);
    assert_eq!(r.stdout.lines().count(), 2001, "1000 chained images + 1000 layers + lib:base");
    let r = cx.run(&["query", "rdeps(//..., //pkgs/p0000:layer)"]);
    assert_eq!(r.stdout.lines().count(), 1001);
}
