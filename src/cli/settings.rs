//! Resolved settings: each one merged flag > `CBUILD_*` env var > `cbuild.toml` > default, in one place.
//!
//! | setting      | flag           | env                 | cbuild.toml        | default                     |
//! |--------------|----------------|---------------------|--------------------|-----------------------------|
//! | cache dir    | `--cache-dir`  | `CBUILD_CACHE_DIR`  | `cache.dir`        | `$XDG_CACHE_HOME/cbuild` or `~/.cache/cbuild` |
//! | jobs         | `-j/--jobs`    | `CBUILD_JOBS`       | `build.jobs`       | number of cores             |
//! | compression  | `--compression`| `CBUILD_COMPRESSION`| `build.compression`| `gzip`                      |
//! | colour       | `--color`      | `NO_COLOR`, `CLICOLOR_FORCE` | —         | `auto` (see `cli::color`)   |
//! | glob limit   | —              | `CBUILD_GLOB_LIMIT` | `build.glob_limit` | 100000                      |
//! | .deb downloads | —            | `CBUILD_DEBIAN_CACHE` | —               | the cache dir (`<cache>/debs/`) |
//! | remote cache | `--remote-cache` | `CBUILD_REMOTE_CACHE` | `cache.remote` | none                       |
//! | remote executor | `--remote-executor` | `CBUILD_REMOTE_EXECUTOR` | `cache.remote_executor` | none (the remote cache defaults to it) |
//! | remote download | `--remote-download` | `CBUILD_REMOTE_DOWNLOAD` | `cache.remote_download` | `all` (`toplevel`: lazy bytes) |
//! | remote mode  | `--remote-cache-mode` | `CBUILD_REMOTE_CACHE_MODE` | `cache.remote_mode` | `read-write` |
//! | remote timeout | `--remote-timeout SECS` | `CBUILD_REMOTE_TIMEOUT` | `cache.remote_timeout` | 10 (connect: at most 2) |
//! | REAPI instance | `--remote-instance-name` | `CBUILD_REMOTE_INSTANCE_NAME` | `cache.remote_instance_name` | the `grpc://` URL's path, else `""` |
//! | remote headers | `--remote-header NAME=VALUE` (repeatable) | `CBUILD_REMOTE_HEADERS` (one `NAME=VALUE` per line) | — (may hold secrets) | none |
//! | remote signing key | —      | `CBUILD_REMOTE_SIGNING_KEY` (a file) | — (never from the repository) | none: read-only |
//! | remote trusted keys | —     | `CBUILD_REMOTE_TRUSTED_KEYS` | `cache.remote_trusted_keys` | none: unauthenticated |
//! | Starlark steps | —          | `CBUILD_STARLARK_MAX_STEPS` | `build.starlark_max_steps` | 10000000 |
//! | Starlark heap  | —          | `CBUILD_STARLARK_MAX_HEAP` | `build.starlark_max_heap` | `2GiB` |
//! | Starlark call depth | —     | `CBUILD_STARLARK_MAX_DEPTH` | `build.starlark_max_depth` | 50 |

use std::path::{Path, PathBuf};

use clap::Args;

use super::output::Failure;
use crate::loading::{Workspace, WorkspaceError};

