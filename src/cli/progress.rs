//! Reporters for the build: live progress bars on a terminal (indicatif), plain lines otherwise
//! (CI logs), JSON lines with `--json`. Buildpack and genrule output is shown prefixed by its target.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::execution::events::{Event, Outcome, Reporter};

/// Chooses the reporter for the current stdout/stderr and flags.
pub fn reporter(json: bool, quiet: bool) -> Box<dyn Reporter> {
    if json {
        Box::new(JsonLines)
    } else if quiet {
        Box::new(Quiet)
    } else if std::io::stderr().is_terminal() && !crate::env::is_set("CI") {
        Box::new(Bars::new())
    } else {
        Box::new(Plain)
    }
}

/// One JSON object per event on stdout (the summary is printed by the build command).
pub struct JsonLines;

impl Reporter for JsonLines {
    fn event(&self, e: &Event) {
        if let Ok(s) = serde_json::to_string(e) {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{s}");
        }
    }
}

/// Only failures and warnings.
pub struct Quiet;

impl Reporter for Quiet {
    fn event(&self, e: &Event) {
        match e {
            Event::Failed { .. } | Event::Warning { .. } => Plain.event(e),
            _ => {}
        }
    }
}

/// Plain lines on stderr, one per action that ran, for logs.
pub struct Plain;

impl Reporter for Plain {
    fn event(&self, e: &Event) {
        let line = match e {
            Event::Finished { label, action, outcome: Outcome::Executed, duration } => {
                format!("  done {label} {action} ({:.2}s)", duration.as_secs_f64())
            }
            Event::Failed { label, action, error } => {
                format!("{} {label} {action}: {error}", super::color::error("FAILED"))
            }
            Event::Output { label, action, line, .. } => format!("[{label} {action}] {line}"),
            Event::Warning { message } => format!("{} {message}", super::color::warning("warning:")),
            _ => return,
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// A progress bar with the running action on a terminal.
pub struct Bars {
    bar: ProgressBar,
    done: Mutex<u64>,
}

impl Bars {
    fn new() -> Bars {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Bars { bar, done: Mutex::new(0) }
    }
}

impl Reporter for Bars {
    fn event(&self, e: &Event) {
        match e {
            Event::Plan { actions } => self.bar.set_length(*actions as u64),
            Event::Started { label, action } => self.bar.set_message(format!("{label} {action}")),
            Event::Finished { .. } => {
                let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
                *d += 1;
                self.bar.set_position(*d);
            }
            Event::Failed { .. } | Event::Output { .. } | Event::Warning { .. } => {
                self.bar.suspend(|| Plain.event(e));
            }
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Tees every event to another reporter and, as plain text, to a log file (the build's record:
/// buildpack and genrule output, failures, warnings, what ran), `cbuild-out/logs/build.log`.
pub struct Tee {
    inner: Box<dyn Reporter>,
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Tee {
    /// Opens (truncates) `path`; on failure the log is skipped, the build is not.
    pub fn wrap(inner: Box<dyn Reporter>, path: &std::path::Path) -> Box<dyn Reporter> {
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")));
        match std::fs::File::create(path) {
            Ok(f) => Box::new(Tee { inner, file: Mutex::new(std::io::BufWriter::new(f)) }),
            Err(_) => inner,
        }
    }
}

impl Reporter for Tee {
    fn event(&self, e: &Event) {
        self.inner.event(e);
        let line = match e {
            Event::Plan { actions } => format!("plan: {actions} actions"),
            Event::Started { label, action } => format!("start {label} {action}"),
            Event::Finished { label, action, outcome, duration } => {
                format!("{} {label} {action} ({:.3}s)", outcome.as_str(), duration.as_secs_f64())
            }
            Event::Failed { label, action, error } => format!("FAILED {label} {action}: {error}"),
            Event::Output { label, action, stream, line } => format!("[{label} {action}] {stream}: {line}"),
            Event::Warning { message } => format!("warning: {message}"),
        };
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{line}");
        if matches!(e, Event::Failed { .. }) {
            let _ = f.flush();
        }
    }
}
