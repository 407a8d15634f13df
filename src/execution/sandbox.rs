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

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Where bubblewrap is looked for first; `PATH` is searched after it.
pub const BWRAP: &str = "/usr/bin/bwrap";

/// The hostname every sandbox gets (fixed so that outputs cannot depend on the build machine).
pub const HOSTNAME: &str = "cbuild-sandbox";

/// The host uid/gid a sandbox that asks for uid or gid 0 runs as when cbuild is root ("nobody").
pub const OVERFLOW_ID: u32 = 65534;

/// Longest line handed to the output callback; longer runs are split (binary output, progress bars).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

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
/// Always added: a tmpfs at `/tmp`, fresh `/proc` and `/dev`, new user/pid/ipc/uts/cgroup
/// namespaces, a new session (no controlling terminal, so no `TIOCSTI` injection), no
/// capabilities, hostname [`HOSTNAME`], stdin from `/dev/null`, and death with the caller.
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
    /// Kill the whole sandbox after this long.
    pub timeout: Option<Duration>,
}

impl SandboxSpec {
    /// A spec running `argv` in `/` as `nobody` (65534:65534), with no mounts, an empty env, no
    /// network and no timeout.
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
            timeout: None,
        }
    }
}

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
    /// Wall-clock time from spawn to exit.
    pub duration: Duration,
}

