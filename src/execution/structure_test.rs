//! container-structure-test files (schemaVersion 2.0.0) read into `image_test` checks, with the same
//! semantics, and the validation every check gets (absolute paths, regexes that compile). A key cbuild
//! does not support is an error naming it (README › image_test lists them), never silently ignored.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::test_spec::{Check, CheckKind, CommandCheck};

/// Keys of a container-structure-test file cbuild knows but does not implement.
pub const UNSUPPORTED: &[&str] = &[
    "licenseTests",
    "containerRunOptions",
    "commandTests[].setup",
    "commandTests[].teardown",
    "metadataTest.unmountedVolumes",
];

/// The checks of a container-structure-test file and its `globalEnvVars`. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<(Vec<Check>, BTreeMap<String, String>), String> {
    let doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("`{file}` is not a container-structure-test file: {e}"))?;
    let at = |what: String| format!("`{file}`: {what}");
    let top = Obj::new(
        &doc,
        "the file",
        &["schemaVersion", "globalEnvVars", "fileExistenceTests", "fileContentTests", "commandTests", "metadataTest"],
    )
    .map_err(at)?;
    match top.get("schemaVersion") {
        Some(Value::String(v)) if v == "2.0.0" => {}
        Some(v) => return Err(at(format!("schemaVersion is {v}; cbuild reads schemaVersion \"2.0.0\""))),
        None => return Err(at("schemaVersion is missing (cbuild reads \"2.0.0\")".into())),
    }
    let env = top.env("globalEnvVars").map_err(at)?;
    let mut checks = Vec::new();
    for (i, t) in top.list("fileExistenceTests").map_err(at)?.iter().enumerate() {
        let where_ = format!("fileExistenceTests[{i}]");
        let o = Obj::new(t, &where_, &["name", "path", "shouldExist", "permissions", "uid", "gid", "isExecutableBy"])
            .map_err(at)?;
        let path = o.req_str("path").map_err(at)?;
        let name = o.str("name").map_err(at)?.unwrap_or_else(|| format!("file_exists {path}"));
        let what = if o.bool("shouldExist").map_err(at)?.unwrap_or(true) {
            CheckKind::FileExists {
                mode: o.str("permissions").map_err(at)?.map(|p| permissions(&p)).transpose().map_err(at)?,
                uid: o.u32("uid").map_err(at)?,
                gid: o.u32("gid").map_err(at)?,
                executable_by: o.str("isExecutableBy").map_err(at)?,
                path,
            }
        } else {
            CheckKind::FileAbsent { path }
        };
        checks.push(Check { name, what });
    }
    for (i, t) in top.list("fileContentTests").map_err(at)?.iter().enumerate() {
        let where_ = format!("fileContentTests[{i}]");
        let o = Obj::new(t, &where_, &["name", "path", "expectedContents", "excludedContents"]).map_err(at)?;
        let path = o.req_str("path").map_err(at)?;
        checks.push(Check {
            name: o.str("name").map_err(at)?.unwrap_or_else(|| format!("file_content {path}")),
            what: CheckKind::FileContent {
                expected: o.strings("expectedContents").map_err(at)?,
                excluded: o.strings("excludedContents").map_err(at)?,
                path,
            },
        });
    }
    for (i, t) in top.list("commandTests").map_err(at)?.iter().enumerate() {
        let where_ = format!("commandTests[{i}]");
        let o = Obj::new(
            t,
            &where_,
            &[
                "name",
                "command",
                "args",
                "envVars",
                "expectedOutput",
                "excludedOutput",
                "expectedError",
                "excludedError",
                "exitCode",
                "setup",
                "teardown",
            ],
        )
        .map_err(at)?;
        for k in ["setup", "teardown"] {
            if o.get(k).is_some() {
                return Err(at(format!("{where_}.{k} is not supported by cbuild (README › image_test)")));
            }
        }
        let mut argv = vec![o.req_str("command").map_err(at)?];
        argv.extend(o.strings("args").map_err(at)?);
        let exit = o.get("exitCode").map(|v| v.as_i64().ok_or(format!("{where_}.exitCode must be an integer")));
        let exit_code = exit.transpose().map_err(at)?.unwrap_or(0);
        checks.push(Check {
            name: o.str("name").map_err(at)?.unwrap_or_else(|| format!("command {}", argv.join(" "))),
            what: CheckKind::Command(CommandCheck {
                argv,
                env: o.env("envVars").map_err(at)?,
                exit_code: i32::try_from(exit_code).map_err(|_| at(format!("{where_}.exitCode is out of range")))?,
                stdout: o.strings("expectedOutput").map_err(at)?,
                stderr: o.strings("expectedError").map_err(at)?,
                excluded_stdout: o.strings("excludedOutput").map_err(at)?,
                excluded_stderr: o.strings("excludedError").map_err(at)?,
            }),
        });
    }
    if let Some(m) = top.get("metadataTest") {
        let o = Obj::new(
            m,
            "metadataTest",
            &[
                "env",
                "labels",
                "exposedPorts",
                "unexposedPorts",
                "volumes",
                "unmountedVolumes",
                "entrypoint",
                "cmd",
                "workdir",
                "user",
            ],
        )
        .map_err(at)?;
        if o.get("unmountedVolumes").is_some() {
            return Err(at("metadataTest.unmountedVolumes is not supported by cbuild (README › image_test)".into()));
        }
        for (key, value, regex) in o.pairs("env").map_err(at)? {
            checks.push(Check { name: format!("metadata env {key}"), what: CheckKind::Env { key, value, regex } });
        }
        for (key, value, regex) in o.pairs("labels").map_err(at)? {
            checks.push(Check { name: format!("metadata label {key}"), what: CheckKind::Label { key, value, regex } });
        }
        for (k, exposed) in [("exposedPorts", true), ("unexposedPorts", false)] {
            for port in o.strings(k).map_err(at)? {
                let name = format!("metadata {} {port}", if exposed { "exposed port" } else { "unexposed port" });
                checks.push(Check { name, what: CheckKind::ExposedPort { port, exposed } });
            }
        }
        for v in o.strings("volumes").map_err(at)? {
            checks.push(Check { name: format!("metadata volume {v}"), what: CheckKind::Volume(v) });
        }
        if o.get("entrypoint").is_some() {
            let e = o.strings("entrypoint").map_err(at)?;
            checks.push(Check { name: "metadata entrypoint".into(), what: CheckKind::Entrypoint(e) });
        }
        if o.get("cmd").is_some() {
            checks.push(Check { name: "metadata cmd".into(), what: CheckKind::Cmd(o.strings("cmd").map_err(at)?) });
        }
        if let Some(w) = o.str("workdir").map_err(at)? {
            checks.push(Check { name: "metadata workdir".into(), what: CheckKind::Workdir(w) });
        }
        if let Some(u) = o.str("user").map_err(at)? {
            checks.push(Check { name: "metadata user".into(), what: CheckKind::User(u) });
        }
    }
    for c in &checks {
        validate_check(c).map_err(|e| at(format!("test `{}`: {e}", c.name)))?;
    }
    Ok((checks, env))
}

