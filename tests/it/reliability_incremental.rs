//! Differential incremental-correctness test: a seeded random sequence of edits over the example
//! monorepo (app files of the busybox services and `tools/`, a `cnb_image` env, buildpack scripts
//! and descriptors, the stack's rootfs, whole packages added and removed); after every edit the
//! incremental build must succeed, and its image digests must equal a clean build of the same tree
//! (fresh copy at another path, fresh cache).
//!
//! Besides content, the sequence varies what the audit found keys missing: file modes (the
//! executable bit, and group write that must not matter), symlinks in an app (added, retargeted),
//! the order of `srcs`, the host umask of each build (022, 002, 077) and SOURCE_DATE_EPOCH
//! (switched now and then; the clean build uses the same value).
//!
//! Default: 500 edits, clean comparison every 25th step and after the last one (plus a no-op check
//! there). `CBUILD_LONG_TESTS=1`: 800 edits, clean comparison after every step.
//! Replay a failure with `CBUILD_RELIABILITY_SEED=<seed printed by the test>`.

use crate::common::support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::{Rng, Ws, TARGETS};

/// Files the sequence may add and later remove (only these are ever removed, so the services
/// keep passing detection and the tree always builds).
struct Extra {
    added: Vec<String>,
    packages: Vec<String>,
    step: usize,
}

/// An added package: a genrule whose output shows the whole `/work` tree it was given (paths,
/// modes, owners, mtimes, contents), then tampers with it (a leftover file and directory, a source
/// chmodded and appended to) — the next run's kept input tree must be what a fresh copy gives.
const GEN_BUILD: &str = r#"genrule(
    name = "g",
    srcs = ["in.txt"],
    outs = ["out.txt"],
    cmd = "l=$(find . -printf '%p %m %U:%G %T@\\n' | sort); printf '%s\\n' \"$l\" > $OUTS; cat $SRCS $SRCS >> $OUTS; " +
          "echo junk > leftover; mkdir -p sub && echo x > sub/f; chmod 0600 in.txt; echo tamper >> in.txt",
)
layer(name = "l", srcs = [":g", "in.txt"], prefix = "/gen")
oci_image(name = "img", base = "//stacks:run-image", layers = [":l"])
"#;

