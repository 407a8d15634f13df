//! Servers run by the `../shared/harness` scripts `registry.sh` (distribution) and `http-cache.sh`
//! (nginx WebDAV): `SCRIPT start DIR [AUTH]` starts one on a free port and prints its URL,
//! `SCRIPT stop DIR` stops it. Either a test's own server (stopped on drop, also when the test
//! panics) or the one server per script that the whole test binary shares (`shared`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub struct Daemon {
    script: &'static str,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` (`grpc://…` for BuildGrid)
    pub url: String,
}

impl Daemon {
    /// Starts `script` in a new temp dir; `args` follow `start DIR`, `env` is the script's.
    pub fn start(script: &'static str, args: &[&str], env: &[(&str, Option<&str>)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new(super::harness(script));
        c.arg("start").arg(dir.path()).args(args).stdin(Stdio::null());
        for (k, v) in env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let out = c.output().unwrap_or_else(|e| panic!("running {script}: {e}"));
        assert!(out.status.success(), "{script} start: {}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(url.starts_with("http://") || url.starts_with("grpc://"), "{script} printed `{url}`");
        Daemon { script, dir, url }
    }

    /// The server's dir (its storage, logs, pid file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (the storage is kept until drop). Idempotent.
    pub fn stop(&self) {
        stop(self.script, self.dir.path());
    }

    /// The one server of `script` this test binary shares, started on first use (without auth)
    /// and stopped, its dir removed, once this process has ended (also when it is killed).
    pub fn shared(cell: &'static OnceLock<Daemon>, script: &'static str) -> &'static Daemon {
        cell.get_or_init(|| {
            let d = Daemon::start(script, &[], &[("CACHE_AUTH", None), ("REGISTRY_AUTH", None)]);
            stop_after_this_process(script, d.dir());
            d
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stop(script: &str, dir: &Path) {
    let _ = Command::new(super::harness(script)).arg("stop").arg(dir).stdin(Stdio::null()).output();
}

/// A watcher outside this process (statics are never dropped, and a killed process runs no code):
/// once this process is gone it runs `script stop dir`, then, should the server still run (the
/// script went away with a removed checkout), stops it by the pid it started with, and removes
/// `dir`. Its own process group, so that a ^C in the terminal that kills the tests does not kill
/// it. Never waited for: it outlives this process by design.
#[allow(clippy::zombie_processes)]
fn stop_after_this_process(script: &str, dir: &Path) {
    use std::os::unix::process::CommandExt;
    // The server's pids, as the script recorded them (registry.sh: registry.pid, http-cache.sh:
    // nginx.pid, buildgrid.sh: buildgrid.pid, buildgrid-exec.sh: buildgrid.pid and postgres.pid);
    // each checked against its command line before a signal, in case it was reused.
    let pids = ["registry.pid", "nginx.pid", "buildgrid.pid", "postgres.pid"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .filter_map(|p| p.lines().next().map(|l| l.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let script: PathBuf = super::harness(script);
    Command::new("sh")
        .arg("-c")
        .arg(
            r#"dir=$2; pids=$3
            while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
            "$1" stop "$dir"
            ours() { [ -n "$1" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$dir/"; }
            for pid in $pids; do
              if ours "$pid"; then kill -TERM "$pid"; sleep 2; ours "$pid" && kill -KILL "$pid"; fi
            done
            rm -rf "$dir""#,
        )
        .arg(std::process::id().to_string())
        .arg(script)
        .arg(dir)
        .arg(pids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
}

/// A name no other user of a shared server in this process has (`t1`, `t2`, …): a repository
/// namespace of the shared registry, a path prefix of the shared cache.
pub fn unique_namespace() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("t{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
}
