//! The `genrule` runner: `sh -c CMD` in a bubblewrap sandbox whose `/work` holds only the declared
//! sources; declared outputs are copied into the CAS, anything else is thrown away.
//!
//! `/work` is the target's kept input tree (an [`app_dir`](super::app_dir), like a `cnb_image`'s
//! workspace), reconciled before each run to exactly what a fresh copy would hold: a one-file edit
//! of a 2,000-file genrule copies one file instead of creating and later deleting 2,000 inodes
//! (issue 23: that churn made the benchmark's shared-lib edit 0.95 s of genrule instead of 0.2 s).
//! An entry is kept only if untouched since cbuild wrote it (inode, size, mtime, ctime); what the
//! last command wrote or changed is removed or copied again, never trusted.
//!
//! Everything under `work` is written by the sandbox and hostile once it ran: the
//! outputs are read through [`Root`] (no symlink anywhere on their path, regular files only) and
//! copied from the descriptor that was checked, never hard-linked (the CAS must not share an inode
//! the sandbox user owns and could still change through another link).

use crate::execution::ActionError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::app_dir::{self, AppDir, Want};
use super::ctx::{host_identity, input_digest, RunCtx};
use crate::cache::ComponentValue;
use crate::cache::KeyBuilder;
use crate::execution::events::Event;
use crate::execution::sandbox::{self, Mount, RootFs, SandboxSpec};
use crate::fs::confined::{Kind, Root};
use crate::fs::stat::FileStat;
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
        let mut d = input_digest(i, deps, ctx)?;
        // The command sees a source's executable bit (`./gen.sh`); an output's is in its digest.
        if let Input::Source(p) = i {
            if source_executable(p, ctx)? {
                d.push_str("+x");
            }
        }
        m.insert(rel.clone(), d);
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
    // `/tmp` on disk in a scratch dir (not a tmpfs of half the RAM per sandbox).
    let scratch = sandbox::scratch_dir("genrule-")?;
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| ActionError::of(&e))?;
    // The sandbox user must be able to write the outputs (and `/tmp`).
    let (huid, hgid) = sandbox::host_ids(65534, 65534);
    let scratch_root = Root::open(scratch.path()).map_err(|e| ActionError::of(&e))?;
    scratch_root.chown_tree(Path::new(""), huid, hgid).map_err(|e| ActionError::of(&e))?;
    // `/work`: the declared sources, in the target's kept input tree brought up to date in place
    // (what a fresh copy would hold, see `app_dir`; the last run's outputs and anything else its
    // command left are removed), or a fresh copy when another build holds that tree. Sources are
    // workspace files (`scheduler::hash_sources` refused any that leads outside it;
    // `resolve_source` re-checks) or CAS blobs.
    let want = work_wants(srcs, outs, deps, ctx)?;
    let kept = AppDir::open(&ctx.cache, &format!("{}#genrule", a.label))?;
    let work = match &kept {
        Some(dir) => {
            dir.reconcile(&want, huid, hgid, ctx.source_date_epoch)?;
            dir.workspace.clone()
        }
        None => {
            let work = scratch.path().join("work");
            std::fs::create_dir_all(&work).map_err(|e| ActionError::of(&e))?;
            app_dir::populate_fresh(&work, &want, huid, hgid, ctx.source_date_epoch)?;
            work
        }
    };
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
    let out = collect_outputs(&work_root, outs, ctx);
    // Held until the outputs are read: no other build reconciles the tree meanwhile.
    drop(kept);
    out
}

/// What `/work` must hold before the command runs: the directories of the declared outputs, and
/// each source (a workspace file, links followed, or another action's output) as a file whose mode
/// is 0755 or 0644 from its executable bit (like git: checkouts made with umask 022 and 002 give
/// the command the same tree; the bit is keyed, see [`key`]) and whose identity covers its content
/// and how the source looked when it was hashed, so a kept copy of an unchanged source is
/// recognised and any other is copied again.
fn work_wants(
    srcs: &[(String, Input)],
    outs: &[String],
    deps: &BTreeMap<ActionId, Arc<ActionOutput>>,
    ctx: &RunCtx,
) -> Result<BTreeMap<String, Want>, ActionError> {
    let canon_root = crate::execution::sources::canonical_root(&ctx.root)?;
    let mut out = BTreeMap::new();
    for (rel, i) in srcs {
        let w = match i {
            Input::Source(p) => {
                let src = crate::execution::sources::resolve_source_in(&ctx.root, &canon_root, p)?;
                let (hash, st) = source_state(p, &src, ctx)?;
                let mode = if st.mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let id =
                    format!("src:{hash}:{mode:o}:{}:{}:{}:{}:{}", st.size, st.mtime_ns, st.ctime_ns, st.ino, st.dev);
                Want::File { src, id, mode: Some(mode) }
            }
            Input::Output { action, path } => Want::of_output(action, path, deps, ctx.cache.cas())?,
        };
        out.insert(rel.clone(), w);
    }
    // The directories the outputs go to exist (the build user's, with the epoch mtime, like every
    // directory of the tree) and are no source.
    for o in outs {
        let mut dir = Path::new(o).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let d_str = d.to_string_lossy().into_owned();
            if matches!(out.get(&d_str), Some(Want::File { .. } | Want::Symlink { .. })) {
                return Err(ActionError::user(format!(
                    "declared output `{o}` cannot be written: `{d_str}` is one of the sources, not a directory"
                )));
            }
            out.insert(d_str, Want::Dir);
            dir = d.parent();
        }
    }
    Ok(out)
}

/// Whether the source `p` (what a link leads to) has an executable bit, from its stamp (no I/O:
/// keys are made on every build) or, without one, a stat now.
fn source_executable(p: &str, ctx: &RunCtx) -> Result<bool, ActionError> {
    match ctx.sources.stamp(p) {
        Some(st) => Ok(st.executable()),
        None => {
            let src = crate::execution::sources::resolve_source(&ctx.root, p)?;
            let st = FileStat::stat(&src).map_err(|e| format!("reading source `{p}`: {e}"))?;
            Ok(st.mode & 0o111 != 0)
        }
    }
}

/// A source's blake3 and its stat (of what a link leads to): the digest and stamp taken when it was
/// hashed or, where sources are staged without them (a remote worker), hashed and stat'ed now.
fn source_state(p: &str, resolved: &Path, ctx: &RunCtx) -> Result<(String, FileStat), ActionError> {
    let stat_now = || FileStat::stat(resolved).map_err(|e| ActionError::from(format!("reading source `{p}`: {e}")));
    Ok(match ctx.sources.get(p) {
        Some((digest, Some(st))) => (digest.to_string(), st.file_stat()),
        Some((digest, None)) => (digest.to_string(), stat_now()?),
        None => {
            let st = stat_now()?;
            let hash = ctx.cache.file_hasher().hash_file(resolved).map_err(|e| ActionError::of(&e))?;
            (hash.to_string(), st)
        }
    })
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
        // 2: sources are staged 0755/0644 with the SOURCE_DATE_EPOCH mtime, and a source's `+x`
        // is keyed (1 copied the checkout's mode and gave the copy time as the mtime).
        2
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
