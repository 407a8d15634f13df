//! The `genrule` runner: `sh -c CMD` in a bubblewrap sandbox with a scratch dir holding only the
//! declared sources; declared outputs are copied into the CAS, anything else is thrown away.
//!
//! Everything under the scratch `work` dir is written by the sandbox and hostile once it ran: the
//! outputs are read through [`Root`] (no symlink anywhere on their path, regular files only) and
//! copied from the descriptor that was checked, never hard-linked (the CAS must not share an inode
//! the sandbox user owns and could still change through another link).

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::ctx::{host_identity, input_digest, RunCtx};
use crate::cache::ComponentValue;
use crate::cache::KeyBuilder;
use crate::execution::events::Event;
use crate::execution::sandbox::{self, Mount, RootFs, SandboxSpec};
use crate::fs::confined::{Kind, Root};
use crate::model::action::{Action, ActionId, ActionKind, ActionOutput, Input, OutFile};

pub fn key(
    kb: KeyBuilder,
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<KeyBuilder, ActionError> {
    let ActionKind::Genrule { srcs, outs, cmd, env, image } = &a.kind else { unreachable!() };
    let mut m = BTreeMap::new();
    for (rel, i) in srcs {
        m.insert(rel.clone(), input_digest(i, deps, ctx)?);
    }
    let kb = kb
        .component("cmd", cmd.as_str())
        .component("srcs", ComponentValue::map(m))
        .component("outs", ComponentValue::list(outs.clone()))
        // Values as digests: env may hold tokens, and key components are stored and uploaded.
        .component("env", ComponentValue::env_map(env));
    let kb = match image {
        // Hermetic: the command sees only the image's root file system.
        Some(id) => match deps.get(id).map(|o| o.as_ref()) {
            Some(ActionOutput::Image { manifest, .. }) => kb.component("image", manifest.to_string()),
            _ => return Err("internal: genrule image missing".into()),
        },
        // The command runs on the host's tools: their identity is part of the key.
        None => kb.component("host", ctx.host_identity.get_or_init(host_identity).as_str()),
    };
    Ok(kb
        // The command sees SOURCE_DATE_EPOCH (tools stamp it into outputs).
        .component("source_date_epoch", ctx.source_date_epoch.to_string()))
}

pub async fn run(
    a: &Action,
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &Arc<RunCtx>,
) -> Result<ActionOutput, ActionError> {
    let ActionKind::Genrule { srcs, outs, cmd, env, image } = &a.kind else { unreachable!() };
    // The root file system: the declared image's (extracted once per digest, sanitized, shared
    // with buildpack sandboxes) or the host's /usr, /bin, /etc.
    let (root_fs, image_path) = match image {
        Some(id) => {
            let out = deps.get(id).ok_or("internal: genrule image missing")?;
            let ActionOutput::Image { manifest, .. } = out.as_ref() else {
                return Err("internal: genrule image missing".into());
            };
            super::pull::ensure_local(out, ctx).await?;
            let (manifest, ctx2) = (manifest.clone(), ctx.clone());
            let (img, rootfs) = tokio::task::spawn_blocking(move || {
                let img = crate::oci::Image::load(ctx2.cache.cas(), &manifest).map_err(|e| ActionError::of(&e))?;
                let (os, arch) = img.platform();
                crate::execution::emulation::check_arch(&os, &arch).map_err(ActionError::env)?;
                let root = super::cnb_common::ensure_rootfs(&img, ctx2.cache.cas())?;
                Ok::<_, ActionError>((img, root))
            })
            .await
            .map_err(|e| ActionError::of(&e))??;
            let path = img
                .config()
                .config()
                .as_ref()
                .and_then(|c| c.env().clone())
                .unwrap_or_default()
                .iter()
                .find_map(|kv| kv.strip_prefix("PATH=").map(String::from));
            (RootFs::Dir(rootfs), path)
        }
        None => (RootFs::Host, None),
    };
    let scratch = sandbox::scratch_dir("genrule-")?;
    let work = scratch.path().join("work");
    std::fs::create_dir_all(&work).map_err(|e| ActionError::of(&e))?;
    // Sources: files of the workspace (`scheduler::hash_sources` refused any that leads outside it;
    // `resolve_source` re-checks) or CAS blobs, copied into a tree only cbuild has written so far.
    for (rel, i) in srcs {
        let dst = work.join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).map_err(|e| ActionError::of(&e))?;
        }
        let src = match i {
            Input::Source(p) => crate::execution::sources::resolve_source(&ctx.root, p)?,
            Input::Output { action, path } => match deps.get(action).map(|o| o.as_ref()) {
                Some(ActionOutput::Files { files }) => match files.get(path) {
                    Some(f) => ctx.cache.cas().path(&f.digest),
                    None => return Err(ActionError::internal(format!("output `{path}` missing"))),
                },
                _ => return Err(ActionError::internal(format!("`{path}` is not an output"))),
            },
        };
        std::fs::copy(&src, &dst).map_err(|e| format!("cannot stage `{}`: {e}", src.display()))?;
    }
    // `/tmp` on disk in the scratch dir (not a tmpfs of half the RAM per sandbox).
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| ActionError::of(&e))?;
    // The sandbox user must be able to write the outputs.
    let (huid, hgid) = sandbox::host_ids(65534, 65534);
    let scratch_root = Root::open(scratch.path()).map_err(|e| ActionError::of(&e))?;
    scratch_root.chown_tree(Path::new(""), huid, hgid).map_err(|e| ActionError::of(&e))?;
    // The descriptor of the `work` dir cbuild created (the sandbox sees it only as its `/work`
    // mount point, so it cannot swap the dir itself); outputs are resolved beneath it after the
    // sandbox exited.
    let work_root = Root::open(&work).map_err(|e| ActionError::of(&e))?;
    let mut spec = SandboxSpec::new(root_fs, vec!["/bin/sh".into(), "-ec".into(), cmd.clone()]);
    spec.mounts.push(Mount::writable(&work, "/work"));
    spec.tmp = Some(tmp);
    spec.cwd = "/work".into();
    spec.uid = 65534;
    spec.gid = 65534;
    spec.env.insert("PATH".into(), image_path.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()));
    spec.env.insert("HOME".into(), "/tmp".into());
    spec.env.insert("SRCS".into(), srcs.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(" "));
    spec.env.insert("OUTS".into(), outs.join(" "));
    spec.env.insert("OUT_DIR".into(), ".".into());
    spec.env.insert("SOURCE_DATE_EPOCH".into(), ctx.source_date_epoch.to_string());
    for (k, v) in env {
        spec.env.insert(k.clone(), v.clone());
    }
    for o in outs {
        if let Some(p) = Path::new(o).parent().filter(|p| !p.as_os_str().is_empty()) {
            work_root.create_dir_all(p, 0o755).map_err(|e| format!("declared output `{o}`: {e}"))?;
            work_root.chown_tree(p, huid, hgid).map_err(|e| ActionError::of(&e))?;
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
    .map_err(|e| ActionError::of(&e))?;
    if !outcome.success() {
        return Err(ActionError::build(format!(
            "the command {}",
            outcome.failure_message(&spec).unwrap_or_else(|| "failed".into())
        )));
    }
    collect_outputs(&work_root, outs, ctx)
}

/// Copies each declared output out of the sandbox-written `work` tree into the CAS. An output must
/// be a regular file reached without any symlink (the command may have replaced a directory on its
/// path by a link to a host directory); it is hashed and copied from the one descriptor that was
/// checked.
fn collect_outputs(work: &Root, outs: &[String], ctx: &RunCtx) -> Result<ActionOutput, ActionError> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = BTreeMap::new();
    for o in outs {
        let rel = Path::new(o);
        let f = match work.open_file(rel) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ActionError::build(format!("declared output `{o}` was not created by the command")))
            }
            Err(e) => return Err(refused_output(work, o, &e).into()),
        };
        let md = f.metadata().map_err(|e| format!("declared output `{o}`: {e}"))?;
        let executable = md.permissions().mode() & 0o111 != 0;
        let (digest, _) = ctx
            .cache
            .cas()
            .put_stream::<crate::cas::CasError>(|w| {
                std::io::copy(&mut std::io::BufReader::new(&f), w)
                    .map(|_| ())
                    .map_err(|source| crate::cas::CasError::Io { path: work.display(rel), source })
            })
            .map_err(|e| ActionError::of(&e))?;
        files.insert(o.clone(), OutFile { digest, executable });
    }
    Ok(ActionOutput::Files { files })
}

