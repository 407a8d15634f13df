//! `cbuild test PATTERNS...`: builds what the matched `image_test` and `integration_test` targets
//! need and runs them in parallel (`-j`), each an action keyed by the image digest(s) and the test:
//! an unchanged image's pass comes from the cache and is shown as cached (as `bazel test` does). Prints one line per test, a
//! summary, optionally JUnit XML (`--junit`) and a JSON summary (`--json`). Exit 3 when a test failed.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;

use super::session::{build_session, Layouts, Tests};
use crate::cli::output::{render_action_error, Failure};
use crate::cli::settings::{GlobalArgs, Settings};
use crate::execution::Outcome;
use crate::model::action::{ActionKind, ActionOutput};
use crate::model::error::{ErrorKind, EXIT_INTERRUPTED, EXIT_NO_TESTS, EXIT_TESTS_FAILED};
use crate::model::test_spec::TestResult;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Test targets (others matched are ignored): //pkg:name, //pkg, :name, //pkg/..., //...
    #[arg(required = true, value_name = "PATTERNS")]
    pub patterns: Vec<String>,
    /// Run every test, even those whose pass is cached (the new results are not stored).
    #[arg(long)]
    pub no_cache_results: bool,
    /// Run a failed test up to N more times; a test that passes on a retry is reported FLAKY.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Write the results as JUnit XML to FILE (for CI test reports).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<std::path::PathBuf>,
}

/// The status of one test after a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Flaky,
    Failed,
    /// It did not run: something it needs failed to build, or the run was interrupted.
    NotRun,
}

/// One test's result, as printed, written to JUnit and to the JSON summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TestLine {
    pub label: String,
    /// The test's rule (its action's mnemonic): `image_test` or `integration_test`, the `type` of
    /// a JUnit failure.
    #[serde(skip)]
    pub kind: &'static str,
    pub status: Status,
    /// The pass came from the cache (local or remote).
    pub cached: bool,
    pub attempts: u32,
    pub checks: usize,
    pub duration_ms: u64,
    /// Why it failed (or did not run).
    pub message: Option<String>,
    /// The test log (of its last run here), workspace-relative.
    pub log: Option<String>,
}

pub fn run(g: &GlobalArgs, a: TestArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let tests = Tests::Run { retries: a.retries, force: a.no_cache_results };
    // Every test runs even when another fails: a failed test never stops the others.
    let built = build_session(s, &a.patterns, true, Layouts::All, tests)?;
    let graph = &built.graph;
    let r = &built.report;
    if graph.test_targets.is_empty() && r.errors.is_empty() {
        eprintln!("no test targets match {}; nothing to test", a.patterns.join(" "));
        return Ok(ExitCode::from(EXIT_NO_TESTS));
    }
    let mut lines = Vec::new();
    for l in &graph.test_targets {
        let id = graph.target_outputs[l];
        let log = match &graph.actions[id].kind {
            ActionKind::ImageTest { .. } => {
                Some(format!("{}/{}.log", crate::execution::runners::image_test::log_dir(l), l.name))
            }
            _ => None,
        };
        let mut line = TestLine {
            label: l.to_string(),
            kind: graph.actions[id].kind.mnemonic(),
            status: Status::NotRun,
            cached: false,
            attempts: 0,
            checks: 0,
            duration_ms: 0,
            message: None,
            log: None,
        };
        match (r.outcomes[id], r.outputs[id].as_deref()) {
            (
                Some(o @ (Outcome::Executed | Outcome::CachedLocal | Outcome::CachedRemote)),
                Some(ActionOutput::Data { json, .. }),
            ) => {
                let t: TestResult = serde_json::from_str(json).unwrap_or_default();
                line.status = if t.flaky { Status::Flaky } else { Status::Passed };
                line.cached = o != Outcome::Executed;
                line.attempts = t.attempts;
                line.checks = t.checks;
                line.duration_ms = t.duration_ms;
                line.log = log.filter(|_| o == Outcome::Executed);
                if t.flaky {
                    line.message =
                        Some(format!("passed on attempt {}; earlier: {}", t.attempts, t.failures.join("; ")));
                }
            }
            (Some(Outcome::Failed), _) => {
                line.status = Status::Failed;
                line.attempts = a.retries + 1;
                line.message = r.errors.iter().find(|(i, _)| *i == id).map(|(_, e)| e.message.clone());
                line.log = log;
            }
            _ => line.message = Some(not_run_reason(&built, id)),
        }
        lines.push(line);
    }
    print_results(&built, &lines);
    if let Some(path) = &a.junit {
        crate::fs::write_atomic(path, junit_xml(&lines).as_bytes())
            .map_err(|e| Failure::env(anyhow::anyhow!("writing the JUnit report `{}`: {e}", path.display())))?;
    }
    Ok(exit_code(&built, &lines))
}

