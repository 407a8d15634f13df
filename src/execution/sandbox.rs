//! The one place that spawns build processes: runs an argv inside a bubblewrap (`bwrap`) sandbox
//! with a read-only root, explicit bind mounts, a cleared env, its own pid/ipc/uts/net namespaces and
//! a non-root user, streaming output line by line. It knows nothing of actions, caches or buildpacks.
//!
//! # Users and file ownership
//!
//! bubblewrap 0.8 run as real root with `--unshare-user --uid U` maps the sandbox uid `U` to host
//! uid 0: the "unprivileged" user then owns every root-owned file it can see (it could read
//! `/etc/shadow` and write root-owned writable mounts). Its `--userns FD` path cannot help either: it
//! calls `setuid` before `setgid` and fails with "unable to switch to gid". So when cbuild runs as
//! root, bwrap itself is started as an unprivileged host user (see [`host_ids`]), and bwrap maps that
//! same id into the sandbox. Consequences for callers:
//!
//! * files the action writes into writable mounts are owned on the host by [`host_ids`]`(uid, gid)`,
//!   which is `(uid, gid)` itself unless it is 0 (then 65534, "nobody");
//! * writable mount sources must be writable by that host id (chown them first, as a CNB platform
//!   chowns `/workspace` and `/layers` to `CNB_USER_ID`), and every mount source and its parent
//!   directories must be searchable by it (`tempfile` directories are 0700: chmod them to 0755);
//! * inside the sandbox only that one id is mapped; files of any other host owner (root included)
//!   show up as 65534 and get "other" permissions only;
//! * the host must allow unprivileged user namespaces, even when cbuild runs as root
//!   ([`check_available`] tests this and says how to fix it).
//!
//! When cbuild does not run as root, the sandbox user maps to the caller's own uid/gid.
//!
//! # The supervisor
//!
//! bwrap's `--die-with-parent` binds the sandbox's pid 1 to bwrap only at the end of bwrap's
//! setup; a cbuild killed (`kill -9`) before that moment would leave a sandbox running, re-parented
//! to init. So every sandbox has a supervisor between cbuild and bwrap: the process std forks for
//! bwrap does not exec it but, at the end of the pre-exec hook, blocks `SIGCHLD`/`SIGTERM`/
//! `SIGINT`/`SIGHUP`, arms `SIGTERM` as its parent-death signal (and checks cbuild is still
//! there), becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`: bwrap's orphans, the sandbox's pid
//! 1 included, become its children instead of init's) and forks bwrap (in its own process group,
//! with `SIGKILL` as its parent-death signal). Then it closes every fd and waits in
//! `sigwaitinfo`. When bwrap ends, or on `SIGTERM` (cbuild died, or [`run`] stops the sandbox),
//! it kills bwrap's process group and every child it has (listed in `/proc/thread-self/children`;
//! killing the sandbox's pid 1 ends its whole pid namespace), reaps them all, and exits as bwrap
//! did (the same exit code, or the same signal). It is a fork without exec, not a re-exec of
//! cbuild, so library users (tests) get it too; it makes async-signal-safe system calls only.
//! cbuild's pid of a sandbox is the supervisor's; stdio go to bwrap unchanged. Cost: one fork,
//! about a millisecond per sandbox.
//!
//! # Hardening and limits
//!
//! * **Nothing secret on a command line.** `/proc/<pid>/cmdline` is world-readable, so bwrap's
//!   options (host paths of the mounts, `--setenv` names and values) travel through a sealed memfd
//!   read with `--args`; only `bwrap --args N -- <argv>` stays visible. bubblewrap 0.8 cannot take
//!   the command itself from `--args`, and the command's own `/proc/<pid>/cmdline` shows its argv
//!   anyway: secrets belong in `env` (or a file), never in `argv`.
//! * **A seccomp filter** ([`seccomp_program`], on unless [`SandboxSpec::seccomp`] is `false`),
//!   modelled on Flatpak's: new namespaces, mounts, keyrings, BPF, perf, kexec, modules, swap,
//!   reboot, `TIOCSTI`/`TIOCLINUX` and odd personalities fail with `EPERM`, `clone3` and the new
//!   mount API with `ENOSYS`, foreign-architecture system calls kill the process. bwrap's
//!   `--disable-userns` closes user namespaces a second way.
//! * **Limits** with defaults ([`DEFAULT_TIMEOUT`], [`DEFAULT_MAX_PROCESSES`],
//!   [`DEFAULT_MAX_OUTPUT_BYTES`], [`DEFAULT_MAX_FILE_SIZE`]) set by [`SandboxSpec::new`]; `None`
//!   disables one. [`SandboxOutcome::failure_message`] says which one ended a run.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr, OsString};
use std::io::{self, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The umask every sandboxed process starts with, whatever the host's (as a container runtime's
/// default): outputs must not depend on the machine's umask.
pub const SANDBOX_UMASK: libc::mode_t = 0o022;

/// Where bubblewrap is looked for first; `PATH` is searched after it.
pub const BWRAP: &str = "/usr/bin/bwrap";

/// The hostname every sandbox gets (fixed so that outputs cannot depend on the build machine).
pub const HOSTNAME: &str = "cbuild-sandbox";

/// The host uid/gid a sandbox that asks for uid or gid 0 runs as when cbuild is root ("nobody").
pub const OVERFLOW_ID: u32 = 65534;

/// Longest line handed to the output callback; longer runs are split (binary output, progress bars).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Wall-clock limit of one sandboxed run unless the caller sets another ([`SandboxSpec::timeout`]):
/// far above a large compile in one buildpack phase or genrule, but a hung action (a test waiting
/// on the network, a prompt nobody answers) no longer holds a CI host until someone notices.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Default number of processes *and threads* a sandbox may add ([`SandboxSpec::max_processes`]).
/// It becomes `RLIMIT_NPROC`, which the kernel counts per real host uid across the whole host (every
/// sandbox running as that uid, and, when cbuild is not root, every other process of the user), so
/// the limit is set to what that uid already runs plus this. Generous: `make -j64`, or a JVM with
/// hundreds of threads, fits many times over, while a fork bomb stops at a few thousand tasks
/// instead of exhausting the host's pids and memory.
pub const DEFAULT_MAX_PROCESSES: u64 = 4096;

/// Default limit of stdout and stderr together per run ([`SandboxSpec::max_output_bytes`]): a
/// hundred times a verbose build log, small enough that a runaway `yes` cannot fill the memory or
/// disk of whatever collects the log. Past it the sandbox is killed.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Default `RLIMIT_FSIZE` ([`SandboxSpec::max_file_size`]): the largest file a sandboxed process
/// may write (a bigger write kills it with `SIGXFSZ`). Above any real artifact or layer; it stops a
/// single runaway file from filling the build disk or a tmpfs `/tmp`.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 * 1024 * 1024 * 1024;

/// How [`bwrap_args`] shows the number of the fd holding the seccomp program (`--seccomp FD`),
/// which is only known once [`run`] has made it.
pub const SECCOMP_FD_PLACEHOLDER: &str = "FD";

/// The host directories [`RootFs::Host`] exposes read-only (where they exist).
const HOST_ROOT_ENTRIES: &[&str] = &["usr", "bin", "lib", "lib64", "sbin", "etc"];

/// Top-level entries of a [`RootFs::Dir`] that the sandbox always replaces with fresh mounts.
const REPLACED_ROOT_ENTRIES: &[&str] = &["proc", "dev", "tmp"];

/// The file system the sandbox sees as `/`. It is always read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootFs {
    /// A minimal view of the host for genrules: `/usr /bin /lib /lib64 /sbin /etc` where they exist
    /// (symlinks such as a merged-usr `/bin -> usr/bin` stay symlinks).
    Host,
    /// A directory holding an extracted image root file system. Its top-level entries are bound
    /// read-only (except `proc`, `dev` and `tmp`, which are always fresh).
    Dir(PathBuf),
}

/// A bind mount of a host path into the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Host path (file or directory); it must exist and be reachable by the sandbox's host user.
    pub src: PathBuf,
    /// Absolute path inside the sandbox.
    pub dst: String,
    /// Whether the sandbox may write through this mount.
    pub writable: bool,
}

impl Mount {
    /// A read-only bind mount.
    pub fn read_only(src: impl Into<PathBuf>, dst: impl Into<String>) -> Self {
        Mount { src: src.into(), dst: dst.into(), writable: false }
    }

    /// A writable bind mount.
    pub fn writable(src: impl Into<PathBuf>, dst: impl Into<String>) -> Self {
        Mount { src: src.into(), dst: dst.into(), writable: true }
    }
}

/// Everything a sandboxed process gets; nothing else from the host leaks in.
///
/// Always added: a `/tmp` (a fresh tmpfs unless [`SandboxSpec::tmp`] names a host dir), fresh
/// `/proc` and `/dev`, new user/pid/ipc/uts/cgroup namespaces, a new session (no controlling
/// terminal, so no `TIOCSTI` injection), no capabilities, hostname [`HOSTNAME`], stdin from
/// `/dev/null`, and death with the caller. [`SandboxSpec::new`] turns on the seccomp filter and
/// every limit at its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The read-only root file system.
    pub root: RootFs,
    /// Bind mounts, applied parents first whatever their order here.
    pub mounts: Vec<Mount>,
    /// Absolute working directory inside the sandbox.
    pub cwd: String,
    /// The command; `argv[0]` is looked up in the `PATH` of `env` inside the sandbox.
    pub argv: Vec<String>,
    /// The entire environment of the command (nothing is inherited), except that bwrap always
    /// sets `PWD` to [`SandboxSpec::cwd`] (overriding a `PWD` given here).
    pub env: BTreeMap<String, String>,
    /// User id inside the sandbox; see the module docs for the host id it maps to.
    pub uid: u32,
    /// Group id inside the sandbox.
    pub gid: u32,
    /// `false` gives the sandbox its own network namespace with only a loopback interface.
    pub network: bool,
    /// Join this network namespace instead (`network` is then ignored): several sandboxes of one
    /// integration test share one loopback-only namespace. Joining takes `CAP_SYS_ADMIN`, so it
    /// works only when cbuild runs as root (the join happens before bwrap drops to its host uid).
    pub netns: Option<SharedNetns>,
    /// Kill the whole sandbox after this long ([`SandboxOutcome::timed_out`]); `None`: no limit.
    /// [`SandboxSpec::new`] sets [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// How many processes and threads the sandbox may add to those its host uid already runs
    /// (`RLIMIT_NPROC`, see [`DEFAULT_MAX_PROCESSES`]); past it `fork` and `clone` fail with
    /// `EAGAIN` ("Resource temporarily unavailable"). `None`: cbuild's own limit.
    pub max_processes: Option<u64>,
    /// Kill the sandbox once its stdout and stderr together exceed this many bytes
    /// ([`SandboxOutcome::output_limit_exceeded`]); `None`: no limit.
    pub max_output_bytes: Option<u64>,
    /// The largest file a sandboxed process may write (`RLIMIT_FSIZE`; a larger write kills the
    /// writer with `SIGXFSZ`); `None`: cbuild's own limit.
    pub max_file_size: Option<u64>,
    /// Install the seccomp filter ([`seccomp_program`]) and forbid nested user namespaces
    /// (bwrap's `--disable-userns`). On by default; turn it off only to debug a build that
    /// needs a forbidden system call.
    pub seccomp: bool,
    /// A host directory bind-mounted writable at `/tmp` instead of a fresh tmpfs, so that a build
    /// writing much to `/tmp` uses disk rather than memory and several sandboxes of one build can
    /// share it (as the CNB lifecycle shares `/tmp` within one build container). Like a writable
    /// mount source it must be writable by [`host_ids`]`(uid, gid)`.
    pub tmp: Option<PathBuf>,
}

