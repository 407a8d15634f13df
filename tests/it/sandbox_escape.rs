//! Integration tests of `cbuild::execution::sandbox` against the real bubblewrap: output and exit
//! codes, env and uid, and hostile actions that must fail (reading or writing outside the mounts,
//! becoming root, reaching the network, leaving processes behind, outliving a timeout or a drop).

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cbuild::execution::sandbox::{
    self, check_available, run, Mount, OutputLine, RootFs, SandboxOutcome, SandboxSpec, Stream,
};
use tempfile::TempDir;

const UID: u32 = 1000;
const GID: u32 = 1000;
const APPLETS: &[&str] = &[
    "sh", "id", "cat", "ls", "sleep", "touch", "echo", "wget", "nc", "env", "pwd", "setsid", "mkdir", "printf", "grep",
    "kill", "hostname",
];

/// A temp dir the sandbox's host user (uid 1000) can traverse: `tempfile` makes them 0700.
fn reachable_tempdir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A directory writable by the sandbox user, as a runner prepares `/workspace`.
fn writable_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    let (uid, gid) = sandbox::host_ids(UID, GID);
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    dir
}

/// An image-like root file system made of the host's static busybox, plus a root-owned dir.
fn busybox_root() -> TempDir {
    let root = reachable_tempdir();
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let etc = root.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\ncnb:x:1000:1000:cnb:/home/cnb:/bin/sh\n")
        .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\ncnb:x:1000:\n").unwrap();
    std::fs::create_dir(root.path().join("rootonly")).unwrap();
    root
}

fn spec(root: RootFs, script: &str) -> SandboxSpec {
    let mut spec = SandboxSpec::new(root, vec!["sh".into(), "-c".into(), script.into()]);
    spec.uid = UID;
    spec.gid = GID;
    let path = "/bin:/usr/bin";
    spec.env.insert("PATH".into(), path.into());
    spec.timeout = Some(Duration::from_secs(60));
    spec
}

struct Ran {
    outcome: SandboxOutcome,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Ran {
    fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout.join("\n"), self.stderr.join("\n"))
    }
}

async fn run_collect(spec: &SandboxSpec) -> Ran {
    let mut lines: Vec<OutputLine> = Vec::new();
    let outcome = run(spec, |l| lines.push(l)).await.unwrap_or_else(|e| panic!("sandbox failed: {e}"));
    let of = |s: Stream| lines.iter().filter(|l| l.stream == s).map(|l| l.text.clone()).collect();
    Ran { stdout: of(Stream::Stdout), stderr: of(Stream::Stderr), outcome }
}

/// Host pids of live (non-zombie) processes whose argv is `[…sleep, marker]`.
fn sleepers(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == marker.as_bytes() {
            found.push(pid);
        }
    }
    found
}

/// Waits (up to 5 s) for the kernel to tear a killed namespace down.
async fn assert_no_sleepers(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleepers(marker).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sleepers(marker), Vec::<u32>::new(), "`sleep {marker}` survived");
}

