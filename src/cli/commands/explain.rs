//! `cbuild explain LABEL`: for each action of the target in the last build, which key components
//! changed since the previous run, or that nothing changed (a cache hit).

use std::process::ExitCode;

use clap::Args;

use crate::cache::{Cache, RunOutcome};
use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The target to explain, e.g. //services/api:image.
    pub label: String,
}

pub fn run(g: &GlobalArgs, a: ExplainArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let cur = s.current_package();
    let label = crate::model::label::Label::parse(&a.label, cur.as_ref()).map_err(|e| Failure::user(e.to_string()))?;
    let cache = Cache::open(&s.cache_dir).map_err(Failure::env)?;
    let runs = cache.runs_for_label(&label.to_string()).map_err(Failure::env)?;
    if runs.is_empty() {
        return Err(Failure::user_hint(
            format!("no build of `{label}` is recorded in `{}`", s.cache_dir.display()),
            format!("build it first: cbuild build {label}"),
        ));
    }
    let mut out = String::new();
    let json = s.json;
    let mut items = Vec::new();
    for h in &runs {
        let l = &h.latest;
        let changes = h.changes();
        let what = match l.outcome {
            RunOutcome::Executed => "ran",
            RunOutcome::CachedLocal => "cache hit (local)",
            RunOutcome::CachedRemote => "cache hit (remote)",
            RunOutcome::Failed => "failed",
        };
        out.push_str(&format!("{label} {}: {what}\n", l.action));
        let reasons: Vec<String> = if matches!(l.outcome, RunOutcome::CachedLocal | RunOutcome::CachedRemote) {
            vec!["nothing changed since the run that produced the cached result".into()]
        } else if h.previous.is_none() {
            vec!["no earlier run is recorded (first build, or the cache was cleaned)".into()]
        } else if changes.is_empty() {
            vec!["inputs are the same as the previous run; the cached result was missing or invalid".into()]
        } else {
            changes.iter().map(|c| c.to_string()).collect()
        };
        for r in &reasons {
            out.push_str(&format!("  {r}\n"));
        }
        items.push(serde_json::json!({"action": l.action, "outcome": l.outcome.as_str(), "key": l.key.to_hex(), "reasons": reasons}));
    }
    if json {
        crate::outln!("{}", serde_json::json!({"label": label.to_string(), "actions": items}));
    } else {
        crate::out!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}
