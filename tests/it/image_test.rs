//! `image_test` and `cbuild test` end to end, with the real sandbox: the examples' tests pass and a
//! repeated run executes none; broken images fail the right check naming expected and actual; a
//! SIGKILLed `cbuild test` leaves no process behind; JUnit XML is read by a real consumer
//! (junitparser); bad input is a located error.

use std::time::{Duration, Instant};

use crate::common::{skip_unless_ci, Run, TestContext};

pub(crate) fn json_summary(r: &Run) -> serde_json::Value {
    let line = r
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"test_summary\""))
        .unwrap_or_else(|| panic!("no test summary in\n{}\n{}", r.stdout, r.stderr));
    serde_json::from_str(line).unwrap()
}

pub(crate) fn sandbox_ok() -> bool {
    if cbuild::execution::sandbox::check_available().is_err() {
        skip_unless_ci("bubblewrap cannot create a sandbox here");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_unless_ci("service checks join the sandbox's network namespace: they need root");
        return false;
    }
    true
}

#[test]
fn the_examples_pass_a_repeat_runs_none_and_an_edit_reruns_only_its_images_tests() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    let junit = cx.root().join("report.xml");
    let r = cx.run(&["--json", "test", "//...", "--junit", junit.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let s = json_summary(&r);
    let labels: Vec<&str> = s["tests"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        [
            "//integration:site-and-api",
            "//services/api:test",
            "//services/site:test",
            "//services/worker:test",
            "//tools:web-test"
        ]
    );
    assert_eq!((s["passed"].as_u64(), s["failed"].as_u64(), s["executed"].as_u64()), (Some(5), Some(0), Some(5)));
    // A pass is kept with its log.
    assert!(cx.root().join("cbuild-out/testlogs/services/api/test.log").is_file());
    // JUnit XML as a CI server reads it: junitparser (PyPI, Debian's python3-junitparser).
    check_junit(&junit, 5, 0);

    // Immediately again: every pass is cached, no test runs.
    let r = cx.run(&["--json", "test", "//..."]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = json_summary(&r);
    assert_eq!((s["executed"].as_u64(), s["cached"].as_u64()), (Some(0), Some(5)), "{s}");
    let r = cx.run(&["test", "//..."]);
    assert!(r.stdout.contains("//services/api:test") && r.stdout.contains("(cached) PASSED"), "{}", r.stdout);
    assert!(r.stderr.contains("executed 0 out of 5 tests (5 cached)"), "{}", r.stderr);

    // One service's file edited: only the test of the image whose digest changed runs again.
    cx.write(
        "services/site/index.html",
        "<!doctype html>\n<title>cbuild example site</title>\n<h1>static site built by cbuild, edited</h1>\n",
    );
    let r = cx.run(&["--json", "test", "//..."]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let s = json_summary(&r);
    let ran: Vec<&str> = s["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["cached"] == false)
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    // The site's own test and the integration test that starts the site: no other.
    assert_eq!(ran, ["//integration:site-and-api", "//services/site:test"], "{s}");

    // --no-cache-results runs them all again.
    let r = cx.run(&["--json", "test", "//services/...", "--no-cache-results"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(json_summary(&r)["executed"].as_u64(), Some(3));
    // `cbuild build` builds what the tests need and runs none of them.
    let r = cx.run(&["--json", "build", "//services/site:test"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("image_test"), "{}", r.stdout);
    assert!(r.stdout.contains("\"label\":\"//services/site:image\""), "{}", r.stdout);
}

/// Parses `path` with junitparser and checks its counts.
pub(crate) fn check_junit(path: &std::path::Path, tests: usize, failures: usize) {
    let py = "/usr/bin/python3";
    let ok =
        std::process::Command::new(py).args(["-c", "import junitparser"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        skip_unless_ci("junitparser is not installed (scripts/install-deps.sh installs python3-junitparser)");
        return;
    }
    let script = r#"
import sys
from junitparser import JUnitXml, Failure, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
n = f = 0
for suite in xml:
    for case in suite:
        n += 1
        f += any(isinstance(r, Failure) for r in case.result)
        print(suite.name, case.name, case.time, [type(r).__name__ for r in case.result])
print("total", n, f, xml.tests, xml.failures)
"#;
    let out = std::process::Command::new(py).args(["-c", script, path.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "junitparser rejected the report: {}", String::from_utf8_lossy(&out.stderr));
    let last = text.lines().last().unwrap_or_default();
    assert_eq!(last, format!("total {tests} {failures} {tests} {failures}"), "{text}");
}

/// A package of broken images on the example stack: one runs as root, one lacks a file the test
/// wants, one serves on another port than the test expects.
fn broken(cx: &TestContext) {
    cx.write("broken/index.html", "<h1>broken</h1>\n");
    cx.write(
        "broken/BUILD.star",
        r#"
layer(name = "www", srcs = ["index.html"], prefix = "/srv/www")
oci_image(
    name = "as-root",
    base = "//stacks:run-image",
    layers = [":www"],
    user = "0:0",
)
image_test(name = "root-test", image = ":as-root", non_root = True)
image_test(name = "missing-test", image = ":as-root", files = ["/srv/www/missing.html"])
oci_image(
    name = "web",
    base = "//stacks:run-image",
    layers = [":www"],
    entrypoint = ["/bin/sh", "-c", "exec httpd -f -p 127.0.0.1:8081 -h /srv/www"],
)
image_test(
    name = "port-test",
    image = ":web",
    service = {"port": 8080, "ready_timeout": 2},
)
"#,
    );
}

#[test]
fn broken_images_fail_the_right_check_with_expected_and_actual_and_are_never_cached() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    broken(&cx);
    let junit = cx.root().join("broken.xml");
    let r = cx.run(&["test", "//broken/...", "--junit", junit.to_str().unwrap()]);
    assert_eq!(r.code, 3, "tests failed: exit 3\n{}\n{}", r.stdout, r.stderr);
    for (label, message) in [
        (
            "//broken:root-test",
            "check `non_root` failed: expected a non-root user, got `0:0` (uid 0)",
        ),
        (
            "//broken:missing-test",
            "check `file_exists /srv/www/missing.html` failed: expected `/srv/www/missing.html` to exist, got nothing at that path",
        ),
        (
            "//broken:port-test",
            "check `service` failed: expected 127.0.0.1:8080 to accept connections within 2s, got `Connection refused",
        ),
    ] {
        assert!(r.stderr.contains(&format!("`{label}` failed: {message}")), "{label}: {}", r.stderr);
    }
    assert!(r.stderr.contains("FAILED: executed 3 out of 3 tests (0 cached): 0 passed, 3 failed"), "{}", r.stderr);
    check_junit(&junit, 3, 3);
    // A failure is never cached: the next run executes the tests again.
    let r = cx.run(&["--json", "test", "//broken/..."]);
    assert_eq!(r.code, 3);
    assert_eq!(json_summary(&r)["executed"].as_u64(), Some(3));
    // Retries: still failing, each test tried twice, the log keeps both attempts.
    let r = cx.run(&["test", "//broken:missing-test", "--retries", "1"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("(all 2 attempts failed)"), "{}", r.stderr);
    let log = std::fs::read_to_string(cx.root().join("cbuild-out/testlogs/broken/missing-test.log")).unwrap();
    assert!(log.contains("attempt 1: FAILED") && log.contains("attempt 2: FAILED"), "{log}");
}

#[test]
fn a_build_failure_keeps_its_exit_code_and_no_tests_is_exit_4() {
    let cx = TestContext::from_examples();
    cx.write(
        "bad/BUILD.star",
        r#"
genrule(name = "fails", outs = ["f"], cmd = "exit 1")
layer(name = "l", srcs = [":fails"])
oci_image(name = "img", layers = [":l"])
image_test(name = "t", image = ":img", files = ["/f"])
"#,
    );
    if cbuild::execution::sandbox::check_available().is_ok() {
        let r = cx.run(&["--json", "test", "//bad:t"]);
        assert_eq!(r.code, 1, "a build failure exits 1, not 3\n{}", r.stderr);
        let s = json_summary(&r);
        assert_eq!(s["not_run"].as_u64(), Some(1), "{s}");
    }
    let r = cx.run(&["test", "//stacks/..."]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("no test targets match"), "{}", r.stderr);
}

#[test]
fn bad_test_definitions_are_located_errors() {
    let cx = TestContext::from_examples();
    let cases = [
        ("files = [\"srv/www\"]", "path `srv/www` is not absolute"),
        ("file_contents = {\"/etc/passwd\": \"(\"}", "the regex `(` does not compile"),
        ("service = {\"port\": 70000}", "`port` 70000 is not a TCP port"),
        ("commands = [{\"cmd\": [\"true\"], \"colour\": 1}]", "unknown key `colour`"),
    ];
    for (attr, want) in cases {
        cx.write("bad/BUILD.star", &format!("image_test(name = \"t\", image = \"//tools:web\", {attr})\n"));
        let r = cx.run(&["test", "//bad:t"]);
        assert_eq!(r.code, 2, "{attr}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{attr}: {}", r.stderr);
        assert!(r.stderr.contains("bad/BUILD.star"), "located: {}", r.stderr);
    }
    cx.write("bad/BUILD.star", "image_test(name = \"t\", image = \"//tools:tool-layer\", non_root = True)\n");
    let r = cx.run(&["test", "//bad:t"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("`image` is `//tools:tool-layer`, which is not an image"), "{}", r.stderr);
    // A container-structure-test file with a key cbuild does not support: named, exit 2.
    cx.write("bad/cst.yaml", "schemaVersion: 2.0.0\nlicenseTests:\n  - debian: true\n");
    cx.write("bad/BUILD.star", "image_test(name = \"t\", image = \"//tools:web\", config = \"cst.yaml\")\n");
    let r = cx.run(&["test", "//bad:t"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`bad/cst.yaml`: `licenseTests` is not supported by cbuild"), "{}", r.stderr);
}

/// Whether the sandboxed command itself (`sleep`, not the bwrap whose command line names it) runs.
pub(crate) fn command_runs(marker: &str) -> bool {
    processes_with(marker)
        .iter()
        .any(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep"))
}

/// How long a SIGKILL test waits after the command started: these tests check a kill while the
/// test runs. A kill during bwrap's setup (before `--die-with-parent` binds the sandbox's pid 1,
/// the sandbox supervisor's job) is checked by
/// `a_sigkilled_cbuild_at_random_early_moments_leaves_no_sandbox_process`.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);

/// Pids of processes whose command line holds `needle` (arguments joined by spaces).
pub(crate) fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_sigkilled_cbuild_test_leaves_no_test_process() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    // A service that never opens its port; a marker in its command line to find it from outside.
    let marker = format!("sleep 3{}", std::process::id() % 100_000);
    cx.write(
        "hang/BUILD.star",
        &format!(
            r#"
oci_image(name = "img", base = "//stacks:run-image", entrypoint = ["/bin/sh", "-c", "{marker}; exit 0"])
image_test(name = "t", image = ":img", service = {{"port": 9, "ready_timeout": 600}}, timeout = 900)
"#
        ),
    );
    let mut child = cx
        .cmd()
        .args(["test", "//hang:t"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // `sh -c "sleep N; …"` inside the sandbox: its own process, found from outside.
    while !command_runs(&marker) {
        assert!(start.elapsed() < Duration::from_secs(120), "the service never started");
        assert!(child.try_wait().unwrap().is_none(), "cbuild test ended before the service started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(SETTLE);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let start = Instant::now();
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "processes left after SIGKILL: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
