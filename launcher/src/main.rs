//! cbuild's CNB launcher (`/cnb/lifecycle/launcher`, platform.md › launcher): picks the process,
//! applies the launch env of every buildpack layer and `exec.d`, then execs the process (bash only
//! for non-direct processes). Static, std + libc only; errors exit 80–89 with `launcher: ...`.

#[path = "../../src/cnb/env_files.rs"]
#[allow(dead_code)]
mod env_files;
mod select;
mod toml_lite;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use select::{Metadata, Process};

/// No process chosen and no command given.
const EXIT_USAGE: u8 = 80;
/// metadata.toml missing or unreadable.
const EXIT_METADATA: u8 = 81;
/// Env, exec.d or exec failed.
const EXIT_LAUNCH: u8 = 82;

struct Fail(u8, String);

fn main() -> ExitCode {
    match run() {
        Ok(never) => match never {},
        Err(Fail(code, msg)) => {
            eprintln!("launcher: {msg}");
            ExitCode::from(code)
        }
    }
}

enum Never {}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn run() -> Result<Never, Fail> {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let argv0 = argv.first().cloned().unwrap_or_default();
    let layers = PathBuf::from(env_or("CNB_LAYERS_DIR", "/layers"));
    let app = PathBuf::from(env_or("CNB_APP_DIR", "/workspace"));
    if std::env::var_os("CNB_PROCESS_TYPE").is_some() {
        eprintln!("launcher: warning: CNB_PROCESS_TYPE is not supported; run `/cnb/process/<type>` instead");
    }
    let md_path = layers.join("config").join("metadata.toml");
    let text = std::fs::read_to_string(&md_path)
        .map_err(|e| Fail(EXIT_METADATA, format!("cannot read `{}`: {e}", md_path.display())))?;
    let md = select::parse_metadata(&text).map_err(|e| Fail(EXIT_METADATA, format!("`{}`: {e}", md_path.display())))?;
    let proc = match select::select_process(&argv0, &argv[1..], &md) {
        Ok(p) => p,
        // As the lifecycle's launcher: this one goes to stdout, as a launch error (82).
        Err(e) if e.0.starts_with("when there is no default process") => {
            println!("ERROR: failed to launch: determine start command: {}", e.0);
            std::process::exit(EXIT_LAUNCH.into());
        }
        Err(e) => return Err(Fail(EXIT_USAGE, e.0)),
    };

    let vars = std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()));
    let mut env = select::initial_env(vars);
    std::env::set_current_dir(&app)
        .map_err(|e| Fail(EXIT_LAUNCH, format!("cannot change to app dir `{}`: {e}", app.display())))?;
    let ptype = proc.r#type.as_deref();
    let bp_layers = buildpack_layers(&layers, &md)?;
    for (_, dirs) in &bp_layers {
        for l in dirs {
            env_files::apply_root_dirs(&mut env, l, &env_files::LAUNCH_ROOT_DIRS);
        }
        for l in dirs {
            env_files::apply_layer_env_dirs(&mut env, l, "launch", ptype)
                .map_err(|e| Fail(EXIT_LAUNCH, format!("env files of layer `{}`: {e}", l.display())))?;
        }
    }
    for (api, dirs) in &bp_layers {
        if *api < (0, 5) {
            continue;
        }
        for l in dirs {
            let mut dirs = vec![l.join("exec.d")];
            if let Some(t) = ptype {
                dirs.push(l.join("exec.d").join(t));
            }
            for d in dirs {
                for f in files_in(&d)? {
                    run_exec_d(&f, &app, &mut env)?;
                }
            }
        }
    }
    let workdir = proc.working_dir.clone().map(PathBuf::from).unwrap_or_else(|| app.clone());
    if proc.direct {
        exec_direct(&proc, &env, &workdir)
    } else {
        let profiles = profiles(&bp_layers, ptype, &app)?;
        exec_shell(&argv0, &proc, &env, &workdir, &profiles)
    }
}

/// For each buildpack of metadata.toml with a layers dir: its API and its layer dirs, sorted.
/// A buildpack's API and its layer dirs.
type BuildpackLayers = Vec<((u32, u32), Vec<PathBuf>)>;

fn buildpack_layers(layers: &Path, md: &Metadata) -> Result<BuildpackLayers, Fail> {
    let mut out = Vec::new();
    for bp in &md.buildpacks {
        let dir = layers.join(select::escape_id(&bp.id));
        if !dir.is_dir() {
            continue;
        }
        let entries = env_files::read_dir_sorted(&dir)
            .map_err(|e| Fail(EXIT_LAUNCH, format!("cannot list `{}`: {e}", dir.display())))?;
        let dirs = entries.into_iter().filter(|(_, d)| *d).map(|(n, _)| dir.join(n)).collect();
        out.push((bp.api, dirs));
    }
    Ok(out)
}

