//! Failures as the user sees them: located BUILD errors, plain errors with `hint:` lines, and the
//! exit code chosen by the failure's [`ErrorKind`] (README › Exit codes).

use crate::execution::ActionError;
use crate::loading::LoadError;
use crate::model::error::{ErrorKind, Kinded};

/// Writes to stdout. A closed pipe (`cbuild --json build … | head`) means the reader has what it
/// wanted: cbuild exits quietly with status 0, as ripgrep does, instead of panicking in `println!`.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Any other stdout error (a full disk behind a redirect) is reported once, then fatal.
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::output::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::output::write_stdout(format_args!($($t)*)) };
}

/// Why a command failed, sorted by who can fix it.
#[derive(Debug)]
pub enum Failure {
    /// BUILD files, labels, flags or cbuild.toml are wrong: exit 2.
    Load(Vec<LoadError>),
    /// Usage or configuration error: exit 2.
    User { message: String, hints: Vec<String> },
    /// A build action failed: exit 1.
    Build { message: String },
    /// The machine is missing something or an I/O error occurred: exit 36.
    Environment { error: anyhow::Error, hints: Vec<String> },
    /// A module's error, with the kind it says it is.
    Kinded { kind: ErrorKind, message: String, hints: Vec<String> },
}

impl Failure {
    pub fn user(message: impl Into<String>) -> Failure {
        Failure::User { message: message.into(), hints: Vec::new() }
    }
    pub fn user_hint(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure::User { message: message.into(), hints: vec![hint.into()] }
    }
    pub fn env(error: impl Into<anyhow::Error>) -> Failure {
        Failure::Environment { error: error.into(), hints: Vec::new() }
    }

    /// A module error (registry, OCI, cache, …) with its own kind, message chain and hints.
    pub fn of<E: Kinded + std::error::Error>(e: &E) -> Failure {
        Failure::Kinded { kind: e.kind(), message: crate::execution::chain(e), hints: e.hints() }
    }

    /// [`Failure::of`] with context before the message (`pushing `x`: …`).
    pub fn of_in<E: Kinded + std::error::Error>(context: impl std::fmt::Display, e: &E) -> Failure {
        Failure::Kinded {
            kind: e.kind(),
            message: format!("{context}: {}", crate::execution::chain(e)),
            hints: e.hints(),
        }
    }

    /// Who can fix it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::Load(_) | Failure::User { .. } => ErrorKind::User,
            Failure::Build { .. } => ErrorKind::Build,
            Failure::Environment { .. } => ErrorKind::Environment,
            Failure::Kinded { kind, .. } => *kind,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }

    /// The text printed on stderr.
    pub fn render(&self) -> String {
        match self {
            Failure::Load(errs) => {
                let mut s = String::new();
                for e in errs {
                    s.push_str(&e.render_styled(super::color::stderr()));
                    if !s.ends_with('\n') {
                        s.push('\n');
                    }
                }
                if errs.len() > 1 {
                    s.push_str(&format!(
                        "{} {} errors while loading BUILD files\n",
                        super::color::error("error:"),
                        errs.len()
                    ));
                }
                s
            }
            Failure::User { message, hints } => render_plain(message, hints),
            Failure::Build { message } => format!("{} {message}\n", super::color::error("error:")),
            Failure::Kinded { message, hints, .. } => render_plain(message, hints),
            Failure::Environment { error, hints } => {
                let mut msg = format!("{error}");
                let mut src = error.source();
                while let Some(e) = src {
                    msg.push_str(&format!("\n  caused by: {e}"));
                    src = e.source();
                }
                render_plain(&msg, hints)
            }
        }
    }
}

fn render_plain(message: &str, hints: &[String]) -> String {
    let mut s = format!("{} {message}\n", super::color::error("error:"));
    for h in hints {
        s.push_str(&format!("{} {h}\n", super::color::hint("hint:")));
    }
    s
}

/// A build's exit code: 0 when everything built; else the code of the worst error's kind
/// (README › Exit codes), or 8 when Ctrl-C stopped the build.
pub fn report_exit_code(r: &crate::execution::BuildReport) -> std::process::ExitCode {
    if r.ok() {
        std::process::ExitCode::SUCCESS
    } else if let Some(kind) = r.error_kind() {
        std::process::ExitCode::from(kind.exit_code())
    } else {
        std::process::ExitCode::from(crate::model::error::EXIT_INTERRUPTED)
    }
}

impl From<ActionError> for Failure {
    fn from(e: ActionError) -> Failure {
        Failure::Kinded { kind: e.kind, message: e.message, hints: e.hints }
    }
}

/// `error: MESSAGE` and its `hint:` lines, as every failure prints.
pub fn render_action_error(prefix: &str, e: &ActionError) -> String {
    render_plain(&format!("{prefix}{}", e.message), &e.hints)
}

impl From<Vec<LoadError>> for Failure {
    fn from(v: Vec<LoadError>) -> Failure {
        Failure::Load(v)
    }
}
