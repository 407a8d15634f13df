//! Whether cbuild colours its own output: `--color auto|always|never`, `NO_COLOR`, `CLICOLOR_FORCE`
//! (no-color.org, bixense.com/clicolors). Decided once at start, before parsing the command line,
//! so clap's help and errors follow it too; read by the error and warning printers.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// The `--color` flag.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when writing to a terminal, unless NO_COLOR is set (CLICOLOR_FORCE=1 forces it).
    #[default]
    Auto,
    /// Always colour (also through pipes).
    Always,
    /// Never colour.
    Never,
}

static STDERR: AtomicBool = AtomicBool::new(false);

/// Resolves the choice: an explicit `always`/`never` wins; under `auto`, a non-empty `NO_COLOR`
/// turns colour off, else `CLICOLOR_FORCE` (not `0`) turns it on, else stderr being a terminal
/// (and `TERM` not `dumb`) decides. Returns what clap should use.
pub fn init(choice: ColorChoice) -> clap::ColorChoice {
    let on = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            if crate::env::var(crate::env::NO_COLOR).is_some() {
                false
            } else if crate::env::var(crate::env::CLICOLOR_FORCE).is_some_and(|v| v != "0") {
                true
            } else {
                std::io::stderr().is_terminal() && crate::env::var("TERM").as_deref() != Some("dumb")
            }
        }
    };
    STDERR.store(on, Ordering::Relaxed);
    if on {
        clap::ColorChoice::Always
    } else {
        clap::ColorChoice::Never
    }
}

/// Whether stderr output is coloured.
pub fn stderr() -> bool {
    STDERR.load(Ordering::Relaxed)
}

/// The `--color` value given on a command line (last one wins), before clap parses it: `--color X`
/// or `--color=X`, anywhere before a `--`. An invalid value is left for clap to report.
pub fn from_args(args: &[std::ffi::OsString]) -> ColorChoice {
    use clap::ValueEnum;
    let mut choice = ColorChoice::Auto;
    let mut it = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        let v = if a == "--color" {
            it.next().map(|v| v.into_owned())
        } else {
            a.strip_prefix("--color=").map(String::from)
        };
        if let Some(c) = v.and_then(|v| ColorChoice::from_str(&v, false).ok()) {
            choice = c;
        }
    }
    choice
}

/// `text` in bold red (errors) when stderr is coloured.
pub fn error(text: &str) -> String {
    paint("1;31", text)
}

/// `text` in bold yellow (warnings) when stderr is coloured.
pub fn warning(text: &str) -> String {
    paint("1;33", text)
}

/// `text` in bold cyan (hints, notes) when stderr is coloured.
pub fn hint(text: &str) -> String {
    paint("1;36", text)
}

fn paint(sgr: &str, text: &str) -> String {
    if stderr() {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_before_parsing() {
        let a = |v: &[&str]| from_args(&v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>());
        assert_eq!(a(&["cbuild", "build", "//..."]), ColorChoice::Auto);
        assert_eq!(a(&["cbuild", "--color", "never", "build"]), ColorChoice::Never);
        assert_eq!(a(&["cbuild", "build", "--color=always", "//..."]), ColorChoice::Always);
        assert_eq!(a(&["cbuild", "--color=always", "--color", "never"]), ColorChoice::Never);
        assert_eq!(a(&["cbuild", "run", "//x", "--", "--color=always"]), ColorChoice::Auto);
        assert_eq!(a(&["cbuild", "--color=purple"]), ColorChoice::Auto);
    }
}
