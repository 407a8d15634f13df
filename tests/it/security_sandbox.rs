//! Hardening of `cbuild::execution::sandbox` against the real bubblewrap: nothing secret on a
//! command line, the seccomp filter (nested user namespaces, mounts, other forbidden system calls),
//! and the limits (time, output, processes, file size), plus the optional host `/tmp`.
//!
//! The sandboxes run on [`RootFs::Host`] (the host's `/usr`, with util-linux, coreutils and perl).

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cbuild::execution::sandbox::{self, run, Mount, RootFs, SandboxOutcome, SandboxSpec, Stream};

const UID: u32 = 1000;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `sh -c script` on the host's root file system as uid 1000, with a 60 s timeout.
fn spec(script: &str) -> SandboxSpec {
    let mut spec = SandboxSpec::new(RootFs::Host, vec!["sh".into(), "-c".into(), script.into()]);
    spec.uid = UID;
    spec.gid = UID;
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    spec.timeout = Some(Duration::from_secs(60));
    spec
}

struct Ran {
    outcome: SandboxOutcome,
    stdout: String,
    stderr: String,
}

async fn run_collect(spec: &SandboxSpec) -> Ran {
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let outcome = run(spec, |line| {
        let out = if line.stream == Stream::Stdout { &mut stdout } else { &mut stderr };
        out.push_str(&line.text);
        out.push('\n');
    })
    .await
    .unwrap_or_else(|e| panic!("sandbox failed: {}", chain(&e)));
    Ran { outcome, stdout, stderr }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// The NUL-separated command line of a process.
fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Pids of processes whose command line contains the argument `marker`.
fn pids_with_arg(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && cmdline(pid).iter().any(|a| a == marker) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits up to 5 s for every process with argument `marker` to be gone.
async fn assert_none_left(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = pids_with_arg(marker);
        if left.is_empty() {
            break;
        }
        let describe = |pid: u32| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let keep = |l: &&str| ["Name:", "State:", "PPid:", "Uid:"].iter().any(|k| l.starts_with(k));
            format!("{pid} {:?}: {}", cmdline(pid), status.lines().filter(keep).collect::<Vec<_>>().join(", "))
        };
        let left: Vec<String> = left.into_iter().map(describe).collect();
        assert!(Instant::now() < deadline, "processes with `{marker}` outlived the sandbox: {left:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A marker argument no other test (or process) uses: `sleep` takes it as a number of seconds.
fn marker(seconds: u32) -> String {
    format!("{seconds}.{}", std::process::id())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn cmdline_has_no_paths_or_env() {
    let layers = tempfile::tempdir().unwrap();
    std::fs::set_permissions(layers.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sleep_arg = marker(301);
    let mut spec = SandboxSpec::new(RootFs::Host, vec!["sleep".into(), sleep_arg.clone()]);
    spec.env = BTreeMap::from([
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ("CBUILD_TEST_TOKEN".to_owned(), "s3cr3t-value-in-env".to_owned()),
    ]);
    spec.mounts.push(Mount::read_only(layers.path(), "/layers"));
    spec.timeout = Some(Duration::from_secs(30));
    let forbidden: Vec<String> = vec![
        "CBUILD_TEST_TOKEN".into(),
        "s3cr3t-value-in-env".into(),
        "/usr/bin:/bin".into(),
        layers.path().display().to_string(),
        "/layers".into(),
        "--setenv".into(),
        "--bind".into(),
        "--ro-bind".into(),
    ];

    let task = tokio::spawn({
        let spec = spec.clone();
        async move { run(&spec, |_| {}).await }
    });
    // The outer bwrap is the child of our child (the sandbox's supervisor, a fork of this
    // process); bwrap's child (the sandbox's pid 1) and `sleep` carry the same argv tail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let bwrap = loop {
        let ours = pids_with_arg(&sleep_arg)
            .into_iter()
            .find(|&p| parent_of(p).and_then(parent_of) == Some(std::process::id()));
        if let Some(pid) = ours {
            break pid;
        }
        assert!(Instant::now() < deadline, "bwrap did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let argv = cmdline(bwrap);
    assert!(argv[0].ends_with("bwrap"), "{argv:?}");
    assert_eq!(argv[1], "--args", "{argv:?}");
    assert!(argv[2].parse::<u32>().is_ok_and(|fd| fd >= 3), "{argv:?}");
    assert_eq!(argv[3..], ["--", "sleep", sleep_arg.as_str()], "{argv:?}");
    // Every process of the sandbox that the host can see: bwrap, its pid 1, and `sleep`.
    for pid in pids_with_arg(&sleep_arg) {
        let argv = cmdline(pid);
        for bad in &forbidden {
            assert!(!argv.iter().any(|a| a.contains(bad.as_str())), "`{bad}` on the command line of {pid}: {argv:?}");
        }
    }
    // bwrap itself got no environment.
    let environ = std::fs::read(format!("/proc/{bwrap}/environ")).unwrap();
    assert!(environ.is_empty(), "bwrap's environment: {}", String::from_utf8_lossy(&environ));

    task.abort();
    let _ = task.await;
    assert_none_left(&sleep_arg).await;
}

/// Cancelling a run at any moment, even in the middle of bwrap's setup (before the sandbox's pid 1
/// asks to die with bwrap), leaves nothing running: otherwise the sandbox would go on without its
/// time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_during_setup_leaves_nothing_behind() {
    let sleep_arg = marker(303);
    let mut spec = SandboxSpec::new(RootFs::Host, vec!["sleep".into(), sleep_arg.clone()]);
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    for round in 0..30u64 {
        let task = tokio::spawn({
            let spec = spec.clone();
            async move { run(&spec, |_| {}).await }
        });
        // From "bwrap not started yet" through its setup to "the command runs".
        tokio::time::sleep(Duration::from_micros(round * round * 40)).await;
        task.abort();
        let _ = task.await;
    }
    assert_none_left(&sleep_arg).await;
}

#[tokio::test]
async fn no_bwrap_fd_leaks_into_the_sandbox() {
    let ran = run_collect(&spec("ls -l /proc/$$/fd /proc/self/fd")).await;
    assert!(ran.outcome.success(), "{}{}", ran.stdout, ran.stderr);
    assert!(!ran.stdout.contains("memfd"), "{}", ran.stdout);
}

#[tokio::test]
async fn seccomp_filter_is_installed() {
    let ran = run_collect(&spec("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")).await;
    assert!(ran.stdout.contains("Seccomp:\t2"), "{}", ran.stdout);
    assert!(ran.stdout.contains("NoNewPrivs:\t1"), "{}", ran.stdout);
    let mut off = spec("grep '^Seccomp:' /proc/self/status");
    off.seccomp = false;
    let ran = run_collect(&off).await;
    assert!(ran.stdout.contains("Seccomp:\t0"), "{}", ran.stdout);
}

#[tokio::test]
async fn nested_userns_is_denied() {
    let script = "unshare --user --map-root-user id -u 2>&1; echo \"rc=$?\"";
    let ran = run_collect(&spec(script)).await;
    assert!(ran.stdout.contains("Operation not permitted"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("rc=0"), "{}", ran.stdout);
    // The control: without the filter (and --disable-userns) the same host allows it, so the
    // denial above is the filter's doing.
    let mut off = spec(script);
    off.seccomp = false;
    let ran = run_collect(&off).await;
    assert!(ran.stdout.contains("0\nrc=0"), "nested user namespaces fail even unfiltered: {}", ran.stdout);
}

#[tokio::test]
async fn mount_is_denied() {
    let script = "mount -t tmpfs none /tmp 2>&1; echo \"plain rc=$?\"; \
                  unshare --user --map-root-user --mount sh -c 'mount -t tmpfs none /tmp && echo MOUNTED' 2>&1; \
                  echo \"nested rc=$?\"";
    let ran = run_collect(&spec(script)).await;
    assert!(!ran.stdout.contains("MOUNTED"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("plain rc=0") && !ran.stdout.contains("nested rc=0"), "{}", ran.stdout);
    let mut off = spec(script);
    off.seccomp = false;
    let ran = run_collect(&off).await;
    assert!(ran.stdout.contains("MOUNTED"), "the control could not mount in a nested namespace: {}", ran.stdout);
}

/// Calls each forbidden system call with perl's `syscall` and reports `name result errno`.
fn syscall_probe() -> String {
    let calls: Vec<(&str, String)> = vec![
        ("keyctl", format!("{}, 0, -3, 0", libc::SYS_keyctl)),
        ("personality", format!("{}, 0x40000", libc::SYS_personality)),
        ("clone_newuser", format!("{}, {}, 0, 0, 0, 0", libc::SYS_clone, libc::CLONE_NEWUSER | libc::SIGCHLD)),
        ("clone3", format!("{}, 0, 0", libc::SYS_clone3)),
        ("setns", format!("{}, 0, 0", libc::SYS_setns)),
        ("unshare", format!("{}, {}", libc::SYS_unshare, libc::CLONE_NEWUSER)),
        ("perf_event_open", format!("{}, 0, 0, -1, -1, 0", libc::SYS_perf_event_open)),
        ("bpf", format!("{}, 0, 0, 0", libc::SYS_bpf)),
        ("mount", format!("{}, 0, 0, 0, 0, 0", libc::SYS_mount)),
        ("fsopen", format!("{}, 0, 0", libc::SYS_fsopen)),
    ];
    let mut perl = String::from("use POSIX (); $| = 1;\n");
    for (name, args) in calls {
        // A clone that succeeds returns 0 in the child, which must leave at once.
        perl.push_str(&format!(
            "$! = 0; $r = syscall({args}); POSIX::_exit(0) if $r == 0 && '{name}' eq 'clone_newuser'; \
             print \"{name} $r \", $!+0, \"\\n\";\n"
        ));
    }
    perl
}

fn probe_results(stdout: &str) -> BTreeMap<String, (i64, i32)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), (f.next()?.parse().ok()?, f.next()?.parse().ok()?)))
        })
        .collect()
}

#[tokio::test]
async fn forbidden_syscalls_fail_with_eperm_or_enosys() {
    let mut s = spec("");
    s.argv = vec!["perl".into(), "-e".into(), syscall_probe()];
    let ran = run_collect(&s).await;
    let got = probe_results(&ran.stdout);
    assert_eq!(got.len(), 10, "{}{}", ran.stdout, ran.stderr);
    for (name, (ret, errno)) in &got {
        let want = if matches!(name.as_str(), "clone3" | "fsopen") { libc::ENOSYS } else { libc::EPERM };
        assert_eq!((*ret, *errno), (-1, want), "{name}: {}", ran.stdout);
    }
    // Without the filter the same calls get past it: the denials above are its doing.
    s.seccomp = false;
    let ran = run_collect(&s).await;
    let got = probe_results(&ran.stdout);
    assert!(got["clone_newuser"].0 > 0, "{}", ran.stdout);
    assert!(got["personality"].0 >= 0, "{}", ran.stdout);
    assert_ne!(got["clone3"].1, libc::ENOSYS, "{}", ran.stdout);
    assert_ne!(got["setns"].1, libc::EPERM, "{}", ran.stdout);
    assert_ne!(got["perf_event_open"].1, libc::EPERM, "{}", ran.stdout);
}

#[tokio::test]
async fn output_limit_kills() {
    let yes_arg = format!("cbuild-output-limit-{}", std::process::id());
    let mut s = spec("");
    s.argv = vec!["yes".into(), yes_arg.clone()];
    s.max_output_bytes = Some(1 << 20);
    let started = Instant::now();
    let ran = run_collect(&s).await;
    let o = &ran.outcome;
    assert!(o.output_limit_exceeded && !o.timed_out && !o.success(), "{o:?}");
    assert!(o.output_bytes > 1 << 20 && o.output_bytes < (1 << 20) + (512 << 10), "{o:?}");
    assert!(ran.stdout.len() <= (1 << 20) + (256 << 10), "{} bytes forwarded", ran.stdout.len());
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let msg = o.failure_message(&s).unwrap();
    assert!(msg.contains("output") && msg.contains("1 MiB"), "{msg}");
    assert_none_left(&yes_arg).await;
}

#[tokio::test]
async fn timeout_kills() {
    let sleep_arg = marker(302);
    let mut s = spec("");
    s.argv = vec!["sleep".into(), sleep_arg.clone()];
    s.timeout = Some(Duration::from_secs(1));
    let ran = run_collect(&s).await;
    let o = &ran.outcome;
    assert!(o.timed_out && !o.success(), "{o:?}");
    assert!(o.duration < Duration::from_secs(15), "{o:?}");
    assert_eq!(o.failure_message(&s).unwrap(), "timed out: killed after running longer than its time limit of 1s");
    assert_none_left(&sleep_arg).await;
}

#[test]
fn specs_get_a_default_timeout() {
    let s = SandboxSpec::new(RootFs::Host, vec!["true".into()]);
    assert_eq!(s.timeout, Some(sandbox::DEFAULT_TIMEOUT));
}

/// Host tasks (threads included) whose real uid is `uid`.
fn tasks_of(uid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()).is_none() {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else { continue };
        let real = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
        if real == Some(uid.to_string().as_str()) {
            let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|t| t.trim().parse().ok());
            n += threads.unwrap_or(1);
        }
    }
    n
}

