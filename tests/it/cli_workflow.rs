//! The CI and team workflow through the CLI: `cbuild load` into a real Docker engine (and Podman),
//! `cbuild affected` (a differential test over random edits of a generated monorepo: every target
//! whose action keys change is listed), completions, the man page, `--color`, per-subcommand help,
//! and every flag README.md shows being one clap accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common;
use common::TestContext;

fn have(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------------
// cbuild load

/// A throwaway Docker engine (`../shared/harness/dockerd.sh`), stopped on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    host: String,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let (code, out) = common::run_harness("dockerd.sh", &["start", dir.path().to_str().unwrap()]);
        assert_eq!(code, 0, "dockerd.sh start: {out}");
        let host = out.lines().last().unwrap_or_default().trim().to_string();
        assert!(host.starts_with("unix://"), "dockerd.sh printed {out}");
        Dockerd { dir, host }
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("/usr/bin/docker").env("DOCKER_HOST", &self.host).args(args).output().unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = common::run_harness("dockerd.sh", &["stop", self.dir.path().to_str().unwrap()]);
    }
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn load_into_docker_runs_what_cbuild_run_runs() {
    if !is_root() || !have("dockerd") || !Path::new("/usr/bin/docker").exists() {
        common::skip_unless_ci("needs root and docker.io (dockerd, /usr/bin/docker)");
        return;
    }
    let d = Dockerd::start();
    let cx = TestContext::from_examples();
    let run = cx.run(&["run", "//tools:tool-versioned"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("hello from cbuild"), "{}", run.stdout);

    // Default name (the target has no `tags`), through the API socket.
    let out = cx.cmd().env("DOCKER_HOST", &d.host).args(["load", "//tools:tool-versioned"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.trim_end().ends_with(" cbuild.local/tools/tool-versioned:latest"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Loaded image: cbuild.local/tools/tool-versioned:latest"));
    let docker = d.docker(&["run", "--rm", "--network", "none", "cbuild.local/tools/tool-versioned"]);
    assert!(docker.status.success(), "{}", text(&docker));
    assert_eq!(String::from_utf8_lossy(&docker.stdout), run.stdout, "docker run prints what cbuild run prints");

    // --tag, --json; the engine stores the image cbuild built (same config digest = image id).
    let out = cx
        .cmd()
        .env("DOCKER_HOST", &d.host)
        .args(["--json", "load", "//tools:tool", "--engine", "docker", "--tag", "acme/tool", "--tag", "acme/tool:1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["acme/tool:latest", "acme/tool:1"]));
    let config = config_digest(cx.root(), "tools/tool");
    for t in ["acme/tool:latest", "acme/tool:1"] {
        let id = d.docker(&["image", "inspect", "--format", "{{.Id}}", t]);
        assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), config, "{t}: {}", text(&id));
    }
    let docker = d.docker(&["run", "--rm", "--network", "none", "acme/tool:1"]);
    assert_eq!(String::from_utf8_lossy(&docker.stdout), "hello from cbuild\n", "{}", text(&docker));
}

/// The config digest of the image in the layout `cbuild-out/<rel>`.
fn config_digest(root: &Path, rel: &str) -> String {
    let layout = root.join("cbuild-out").join(rel);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(m)).unwrap()).unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_string()
}

#[test]
fn load_into_podman_through_its_cli_and_its_socket() {
    if !is_root() || !have("podman") {
        common::skip_unless_ci("needs root and podman (apt-get install podman)");
        return;
    }
    // Podman's own store in a temp dir (vfs: no overlay mounts needed), daemonless.
    let store = tempfile::tempdir().unwrap();
    let conf = store.path().join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
            store.path().display()
        ),
    )
    .unwrap();
    let podman = |args: &[&str]| {
        Command::new("podman").env("CONTAINERS_STORAGE_CONF", &conf).args(args).stdin(Stdio::null()).output().unwrap()
    };
    let cx = TestContext::from_examples();
    let no_sockets = |c: &mut Command| {
        c.env("CONTAINERS_STORAGE_CONF", &conf)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env_remove("CONTAINER_HOST")
            .env("XDG_RUNTIME_DIR", store.path());
    };
    // No socket answers: `podman load` reads the archive on stdin.
    let mut c = cx.cmd();
    no_sockets(&mut c);
    let out = c.args(["load", "//tools:tool", "--engine", "podman"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let config = config_digest(cx.root(), "tools/tool");
    let id = podman(&["image", "inspect", "--format", "{{.Id}}", "cbuild.local/tools/tool:latest"]);
    assert_eq!(format!("sha256:{}", String::from_utf8_lossy(&id.stdout).trim()), config, "{}", text(&id));

    // The API of `podman system service` on a socket (auto: docker's socket is absent).
    let sock = store.path().join("podman.sock");
    let mut service = Command::new("podman")
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .args(["system", "service", "--time=0", &format!("unix://{}", sock.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let mut c = cx.cmd();
    no_sockets(&mut c);
    let out = c
        .env("CONTAINER_HOST", format!("unix://{}", sock.display()))
        .env("PATH", "/nonexistent")
        .args(["load", "//tools:tool-versioned", "--tag", "localhost/versioned:2"])
        .output()
        .unwrap();
    let _ = service.kill();
    let _ = service.wait();
    assert!(up, "podman system service did not start");
    assert!(out.status.success(), "{}", text(&out));
    let id = podman(&["image", "inspect", "--format", "{{.Id}}", "localhost/versioned:2"]);
    assert_eq!(
        format!("sha256:{}", String::from_utf8_lossy(&id.stdout).trim()),
        config_digest(cx.root(), "tools/tool-versioned"),
        "{}",
        text(&id)
    );
}

#[test]
fn load_without_an_engine_is_an_environment_error_with_hints() {
    let cx = TestContext::from_examples();
    let empty = tempfile::tempdir().unwrap();
    let out = cx
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
        .env("XDG_RUNTIME_DIR", empty.path())
        .env("PATH", empty.path())
        .args(["load", "//tools:tool"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(36), "an environment error: {err}");
    assert!(err.starts_with("error: no Docker or Podman engine is reachable; tried:"), "{err}");
    assert!(err.contains("unix:///nonexistent/docker.sock") && err.contains("`podman` command: not found"), "{err}");
    assert!(
        err.contains("hint: start Docker") && err.contains("hint: or write a docker-archive instead: cbuild export")
    );
    assert!(out.stdout.is_empty());
    assert!(!cx.root().join("cbuild-out").exists(), "nothing built without an engine to load into");
    let bad = cx.run(&["load", "//tools:tool", "--tag", "acme/tool@sha256:00"]);
    assert_ne!(bad.code, 0);
}

// ---------------------------------------------------------------------------------------------
// completions, man, --color, help

#[test]
fn completions_for_each_shell_and_a_man_page() {
    let cx = TestContext::new();
    for shell in ["bash", "zsh", "fish"] {
        let r = cx.run(&["completions", shell]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        for word in ["affected", "load", "keep-going", "color", "engine"] {
            assert!(r.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    let bash = cx.run(&["completions", "bash"]).stdout;
    let script = cx.root().join("cbuild.bash");
    std::fs::write(&script, &bash).unwrap();
    let n = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(n.status.success(), "bash -n: {}", text(&n));
    // The script completes subcommands in a real bash.
    let probe = format!(
        "source {}; COMP_WORDS=(cbuild aff); COMP_CWORD=1; _cbuild cbuild aff cbuild; echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let done = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "affected", "{}", text(&done));
    assert_ne!(cx.run(&["completions", "tcsh"]).code, 0);

    let man = cx.run(&["man"]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH cbuild 1"), "{}", &man.stdout[..200.min(man.stdout.len())]);
    assert!(man.stdout.contains("cbuild\\-affected(1)") && man.stdout.contains("\\-\\-remote\\-cache"));
    let page = cx.run(&["man", "load"]).stdout;
    assert!(page.contains(".TH cbuild-load 1") && page.contains("\\-\\-engine"), "{page}");
    let dir = cx.root().join("man1");
    assert_eq!(cx.run(&["man", "--dir", dir.to_str().unwrap()]).code, 0);
    for p in ["cbuild.1", "cbuild-build.1", "cbuild-affected.1", "cbuild-cache-gc.1"] {
        assert!(dir.join(p).is_file(), "{p} written");
    }
    if have("man") {
        let r = Command::new("man").arg("-l").arg(dir.join("cbuild-load.1")).env("MANPAGER", "cat").output().unwrap();
        assert!(String::from_utf8_lossy(&r.stdout).contains("--engine"), "{}", text(&r));
    }
    assert_eq!(cx.run(&["man", "nosuch"]).code, 2);
}

#[test]
fn color_follows_the_flag_no_color_and_clicolor_force() {
    let cx = TestContext::new();
    let esc = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = cx.cmd();
        c.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.args(args).output().unwrap();
        text(&o).contains('\x1b')
    };
    let err = ["query", "//nonexistent:x"];
    assert!(!esc(&err, &[]), "auto, not a terminal: no colour");
    assert!(esc(&[&["--color", "always"][..], &err].concat(), &[]));
    assert!(esc(&[&["--color=always"][..], &err].concat(), &[("NO_COLOR", "1")]), "the flag beats NO_COLOR");
    assert!(esc(&err, &[("CLICOLOR_FORCE", "1")]));
    assert!(!esc(&err, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]), "NO_COLOR wins under auto");
    assert!(!esc(&[&["--color", "never"][..], &err].concat(), &[("CLICOLOR_FORCE", "1")]));
    // clap's help and usage errors follow it too.
    assert!(esc(&["build", "-h", "--color", "always"], &[]));
    assert!(!esc(&["build", "-h", "--color", "never"], &[("CLICOLOR_FORCE", "1")]));
    assert!(esc(&["--color=always", "nosuchcommand"], &[]));
    let bad = cx.run(&["--color", "purple", "query", "//..."]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("purple"), "{}", bad.stderr);
}

#[test]
fn subcommand_help_shows_its_own_options_first_and_few_global_ones() {
    let cx = TestContext::new();
    let short = cx.run(&["build", "-h"]).stdout;
    let own = short.find("Options:").expect("an Options section");
    let global = short.find("Global options:").expect("a Global options section");
    assert!(own < global, "{short}");
    let own_part = &short[own..global];
    assert!(own_part.contains("--keep-going") && own_part.contains("--push"), "{short}");
    assert!(!own_part.contains("--cache-dir") && !own_part.contains("--jobs"), "{short}");
    for rare in ["--remote-cache", "--cache-dir", "--compression", "--color"] {
        assert!(!short.contains(rare), "`build -h` leaves {rare} to --help:\n{short}");
    }
    let long = cx.run(&["build", "--help"]).stdout;
    for all in ["--remote-cache-mode", "--cache-dir", "--compression", "--color", "--jobs"] {
        assert!(long.contains(all), "`build --help` lists {all}");
    }
}

/// `cbuild …` command lines of README.md, from fenced blocks and inline code spans: each piece
/// of a pipeline that starts with `cbuild` (after `VAR=value` words), without a `#` comment or a
/// redirection.
fn readme_command_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut lines = Vec::new();
    let mut in_block = false;
    for l in readme.lines() {
        if l.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if in_block {
            lines.push(l.to_string());
        } else {
            lines.extend(l.split('`').skip(1).step_by(2).map(String::from));
        }
    }
    let mut out = Vec::new();
    for l in lines {
        for piece in l.split(['|', ';']).flat_map(|p| p.split("&&")) {
            let piece = piece.split(" #").next().unwrap_or(piece);
            if piece.contains('<') {
                // A placeholder (`cbuild <command> -h`), not a command line.
                continue;
            }
            let piece = piece.split('>').next().unwrap_or(piece).trim().trim_start_matches("$ ");
            let words: Vec<&str> =
                piece.split_whitespace().skip_while(|w| w.contains('=') && !w.starts_with('-')).collect();
            if words.first() == Some(&"cbuild") {
                out.push(words.join(" "));
            }
        }
    }
    out
}

/// Splits a command line like a shell (quotes, no expansion).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn every_command_line_in_the_readme_parses() {
    use clap::error::ErrorKind;
    use clap::CommandFactory;
    let lines = readme_command_lines();
    assert!(lines.len() >= 20, "README shows cbuild commands: {lines:?}");
    for line in &lines {
        let mut words = shell_words(line);
        // `cbuild //x:y` is `cbuild build //x:y` (cli::main inserts `build` the same way).
        if let Some(i) = words.iter().skip(1).position(|w| !w.starts_with('-')).map(|i| i + 1) {
            if words[i].starts_with("//") || words[i].starts_with(':') {
                words.insert(i, "build".into());
            }
        }
        match cbuild::cli::Cli::command().try_get_matches_from(&words) {
            Ok(_) => {}
            // A command named in prose without its arguments (`cbuild export`): every flag it
            // shows was accepted (clap reports unknown arguments before missing ones).
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::MissingRequiredArgument
                        | ErrorKind::MissingSubcommand
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                        | ErrorKind::DisplayHelp
                        | ErrorKind::DisplayVersion
                ) => {}
            Err(e) => panic!("README.md shows `{line}`, which cbuild rejects:\n{e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --compression

#[test]
fn compression_flag_picks_the_layer_codec() {
    let cx = TestContext::new();
    cx.write("app/BUILD.star", "layer(name = \"l\", srcs = [\"f\"])\noci_image(name = \"i\", layers = [\":l\"])\n");
    cx.write("app/f", "hello\n");
    let media = |args: &[&str]| {
        let r = cx.run(args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let layout = cx.root().join("cbuild-out/app/i");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap().replace("sha256:", "");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(m)).unwrap()).unwrap();
        manifest["layers"][0]["mediaType"].as_str().unwrap().to_string()
    };
    assert!(media(&["build", "//app:i"]).ends_with("gzip"));
    assert!(media(&["build", "--compression", "zstd", "//app:i"]).ends_with("zstd"));
    assert!(media(&["--compression=gzip", "build", "//app:i"]).ends_with("gzip"));
    let bad = cx.run(&["build", "--compression", "brotli", "//app:i"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

// ---------------------------------------------------------------------------------------------
// cbuild affected

fn git(root: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(root)
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn affected_bad_input() {
    if !have("git") {
        common::skip_unless_ci("needs git");
        return;
    }
    let cx = TestContext::new();
    cx.write("a/BUILD.star", "layer(name = \"l\", srcs = [\"f\"])\n").write("a/f", "x");
    let r = cx.run(&["affected", "--base", "HEAD"]);
    assert_eq!(r.code, 2, "outside a git checkout: {}", r.stderr);
    assert!(r.stderr.contains("is not inside a git checkout") && r.stderr.contains("hint: "), "{}", r.stderr);
    git(cx.root(), &["init", "-q"]);
    let r = cx.run(&["affected", "--base", "HEAD"]);
    assert_eq!(r.code, 2, "no commit yet: {}", r.stderr);
    git(cx.root(), &["add", "-A"]);
    git(cx.root(), &["commit", "-qm", "base"]);
    let r = cx.run(&["affected", "--base", "no-such-branch"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("unknown git revision `no-such-branch`"), "{}", r.stderr);
    let r = cx.run(&["affected", "--base", "--output=json"]);
    assert_eq!(r.code, 2, "an option is not a revision: {}", r.stderr);
    let r = cx.run(&["affected"]);
    assert_eq!(r.code, 2, "--base or --files is required: {}", r.stderr);
    // Nothing changed: nothing listed; an edit: its target, also as JSON and through query.
    assert_eq!(cx.run(&["affected", "--base", "HEAD"]).stdout, "");
    cx.write("a/f", "y");
    assert_eq!(cx.run(&["affected", "--base", "HEAD"]).stdout, "//a:l\n");
    let j: serde_json::Value =
        serde_json::from_str(&cx.run(&["affected", "--base", "HEAD", "--output", "json"]).stdout).unwrap();
    assert_eq!(j, serde_json::json!([{"label": "//a:l", "kind": "layer"}]));
    assert_eq!(cx.run(&["query", "rdeps(//..., set(a/f))"]).stdout, "//a:l\n");
    let mut c = cx.cmd();
    let mut child = c
        .args(["affected", "--files"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"a/f\nelsewhere/g\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "//a:l\n");
}

/// A tiny deterministic PRNG (xorshift64*), so a failing edit sequence can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const PACKAGES: usize = 6;

/// The generated monorepo: per package a globbed layer, a genrule reading one file, a layer of its
/// output, an image of those and the previous package's layer; macros from `.star` files (one
/// loading the other), a genrule whose command counts a glob, a symlinked source, a sub-package
/// inside a globbed directory, files no target reads.
fn write_monorepo(root: &Path) {
    let w = |rel: &str, t: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    };
    w("cbuild.toml", "[build]\ncompression = \"gzip\"\n");
    w(".gitignore", "cbuild-out/\n");
    w(
        "defs/macros.star",
        "SALT = \"s0\"\n\ndef upper(name, src):\n    genrule(name = name, srcs = [src], outs = [name + \".txt\"], \
         cmd = \"tr a-z A-Z < $SRCS > $OUTS # \" + SALT)\n",
    );
    w(
        "defs/count.star",
        "load(\"//defs:macros.star\", \"SALT\")\n\ndef counted(name, files):\n    genrule(name = name, outs = \
         [name + \".n\"], cmd = \"echo %d %s > $OUTS\" % (len(files), SALT))\n",
    );
    w("shared/data.txt", "shared data\n");
    w("shared/other.txt", "other data\n");
    w("docs/readme.md", "not an input\n");
    for k in 0..PACKAGES {
        let mut b = String::new();
        if k % 2 == 0 {
            b.push_str("load(\"//defs:macros.star\", \"upper\")\n");
        }
        if k % 3 == 0 {
            b.push_str("load(\"//defs:count.star\", \"counted\")\n");
        }
        b.push_str("PKG_SALT = \"k0\"\n");
        b.push_str(&format!("layer(name = \"files\", srcs = glob([\"src/**\"]), prefix = \"/p{k}\")\n"));
        b.push_str(
            "genrule(name = \"gen\", srcs = [\"src/a.txt\"], outs = [\"gen.txt\"], cmd = \"cat $SRCS > $OUTS; echo \" + PKG_SALT + \" >> $OUTS\")\n",
        );
        b.push_str(&format!("layer(name = \"genlayer\", srcs = [\":gen\"], prefix = \"/gen/p{k}\")\n"));
        if k % 2 == 0 {
            b.push_str("upper(name = \"up\", src = \"src/b.txt\")\n");
        }
        if k % 3 == 0 {
            b.push_str("counted(name = \"count\", files = glob([\"data/*\"], allow_empty = True))\n");
        }
        let prev = if k > 0 { format!(", \"//p{}:files\"", k - 1) } else { String::new() };
        b.push_str(&format!(
            "oci_image(name = \"image\", base = \"scratch\", layers = [\":files\", \":genlayer\"{prev}])\n"
        ));
        w(&format!("p{k}/BUILD.star"), &b);
        for f in ["src/a.txt", "src/b.txt", "src/c.txt", "src/sub/d.txt", "data/1", "notes.md", "extra/x.txt"] {
            w(&format!("p{k}/{f}"), &format!("p{k} {f}\n"));
        }
    }
    std::os::unix::fs::symlink("../../shared/data.txt", root.join("p2/src/link.txt")).unwrap();
    w("p3/src/inner/BUILD.star", "layer(name = \"inner\", srcs = glob([\"*.txt\"]))\n");
    w("p3/src/inner/i.txt", "inner\n");
}

/// Regular files (no symlinks) under `root`, workspace-relative, without .git and cbuild-out.
fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name().into_iter().filter_entry(|e| {
        let n = e.file_name().to_string_lossy();
        n != ".git" && n != "cbuild-out"
    }) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            out.push(e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string());
        }
    }
    out
}

/// One random edit; returns what it did.
fn random_edit(root: &Path, rng: &mut Rng, step: usize) -> String {
    let all = files(root);
    let special =
        |f: &str| f.ends_with("BUILD.star") || f.ends_with(".star") || f == "cbuild.toml" || f == ".gitignore";
    // Files named in BUILD files (deleting them is a BUILD error, not an edit to test).
    let named = |f: &str| f.ends_with("src/a.txt") || f.ends_with("src/b.txt");
    let plain: Vec<&String> = all.iter().filter(|f| !special(f)).collect();
    let deletable: Vec<&String> = plain.iter().copied().filter(|f| !named(f)).collect();
    let pkg = rng.below(PACKAGES);
    let append = |rel: &str, what: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(root.join(rel)).unwrap();
        writeln!(f, "{what}").unwrap();
    };
    match rng.below(20) {
        0..=5 => {
            let f = rng.pick(&plain).to_string();
            append(&f, &format!("edit {step}"));
            format!("modify {f}")
        }
        6..=8 => {
            let dirs = [
                format!("p{pkg}/src"),
                format!("p{pkg}/src/sub"),
                format!("p{pkg}/data"),
                format!("p{pkg}/extra"),
                format!("p{pkg}"),
                "docs".into(),
                "shared".into(),
                "p3/src/inner".into(),
                "newdir".into(),
            ];
            let d = rng.pick(&dirs);
            let f = format!("{d}/new{step}.txt");
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(&f), format!("new {step}\n")).unwrap();
            format!("add {f}")
        }
        9..=11 if !deletable.is_empty() => {
            let f = rng.pick(&deletable).to_string();
            std::fs::remove_file(root.join(&f)).unwrap();
            format!("delete {f}")
        }
        12 if !deletable.is_empty() => {
            let f = rng.pick(&deletable).to_string();
            let to = format!("{}/renamed{step}", Path::new(&f).parent().unwrap().to_str().unwrap());
            std::fs::rename(root.join(&f), root.join(&to)).unwrap();
            format!("rename {f} -> {to}")
        }
        13 => {
            use std::os::unix::fs::PermissionsExt;
            let f = rng.pick(&plain).to_string();
            let p = root.join(&f);
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode ^ 0o111)).unwrap();
            format!("chmod {f}")
        }
        14 => {
            let f = format!("p{pkg}/BUILD.star");
            let s = std::fs::read_to_string(root.join(&f)).unwrap();
            let s = if rng.below(2) == 0 {
                let i = s.find("PKG_SALT = \"").unwrap() + 12;
                let j = i + s[i..].find('"').unwrap();
                format!("{}k{step}{}", &s[..i], &s[j..])
            } else {
                format!("{s}# comment {step}\n")
            };
            std::fs::write(root.join(&f), s).unwrap();
            format!("edit {f}")
        }
        15 => {
            if rng.below(2) == 0 {
                let s = std::fs::read_to_string(root.join("defs/macros.star")).unwrap();
                let i = s.find("SALT = \"").unwrap() + 8;
                let j = i + s[i..].find('"').unwrap();
                std::fs::write(root.join("defs/macros.star"), format!("{}s{step}{}", &s[..i], &s[j..])).unwrap();
                "edit defs/macros.star".into()
            } else {
                append("defs/count.star", &format!("# comment {step}"));
                "edit defs/count.star".into()
            }
        }
        16 => {
            let s = std::fs::read_to_string(root.join("cbuild.toml")).unwrap();
            let s = if s.contains("gzip") { s.replace("gzip", "zstd") } else { s.replace("zstd", "gzip") };
            std::fs::write(root.join("cbuild.toml"), s).unwrap();
            "toggle compression in cbuild.toml".into()
        }
        17 => {
            let b = root.join("p3/src/inner/BUILD.star");
            if b.exists() {
                std::fs::remove_file(&b).unwrap();
                "delete the sub-package p3/src/inner".into()
            } else {
                std::fs::create_dir_all(b.parent().unwrap()).unwrap();
                std::fs::write(&b, "layer(name = \"inner\", srcs = glob([\"*.txt\"], allow_empty = True))\n").unwrap();
                "add the sub-package p3/src/inner".into()
            }
        }
        18 => {
            let link = root.join("p2/src/link.txt");
            let to = std::fs::read_link(&link).ok();
            let _ = std::fs::remove_file(&link);
            let next = if to.as_deref() == Some(Path::new("../../shared/data.txt")) {
                "../../shared/other.txt"
            } else {
                "../../shared/data.txt"
            };
            std::os::unix::fs::symlink(next, &link).unwrap();
            format!("point p2/src/link.txt at {next}")
        }
        _ => {
            let f = if rng.below(2) == 0 { "shared/data.txt" } else { "shared/other.txt" };
            if root.join(f).exists() {
                append(f, &format!("edit {step}"));
            } else {
                std::fs::write(root.join(f), format!("back {step}\n")).unwrap();
            }
            format!("modify {f} (behind a symlink)")
        }
    }
}

/// Every target's action keys after the last build, from the build history `cbuild explain`
/// reads: a target "changed" when any of its action keys did (keys cover every input).
fn target_keys(cx: &TestContext) -> BTreeMap<String, BTreeMap<String, String>> {
    let labels = cx.run(&["query", "//..."]);
    assert_eq!(labels.code, 0, "{}", labels.stderr);
    let cache = cbuild::cache::Cache::open(cx.cache.path()).unwrap();
    let mut out = BTreeMap::new();
    for l in labels.stdout.lines() {
        let runs = cache.runs_for_label(l).unwrap();
        out.insert(l.to_string(), runs.iter().map(|h| (h.latest.action.clone(), h.latest.key.to_hex())).collect());
    }
    out
}

#[test]
fn affected_never_misses_a_target_whose_keys_change() {
    if !have("git") || !have("bwrap") {
        common::skip_unless_ci("needs git and bubblewrap");
        return;
    }
    let edits: usize = std::env::var("CBUILD_AFFECTED_EDITS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let seed: u64 = std::env::var("CBUILD_AFFECTED_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_cb01);
    let cx = TestContext::new();
    let root = cx.root().to_path_buf();
    write_monorepo(&root);
    git(&root, &["init", "-q"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-qm", "base"]);
    let build = |cx: &TestContext| {
        let r = cx.run(&["-q", "build", "//..."]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    build(&cx);
    let mut before = target_keys(&cx);
    let total_targets = before.len();
    let mut rng = Rng(seed);
    let (mut changed_total, mut listed_total, mut misses) = (0, 0, Vec::new());
    let started = std::time::Instant::now();
    for step in 0..edits {
        let what = random_edit(&root, &mut rng, step);
        build(&cx);
        let after = target_keys(&cx);
        let changed: BTreeSet<&String> =
            after.iter().filter(|(l, keys)| before.get(*l) != Some(*keys)).map(|(l, _)| l).collect();
        let listed = if step % 4 == 3 {
            // The same from a list of paths on stdin (how each changed is not known).
            let mut paths = git(&root, &["diff", "--name-only", "HEAD", "--"]);
            paths.push_str(&git(&root, &["ls-files", "--others", "--exclude-standard"]));
            let mut child = cx
                .cmd()
                .args(["-q", "affected", "--files"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(paths.as_bytes()).unwrap();
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", text(&o));
            String::from_utf8_lossy(&o.stdout).into_owned()
        } else {
            let r = cx.run(&["affected", "--base", "HEAD"]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            r.stdout
        };
        let listed: BTreeSet<&str> = listed.lines().collect();
        for l in &changed {
            if !listed.contains(l.as_str()) {
                misses.push(format!("step {step} ({what}): `{l}` changed but was not listed"));
            }
        }
        changed_total += changed.len();
        listed_total += listed.len();
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-qm", &format!("step {step}: {what}"), "--allow-empty"]);
        before = after;
    }
    eprintln!(
        "affected differential: {edits} edits, {total_targets} targets, {changed_total} target changes, \
         {listed_total} listed, {} misses, {:.1}s",
        misses.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(misses.is_empty(), "missed:\n{}", misses.join("\n"));
    assert!(changed_total > edits / 2, "the edits changed targets ({changed_total})");
}
