//! `integration_test`: several images started together in one loopback-only network namespace,
//! with a test command beside them. Real images built from the examples, real bubblewrap
//! sandboxes, a real namespace; nothing mocked. Fixed ports are fine here: every test gets a
//! network namespace of its own, so no two tests (nor the host) share a port.

use std::time::{Duration, Instant};

use crate::common::TestContext;
use crate::image_test::{check_junit, command_runs, json_summary, processes_with, sandbox_ok, SETTLE};

#[test]
fn the_example_integration_test_passes_and_an_immediate_repeat_is_cached() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    let junit = cx.root().join("report.xml");
    let start = Instant::now();
    let r = cx.run(&["--json", "test", "//integration/...", "--junit", junit.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let s = json_summary(&r);
    assert_eq!(s["tests"][0]["label"], "//integration:site-and-api", "{s}");
    assert_eq!((s["passed"].as_u64(), s["executed"].as_u64()), (Some(1), Some(1)), "{s}");
    eprintln!("first run (builds both images): {:.2?}", start.elapsed());
    let log = std::fs::read_to_string(cx.root().join("cbuild-out/testlogs/integration/site-and-api.log")).unwrap();
    // The test reached both services on 127.0.0.1, through the addresses it was given.
    assert!(log.contains("api: {\"service\":\"api\",\"status\":\"ok\"}"), "{log}");
    assert!(log.contains("site: <h1>static site built by cbuild</h1>"), "{log}");
    assert!(log.contains("--- service api (//services/api:image) log"), "{log}");
    check_junit(&junit, 1, 0);

    let start = Instant::now();
    let r = cx.run(&["--json", "test", "//integration/..."]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = json_summary(&r);
    assert_eq!((s["executed"].as_u64(), s["cached"].as_u64()), (Some(0), Some(1)), "{s}");
    assert_eq!(s["actions"]["executed"].as_u64(), Some(0), "{s}");
    eprintln!("cached repeat: {:.2?}", start.elapsed());
    let r = cx.run(&["test", "//integration:site-and-api"]);
    assert!(r.stdout.contains("(cached) PASSED"), "{}", r.stdout);

    // A change of the test is a new key: it runs again.
    let path = cx.root().join("integration/check.sh");
    let script = std::fs::read_to_string(&path).unwrap();
    cx.write("integration/check.sh", &script.replace("both answer", "both answered"));
    let r = cx.run(&["--json", "test", "//integration/..."]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(json_summary(&r)["executed"].as_u64(), Some(1));
}

#[test]
fn env_values_never_reach_the_cache() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    const SECRET: &str = "itest-s3cret-8d1f";
    cx.write(
        "secret/BUILD.star",
        &format!(
            r#"
integration_test(
    name = "t",
    images = {{"api": "//services/api:image"}},
    env = {{"api": {{"PORT": "9091", "API_TOKEN": "{SECRET}"}}}},
    ready = {{"api": 9091}},
    test_env = {{"TOKEN": "{SECRET}"}},
    test = "test -n \"$TOKEN\"",
)
"#
        ),
    );
    let r = cx.run(&["test", "//secret:t"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let hits = crate::common::support::files_containing(cx.cache.path(), SECRET.as_bytes());
    assert!(hits.is_empty(), "env values stored in the cache: {hits:?}");
    // A changed value is still a changed key.
    let build = std::fs::read_to_string(cx.root().join("secret/BUILD.star")).unwrap();
    cx.write("secret/BUILD.star", &build.replace(SECRET, "itest-other-value"));
    let r = cx.run(&["--json", "test", "//secret:t"]);
    assert_eq!(json_summary(&r)["executed"].as_u64(), Some(1), "{}", r.stdout);
}

fn broken(cx: &TestContext) {
    cx.write(
        "broken/BUILD.star",
        r#"
# The site listens on 8081, but its readiness check waits for 8090.
integration_test(
    name = "wrong-port",
    images = {"api": "//services/api:image", "site": "//services/site:image"},
    args = {"site": ["-p", "127.0.0.1:8081"]},
    ready = {"api": 8080, "site": {"port": 8090, "timeout": 2}},
    test = "true",
)
integration_test(
    name = "failing-test",
    images = {"api": "//services/api:image"},
    ready = {"api": {"port": 8080, "http": "/"}},
    test = "echo fetching $API_URL; exit 7",
)
# hello.sh prints a line and exits: not a service.
integration_test(
    name = "exits",
    images = {"api": "//services/api:image", "tool": "//tools:tool"},
    ready = {"api": 8080, "tool": 8081},
    test = "true",
)
integration_test(
    name = "hangs",
    images = {"api": "//services/api:image"},
    ready = {"api": 8080},
    test = "sleep 600",
    timeout = 3,
)
"#,
    );
}

#[test]
fn broken_integration_tests_fail_naming_the_check_expected_and_actual_and_are_never_cached() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    broken(&cx);
    let start = Instant::now();
    let junit = cx.root().join("broken.xml");
    let r = cx.run(&["test", "//broken/...", "--junit", junit.to_str().unwrap()]);
    assert_eq!(r.code, 3, "tests failed: exit 3\n{}\n{}", r.stdout, r.stderr);
    for (label, message) in [
        (
            "//broken:wrong-port",
            "check `ready site` failed: expected 127.0.0.1:8090 to accept connections within 2s, got `Connection refused",
        ),
        (
            "//broken:failing-test",
            "check `test` failed: expected `echo fetching $API_URL; exit 7` to exit with code 0, got exit code 7\n  \
             service `api` wrote nothing\n  the test's last log lines:\n    fetching http://127.0.0.1:8080",
        ),
        (
            "//broken:exits",
            "check `service tool` failed: expected `//tools:tool` to keep running while it is checked for \
             readiness, got it exited with status 0",
        ),
        (
            "//broken:hangs",
            "the test timed out: expected the services to be ready and the test to finish within 3s (`timeout`), \
             got the test `sleep 600` still running",
        ),
    ] {
        assert!(r.stderr.contains(&format!("`{label}` failed: {message}")), "{label}: {}", r.stderr);
    }
    // The service that exited shows what it wrote.
    assert!(r.stderr.contains("service `tool`'s last log lines:"), "{}", r.stderr);
    assert!(r.stderr.contains("FAILED: executed 4 out of 4 tests (0 cached): 0 passed, 4 failed"), "{}", r.stderr);
    eprintln!("four broken integration tests: {:.2?}", start.elapsed());
    // JUnit calls each failure by its rule, not `image_test`.
    check_junit(&junit, 4, 4);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("type=\"integration_test\"").count(), 4, "{xml}");
    assert!(!xml.contains("image_test"), "{xml}");
    let log = std::fs::read_to_string(cx.root().join("cbuild-out/testlogs/broken/failing-test.log")).unwrap();
    assert!(log.contains("fetching http://127.0.0.1:8080") && log.contains("attempt 1: FAILED"), "{log}");
    // A failure is never cached.
    let r = cx.run(&["--json", "test", "//broken:failing-test"]);
    assert_eq!(r.code, 3);
    assert_eq!(json_summary(&r)["executed"].as_u64(), Some(1));
}

#[test]
fn bad_integration_test_definitions_are_located_errors() {
    let cx = TestContext::from_examples();
    let api = "\"api\": \"//services/api:image\"";
    let cases = [
        (
            "images = {\"api\": \"//tools:tool-layer\"}, ready = {\"api\": 8080}, test = \"true\"".to_string(),
            "`images`: `api` is `//tools:tool-layer`, which is not an image",
        ),
        (
            format!("images = {{{api}, \"web\": \"//tools:web\"}}, ready = {{\"api\": 8080, \"web\": 8080}}, test = \"true\""),
            "`ready`: `api` and `web` both use port 8080",
        ),
        (format!("images = {{{api}}}, ready = {{}}, test = \"true\""), "`ready` has no entry for `api`"),
        (
            format!("images = {{{api}}}, ready = {{\"api\": 8080, \"db\": 5432}}, test = \"true\""),
            "`ready` names `db`, which is not a key of `images`",
        ),
        (
            format!("images = {{{api}}}, ready = {{\"api\": {{\"port\": 8080, \"colour\": 1}}}}, test = \"true\""),
            "`ready` of `api`: unknown key `colour`",
        ),
        (format!("images = {{{api}}}, ready = {{\"api\": 70000}}, test = \"true\""), "port 70000 is not a TCP port"),
        (
            format!("images = {{{api}}}, ready = {{\"api\": 8080}}, test = \":missing.sh\""),
            "`test` is `:missing.sh`, but `bad/missing.sh` is not a file of the package",
        ),
    ];
    for (attrs, want) in cases {
        cx.write("bad/BUILD.star", &format!("integration_test(name = \"t\", {attrs})\n"));
        let r = cx.run(&["test", "//bad:t"]);
        assert_eq!(r.code, 2, "{attrs}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{attrs}: {}", r.stderr);
        assert!(r.stderr.contains("bad/BUILD.star"), "located: {}", r.stderr);
    }
}

/// The network namespace of process `pid` (`net:[4026532...]`).
fn netns_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok().map(|p| p.display().to_string())
}

#[test]
fn a_sigkilled_cbuild_test_leaves_no_service_test_process_or_namespace() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    // Unique markers (this process's pid) to find the test's processes from outside.
    let id = std::process::id() % 100_000;
    let (service_marker, test_marker) = (format!("sleep 4{id}"), format!("sleep 5{id}"));
    cx.write(
        "hang/BUILD.star",
        &format!(
            r#"
oci_image(name = "sleeper", base = "//stacks:run-image", entrypoint = ["/bin/sh", "-c", "{service_marker}; exit 0"])
integration_test(
    name = "t",
    images = {{"api": "//services/api:image", "sleeper": ":sleeper"}},
    ready = {{"api": 8080, "sleeper": {{"port": 9, "timeout": 600}}}},
    test = "true",
    timeout = 900,
)
integration_test(
    name = "u",
    images = {{"api": "//services/api:image"}},
    ready = {{"api": 8080}},
    test = "{test_marker}",
    timeout = 900,
)
"#
        ),
    );
    for (target, marker) in [("//hang:t", &service_marker), ("//hang:u", &test_marker)] {
        let mut child = cx
            .cmd()
            .args(["test", target])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !command_runs(marker) {
            assert!(start.elapsed() < Duration::from_secs(120), "{target}: the sandbox never started");
            assert!(child.try_wait().unwrap().is_none(), "{target}: cbuild test ended before the sandbox started");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(SETTLE);
        let pids = processes_with(marker);
        let ns = pids.iter().find_map(|p| netns_of(*p)).expect("the marker's network namespace");
        assert_ne!(Some(&ns), netns_of(std::process::id()).as_ref(), "{target}: not in a namespace of its own");
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        let start = Instant::now();
        loop {
            let left = processes_with(marker);
            // Every process of the namespace (the API's httpd too), not only the marker.
            let in_ns: Vec<u32> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| netns_of(*p).as_ref() == Some(&ns))
                .collect();
            if left.is_empty() && in_ns.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{target}: left after SIGKILL: {left:?} with the marker, {in_ns:?} in its namespace {ns}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Regression: bubblewrap arms the sandbox's pid 1 (`--die-with-parent`) only at the end of its
/// setup, so a `kill -9` of cbuild in those first milliseconds left the sandbox running, adopted
/// by init. Every sandbox now has a supervisor that kills it when cbuild dies. cbuild is killed
/// at a random moment 0–50 ms after the service's bwrap shows up, fifteen times; nothing of the
/// sandbox may be left any time.
#[test]
fn a_sigkilled_cbuild_at_random_early_moments_leaves_no_sandbox_process() {
    if !sandbox_ok() {
        return;
    }
    let cx = TestContext::from_examples();
    let id = std::process::id() % 100_000;
    let marker = format!("sleep 6{id}");
    cx.write(
        "early/BUILD.star",
        &format!(
            r#"
oci_image(name = "sleeper", base = "//stacks:run-image", entrypoint = ["/bin/sh", "-c", "{marker}; exit 0"])
integration_test(
    name = "t",
    images = {{"sleeper": ":sleeper"}},
    ready = {{"sleeper": {{"port": 9, "timeout": 600}}}},
    test = "true",
    timeout = 900,
)
"#
        ),
    );
    // The image is built (and cached) first, so that each run below reaches its sandbox quickly.
    let r = cx.run(&["build", "//early:sleeper"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A small LCG: the delays need not be good random numbers, only spread (printed to reproduce),
    // and squared, so that half of them fall in the first 12.5 ms, where bwrap's setup is: with
    // the old spawn (no supervisor) about one attempt in ten left a sandbox behind.
    let mut seed = u64::from(id) ^ 0x9e37_79b9_7f4a_7c15;
    let mut delays = Vec::new();
    for attempt in 1..=15 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let unit = ((seed >> 33) % 10_000) as f64 / 10_000.0;
        let delay = Duration::from_secs_f64(0.050 * unit * unit);
        delays.push(delay);
        let mut child = cx
            .cmd()
            .args(["test", "//early:t"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        // bwrap's command line holds the marker (its argv ends with the sandbox's command).
        while processes_with(&marker).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(60), "attempt {attempt}: the sandbox never started");
            assert!(child.try_wait().unwrap().is_none(), "attempt {attempt}: cbuild test ended before the sandbox");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(delay);
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        let start = Instant::now();
        loop {
            let left = processes_with(&marker);
            if left.is_empty() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                for p in &left {
                    // SAFETY: kill(2); clean up for the next attempts and tests before failing.
                    unsafe { libc::kill(*p as i32, libc::SIGKILL) };
                }
                panic!("attempt {attempt} (killed {delay:?} after bwrap started): left after SIGKILL: {left:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("15/15 without a process left; kill delays after bwrap started: {delays:?}");
}
