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

/// Every variable cbuild reads by a fixed name (the table above); with the `CBUILD_` ones and
/// those [`read_names`] logs, what decides a build from the environment (`cli::noop`).
pub const KNOWN: &[&str] = &[
    SOURCE_DATE_EPOCH,
    "XDG_CACHE_HOME",
    "HOME",
    DOCKER_CONFIG,
    "PATH",
    "CI",
    NO_COLOR,
    CLICOLOR_FORCE,
    "TERM",
    DOCKER_HOST,
    CONTAINER_HOST,
    XDG_RUNTIME_DIR,
];

/// Variables whose values are credentials (or may hold them): never printed, stored or hashed
/// into anything kept (a stored hash of a password can be guessed offline).
pub const SECRETS: &[&str] =
    &["CBUILD_REMOTE_CACHE_AUTH", "CBUILD_REMOTE_CACHE_TOKEN", "CBUILD_BINDINGS_KEY", "CBUILD_REMOTE_HEADERS"];

/// The variables set now that can decide a build (sorted): the [`KNOWN`] ones, every `CBUILD_`
/// one and those named in `also` (what [`read_names`] logged). A [`SECRETS`] one by its presence
/// only: its value reads `(set)`.
pub fn deciding(also: &[String]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<_> = std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str().is_some_and(|k| k.starts_with("CBUILD_") || KNOWN.contains(&k) || also.iter().any(|n| n == k))
        })
        .map(|(k, v)| match k.to_str().is_some_and(|k| SECRETS.contains(&k)) {
            true => (k, OsString::from("(set)")),
            false => (k, v),
        })
        .collect();
    env.sort();
    env
}

static LOGGING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static READ: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Starts logging the names of the variables read from here on (any name: `--env K`, a
/// binding's `$VAR`).
pub fn log_reads() {
    READ.lock().unwrap_or_else(|p| p.into_inner()).clear();
    LOGGING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The names read since [`log_reads`] (sorted); stops logging.
pub fn read_names() -> Vec<String> {
    LOGGING.store(false, std::sync::atomic::Ordering::SeqCst);
    std::mem::take(&mut *READ.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect()
}

fn log(name: &str) {
    if LOGGING.load(std::sync::atomic::Ordering::Relaxed) {
        READ.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string());
    }
}

/// A variable's value; `None` when unset, empty or not UTF-8.
pub fn var(name: &str) -> Option<String> {
    log(name);
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A variable's raw value (paths); `None` when unset or empty.
pub fn var_os(name: &str) -> Option<OsString> {
    log(name);
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Whether a variable is set at all (even empty), e.g. `CI`.
pub fn is_set(name: &str) -> bool {
    log(name);
    std::env::var_os(name).is_some()
}
