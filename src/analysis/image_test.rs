//! `image_test`: the rule's attributes → the checks of one `ImageTest` action on the image's action.
//! Shapes, absolute paths and regexes are checked here (located errors); a container-structure-test
//! `config` file is read when the test runs (`execution::structure_test`).

use std::collections::BTreeMap;

use super::common::*;
use crate::execution::structure_test::validate_check;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;
use crate::model::test_spec::*;

/// Analyses one `image_test` target: one action depending on the image's.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    _opts: &Options,
) -> Result<Provided, String> {
    let image = match n.attr("image") {
        AttrValue::Label(b) => match provided.get(b) {
            Some(Provided::Image(a) | Provided::Pulled(a, _)) => *a,
            _ => return Err(format!("`image` is `{b}`, which is not an image")),
        },
        _ => return Err("`image` is required".into()),
    };
    let config = match n.attr("config") {
        AttrValue::File(f) => Some(f.file.clone()),
        _ => None,
    };
    let checks = checks(n)?;
    for c in &checks {
        validate_check(c).map_err(|e| format!("check `{}`: {e}", c.name))?;
    }
    if checks.is_empty() && config.is_none() {
        return Err("the test checks nothing: give `config` or at least one check attribute".into());
    }
    let timeout = int_attr(n, "timeout")?;
    if timeout <= 0 {
        return Err(format!("`timeout` is {timeout}; it must be a positive number of seconds"));
    }
    let spec = TestSpec { checks, timeout_secs: timeout as u64, ..Default::default() };
    let a = ag.add(&n.label, ActionKind::ImageTest { image, spec, config, integration: None }, vec![image]);
    Ok(Provided::Test(a))
}

/// The checks the attributes ask for, in the order they run: config, files, commands, service.
fn checks(n: &TargetNode) -> Result<Vec<Check>, String> {
    let mut out = Vec::new();
    let mut push = |name: String, what: CheckKind| out.push(Check { name, what });
    if bool_attr(n, "non_root")? {
        push("non_root".into(), CheckKind::NonRoot);
    }
    if let Some(u) = opt_string(n.attr("user")) {
        push("user".into(), CheckKind::User(u));
    }
    let list = |k: &str| strings(n.attr(k));
    if !list("entrypoint").is_empty() {
        push("entrypoint".into(), CheckKind::Entrypoint(list("entrypoint")));
    }
    if !list("cmd").is_empty() {
        push("cmd".into(), CheckKind::Cmd(list("cmd")));
    }
    if let Some(w) = opt_string(n.attr("workdir")) {
        push("workdir".into(), CheckKind::Workdir(w));
    }
    for (k, v) in string_map(n.attr("env")) {
        push(format!("env {k}"), CheckKind::Env { key: k, value: v, regex: false });
    }
    for p in list("exposed_ports") {
        push(format!("exposed_port {p}"), CheckKind::ExposedPort { port: p, exposed: true });
    }
    for (k, v) in string_map(n.attr("labels")) {
        push(format!("label {k}"), CheckKind::Label { key: k, value: v, regex: true });
    }
    if let Some(s) = opt_string(n.attr("max_size")) {
        let bytes = crate::cache::parse_size(&s).map_err(|e| format!("`max_size`: {e}"))?;
        push("max_size".into(), CheckKind::MaxSize(bytes));
    }
    if bool_attr(n, "no_shell")? {
        push("no_shell".into(), CheckKind::NoShell);
    }
    let modes = string_map(n.attr("file_modes"));
    let owners = string_map(n.attr("file_owners"));
    let mut exist: Vec<String> = list("files");
    exist.extend(modes.keys().chain(owners.keys()).cloned());
    exist.sort();
    exist.dedup();
    for p in exist {
        let mode = match modes.get(&p) {
            Some(m) => Some(parse_mode(m).map_err(|e| format!("`file_modes` of `{p}`: {e}"))?),
            None => None,
        };
        let (uid, gid) = match owners.get(&p) {
            Some(o) => {
                let (u, g) = parse_owner(o).map_err(|e| format!("`file_owners` of `{p}`: {e}"))?;
                (Some(u), Some(g))
            }
            None => (None, None),
        };
        push(format!("file_exists {p}"), CheckKind::FileExists { path: p, mode, uid, gid, executable_by: None });
    }
    for p in list("absent") {
        push(format!("file_absent {p}"), CheckKind::FileAbsent { path: p });
    }
    for (p, re) in string_map(n.attr("file_contents")) {
        push(format!("file_content {p}"), CheckKind::FileContent { path: p, expected: vec![re], excluded: vec![] });
    }
    match n.attr("commands") {
        AttrValue::None => {}
        AttrValue::List(items) => {
            for (i, c) in items.iter().enumerate() {
                let (name, cmd) = command(c).map_err(|e| format!("`commands`[{i}]: {e}"))?;
                push(name, CheckKind::Command(cmd));
            }
        }
        other => return Err(format!("`commands` must be a list of dicts, got `{}`", kind_of(other))),
    }
    match n.attr("service") {
        AttrValue::None => {}
        v => push("service".into(), CheckKind::Service(service(v).map_err(|e| format!("`service`: {e}"))?)),
    }
    Ok(out)
}

/// `0755` (octal, leading zero optional) → permission bits.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("`{s}` is not an octal mode such as \"0755\""))
}

