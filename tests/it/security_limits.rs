//! Starlark evaluation limits through the CLI: an endless loop, a memory bomb and over-deep calls
//! (endless recursion included) in a BUILD file (or a `.star` file it loads) each end quickly with a user error (exit 2) that
//! names the file, the limit and the setting that raises it: never a hang, a panic or an abort.
//! Limits: `CBUILD_STARLARK_MAX_STEPS` (default 10,000,000), `CBUILD_STARLARK_MAX_HEAP` (2 GiB),
//! `CBUILD_STARLARK_MAX_DEPTH` (50), or `[build] starlark_max_*` in cbuild.toml.

use crate::common;
use common::{Run, TestContext};

use std::time::{Duration, Instant};

/// An endless loop as far as anyone waiting is concerned (Starlark has no `while`).
const ENDLESS: &str = "def f():\n    for i in range(1000000000):\n        pass\n\nf()\n";

/// Doubles a list 40 times: 2^40 elements if nothing stops it.
const LIST_BOMB: &str = "x = [\"a\"]\nfor i in range(40):\n    x = x + x\n";

/// Doubles a string 64 times.
const STRING_BOMB: &str = "s = \"ab\"\nfor i in range(64):\n    s = s + s\n";

/// Runs `cbuild query //...` in a workspace with `files`, with the given extra environment.
fn query(files: &[(&str, &str)], env: &[(&str, &str)]) -> (Run, Duration) {
    let cx = TestContext::new();
    // One real target, so a workspace whose other files load is a success.
    cx.write("t/BUILD.star", "genrule(name = \"t\", outs = [\"t.txt\"], cmd = \"true\")\n");
    for (p, t) in files {
        cx.write(p, t);
    }
    let mut c = cx.cmd();
    for v in ["CBUILD_STARLARK_MAX_STEPS", "CBUILD_STARLARK_MAX_HEAP", "CBUILD_STARLARK_MAX_DEPTH"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied()).args(["query", "//..."]);
    let t = Instant::now();
    let out = c.output().unwrap();
    let took = t.elapsed();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: cx.filter(&String::from_utf8_lossy(&out.stderr)),
    };
    (r, took)
}

/// A user error (exit 2) whose message has every one of `want`, and no sign of a crash.
fn assert_user_error(r: &Run, want: &[&str]) {
    assert_eq!(r.code, 2, "exit code of a user error; stderr:\n{}", r.stderr);
    for w in want {
        assert!(r.stderr.contains(w), "missing {w:?} in:\n{}", r.stderr);
    }
    for bad in ["panicked", "RUST_BACKTRACE", "memory allocation of", "internal"] {
        assert!(!r.stderr.contains(bad), "{bad:?} in:\n{}", r.stderr);
    }
}