impl SandboxSpec {
    /// A spec running `argv` in `/` as `nobody` (65534:65534), with no mounts, an empty env, no
    /// network, a tmpfs `/tmp`, the seccomp filter, and the default limits ([`DEFAULT_TIMEOUT`],
    /// [`DEFAULT_MAX_PROCESSES`], [`DEFAULT_MAX_OUTPUT_BYTES`], [`DEFAULT_MAX_FILE_SIZE`]).
    pub fn new(root: RootFs, argv: Vec<String>) -> Self {
        SandboxSpec {
            root,
            mounts: Vec::new(),
            cwd: "/".to_owned(),
            argv,
            env: BTreeMap::new(),
            uid: OVERFLOW_ID,
            gid: OVERFLOW_ID,
            network: false,
            netns: None,
            timeout: Some(DEFAULT_TIMEOUT),
            max_processes: Some(DEFAULT_MAX_PROCESSES),
            max_output_bytes: Some(DEFAULT_MAX_OUTPUT_BYTES),
            max_file_size: Some(DEFAULT_MAX_FILE_SIZE),
            seccomp: true,
            tmp: None,
        }
    }
}

/// An open network namespace that sandboxes join ([`SandboxSpec::netns`]). Equal only to itself
/// (its clones): two descriptors of one namespace are different specs.
#[derive(Clone, Debug)]
pub struct SharedNetns(pub std::sync::Arc<OwnedFd>);

impl PartialEq for SharedNetns {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedNetns {}

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error (bubblewrap's own errors also arrive here).
    Stderr,
}

/// One line of output, without its trailing newline; invalid UTF-8 is replaced (U+FFFD).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLine {
    /// Where the line came from.
    pub stream: Stream,
    /// The text.
    pub text: String,
}

/// How a sandboxed command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxOutcome {
    /// The exit code. A command killed by signal `N` inside the sandbox shows up as `128 + N`
    /// (bubblewrap's pid 1 reports it that way).
    pub exit_code: Option<i32>,
    /// The signal that killed the sandbox itself (e.g. 9 after a timeout).
    pub signal: Option<i32>,
    /// Whether [`SandboxSpec::timeout`] expired (the sandbox was then killed).
    pub timed_out: bool,
    /// Whether stdout and stderr together exceeded [`SandboxSpec::max_output_bytes`] (the sandbox
    /// was then killed, and output past the limit dropped).
    pub output_limit_exceeded: bool,
    /// Bytes read from stdout and stderr together.
    pub output_bytes: u64,
    /// Wall-clock time from spawn to exit.
    pub duration: Duration,
}

impl SandboxOutcome {
    /// Exit code 0 within the time and output limits.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.output_limit_exceeded
    }

    /// Why the run failed, as a phrase to put after "the command" or "buildpack `x`" (e.g. "timed
    /// out: killed after running longer than its time limit of 1h"); `None` after [`success`].
    /// `spec` is the spec that ran (for the limits it names).
    ///
    /// [`success`]: SandboxOutcome::success
    pub fn failure_message(&self, spec: &SandboxSpec) -> Option<String> {
        if self.success() {
            return None;
        }
        let limit = |bytes: Option<u64>| bytes.map_or_else(|| "?".to_owned(), human_bytes);
        if self.timed_out {
            let time = spec.timeout.map_or_else(|| "?".to_owned(), human_duration);
            return Some(format!("timed out: killed after running longer than its time limit of {time}"));
        }
        if self.output_limit_exceeded {
            return Some(format!(
                "was killed: its output (stdout and stderr together) exceeded the limit of {}",
                limit(spec.max_output_bytes)
            ));
        }
        Some(match (self.exit_code, self.signal) {
            // bwrap's pid 1 reports a command killed by signal N as 128 + N; a shell does the same.
            (Some(code), _) if code - 128 == libc::SIGXFSZ => format!(
                "exited with status {code}: a process was killed by SIGXFSZ for writing a file larger \
                 than the limit of {}",
                limit(spec.max_file_size)
            ),
            (Some(code), _) if code - 128 == libc::SIGSYS => format!(
                "exited with status {code}: a process was killed by SIGSYS for a system call the \
                 sandbox's seccomp filter forbids (one of a foreign architecture)"
            ),
            (Some(code), _) if code > 128 && code - 128 < 65 => {
                format!("exited with status {code} (a process was killed by signal {})", code - 128)
            }
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "failed".to_owned(),
        })
    }
}

