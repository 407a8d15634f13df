//! The workspace: the directory holding `cbuild.toml`, found by walking up from the current
//! directory, and that file's schema. Merging with flags and env vars happens in `cli::settings`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The name of the file that marks a workspace root.
pub const WORKSPACE_FILE: &str = "cbuild.toml";

/// The name of a package's build file.
pub const BUILD_FILE: &str = "BUILD.star";

/// `cbuild.toml`. Every key is optional; unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub debian: DebianConfig,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// Parallel actions (`-j`); default: number of cores.
    pub jobs: Option<usize>,
    /// Layer compression: `gzip` (default) or `zstd`.
    pub compression: Option<String>,
    /// Maximum files one glob() may match.
    pub glob_limit: Option<usize>,
    /// Starlark evaluation limits per BUILD/.star file: steps (calls + loop iterations), heap
    /// bytes (a size like `2GiB`), call depth.
    pub starlark_max_steps: Option<u64>,
    pub starlark_max_heap: Option<String>,
    pub starlark_max_depth: Option<usize>,
    /// A shell command printing `KEY VALUE` lines for `--stamp` placeholders (Bazel's
    /// `--workspace_status_command`), run in the workspace root.
    pub workspace_status: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub dir: Option<PathBuf>,
    pub remote: Option<String>,
    pub remote_mode: Option<String>,
    /// Public keys (base64 or hex) whose signed remote-cache entries are accepted.
    pub remote_trusted_keys: Option<Vec<String>>,
    /// REAPI instance name of a `grpc://` remote cache (default: the URL's path, else `""`).
    pub remote_instance_name: Option<String>,
    /// Seconds a remote-cache request may take (default 10).
    pub remote_timeout: Option<f64>,
    /// REAPI execution service (`grpc://…`) that runs genrules and buildpacks.
    pub remote_executor: Option<String>,
    /// `all` (every remote hit downloaded whole) or `toplevel` (lazy bytes).
    pub remote_download: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registries reached over plain HTTP besides localhost/127.0.0.0/8 (`host:port`).
    #[serde(default)]
    pub insecure: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Path of the bubblewrap binary (default: `bwrap` on PATH).
    pub bwrap: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianConfig {
    /// Archive URL for `debian_image`; default: the first Debian source of /etc/apt/sources.list*.
    pub archive: Option<String>,
}

/// A located workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub config: WorkspaceConfig,
}

/// Why no workspace could be opened.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("no `cbuild.toml` found in `{0}` or any parent directory")]
    NotFound(PathBuf),
    #[error("cannot read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Workspace {
    /// Finds the workspace containing `start` (walking up) and parses its `cbuild.toml`.
    pub fn discover(start: &Path) -> Result<Workspace, WorkspaceError> {
        let start = start.canonicalize().unwrap_or_else(|_| start.to_path_buf());
        let mut dir = Some(start.as_path());
        while let Some(d) = dir {
            if d.join(WORKSPACE_FILE).is_file() {
                return Workspace::open(d);
            }
            dir = d.parent();
        }
        Err(WorkspaceError::NotFound(start))
    }

    /// Opens the workspace rooted at `root`.
    pub fn open(root: &Path) -> Result<Workspace, WorkspaceError> {
        let path = root.join(WORKSPACE_FILE);
        crate::fs::reads::note(&path, false);
        let text =
            std::fs::read_to_string(&path).map_err(|source| WorkspaceError::Read { path: path.clone(), source })?;
        let config: WorkspaceConfig = toml::from_str(&text)
            .map_err(|e| WorkspaceError::Invalid { path: path.clone(), message: e.to_string() })?;
        Ok(Workspace { root: root.to_path_buf(), config })
    }

    /// The package containing `dir` (for relative labels on the command line), if inside.
    pub fn package_of(&self, dir: &Path) -> Option<String> {
        let dir = dir.canonicalize().ok()?;
        let rel = dir.strip_prefix(&self.root).ok()?;
        Some(rel.to_str()?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_upwards_and_rejects_unknown_keys() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(WORKSPACE_FILE), "[build]\njobs = 3\n").unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        let ws = Workspace::discover(&t.path().join("a/b")).unwrap();
        assert_eq!(ws.config.build.jobs, Some(3));
        std::fs::write(t.path().join(WORKSPACE_FILE), "[build]\njbos = 3\n").unwrap();
        let e = Workspace::discover(t.path()).unwrap_err().to_string();
        assert!(e.contains("jbos"), "{e}");
        let none = tempfile::tempdir().unwrap();
        assert!(matches!(Workspace::discover(none.path()), Err(WorkspaceError::NotFound(_))));
    }
}
