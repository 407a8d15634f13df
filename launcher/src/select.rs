//! The pure part of the launcher: reading metadata.toml, choosing the process from argv, the
//! starting environment, PATH lookup and the shell script for non-direct processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::toml_lite;

/// Variables of the image config that must not reach the app (platform.md › launcher).
pub const EXCLUDED_VARS: [&str; 5] =
    ["CNB_LAYERS_DIR", "CNB_APP_DIR", "CNB_PROCESS_TYPE", "CNB_PLATFORM_API", "CNB_DEPRECATION_MODE"];

/// PATH entries of the image config that only serve to find the launcher.
pub const STRIPPED_PATH_DIRS: [&str; 2] = ["/cnb/process", "/cnb/lifecycle"];

/// A buildpack of metadata.toml (only what the launcher needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buildpack {
    pub id: String,
    pub api: (u32, u32),
}

/// A process to launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// `None` for a command given on the command line.
    pub r#type: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub direct: bool,
    pub working_dir: Option<String>,
    pub buildpack_id: String,
}

/// The parts of `<layers>/config/metadata.toml` the launcher uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub buildpacks: Vec<Buildpack>,
    pub processes: Vec<Process>,
}

/// Parses `"0.10"` → (0, 10); anything odd → (0, 0).
pub fn parse_api(s: &str) -> (u32, u32) {
    let mut it = s.trim().splitn(2, '.');
    let major = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Reads metadata.toml text.
pub fn parse_metadata(text: &str) -> Result<Metadata, String> {
    let doc = toml_lite::parse(text)?;
    let mut md = Metadata::default();
    for s in &doc.sections {
        let get_str = |k: &str| s.get(k).and_then(|v| v.as_str()).map(str::to_string);
        match (s.header.as_str(), s.array) {
            ("buildpacks", true) => md.buildpacks.push(Buildpack {
                id: get_str("id").ok_or("a `[[buildpacks]]` entry has no `id`")?,
                api: parse_api(&get_str("api").unwrap_or_default()),
            }),
            ("processes", true) => {
                let ty = get_str("type").ok_or("a `[[processes]]` entry has no `type`")?;
                let command = s
                    .get("command")
                    .and_then(|v| v.as_strings())
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| format!("process `{ty}` has no `command`"))?;
                md.processes.push(Process {
                    command,
                    args: s.get("args").and_then(|v| v.as_strings()).unwrap_or_default(),
                    direct: matches!(s.get("direct"), Some(toml_lite::Value::Bool(true))),
                    working_dir: get_str("working-dir").filter(|w| !w.is_empty()),
                    buildpack_id: get_str("buildpack-id").unwrap_or_default(),
                    r#type: Some(ty),
                });
            }
            _ => {}
        }
    }
    Ok(md)
}

/// Why no process could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoProcess(pub String);

/// Chooses the process like the lifecycle: the basename of `argv0` (e.g. `/cnb/process/web`)
/// naming a process type selects it, and user `args` replace its args (Buildpack API ≥ 0.9) or
/// are appended (older); otherwise `args` are the command: `-- cmd args` runs it directly,
/// `cmd args` through `bash -c`.
pub fn select_process(argv0: &str, args: &[String], md: &Metadata) -> Result<Process, NoProcess> {
    let base = Path::new(argv0).file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
    let base = base.strip_suffix(".exe").unwrap_or(&base);
    if let Some(p) = md.processes.iter().find(|p| p.r#type.as_deref() == Some(base)) {
        let mut p = p.clone();
        if !args.is_empty() {
            let api = md.buildpacks.iter().find(|b| b.id == p.buildpack_id).map(|b| b.api).unwrap_or((0, 9));
            if api >= (0, 9) {
                p.args = args.to_vec();
            } else {
                p.args.extend(args.iter().cloned());
            }
        }
        return Ok(p);
    }
    match args {
        [] => Err(NoProcess("when there is no default process a command is required".into())),
        [dd, cmd, rest @ ..] if dd == "--" => {
            Ok(Process { command: vec![cmd.clone()], args: rest.to_vec(), direct: true, ..Process::default() })
        }
        [cmd, rest @ ..] => {
            Ok(Process { command: vec![cmd.clone()], args: rest.to_vec(), direct: false, ..Process::default() })
        }
    }
}

/// The environment the launch starts from: the launcher's own minus [`EXCLUDED_VARS`], with
/// `/cnb/process` and `/cnb/lifecycle` removed from PATH.
pub fn initial_env(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(k, _)| !EXCLUDED_VARS.contains(&k.as_str()))
        .map(|(k, v)| {
            if k == "PATH" {
                let kept: Vec<&str> =
                    v.split(':').filter(|d| !STRIPPED_PATH_DIRS.contains(&d.trim_end_matches('/'))).collect();
                (k, kept.join(":"))
            } else {
                (k, v)
            }
        })
        .collect()
}

/// `/` → `_`, as in `<layers>/<escaped-id>`.
pub fn escape_id(id: &str) -> String {
    id.replace('/', "_")
}

/// Finds `cmd` like `exec.LookPath`: a name with `/` is used as is; otherwise the first
/// executable regular file in `path` (empty entries mean the current directory).
pub fn look_path(cmd: &str, path: &str, is_executable: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    path.split(':')
        .map(|d| if d.is_empty() { Path::new(".").join(cmd) } else { Path::new(d).join(cmd) })
        .find(|c| is_executable(c))
}

