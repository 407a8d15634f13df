//! What an `image_test` checks, as plain data: the checks analysis made from the rule's attributes
//! and from a container-structure-test file, in the order they run. How they run is the
//! `image_test` runner's business (`execution::runners::image_test`); nothing here does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every check of one `image_test` target, and how long one attempt may take.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestSpec {
    pub checks: Vec<Check>,
    /// Wall-clock limit of one attempt (all checks), in seconds.
    pub timeout_secs: u64,
    /// Environment added to every command check (container-structure-test `globalEnvVars`).
    pub env: BTreeMap<String, String>,
    /// How many times a failed attempt is run again (`cbuild test --retries N`); a pass after a
    /// failure is *flaky*. A run policy, not part of the test: never in the key.
    #[serde(skip)]
    pub retries: u32,
    /// `cbuild test --no-cache-results`: run even when a pass is cached (and store nothing).
    #[serde(skip)]
    pub force: bool,
}

/// One check, with the name failures are reported under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub what: CheckKind,
}

/// What one check asserts. Paths are absolute paths in the image; regexes compile (analysis checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "check", content = "with", rename_all = "snake_case")]
pub enum CheckKind {
    /// The path exists (symlinks followed, as `stat` does); optionally with this mode, owner and
    /// executable bit.
    FileExists {
        path: String,
        /// Permission bits (`0o7777`), e.g. `0o755`.
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        /// `owner`, `group`, `other` or `any`: who must be able to execute it.
        executable_by: Option<String>,
    },
    /// Nothing exists at the path (not even a dangling symlink).
    FileAbsent {
        path: String,
    },
    /// The file's content matches every `expected` regex and none of `excluded`.
    FileContent {
        path: String,
        expected: Vec<String>,
        excluded: Vec<String>,
    },
    /// The config's user is set and is neither `root` nor uid 0.
    NonRoot,
    /// The config's user is exactly this.
    User(String),
    Entrypoint(Vec<String>),
    Cmd(Vec<String>),
    Workdir(String),
    /// The config's env has `key`, whose value equals `value` (or matches it as a regex).
    Env {
        key: String,
        value: String,
        regex: bool,
    },
    /// The config's label `key` exists and (unless `value` is empty) equals / matches `value`.
    Label {
        key: String,
        value: String,
        regex: bool,
    },
    /// `8080/tcp`-style ports that must (`exposed`) or must not be exposed.
    ExposedPort {
        port: String,
        exposed: bool,
    },
    /// A volume that must be declared.
    Volume(String),
    /// Compressed layers together (what a pull downloads) at most this many bytes.
    MaxSize(u64),
    /// None of the usual shell paths exists in the image.
    NoShell,
    /// Runs a command in the image (`cbuild run` semantics, the entrypoint replaced by `argv`).
    Command(CommandCheck),
    /// Starts the image's process and checks it answers.
    Service(ServiceCheck),
}

/// A command run in the image, its output and status checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub exit_code: i32,
    /// Regexes the whole stdout (resp. stderr) must match / must not match.
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub excluded_stdout: Vec<String>,
    pub excluded_stderr: Vec<String>,
}

/// A service started from the image in a network namespace of its own (loopback only), checked from
/// inside that namespace, then stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCheck {
    /// A process type (`/cnb/process/<type>`); `None`: the image's entrypoint.
    pub process: Option<String>,
    /// Replace the image's cmd (arguments after the entrypoint, as `cbuild run -- ARGS`).
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// The TCP port on 127.0.0.1 that must open.
    pub port: u16,
    /// How long the port may take to open, in seconds.
    pub ready_timeout_secs: u64,
    /// HTTP GETs once the port is open.
    pub http: Vec<HttpCheck>,
}

/// One HTTP GET against a service, with what the answer must be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheck {
    pub path: String,
    pub status: u16,
    /// A regex the body must match (empty: any body).
    pub body: String,
}

/// An `integration_test`: several images started together in ONE fresh network namespace with only
/// a loopback interface (they reach each other on 127.0.0.1:<port>), each in its own sandbox as its
/// image's user; once every service answers its readiness check, a test command runs on the host
/// side (sandboxed, in the same namespace). `TestSpec::timeout_secs` bounds one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationSpec {
    /// The services, in the order they start (sorted by name).
    pub services: Vec<ServiceSpec>,
    /// The test, run after every service is ready.
    pub test: TestCommand,
}

/// One image of an integration test, as a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The key in `images` (`api`): names the service in messages and its env vars (`API_ADDR`).
    pub name: String,
    /// The image's action: its index in the action graph (`model::action::ActionId`, spelled
    /// out here so this module does not import `action`, which imports it). Its manifest digest
    /// is in the key, not this id.
    pub image: usize,
    /// The image's label, for messages.
    pub label: String,
    /// A process type (`/cnb/process/<type>`); `None`: the image's entrypoint.
    pub process: Option<String>,
    /// Replace the image's cmd.
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// The TCP port on 127.0.0.1 the service listens on (unique within the test).
    pub port: u16,
    /// Readiness: after the port opens, `GET http_path` must answer `http_status` (when given).
    pub http_path: Option<String>,
    pub http_status: u16,
    /// How long the service may take to be ready, in seconds.
    pub ready_timeout_secs: u64,
}

impl ServiceSpec {
    /// The prefix of the service's env vars: `site-api` → `SITE_API` (`SITE_API_ADDR`).
    pub fn env_prefix(&self) -> String {
        self.name.to_ascii_uppercase().replace('-', "_")
    }
}

/// The test command of an integration test: run on the host side (the host's `/usr`, `/bin`…,
/// read-only) in a sandbox joined to the services' network namespace, with the test's files at
/// `/work`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCommand {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Workspace-relative files staged at `/work/<path relative to the package>`.
    pub srcs: Vec<(String, String)>,
}

/// What a passed `image_test` action stores (the `json` of `ActionOutput::Data`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// Checks that ran (all passed).
    pub checks: usize,
    /// Attempts it took (1 unless a retry passed).
    pub attempts: u32,
    /// Passed only after a failed attempt.
    pub flaky: bool,
    /// Milliseconds of the passing attempt.
    pub duration_ms: u64,
    /// Why the earlier attempts failed (flaky tests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// Paths whose presence means the image has a shell (`no_shell`).
pub const SHELL_PATHS: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/bin/ash",
    "/bin/dash",
    "/bin/zsh",
    "/bin/busybox",
    "/usr/bin/sh",
    "/usr/bin/bash",
    "/usr/bin/dash",
    "/usr/bin/zsh",
    "/usr/bin/busybox",
    "/sbin/sh",
];
