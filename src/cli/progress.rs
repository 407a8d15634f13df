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
    } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
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
            Event::Failed { label, action, error } => format!("FAILED {label} {action}: {error}"),
            Event::Output { label, action, line, .. } => format!("[{label} {action}] {line}"),
            Event::Warning { message } => format!("warning: {message}"),
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