/// The `bash -c` script of a non-direct process (the lifecycle's `BashShell`): source each
/// profile, then with no args run the command as a script (`exec bash -c "$@"`: `$0` is the
/// launcher, `$1` the command); with `nargs` args evaluate each word (`$(eval echo "$i")`, so
/// `$VARS` expand) and exec the result as argv.
pub fn shell_script(profiles: &[PathBuf], nargs: usize) -> String {
    let mut s = String::new();
    for p in profiles {
        let quoted = p.to_string_lossy().replace('\'', "'\\''");
        s.push_str(&format!("source '{quoted}'\n"));
    }
    if nargs == 0 {
        s.push_str("exec bash -c \"$@\"");
    } else {
        let tokens: Vec<String> = (0..=nargs).map(|i| format!("\"$(eval echo \\\"${i}\\\")\"")).collect();
        s.push_str(&format!("exec bash -c '{}' \"${{@:1}}\"", tokens.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> Metadata {
        parse_metadata(
            r#"
buildpack-default-process-type = "web"
[[buildpacks]]
id = "acme/new"
version = "1"
api = "0.10"
[[buildpacks]]
id = "acme/old"
version = "1"
api = "0.8"
[[processes]]
type = "web"
command = ["node", "server.js"]
args = ["--port", "8080"]
direct = true
working-dir = "/w"
buildpack-id = "acme/new"
[[processes]]
type = "worker"
command = ["echo $FOO"]
args = ["a"]
direct = false
buildpack-id = "acme/old"
[[labels]]
key = "x"
value = "y"
"#,
        )
        .unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn reads_metadata() {
        let m = md();
        assert_eq!(m.buildpacks[0].api, (0, 10));
        assert_eq!(m.processes[0].working_dir.as_deref(), Some("/w"));
        assert!(m.processes[0].direct && !m.processes[1].direct);
        assert!(parse_metadata("[[processes]]\ntype = \"x\"\n").is_err());
        assert!(parse_metadata("[[processes]]\ncommand = [\"x\"]\n").is_err());
    }

    #[test]
    fn process_from_argv0_with_args_replaced_or_appended() {
        let m = md();
        let p = select_process("/cnb/process/web", &[], &m).unwrap();
        assert_eq!(p.args, ["--port", "8080"]);
        assert_eq!(p.r#type.as_deref(), Some("web"));
        let p = select_process("/cnb/process/web", &s(&["--port", "9"]), &m).unwrap();
        assert_eq!(p.command, ["node", "server.js"]);
        assert_eq!(p.args, ["--port", "9"]);
        let p = select_process("worker", &s(&["b"]), &m).unwrap();
        assert_eq!(p.args, ["a", "b"]);
        assert!(!p.direct);
        let p = select_process("/x/web.exe", &[], &m).unwrap();
        assert_eq!(p.r#type.as_deref(), Some("web"));
    }

    #[test]
    fn user_commands() {
        let m = md();
        let p = select_process("/cnb/lifecycle/launcher", &s(&["--", "ls", "-l"]), &m).unwrap();
        assert_eq!((p.command.clone(), p.args.clone(), p.direct), (s(&["ls"]), s(&["-l"]), true));
        assert_eq!(p.r#type, None);
        let p = select_process("/cnb/lifecycle/launcher", &s(&["echo $HOME", "x"]), &m).unwrap();
        assert!(!p.direct);
        assert_eq!(p.command, ["echo $HOME"]);
        assert!(select_process("/cnb/lifecycle/launcher", &[], &m).is_err());
        // A type name as an argument is a command, not a process type.
        let p = select_process("/cnb/lifecycle/launcher", &s(&["web"]), &m).unwrap();
        assert_eq!(p.r#type, None);
    }

    #[test]
    fn env_is_cleaned() {
        let e = initial_env(
            [
                ("CNB_LAYERS_DIR", "/layers"),
                ("CNB_APP_DIR", "/workspace"),
                ("CNB_PROCESS_TYPE", "web"),
                ("CNB_PLATFORM_API", "0.12"),
                ("CNB_DEPRECATION_MODE", "quiet"),
                ("PATH", "/cnb/process:/cnb/lifecycle/:/usr/bin:/cnb/processes"),
                ("KEEP", "1"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        assert_eq!(e.len(), 2);
        assert_eq!(e["PATH"], "/usr/bin:/cnb/processes");
    }

    #[test]
    fn path_lookup() {
        let found = look_path("node", "/a::/b", |p| p == Path::new("/b/node"));
        assert_eq!(found, Some(PathBuf::from("/b/node")));
        let found = look_path("node", "/a::/b", |p| p == Path::new("./node"));
        assert_eq!(found, Some(PathBuf::from("./node")));
        assert_eq!(look_path("./x", "", |_| false), Some(PathBuf::from("./x")));
        assert_eq!(look_path("x", "/a", |_| false), None);
    }

    #[test]
    fn shell_script_sources_profiles() {
        let s = shell_script(&[PathBuf::from("/layers/a/l/profile.d/x.sh"), PathBuf::from("/w/it's")], 0);
        assert_eq!(s, "source '/layers/a/l/profile.d/x.sh'\nsource '/w/it'\\''s'\nexec bash -c \"$@\"");
        assert_eq!(shell_script(&[], 1), r#"exec bash -c '"$(eval echo \"$0\")" "$(eval echo \"$1\")"' "${@:1}""#);
        assert_eq!(escape_id("a/b"), "a_b");
        assert_eq!(parse_api("0.12"), (0, 12));
        assert_eq!(parse_api("1"), (1, 0));
    }
}