fn edit(ws: &Ws, rng: &mut Rng, ex: &mut Extra) -> String {
    ex.step += 1;
    let n = ex.step;
    let stamp = rng.next() % 1000;
    match rng.below(21) {
        17 => {
            // The executable bit reaches the image: it must reach the key.
            let gen = ex.packages.first().map(|pkg| format!("{pkg}/in.txt"));
            let p = match &gen {
                // A genrule's source: the command sees its mode.
                Some(g) if rng.below(3) == 0 => g.as_str(),
                _ => *rng.pick(&["services/site/index.html", "services/api/public/index.html", "tools/index.html"]),
            };
            let path = ws.path(p);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            let new = if mode & 0o100 != 0 { mode & !0o111 } else { mode | 0o111 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(new)).unwrap();
            format!("chmod {:o} {p}", new & 0o7777)
        }
        18 => {
            // Group write (a umask 002 checkout) must change nothing.
            let p = *rng.pick(&["services/site/index.html", "services/worker/Procfile", "tools/hello.sh"]);
            let path = ws.path(p);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode ^ 0o020)).unwrap();
            format!("toggle group write of {p}")
        }
        19 => {
            // A symlink in a cnb_image app: added or retargeted (kept as a link in the image).
            let p = "services/site/current.html";
            let target = *rng.pick(&["index.html", "missing.html", "../site/index.html"]);
            let _ = std::fs::remove_file(ws.path(p));
            std::os::unix::fs::symlink(target, ws.path(p)).unwrap();
            format!("symlink {p} -> {target}")
        }
        20 => match ex.packages.first() {
            // The order of srcs must not matter where the rule does not depend on it.
            Some(pkg) => {
                let p = format!("{pkg}/BUILD.star");
                let t = ws.read(&p);
                let new = if t.contains("srcs = [\":g\", \"in.txt\"]") {
                    t.replace("srcs = [\":g\", \"in.txt\"]", "srcs = [\"in.txt\", \":g\"]")
                } else {
                    t.replace("srcs = [\"in.txt\", \":g\"]", "srcs = [\":g\", \"in.txt\"]")
                };
                ws.write(&p, new);
                format!("reorder the layer srcs of {p}")
            }
            None => "no package to reorder".into(),
        },
        0 => {
            let p = "services/api/server.sh";
            ws.write(p, format!("{}# edit {n}\n", ws.read(p)));
            format!("modify {p}")
        }
        1 => {
            ws.write("services/api/public/index.html", format!("<h1>api {stamp}</h1>\n"));
            "rewrite services/api/public/index.html".into()
        }
        2 => {
            let p = format!("services/{}/extra-{n}.txt", rng.pick(&["api", "api/public", "worker", "site"]));
            ws.write(&p, format!("extra {stamp}\n"));
            ex.added.push(p.clone());
            format!("add {p}")
        }
        3 | 4 => match ex.added.len() {
            0 => "no file to remove".into(),
            len => {
                let p = ex.added.remove(rng.below(len as u64) as usize);
                std::fs::remove_file(ws.path(&p)).unwrap();
                format!("remove {p}")
            }
        },
        5 => {
            let p = "services/worker/Procfile";
            ws.write(p, format!("{}p{n}: echo {stamp}\n", ws.read(p)));
            format!("add a process to {p}")
        }
        6 => {
            ws.write("services/site/index.html", format!("<p>site {stamp}</p>\n"));
            "rewrite services/site/index.html".into()
        }
        7 => {
            ws.write("tools/hello.sh", format!("#!/bin/sh\necho \"hello from cbuild {stamp}\"\n"));
            "rewrite tools/hello.sh".into()
        }
        8 => {
            let (p, val) = if rng.below(2) == 0 {
                ("services/api/BUILD.star", format!("{{\"BP_LOG_LEVEL\": \"info\", \"EDIT\": \"{stamp}\"}}"))
            } else {
                ("services/worker/BUILD.star", format!("{{\"WORKER_EDIT\": \"{stamp}\"}}"))
            };
            let t = ws.read(p);
            let start = t.find("env = ");
            let new = match start {
                Some(s) => {
                    let end = s + t[s..].find('}').unwrap() + 1;
                    format!("{}env = {val}{}", &t[..s], &t[end..])
                }
                None => t.replace(
                    "builder = \"//builders:default\",",
                    &format!("builder = \"//builders:default\",\n    env = {val},"),
                ),
            };
            ws.write(p, new);
            format!("change the env of {p} to {val}")
        }
        9 => {
            // A buildpack script change that reaches the image: the default PORT of a launch layer.
            let (p, old) = *rng.pick(&[
                ("buildpacks/shell-web/bin/build", "web/env.launch/PORT.default"),
                ("buildpacks/static/bin/build", "httpd/env.launch/PORT.default"),
            ]);
            let t = ws.read(p);
            let line = t.lines().find(|l| l.contains(old)).unwrap().to_string();
            ws.write(p, t.replace(&line, &format!("printf '{}' > \"$layers/{old}\"", 8000 + stamp)));
            format!("change PORT.default in {p}")
        }
        10 => {
            // A script change that does not reach the image (output only).
            let p = *rng.pick(&[
                "buildpacks/procfile/bin/build",
                "buildpacks/shell-web/bin/build",
                "buildpacks/static/bin/detect",
            ]);
            let t = ws.read(p);
            ws.write(p, t.replacen("set -eu\n", &format!("set -eu\n: edit {n}\n"), 1));
            format!("comment-like edit of {p}")
        }
        11 => {
            let p = *rng.pick(&[
                "buildpacks/procfile/buildpack.toml",
                "buildpacks/static/buildpack.toml",
                "buildpacks/shell-web/buildpack.toml",
            ]);
            let t = ws.read(p);
            let line = t.lines().find(|l| l.starts_with("version = ")).unwrap().to_string();
            ws.write(p, t.replace(&line, &format!("version = \"0.1.{stamp}\"")));
            format!("change the version in {p}")
        }
        12 => {
            let p = "stacks/rootfs/etc/os-release";
            ws.write(p, format!("{}BUILD_ID={n}\n", ws.read(p)));
            format!("modify the stack: {p}")
        }
        13 => {
            let p = format!("stacks/rootfs/etc/motd-{n}");
            ws.write(&p, format!("motd {stamp}\n"));
            ex.added.push(p.clone());
            format!("add to the stack: {p}")
        }
        14 => {
            if ex.packages.is_empty() || rng.below(2) == 0 {
                let p = format!("tools/gen{n}");
                ws.write(&format!("{p}/BUILD.star"), GEN_BUILD);
                ws.write(&format!("{p}/in.txt"), format!("gen {stamp}\n"));
                ex.packages.push(p.clone());
                format!("add package {p}")
            } else {
                let i = rng.below(ex.packages.len() as u64) as usize;
                let p = ex.packages.remove(i);
                std::fs::remove_dir_all(ws.path(&p)).unwrap();
                format!("remove package {p}")
            }
        }
        15 => {
            // Same size, mtime put back: only the content (and ctime) tell the stat cache.
            let p = *rng.pick(&["tools/index.html", "services/site/index.html", "services/api/public/index.html"]);
            let path = ws.path(p);
            let before = std::fs::metadata(&path).unwrap().modified().unwrap();
            let mut b = std::fs::read(&path).unwrap();
            let i = b.iter().position(|c| c.is_ascii_alphabetic()).unwrap();
            b[i] = if b[i] == b'x' { b'y' } else { b'x' };
            std::fs::write(&path, &b).unwrap();
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(before).unwrap();
            format!("same-size edit of {p} with the old mtime")
        }
        _ => {
            // Rewrite with the same bytes: nothing may change.
            let p = *rng.pick(&["tools/hello.sh", "services/worker/Procfile", "stacks/rootfs/etc/passwd"]);
            ws.write(p, ws.read(p));
            format!("rewrite {p} unchanged")
        }
    }
}