#[test]
fn bubblewrap_is_available() {
    check_available().unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn streams_output_and_returns_exit_codes() {
    let root = busybox_root();
    let rootfs = RootFs::Dir(root.path().into());
    let ran = run_collect(&spec(rootfs.clone(), "echo one; echo two >&2; echo three; exit 7")).await;
    assert_eq!(ran.stdout, ["one", "three"]);
    assert_eq!(ran.stderr, ["two"]);
    assert_eq!(ran.outcome.exit_code, Some(7));
    assert!(!ran.outcome.success() && !ran.outcome.timed_out);

    let ran = run_collect(&spec(rootfs.clone(), "true")).await;
    assert!(ran.outcome.success(), "{:?}", ran.outcome);

    // A command killed by a signal inside: bwrap's pid 1 reports 128 + signal.
    let ran = run_collect(&spec(rootfs, "kill -9 $$")).await;
    assert_eq!(ran.outcome.exit_code, Some(128 + 9));
    assert_eq!(ran.outcome.signal, None);
}

#[tokio::test]
async fn env_is_exactly_what_was_given() {
    let root = busybox_root();
    let mut spec = SandboxSpec::new(RootFs::Dir(root.path().into()), vec!["env".into()]);
    spec.uid = UID;
    spec.gid = GID;
    spec.env = BTreeMap::from([
        ("PATH".to_owned(), "/bin".to_owned()),
        ("A".to_owned(), "1".to_owned()),
        ("B".to_owned(), "x y=z".to_owned()),
        ("LD_PRELOAD".to_owned(), "/nonexistent/evil.so".to_owned()),
    ]);
    let ran = run_collect(&spec).await;
    assert!(ran.outcome.success(), "{}", ran.all_output());
    let mut got = ran.stdout.clone();
    got.sort();
    // bwrap always sets PWD to the working directory after `--chdir`; nothing else is added.
    assert_eq!(got, ["A=1", "B=x y=z", "LD_PRELOAD=/nonexistent/evil.so", "PATH=/bin", "PWD=/"]);
}

#[tokio::test]
async fn runs_as_uid_1000_and_written_files_are_owned_by_it_on_the_host() {
    let root = busybox_root();
    let work = reachable_tempdir();
    let workspace = writable_dir(work.path(), "workspace");
    let mut spec = spec(
        RootFs::Dir(root.path().into()),
        "id -u; id -g; pwd; hostname; \
         echo made > out.txt; mkdir sub",
    );
    spec.mounts.push(Mount::writable(&workspace, "/workspace"));
    spec.cwd = "/workspace".into();
    let ran = run_collect(&spec).await;
    assert!(ran.outcome.success(), "{}", ran.all_output());
    assert_eq!(ran.stdout, ["1000", "1000", "/workspace", sandbox::HOSTNAME]);

    let (uid, gid) = sandbox::host_ids(UID, GID);
    for written in ["out.txt", "sub"] {
        let meta = std::fs::metadata(workspace.join(written)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner of {written}");
    }
    assert_eq!(std::fs::read_to_string(workspace.join("out.txt")).unwrap(), "made\n");
}

#[tokio::test]
async fn stdin_is_dev_null() {
    let root = busybox_root();
    let mut spec = spec(RootFs::Dir(root.path().into()), "cat; echo eof");
    spec.timeout = Some(Duration::from_secs(10));
    let ran = run_collect(&spec).await;
    assert!(ran.outcome.success(), "{:?} {}", ran.outcome, ran.all_output());
    assert_eq!(ran.stdout, ["eof"]);
}

#[tokio::test]
async fn cannot_read_host_files_outside_the_mounts() {
    const SECRET: &str = "cbuild-sandbox-secret-7f3a";
    let host_tmp = reachable_tempdir();
    let tmp_secret = host_tmp.path().join("secret.txt");
    std::fs::write(&tmp_secret, SECRET).unwrap();
    std::fs::set_permissions(&tmp_secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root_secret = PathBuf::from(format!("/root/cbuild-sandbox-secret-{}", std::process::id()));
    std::fs::write(&root_secret, SECRET).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(root_secret.clone());

    let script = format!(
        "cat {tmp} ; cat {root_file} ; cat /proc/1/root{tmp} ; ls /root ; cat /etc/shadow ; \
         cat /etc/passwd >/dev/null && echo control-ok",
        tmp = tmp_secret.display(),
        root_file = root_secret.display(),
    );
    let shadow_root = std::fs::read_to_string("/etc/shadow").unwrap().lines().next().unwrap().to_owned();
    let busybox = busybox_root();
    for rootfs in [RootFs::Dir(busybox.path().into()), RootFs::Host] {
        let ran = run_collect(&spec(rootfs.clone(), &script)).await;
        let all = ran.all_output();
        assert!(!all.contains(SECRET), "{rootfs:?} leaked the secret: {all}");
        assert!(!all.contains(&shadow_root), "{rootfs:?} read /etc/shadow: {all}");
        assert_eq!(ran.stdout.last().map(String::as_str), Some("control-ok"), "{all}");
    }

    // With the host root, /etc/shadow exists and is refused for lack of permission.
    let ran = run_collect(&spec(RootFs::Host, "cat /etc/shadow")).await;
    assert_ne!(ran.outcome.exit_code, Some(0));
    assert!(ran.all_output().contains("Permission denied"), "{}", ran.all_output());
}

#[tokio::test]
async fn cannot_write_outside_writable_mounts() {
    let root = busybox_root();
    let work = reachable_tempdir();
    let rw = writable_dir(work.path(), "rw");
    let ro = writable_dir(work.path(), "ro");
    // Even world-writable on the host, a read-only mount stays read-only.
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o777)).unwrap();

    let mut spec = spec(
        RootFs::Dir(root.path().into()),
        "for f in /ro/x /x /bin/x /etc/x /rootonly/x /proc/x; do \
             if touch $f 2>/dev/null; then echo WROTE $f; fi; \
         done; touch /tmp/ok /rw/ok && echo control-ok",
    );
    spec.mounts = vec![Mount::read_only(&ro, "/ro"), Mount::writable(&rw, "/rw")];
    let ran = run_collect(&spec).await;
    assert_eq!(ran.stdout, ["control-ok"], "{}", ran.all_output());
    assert!(!ro.join("x").exists());
    assert!(!root.path().join("x").exists() && !root.path().join("rootonly/x").exists());
    assert!(rw.join("ok").exists());
}

#[tokio::test]
async fn cannot_become_root() {
    let root = busybox_root();
    let work = reachable_tempdir();
    // Root-owned and writable only by root on the host, mounted writable: only DAC stops the write.
    let root_owned = work.path().join("root-owned");
    std::fs::create_dir(&root_owned).unwrap();
    std::fs::set_permissions(&root_owned, std::fs::Permissions::from_mode(0o755)).unwrap();

    let suid = build_setuid_probe(root.path());
    let mut spec = spec(
        RootFs::Dir(root.path().into()),
        "id -u; touch /root-owned/x; grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|CapAmb)' \
         /proc/self/status; [ -e /bin/su ] && echo HAS-SU; \
         if [ -x /bin/suid-probe ]; then /bin/suid-probe; fi",
    );
    spec.mounts.push(Mount::writable(&root_owned, "/root-owned"));
    let ran = run_collect(&spec).await;
    let all = ran.all_output();
    assert_eq!(ran.stdout.first().map(String::as_str), Some("1000"), "{all}");
    assert!(ran.stderr.iter().any(|l| l.contains("Permission denied")), "{all}");
    assert!(!root_owned.join("x").exists());
    for line in ["NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"] {
        assert!(ran.stdout.iter().any(|l| l == line), "missing {line:?}: {all}");
    }
    assert!(!ran.stdout.iter().any(|l| l == "HAS-SU"));
    if suid {
        // The same binary gives euid 0 on the host (checked in build_setuid_probe).
        assert!(ran.stdout.iter().any(|l| l == "uid=1000 euid=1000"), "{all}");
    }
}

/// Builds a static setuid-root program printing its uid and euid into `<root>/bin/suid-probe`,
/// and checks that it does escalate outside the sandbox; false (with a note) if `cc` is missing.
fn build_setuid_probe(root: &Path) -> bool {
    let src = root.join("suid-probe.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) { \
         printf(\"uid=%d euid=%d\\n\", (int)getuid(), (int)geteuid()); return 0; }\n",
    )
    .unwrap();
    let bin = root.join("bin/suid-probe");
    let built = std::process::Command::new("cc").args(["-static", "-O1", "-o"]).arg(&bin).arg(&src).status();
    if !matches!(built, Ok(s) if s.success()) {
        common::skip_unless_ci("no static C compiler for the setuid-binary check");
        return false;
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
    use std::os::unix::process::CommandExt;
    let outside = std::process::Command::new(&bin).uid(UID).gid(GID).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout).trim(),
        "uid=1000 euid=0",
        "control: the probe must escalate on the host"
    );
    true
}