/// Why the test of action `id` did not run: the first failed action it depends on, or Ctrl-C.
fn not_run_reason(b: &super::session::Built, id: usize) -> String {
    let mut todo = vec![id];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        if let Some((_, e)) = b.report.errors.iter().find(|(x, _)| *x == i) {
            let a = &b.graph.actions[i];
            return format!("`{}` {} failed: {}", a.label, a.kind.mnemonic(), e.message.lines().next().unwrap_or(""));
        }
        todo.extend(b.graph.actions[i].deps.iter().copied());
    }
    if b.report.cancelled {
        "interrupted".into()
    } else {
        "something it needs failed to build".into()
    }
}

/// 3 when only tests failed; a build failure keeps its own code (the worst kind's); 8 on Ctrl-C.
fn exit_code(b: &super::session::Built, lines: &[TestLine]) -> ExitCode {
    let test_failure = |id: usize, e: &crate::execution::ActionError| {
        id != usize::MAX
            && e.kind == ErrorKind::Build
            && matches!(b.graph.actions[id].kind, ActionKind::ImageTest { .. })
    };
    let other = ErrorKind::worst(b.report.errors.iter().filter(|(id, e)| !test_failure(*id, e)).map(|(_, e)| e.kind));
    if let Some(k) = other {
        return ExitCode::from(k.exit_code());
    }
    if b.report.cancelled {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    if lines.iter().any(|l| l.status == Status::Failed) {
        return ExitCode::from(EXIT_TESTS_FAILED);
    }
    ExitCode::SUCCESS
}

fn print_results(b: &super::session::Built, lines: &[TestLine]) {
    let r = &b.report;
    let executed = lines.iter().filter(|l| !l.cached && l.status != Status::NotRun).count();
    let count = |s: Status| lines.iter().filter(|l| l.status == s).count();
    let cached = lines.iter().filter(|l| l.cached).count();
    // Errors of the build (not of a test): as `cbuild build` shows them.
    for (id, e) in &r.errors {
        if *id == usize::MAX {
            eprint!("{}", render_action_error("", e));
        } else if !matches!(b.graph.actions[*id].kind, ActionKind::ImageTest { .. }) {
            let a = &b.graph.actions[*id];
            eprint!("{}", render_action_error(&format!("`{}` {} failed: ", a.label, a.kind.mnemonic()), e));
        }
    }
    if b.settings.json {
        let v = serde_json::json!({
            "type": "test_summary",
            "total": lines.len(),
            "executed": executed,
            "passed": count(Status::Passed),
            "flaky": count(Status::Flaky),
            "failed": count(Status::Failed),
            "not_run": count(Status::NotRun),
            "cached": cached,
            "tests": lines,
            "actions": {
                "executed": r.executed,
                "cached_local": r.cached_local,
                "cached_remote": r.cached_remote,
                "failed": r.failed(),
            },
        });
        crate::outln!("{v}");
        return;
    }
    let width = lines.iter().map(|l| l.label.len()).max().unwrap_or(0).max(30);
    for l in lines {
        let time = format!("{:.1}s", l.duration_ms as f64 / 1000.0);
        let (cached, what) = match l.status {
            Status::Passed => (l.cached, format!("PASSED in {time}")),
            Status::Flaky => (l.cached, format!("FLAKY, passed in {} attempts ({time})", l.attempts)),
            Status::Failed => (false, "FAILED".to_string()),
            Status::NotRun => (false, "NO STATUS".to_string()),
        };
        let cached = if cached { "(cached) " } else { "" };
        crate::outln!("{:<width$} {cached:>9}{what}", l.label);
    }
    for l in lines.iter().filter(|l| matches!(l.status, Status::Failed | Status::NotRun | Status::Flaky)) {
        let Some(m) = &l.message else { continue };
        let mut hints = Vec::new();
        if let Some(log) = &l.log {
            hints.push(format!("the test log is `{log}`"));
        }
        let prefix = match l.status {
            Status::Failed => format!("`{}` failed: ", l.label),
            Status::Flaky => format!("`{}` is flaky: ", l.label),
            _ => format!("`{}` did not run: ", l.label),
        };
        if l.status == Status::Flaky {
            eprintln!("warning: {prefix}{m}");
        } else {
            let e = crate::execution::ActionError { kind: ErrorKind::Build, message: m.clone(), hints };
            eprint!("{}", render_action_error(&prefix, &e));
        }
    }
    let state = if r.cancelled {
        "interrupted"
    } else if count(Status::Failed) + count(Status::NotRun) > 0 || !r.errors.is_empty() {
        "FAILED"
    } else {
        "ok"
    };
    let mut parts = vec![format!("{} passed", count(Status::Passed) + count(Status::Flaky))];
    parts.push(format!("{} failed", count(Status::Failed)));
    if count(Status::NotRun) > 0 {
        parts.push(format!("{} not run", count(Status::NotRun)));
    }
    if count(Status::Flaky) > 0 {
        parts.push(format!("{} flaky", count(Status::Flaky)));
    }
    eprintln!("{state}: executed {executed} out of {} tests ({cached} cached): {}", lines.len(), parts.join(", "));
}

/// JUnit XML (the Ant/Surefire shape CI servers read): one `testsuite` per package, one
/// `testcase` per test target.
pub fn junit_xml(lines: &[TestLine]) -> String {
    let mut by_pkg: std::collections::BTreeMap<String, Vec<&TestLine>> = Default::default();
    for l in lines {
        let pkg = l.label.rsplit_once(':').map(|(p, _)| p.to_string()).unwrap_or_else(|| l.label.clone());
        by_pkg.entry(pkg).or_default().push(l);
    }
    let secs = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
    let n = |ls: &[&TestLine], s: Status| ls.iter().filter(|l| l.status == s).count();
    let all: Vec<&TestLine> = lines.iter().collect();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"cbuild test\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
        all.len(),
        n(&all, Status::Failed),
        n(&all, Status::NotRun),
        secs(lines.iter().map(|l| l.duration_ms).sum())
    );
    for (pkg, ls) in &by_pkg {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
            esc(pkg),
            ls.len(),
            n(ls, Status::Failed),
            n(ls, Status::NotRun),
            secs(ls.iter().map(|l| l.duration_ms).sum())
        );
        for l in ls {
            let name = l.label.rsplit_once(':').map(|(_, n)| n).unwrap_or(&l.label);
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                esc(pkg),
                esc(name),
                secs(l.duration_ms)
            );
            let msg = l.message.clone().unwrap_or_default();
            let first = msg.lines().next().unwrap_or("").to_string();
            let mut out = Vec::new();
            if l.cached {
                out.push("cached: the image and the test are unchanged since this pass".to_string());
            }
            if l.status == Status::Flaky {
                out.push(format!("flaky: {msg}"));
            }
            if let Some(log) = &l.log {
                out.push(format!("log: {log}"));
            }
            x.push_str(">\n");
            match l.status {
                Status::Failed => {
                    let _ = writeln!(
                        x,
                        "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                        esc(&first),
                        esc(l.kind),
                        esc(&msg)
                    );
                }
                Status::NotRun => {
                    let _ = writeln!(x, "      <skipped message=\"{}\"/>", esc(&first));
                }
                _ => {}
            }
            if !out.is_empty() {
                let _ = writeln!(x, "      <system-out>{}</system-out>", esc(&out.join("\n")));
            }
            x.push_str("    </testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// XML text and attribute escaping; characters XML 1.0 cannot hold are replaced by U+FFFD.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\t' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let line = |label: &str, status, message: Option<&str>| TestLine {
            label: label.into(),
            kind: "image_test",
            status,
            cached: false,
            attempts: 1,
            checks: 2,
            duration_ms: 1500,
            message: message.map(String::from),
            log: None,
        };
        let integration =
            TestLine { kind: "integration_test", ..line("//c:i", Status::Failed, Some("check `test` failed")) };
        let x = junit_xml(&[
            line("//a:t", Status::Passed, None),
            line("//a:u", Status::Failed, Some("check `x` failed: expected <1>, got \"2\" & \u{1b}")),
            line("//b:t", Status::NotRun, Some("`//b:img` image failed")),
            integration,
        ]);
        assert!(
            x.contains("<testsuites name=\"cbuild test\" tests=\"4\" failures=\"2\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("<testsuite name=\"//a\" tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("expected &lt;1&gt;, got &quot;2&quot; &amp; \u{FFFD}"), "{x}");
        assert!(x.contains("<skipped message="), "{x}");
        // The failure's type is the test's rule.
        assert!(x.contains("type=\"image_test\">check `x` failed"), "{x}");
        assert!(x.contains("<failure message=\"check `test` failed\" type=\"integration_test\">"), "{x}");
        assert!(!x.contains('\u{1b}'));
    }
}