/// `UID:GID` → numbers.
fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not UID:GID (numbers, e.g. \"1000:1000\")");
    let (u, g) = s.split_once(':').ok_or_else(bad)?;
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

fn kind_of(v: &AttrValue) -> &'static str {
    match v {
        AttrValue::None => "None",
        AttrValue::Bool(_) => "bool",
        AttrValue::Int(_) => "int",
        AttrValue::String(_) => "string",
        AttrValue::List(_) => "list",
        AttrValue::Dict(_) => "dict",
        _ => "label",
    }
}

/// A dict of plain data, read key by key; unknown keys are errors.
struct Fields<'a> {
    d: &'a BTreeMap<String, AttrValue>,
}

impl<'a> Fields<'a> {
    fn new(v: &'a AttrValue, known: &[&str]) -> Result<Fields<'a>, String> {
        let d = v.as_dict().ok_or_else(|| format!("expected a dict, got {}", kind_of(v)))?;
        if let Some(k) = d.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("unknown key `{k}` (known: {})", known.join(", ")));
        }
        Ok(Fields { d })
    }
    fn get(&self, k: &str) -> Option<&'a AttrValue> {
        self.d.get(k).filter(|v| !matches!(v, AttrValue::None))
    }
    fn string(&self, k: &str) -> Result<Option<String>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(AttrValue::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("`{k}` must be a string, got {}", kind_of(v))),
        }
    }
    fn int(&self, k: &str) -> Result<Option<i64>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(AttrValue::Int(i)) => Ok(Some(*i)),
            Some(v) => Err(format!("`{k}` must be an int, got {}", kind_of(v))),
        }
    }
    /// A string or a list of strings (regexes: each must match).
    fn strings(&self, k: &str) -> Result<Vec<String>, String> {
        match self.get(k) {
            None => Ok(vec![]),
            Some(AttrValue::String(s)) => Ok(vec![s.clone()]),
            Some(AttrValue::List(l)) => l
                .iter()
                .map(|x| x.as_str().map(String::from).ok_or_else(|| format!("`{k}` must hold strings")))
                .collect(),
            Some(v) => Err(format!("`{k}` must be a string or a list of strings, got {}", kind_of(v))),
        }
    }
    fn env(&self, k: &str) -> Result<BTreeMap<String, String>, String> {
        match self.get(k) {
            None => Ok(BTreeMap::new()),
            Some(AttrValue::Dict(d)) => d
                .iter()
                .map(|(n, v)| match v {
                    AttrValue::String(s) => Ok((n.clone(), s.clone())),
                    _ => Err(format!("`{k}`: the value of `{n}` must be a string")),
                })
                .collect(),
            Some(v) => Err(format!("`{k}` must be a dict of strings, got {}", kind_of(v))),
        }
    }
}

/// One `commands` entry.
fn command(v: &AttrValue) -> Result<(String, CommandCheck), String> {
    let f =
        Fields::new(v, &["name", "cmd", "env", "exit_code", "stdout", "stderr", "excluded_stdout", "excluded_stderr"])?;
    let argv = match f.get("cmd") {
        Some(AttrValue::String(s)) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        Some(AttrValue::List(_)) => f.strings("cmd")?,
        _ => return Err("`cmd` (an argv list, or a string run with /bin/sh -c) is required".into()),
    };
    if argv.is_empty() {
        return Err("`cmd` is empty".into());
    }
    let name = f.string("name")?.unwrap_or_else(|| format!("command {}", argv.join(" ")));
    let exit_code = f.int("exit_code")?.unwrap_or(0);
    let exit_code = i32::try_from(exit_code).map_err(|_| format!("`exit_code` {exit_code} is out of range"))?;
    Ok((
        name,
        CommandCheck {
            argv,
            env: f.env("env")?,
            exit_code,
            stdout: f.strings("stdout")?,
            stderr: f.strings("stderr")?,
            excluded_stdout: f.strings("excluded_stdout")?,
            excluded_stderr: f.strings("excluded_stderr")?,
        },
    ))
}

/// The `service` dict.
fn service(v: &AttrValue) -> Result<ServiceCheck, String> {
    let f = Fields::new(v, &["port", "process", "args", "env", "ready_timeout", "http"])?;
    let port = f.int("port")?.ok_or("`port` (the TCP port the service listens on) is required")?;
    let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| format!("`port` {port} is not a TCP port"))?;
    let ready = f.int("ready_timeout")?.unwrap_or(30);
    if ready <= 0 {
        return Err(format!("`ready_timeout` is {ready}; it must be a positive number of seconds"));
    }
    let mut http = Vec::new();
    if let Some(h) = f.get("http") {
        for (i, c) in h.as_list().iter().enumerate() {
            let g = Fields::new(c, &["path", "status", "body"]).map_err(|e| format!("`http`[{i}]: {e}"))?;
            let status = g.int("status")?.unwrap_or(200);
            http.push(HttpCheck {
                path: g.string("path")?.unwrap_or_else(|| "/".into()),
                status: u16::try_from(status).map_err(|_| format!("`http`[{i}]: status {status} is out of range"))?,
                body: g.string("body")?.unwrap_or_default(),
            });
        }
    }
    Ok(ServiceCheck {
        process: f.string("process")?,
        args: f.get("args").map(|_| f.strings("args")).transpose()?,
        env: f.env("env")?,
        port,
        ready_timeout_secs: ready as u64,
        http,
    })
}