/// `1h`, `90s`, `2min`, `1500ms`: the shortest exact form.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}min", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// `64 MiB`, `16 GiB`, `1000 bytes`: the largest exact binary unit.
fn human_bytes(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// Why a sandbox could not be set up or run (a command that runs and fails is an `Ok` outcome).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// bubblewrap is not installed.
    #[error("bubblewrap (`{BWRAP}`) is not installed\nhint: install bubblewrap: apt-get install bubblewrap")]
    NotInstalled,
    /// bubblewrap exists but cannot build a sandbox on this host.
    #[error("bubblewrap `{path}` cannot create a sandbox here: {message}\nhint: {hint}")]
    Unavailable {
        /// The bwrap binary.
        path: PathBuf,
        /// bwrap's own error output.
        message: String,
        /// What to change.
        hint: String,
    },
    /// The spec is malformed.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// A [`RootFs::Dir`] that cannot be listed.
    #[error("cannot read root file system `{path}`")]
    RootFs {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A mount source that does not exist or cannot be inspected.
    #[error("mount source `{path}` (for `{dst}`) is not accessible")]
    MountSource {
        /// The host path.
        path: PathBuf,
        /// Where it was to be mounted.
        dst: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Starting bwrap failed.
    #[error("cannot start `{path}`")]
    Spawn {
        /// The bwrap binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// bwrap started but failed while building the sandbox (before the command ran).
    #[error("sandbox setup for `{argv0}` failed: {message}\nhint: {hint}")]
    Setup {
        /// The command that was to run.
        argv0: String,
        /// bwrap's error line.
        message: String,
        /// What to check.
        hint: String,
    },
    /// The seccomp filter cannot be built here (an architecture it does not know).
    #[error(
        "cannot build the sandbox's seccomp filter: {0}\nhint: cbuild filters system calls on x86_64 and aarch64 only"
    )]
    Seccomp(String),
    /// Reading output or waiting for the sandbox failed.
    #[error("i/o error while running `{argv0}` in the sandbox")]
    Io {
        /// The command.
        argv0: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Where sandbox ids live on the host when cbuild is root: sandbox id `n` runs as host id
/// `ID_SHIFT + n`, a range no login user has (above systemd's container range 0x00080000–0x6FFFFFFF,
/// below its special 0x7FFE0000+). Mapping the stack's uid (1000 for most stacks) to itself made a
/// local *human* user with uid 1000 the sandbox's equal: able to read and write a running build's
/// `/layers` and the shared build-image roots. Give no local account an id in this range.
pub const ID_SHIFT: u32 = 0x7000_0000;

/// The shift cbuild applies to sandbox ids on this host: [`ID_SHIFT`] when cbuild runs as root
/// (it can then run bwrap as any host id and chown extracted roots), else 0 (the sandbox runs as
/// the caller, who owns everything it extracts).
pub fn id_shift() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        ID_SHIFT
    } else {
        0
    }
}

/// The host uid/gid the sandbox runs as (and that owns files it writes to writable mounts) for a
/// sandbox user `uid:gid`: the caller's own ids if cbuild is not root; otherwise
/// [`ID_SHIFT`]` + uid` and `+ gid` (never host root, never a login user's id). Image roots the
/// sandbox runs in are extracted with the same shift ([`crate::oci::extract::ExtractOptions::id_shift`]),
/// so the stack user owns inside what it owned in the image.
pub fn host_ids(uid: u32, gid: u32) -> (u32, u32) {
    // SAFETY: these libc calls have no preconditions and cannot fail.
    let (euid, real_uid, real_gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
    if euid != 0 {
        return (real_uid, real_gid);
    }
    let shifted = |id: u32| ID_SHIFT.checked_add(id).filter(|h| *h < u32::MAX - 1).unwrap_or(ID_SHIFT + OVERFLOW_ID);
    (shifted(uid), shifted(gid))
}

/// Checks that bubblewrap is installed and can build a sandbox here (it runs `true` in a
/// [`RootFs::Host`] sandbox exactly as [`run`] would, seccomp filter and limits included).
/// Blocking; call it once at startup.
pub fn check_available() -> Result<(), SandboxError> {
    let mut spec = SandboxSpec::new(RootFs::Host, vec!["true".to_owned()]);
    spec.env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    let (bwrap, mut cmd) = bwrap_command(&spec)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let out = cmd.output().map_err(|source| SandboxError::Spawn { path: bwrap.clone(), source })?;
    if out.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let message = if message.is_empty() { format!("exited with {}", out.status) } else { message };
    let hint = namespace_hint(&message);
    Err(SandboxError::Unavailable { path: bwrap, message, hint })
}

/// [`check_available`] once per process: a success is remembered, a failure is not, so a
/// long-running process (`cbuild watch`) sees bubblewrap once it is installed. The scheduler asks
/// only when a sandboxed action failed (is it the action, or the machine?), so a build whose
/// sandboxes work starts no probe (issue 23). Blocking.
pub fn ensure_available() -> Result<(), String> {
    static AVAILABLE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if AVAILABLE.get().is_none() {
        check_available().map_err(|e| e.to_string())?;
        let _ = AVAILABLE.set(());
    }
    Ok(())
}

/// Runs `spec` to completion, handing each output line to `output` as it arrives.
///
/// Dropping the returned future kills the sandbox and every process in it (through its
/// supervisor, see the module doc: bwrap and the sandbox's pid 1 are killed, even in the middle of
/// bwrap's setup, and the kernel kills the rest of the pid namespace with its pid 1), and waits
/// (briefly) until they are gone. The same happens on timeout and once the output exceeds
/// [`SandboxSpec::max_output_bytes`]; when the command exits while background processes (even
/// double-forked daemons) are still running, bwrap exits and its pid 1 dies with it
/// (`--die-with-parent`); this returns once they are gone.
///
/// The parent-death signal ties the supervisor to the spawning *thread*: poll this future on a
/// tokio worker thread (which lives as long as the runtime), not from a short-lived blocking-pool
/// thread.
pub async fn run(spec: &SandboxSpec, output: impl FnMut(OutputLine)) -> Result<SandboxOutcome, SandboxError> {
    run_observed(spec, output, |_| {}).await
}

/// [`run`], handing `started` the sandbox's host pid (its supervisor's) as soon as it is spawned: a caller that checks the
/// sandbox from outside while it runs (a service test joining its network namespace) finds the
/// sandbox's namespaces with [`sandbox_pid`]. The pid is valid only while this future runs.
pub async fn run_observed(
    spec: &SandboxSpec,
    mut output: impl FnMut(OutputLine),
    started: impl FnOnce(u32),
) -> Result<SandboxOutcome, SandboxError> {
    let (bwrap, std_cmd) = bwrap_command(spec)?;
    let argv0 = spec.argv[0].clone();
    let io_err = |source| SandboxError::Io { argv0: argv0.clone(), source };

    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // A terminal's Ctrl-C goes to cbuild alone, which cancels (drops) this future.
        .process_group(0);
    let start = Instant::now();
    let spawned = cmd.spawn();
    // The child has its copies of the memfds; the command (whose pre_exec hook owns ours) can go.
    drop(cmd);
    let mut child = spawned.map_err(|source| SandboxError::Spawn { path: bwrap.clone(), source })?;
    // Declared after `child`, so dropped (killing the sandbox, when this future is dropped) before it.
    let mut killer = Killer(child.id());
    if let Some(pid) = child.id() {
        started(pid);
    }
    let mut stdout = LineReader::new(child.stdout.take().expect("stdout is piped"));
    let mut stderr = LineReader::new(child.stderr.take().expect("stderr is piped"));

    let mut last_stderr: Option<String> = None;
    let mut emit = |stream: Stream, bytes: Vec<u8>| {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if stream == Stream::Stderr {
            last_stderr = Some(text.clone());
        }
        output(OutputLine { stream, text });
    };

    let limit = spec.max_output_bytes;
    // `None`: the output limit was reached while the sandbox still runs.
    let work = async {
        if pump(&mut stdout, &mut stderr, limit, &mut emit).await? == Pumped::OverLimit {
            return Ok(None);
        }
        child.wait().await.map(Some)
    };
    let (finished, timed_out) = match spec.timeout {
        Some(time) => match tokio::time::timeout(time, work).await {
            Ok(finished) => (finished.map_err(io_err)?, false),
            Err(_) => (None, true),
        },
        None => (work.await.map_err(io_err)?, false),
    };
    let output_limit_exceeded = finished.is_none() && !timed_out;
    let status = match finished {
        Some(status) => {
            killer.disarm(); // the supervisor has been reaped: its pid may name another process now
            status
        }
        None => {
            killer.kill();
            let status = child.wait().await;
            killer.disarm();
            let status = status.map_err(io_err)?;
            if timed_out {
                // Keep what was written before the kill; the pipes close once the namespace is gone.
                let drain = pump(&mut stdout, &mut stderr, limit, &mut emit);
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            }
            status
        }
    };
    let outcome = SandboxOutcome {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        output_limit_exceeded,
        output_bytes: stdout.total + stderr.total,
        duration: start.elapsed(),
    };
    // bwrap reports its own setup failures as "bwrap: …" and exit code 1 before the command runs.
    if outcome.exit_code == Some(1) {
        if let Some(message) = last_stderr.and_then(|l| l.strip_prefix("bwrap: ").map(str::to_owned)) {
            let (uid, gid) = host_ids(spec.uid, spec.gid);
            return Err(SandboxError::Setup {
                argv0: spec.argv[0].clone(),
                hint: setup_hint(&message, uid, gid),
                message,
            });
        }
    }
    Ok(outcome)
}

/// Stops a running sandbox through its supervisor (by pid: the [`tokio::process::Child`] stays
/// with its owner), when [`Killer::kill`] is called or at the latest when dropped: the supervisor
/// kills bwrap and everything it started, reaps them and exits.
struct Killer(Option<u32>);

/// How long dropping a running sandbox waits for its supervisor to have killed and reaped
/// everything (a few milliseconds normally); past it the supervisor is killed (`kill_on_drop`).
const KILL_WAIT: Duration = Duration::from_secs(2);

impl Killer {
    /// Forgets the pid; call it as soon as the supervisor has been reaped (its pid may be reused).
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// Asks the supervisor to kill the sandbox (it exits once the sandbox is gone).
    fn kill(&self) {
        let Some(pid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) else { return };
        // SAFETY: kill(2) has no memory-safety preconditions. `pid` is the supervisor, not reaped
        // yet (the owner disarms this once it is), so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        let Some(pid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) else { return };
        self.kill();
        // Wait (without reaping: the Child does that) until the supervisor has ended, so that the
        // sandbox is gone when the future is: a caller may delete its mounts right after.
        let start = Instant::now();
        while start.elapsed() < KILL_WAIT {
            // SAFETY: waitid only writes the siginfo it is given.
            let ended = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let flags = libc::WEXITED | libc::WNOWAIT | libc::WNOHANG;
                libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) != 0 || info.si_pid() != 0
            };
            if ended {
                return;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// The sandbox's first process (its own namespaces: user, pid, net…) of the run whose host pid
/// (its supervisor's) [`run_observed`] reported; `None` while bwrap has not cloned it yet (or
/// after it ended).
pub fn sandbox_pid(supervisor_pid: u32) -> Option<u32> {
    let supervisor = libc::pid_t::try_from(supervisor_pid).ok()?;
    let bwrap = *children_of(supervisor).first()?;
    children_of(bwrap).first().and_then(|p| u32::try_from(*p).ok())
}

/// The children of process `pid`.
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let parse = |s: &str| s.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<libc::pid_t>>();
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return parse(&children);
    }
    // Kernels without CONFIG_PROC_CHILDREN: every process whose parent is `pid`.
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
            ppid == Some(pid)
        })
        .collect()
}

/// The bwrap arguments for `spec` (everything after the program name), as bwrap sees them.
/// Validates the spec and lists [`RootFs::Dir`]; useful for `--explain`-style output and for tests.
///
/// Only the trailing `--` and the command's argv are passed on bwrap's command line; everything
/// before travels through a memfd (`--args`). `--seccomp` is followed by
/// [`SECCOMP_FD_PLACEHOLDER`]: the fd of the filter gets its number when the sandbox starts.
pub fn bwrap_args(spec: &SandboxSpec) -> Result<Vec<OsString>, SandboxError> {
    let mut args = bwrap_options(spec, SECCOMP_FD_PLACEHOLDER.as_ref())?;
    args.push("--".into());
    args.extend(spec.argv.iter().map(OsString::from));
    Ok(args)
}

/// bwrap's options for `spec`: [`bwrap_args`] without the trailing `--` and argv, and with
/// `seccomp_fd` as the number of the filter's fd.
fn bwrap_options(spec: &SandboxSpec, seccomp_fd: &OsStr) -> Result<Vec<OsString>, SandboxError> {
    validate(spec)?;
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&OsStr]| args.extend(items.iter().map(|s| s.to_os_string()));
    let uid = spec.uid.to_string();
    let gid = spec.gid.to_string();
    push(&[
        "--die-with-parent".as_ref(),
        "--new-session".as_ref(),
        "--unshare-user".as_ref(),
        "--unshare-pid".as_ref(),
        "--unshare-ipc".as_ref(),
        "--unshare-uts".as_ref(),
        "--unshare-cgroup-try".as_ref(),
    ]);
    if !spec.network && spec.netns.is_none() {
        push(&["--unshare-net".as_ref()]);
    }
    if spec.seccomp {
        // --disable-userns: user namespaces are closed by the filter and, independently, by a
        // nested namespace whose user.max_user_namespaces is 0.
        push(&["--disable-userns".as_ref(), "--seccomp".as_ref(), seccomp_fd]);
    }
    push(&[
        "--uid".as_ref(),
        uid.as_ref(),
        "--gid".as_ref(),
        gid.as_ref(),
        "--hostname".as_ref(),
        HOSTNAME.as_ref(),
        "--cap-drop".as_ref(),
        "ALL".as_ref(),
        "--clearenv".as_ref(),
    ]);
    for (key, value) in &spec.env {
        push(&["--setenv".as_ref(), key.as_ref(), value.as_ref()]);
    }

    // The sandbox root is bwrap's own tmpfs holding one entry per top-level entry of the image
    // (made read-only at the end), so mount points such as /workspace need not exist in the image.
    for entry in root_entries(&spec.root)? {
        let dst = Path::new("/").join(&entry.name);
        match entry.kind {
            EntryKind::Symlink(target) => push(&["--symlink".as_ref(), target.as_ref(), dst.as_ref()]),
            EntryKind::Bind(src) => push(&["--ro-bind".as_ref(), src.as_ref(), dst.as_ref()]),
        }
    }
    push(&["--proc".as_ref(), "/proc".as_ref(), "--dev".as_ref(), "/dev".as_ref()]);
    match &spec.tmp {
        Some(dir) => push(&["--bind".as_ref(), dir.as_ref(), "/tmp".as_ref()]),
        None => push(&["--tmpfs".as_ref(), "/tmp".as_ref()]),
    }
    let mut mounts: Vec<&Mount> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| Path::new(&m.dst).components().count());
    for m in mounts {
        let flag = if m.writable { "--bind" } else { "--ro-bind" };
        push(&[flag.as_ref(), m.src.as_ref(), m.dst.as_ref()]);
    }
    push(&["--remount-ro".as_ref(), "/".as_ref(), "--chdir".as_ref(), spec.cwd.as_ref()]);
    Ok(args)
}