/// Accepts one connection within `wait` and returns what it sent.
fn accept_one(listener: TcpListener, wait: Duration) -> std::thread::JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut buf = [0u8; 64];
                    let n = conn.read(&mut buf).unwrap_or(0);
                    let _ = conn.write_all(b"bye\n");
                    return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        None
    })
}

#[tokio::test]
async fn cannot_reach_the_host_network_without_network() {
    let root = busybox_root();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "echo hello | nc -w 3 127.0.0.1 {port}; echo nc=$?; \
         wget -q -T 3 -O- http://127.0.0.1:{port}/; echo wget=$?; \
         cat /proc/net/dev"
    );
    let mut spec = spec(RootFs::Dir(root.path().into()), &script);
    spec.network = false;
    let ran = run_collect(&spec).await;
    let all = ran.all_output();
    assert!(ran.stdout.iter().any(|l| l.starts_with("nc=") && l != "nc=0"), "{all}");
    assert!(ran.stdout.iter().any(|l| l.starts_with("wget=") && l != "wget=0"), "{all}");
    // Only loopback in the sandbox's own network namespace.
    let ifaces: Vec<&str> = ran
        .stdout
        .iter()
        .filter(|l| l.contains(':') && !l.contains('|'))
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, ["lo"], "{all}");
    // A connection that reached the listener would wait in its backlog.
    listener.set_nonblocking(true).unwrap();
    let pending = listener.accept();
    assert!(
        matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the listener got a connection: {pending:?}"
    );
}

