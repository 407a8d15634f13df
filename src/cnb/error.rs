//! The error type of `cnb`: every message names the buildpack (`id@version`), the phase and the
//! file in backticks, and maps to the exit code the reference lifecycle would use.

use std::fmt;
use std::path::PathBuf;

use super::plan::DetectFailure;

/// The lifecycle phase an error belongs to; decides the exit code (platform.md › Exit Codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading buildpacks and orders before anything runs.
    Load,
    /// `bin/detect` and group resolution.
    Detect,
    /// Restoring cached layers.
    Restore,
    /// `bin/build` and its outputs.
    Build,
    /// Assembling the app image.
    Export,
    /// The launcher inside the image.
    Launch,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Load => "load",
            Phase::Detect => "detect",
            Phase::Restore => "restore",
            Phase::Build => "build",
            Phase::Export => "export",
            Phase::Launch => "launch",
        })
    }
}

/// Errors of the Buildpack API functions. `buildpack` is `id@version` (or a path when the id is
/// not known yet), `file` the file that was being read.
#[derive(Debug, thiserror::Error)]
pub enum CnbError {
    /// A file is not valid TOML or does not have the expected shape.
    #[error("{phase}: buildpack `{buildpack}`: cannot parse `{}`: {source}", file.display())]
    Toml {
        phase: Phase,
        buildpack: String,
        file: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The buildpack declares an API this platform does not implement (lifecycle exit 12).
    #[error(
        "{phase}: buildpack `{buildpack}`: `{}` declares buildpack API `{api}`; supported: 0.7 to 0.12",
        file.display()
    )]
    UnsupportedApi { phase: Phase, buildpack: String, file: PathBuf, api: String },
    /// A value breaks a rule of the Buildpack API.
    #[error("{phase}: buildpack `{buildpack}`: `{}`: {reason}", file.display())]
    Invalid { phase: Phase, buildpack: String, file: PathBuf, reason: String },
    /// Reading a file or directory failed.
    #[error("{phase}: buildpack `{buildpack}`: cannot read `{}`", file.display())]
    Io {
        phase: Phase,
        buildpack: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No group of the order passed detection (lifecycle exit 20, or 21 when a buildpack erred).
    #[error("detect: no buildpack group passed detection{}\n{failure}", if failure.errored { " (a buildpack failed with an error)" } else { "" })]
    NoGroupPassed { failure: Box<DetectFailure> },
}

impl CnbError {
    /// The exit code the reference lifecycle uses for this error (platform.md › Exit Codes).
    pub fn exit_code(&self) -> i32 {
        match self {
            CnbError::UnsupportedApi { .. } => 12,
            CnbError::NoGroupPassed { failure } => failure.exit_code(),
            CnbError::Toml { phase, .. } | CnbError::Invalid { phase, .. } | CnbError::Io { phase, .. } => {
                match phase {
                    Phase::Load => 12,
                    Phase::Detect => 21,
                    Phase::Restore => 42,
                    Phase::Build => 51,
                    Phase::Export => 62,
                    Phase::Launch => 82,
                }
            }
        }
    }

    /// A [`CnbError::Invalid`].
    pub fn invalid(
        phase: Phase,
        buildpack: impl Into<String>,
        file: impl Into<PathBuf>,
        reason: impl Into<String>,
    ) -> Self {
        CnbError::Invalid { phase, buildpack: buildpack.into(), file: file.into(), reason: reason.into() }
    }

    /// A [`CnbError::Toml`].
    pub fn toml(phase: Phase, buildpack: impl Into<String>, file: impl Into<PathBuf>, source: toml::de::Error) -> Self {
        CnbError::Toml { phase, buildpack: buildpack.into(), file: file.into(), source: Box::new(source) }
    }

    /// A [`CnbError::Io`].
    pub fn io(phase: Phase, buildpack: impl Into<String>, file: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CnbError::Io { phase, buildpack: buildpack.into(), file: file.into(), source }
    }
}

impl crate::model::error::Kinded for CnbError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        use crate::model::error::ErrorKind::*;
        let phase = match self {
            CnbError::Toml { phase, .. }
            | CnbError::UnsupportedApi { phase, .. }
            | CnbError::Invalid { phase, .. }
            | CnbError::Io { phase, .. } => Some(*phase),
            CnbError::NoGroupPassed { .. } => None,
        };
        match phase {
            // A workspace buildpack's own descriptor is wrong.
            Some(Phase::Load) => User,
            // What a buildpack did while it ran (or detection failing on the app).
            _ => Build,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_buildpack_phase_and_file() {
        let e = CnbError::invalid(Phase::Build, "acme/go@1.0", "/layers/acme_go/x.toml", "bad");
        assert_eq!(e.to_string(), "build: buildpack `acme/go@1.0`: `/layers/acme_go/x.toml`: bad");
        assert_eq!(e.exit_code(), 51);
    }

    #[test]
    fn unsupported_api_exits_12() {
        let e = CnbError::UnsupportedApi {
            phase: Phase::Detect,
            buildpack: "a@1".into(),
            file: "/cnb/buildpacks/a/1/buildpack.toml".into(),
            api: "0.6".into(),
        };
        assert_eq!(e.exit_code(), 12);
        assert!(e.to_string().contains("`0.6`"));
    }
}