#[test]
fn endless_loop_stops_at_the_step_limit_naming_the_build_file() {
    let (r, took) = query(&[("pkg/BUILD.star", ENDLESS)], &[]);
    assert_user_error(
        &r,
        &["//pkg:BUILD.star: evaluation exceeded 10000000 steps", "CBUILD_STARLARK_MAX_STEPS", "pkg/BUILD.star:"],
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // A comprehension counts its iterations too.
    let (r, _) = query(&[("c/BUILD.star", "x = [i for i in range(1000000000)]\n")], &[]);
    assert_user_error(&r, &["//c:BUILD.star: evaluation exceeded 10000000 steps"]);
}

#[test]
fn endless_loop_in_a_loaded_star_file_names_that_file() {
    let (r, took) = query(
        &[
            ("lib/defs.star", &format!("{ENDLESS}\nX = 1\n")),
            ("lib/BUILD.star", ""),
            ("app/BUILD.star", "load(\"//lib:defs.star\", \"X\")\n"),
        ],
        &[],
    );
    assert_user_error(&r, &["//lib:defs.star: evaluation exceeded 10000000 steps"]);
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // A BUILD file calling a loaded function that loops: the BUILD file's budget runs out.
    let (r, _) = query(
        &[
            ("lib/defs.star", "def spin():\n    for i in range(1000000000):\n        pass\n"),
            ("lib/BUILD.star", ""),
            ("app/BUILD.star", "load(\"//lib:defs.star\", \"spin\")\nspin()\n"),
        ],
        &[],
    );
    assert_user_error(&r, &["//app:BUILD.star: evaluation exceeded 10000000 steps"]);
}

#[test]
fn step_limit_is_configurable() {
    let loop_of = |n: u32| format!("def f():\n    for i in range({n}):\n        pass\n\nf()\n");
    // 100,000 iterations are fine by default and too many for a limit of 10,000.
    let (r, _) = query(&[("pkg/BUILD.star", &loop_of(100_000))], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (r, _) = query(&[("pkg/BUILD.star", &loop_of(100_000))], &[("CBUILD_STARLARK_MAX_STEPS", "10000")]);
    assert_user_error(&r, &["//pkg:BUILD.star: evaluation exceeded 10000 steps"]);
    // The same from cbuild.toml; the environment wins over it.
    let toml = "[build]\nstarlark_max_steps = 10000\n";
    let (r, _) = query(&[("cbuild.toml", toml), ("pkg/BUILD.star", &loop_of(100_000))], &[]);
    assert_user_error(&r, &["evaluation exceeded 10000 steps"]);
    let (r, _) = query(
        &[("cbuild.toml", toml), ("pkg/BUILD.star", &loop_of(100_000))],
        &[("CBUILD_STARLARK_MAX_STEPS", "1000000")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Nonsense values are user errors naming the setting.
    let (r, _) = query(&[("pkg/BUILD.star", "")], &[("CBUILD_STARLARK_MAX_STEPS", "lots")]);
    assert_user_error(&r, &["CBUILD_STARLARK_MAX_STEPS"]);
    let (r, _) = query(&[("pkg/BUILD.star", "")], &[("CBUILD_STARLARK_MAX_STEPS", "0")]);
    assert_user_error(&r, &["CBUILD_STARLARK_MAX_STEPS", "at least 1"]);
}

#[test]
fn memory_bombs_stop_at_the_heap_limit() {
    for (name, bomb) in [("list", LIST_BOMB), ("string", STRING_BOMB)] {
        let (r, took) = query(&[("pkg/BUILD.star", bomb)], &[("CBUILD_STARLARK_MAX_HEAP", "256MiB")]);
        assert_user_error(
            &r,
            &[
                "//pkg:BUILD.star: evaluation exceeded the Starlark heap limit of 256 MiB",
                "CBUILD_STARLARK_MAX_HEAP",
                "pkg/BUILD.star:3:",
            ],
        );
        assert!(took < Duration::from_secs(30), "{name} bomb took {took:?}");
    }
    // From cbuild.toml, in a loaded file.
    let (r, _) = query(
        &[
            ("cbuild.toml", "[build]\nstarlark_max_heap = \"64MiB\"\n"),
            ("lib/defs.star", &format!("{LIST_BOMB}\nX = 1\n")),
            ("lib/BUILD.star", ""),
            ("app/BUILD.star", "load(\"//lib:defs.star\", \"X\")\n"),
        ],
        &[],
    );
    assert_user_error(&r, &["//lib:defs.star: evaluation exceeded the Starlark heap limit of 64 MiB"]);
    let (r, _) = query(&[("pkg/BUILD.star", "")], &[("CBUILD_STARLARK_MAX_HEAP", "2 lots")]);
    assert_user_error(&r, &["CBUILD_STARLARK_MAX_HEAP has an invalid value"]);
}

#[test]
fn deep_calls_stop_at_the_depth_limit() {
    let chain = "def a(n):\n    return b(n)\n\ndef b(n):\n    return c(n)\n\ndef c(n):\n    return n\n\nx = a(1)\n";
    let (r, _) = query(&[("pkg/BUILD.star", chain)], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (r, _) = query(&[("pkg/BUILD.star", chain)], &[("CBUILD_STARLARK_MAX_DEPTH", "3")]);
    assert_user_error(&r, &["//pkg:BUILD.star: evaluation exceeded the call depth of 3", "CBUILD_STARLARK_MAX_DEPTH"]);
    // Native stack bounds the ceiling.
    let (r, _) = query(&[("pkg/BUILD.star", chain)], &[("CBUILD_STARLARK_MAX_DEPTH", "100000")]);
    assert_user_error(&r, &["CBUILD_STARLARK_MAX_DEPTH", "between 1 and 1000"]);
    // Endless recursion (the extended dialect allows recursion) stops at the default depth, and
    // at the highest one that may be configured without overflowing the native stack.
    let rec = "def f(n):\n    for i in range(1):\n        x = [f(n) for j in range(1)]\n    return n\n\nf(1)\n";
    let (r, _) = query(&[("pkg/BUILD.star", rec)], &[]);
    assert_user_error(&r, &["//pkg:BUILD.star: evaluation exceeded the call depth of 50"]);
    let (r, _) = query(&[("pkg/BUILD.star", rec)], &[("CBUILD_STARLARK_MAX_DEPTH", "1000")]);
    assert_user_error(&r, &["//pkg:BUILD.star: evaluation exceeded the call depth of 1000"]);
}

#[test]
fn the_examples_load_well_within_the_default_limits() {
    let cx = TestContext::from_examples();
    // A hundredth of each default budget is still enough for the whole example monorepo.
    let r = cx
        .cmd()
        .env("CBUILD_STARLARK_MAX_STEPS", "100000")
        .env("CBUILD_STARLARK_MAX_HEAP", "20MiB")
        .args(["query", "//..."])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