#[tokio::test]
async fn can_reach_the_host_network_with_network() {
    let root = busybox_root();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = accept_one(listener, Duration::from_secs(20));
    let mut spec = spec(RootFs::Dir(root.path().into()), &format!("echo hello | nc -w 3 127.0.0.1 {port}"));
    spec.network = true;
    let ran = run_collect(&spec).await;
    assert_eq!(accepted.join().unwrap().as_deref(), Some("hello\n"), "{}", ran.all_output());
}

#[tokio::test]
async fn no_process_survives_the_call() {
    let root = busybox_root();
    // Background jobs holding the output pipes, a double-forked daemon that closed them, and a
    // setsid daemon: the command itself exits at once.
    let mut spec = spec(
        RootFs::Dir(root.path().into()),
        "sleep 4711 & (sleep 4711 </dev/null >/dev/null 2>&1 &) ; \
         setsid sleep 4711 </dev/null >/dev/null 2>&1 & echo started",
    );
    spec.timeout = None;
    let ran = tokio::time::timeout(Duration::from_secs(30), run_collect(&spec))
        .await
        .expect("run waited for background processes");
    assert!(ran.outcome.success(), "{}", ran.all_output());
    assert_eq!(ran.stdout, ["started"]);
    assert_no_sleepers("4711").await;
}

#[tokio::test]
async fn timeout_kills_the_whole_sandbox() {
    let root = busybox_root();
    let mut spec = spec(RootFs::Dir(root.path().into()), "sleep 4712 & echo started; sleep 4712");
    spec.timeout = Some(Duration::from_secs(1));
    let ran = run_collect(&spec).await;
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert!(!ran.outcome.success());
    assert_eq!(ran.outcome.signal, Some(9));
    assert!(ran.outcome.duration < Duration::from_secs(10), "{:?}", ran.outcome);
    assert_eq!(ran.stdout, ["started"]);
    assert_no_sleepers("4712").await;
}

#[tokio::test]
async fn dropping_the_future_kills_the_whole_sandbox() {
    let root = busybox_root();
    let mut spec = spec(RootFs::Dir(root.path().into()), "sleep 4713 & sleep 4713");
    spec.timeout = None;
    let seen = tokio::select! {
        _ = run(&spec, |_| {}) => panic!("the sandbox ended by itself"),
        seen = async {
            loop {
                let found = sleepers("4713");
                if found.len() == 2 {
                    break found;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => seen,
    };
    assert_eq!(seen.len(), 2);
    assert_no_sleepers("4713").await;
}