/// The bwrap command for `spec`, stdio left to the caller: `bwrap --args N -- <argv>`, with the
/// options in a sealed memfd (fd N) and the seccomp program in another, both inherited by bwrap
/// under the numbers they have here; the sandbox's host uid/gid when cbuild is root; an empty
/// environment; and `RLIMIT_NPROC`/`RLIMIT_FSIZE` set before bwrap starts (so they bind bwrap and
/// everything in the sandbox). The command owns the memfds: keep it until it has been spawned.
fn bwrap_command(spec: &SandboxSpec) -> Result<(PathBuf, std::process::Command), SandboxError> {
    let bwrap = bwrap_path().ok_or(SandboxError::NotInstalled)?;
    let spawn_err = |source| SandboxError::Spawn { path: bwrap.clone(), source };
    validate(spec)?;
    let seccomp_fd = match spec.seccomp {
        true => Some(sealed_memfd(c"cbuild-seccomp", seccomp_program()?).map_err(spawn_err)?),
        false => None,
    };
    let seccomp_fd_number = seccomp_fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()).to_string();
    let options = bwrap_options(spec, seccomp_fd_number.as_ref())?;
    let mut data = Vec::new();
    for option in &options {
        let bytes = option.as_bytes();
        // NUL separates the options: one inside an option would split it into two (an injection).
        if bytes.contains(&0) {
            return Err(SandboxError::InvalidSpec(format!("`{}` contains a NUL byte", option.to_string_lossy())));
        }
        data.extend_from_slice(bytes);
        data.push(0);
    }
    let args_fd = sealed_memfd(c"cbuild-bwrap-args", &data).map_err(spawn_err)?;
    let (uid, gid) = host_ids(spec.uid, spec.gid);
    let nproc = spec.max_processes.map(|max| max.saturating_add(tasks_of(uid)));
    let rlimits = [(libc::RLIMIT_NPROC, nproc), (libc::RLIMIT_FSIZE, spec.max_file_size)];
    // SAFETY: getpid has no preconditions and cannot fail.
    let parent = unsafe { libc::getpid() };

    let netns = spec.netns.clone();
    if netns.is_some() && !is_root() {
        return Err(SandboxError::InvalidSpec(
            "joining a shared network namespace needs root (run cbuild as root)".into(),
        ));
    }
    let mut cmd = std::process::Command::new(&bwrap);
    cmd.arg("--args")
        .arg(args_fd.as_raw_fd().to_string())
        .arg("--")
        .args(&spec.argv)
        // bwrap itself runs on the host: nothing of cbuild's env (LD_PRELOAD…) may reach it; the
        // command's env travels as `--setenv` after `--clearenv`.
        .env_clear();
    // With a namespace to join, the hook switches ids itself, after `setns` (std would switch
    // them before the hook runs, and an unprivileged process cannot join).
    if is_root() && netns.is_none() {
        // std also clears supplementary groups (setgroups(0)) when root sets a uid.
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: the hook runs in the forked child before exec (after std set up stdio and switched
    // uid/gid, unless a namespace is joined) and makes only async-signal-safe system calls (setns,
    // setgroups, setgid, setuid, fcntl, getrlimit, setrlimit, and those of `start_supervisor`); it
    // neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(ns) = &netns {
                cvt(libc::setns(ns.0.as_raw_fd(), libc::CLONE_NEWNET))?;
                cvt(libc::setgroups(0, std::ptr::null()))?;
                cvt(libc::setgid(gid))?;
                cvt(libc::setuid(uid))?;
            }
            // The memfds keep their numbers (at least 3, so std's stdio setup left them alone, and
            // ours, so nothing else of std's, like its exec-error pipe, can sit there): clearing
            // close-on-exec hands exactly these two to bwrap, which closes them once read.
            for fd in std::iter::once(&args_fd).chain(&seccomp_fd) {
                cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0))?;
            }
            // A fixed umask: the host's (077 broke detect; 002 made launch layers 0664) must not
            // reach what the sandbox writes. umask(2) cannot fail and is async-signal-safe.
            libc::umask(SANDBOX_UMASK);
            for (resource, limit) in rlimits {
                let Some(limit) = limit else { continue };
                let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                cvt(libc::getrlimit(resource, &mut old))?;
                // Hard limit too, so that nothing in the sandbox can raise it back.
                let new = limit.min(old.rlim_max);
                cvt(libc::setrlimit(resource, &libc::rlimit { rlim_cur: new, rlim_max: new }))?;
            }
            // Last, after the last id change (which would clear the parent-death signal): this
            // process becomes the supervisor and only its child goes on to exec bwrap.
            start_supervisor(parent)
        });
    }
    Ok((bwrap, cmd))
}

/// The signals the supervisor waits for: a child ended (`SIGCHLD`), or stop the sandbox now
/// (`SIGTERM`, from [`Killer`] or as the parent-death signal when cbuild dies; `SIGINT`, `SIGHUP`).
fn supervisor_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset and sigaddset only write the set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// The end of the pre-exec hook (see "The supervisor" in the module doc): turns the process std
/// forked for bwrap into the sandbox's supervisor, which forks once more and never returns. Only
/// in that second child does this return `Ok`, and std goes on to exec bwrap there.
///
/// # Safety
/// Only in a child forked from cbuild, before exec: it makes async-signal-safe system calls only
/// (sigprocmask, sigaction, prctl, getppid, getpid, fork, setpgid, close) and never allocates.
unsafe fn start_supervisor(parent: libc::pid_t) -> io::Result<()> {
    let signals = supervisor_signals();
    let mut old_mask: libc::sigset_t = std::mem::zeroed();
    // Blocked before the parent-death signal is armed, so that it cannot kill the supervisor
    // before the supervisor has killed the sandbox: it waits in `sigwaitinfo` instead.
    cvt(libc::sigprocmask(libc::SIG_BLOCK, &signals, &mut old_mask))?;
    // cbuild's own SIGCHLD handler (tokio's) must not run here, and an ignored SIGCHLD would
    // make the kernel reap children behind `waitpid`'s back.
    let mut default: libc::sigaction = std::mem::zeroed();
    default.sa_sigaction = libc::SIG_DFL;
    cvt(libc::sigaction(libc::SIGCHLD, &default, std::ptr::null_mut()))?;
    cvt(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong))?;
    if libc::getppid() != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH)); // cbuild is already gone
    }
    // Orphans of bwrap (the sandbox's pid 1 when bwrap dies during its setup) become our
    // children, not init's: they cannot escape the kill.
    cvt(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong))?;
    let supervisor = libc::getpid();
    let bwrap = cvt(libc::fork())?;
    if bwrap == 0 {
        // bwrap: dies with the supervisor (which kills it first anyway), in a process group of its
        // own that its pid 1 inherits, with the signal mask std left for the exec.
        cvt(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong))?;
        if libc::getppid() != supervisor {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        cvt(libc::setpgid(0, 0))?;
        cvt(libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()))?;
        return Ok(());
    }
    // Also here, so that the group exists before the supervisor may signal it (one call suffices).
    libc::setpgid(bwrap, bwrap);
    // The supervisor holds no pipe (cbuild reads EOF from bwrap alone: std's exec-error pipe, the
    // sandbox's stdout and stderr) and no memfd.
    close_all_fds();
    let status = supervise(bwrap, &signals);
    exit_as(status)
}

/// Closes every file descriptor of the (supervisor) process.
unsafe fn close_all_fds() {
    if libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) == 0 {
        return;
    }
    // Kernels before 5.9.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let max = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) {
        0 => limit.rlim_cur.min(1 << 16) as libc::c_int,
        _ => 1 << 10,
    };
    for fd in 0..max {
        libc::close(fd);
    }
}

/// The supervisor's life: waits until bwrap ends or a stop signal arrives, then kills everything
/// left and returns bwrap's wait status.
unsafe fn supervise(bwrap: libc::pid_t, signals: &libc::sigset_t) -> libc::c_int {
    let mut status = None;
    'wait: loop {
        loop {
            let mut st = 0;
            let pid = libc::waitpid(-1, &mut st, libc::WNOHANG);
            if pid == bwrap {
                status = Some(st);
                break 'wait;
            }
            if pid <= 0 {
                break;
            }
        }
        // A SIGCHLD that came after `waitpid` is pending (blocked), so this returns at once.
        match libc::sigwaitinfo(signals, std::ptr::null_mut()) {
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP => break,
            _ => {} // SIGCHLD, or interrupted
        }
    }
    kill_all(bwrap, status)
}

/// Kills bwrap (unless it has ended) with its process group, and every child the supervisor has
/// (adopted ones: the sandbox's pid 1, whose death ends its whole pid namespace), until it has no
/// child left. Returns bwrap's wait status.
unsafe fn kill_all(bwrap: libc::pid_t, mut status: Option<libc::c_int>) -> libc::c_int {
    loop {
        // An unreaped child's pid (and so its group's id) cannot name another process.
        let group_is_ours = status.is_none();
        let listed = for_each_child(|pid| {
            libc::kill(pid, libc::SIGKILL);
        });
        // Without a children list (a kernel without CONFIG_PROC_CHILDREN), bwrap's group holds
        // the sandbox's pid 1 even after bwrap is gone; a group with a member keeps its id.
        if group_is_ours || !listed {
            libc::kill(-bwrap, libc::SIGKILL);
        }
        let mut st = 0;
        let pid = libc::waitpid(-1, &mut st, 0);
        if pid == bwrap {
            status = Some(st);
        } else if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break; // ECHILD: nothing left
        }
    }
    status.unwrap_or(libc::SIGKILL)
}

