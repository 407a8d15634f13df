//! `integration_test`: the rule's attributes → one `ImageTest` action with an `IntegrationSpec`,
//! depending on every image's action. Names, ports, readiness and the test command are checked here
//! (located errors); the services start when the test runs (`runners::integration_test`).

use std::collections::BTreeMap;

use super::common::*;
use crate::loading::{AttrValue, TargetNode};
use crate::model::action::*;
use crate::model::label::Label;
use crate::model::test_spec::*;

/// Analyses one `integration_test` target.
pub fn analyze(
    n: &TargetNode,
    provided: &BTreeMap<Label, Provided>,
    ag: &mut ActionGraph,
    opts: &Options,
) -> Result<Provided, String> {
    let images = n.attr("images").as_dict().cloned().unwrap_or_default();
    if images.is_empty() {
        return Err("`images` is empty: name at least one image, e.g. {\"api\": \"//services/api:image\"}".into());
    }
    let ready = dict_of(n.attr("ready"), "ready")?;
    let env = dict_of(n.attr("env"), "env")?;
    let args = dict_of(n.attr("args"), "args")?;
    let processes = string_map(n.attr("processes"));
    for (attr, keys) in [
        ("ready", ready.keys().collect::<Vec<_>>()),
        ("env", env.keys().collect()),
        ("args", args.keys().collect()),
        ("processes", processes.keys().collect()),
    ] {
        if let Some(k) = keys.into_iter().find(|k| !images.contains_key(*k)) {
            return Err(format!(
                "`{attr}` names `{k}`, which is not a key of `images` (keys: {})",
                images.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let mut services = Vec::new();
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    for (name, v) in &images {
        check_name(name)?;
        let AttrValue::Label(l) = v else { return Err(format!("`images`: `{name}` is not a label")) };
        let image = match provided.get(l) {
            Some(Provided::Image(a) | Provided::Pulled(a, _)) => *a,
            _ => return Err(format!("`images`: `{name}` is `{l}`, which is not an image")),
        };
        let r = ready.get(name).ok_or_else(|| {
            format!("`ready` has no entry for `{name}`: give the port it listens on, e.g. {{\"{name}\": 8080}}")
        })?;
        let (port, http_path, http_status, ready_timeout_secs) =
            readiness(r).map_err(|e| format!("`ready` of `{name}`: {e}"))?;
        if let Some(other) = ports.insert(port, name.clone()) {
            return Err(format!(
                "`ready`: `{other}` and `{name}` both use port {port}; the images share one network namespace, so \
                 each needs its own port (set a different PORT in `env` or `args`)"
            ));
        }
        let env = match env.get(name) {
            None => BTreeMap::new(),
            Some(AttrValue::Dict(d)) => d
                .iter()
                .map(|(k, v)| match v {
                    AttrValue::String(s) => Ok((k.clone(), s.clone())),
                    AttrValue::Int(i) => Ok((k.clone(), i.to_string())),
                    _ => Err(format!("`env` of `{name}`: the value of `{k}` must be a string")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(format!("`env` of `{name}` must be a dict of strings")),
        };
        let args = match args.get(name) {
            None => None,
            Some(AttrValue::List(l)) => Some(
                l.iter()
                    .map(|x| {
                        x.as_str().map(String::from).ok_or_else(|| format!("`args` of `{name}` must hold strings"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(format!("`args` of `{name}` must be a list of strings")),
        };
        services.push(ServiceSpec {
            name: name.clone(),
            image,
            label: l.to_string(),
            process: processes.get(name).cloned(),
            args,
            env,
            port,
            http_path,
            http_status,
            ready_timeout_secs,
        });
    }
    let test = test_command(n, provided, opts)?;
    let timeout = int_attr(n, "timeout")?;
    if timeout <= 0 {
        return Err(format!("`timeout` is {timeout}; it must be a positive number of seconds"));
    }
    let deps: Vec<ActionId> = services.iter().map(|s| s.image).collect();
    let spec = TestSpec { timeout_secs: timeout as u64, ..Default::default() };
    let kind = ActionKind::ImageTest {
        image: deps[0],
        spec,
        config: None,
        integration: Some(Box::new(IntegrationSpec { services, test })),
    };
    let mut unique = deps.clone();
    unique.sort();
    unique.dedup();
    Ok(Provided::Test(ag.add(&n.label, kind, unique)))
}

/// A `data` attribute that must be a dict (or unset).
fn dict_of(v: &AttrValue, attr: &str) -> Result<BTreeMap<String, AttrValue>, String> {
    match v {
        AttrValue::None => Ok(BTreeMap::new()),
        AttrValue::Dict(d) => Ok(d.clone()),
        _ => Err(format!("`{attr}` must be a dict keyed by the names in `images`")),
    }
}

/// Service names become env var names (`api` → `API_ADDR`).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`images`: `{name}` is not a service name (letters, digits, `_` and `-`, not starting with a digit)"
        ))
    }
}

/// A `ready` entry: a port, or `{port, http, status, timeout}`.
fn readiness(v: &AttrValue) -> Result<(u16, Option<String>, u16, u64), String> {
    let port_of =
        |p: i64| u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| format!("port {p} is not a TCP port"));
    match v {
        AttrValue::Int(p) => Ok((port_of(*p)?, None, 200, 30)),
        AttrValue::Dict(d) => {
            let known = ["port", "http", "status", "timeout"];
            if let Some(k) = d.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(format!("unknown key `{k}` (known: {})", known.join(", ")));
            }
            let int = |k: &str, default: i64| match d.get(k) {
                None | Some(AttrValue::None) => Ok(default),
                Some(AttrValue::Int(i)) => Ok(*i),
                Some(_) => Err(format!("`{k}` must be an int")),
            };
            let port =
                port_of(int("port", 0).and_then(|p| if p == 0 { Err("`port` is required".into()) } else { Ok(p) })?)?;
            let http = match d.get("http") {
                None | Some(AttrValue::None) => None,
                Some(AttrValue::String(p)) if p.starts_with('/') => Some(p.clone()),
                Some(AttrValue::String(p)) => {
                    return Err(format!("`http` is `{p}`; it must be a path starting with `/`"))
                }
                Some(_) => return Err("`http` must be a path string such as \"/health\"".into()),
            };
            let status = int("status", 200)?;
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..600).contains(s))
                .ok_or_else(|| format!("`status` {status} is not an HTTP status"))?;
            let timeout = int("timeout", 30)?;
            if timeout <= 0 {
                return Err(format!("`timeout` is {timeout}; it must be a positive number of seconds"));
            }
            Ok((port, http, status, timeout as u64))
        }
        _ => Err("expected a port (int) or a dict with `port`, `http`, `status`, `timeout`".into()),
    }
}

/// `test` and `srcs`: `:file` runs a file of the package, anything else is a shell command.
fn test_command(n: &TargetNode, provided: &BTreeMap<Label, Provided>, opts: &Options) -> Result<TestCommand, String> {
    let test = str_attr(n, "test")?.to_string();
    if test.trim().is_empty() {
        return Err("`test` is empty: give a command, or `:file` for an executable file of the package".into());
    }
    let pkg = if n.label.package.is_root() { String::new() } else { n.label.package.to_string() };
    let mut srcs: Vec<(String, String)> = Vec::new();
    for (rel, input) in sources(n, "srcs", provided)?.0 {
        match input {
            Input::Source(p) => srcs.push((rel, p)),
            Input::Output { .. } => {
                return Err(format!("`srcs`: `{rel}` is built by another target; list files of the package"))
            }
        }
    }
    let argv = match test.strip_prefix(':') {
        Some(file) if !file.contains(char::is_whitespace) => {
            let ws = if pkg.is_empty() { file.to_string() } else { format!("{pkg}/{file}") };
            let full = opts.root.join(&ws);
            crate::fs::reads::note(&full, false);
            let md = std::fs::metadata(&full)
                .map_err(|_| format!("`test` is `:{file}`, but `{ws}` is not a file of the package"))?;
            use std::os::unix::fs::PermissionsExt;
            if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
                return Err(format!("`test` is `:{file}`, but `{ws}` is not an executable file (chmod +x it)"));
            }
            if !srcs.iter().any(|(r, _)| r == file) {
                srcs.push((file.to_string(), ws));
            }
            vec![format!("/work/{file}")]
        }
        _ => vec!["/bin/sh".into(), "-ec".into(), test],
    };
    srcs.sort();
    Ok(TestCommand { argv, env: string_map(n.attr("test_env")), srcs })
}
