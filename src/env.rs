//! The process environment, read in one place. Every variable cbuild reads is named here; the
//! modules that own a setting keep their constant (e.g. `remote::SIGNING_KEY_ENV`) but read it
//! through [`var`]. Empty values count as unset everywhere. Documented in README › Settings.
//!
//! | variable | read by |
//! |---|---|
//! | `CBUILD_CACHE_DIR`, `CBUILD_COMPRESSION`, `CBUILD_GLOB_LIMIT`, `CBUILD_STARLARK_MAX_*`, `CBUILD_REMOTE_CACHE`, `CBUILD_REMOTE_CACHE_MODE`, `CBUILD_REMOTE_SIGNING_KEY`, `CBUILD_REMOTE_TRUSTED_KEYS`, `XDG_CACHE_HOME`, `HOME` | `cli::settings` |
//! | `CBUILD_JOBS` | clap (`-j`) |
//! | `SOURCE_DATE_EPOCH` | the build session |
//! | `CBUILD_REMOTE_CACHE_AUTH`, `CBUILD_REMOTE_CACHE_TOKEN` | `remote::config` (never printed) |
//! | `CBUILD_DEBIAN_ARCHIVE`, `CBUILD_DEBIAN_CACHE` | `debian::source`, the `debian_image` runner |
//! | `CBUILD_BINDINGS_KEY` (never printed), `$VAR` named by a `cnb_image` binding, `--env K` | `execution::runners::cnb_bindings`, analysis, `cli::build_inputs` |
//! | `DOCKER_CONFIG`, `HOME` | `registry::auth` |
//! | `PATH` | finding `bwrap` |
//! | `CI` | progress output (no bars under CI) |
//! | `NO_COLOR`, `CLICOLOR_FORCE`, `TERM` | `cli::color` (under `--color auto`) |
//! | `DOCKER_HOST`, `CONTAINER_HOST`, `XDG_RUNTIME_DIR`, `PATH` | `cli::engine` (`cbuild load`: the engine's socket or CLI) |

use std::ffi::OsString;

/// Reproducible timestamps (reproducible-builds.org).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Where `.deb` files are cached (shared by cache dirs).
pub const DEBIAN_CACHE: &str = "CBUILD_DEBIAN_CACHE";
/// The directory holding the registry `config.json`.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
/// Turns colour off (no-color.org) unless `--color always`.
pub const NO_COLOR: &str = "NO_COLOR";
/// Turns colour on through pipes (bixense.com/clicolors) unless `--color never` or `NO_COLOR`.
pub const CLICOLOR_FORCE: &str = "CLICOLOR_FORCE";
/// The Docker engine's address (`unix:///var/run/docker.sock` when unset).
pub const DOCKER_HOST: &str = "DOCKER_HOST";
/// The Podman service's address (podman's own variable).
pub const CONTAINER_HOST: &str = "CONTAINER_HOST";
/// Where a rootless Podman service's socket lives (`$XDG_RUNTIME_DIR/podman/podman.sock`).
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";

/// A variable's value; `None` when unset, empty or not UTF-8.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A variable's raw value (paths); `None` when unset or empty.
pub fn var_os(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Whether a variable is set at all (even empty), e.g. `CI`.
pub fn is_set(name: &str) -> bool {
    std::env::var_os(name).is_some()
}