/// Regular files of `dir` in name order (none if it does not exist).
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, Fail> {
    let entries = env_files::read_dir_sorted(dir)
        .map_err(|e| Fail(EXIT_LAUNCH, format!("cannot list `{}`: {e}", dir.display())))?;
    Ok(entries.into_iter().filter(|(_, d)| !*d).map(|(n, _)| dir.join(n)).collect())
}

/// Runs one exec.d program with the current env, cwd = app dir and fd 3 = a pipe, then applies
/// the `NAME = "value"` TOML it wrote there.
fn run_exec_d(path: &Path, app: &Path, env: &mut BTreeMap<String, String>) -> Result<(), Fail> {
    let fail = |m: String| Fail(EXIT_LAUNCH, format!("exec.d `{}`: {m}", path.display()));
    let (mut reader, writer) = std::io::pipe().map_err(|e| fail(format!("pipe: {e}")))?;
    let wfd = writer.as_raw_fd();
    let mut cmd = Command::new(path);
    cmd.env_clear().envs(env.iter()).current_dir(app);
    // SAFETY: only async-signal-safe calls (dup2/fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if wfd == 3 {
                // dup2(3, 3) would keep FD_CLOEXEC; clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot run: {e}")))?;
    drop(writer);
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| fail(format!("reading fd 3: {e}")))?;
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    if !status.success() {
        return Err(fail(format!("failed with {status}")));
    }
    let doc = toml_lite::parse(&String::from_utf8_lossy(&out))
        .map_err(|e| fail(format!("output on fd 3 is not TOML: {e}")))?;
    for (k, v) in doc.root.entries {
        match v {
            toml_lite::Value::Str(s) => {
                env.insert(k, s);
            }
            _ => return Err(fail(format!("`{k}` must be a string"))),
        }
    }
    Ok(())
}

/// profile.d scripts (buildpack order, layers and files alphabetical, then the process's own),
/// then `<app>/.profile`.
fn profiles(bp_layers: &[((u32, u32), Vec<PathBuf>)], ptype: Option<&str>, app: &Path) -> Result<Vec<PathBuf>, Fail> {
    let mut out = Vec::new();
    for (_, dirs) in bp_layers {
        for l in dirs {
            out.extend(files_in(&l.join("profile.d"))?);
            if let Some(t) = ptype {
                out.extend(files_in(&l.join("profile.d").join(t))?);
            }
        }
    }
    let app_profile = app.join(".profile");
    if app_profile.is_file() {
        out.push(app_profile);
    }
    Ok(out)
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn exec_direct(proc: &Process, env: &BTreeMap<String, String>, workdir: &Path) -> Result<Never, Fail> {
    let path = env.get("PATH").map(String::as_str).unwrap_or("");
    let binary = select::look_path(&proc.command[0], path, is_executable)
        .ok_or_else(|| Fail(EXIT_LAUNCH, format!("`{}` not found in PATH `{path}`", proc.command[0])))?;
    let err = Command::new(&binary)
        .arg0(&proc.command[0])
        .args(&proc.command[1..])
        .args(&proc.args)
        .env_clear()
        .envs(env.iter())
        .current_dir(workdir)
        .exec();
    Err(Fail(EXIT_LAUNCH, format!("cannot exec `{}` in `{}`: {err}", binary.display(), workdir.display())))
}

fn exec_shell(
    argv0: &str,
    proc: &Process,
    env: &BTreeMap<String, String>,
    workdir: &Path,
    profiles: &[PathBuf],
) -> Result<Never, Fail> {
    let path = env.get("PATH").map(String::as_str).unwrap_or("");
    let bash = select::look_path("bash", path, is_executable).unwrap_or_else(|| PathBuf::from("/bin/bash"));
    let err = Command::new(&bash)
        .arg0("bash")
        .arg("-c")
        .arg(select::shell_script(profiles, proc.command.len() - 1 + proc.args.len()))
        .arg(argv0)
        .arg(&proc.command[0])
        .args(&proc.command[1..])
        .args(&proc.args)
        .env_clear()
        .envs(env.iter())
        .current_dir(workdir)
        .exec();
    Err(Fail(EXIT_LAUNCH, format!("cannot exec `{}` for a shell process: {err}", bash.display())))
}
