//! The `genrule` runner: `sh -c CMD` in a bubblewrap sandbox with a scratch dir holding only the
//! declared sources; declared outputs are moved into the CAS, anything else is thrown away.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{input_digest, RunCtx};
use crate::cache::ComponentValue;
use crate::cache::KeyBuilder;
use crate::execution::events::Event;
use crate::execution::sandbox::{self, Mount, RootFs, SandboxSpec};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, Input, OutFile};

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, String> {
    let ActionKind::Genrule { srcs, outs, cmd, env } = &a.kind else { unreachable!() };
    let mut m = BTreeMap::new();
    for (rel, i) in srcs {
        m.insert(rel.clone(), input_digest(i, deps, ctx)?);
    }
    Ok(kb
        .component("cmd", cmd.as_str())
        .component("srcs", ComponentValue::map(m))
        .component("outs", ComponentValue::list(outs.clone()))
        .component("env", ComponentValue::map(env.clone())))
}

pub async fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<ActionOutput, String> {
    let ActionKind::Genrule { srcs, outs, cmd, env } = &a.kind else { unreachable!() };
    let scratch = sandbox::scratch_dir("genrule-")?;
    let work = scratch.path().join("work");
    std::fs::create_dir_all(&work).map_err(|e| crate::execution::chain(&e))?;
    for (rel, i) in srcs {
        let dst = work.join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).map_err(|e| crate::execution::chain(&e))?;
        }
        let src = match i {
            Input::Source(p) => ctx.root.join(p),
            Input::Output { action, path } => match deps.get(action).map(|o| o.as_ref()) {
                Some(ActionOutput::Files { files }) => ctx.cache.cas().path(&files[path].digest),
                _ => return Err(format!("internal: `{path}` is not an output")),
            },
        };
        std::fs::copy(&src, &dst).map_err(|e| format!("cannot stage `{}`: {e}", src.display()))?;
    }
    // The sandbox user must be able to write the outputs.
    let (huid, hgid) = sandbox::host_ids(65534, 65534);
    super::cnb_common::chown_tree(scratch.path(), huid, hgid);
    let mut spec = SandboxSpec::new(RootFs::Host, vec!["/bin/sh".into(), "-ec".into(), cmd.clone()]);
    spec.mounts.push(Mount::writable(&work, "/work"));
    spec.cwd = "/work".into();
    spec.uid = 65534;
    spec.gid = 65534;
    spec.env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    spec.env.insert("HOME".into(), "/tmp".into());
    spec.env.insert("SRCS".into(), srcs.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(" "));
    spec.env.insert("OUTS".into(), outs.join(" "));
    spec.env.insert("OUT_DIR".into(), ".".into());
    spec.env.insert("SOURCE_DATE_EPOCH".into(), ctx.source_date_epoch.to_string());
    for (k, v) in env {
        spec.env.insert(k.clone(), v.clone());
    }
    for o in outs {
        if let Some(p) = work.join(o).parent() {
            let _ = std::fs::create_dir_all(p);
            super::cnb_common::chown_tree(p, huid, hgid);
        }
    }
    let (label, reporter) = (a.label.to_string(), ctx.reporter.clone());
    let outcome = sandbox::run(&spec, |line| {
        reporter.event(&Event::Output {
            label: label.clone(),
            action: "genrule".into(),
            stream: format!("{:?}", line.stream).to_lowercase(),
            line: line.text,
        });
    })
    .await
    .map_err(|e| crate::execution::chain(&e))?;
    if !outcome.success() {
        return Err(match (outcome.exit_code, outcome.signal, outcome.timed_out) {
            (_, _, true) => "the command timed out".to_string(),
            (Some(c), _, _) => format!("the command exited with status {c}"),
            (_, Some(s), _) => format!("the command was killed by signal {s}"),
            _ => "the command failed".to_string(),
        });
    }
    let mut files = BTreeMap::new();
    for o in outs {
        let p = work.join(o);
        let md = std::fs::symlink_metadata(&p)
            .map_err(|_| format!("declared output `{o}` was not created by the command"))?;
        if !md.is_file() {
            return Err(format!("declared output `{o}` is not a regular file"));
        }
        use std::os::unix::fs::PermissionsExt;
        let executable = md.permissions().mode() & 0o111 != 0;
        let bytes_digest = {
            let f = std::fs::File::open(&p).map_err(|e| crate::execution::chain(&e))?;
            let (d, _) = crate::model::digest::Digest::of_reader(std::io::BufReader::new(f))
                .map_err(|e| crate::execution::chain(&e))?;
            d
        };
        ctx.cache.cas().link_or_copy_from(&p, &bytes_digest).map_err(|e| crate::execution::chain(&e))?;
        files.insert(o.clone(), OutFile { digest: bytes_digest, executable });
    }
    Ok(ActionOutput::Files { files })
}