/// `-rwxr-xr-x` / `drwxr-xr-x` (Go's `FileMode.String()`, as container-structure-test writes them)
/// → permission bits. The leading type letter is not checked.
fn permissions(s: &str) -> Result<u32, String> {
    let chars: Vec<char> = s.chars().collect();
    let bits = chars.len().checked_sub(9).map(|i| &chars[i..]).ok_or_else(|| bad_perm(s))?;
    let mut mode = 0;
    for (i, c) in bits.iter().enumerate() {
        let want = ['r', 'w', 'x'][i % 3];
        mode <<= 1;
        match *c {
            '-' => {}
            c if c == want => mode |= 1,
            _ => return Err(bad_perm(s)),
        }
    }
    Ok(mode)
}

fn bad_perm(s: &str) -> String {
    format!("permissions `{s}` are not like \"-rwxr-xr-x\"")
}

/// Checks a check can run: absolute paths, regexes that compile, a command to run.
pub fn validate_check(c: &Check) -> Result<(), String> {
    let abs = |p: &str| -> Result<(), String> {
        if p.starts_with('/') {
            Ok(())
        } else {
            Err(format!("path `{p}` is not absolute (paths in an image start with /)"))
        }
    };
    let re = |r: &str| -> Result<(), String> {
        regex::Regex::new(r).map(|_| ()).map_err(|e| format!("the regex `{r}` does not compile: {e}"))
    };
    match &c.what {
        CheckKind::FileExists { path, executable_by, .. } => {
            abs(path)?;
            if let Some(e) = executable_by {
                if !["owner", "group", "other", "any"].contains(&e.as_str()) {
                    return Err(format!("isExecutableBy `{e}` is not owner, group, other or any"));
                }
            }
        }
        CheckKind::FileAbsent { path } => abs(path)?,
        CheckKind::FileContent { path, expected, excluded } => {
            abs(path)?;
            expected.iter().chain(excluded).try_for_each(|r| re(r))?;
        }
        CheckKind::Env { value, regex: true, .. } | CheckKind::Label { value, regex: true, .. } => re(value)?,
        CheckKind::Volume(p) | CheckKind::Workdir(p) => abs(p)?,
        CheckKind::Command(cmd) => {
            if cmd.argv.first().is_none_or(|a| a.is_empty()) {
                return Err("the command is empty".into());
            }
            cmd.stdout
                .iter()
                .chain(&cmd.stderr)
                .chain(&cmd.excluded_stdout)
                .chain(&cmd.excluded_stderr)
                .try_for_each(|r| re(r))?;
        }
        CheckKind::Service(s) => {
            if let Some(p) = &s.process {
                if p.is_empty() || p.contains('/') {
                    return Err(format!("process `{p}` is not a process type (the name under /cnb/process/)"));
                }
            }
            for h in &s.http {
                if !h.path.starts_with('/') {
                    return Err(format!("HTTP path `{}` must start with /", h.path));
                }
                if h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!("HTTP path `{}` holds a space or control character", h.path));
                }
                re(&h.body)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A YAML mapping read key by key; unknown keys are errors, known-but-unsupported ones are the
/// caller's to refuse.
struct Obj<'a> {
    m: &'a serde_json::Map<String, Value>,
    at: String,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, at: &str, known: &[&str]) -> Result<Obj<'a>, String> {
        let m = v.as_object().ok_or_else(|| format!("{at} must be a mapping"))?;
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                let top_unsupported = UNSUPPORTED.contains(&k.as_str());
                return Err(if top_unsupported {
                    format!("`{k}` is not supported by cbuild (README › image_test)")
                } else {
                    format!("{at} has an unknown key `{k}` (known: {})", known.join(", "))
                });
            }
        }
        Ok(Obj { m, at: at.to_string() })
    }
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.m.get(k).filter(|v| !v.is_null())
    }
    fn str(&self, k: &str) -> Result<Option<String>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // YAML reads `8080` or `true` as a number or bool; container-structure-test takes them as text.
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(_) => Err(format!("{}.{k} must be a string", self.at)),
        }
    }
    fn req_str(&self, k: &str) -> Result<String, String> {
        self.str(k)?.ok_or_else(|| format!("{}.{k} is required", self.at))
    }
    fn bool(&self, k: &str) -> Result<Option<bool>, String> {
        self.get(k).map(|v| v.as_bool().ok_or_else(|| format!("{}.{k} must be true or false", self.at))).transpose()
    }
    fn u32(&self, k: &str) -> Result<Option<u32>, String> {
        self.get(k)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("{}.{k} must be a non-negative integer", self.at))
            })
            .transpose()
    }
    fn list(&self, k: &str) -> Result<&'a [Value], String> {
        match self.get(k) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(format!("{}.{k} must be a list", self.at)),
        }
    }
    fn strings(&self, k: &str) -> Result<Vec<String>, String> {
        self.list(k)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
                _ => Err(format!("{}.{k} must be a list of strings", self.at)),
            })
            .collect()
    }
    /// `[{key, value, isRegex}]`.
    fn pairs(&self, k: &str) -> Result<Vec<(String, String, bool)>, String> {
        let mut out = Vec::new();
        for (i, v) in self.list(k)?.iter().enumerate() {
            let o = Obj::new(v, &format!("{}.{k}[{i}]", self.at), &["key", "value", "isRegex"])?;
            out.push((o.req_str("key")?, o.str("value")?.unwrap_or_default(), o.bool("isRegex")?.unwrap_or(false)));
        }
        Ok(out)
    }
    /// `[{key, value}]` as a map.
    fn env(&self, k: &str) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for (i, v) in self.list(k)?.iter().enumerate() {
            let o = Obj::new(v, &format!("{}.{k}[{i}]", self.at), &["key", "value"])?;
            out.insert(o.req_str("key")?, o.str("value")?.unwrap_or_default());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
schemaVersion: 2.0.0
globalEnvVars:
  - key: GREETING
    value: hi
fileExistenceTests:
  - name: server
    path: /workspace/server.sh
    shouldExist: true
    permissions: -rwxr-xr-x
    uid: 1000
    gid: 1000
  - name: no shadow
    path: /etc/shadow
    shouldExist: false
fileContentTests:
  - name: passwd
    path: /etc/passwd
    expectedContents: ['cnb:x:1000']
    excludedContents: ['^toor']
commandTests:
  - name: echo
    command: echo
    args: [hello]
    expectedOutput: ['hello\n']
    exitCode: 0
metadataTest:
  env:
    - key: PATH
      value: /bin
      isRegex: true
  labels:
    - key: io.buildpacks.stack.id
      value: io.cbuild.stacks.busybox
  exposedPorts: [8080]
  entrypoint: [/cnb/process/web]
  user: "1000:1000"
"#;

    #[test]
    fn a_full_file_becomes_checks_in_order() {
        let (checks, env) = parse(FULL, "t.yaml").unwrap();
        assert_eq!(env.get("GREETING").map(String::as_str), Some("hi"));
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "server",
                "no shadow",
                "passwd",
                "echo",
                "metadata env PATH",
                "metadata label io.buildpacks.stack.id",
                "metadata exposed port 8080",
                "metadata entrypoint",
                "metadata user"
            ]
        );
        assert!(matches!(
            &checks[0].what,
            CheckKind::FileExists { mode: Some(0o755), uid: Some(1000), gid: Some(1000), .. }
        ));
        assert!(matches!(&checks[1].what, CheckKind::FileAbsent { .. }));
        match &checks[3].what {
            CheckKind::Command(c) => assert_eq!(c.argv, ["echo", "hello"]),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn unsupported_and_unknown_keys_are_named() {
        let e = parse("schemaVersion: 2.0.0\nlicenseTests: []\n", "t.yaml").unwrap_err();
        assert!(e.contains("`licenseTests` is not supported"), "{e}");
        let e = parse("schemaVersion: 2.0.0\ncommandTests:\n  - name: x\n    command: a\n    setup: [[b]]\n", "t.yaml")
            .unwrap_err();
        assert!(e.contains("commandTests[0].setup is not supported"), "{e}");
        let e =
            parse("schemaVersion: 2.0.0\nfileExistenceTests:\n  - path: /x\n    colour: red\n", "t.yaml").unwrap_err();
        assert!(e.contains("unknown key `colour`"), "{e}");
        let e = parse("schemaVersion: 1.0.0\n", "t.yaml").unwrap_err();
        assert!(e.contains("2.0.0"), "{e}");
    }

    #[test]
    fn relative_paths_and_bad_regexes_are_refused() {
        let e = parse("schemaVersion: 2.0.0\nfileExistenceTests:\n  - path: etc/passwd\n", "t.yaml").unwrap_err();
        assert!(e.contains("not absolute"), "{e}");
        let e = parse("schemaVersion: 2.0.0\nfileContentTests:\n  - path: /x\n    expectedContents: ['(']\n", "t.yaml")
            .unwrap_err();
        assert!(e.contains("does not compile"), "{e}");
    }

    #[test]
    fn permissions_read_like_go_file_modes() {
        assert_eq!(permissions("-rwxr-xr-x").unwrap(), 0o755);
        assert_eq!(permissions("drwx------").unwrap(), 0o700);
        assert_eq!(permissions("-rw-r--r--").unwrap(), 0o644);
        assert!(permissions("rwx").is_err());
        assert!(permissions("-rwxrwxrwz").is_err());
    }
}
