//! Who can fix a failure, and the exit code that tells a script so. Every module's error type says
//! its kind ([`Kinded`]); the CLI picks the exit code from the kind, never from the command.
//!
//! The codes are Bazel's (`bazel help` › exit codes), so CI scripts written for Bazel read cbuild's
//! the same way: 1 a build failed, 2 the command line or workspace is wrong, 3 tests failed, 8
//! interrupted, 36 the machine lacks something (a tool, the network, disk space: retrying on another
//! machine may help), 37 a bug in cbuild.

/// The kind of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An action failed on its inputs (a buildpack's `bin/build` exited 1, a genrule's command
    /// failed, no buildpack group passed detection): fix the code being built. Exit 1.
    Build,
    /// BUILD files, labels, flags, cbuild.toml, a lock file or a workspace source are wrong: fix the
    /// workspace or the command line. Exit 2.
    User,
    /// The machine or a service it needs is missing or failing (bubblewrap, a writable cache, a
    /// registry or mirror that cannot be reached, a full disk): fix or change the machine. Exit 36.
    Environment,
    /// cbuild itself is wrong (an invariant broke, a task panicked): report it. Exit 37.
    Internal,
}

impl ErrorKind {
    /// The process exit code for this kind (README › Exit codes).
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Build => 1,
            ErrorKind::User => 2,
            ErrorKind::Environment => 36,
            ErrorKind::Internal => 37,
        }
    }

    /// The kind that decides the exit code when several failures happened in one build: the one
    /// someone must fix first (a bug over a broken machine over a wrong workspace over a failed
    /// action — a failed action is often the consequence of the others).
    pub fn worst(kinds: impl IntoIterator<Item = ErrorKind>) -> Option<ErrorKind> {
        kinds.into_iter().max_by_key(|k| match k {
            ErrorKind::Build => 0,
            ErrorKind::User => 1,
            ErrorKind::Environment => 2,
            ErrorKind::Internal => 3,
        })
    }
}

/// An error with its whole `source()` chain (`cannot write layer …: … : No space left on device`),
/// so the cause reaches the user instead of only the outermost context.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Exit code of a run whose tests failed (`cbuild test`), next to the kinds' codes.
pub const EXIT_TESTS_FAILED: u8 = 3;
/// Exit code of `cbuild test` when no test target matched (Bazel's "no tests found").
pub const EXIT_NO_TESTS: u8 = 4;
/// Exit code of a build stopped by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 8;

/// Implemented by every module's error type: which [`ErrorKind`] a value is, and the `hint:` lines
/// to print under it (one convention everywhere: a hint is a full sentence telling what to do).
pub trait Kinded {
    fn kind(&self) -> ErrorKind;
    fn hints(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An I/O error reached an action without a module's context: the disk or the machine.
impl Kinded for std::io::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Environment
    }
}

/// Serialising cbuild's own records cannot fail on valid data: a bug.
impl Kinded for serde_json::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

impl Kinded for super::reference::BadReference {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

impl Kinded for super::digest::BadDigest {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_the_worst_kind_wins() {
        let all = [ErrorKind::Build, ErrorKind::User, ErrorKind::Environment, ErrorKind::Internal];
        let mut codes: Vec<u8> = all.iter().map(|k| k.exit_code()).collect();
        codes.extend([EXIT_TESTS_FAILED, EXIT_NO_TESTS, EXIT_INTERRUPTED, 0]);
        let n = codes.len();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), n);
        assert_eq!(ErrorKind::worst([ErrorKind::Build, ErrorKind::User]), Some(ErrorKind::User));
        assert_eq!(ErrorKind::worst([ErrorKind::Environment, ErrorKind::User]), Some(ErrorKind::Environment));
        assert_eq!(ErrorKind::worst([]), None);
    }
}