#[test]
fn incremental_builds_equal_clean_builds_over_a_random_edit_sequence() {
    // Workspaces and caches are on /dev/shm when present (support::tempdir).
    let seed = support::seed(0x1b5_2024);
    let (steps, every) = if support::long() { (800, 1) } else { (500, 25) };
    eprintln!("seed {seed}, {steps} edits, clean comparison every {every} step(s)");
    let ws = support::examples();
    let mut rng = Rng::new(seed);
    let mut ex = Extra { added: Vec::new(), packages: Vec::new(), step: 0 };
    ws.ok(TARGETS);
    // Per build: a host umask; now and then a new SOURCE_DATE_EPOCH (the clean build uses it too).
    let mut sde = 315_532_800u64;
    let run = |ws: &Ws, umask: &str, sde: u64| {
        let mut c = ws.cmd();
        c.env("SOURCE_DATE_EPOCH", sde.to_string()).env("CBUILD_BIN", env!("CARGO_BIN_EXE_cbuild"));
        let mut sh = std::process::Command::new("sh");
        sh.current_dir(ws.root())
            .env_clear()
            .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$CBUILD_BIN\" build --json \"$@\""))
            .arg("sh")
            .args(TARGETS);
        support::out_of(&mut sh)
    };
    let t0 = Instant::now();
    let (mut compared, mut clean_time) = (0, Duration::ZERO);
    let mut log = Vec::new();
    for step in 1..=steps {
        let mut what = edit(&ws, &mut rng, &mut ex);
        if rng.below(40) == 0 {
            sde = if sde == 315_532_800 { 315_532_900 } else { 315_532_800 };
            what.push_str(&format!(", SOURCE_DATE_EPOCH={sde}"));
        }
        let umask = *rng.pick(&["022", "002", "077"]);
        log.push(format!("{step}: {what} (umask {umask})"));
        let o = run(&ws, umask, sde);
        assert_eq!(
            o.code,
            0,
            "step {step} ({what}), seed {seed}: incremental build failed:\n{}\n{}",
            o.stderr,
            o.failures()
        );
        if step % every == 0 || step == steps {
            let t = Instant::now();
            let clean = run(&support::copy_of(ws.root(), None), "022", sde).digests();
            clean_time += t.elapsed();
            compared += 1;
            assert_eq!(
                o.digests(),
                clean,
                "step {step}, seed {seed}: incremental ≠ clean after the edits\n{}",
                log[log.len().saturating_sub(every as usize)..].join("\n")
            );
            // And a second incremental build executes nothing.
            let again = run(&ws, "022", sde);
            assert_eq!(again.summary()["executed"], 0, "step {step}: a no-op build executed actions: {}", again.stdout);
        }
    }
    eprintln!("{steps} edits, {compared} clean comparisons in {:?} (clean builds {:?})", t0.elapsed(), clean_time);
}