/// Calls `f` with the pid of each child of the calling (single-threaded) process, read from
/// `/proc/thread-self/children` into a stack buffer; `false` when that file cannot be read.
unsafe fn for_each_child(mut f: impl FnMut(libc::pid_t)) -> bool {
    let fd = libc::open(c"/proc/thread-self/children".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 512];
    let mut pid: libc::pid_t = 0;
    let mut digits = false;
    loop {
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b.is_ascii_digit() {
                pid = pid.saturating_mul(10).saturating_add(libc::pid_t::from(b - b'0'));
                digits = true;
            } else if digits {
                f(pid);
                (pid, digits) = (0, false);
            }
        }
    }
    if digits {
        f(pid);
    }
    libc::close(fd);
    true
}

/// Ends the supervisor the way bwrap ended: the same exit code, or the same signal.
unsafe fn exit_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // Dying of SIGSEGV or SIGABRT must not write a core file of the supervisor.
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong);
        libc::setrlimit(libc::RLIMIT_CORE, &libc::rlimit { rlim_cur: 0, rlim_max: 0 });
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &default, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig); // a signal whose default is not to terminate
    }
    libc::_exit(libc::WEXITSTATUS(status))
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A close-on-exec memfd holding `data`, positioned at its start and sealed against any change.
/// Its number is at least 3 even if cbuild was started with stdin, stdout or stderr closed.
fn sealed_memfd(name: &CStr, data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the returned fd is checked and then owned.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let mut fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd.as_raw_fd() < 3 {
        // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor (checked), which is then owned.
        fd = unsafe { OwnedFd::from_raw_fd(cvt(libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3))?) };
    }
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    file.rewind()?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: plain fcntl on a descriptor we own.
    cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(file.into())
}

/// How many tasks (processes and threads: `RLIMIT_NPROC` counts both) host uid `uid` runs now,
/// by real uid as the kernel counts them; 0 where `/proc` does not tell.
fn tasks_of(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut tasks = 0;
    for entry in entries.flatten() {
        if !entry.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let (mut real_uid, mut threads) = (None, 0);
        for line in status.lines() {
            if let Some(ids) = line.strip_prefix("Uid:") {
                real_uid = ids.split_whitespace().next().and_then(|id| id.parse::<u32>().ok());
            } else if let Some(n) = line.strip_prefix("Threads:") {
                threads = n.trim().parse().unwrap_or(1);
            }
        }
        if real_uid == Some(uid) {
            tasks += threads;
        }
    }
    tasks
}

/// The compiled seccomp filter every sandbox gets by default (`bwrap --seccomp`): classic BPF, an
/// array of `struct sock_filter` in native byte order. Modelled on Flatpak's filter:
///
/// * `EPERM`: `unshare`, `setns`, `clone` with any `CLONE_NEW*` flag, `mount`, `umount2`,
///   `pivot_root`, `chroot`; `keyctl`, `add_key`, `request_key`; `bpf`, `perf_event_open`,
///   `userfaultfd`; `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`,
///   `delete_module`; `open_by_handle_at`, `name_to_handle_at`; `swapon`, `swapoff`, `reboot`,
///   `acct`, `quotactl`, `quotactl_fd`, `syslog`, `uselib`; `ioctl` `TIOCSTI` and `TIOCLINUX`
///   (terminal input injection); `personality` other than Linux, Linux32, uname26 and the query;
/// * `ENOSYS` (so that libc falls back to `clone`, whose flags the filter can see): `clone3`, and
///   the new mount API (`open_tree`, `open_tree_attr`, `move_mount`, `fsopen`, `fsconfig`,
///   `fsmount`, `fspick`, `mount_setattr`), and x32 system calls;
/// * kill the process (`SIGSYS`): any system call of another architecture (i386 on x86_64,
///   arm32 on aarch64), whose numbers the filter would misread.
///
/// Not filtered: `ptrace` (sanitizers and debuggers in tests need it; the sandbox can only trace
/// its own processes), NUMA calls, `io_uring`.
pub fn seccomp_program() -> Result<&'static [u8], SandboxError> {
    static PROGRAM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    PROGRAM.get_or_init(compile_seccomp).as_deref().map_err(|e| SandboxError::Seccomp(e.clone()))
}

/// System calls that always fail with `EPERM`.
const DENIED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_syslog,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

/// System calls that always fail with `ENOSYS`: `clone3` (the filter cannot read its flags, which
/// sit in memory; libc then falls back to `clone`) and the new mount API.
const ENOSYS_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_clone3,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // open_tree_attr (Linux 6.15); numbers from 424 up are the same on every architecture.
    467,
];

/// `clone` flags that make a namespace; `clone` with any of them fails with `EPERM`.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

/// `personality` values allowed (Docker's list): PER_LINUX, PER_LINUX32, UNAME26, both, and the
/// query 0xffffffff. ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, other ABIs and the like are refused.
const ALLOWED_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Marks x32 system calls on x86_64 (`__X32_SYSCALL_BIT`): they share the x86_64 audit arch but
/// not its numbers, so a number-based filter must refuse them.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[allow(clippy::unnecessary_cast)] // `Ioctl` is c_ulong on glibc, c_int on musl
fn compile_seccomp() -> Result<Vec<u8>, String> {
    use seccompiler::{
        sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let err = |e: seccompiler::BackendError| e.to_string();
    // Every argument tested is an int or has its bits of interest in the low 32 (Dword): ioctl's
    // cmd and personality's value are `unsigned int` to the kernel, which ignores the high half a
    // caller may set to dodge a 64-bit comparison; the CLONE_NEW* flags are all below 2^32.
    let dword = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(err)
    };

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in DENIED_SYSCALLS {
        rules.insert(nr, Vec::new()); // no conditions: always matches
    }
    // One rule per flag: rules of a system call are OR-ed, conditions of a rule AND-ed.
    let clone = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| SeccompRule::new(vec![dword(0, SeccompCmpOp::MaskedEq(flag as u64), flag as u64)?]).map_err(err))
        .collect::<Result<_, String>>()?;
    rules.insert(libc::SYS_clone, clone);
    let ioctl = [libc::TIOCSTI as u64, libc::TIOCLINUX as u64]
        .into_iter()
        .map(|cmd| SeccompRule::new(vec![dword(1, SeccompCmpOp::Eq, cmd)?]).map_err(err))
        .collect::<Result<_, String>>()?;
    rules.insert(libc::SYS_ioctl, ioctl);
    let personality = ALLOWED_PERSONALITIES
        .iter()
        .map(|&allowed| dword(0, SeccompCmpOp::Ne, allowed))
        .collect::<Result<_, String>>()?;
    rules.insert(libc::SYS_personality, vec![SeccompRule::new(personality).map_err(err)?]);
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch).map_err(err)?;
    // seccompiler's program: kill on a foreign audit arch, then the rules above.
    let rules_program: BpfProgram = filter.try_into().map_err(err)?;

    // A hand-written prefix for what seccompiler cannot say (a second action, a number range). It
    // only ever refuses, so running it before seccompiler's arch check is safe: on a foreign arch
    // a refusal here replaces a kill.
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS: A = seccomp_data[k] (nr at offset 0)
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K: if A == k skip jt, else skip jf
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JA: u16 = 0x05; // BPF_JMP | BPF_JA: skip k
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K: return k
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let mut program = vec![insn(LD_W_ABS, 0, 0, 0)];
    // Test i (from 0) sits at index i + 1, the `ja` at n + 1, the `ret ENOSYS` at n + 2: jumps
    // count from the next instruction, so test i jumps n - i ahead to reach `ret`.
    let tests: Vec<(u16, u32)> =
        std::iter::once((JGE_K, X32_SYSCALL_BIT)).chain(ENOSYS_SYSCALLS.iter().map(|&nr| (JEQ_K, nr as u32))).collect();
    let n = tests.len();
    for (i, (code, k)) in tests.into_iter().enumerate() {
        let jt = u8::try_from(n - i).map_err(|e| e.to_string())?;
        program.push(insn(code, jt, 0, k));
    }
    program.push(insn(JA, 0, 0, 1));
    program.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    program.extend(rules_program);

    let mut bytes = Vec::with_capacity(program.len() * 8);
    for i in &program {
        bytes.extend_from_slice(&i.code.to_ne_bytes());
        bytes.extend_from_slice(&[i.jt, i.jf]);
        bytes.extend_from_slice(&i.k.to_ne_bytes());
    }
    Ok(bytes)
}

fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let invalid = |msg: String| Err(SandboxError::InvalidSpec(msg));
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return invalid("`argv` is empty".to_owned());
    }
    if let Some(arg) = spec.argv.iter().find(|a| a.contains('\0')) {
        return invalid(format!("argument `{}` contains a NUL byte", arg.escape_debug()));
    }
    if !is_clean_absolute(&spec.cwd) {
        return invalid(format!("working directory `{}` is not a clean absolute path", spec.cwd));
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return invalid(format!("environment variable `{}`", key.escape_debug()));
        }
    }
    for m in &spec.mounts {
        if !is_clean_absolute(&m.dst) || m.dst == "/" {
            return invalid(format!("mount destination `{}` is not a clean absolute path below `/`", m.dst));
        }
        std::fs::metadata(&m.src).map_err(|source| SandboxError::MountSource {
            path: m.src.clone(),
            dst: m.dst.clone(),
            source,
        })?;
        check_mount_point(spec, m)?;
    }
    if let Some(tmp) = &spec.tmp {
        let meta = std::fs::metadata(tmp).map_err(|source| SandboxError::MountSource {
            path: tmp.clone(),
            dst: "/tmp".to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return invalid(format!("`tmp` `{}` is not a directory", tmp.display()));
        }
    }
    Ok(())
}

