//! A cache hit only when a clean build would give the same bytes (issue: hermetic inputs). Each test
//! is named after an audit finding: an input that reached the output but not the key (or the other
//! way round), checked by comparing the incremental build with a clean build of the same tree.

use crate::common::support;

use std::os::unix::fs::PermissionsExt;

fn site_ws() -> support::Ws {
    let ws = support::examples();
    ws.write(
        "app/BUILD.star",
        "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//builders:default\")\n",
    );
    ws.write("app/index.html", "<p>hi</p>\n");
    ws.write("app/run.sh", "#!/bin/sh\necho hi\n");
    ws
}

fn chmod(ws: &support::Ws, rel: &str, mode: u32) {
    std::fs::set_permissions(ws.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `chmod +x` on a cnb_image source changes the image, so it must change the key; a mode change
/// git does not track (group write: umask 002 vs 022) must change neither.
#[test]
fn cnb_source_mode_is_keyed_as_git_tracks_it() {
    let ws = site_ws();
    chmod(&ws, "app/run.sh", 0o644);
    let d1 = ws.ok(&["//app:img"]);
    chmod(&ws, "app/run.sh", 0o755);
    let d2 = ws.ok(&["//app:img"]);
    assert_ne!(d1, d2, "chmod +x was a cache hit");
    assert_eq!(d2, support::clean_digests(ws.root(), &["//app:img"]), "incremental != clean after chmod +x");
    // umask 002 checkout: group-writable files, same image, no rebuild.
    chmod(&ws, "app/run.sh", 0o775);
    chmod(&ws, "app/index.html", 0o664);
    let o = ws.build(&["//app:img"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(o.digests(), d2, "group write changed the image");
    assert_eq!(o.summary()["executed"], 0, "group write rebuilt: {}", o.stdout);
    assert_eq!(o.digests(), support::clean_digests(ws.root(), &["//app:img"]), "incremental != clean (umask 002)");
}

/// SOURCE_DATE_EPOCH sets the mtimes inside the CNB build's layers: it is part of the key.
#[test]
fn source_date_epoch_is_keyed_for_cnb_builds() {
    let ws = site_ws();
    let d1 = ws.ok(&["//app:img"]);
    let o = support::out_of(ws.cmd().env("SOURCE_DATE_EPOCH", "315532900").args(["build", "--json", "//app:img"]));
    assert_eq!(o.code, 0, "{}", o.all());
    assert_ne!(o.digests(), d1, "another SOURCE_DATE_EPOCH was a cache hit");
    let clean = support::copy_of(ws.root(), None);
    let c = support::out_of(clean.cmd().env("SOURCE_DATE_EPOCH", "315532900").args(["build", "--json", "//app:img"]));
    assert_eq!(o.digests(), c.digests(), "incremental != clean for SOURCE_DATE_EPOCH=315532900");
}

/// A source edited while an action that reads it runs: the result must not be stored under the
/// old content's key (it would be served, and uploaded, as the old content's output; after a
/// revert `explain` would say nothing changed while the image held the edit).
#[test]
fn edit_during_a_build_is_not_stored_under_the_old_key() {
    use std::io::BufRead;
    let ws = support::empty();
    ws.write(
        "BUILD.star",
        "genrule(name = \"gen\", srcs = [\"in.txt\"], outs = [\"out.txt\"], cmd = \"sleep 2; cat in.txt > out.txt\")\n\
         layer(name = \"l\", srcs = [\":gen\"], prefix = \"/data\")\n\
         oci_image(name = \"img\", layers = [\":l\"])\n",
    );
    ws.write("in.txt", "original\n");
    let mut child = ws
        .cmd()
        .args(["build", "--json", "//:img"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        if l.contains("\"started\"") && l.contains("genrule") {
            break;
        }
    }
    // The genrule has started (its key holds "original") and sleeps before reading in.txt.
    ws.write("in.txt", "edited\n");
    for l in lines {
        seen.push_str(&l.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the build stored a result read from an edited source:\n{seen}");
    assert!(seen.contains("in.txt") && seen.contains("changed while this action ran"), "{seen}");
    // Revert: the original content must not be served from a poisoned entry.
    ws.write("in.txt", "original\n");
    let d = ws.ok(&["//:img"]);
    assert_eq!(d, support::clean_digests(ws.root(), &["//:img"]), "incremental != clean after the revert");
}

/// The host umask reached genrule and buildpack sandboxes (launch-layer files 0664 under umask
/// 002) and `umask 077` broke detect ("Can't chdir to /workspace"): builds under 077, 002 and 022
/// give the same images, equal to a clean build.
#[test]
fn host_umask_does_not_reach_outputs() {
    let ws = site_ws();
    ws.write(
        "app/BUILD.star",
        "cnb_image(name = \"img\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), builder = \"//builders:default\")\n\
         genrule(name = \"gen\", outs = [\"o/f.txt\"], cmd = \"mkdir -p o && echo hi > o/f.txt\")\n\
         layer(name = \"l\", srcs = [\":gen\"], prefix = \"/data\")\n\
         oci_image(name = \"gimg\", layers = [\":l\"])\n",
    );
    let clean = support::clean_digests(ws.root(), &["//app:img", "//app:gimg"]);
    for umask in ["077", "002"] {
        let other = support::copy_of(ws.root(), None);
        let cbuild = env!("CARGO_BIN_EXE_cbuild");
        // The test's own environment for cbuild (cache dir, SOURCE_DATE_EPOCH), run through sh.
        let mut c = other.cmd();
        c.env("CBUILD", cbuild);
        let mut sh = std::process::Command::new("sh");
        sh.current_dir(other.root())
            .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
            .args(["-c", &format!("umask {umask}; exec \"$CBUILD\" build --json //app:img //app:gimg")]);
        let o = support::out_of(&mut sh);
        assert_eq!(o.code, 0, "umask {umask}: {}", o.all());
        assert_eq!(o.digests(), clean, "umask {umask} changed an image");
    }
}

/// An edit to a buildpack of the builder that detect did not choose reruns detect (which reads
/// every buildpack) but not the build phase (which reads, and sees, only the chosen group).
#[test]
fn editing_an_unchosen_buildpack_does_not_rerun_the_build_phase() {
    let ws = site_ws();
    ws.ok(&["//app:img"]);
    let detect = ws.read("buildpacks/shell-web/bin/detect");
    ws.write("buildpacks/shell-web/bin/detect", format!("{detect}\n# edited\n"));
    let o = ws.build(&["//app:img"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let outcome = |action: &str| {
        o.events()
            .iter()
            .find(|e| e["type"] == "finished" && e["label"] == "//app:img" && e["action"] == action)
            .map(|e| e["outcome"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(outcome("detect"), "executed", "{}", o.stdout);
    assert_eq!(outcome("build"), "cached_local", "{}", o.stdout);
    assert_eq!(o.digests(), support::clean_digests(ws.root(), &["//app:img"]));
}

/// `cbuild --json build … | head -1` closed the pipe under cbuild, which panicked with a
/// backtrace. It now exits quietly (as ripgrep), and the build it started still completes.
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    let ws = site_ws();
    let mut c = ws.cmd();
    c.env("CBUILD_BIN", env!("CARGO_BIN_EXE_cbuild"));
    let mut sh = std::process::Command::new("bash");
    sh.current_dir(ws.root())
        .env_clear()
        .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args([
            "-c",
            "\"$CBUILD_BIN\" --json build //app:img 2>err.txt | head -c 1 >/dev/null; echo \"${PIPESTATUS[0]}\"",
        ]);
    let o = support::out_of(&mut sh);
    let err = std::fs::read_to_string(ws.path("err.txt")).unwrap_or_default();
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    let code: i32 = o.stdout.trim().parse().unwrap_or(-1);
    assert!(code == 0 || code == 141, "exit status {code}: {err}");
    for args in [&["query", "//..."][..], &["query", "--output", "json", "//..."][..]] {
        let mut sh = std::process::Command::new("bash");
        sh.current_dir(ws.root())
            .env_clear()
            .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["-c", &format!("\"$CBUILD_BIN\" {} 2>err.txt | head -c 1 >/dev/null", args.join(" "))]);
        support::out_of(&mut sh);
        let err = std::fs::read_to_string(ws.path("err.txt")).unwrap_or_default();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A symlink in cnb_image sources was keyed by its target's content while the image stores the
/// link: retargeting `current.html` from `index.html` to `../app/index.html` (same file) was a
/// cache hit that kept the old link in the image.
#[test]
fn cnb_symlink_source_is_keyed_by_its_text() {
    let ws = site_ws();
    std::os::unix::fs::symlink("index.html", ws.path("app/current.html")).unwrap();
    let d1 = ws.ok(&["//app:img"]);
    std::fs::remove_file(ws.path("app/current.html")).unwrap();
    std::os::unix::fs::symlink("../app/index.html", ws.path("app/current.html")).unwrap();
    let d2 = ws.ok(&["//app:img"]);
    assert_ne!(d1, d2, "a retargeted link was a cache hit");
    assert_eq!(d2, support::clean_digests(ws.root(), &["//app:img"]), "incremental != clean");
}

/// A no-op build re-hashes no file (detect used to hard-link the app, moving every source's ctime,
/// so each build re-read all app files); the `--json` summary says how many files were hashed.
#[test]
fn a_no_op_build_hashes_no_file() {
    let ws = site_ws();
    // Files changed within the stat cache's racy window (2 s) are re-hashed by design.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(2100));
    settle();
    let first = ws.build(&["//app:img"]);
    assert!(first.summary()["files_hashed"].as_u64().unwrap() > 0, "{}", first.stdout);
    let again = ws.build(&["//app:img"]);
    assert_eq!(again.summary()["executed"], 0, "{}", again.stdout);
    assert_eq!(again.summary()["files_hashed"], 0, "a no-op build re-hashed files: {}", again.stdout);
    // After a real build of the app (detect + build ran), still nothing to re-hash.
    ws.write("app/index.html", "<p>changed</p>\n");
    settle();
    let changed = ws.build(&["//app:img"]);
    assert_eq!(changed.summary()["files_hashed"], 1, "{}", changed.stdout);
    let again = ws.build(&["//app:img"]);
    assert_eq!(again.summary()["files_hashed"], 0, "{}", again.stdout);
}

/// The text of the file named `name` in the first layer of the (gzip) OCI layout at `layout`.
fn first_layer_file(layout: &std::path::Path, name: &str) -> String {
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
    let mut out = String::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with(name) {
            std::io::Read::read_to_string(&mut e, &mut out).unwrap();
        }
    }
    out
}

/// Genrules saw the host's `/usr`, `/bin`, `/etc`, which no key covers. With `image = ...` the
/// command runs in that image's root file system (hermetic, keyed by the image digest): here the
/// example stack's busybox image, whose `/etc/os-release` is not the host's.
#[test]
fn genrule_in_an_image_is_hermetic() {
    let ws = support::examples();
    ws.write(
        "gen/BUILD.star",
        "genrule(name = \"g\", srcs = [\"in.txt\"], outs = [\"out.txt\"], image = \"//stacks:run-image\", \
         cmd = \"cat in.txt /etc/os-release > out.txt\")\n\
         layer(name = \"l\", srcs = [\":g\"], prefix = \"/gen\")\n\
         oci_image(name = \"img\", layers = [\":l\"])\n",
    );
    ws.write("gen/in.txt", "input\n");
    let d = ws.ok(&["//gen:img"]);
    assert_eq!(d, support::clean_digests(ws.root(), &["//gen:img"]));
    // The output (in the image's one layer) holds the image's os-release (busybox), not the host's.
    let out = first_layer_file(&ws.path("cbuild-out/gen/img"), "out.txt");
    assert!(out.starts_with("input\n") && out.contains("ID=busybox"), "genrule output: {out:?}");
    // A changed image is a new key: the genrule runs again.
    let st = ws.read("stacks/rootfs/etc/os-release");
    ws.write("stacks/rootfs/etc/os-release", format!("{st}BUILD_ID=2\n"));
    let o = ws.build(&["//gen:img"]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.events().iter().any(|e| e["label"] == "//gen:g" && e["type"] == "finished" && e["outcome"] == "executed"),
        "{}",
        o.stdout
    );
}

/// A genrule's `/work` is the target's kept input tree, reconciled before each run (issue 23).
/// Whatever the last command did to it — a leftover file and directory, a source chmodded and
/// appended to — must be gone: every build's output equals a clean build's, the command sees a
/// source's executable bit (keyed: a chmod runs it again) and SOURCE_DATE_EPOCH mtimes, and a
/// no-op runs nothing.
#[test]
fn a_genrules_kept_input_tree_is_what_a_fresh_copy_gives() {
    let ws = support::empty();
    ws.write(
        "gen/BUILD.star",
        r#"genrule(
    name = "g",
    srcs = glob(["src/**"]),
    outs = ["out/tree.txt"],
    cmd = "l=$(find . -printf '%p %m %U:%G %T@\n' | sort); printf '%s\n' \"$l\" > out/tree.txt; " +
          "cat $SRCS >> out/tree.txt; echo junk > leftover; mkdir -p sub && echo x > sub/f; " +
          "chmod 0600 src/a.txt; echo tamper >> src/a.txt; rm src/b/c.txt",
)
layer(name = "l", srcs = [":g"], prefix = "/gen")
oci_image(name = "img", layers = [":l"])
"#,
    );
    ws.write("gen/src/a.txt", "a\n");
    ws.write("gen/src/b/c.txt", "c\n");
    let args = ["//gen:img"];
    let tree = || first_layer_file(&ws.path("cbuild-out/gen/img"), "tree.txt");
    let ran = |o: &support::Out| {
        o.events().iter().any(|e| e["label"] == "//gen:g" && e["type"] == "finished" && e["outcome"] == "executed")
    };
    let check = |what: &str, should_run: bool| {
        let o = ws.build(&args);
        assert_eq!(o.code, 0, "{what}: {}", o.all());
        assert_eq!(ran(&o), should_run, "{what}: genrule executed? {}", o.stdout);
        assert_eq!(
            o.digests(),
            support::clean_digests(ws.root(), &args),
            "{what}: differs from a clean build:\n{}",
            tree()
        );
        let t = tree();
        assert!(!t.contains("leftover") && !t.contains("./sub") && !t.contains("tamper"), "{what}: {t}");
        t
    };
    let t = check("first build", true);
    assert!(t.contains("./src/a.txt 644 65534:65534 315532800.0000000000\n"), "{t}");
    assert!(t.contains("./src 755 65534:65534 315532800.0000000000\n"), "{t}");
    ws.write("gen/src/b/c.txt", "c edited\n");
    let t = check("one source edited", true);
    assert!(t.contains("c edited"), "{t}");
    check("no-op", false);
    std::fs::set_permissions(ws.path("gen/src/b/c.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = check("executable bit set", true);
    assert!(t.contains("./src/b/c.txt 755 "), "{t}");
    ws.write("gen/src/new.txt", "new\n");
    check("a source added", true);
    std::fs::remove_file(ws.path("gen/src/new.txt")).unwrap();
    // Back to the sources of the build before: a cache hit, not a run.
    let t = check("a source removed", false);
    assert!(!t.contains("new.txt"), "{t}");

    // The kept tree belongs to this cache: a cache dir removed and made again (a cold build) gets
    // a fresh one and the old one is swept.
    // SAFETY: geteuid has no preconditions.
    let apps = std::env::temp_dir().join(format!("cbuild-sandbox-{}", unsafe { libc::geteuid() })).join("apps");
    let owned = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&apps)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|d| std::fs::read(d.join("owner")).ok().as_deref() == Some(ws.cache.as_os_str().as_encoded_bytes()))
            .collect()
    };
    let before = owned();
    assert_eq!(before.len(), 1, "{before:?}");
    std::fs::remove_dir_all(&ws.cache).unwrap();
    check("cache dir removed", true);
    let after = owned();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!before[0].exists() && after[0] != before[0], "{before:?} {after:?}");
}

/// The scheduler stats sources relative to their directory's descriptor (`fstatat`, issue 23):
/// every change a path `lstat` saw must still be seen, each build matching a clean build of the
/// same tree — content rewritten with size and mtime restored, a file added to and removed from a
/// globbed directory, a mode change, a symlink retargeted — and a no-op still hashes nothing.
#[test]
fn directory_relative_stats_notice_every_change() {
    let ws = support::empty();
    ws.write(
        "app/BUILD.star",
        "layer(name = \"l\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), prefix = \"/app\")\n\
         oci_image(name = \"i\", layers = [\":l\"])\n",
    );
    for n in 0..20 {
        ws.write(&format!("app/d{}/f{n}.txt", n % 3), format!("file {n}\n"));
    }
    std::os::unix::fs::symlink("f0.txt", ws.path("app/d0/link")).unwrap();
    let args = ["//app:i"];
    let settle = || std::thread::sleep(std::time::Duration::from_millis(2100));
    let check = |what: &str| {
        let got = ws.ok(&args);
        assert_eq!(got, support::clean_digests(ws.root(), &args), "{what}: differs from a clean build");
        got
    };
    settle();
    let mut last = check("first build");
    let noop = ws.build(&args);
    assert_eq!((noop.summary()["executed"].as_u64(), noop.summary()["files_hashed"].as_u64()), (Some(0), Some(0)));

    let f = ws.path("app/d1/f4.txt");
    let old = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, "FILE 4\n").unwrap();
    std::fs::File::options().write(true).open(&f).unwrap().set_modified(old.modified().unwrap()).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().len(), old.len());
    let retarget = || {
        std::fs::remove_file(ws.path("app/d0/link")).unwrap();
        std::os::unix::fs::symlink("f6.txt", ws.path("app/d0/link")).unwrap();
    };
    let steps: [(&str, &dyn Fn()); 5] = [
        ("same size and mtime, new content", &(|| {})),
        ("a file added", &(|| ws.write("app/d2/new.txt", "new\n"))),
        ("a file removed", &(|| std::fs::remove_file(ws.path("app/d0/f3.txt")).unwrap())),
        ("chmod +x", &(|| chmod(&ws, "app/d1/f7.txt", 0o755))),
        ("a symlink retargeted", &retarget),
    ];
    for (what, change) in steps {
        change();
        let now = check(what);
        assert_ne!(now, last, "{what}: not noticed");
        last = now;
    }
}

/// A no-op answered from the last identical build's record (`cli::noop`: stamps of everything it
/// read, no loading, no keys) only while every stamp holds. Each change below — a same-size edit,
/// a chmod, a file added to a glob, a BUILD.star and a loaded `.star` edit, a directory swapped
/// for a symlink to an identical copy outside the workspace, a variable cbuild reads, a removed
/// layout, a cleaned cache — must be built as always and equal a clean build; with nothing
/// changed the record answers with the same summary and a layout as the build left it.
#[test]
fn a_no_op_record_answers_only_while_nothing_it_read_changed() {
    let ws = support::empty();
    ws.write("defs.star", "PREFIX = \"/gen\"\n");
    ws.write(
        "pkg/BUILD.star",
        r#"load("//:defs.star", "PREFIX")
genrule(name = "g", srcs = glob(["src/**"]), outs = ["out.txt"], cmd = "ls -l $SRCS > out.txt; cat $SRCS >> out.txt")
layer(name = "l", srcs = [":g"], prefix = PREFIX)
oci_image(name = "img", layers = [":l"])
"#,
    );
    ws.write("pkg/src/a.txt", "a\n");
    ws.write("pkg/src/d/b.txt", "b\n");
    let args = ["//pkg:img"];
    let from_record = |o: &support::Out| o.summary()["from_record"] == true;
    // Records are written only for inputs older than the racy window (2 s): each step waits.
    let settle = |env: &[(&str, &str)]| {
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let run = || {
            let mut c = ws.cmd();
            c.args(["build", "--json"]).args(args).envs(env.iter().copied());
            support::out_of(&mut c)
        };
        let built = run();
        assert_eq!(built.code, 0, "{}", built.all());
        let again = run();
        assert_eq!(again.code, 0, "{}", again.all());
        assert!(from_record(&again), "an unchanged workspace was not answered from the record: {}", again.all());
        assert_eq!(again.digests(), built.digests());
        assert_eq!(again.summary()["executed"], 0);
        assert_eq!(
            again.summary()["cached_local"],
            built.summary()["cached_local"].as_u64().unwrap() + built.summary()["executed"].as_u64().unwrap()
        );
    };
    let changed = |what: &str| {
        let o = ws.build(&args);
        assert!(!from_record(&o), "{what}: answered from the record: {}", o.all());
        if o.code == 0 {
            assert_eq!(o.digests(), support::clean_digests(ws.root(), &args), "{what}: differs from a clean build");
        }
        o
    };
    settle(&[]);
    ws.write("pkg/src/a.txt", "A\n");
    changed("a same-size edit");
    settle(&[]);
    std::fs::set_permissions(ws.path("pkg/src/a.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    changed("chmod +x");
    settle(&[]);
    ws.write("pkg/src/d/new.txt", "new\n");
    changed("a file added to a glob");
    settle(&[]);
    ws.write("defs.star", "PREFIX = \"/other\"\n");
    changed("a loaded .star file edited");
    settle(&[]);
    let build = ws.read("pkg/BUILD.star").replace("ls -l", "ls -ln");
    ws.write("pkg/BUILD.star", build);
    changed("BUILD.star edited");
    settle(&[]);
    let with_env = |k: &str, v: &str| {
        let mut c = ws.cmd();
        c.args(["build", "--json"]).args(args).env(k, v);
        support::out_of(&mut c)
    };
    // A variable cbuild never reads changes nothing (hyperfine sets a random one per run) ...
    let o = with_env("SOME_UNRELATED_VARIABLE", "1");
    assert!(from_record(&o), "an unrelated variable: not answered from the record: {}", o.all());
    // ... one it reads does.
    let o = with_env("SOURCE_DATE_EPOCH", "315532900");
    assert!(!from_record(&o), "another SOURCE_DATE_EPOCH: answered from the record: {}", o.all());
    assert_eq!(o.code, 0, "{}", o.all());
    settle(&[]);
    std::fs::remove_dir_all(ws.path("cbuild-out/pkg/img")).unwrap();
    let o = changed("the layout removed");
    assert!(ws.path("cbuild-out/pkg/img/index.json").is_file(), "{}", o.all());
    settle(&[]);
    let o = ws.run(&["cache", "clean"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let o = changed("the cache cleaned");
    assert!(o.summary()["executed"].as_u64().unwrap() > 0, "{}", o.all());
    settle(&[]);
    // The same bytes, now behind a symlink that leads outside the workspace: refused as always.
    let outside = tempfile::tempdir().unwrap();
    crate::common::copy_tree(&ws.path("pkg/src/d"), &outside.path().join("d"));
    std::fs::remove_dir_all(ws.path("pkg/src/d")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("d"), ws.path("pkg/src/d")).unwrap();
    changed("a source directory swapped for a link outside");
}