impl SandboxOutcome {
    /// Exit code 0 within the time limit.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
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

/// The host uid/gid the sandbox runs as (and that owns files it writes to writable mounts) for a
/// sandbox user `uid:gid`: the caller's own ids if cbuild is not root; otherwise `uid:gid`, with 0
/// replaced by [`OVERFLOW_ID`] so that the sandbox never holds host root's file permissions.
pub fn host_ids(uid: u32, gid: u32) -> (u32, u32) {
    // SAFETY: these libc calls have no preconditions and cannot fail.
    let (euid, real_uid, real_gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
    if euid != 0 {
        return (real_uid, real_gid);
    }
    let nonzero = |id: u32| if id == 0 { OVERFLOW_ID } else { id };
    (nonzero(uid), nonzero(gid))
}

/// Checks that bubblewrap is installed and can build a sandbox here (it runs `true` in a
/// [`RootFs::Host`] sandbox exactly as [`run`] would). Blocking; call it once at startup.
pub fn check_available() -> Result<(), SandboxError> {
    let bwrap = bwrap_path().ok_or(SandboxError::NotInstalled)?;
    let mut spec = SandboxSpec::new(RootFs::Host, vec!["true".to_owned()]);
    spec.env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    let args = bwrap_args(&spec)?;
    let mut cmd = std::process::Command::new(&bwrap);
    cmd.args(&args).env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    if is_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = host_ids(spec.uid, spec.gid);
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().map_err(|source| SandboxError::Spawn { path: bwrap.clone(), source })?;
    if out.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let message = if message.is_empty() { format!("exited with {}", out.status) } else { message };
    let hint = namespace_hint(&message);
    Err(SandboxError::Unavailable { path: bwrap, message, hint })
}

/// Runs `spec` to completion, handing each output line to `output` as it arrives.
///
/// Dropping the returned future kills the sandbox and every process in it: bwrap is spawned with
/// `kill_on_drop`, its pid-1 child dies with it (`--die-with-parent`), and the kernel kills the rest
/// of the pid namespace with its pid 1. The same happens when the command exits while background
/// processes (even double-forked daemons) are still running, and on timeout.
///
/// `--die-with-parent` ties bwrap to the spawning *thread*: poll this future on a tokio worker
/// thread (which lives as long as the runtime), not from a short-lived blocking-pool thread.
pub async fn run(spec: &SandboxSpec, mut output: impl FnMut(OutputLine)) -> Result<SandboxOutcome, SandboxError> {
    let bwrap = bwrap_path().ok_or(SandboxError::NotInstalled)?;
    let args = bwrap_args(spec)?;
    let argv0 = spec.argv[0].clone();
    let io_err = |source| SandboxError::Io { argv0: argv0.clone(), source };

    let mut cmd = tokio::process::Command::new(&bwrap);
    cmd.args(&args)
        // bwrap itself runs on the host: nothing of the spec's env (LD_PRELOAD…) may reach it; the
        // command's env travels as `--setenv` after `--clearenv`.
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // A terminal's Ctrl-C goes to cbuild alone, which cancels (drops) this future.
        .process_group(0);
    if is_root() {
        // std also clears supplementary groups (setgroups(0)) when root sets a uid.
        let (uid, gid) = host_ids(spec.uid, spec.gid);
        cmd.uid(uid).gid(gid);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| SandboxError::Spawn { path: bwrap.clone(), source })?;
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

    let work = async {
        pump(&mut stdout, &mut stderr, &mut emit).await?;
        child.wait().await
    };
    let finished = match spec.timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.ok(),
        None => Some(work.await),
    };
    let (status, timed_out) = match finished {
        Some(status) => (status.map_err(io_err)?, false),
        None => {
            // Killing bwrap kills its pid 1 (`--die-with-parent`) and with it the namespace.
            let _ = child.start_kill();
            let status = child.wait().await.map_err(io_err)?;
            // Keep what was written before the kill; the pipes close once the namespace is gone.
            let _ = tokio::time::timeout(Duration::from_secs(2), pump(&mut stdout, &mut stderr, &mut emit)).await;
            (status, true)
        }
    };
    let outcome =
        SandboxOutcome { exit_code: status.code(), signal: status.signal(), timed_out, duration: start.elapsed() };
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

/// The bwrap arguments for `spec` (everything after the program name). Validates the spec and
/// lists [`RootFs::Dir`]; useful for `--explain`-style output and for tests.
pub fn bwrap_args(spec: &SandboxSpec) -> Result<Vec<OsString>, SandboxError> {
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
    if !spec.network {
        push(&["--unshare-net".as_ref()]);
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
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
    ]);
    let mut mounts: Vec<&Mount> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| Path::new(&m.dst).components().count());
    for m in mounts {
        let flag = if m.writable { "--bind" } else { "--ro-bind" };
        push(&[flag.as_ref(), m.src.as_ref(), m.dst.as_ref()]);
    }
    push(&["--remount-ro".as_ref(), "/".as_ref(), "--chdir".as_ref(), spec.cwd.as_ref(), "--".as_ref()]);
    args.extend(spec.argv.iter().map(OsString::from));
    Ok(args)
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
    let path = std::env::var_os("PATH")?;
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

/// Forwards complete lines of both streams to `emit` until both reach end of file.
async fn pump<R1, R2>(
    stdout: &mut LineReader<R1>,
    stderr: &mut LineReader<R2>,
    emit: &mut impl FnMut(Stream, Vec<u8>),
) -> io::Result<()>
where
    R1: AsyncRead + Unpin,
    R2: AsyncRead + Unpin,
{
    loop {
        tokio::select! {
            line = stdout.next_line(), if !stdout.done() => {
                if let Some(line) = line? { emit(Stream::Stdout, line) }
            }
            line = stderr.next_line(), if !stderr.done() => {
                if let Some(line) = line? { emit(Stream::Stderr, line) }
            }
            else => return Ok(()),
        }
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE_BYTES`]. `next_line` is cancel-safe
/// (bytes read stay in `buf`), which `tokio::select!` in [`pump`] relies on.
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(reader: R) -> Self {
        LineReader { reader, buf: Vec::new(), eof: false }
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
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
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
        let cases: Vec<(&str, Box<dyn Fn(&mut SandboxSpec)>)> = vec![
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
            assert_eq!(host_ids(1000, 1001), (1000, 1001));
            assert_eq!(host_ids(0, 5), (OVERFLOW_ID, 5));
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
/// (`cbuild run`: the developer's terminal). Same isolation and uid handling as [`run`].
pub fn interactive_command(spec: &SandboxSpec) -> Result<std::process::Command, SandboxError> {
    let bwrap = bwrap_path().ok_or(SandboxError::NotInstalled)?;
    let args = bwrap_args(spec)?;
    let mut cmd = std::process::Command::new(&bwrap);
    cmd.args(&args).env_clear();
    if is_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = host_ids(spec.uid, spec.gid);
        cmd.uid(uid).gid(gid);
    }
    Ok(cmd)
}