/// bwrap cannot create a mount point inside a read-only bound directory of the root (e.g.
/// `/cnb/buildpacks/x` when the image has `/cnb`), so such a mount point must already exist.
fn check_mount_point(spec: &SandboxSpec, m: &Mount) -> Result<(), SandboxError> {
    let rel = m.dst.trim_start_matches('/');
    let top = rel.split('/').next().unwrap_or_default();
    if rel == top || REPLACED_ROOT_ENTRIES.contains(&top) {
        return Ok(());
    }
    // Another mount covering a parent directory provides (or creates) the mount point.
    let covered = spec.mounts.iter().any(|other| {
        other.dst.len() < m.dst.len() && m.dst.starts_with(&other.dst) && m.dst.as_bytes()[other.dst.len()] == b'/'
    });
    let in_root = match &spec.root {
        RootFs::Host => HOST_ROOT_ENTRIES.contains(&top).then(|| PathBuf::from("/")),
        RootFs::Dir(dir) => Some(dir.clone()),
    };
    let Some(root) = in_root else { return Ok(()) };
    let top_exists = root.join(top).symlink_metadata().is_ok();
    if covered || !top_exists || root.join(rel).symlink_metadata().is_ok() {
        return Ok(());
    }
    Err(SandboxError::InvalidSpec(format!(
        "mount point `{}` does not exist in the read-only root (`/{top}` comes from the root file \
         system); create it in the root file system or mount a parent directory",
        m.dst
    )))
}

fn is_clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('\0')
        && Path::new(path).components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

struct RootEntry {
    name: OsString,
    kind: EntryKind,
}

enum EntryKind {
    Symlink(PathBuf),
    Bind(PathBuf),
}

fn root_entries(root: &RootFs) -> Result<Vec<RootEntry>, SandboxError> {
    let candidates: Vec<(OsString, PathBuf)> = match root {
        RootFs::Host => {
            HOST_ROOT_ENTRIES.iter().map(|name| (OsString::from(name), Path::new("/").join(name))).collect()
        }
        RootFs::Dir(dir) => {
            let err = |source| SandboxError::RootFs { path: dir.clone(), source };
            let mut found = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(err)? {
                let entry = entry.map_err(err)?;
                let name = entry.file_name();
                if REPLACED_ROOT_ENTRIES.iter().any(|r| OsStr::new(r) == name) {
                    continue;
                }
                found.push((name, entry.path()));
            }
            // Sorted so that the arguments (and any error) do not depend on directory order.
            found.sort();
            found
        }
    };
    let mut entries = Vec::new();
    for (name, path) in candidates {
        let Ok(meta) = path.symlink_metadata() else {
            continue; // Host entries that this distribution lacks (e.g. /lib64).
        };
        let kind = if meta.file_type().is_symlink() {
            let target =
                std::fs::read_link(&path).map_err(|source| SandboxError::RootFs { path: path.clone(), source })?;
            EntryKind::Symlink(target)
        } else if meta.is_dir() || meta.is_file() {
            EntryKind::Bind(path)
        } else {
            continue; // Device nodes, sockets or fifos at the top of an image: never needed.
        };
        entries.push(RootEntry { name, kind });
    }
    Ok(entries)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn bwrap_path() -> Option<PathBuf> {
    let default = PathBuf::from(BWRAP);
    if default.is_file() {
        return Some(default);
    }
    let path = crate::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("bwrap")).find(|candidate| candidate.is_file())
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The fix for a host where bwrap cannot create its namespaces.
fn namespace_hint(message: &str) -> String {
    let why = "the sandbox runs as an unprivileged host user (even when cbuild is root), so the \
               host must allow unprivileged user namespaces";
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return format!("{why}: sysctl -w kernel.unprivileged_userns_clone=1");
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return format!("{why}: sysctl -w user.max_user_namespaces=15000");
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return format!(
            "{why}: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor \
             profile for bwrap"
        );
    }
    if message.contains("Operation not permitted") || message.contains("Permission denied") {
        return "inside a container, namespaces need a seccomp/AppArmor profile that allows them \
                (e.g. docker run --security-opt seccomp=unconfined --security-opt \
                apparmor=unconfined), or --privileged"
            .to_owned();
    }
    "check that bubblewrap works: bwrap --unshare-all --ro-bind / / true; reinstall it with \
     apt-get install bubblewrap"
        .to_owned()
}

fn setup_hint(message: &str, uid: u32, gid: u32) -> String {
    if message.contains("Permission denied") {
        format!(
            "the sandbox runs as host uid {uid} (gid {gid}): every mount source and its parent \
             directories must be searchable by it (chmod o+x), writable mounts owned by it \
             (chown {uid}:{gid})"
        )
    } else if message.contains("namespace") || message.contains("uid map") {
        namespace_hint(message)
    } else {
        "check the sandbox spec's mounts and working directory".to_owned()
    }
}

/// How [`pump`] stopped.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// Both streams reached end of file.
    Eof,
    /// More than the limit was read (the rest is not forwarded).
    OverLimit,
}