/// Why the declared output `o` cannot be read: the symlink on its path (with its target), or what
/// it is instead of a regular file; `err` (from opening it) when nothing more precise is found.
fn refused_output(work: &Root, o: &str, err: &std::io::Error) -> String {
    let full = Path::new(o);
    let mut cur = std::path::PathBuf::new();
    for c in full.components() {
        cur.push(c);
        let last = cur.as_path() == full;
        let what = match work.meta(&cur) {
            Ok(Some(m)) => match m.kind {
                Kind::Symlink => {
                    let target = work.read_link(&cur).map(|t| shown(&t.to_string_lossy())).unwrap_or_default();
                    return format!(
                        "declared output `{o}` is refused: `{}` is a symlink (to `{target}`); cbuild does not follow symlinks in genrule outputs",
                        cur.display()
                    );
                }
                Kind::Dir if !last => continue,
                Kind::Dir => "it is a directory".to_string(),
                Kind::Other if last => "it is a device, FIFO or socket".to_string(),
                _ if !last => format!("`{}` is not a directory", cur.display()),
                Kind::File | Kind::Other => break,
            },
            Ok(None) => break,
            Err(e) => e.to_string(),
        };
        return format!("declared output `{o}` is not a regular file: {what}");
    }
    format!("declared output `{o}` cannot be read: {err}")
}

/// `s` with control characters escaped (a symlink target is chosen by the command).
fn shown(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// The `genrule` action kind's [`Runner`](super::seam::Runner).
pub struct Genrule;

impl super::seam::Runner for Genrule {
    fn mnemonic(&self) -> &'static str {
        "genrule"
    }
    fn version(&self) -> u32 {
        1
    }
    fn sources(&self, a: &Action) -> Vec<(String, bool)> {
        let ActionKind::Genrule { srcs, .. } = &a.kind else { return Vec::new() };
        super::seam::source_paths(srcs.iter().map(|(_, i)| i)).into_iter().map(|p| (p, true)).collect()
    }
    fn key(
        &self,
        kb: KeyBuilder,
        a: &Action,
        deps: &super::seam::Deps,
        ctx: &RunCtx,
    ) -> Result<KeyBuilder, ActionError> {
        key(kb, a, deps, ctx)
    }
    fn run<'a>(
        &'a self,
        a: &'a Action,
        deps: &'a super::seam::Deps,
        ctx: &'a Arc<RunCtx>,
    ) -> super::seam::RunFuture<'a> {
        Box::pin(run(a, deps, ctx))
    }
}
