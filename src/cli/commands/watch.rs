//! `cbuild watch PATTERNS [--run [-- ARGS]]`: the inner loop. Builds, then waits for file-system
//! events in the workspace (inotify through `notify`, not a rescan), lets them settle for
//! `--debounce`, and builds again — the same session as `cbuild build`, so only actions whose
//! inputs changed run, and each round says how long the change took to become an image. With
//! `--run` the one image target runs like `cbuild run` and is restarted when its digest changes.
//! A broken BUILD file or a failing action is reported and the loop goes on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use notify::{EventKind, RecursiveMode, Watcher};

use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Targets to build on every change: //pkg:name, //pkg/..., //...
    #[arg(required = true, value_name = "PATTERNS")]
    pub patterns: Vec<String>,
    /// Run the (one) image target, as `cbuild run` does, and restart it when its image changes.
    #[arg(long)]
    pub run: bool,
    /// Quiet time after the last change before building, in milliseconds.
    #[arg(long, default_value_t = 30, value_name = "MS")]
    pub debounce: u64,
    /// Arguments for the running image (after `--`), with --run.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Paths whose changes never trigger a build: what builds write, and VCS metadata.
fn ignored(p: &Path, root: &Path, cache: &Path) -> bool {
    if p.starts_with(cache) {
        return true;
    }
    let Ok(rel) = p.strip_prefix(root) else { return true };
    let first = rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
    matches!(first, "cbuild-out" | ".git" | ".hg" | ".jj" | "target")
        || rel.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with('~') || n.starts_with(".#"))
}

pub fn run(g: &GlobalArgs, a: WatchArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    let root = s.root().to_path_buf();
    let cache = std::fs::canonicalize(&s.cache_dir).unwrap_or_else(|_| s.cache_dir.clone());
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if matches!(ev.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any) {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        }
    })
    .map_err(|e| Failure::env(anyhow::anyhow!("cannot watch the workspace: {e}")))?;
    watcher.watch(&root, RecursiveMode::Recursive).map_err(|e| Failure::Environment {
        error: anyhow::anyhow!("cannot watch `{}`: {e}", root.display()),
        hints: vec!["raise fs.inotify.max_user_watches (sysctl) for a large workspace".into()],
    })?;
    let mut child: Option<(Child, String)> = None;
    let mut changed: Vec<String> = Vec::new();
    let mut since = Instant::now();
    loop {
        match super::session::build(s.clone(), &a.patterns, true) {
            Ok(built) => {
                super::session::print_summary(&built);
                report(&s, since.elapsed(), &changed);
                if a.run {
                    restart_if_changed(&mut child, &built, g, &a, &s)?;
                }
            }
            Err(f) => {
                eprint!("{}", f.render());
                report(&s, since.elapsed(), &changed);
            }
        }
        // Wait for a change that matters, then for quiet.
        changed.clear();
        let first = loop {
            let p = rx.recv().map_err(|_| Failure::env(anyhow::anyhow!("the file watcher stopped")))?;
            if !ignored(&p, &root, &cache) {
                break p;
            }
        };
        since = Instant::now();
        changed.push(shown(&first, &root));
        while let Ok(p) = rx.recv_timeout(Duration::from_millis(a.debounce)) {
            if !ignored(&p, &root, &cache) {
                let p = shown(&p, &root);
                if !changed.contains(&p) {
                    changed.push(p);
                }
            }
        }
    }
}

fn shown(p: &Path, root: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// One line per round: how long from the first change to the built image.
fn report(s: &Settings, ready: Duration, changed: &[String]) {
    if s.json {
        crate::outln!(
            "{}",
            serde_json::json!({"type": "watch", "ready_ms": ready.as_millis() as u64, "changed": changed})
        );
    } else if !changed.is_empty() {
        let more = if changed.len() > 3 { format!(" and {} more", changed.len() - 3) } else { String::new() };
        eprintln!(
            "watch: {}{more} changed; ready in {} ms. Waiting for changes (Ctrl-C stops).",
            changed.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
            ready.as_millis()
        );
    } else {
        eprintln!("watch: waiting for changes (Ctrl-C stops).");
    }
}

/// With `--run`: (re)starts `cbuild run` of the one image target when its digest changed.
fn restart_if_changed(
    child: &mut Option<(Child, String)>,
    built: &super::session::Built,
    g: &GlobalArgs,
    a: &WatchArgs,
    s: &Settings,
) -> Result<(), Failure> {
    if !built.report.ok() {
        return Ok(());
    }
    let [(label, digest, _)] = built.images.as_slice() else {
        return Err(Failure::user_hint(
            format!("--run needs exactly one image target; the patterns name {}", built.images.len()),
            "name one image: cbuild watch --run //services/api:image",
        ));
    };
    let digest = digest.to_string();
    if child.as_ref().is_some_and(|(_, d)| *d == digest) {
        return Ok(());
    }
    if let Some((mut c, _)) = child.take() {
        stop(&mut c);
    }
    let exe = std::env::current_exe().map_err(Failure::env)?;
    let mut cmd = Command::new(exe);
    cmd.arg("-C").arg(s.root()).arg("--cache-dir").arg(&s.cache_dir).arg("--quiet");
    if let Some(j) = g.jobs {
        cmd.arg("-j").arg(j.to_string());
    }
    // The same platforms as the build (one: that platform's image of an index).
    for p in &s.inputs.platforms {
        cmd.arg("--platform").arg(p.to_string());
    }
    cmd.arg("run").arg(label).arg("--").args(&a.args);
    let c = cmd.spawn().map_err(Failure::env)?;
    eprintln!("watch: running {label} ({digest})");
    *child = Some((c, digest));
    Ok(())
}

/// SIGTERM, then SIGKILL after 2 s.
fn stop(c: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_outputs_and_vcs_never_trigger() {
        let root = Path::new("/ws");
        let cache = Path::new("/ws/.cache/cbuild");
        assert!(ignored(Path::new("/ws/cbuild-out/tools/tool/index.json"), root, cache));
        assert!(ignored(Path::new("/ws/.git/index"), root, cache));
        assert!(ignored(Path::new("/ws/.cache/cbuild/cbuild.db"), root, cache));
        assert!(ignored(Path::new("/ws/tools/hello.sh~"), root, cache));
        assert!(ignored(Path::new("/elsewhere/x"), root, cache));
        assert!(!ignored(Path::new("/ws/tools/hello.sh"), root, cache));
        assert!(!ignored(Path::new("/ws/services/api/BUILD.star"), root, cache));
    }
}
