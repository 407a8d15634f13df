//! A test body in a child process of this test binary, for process-wide state that library code
//! running in the test process reads (environment variables such as `PATH` or `DOCKER_CONFIG`):
//! setting it in this process would change it under every other test running in parallel.
//!
//! ```ignore
//! let Some(dir) = common::child::dir() else {
//!     let t = tempfile::tempdir().unwrap();
//!     common::child::run(module_path!(), "the_test_fn", t.path(), &[("DOCKER_CONFIG", …)]);
//!     return;
//! };
//! // the body, in the child, with DOCKER_CONFIG set from its start
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Set in the child: the dir its parent made for it.
const DIR_VAR: &str = "CBUILD_IT_CHILD_DIR";

/// In a child started by [`run`]: the dir the parent made for it; `None` in an ordinary run.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os(DIR_VAR).map(PathBuf::from)
}

/// The name this binary's harness knows the test `name` of `module` by (`module` as
/// `module_path!()` gives it: `it::cache_safety` → `cache_safety::name`), for `--exact`.
pub fn test_name(module: &str, name: &str) -> String {
    format!("{}::{name}", module.split_once("::").map_or(module, |(_, m)| m))
}

/// Runs the test `name` of `module` (as `module_path!()` gives it) alone in a child process of
/// this binary, with `env` added to its environment and `dir` as its [`dir`]; fails if the test
/// fails there or did not run.
pub fn run(module: &str, name: &str, dir: &Path, env: &[(&str, OsString)]) {
    let test = test_name(module, name);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(DIR_VAR, dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{test}` failed in its child process:\n{all}");
    assert!(stdout.contains("test result: ok. 1 passed"), "`{test}` did not run in the child process:\n{all}");
}