/// Forwards complete lines of both streams to `emit` until both reach end of file, or until more
/// than `limit` bytes were read from both together.
async fn pump<R1, R2>(
    stdout: &mut LineReader<R1>,
    stderr: &mut LineReader<R2>,
    limit: Option<u64>,
    emit: &mut impl FnMut(Stream, Vec<u8>),
) -> io::Result<Pumped>
where
    R1: AsyncRead + Unpin,
    R2: AsyncRead + Unpin,
{
    loop {
        if limit.is_some_and(|limit| stdout.total + stderr.total > limit) {
            return Ok(Pumped::OverLimit);
        }
        tokio::select! {
            line = stdout.next_line(), if !stdout.done() => {
                if let Some(line) = line? { emit(Stream::Stdout, line) }
            }
            line = stderr.next_line(), if !stderr.done() => {
                if let Some(line) = line? { emit(Stream::Stderr, line) }
            }
            else => return Ok(Pumped::Eof),
        }
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`]. `next_line` is cancel-safe
/// (bytes read stay in `buf`), which `tokio::select!` in [`pump`] relies on.
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    eof: bool,
    /// Bytes read so far (forwarded or still in `buf`).
    total: u64,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(reader: R) -> Self {
        LineReader { reader, buf: Vec::new(), eof: false, total: 0 }
    }

    fn done(&self) -> bool {
        self.eof && self.buf.is_empty()
    }

    async fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.buf.len() >= MAX_LINE_BYTES {
                return Ok(Some(self.buf.drain(..MAX_LINE_BYTES).collect()));
            }
            if self.eof {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            self.buf.reserve(8192);
            match self.reader.read_buf(&mut self.buf).await? {
                0 => self.eof = true,
                n => self.total += n as u64,
            }
        }
    }
}

/// A directory for sandbox scratch dirs that every sandbox user can traverse: the cache directory
/// may sit under a private home (`/root` is 0700), which a sandbox dropped to another uid could not
/// reach. `<tmp>/cbuild-sandbox-<euid>`, mode 0711 (traverse, not list), must be ours and not a
/// symlink; each scratch dir inside is private to the action that made it.
pub fn scratch_root() -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let dir = std::env::temp_dir().join(format!("cbuild-sandbox-{euid}"));
    let err = |source: io::Error| SandboxError::RootFs { path: dir.clone(), source };
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let md = std::fs::symlink_metadata(&dir).map_err(err)?;
    if !md.is_dir() || md.uid() != euid {
        return Err(err(io::Error::other(
            "exists but is not a directory owned by the current user (refusing to use it)",
        )));
    }
    if md.permissions().mode() & 0o7777 != 0o711 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(err)?;
    }
    Ok(dir)
}

/// A fresh private scratch dir `<scratch root>/<prefix><pid>-XXXXXX` for one action, removed when
/// the returned guard drops. The pid in the name lets a later cbuild remove what a killed one
/// (`kill -9`, OOM, power loss) left: the first call in each process sweeps dirs whose process is
/// gone, so an interrupted build cannot fill the disk one sandbox at a time.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, String> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let root = scratch_root().map_err(|e| crate::execution::chain(&e))?;
    SWEPT.call_once(|| sweep_stale_scratch(&root));
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(&root)
        .map_err(|e| format!("cannot create a scratch dir in `{}`: {e}", root.display()))
}

/// Removes scratch dirs named `<word>-<pid>-<random>` whose process no longer exists. Best effort:
/// a dir that cannot be removed now is tried again by the next cbuild.
fn sweep_stale_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = scratch_owner(&name.to_string_lossy()) else { continue };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The pid in a scratch dir name `<word>-<pid>-<random>`, if it has that form.
fn scratch_owner(name: &str) -> Option<u32> {
    let mut parts = name.splitn(3, '-');
    let (word, pid, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_lowercase()) || rest.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// A blocking `bwrap` command for `spec` with the caller's stdin/stdout/stderr left to the caller
/// (`cbuild run`: the developer's terminal). Same isolation, uid handling, seccomp filter and
/// process and file-size limits as [`run`]; the time and output limits are [`run`]'s alone (an
/// interactive server may run for days). Keep the command until it has been spawned: it owns the
/// memfds bwrap reads its options from.
pub fn interactive_command(spec: &SandboxSpec) -> Result<std::process::Command, SandboxError> {
    bwrap_command(spec).map(|(_, cmd)| cmd)
}

impl crate::model::error::Kinded for SandboxError {
    fn kind(&self) -> crate::model::error::ErrorKind {
        use crate::model::error::ErrorKind::*;
        match self {
            SandboxError::InvalidSpec(_) => Internal,
            _ => Environment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(spec: &SandboxSpec) -> Vec<String> {
        bwrap_args(spec).unwrap().into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    fn has_pair(args: &[String], a: &str, b: &str) -> bool {
        args.windows(2).any(|w| w[0] == a && w[1] == b)
    }

    fn host_spec(argv: &[&str]) -> SandboxSpec {
        SandboxSpec::new(RootFs::Host, argv.iter().map(|s| s.to_string()).collect())
    }

    /// The supervisor between cbuild and bwrap exits as bwrap did: with its exit code, or killed
    /// by the same signal; output goes through it unchanged.
    #[tokio::test]
    async fn the_supervisor_forwards_the_exit_code_the_signal_and_the_output() {
        if check_available().is_err() {
            return; // no usable bubblewrap here: the integration tests (tests/it) say so
        }
        let mut spec = host_spec(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
        spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
        let mut lines = Vec::new();
        let outcome = run(&spec, |l| lines.push((l.stream, l.text))).await.unwrap();
        assert_eq!((outcome.exit_code, outcome.signal), (Some(7), None));
        // Two pipes: the order between them is the scheduler's, not the sandbox's.
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.contains(&(Stream::Stdout, "out".to_owned())), "{lines:?}");
        assert!(lines.contains(&(Stream::Stderr, "err".to_owned())), "{lines:?}");

        // bwrap itself killed (SIGTERM, from outside): the supervisor dies of SIGTERM too.
        let mut spec = host_spec(&["sleep", "60"]);
        spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
        let supervisor = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let observed = supervisor.clone();
        let sandbox = run_observed(&spec, |_| {}, move |pid| observed.store(pid, std::sync::atomic::Ordering::SeqCst));
        let kill_bwrap = async {
            loop {
                let pid = supervisor.load(std::sync::atomic::Ordering::SeqCst);
                if pid != 0 && sandbox_pid(pid).is_some() {
                    let bwrap = children_of(pid as libc::pid_t)[0];
                    // SAFETY: kill(2); `bwrap` is a live child of our unreaped child.
                    unsafe { libc::kill(bwrap, libc::SIGTERM) };
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let (outcome, ()) = tokio::join!(sandbox, kill_bwrap);
        let outcome = outcome.unwrap();
        assert_eq!((outcome.exit_code, outcome.signal), (None, Some(libc::SIGTERM)));
    }

    #[test]
    fn isolation_flags_are_always_present() {
        let args = args_of(&host_spec(&["true"]));
        for flag in [
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--clearenv",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        assert!(has_pair(&args, "--cap-drop", "ALL"));
        assert!(has_pair(&args, "--hostname", HOSTNAME));
        assert!(has_pair(&args, "--proc", "/proc"));
        assert!(has_pair(&args, "--dev", "/dev"));
        assert!(has_pair(&args, "--tmpfs", "/tmp"));
        assert!(has_pair(&args, "--remount-ro", "/"));
    }

    #[test]
    fn network_true_keeps_the_host_network() {
        let mut spec = host_spec(&["true"]);
        spec.network = true;
        assert!(!args_of(&spec).iter().any(|a| a == "--unshare-net"));
    }

    #[test]
    fn argv_comes_last_after_double_dash() {
        let spec = host_spec(&["sh", "-c", "--bind / /x"]);
        let args = args_of(&spec);
        let dash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[dash + 1..], ["sh", "-c", "--bind / /x"]);
        assert!(has_pair(&args[..dash], "--chdir", "/"));
    }

    #[test]
    fn env_is_set_after_clearenv() {
        let mut spec = host_spec(&["true"]);
        spec.env.insert("A".into(), "1 2".into());
        let args = args_of(&spec);
        let clear = args.iter().position(|a| a == "--clearenv").unwrap();
        let set = args.iter().position(|a| a == "--setenv").unwrap();
        assert!(clear < set);
        assert_eq!(&args[set..set + 3], ["--setenv", "A", "1 2"]);
    }

    #[test]
    fn uid_and_gid_are_passed() {
        let mut spec = host_spec(&["true"]);
        spec.uid = 1000;
        spec.gid = 1001;
        let args = args_of(&spec);
        assert!(has_pair(&args, "--uid", "1000"));
        assert!(has_pair(&args, "--gid", "1001"));
    }

    #[test]
    fn mounts_are_applied_parents_first_and_before_remount() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = host_spec(&["true"]);
        spec.mounts = vec![Mount::read_only(dir.path(), "/cnb/buildpacks/x/1"), Mount::writable(dir.path(), "/cnb")];
        let args = args_of(&spec);
        let parent = args.iter().position(|a| a == "/cnb").unwrap();
        let child = args.iter().position(|a| a == "/cnb/buildpacks/x/1").unwrap();
        let remount = args.iter().position(|a| a == "--remount-ro").unwrap();
        assert!(parent < child && child < remount);
        assert_eq!(args[parent - 2], "--bind");
        assert_eq!(args[child - 2], "--ro-bind");
    }

    #[test]
    fn host_root_keeps_symlinks_and_skips_missing() {
        let args = args_of(&host_spec(&["true"]));
        for name in HOST_ROOT_ENTRIES {
            let path = Path::new("/").join(name);
            let dst = format!("/{name}");
            match path.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() => {
                    let i = args.iter().position(|a| *a == dst).unwrap();
                    assert_eq!(args[i - 2], "--symlink");
                }
                Ok(_) => assert!(has_pair(&args, &dst, &dst) || args.contains(&dst)),
                Err(_) => assert!(!args.contains(&dst)),
            }
        }
    }

    #[test]
    fn dir_root_binds_entries_and_replaces_proc_dev_tmp() {
        let root = tempfile::tempdir().unwrap();
        for d in ["usr", "etc", "proc", "tmp", "dev"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        let spec = SandboxSpec::new(RootFs::Dir(root.path().into()), vec!["true".into()]);
        let args = args_of(&spec);
        let usr = root.path().join("usr").display().to_string();
        assert!(has_pair(&args, &usr, "/usr"));
        let bin = args.iter().position(|a| a == "/bin").unwrap();
        assert_eq!(args[bin - 2..bin], ["--symlink", "usr/bin"]);
        for replaced in ["proc", "tmp", "dev"] {
            let src = root.path().join(replaced).display().to_string();
            assert!(!args.contains(&src), "{replaced} bound from the image");
        }
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        type Case = (&'static str, Box<dyn Fn(&mut SandboxSpec)>);
        let cases: Vec<Case> = vec![
            ("empty argv", Box::new(|s| s.argv.clear())),
            ("relative cwd", Box::new(|s| s.cwd = "work".into())),
            ("dotdot cwd", Box::new(|s| s.cwd = "/a/../etc".into())),
            (
                "env key with =",
                Box::new(|s| {
                    s.env.insert("A=B".into(), "x".into());
                }),
            ),
            (
                "nul in value",
                Box::new(|s| {
                    s.env.insert("A".into(), "x\0y".into());
                }),
            ),
            ("relative dst", {
                let p = dir.path().to_owned();
                Box::new(move |s| s.mounts.push(Mount::read_only(&p, "workspace")))
            }),
            ("dst is /", {
                let p = dir.path().to_owned();
                Box::new(move |s| s.mounts.push(Mount::writable(&p, "/")))
            }),
            ("dotdot dst", {
                let p = dir.path().to_owned();
                Box::new(move |s| s.mounts.push(Mount::writable(&p, "/w/../etc")))
            }),
            ("mount point inside read-only /etc", {
                let p = dir.path().to_owned();
                Box::new(move |s| s.mounts.push(Mount::writable(&p, "/etc/no-such-dir-here")))
            }),
        ];
        for (name, edit) in cases {
            let mut spec = host_spec(&["true"]);
            edit(&mut spec);
            assert!(matches!(bwrap_args(&spec), Err(SandboxError::InvalidSpec(_))), "{name} accepted");
        }
    }

    #[test]
    fn missing_mount_source_names_the_path() {
        let mut spec = host_spec(&["true"]);
        spec.mounts.push(Mount::read_only("/nonexistent/cbuild-src", "/workspace"));
        let err = bwrap_args(&spec).unwrap_err();
        assert!(matches!(err, SandboxError::MountSource { .. }));
        assert!(err.to_string().contains("`/nonexistent/cbuild-src`"), "{err}");
    }

    #[test]
    fn missing_root_dir_is_an_error() {
        let spec = SandboxSpec::new(RootFs::Dir("/nonexistent/cbuild-root".into()), vec!["true".into()]);
        let err = bwrap_args(&spec).unwrap_err();
        assert!(err.to_string().contains("`/nonexistent/cbuild-root`"), "{err}");
    }

    #[test]
    fn host_ids_never_map_to_root_when_root() {
        let (uid, gid) = host_ids(0, 0);
        assert_ne!(uid, 0);
        assert_ne!(gid, 0);
        if is_root() {
            assert_eq!(host_ids(1000, 1001), (ID_SHIFT + 1000, ID_SHIFT + 1001));
            assert_eq!(host_ids(0, 5), (ID_SHIFT, ID_SHIFT + 5));
        }
    }

    #[test]
    fn not_installed_error_has_a_hint() {
        let msg = SandboxError::NotInstalled.to_string();
        assert!(msg.contains("hint: install bubblewrap: apt-get install bubblewrap"), "{msg}");
    }

    async fn lines_of(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = LineReader::new(input);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            lines.push(line);
        }
        assert!(reader.done());
        lines
    }

    #[tokio::test]
    async fn line_reader_splits_lines_and_keeps_the_unterminated_tail() {
        assert_eq!(lines_of(b"a\n\nb\nc").await, [&b"a"[..], b"", b"b", b"c"]);
        assert!(lines_of(b"").await.is_empty());
        assert_eq!(lines_of(b"x\n").await, [b"x"]);
    }

    #[tokio::test]
    async fn line_reader_splits_overlong_lines() {
        let input = vec![b'z'; MAX_LINE_BYTES * 2 + 3];
        let lines = lines_of(&input).await;
        let lens: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(lens, [MAX_LINE_BYTES, MAX_LINE_BYTES, 3]);
    }

    #[tokio::test]
    async fn run_streams_both_streams_and_returns_the_exit_code() {
        let mut spec = host_spec(&["sh", "-c", "echo out; echo err >&2; printf tail; exit 3"]);
        spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
        let mut lines = Vec::new();
        let outcome = run(&spec, |l| lines.push(l)).await.unwrap();
        assert_eq!(outcome.exit_code, Some(3));
        assert!(!outcome.timed_out && outcome.signal.is_none());
        let of =
            |s: Stream| -> Vec<String> { lines.iter().filter(|l| l.stream == s).map(|l| l.text.clone()).collect() };
        assert_eq!(of(Stream::Stdout), ["out", "tail"]);
        assert_eq!(of(Stream::Stderr), ["err"]);
    }

    #[test]
    fn scratch_dirs_of_dead_processes_are_swept() {
        assert_eq!(scratch_owner("genrule-123-abc"), Some(123));
        assert_eq!(scratch_owner("rootfs"), None);
        assert_eq!(scratch_owner(".tmp-123-x"), None);
        assert_eq!(scratch_owner("genrule-12x-abc"), None);
        let root = tempfile::tempdir().unwrap();
        // A pid far above pid_max (2^22) belongs to no process.
        let dead = root.path().join("build-99999999-aaaa");
        let alive = root.path().join(format!("build-{}-bbbb", std::process::id()));
        let other = root.path().join("rootfs");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        sweep_stale_scratch(root.path());
        assert!(!dead.exists() && alive.exists() && other.exists());
    }

    #[tokio::test]
    async fn run_reports_bwrap_setup_failures_as_errors() {
        let mut spec = host_spec(&["true"]);
        spec.cwd = "/no/such/dir".into();
        let err = run(&spec, |_| {}).await.unwrap_err();
        assert!(matches!(err, SandboxError::Setup { .. }), "{err}");
        assert!(err.to_string().contains("/no/such/dir"), "{err}");
    }

    #[test]
    fn new_specs_get_the_default_limits_and_the_filter() {
        let spec = host_spec(&["true"]);
        assert_eq!(spec.timeout, Some(DEFAULT_TIMEOUT));
        assert_eq!(spec.max_processes, Some(DEFAULT_MAX_PROCESSES));
        assert_eq!(spec.max_output_bytes, Some(DEFAULT_MAX_OUTPUT_BYTES));
        assert_eq!(spec.max_file_size, Some(DEFAULT_MAX_FILE_SIZE));
        assert!(spec.seccomp);
        assert_eq!(spec.tmp, None);
    }

    #[test]
    fn command_line_holds_only_the_args_fd_and_the_argv() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = host_spec(&["sleep", "1"]);
        spec.env.insert("CBUILD_SECRET_NAME".into(), "hunter2-value".into());
        spec.mounts.push(Mount::writable(dir.path(), "/layers"));
        let (_, cmd) = bwrap_command(&spec).unwrap();
        let args: Vec<&str> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args[0], "--args");
        assert!(args[1].parse::<i32>().unwrap() >= 3, "{args:?}");
        assert_eq!(args[2..], ["--", "sleep", "1"]);
        assert_eq!(cmd.get_envs().count(), 0, "bwrap gets an empty environment");
        // The options themselves are all still there, for bwrap to read from the memfd.
        let options = args_of(&spec);
        assert!(has_pair(&options, "CBUILD_SECRET_NAME", "hunter2-value"));
        assert!(options.contains(&dir.path().display().to_string()));
    }

    #[test]
    fn nul_bytes_in_options_are_rejected() {
        use std::os::unix::ffi::OsStringExt;
        let mut spec = host_spec(&["true"]);
        spec.tmp = Some(PathBuf::from(OsString::from_vec(b"/tmp\0--bind".to_vec())));
        assert!(bwrap_command(&spec).is_err());
    }

    #[test]
    fn seccomp_flag_adds_the_filter_and_disable_userns() {
        let mut spec = host_spec(&["true"]);
        let args = args_of(&spec);
        assert!(has_pair(&args, "--seccomp", SECCOMP_FD_PLACEHOLDER));
        assert!(args.iter().any(|a| a == "--disable-userns"));
        spec.seccomp = false;
        let args = args_of(&spec);
        assert!(!args.iter().any(|a| a == "--seccomp" || a == "--disable-userns"));
    }

    #[test]
    fn tmp_dir_replaces_the_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = host_spec(&["true"]);
        spec.tmp = Some(dir.path().to_owned());
        let args = args_of(&spec);
        assert!(has_pair(&args, &dir.path().display().to_string(), "/tmp"));
        assert!(!args.iter().any(|a| a == "--tmpfs"));
        spec.tmp = Some(dir.path().join("missing"));
        assert!(matches!(bwrap_args(&spec), Err(SandboxError::MountSource { .. })));
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        spec.tmp = Some(file);
        assert!(matches!(bwrap_args(&spec), Err(SandboxError::InvalidSpec(_))));
    }

    #[test]
    fn failure_messages_name_the_limit() {
        let spec = host_spec(&["true"]);
        let ok = SandboxOutcome {
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            output_limit_exceeded: false,
            output_bytes: 0,
            duration: Duration::ZERO,
        };
        assert_eq!(ok.failure_message(&spec), None);
        let msg = |o: SandboxOutcome| o.failure_message(&spec).unwrap();
        assert_eq!(
            msg(SandboxOutcome { exit_code: None, signal: Some(9), timed_out: true, ..ok.clone() }),
            "timed out: killed after running longer than its time limit of 1h"
        );
        let out = msg(SandboxOutcome { exit_code: None, signal: Some(9), output_limit_exceeded: true, ..ok.clone() });
        assert!(out.contains("exceeded the limit of 64 MiB"), "{out}");
        let fsize = msg(SandboxOutcome { exit_code: Some(128 + libc::SIGXFSZ), ..ok.clone() });
        assert!(fsize.contains("SIGXFSZ") && fsize.contains("16 GiB"), "{fsize}");
        assert_eq!(msg(SandboxOutcome { exit_code: Some(3), ..ok.clone() }), "exited with status 3");
        assert!(msg(SandboxOutcome { exit_code: Some(137), ..ok.clone() }).contains("signal 9"));
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(120)), "2min");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(human_bytes(3 << 10), "3 KiB");
    }

    #[tokio::test]
    async fn pump_stops_past_the_output_limit() {
        let big = vec![b'x'; 100_000];
        let mut stdout = LineReader::new(&big[..]);
        let mut stderr = LineReader::new(&b"err\n"[..]);
        let mut lines = 0;
        let pumped = pump(&mut stdout, &mut stderr, Some(10_000), &mut |_, _| lines += 1).await.unwrap();
        assert_eq!(pumped, Pumped::OverLimit);
        assert!(stdout.total + stderr.total > 10_000 && lines < 5);
        let (mut a, mut b) = (LineReader::new(&b"a\nb\n"[..]), LineReader::new(&b""[..]));
        assert_eq!(pump(&mut a, &mut b, Some(4), &mut |_, _| {}).await.unwrap(), Pumped::Eof);
    }

    /// `struct seccomp_data` for the BPF interpreter below.
    struct SyscallData {
        nr: u32,
        arch: u32,
        args: [u64; 6],
    }

    #[cfg(target_arch = "x86_64")]
    const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

    /// Runs a classic-BPF seccomp program (the opcodes seccompiler and the prefix use) the way the
    /// kernel does, returning its verdict.
    fn verdict(program: &[u8], call: &SyscallData) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&call.nr.to_ne_bytes());
        data[4..8].copy_from_slice(&call.arch.to_ne_bytes());
        for (i, arg) in call.args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        let insns: Vec<(u16, u8, u8, u32)> = program
            .chunks_exact(8)
            .map(|c| (u16::from_ne_bytes([c[0], c[1]]), c[2], c[3], u32::from_ne_bytes([c[4], c[5], c[6], c[7]])))
            .collect();
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let (code, jt, jf, k) = insns[pc];
            pc += 1;
            let jump = |cond: bool| if cond { jt as usize } else { jf as usize };
            match code {
                0x20 => a = u32::from_ne_bytes(data[k as usize..k as usize + 4].try_into().unwrap()),
                0x54 => a &= k,
                0x05 => pc += k as usize,
                0x15 => pc += jump(a == k),
                0x25 => pc += jump(a > k),
                0x35 => pc += jump(a >= k),
                0x45 => pc += jump(a & k != 0),
                0x06 => return k,
                _ => panic!("unexpected BPF opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    #[test]
    #[allow(clippy::unnecessary_cast)] // `Ioctl` is c_ulong on glibc, c_int on musl
    fn seccomp_program_denies_what_it_should_and_nothing_else() {
        let program = seccomp_program().unwrap();
        assert_eq!(program.len() % 8, 0);
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let allow = libc::SECCOMP_RET_ALLOW;
        let call = |nr: libc::c_long, args: &[u64]| {
            let mut all = [0u64; 6];
            all[..args.len()].copy_from_slice(args);
            verdict(program, &SyscallData { nr: nr as u32, arch: NATIVE_ARCH, args: all })
        };
        let sigchld = libc::SIGCHLD as u64;
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        // Ordinary system calls.
        for nr in [libc::SYS_getpid, libc::SYS_read, libc::SYS_execve, libc::SYS_wait4, libc::SYS_prctl] {
            assert_eq!(call(nr, &[]), allow, "syscall {nr}");
        }
        assert_eq!(call(libc::SYS_clone, &[sigchld]), allow, "fork");
        assert_eq!(call(libc::SYS_clone, &[thread_flags]), allow, "pthread_create");
        assert_eq!(call(libc::SYS_ioctl, &[1, libc::TCGETS as u64]), allow);
        for persona in [0, 8, 0xffff_ffff] {
            assert_eq!(call(libc::SYS_personality, &[persona]), allow, "personality {persona:#x}");
        }
        // Namespaces: every CLONE_NEW* flag, alone or among others.
        for &flag in NAMESPACE_FLAGS {
            assert_eq!(call(libc::SYS_clone, &[flag as u64 | sigchld]), eperm, "clone {flag:#x}");
            assert_eq!(call(libc::SYS_clone, &[flag as u64 | thread_flags]), eperm, "clone {flag:#x}");
        }
        for &nr in DENIED_SYSCALLS {
            assert_eq!(call(nr, &[]), eperm, "syscall {nr}");
        }
        for &nr in ENOSYS_SYSCALLS {
            assert_eq!(call(nr, &[]), enosys, "syscall {nr}");
        }
        // Terminal injection, also with high bits the kernel ignores (CVE-2019-10063).
        for cmd in [libc::TIOCSTI as u64, libc::TIOCLINUX as u64, libc::TIOCSTI as u64 | 1 << 32] {
            assert_eq!(call(libc::SYS_ioctl, &[0, cmd]), eperm, "ioctl {cmd:#x}");
        }
        for persona in [0x0040000 /* ADDR_NO_RANDOMIZE */, 0x0400000 /* READ_IMPLIES_EXEC */, 0x10] {
            assert_eq!(call(libc::SYS_personality, &[persona]), eperm, "personality {persona:#x}");
        }
        // x32 numbers (x86_64's audit arch, other numbers) and foreign architectures.
        assert_eq!(call(X32_SYSCALL_BIT as libc::c_long | libc::SYS_unshare, &[]), enosys);
        let i386 = SyscallData { nr: 310, arch: 0x4000_0003, args: [0; 6] };
        assert_eq!(verdict(program, &i386), libc::SECCOMP_RET_KILL_PROCESS);
        let arm = SyscallData { nr: 20, arch: 0x4000_0028, args: [0; 6] };
        assert_eq!(verdict(program, &arm), libc::SECCOMP_RET_KILL_PROCESS);
    }
}
