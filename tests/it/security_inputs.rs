//! Hostile inputs that name host paths, through the CLI (cbuild runs as root on the host):
//! a genrule that swaps a declared output's directory for a symlink to a host directory
//! (`genrule_output_dir_symlink_to_host_is_refused`), a buildpack.toml whose version or id is a
//! path escape (`buildpack_version_with_dotdot_is_refused`), and a symlink committed in the
//! repository that leads to a root-only host file (`repo_symlink_outside_workspace_is_refused`).
//! Each asserts the build fails naming the culprit, the host file is untouched (content, mode,
//! owner, mtime) and its content is nowhere under `cbuild-out` or the cache dir.
//!
//! The validators themselves are unit-tested beside them (`cnb::buildpack_toml` tests, the
//! `SourceCheck` tests in `execution::scheduler`, `fs::confined`).

use crate::common::support;

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use support::Ws;

/// A host file the build must neither read into its outputs nor change.
struct Canary {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    file: PathBuf,
    content: String,
    before: (Vec<u8>, u32, u32, u32, i64, i64),
}

impl Canary {
    /// `<tmp>/host/secret`, mode 0600, with a content unique to this test.
    fn new(tag: &str) -> Canary {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("host");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("secret");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let content = format!("CANARY-{tag}-{}-{nanos}", std::process::id());
        std::fs::write(&file, &content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let before = Self::state(&file);
        Canary { _dir: d, dir, file, content, before }
    }

    fn state(p: &Path) -> (Vec<u8>, u32, u32, u32, i64, i64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (std::fs::read(p).unwrap(), m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec())
    }

    /// Unchanged, its directory holds nothing new, and its content is in no file of `ws`'s
    /// `cbuild-out` or cache dir.
    fn assert_untouched(&self, ws: &Ws, what: &str) {
        assert_eq!(Self::state(&self.file), self.before, "{what}: the host file changed");
        let names: Vec<_> = std::fs::read_dir(&self.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")], "{what}: the host dir changed");
        for d in [ws.path("cbuild-out"), ws.cache.clone()] {
            let hits = support::files_containing(&d, self.content.as_bytes());
            assert!(hits.is_empty(), "{what}: the host file's content is in {hits:?}");
        }
        // A hard link into the CAS would share the canary's inode.
        assert_eq!(std::fs::metadata(&self.file).unwrap().nlink(), 1, "{what}: the host file was hard-linked");
    }
}

/// `cbuild build TARGET` (human output, so the error text is on stderr).
fn build(ws: &Ws, target: &str) -> support::Out {
    ws.run(&["build", target])
}

// ---- genrule outputs ---------------------------------------------------------------------------

#[test]
fn genrule_output_dir_symlink_to_host_is_refused() {
    let canary = Canary::new("genrule");
    let ws = support::empty();
    let host_dir = canary.dir.display().to_string();
    let host_file = canary.file.display().to_string();
    ws.write(
        "g/BUILD.star",
        format!(
            r#"
# `d` (created by cbuild for the output) replaced by a link to a host directory.
genrule(name = "dir", outs = ["d/secret"], cmd = "rm -rf d && ln -s {host_dir} d")
# The output itself a link to a host file.
genrule(name = "file", outs = ["secret"], cmd = "ln -s {host_file} secret")
# A link to a link out, both in the scratch tree.
genrule(name = "chain", outs = ["a/secret"], cmd = "rm -rf a && mkdir x && ln -s {host_dir} x/h && ln -s x/h a")
layer(name = "l", srcs = [":dir"], prefix = "/srv", compression = "none")
oci_image(name = "img", layers = [":l"])
"#
        ),
    );
    for (target, culprit) in [("//g:img", "`d`"), ("//g:file", "`secret`"), ("//g:chain", "`a`")] {
        let o = build(&ws, target);
        assert_ne!(o.code, 0, "{target}: the build must fail:\n{}", o.all());
        assert!(
            o.stderr.contains("declared output") && o.stderr.contains(culprit) && o.stderr.contains("symlink"),
            "{target}: the error must name the output and the symlink {culprit}:\n{}",
            o.stderr
        );
        assert!(!o.all().contains(&canary.content), "{target}: the host file's content was printed");
        canary.assert_untouched(&ws, target);
    }
    // Positive control: a plain output in a subdirectory still works.
    ws.write("ok/BUILD.star", "genrule(name = \"g\", outs = [\"d/f\"], cmd = \"echo fine > d/f\")\n");
    let o = build(&ws, "//ok:g");
    assert_eq!(o.code, 0, "{}", o.all());
}

// ---- buildpack.toml ----------------------------------------------------------------------------

/// An examples copy with buildpack `//bps:bad` (whose buildpack.toml is `toml`) in the builder of
/// `//app:img`.
fn buildpack_ws(toml: &str) -> Ws {
    let ws = support::examples();
    ws.write("bps/bad/buildpack.toml", toml);
    ws.write("bps/bad/bin/detect", "#!/bin/sh\nexit 0\n");
    ws.write("bps/bad/bin/build", "#!/bin/sh\nexit 0\n");
    for f in ["bin/detect", "bin/build"] {
        std::fs::set_permissions(ws.path(&format!("bps/bad/{f}")), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ws.write("bps/BUILD.star", "buildpack(name = \"bad\", srcs = glob([\"bad/**\"]))\n");
    ws.write("bld/BUILD.star", "builder(name = \"b\", stack = \"//stacks:default\", order = [[\"//bps:bad\"]])\n");
    ws.write("app/BUILD.star", "cnb_image(name = \"img\", srcs = [\"x.txt\"], builder = \"//bld:b\")\n");
    ws.write("app/x.txt", "x");
    ws
}

#[test]
fn buildpack_version_with_dotdot_is_refused() {
    let canary = Canary::new("buildpack");
    // Enough `..` to leave any scratch dir, then into the canary's directory.
    let escape = format!("1/../../../../../../../../../../..{}", canary.dir.display());
    let cases = [
        (format!("id = \"acme/bad\"\nversion = \"{escape}\""), "buildpack.version", escape.clone()),
        ("id = \"acme/bad\"\nversion = \"..\"".to_string(), "buildpack.version", "..".to_string()),
        ("id = \"..\"\nversion = \"1\"".to_string(), "buildpack.id", "..".to_string()),
        ("id = \"acme/bad_id\"\nversion = \"1\"".to_string(), "buildpack.id", "acme/bad_id".to_string()),
    ];
    for (info, field, value) in cases {
        let ws = buildpack_ws(&format!("api = \"0.10\"\n[buildpack]\n{info}\n[[targets]]\nos = \"linux\"\n"));
        let o = build(&ws, "//app:img");
        assert_ne!(o.code, 0, "{info}: the build must fail:\n{}", o.all());
        for part in [field, value.as_str(), "bad/buildpack.toml"] {
            assert!(o.stderr.contains(part), "{info}: the error must name `{part}`:\n{}", o.stderr);
        }
        canary.assert_untouched(&ws, &info);
    }
    // Versions real buildpacks use are still accepted (the buildpack target alone: no build run).
    for v in ["1.2.3", "0.0.1-rc.1+build", "v1"] {
        let ws = buildpack_ws(&format!(
            "api = \"0.10\"\n[buildpack]\nid = \"acme/ok\"\nversion = \"{v}\"\n[[targets]]\nos = \"linux\"\n"
        ));
        let o = build(&ws, "//bps:bad");
        assert_eq!(o.code, 0, "{v}: {}", o.all());
    }
}

// ---- repository symlinks -----------------------------------------------------------------------

#[test]
fn repo_symlink_outside_workspace_is_refused() {
    let canary = Canary::new("repo");
    let host = canary.file.display().to_string();
    let ws = support::empty();
    ws.write("p/inside.txt", "inside\n");
    // Absolute, relative through `..`, a chain of links, and a directory on the way.
    symlink(&canary.file, ws.path("p/abs")).unwrap();
    let depth = ws.path("p").components().count();
    let up = format!("{}{}", "../".repeat(depth), host.trim_start_matches('/'));
    symlink(&up, ws.path("p/dotdot")).unwrap();
    symlink("hop", ws.path("p/chain")).unwrap();
    symlink(&canary.file, ws.path("p/hop")).unwrap();
    symlink(&canary.dir, ws.path("p/hostdir")).unwrap();
    // A link that stays inside keeps working.
    symlink("inside.txt", ws.path("p/in-link")).unwrap();
    ws.write(
        "p/BUILD.star",
        r#"
genrule(name = "g_abs", srcs = ["abs"], outs = ["o"], cmd = "cat $SRCS > $OUTS")
genrule(name = "g_dotdot", srcs = ["dotdot"], outs = ["o"], cmd = "cat $SRCS > $OUTS")
genrule(name = "g_chain", srcs = ["chain"], outs = ["o"], cmd = "cat $SRCS > $OUTS")
genrule(name = "g_dir", srcs = ["hostdir/secret"], outs = ["o"], cmd = "cat $SRCS > $OUTS")
layer(name = "l_abs", srcs = ["abs"], prefix = "/etc", compression = "none")
oci_image(name = "img_abs", layers = [":l_abs"])
layer(name = "l_glob", srcs = glob(["*"], exclude = ["BUILD.star", "hop", "hostdir"]), prefix = "/srv", compression = "none")
oci_image(name = "img_glob", layers = [":l_glob"])
layer(name = "l_dir", srcs = ["hostdir/secret"], prefix = "/srv", compression = "none")
oci_image(name = "img_dir", layers = [":l_dir"])

genrule(name = "g_in", srcs = ["in-link"], outs = ["o"], cmd = "cat $SRCS > $OUTS")
layer(name = "l_in", srcs = ["in-link", "inside.txt"], prefix = "/srv", compression = "none")
oci_image(name = "img_in", layers = [":l_in"])
"#,
    );
    let dir = canary.dir.display().to_string();
    let cases = [
        ("//p:g_abs", "`p/abs`", &host),
        ("//p:g_dotdot", "`p/dotdot`", &up),
        ("//p:g_chain", "`p/chain`", &host),
        ("//p:g_dir", "`p/hostdir`", &dir),
        ("//p:img_abs", "`p/abs`", &host),
        ("//p:img_glob", "`p/abs`", &host),
        ("//p:img_dir", "`p/hostdir`", &dir),
    ];
    for (target, source, target_path) in cases {
        let o = build(&ws, target);
        assert_eq!(o.code, 2, "{target}: a workspace error exits 2:\n{}", o.all());
        for part in [source, target_path.as_str(), "outside the workspace"] {
            assert!(o.stderr.contains(part), "{target}: the error must name {part}:\n{}", o.stderr);
        }
        assert!(!o.all().contains(&canary.content), "{target}: the host file's content was printed");
        canary.assert_untouched(&ws, target);
    }
    // Links that stay inside the workspace are followed as before.
    let o = build(&ws, "//p:g_in");
    assert_eq!(o.code, 0, "{}", o.all());
    let o = build(&ws, "//p:img_in");
    assert_eq!(o.code, 0, "{}", o.all());
    canary.assert_untouched(&ws, "inside links");
}

/// The one kind of source symlink that may point outside: a cnb_image app file, which the app dir
/// keeps as a link (meaningful inside the build container) and nobody follows on the host.
#[test]
fn cnb_app_symlink_outside_is_kept_as_a_link() {
    let canary = Canary::new("app");
    let ws = support::examples();
    symlink(&canary.file, ws.path("services/site/host-link")).unwrap();
    symlink("/usr/bin/nowhere-on-this-host", ws.path("services/site/dangling-link")).unwrap();
    let o = ws.build(&["//services/site:image"]);
    assert_eq!(o.code, 0, "{}\n{}", o.all(), o.failures());
    canary.assert_untouched(&ws, "cnb app link");
    // Also used by a genrule (which would follow it): refused.
    ws.write(
        "services/site/extra/BUILD.star",
        "genrule(name = \"g\", srcs = [\"l\"], outs = [\"o\"], cmd = \"cat $SRCS > $OUTS\")\n",
    );
    symlink(&canary.file, ws.path("services/site/extra/l")).unwrap();
    let o = build(&ws, "//services/site/extra:g");
    assert_ne!(o.code, 0, "{}", o.all());
    assert!(o.stderr.contains("`services/site/extra/l`"), "{}", o.stderr);
    canary.assert_untouched(&ws, "genrule of an app link");
}