/// Options every subcommand takes. Each setting is taken from, in order: the flag, the `CBUILD_*`
/// environment variable, `cbuild.toml`, the default. Shown under their own heading after a
/// subcommand's own options; the rarely used ones only in `--help`, not in `-h`.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Run as if started in DIR (the workspace is found by walking up from it).
    #[arg(short = 'C', long = "directory", global = true, value_name = "DIR")]
    pub directory: Option<std::path::PathBuf>,
    /// Cache directory [env: CBUILD_CACHE_DIR; cbuild.toml: cache.dir; default: $XDG_CACHE_HOME/cbuild].
    #[arg(long, global = true, value_name = "DIR", hide_short_help = true)]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Parallel actions [env: CBUILD_JOBS; cbuild.toml: build.jobs; default: number of cores].
    #[arg(short = 'j', long, global = true, value_name = "N")]
    pub jobs: Option<usize>,
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Less output: no progress, only errors and results.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colour in errors, warnings and help: `auto` (on a terminal, unless NO_COLOR is set;
    /// CLICOLOR_FORCE=1 forces it), `always`, `never`.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = super::color::ColorChoice::Auto,
        value_name = "WHEN",
        hide_short_help = true
    )]
    pub color: super::color::ColorChoice,
    /// Layer compression: `gzip` or `zstd` [env: CBUILD_COMPRESSION; cbuild.toml: build.compression;
    /// default: gzip]. A layer's own `compression` attribute wins.
    #[arg(long, global = true, value_name = "ALGO", value_parser = ["gzip", "zstd"], hide_short_help = true)]
    pub compression: Option<String>,
    /// Shared cache server: `http(s)://` for the Bazel HTTP cache protocol (nginx WebDAV,
    /// bazel-remote, ...), `grpc(s)://host:port[/instance]` for REAPI v2 (BuildGrid, Buildbarn,
    /// BuildBuddy, NativeLink, bazel-remote's gRPC port) [env: CBUILD_REMOTE_CACHE; cbuild.toml:
    /// cache.remote]. Credentials come from CBUILD_REMOTE_CACHE_AUTH (user:pass) or
    /// CBUILD_REMOTE_CACHE_TOKEN (sent as `authorization`), or --remote-header.
    #[arg(long, global = true, value_name = "URL", hide_short_help = true)]
    pub remote_cache: Option<String>,
    /// REAPI execution service, `grpc(s)://host:port[/instance]` (BuildGrid with `cbuild worker`
    /// bots): genrules with an image and buildpack detect/build run there; --remote-cache
    /// defaults to it [env: CBUILD_REMOTE_EXECUTOR; cbuild.toml: cache.remote_executor].
    #[arg(long, global = true, value_name = "URL", hide_short_help = true)]
    pub remote_executor: Option<String>,
    /// What remote-cache hits download: `all` (every blob, so the local cache can build offline
    /// later) or `toplevel` (only what the requested targets' outputs and executing actions need;
    /// intermediate outputs stay on the server, as Bazel's build without the bytes)
    /// [env: CBUILD_REMOTE_DOWNLOAD; cbuild.toml: cache.remote_download; default: all].
    #[arg(long, global = true, value_name = "WHAT", value_parser = ["all", "toplevel"], hide_short_help = true)]
    pub remote_download: Option<String>,
    /// `read-write` (e.g. CI on main) or `read-only` (e.g. CI on pull requests)
    /// [env: CBUILD_REMOTE_CACHE_MODE; cbuild.toml: cache.remote_mode; default: read-write]. A runner
    /// writes only with a signing key (CBUILD_REMOTE_SIGNING_KEY, from `cbuild cache keygen`);
    /// readers set CBUILD_REMOTE_TRUSTED_KEYS to accept only signed entries.
    #[arg(long, global = true, value_name = "MODE", hide_short_help = true)]
    pub remote_cache_mode: Option<String>,
    /// Seconds a remote-cache request may take before the remote is given up for the build
    /// (uploads get more for their size; lookups also stop when the time budget is spent)
    /// [env: CBUILD_REMOTE_TIMEOUT; cbuild.toml: cache.remote_timeout; default: 10].
    #[arg(long, global = true, value_name = "SECS", hide_short_help = true)]
    pub remote_timeout: Option<f64>,
    /// REAPI instance name of a grpc:// remote cache [env: CBUILD_REMOTE_INSTANCE_NAME; cbuild.toml:
    /// cache.remote_instance_name; default: the URL's path, else the default instance].
    #[arg(long, global = true, value_name = "NAME", hide_short_help = true)]
    pub remote_instance_name: Option<String>,
    /// Header sent with every remote-cache request, e.g. a hosted cache's API key (repeatable;
    /// values are never printed) [env: CBUILD_REMOTE_HEADERS, one NAME=VALUE per line; prefer the
    /// variable for secrets: flags are visible to other users in `ps`].
    #[arg(long = "remote-header", global = true, value_name = "NAME=VALUE", hide_short_help = true)]
    pub remote_headers: Vec<String>,
    #[command(flatten)]
    pub inputs: super::build_inputs::BuildInputArgs,
}

/// Everything a command needs to know about where and how to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workspace: Workspace,
    /// The directory the command was started in (for relative labels).
    pub cwd: PathBuf,
    pub cache_dir: PathBuf,
    pub jobs: usize,
    pub compression: String,
    pub glob_limit: usize,
    pub json: bool,
    pub quiet: bool,
    pub remote_cache: Option<String>,
    /// `--remote-executor` (a `grpc(s)://` URL).
    pub remote_executor: Option<String>,
    /// `--remote-download toplevel`: lazy bytes.
    pub remote_lazy: bool,
    pub remote_mode: crate::remote::RemoteMode,
    /// REAPI instance name (`None`: the URL's path).
    pub remote_instance_name: Option<String>,
    /// Request and connect timeouts of the remote cache.
    pub remote_timeouts: crate::remote::Timeouts,
    /// Extra remote-cache headers (values are secrets: `Settings`' `Debug` shows only names).
    pub remote_headers: RemoteHeaders,
    /// Private key file that signs remote-cache uploads (env only: a repository must not be able
    /// to make a runner sign). Loaded when the remote cache is set up.
    pub remote_signing_key: Option<PathBuf>,
    /// Public keys whose signed remote-cache entries are accepted; empty: every entry is
    /// accepted, unauthenticated.
    pub remote_trusted_keys: Vec<crate::remote::PublicKey>,
    /// Limits on evaluating each BUILD / .star file.
    pub starlark_limits: crate::loading::EvalLimits,
    /// `--env`, `--env-file`, `--binding`, `--stamp`.
    pub inputs: super::build_inputs::BuildInputs,
}