#[tokio::test]
async fn nproc_limit() {
    if !is_root() {
        common::skip_unless_ci("needs root to run the fork bomb as a uid of its own");
        return;
    }
    // A uid nothing else uses, so that the kernel's per-uid count is the sandbox's alone.
    const BOMB_UID: u32 = 43210;
    const LIMIT: u64 = 24;
    assert_eq!(tasks_of(BOMB_UID), 0, "uid {BOMB_UID} is in use on this host");
    let bomb_spec = |script: &str| {
        let mut s = spec(script);
        s.uid = BOMB_UID;
        s.gid = BOMB_UID;
        s.max_processes = Some(LIMIT);
        s.max_output_bytes = Some(4 << 20);
        s.timeout = Some(Duration::from_secs(8));
        s
    };

    // Safety first: the limit must really be in place before anything forks in earnest.
    let ran = run_collect(&bomb_spec("grep 'Max processes' /proc/self/limits")).await;
    let limits: Vec<&str> = ran.stdout.split_whitespace().collect();
    assert_eq!(
        limits,
        ["Max", "processes", "24", "24", "processes"],
        "RLIMIT_NPROC is not set: {}{}",
        ran.stdout,
        ran.stderr
    );

    // Deterministic: a loop starting 60 sleepers stops at the limit, and the sandbox ends.
    let ran =
        run_collect(&bomb_spec("i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); done; echo all-started")).await;
    assert!(!ran.outcome.success(), "{:?}", ran.outcome);
    assert!(!ran.stdout.contains("all-started"), "{}", ran.stdout);
    assert!(ran.stderr.to_lowercase().contains("fork"), "{}", ran.stderr);
    assert!(ran.outcome.duration < Duration::from_secs(8), "{:?}", ran.outcome);

    // A real fork bomb, watched from the host: it stays near the limit and is over in seconds.
    // The main shell outlives the first generations, so the bomb keeps forking until the timeout.
    let mut spec = bomb_spec("b() { b | b & }; b; sleep 30; echo bomb-ended");
    spec.timeout = Some(Duration::from_secs(4));
    let started = Instant::now();
    let mut peak = 0;
    let ran = {
        let sandboxed = run_collect(&spec);
        tokio::pin!(sandboxed);
        loop {
            tokio::select! {
                ran = &mut sandboxed => break ran,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    peak = peak.max(tasks_of(BOMB_UID));
                    // Dropping the future kills the sandbox; fail loudly instead of hurting the host.
                    assert!(peak < 100, "the fork bomb reached {peak} tasks: RLIMIT_NPROC does not hold");
                }
            }
        }
    };
    eprintln!("fork bomb: peak {peak} tasks, {:?}, {} stderr lines", ran.outcome, ran.stderr.lines().count());
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // /proc is not read atomically while tasks come and go, so allow some double counting.
    assert!(peak as u64 <= 2 * LIMIT, "peak of {peak} tasks for a limit of {LIMIT}");
    // It ends by the timeout, or earlier when the main shell itself cannot fork: a failure either way.
    assert!(!ran.outcome.success(), "{:?}", ran.outcome);
    assert!(!ran.stdout.contains("bomb-ended"), "{}", ran.stdout);
    assert!(ran.stderr.to_lowercase().contains("fork"), "the bomb never hit the limit: {}", ran.stderr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks_of(BOMB_UID) > 0 {
        assert!(Instant::now() < deadline, "fork bomb processes outlived the sandbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn file_size_limit_kills_the_writer() {
    let mut s = spec("head -c 3000000 /dev/zero > /tmp/big; echo \"rc=$?\"; wc -c < /tmp/big");
    s.max_file_size = Some(1 << 20);
    let ran = run_collect(&s).await;
    assert!(ran.outcome.success(), "{:?} {}", ran.outcome, ran.stderr);
    assert_eq!(ran.stdout, format!("rc={}\n{}\n", 128 + libc::SIGXFSZ, 1 << 20));
    s.argv[2] = "exec head -c 3000000 /dev/zero > /tmp/big".into();
    let ran = run_collect(&s).await;
    assert_eq!(ran.outcome.exit_code, Some(128 + libc::SIGXFSZ), "{:?}", ran.outcome);
    let msg = ran.outcome.failure_message(&s).unwrap();
    assert!(msg.contains("SIGXFSZ") && msg.contains("1 MiB"), "{msg}");
}

#[tokio::test]
async fn tmp_can_be_a_shared_host_dir() {
    let ran = run_collect(&spec("stat -f -c %T /tmp")).await;
    assert_eq!(ran.stdout.trim(), "tmpfs");

    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = parent.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (uid, gid) = sandbox::host_ids(UID, UID);
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).unwrap();
    let mut first = spec("echo from-the-first > /tmp/shared");
    first.tmp = Some(tmp.clone());
    assert!(run_collect(&first).await.outcome.success());
    assert_eq!(std::fs::read_to_string(tmp.join("shared")).unwrap(), "from-the-first\n");
    let mut second = spec("cat /tmp/shared");
    second.tmp = Some(tmp.clone());
    assert_eq!(run_collect(&second).await.stdout, "from-the-first\n");
    assert!(Path::new(&tmp).join("shared").exists());
}