/// `NAME=VALUE` headers whose values `Debug` never shows.
#[derive(Clone, Default)]
pub struct RemoteHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for RemoteHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| format!("{k}=<redacted>"))).finish()
    }
}

/// Parses `NAME=VALUE` headers (from flags, or lines of `CBUILD_REMOTE_HEADERS`); errors name the
/// header, never its value.
pub fn parse_headers<'a>(items: impl Iterator<Item = &'a str>, from: &str) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for item in items.map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out.push((k.trim().to_string(), v.to_string())),
            _ => {
                let name: String = item.chars().take_while(|c| *c != '=').take(40).collect();
                return Err(Failure::user(format!("{from}: `{name}…` is not `NAME=VALUE` (the value is not shown)")));
            }
        }
    }
    Ok(out)
}

fn env(name: &str) -> Option<String> {
    crate::env::var(name)
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Result<Option<T>, Failure> {
    match env(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Failure::user(format!("environment variable `{name}` has an invalid value `{v}`"))),
    }
}

impl Settings {
    pub fn resolve(g: &GlobalArgs) -> Result<Settings, Failure> {
        let cwd = match &g.directory {
            Some(d) => d.clone(),
            None => std::env::current_dir().map_err(Failure::env)?,
        };
        let workspace = Workspace::discover(&cwd).map_err(|e| match e {
            WorkspaceError::NotFound(_) => Failure::user_hint(
                e.to_string(),
                "create a `cbuild.toml` at the root of your monorepo (it may be empty)",
            ),
            WorkspaceError::Invalid { .. } => Failure::user(e.to_string()),
            WorkspaceError::Read { .. } => Failure::env(e),
        })?;
        let c = &workspace.config;
        let cache_dir = g
            .cache_dir
            .clone()
            .or_else(|| env("CBUILD_CACHE_DIR").map(PathBuf::from))
            .or_else(|| c.cache.dir.as_ref().map(|d| workspace.root.join(d)))
            .unwrap_or_else(default_cache_dir);
        let jobs = match g.jobs {
            Some(j) => Some(j),
            None => env_parse("CBUILD_JOBS")?,
        }
        .or(c.build.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        if jobs == 0 {
            return Err(Failure::user("`jobs` must be at least 1"));
        }
        let compression = g
            .compression
            .clone()
            .or_else(|| env("CBUILD_COMPRESSION"))
            .or(c.build.compression.clone())
            .unwrap_or_else(|| "gzip".into());
        if !["gzip", "zstd"].contains(&compression.as_str()) {
            return Err(Failure::user(format!("compression `{compression}` is not supported; use `gzip` or `zstd`")));
        }
        let glob_limit = env_parse("CBUILD_GLOB_LIMIT")?.or(c.build.glob_limit).unwrap_or(100_000);
        let remote_executor = g
            .remote_executor
            .clone()
            .or_else(|| env("CBUILD_REMOTE_EXECUTOR"))
            .or(c.cache.remote_executor.clone())
            .filter(|u| !u.is_empty());
        if let Some(u) = &remote_executor {
            if !(u.starts_with("grpc://") || u.starts_with("grpcs://")) {
                return Err(Failure::user(format!(
                    "remote executor `{u}`: remote execution speaks REAPI over gRPC; use grpc://host:port or grpcs://host:port"
                )));
            }
        }
        let download = g
            .remote_download
            .clone()
            .or_else(|| env("CBUILD_REMOTE_DOWNLOAD"))
            .or(c.cache.remote_download.clone())
            .unwrap_or_else(|| "all".into());
        let remote_lazy = match download.as_str() {
            "all" => false,
            "toplevel" => true,
            other => {
                return Err(Failure::user(format!("remote download `{other}` is not `all` or `toplevel`")));
            }
        };
        let remote_cache = g
            .remote_cache
            .clone()
            .or_else(|| env("CBUILD_REMOTE_CACHE"))
            .or(c.cache.remote.clone())
            .filter(|u| !u.is_empty())
            .or_else(|| remote_executor.clone());
        let mode = g
            .remote_cache_mode
            .clone()
            .or_else(|| env("CBUILD_REMOTE_CACHE_MODE"))
            .or(c.cache.remote_mode.clone())
            .unwrap_or_else(|| "read-write".into());
        let remote_mode = mode
            .parse()
            .map_err(|_| Failure::user(format!("remote cache mode `{mode}` is not `read-write` or `read-only`")))?;
        let remote_timeouts = {
            let secs = match g.remote_timeout {
                Some(v) => Some((v, "--remote-timeout".to_string())),
                None => match env_parse::<f64>("CBUILD_REMOTE_TIMEOUT")? {
                    Some(v) => Some((v, "CBUILD_REMOTE_TIMEOUT".to_string())),
                    None => c.cache.remote_timeout.map(|v| (v, "`cache.remote_timeout` in cbuild.toml".to_string())),
                },
            };
            let mut t = crate::remote::Timeouts::default();
            if let Some((v, what)) = secs {
                if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
                    return Err(Failure::user(format!("{what}: `{v}` is not a number of seconds in (0, 3600]")));
                }
                t.request = std::time::Duration::from_secs_f64(v);
                t.connect = t.connect.min(t.request);
            }
            t
        };
        let remote_instance_name = g
            .remote_instance_name
            .clone()
            .or_else(|| env("CBUILD_REMOTE_INSTANCE_NAME"))
            .or(c.cache.remote_instance_name.clone());
        let mut remote_headers = parse_headers(g.remote_headers.iter().map(String::as_str), "--remote-header")?;
        if let Some(v) = env("CBUILD_REMOTE_HEADERS") {
            remote_headers.extend(parse_headers(v.lines(), "CBUILD_REMOTE_HEADERS")?);
        }
        let remote_headers = RemoteHeaders(remote_headers);
        let remote_signing_key = env(crate::remote::SIGNING_KEY_ENV).map(PathBuf::from);
        let remote_trusted_keys = match env(crate::remote::TRUSTED_KEYS_ENV) {
            Some(list) => crate::remote::signing::parse_public_keys(&list)
                .map_err(|e| Failure::user(format!("{}: {e}", crate::remote::TRUSTED_KEYS_ENV)))?,
            None => {
                let list = c.cache.remote_trusted_keys.clone().unwrap_or_default().join(",");
                crate::remote::signing::parse_public_keys(&list)
                    .map_err(|e| Failure::user(format!("`cache.remote_trusted_keys` in cbuild.toml: {e}")))?
            }
        };
        let heap = match env("CBUILD_STARLARK_MAX_HEAP").map(|v| (v, "CBUILD_STARLARK_MAX_HEAP")) {
            Some(v) => Some(v),
            None => c.build.starlark_max_heap.clone().map(|v| (v, "`build.starlark_max_heap` in cbuild.toml")),
        };
        let heap = heap
            .map(|(v, what)| {
                crate::cache::parse_size(&v).map_err(|e| Failure::user(format!("{what} has an invalid value: {e}")))
            })
            .transpose()?;
        let starlark_limits = crate::loading::EvalLimits::new(
            env_parse("CBUILD_STARLARK_MAX_STEPS")?.or(c.build.starlark_max_steps),
            heap,
            env_parse("CBUILD_STARLARK_MAX_DEPTH")?.or(c.build.starlark_max_depth),
        )
        .map_err(Failure::user)?;
        let inputs = g.inputs.resolve(&cwd, &workspace.root)?;
        Ok(Settings {
            inputs,
            workspace,
            cwd,
            cache_dir,
            jobs,
            compression,
            glob_limit,
            json: g.json,
            quiet: g.quiet,
            remote_cache,
            remote_executor,
            remote_lazy,
            remote_mode,
            remote_instance_name,
            remote_timeouts,
            remote_headers,
            remote_signing_key,
            remote_trusted_keys,
            starlark_limits,
        })
    }

    /// The package the command was started in, for `:name` labels.
    pub fn current_package(&self) -> Option<crate::model::label::PackagePath> {
        let rel = self.workspace.package_of(&self.cwd)?;
        crate::model::label::PackagePath::parse(&rel).ok()
    }

    pub fn root(&self) -> &Path {
        &self.workspace.root
    }

    /// What analysis applies to every target: compression, `--env`, `--binding`.
    pub fn analysis_options(&self) -> crate::analysis::Options {
        crate::analysis::Options {
            compression: self.compression.clone(),
            env: self.inputs.env.clone(),
            bindings: self.inputs.bindings.clone(),
            root: self.root().to_path_buf(),
            requested: Default::default(),
            platforms: self.inputs.platforms.clone(),
            platform: None,
        }
    }
}

pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = env("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("cbuild");
    }
    if let Some(h) = env("HOME") {
        return PathBuf::from(h).join(".cache").join("cbuild");
    }
    std::env::temp_dir().join("cbuild-cache")
}
