//! `cbuild verify PATTERNS`: are the targets reproducible? First the recorded build — what `cbuild
//! build` gives now (the local cache, and the remote cache when one is set: so a CI's results are
//! checked against a local rebuild), with its layouts in `cbuild-out/` — then a rebuild of the same
//! targets from an empty temporary cache with no remote cache (nothing written to `cbuild-out/`).
//! Every requested target's output is compared: an image by manifest digest, naming the first layer
//! that differs (or the config), files by digest; for a difference, the first action (in build
//! order) whose output differs is named as its cause. Exit 1 when any target differs.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use serde_json::{json, Value};

use super::session::{build, build_with, print_summary, Built, Layouts};
use crate::cli::output::Failure;
use crate::cli::settings::{GlobalArgs, Settings};
use crate::model::action::{ActionId, ActionOutput};
use crate::model::digest::Digest;
use crate::oci::Image;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Targets to verify: //pkg:name, //pkg/..., //...
    #[arg(required = true, value_name = "PATTERNS")]
    pub patterns: Vec<String>,
    /// Keep the rebuild's temporary cache (its path is printed), to look at what differs.
    #[arg(long)]
    pub keep: bool,
}

pub fn run(g: &GlobalArgs, a: VerifyArgs) -> Result<ExitCode, Failure> {
    let s = Settings::resolve(g)?;
    // `.deb` downloads are verified by sha256 and are inputs, not results: the rebuild's empty cache
    // shares the recorded build's download cache (set before any thread starts).
    if crate::env::var_os(crate::env::DEBIAN_CACHE).is_none() {
        std::env::set_var(crate::env::DEBIAN_CACHE, &s.cache_dir);
    }
    let mut quiet = s.clone();
    quiet.json = false;
    quiet.quiet = true;
    let recorded = build(quiet.clone(), &a.patterns, false)?;
    if !recorded.report.ok() {
        print_summary(&recorded);
        return Ok(crate::cli::output::report_exit_code(&recorded.report));
    }
    let tmp = tempfile::Builder::new().prefix("cbuild-verify-").tempdir().map_err(Failure::env)?;
    if !s.quiet && !s.json {
        eprintln!(
            "verify: recorded build done; rebuilding from an empty cache in `{}`, without a remote cache",
            tmp.path().display()
        );
    }
    let mut fresh = quiet;
    fresh.cache_dir = tmp.path().to_path_buf();
    fresh.remote_cache = None;
    fresh.remote_executor = None;
    let rebuilt = build_with(fresh, &a.patterns, false, Layouts::None)?;
    if !rebuilt.report.ok() {
        print_summary(&rebuilt);
        eprintln!("verify: the rebuild from an empty cache failed where the recorded build did not");
        return Ok(crate::cli::output::report_exit_code(&rebuilt.report));
    }
    let results = compare(&recorded, &rebuilt)?;
    let different = results.iter().filter(|r| r["result"] == "different").count();
    if a.keep {
        let kept = tmp.keep();
        eprintln!("verify: the rebuild's cache is kept in `{}`", kept.display());
    }
    if s.json {
        crate::outln!(
            "{}",
            json!({"type": "verify", "targets": results, "identical": results.len() - different, "different": different})
        );
    } else {
        for r in &results {
            print_result(r);
        }
        eprintln!(
            "verify: {} targets rebuilt from an empty cache: {} identical, {different} different",
            results.len(),
            results.len() - different
        );
    }
    Ok(if different == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::model::error::ErrorKind::Build.exit_code())
    })
}

fn print_result(r: &Value) {
    let label = r["label"].as_str().unwrap_or_default();
    if r["result"] == "identical" {
        crate::outln!("{label} identical {}", r["recorded"].as_str().unwrap_or_default());
        return;
    }
    crate::outln!(
        "{label} DIFFERENT recorded {} rebuilt {}",
        r["recorded"].as_str().unwrap_or("-"),
        r["rebuilt"].as_str().unwrap_or("-")
    );
    if let Some(l) = r.get("first_layer") {
        crate::outln!(
            "  first differing layer: #{} `{}` ({} -> {})",
            l["index"],
            l["created_by"].as_str().unwrap_or_default(),
            l["recorded"].as_str().unwrap_or("-"),
            l["rebuilt"].as_str().unwrap_or("-")
        );
    }
    if let Some(c) = r.get("config") {
        crate::outln!("  config differs: {}", c.as_str().unwrap_or_default());
    }
    if let Some(f) = r.get("files") {
        let names: Vec<&str> = f.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        crate::outln!("  files differ: {}", names.join(", "));
    }
    if let Some(c) = r.get("cause") {
        crate::outln!(
            "  first differing action: `{}` {}{}",
            c["label"].as_str().unwrap_or_default(),
            c["action"].as_str().unwrap_or_default(),
            c["detail"].as_str().map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
}

/// One result object per requested target that has an output.
fn compare(a: &Built, b: &Built) -> Result<Vec<Value>, Failure> {
    // The two analyses of one workspace give the same graph; checked, or causes are not named.
    let aligned = a.graph.actions.len() == b.graph.actions.len()
        && a.graph.actions.iter().zip(&b.graph.actions).all(|(x, y)| x.label == y.label && x.kind == y.kind);
    let mut out = Vec::new();
    for l in &a.requested {
        let (Some(&ia), Some(&ib)) = (a.graph.target_outputs.get(l), b.graph.target_outputs.get(l)) else {
            continue;
        };
        let (Some(oa), Some(ob)) = (a.report.outputs[ia].clone(), b.report.outputs[ib].clone()) else { continue };
        let mut r = json!({"label": l.to_string(), "kind": a.graph.actions[ia].kind.mnemonic()});
        let same = match (oa.as_ref(), ob.as_ref()) {
            (ActionOutput::Image { manifest: ma, .. }, ActionOutput::Image { manifest: mb, .. }) => {
                r["recorded"] = json!(ma.to_string());
                r["rebuilt"] = json!(mb.to_string());
                if ma != mb {
                    image_difference(&mut r, a, ma, b, mb)?;
                }
                ma == mb
            }
            (x, y) => {
                r["recorded"] = json!(output_digest(x));
                r["rebuilt"] = json!(output_digest(y));
                if let Some(files) = file_difference(x, y) {
                    r["files"] = json!(files);
                }
                x == y
            }
        };
        r["result"] = json!(if same { "identical" } else { "different" });
        if !same && aligned {
            if let Some(c) = first_difference(a, b, ia) {
                r["cause"] = c;
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// The digest naming an output that is not an image (its canonical JSON's sha256).
fn output_digest(o: &ActionOutput) -> String {
    Digest::of_bytes(o.to_json().as_bytes()).to_string()
}

/// The names of the files that differ between two `Files` outputs (added, removed or changed).
fn file_difference(x: &ActionOutput, y: &ActionOutput) -> Option<Vec<String>> {
    let (ActionOutput::Files { files: fx }, ActionOutput::Files { files: fy }) = (x, y) else { return None };
    let names: BTreeSet<&String> = fx.keys().chain(fy.keys()).collect();
    Some(names.into_iter().filter(|n| fx.get(*n) != fy.get(*n)).cloned().collect())
}

/// Adds `first_layer` (index, what made it, diff_ids) or `config` (which keys differ) to `r`.
fn image_difference(r: &mut Value, a: &Built, ma: &Digest, b: &Built, mb: &Digest) -> Result<(), Failure> {
    let ia = Image::load(a.cache.cas(), ma).map_err(Failure::env)?;
    let ib = Image::load(b.cache.cas(), mb).map_err(Failure::env)?;
    let history: Vec<String> = crate::oci::image::history(ia.config())
        .iter()
        .filter(|h| !h.empty_layer().unwrap_or(false))
        .map(|h| h.created_by().clone().unwrap_or_default())
        .collect();
    let (la, lb) = (ia.layers(), ib.layers());
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        if x.map(|l| (&l.diff_id, &l.digest)) != y.map(|l| (&l.diff_id, &l.digest)) {
            let same_content = x.map(|l| &l.diff_id) == y.map(|l| &l.diff_id);
            r["first_layer"] = json!({
                "index": i,
                "created_by": history.get(i).cloned().unwrap_or_default(),
                "recorded": x.map(|l| l.diff_id.to_string()),
                "rebuilt": y.map(|l| l.diff_id.to_string()),
                // Same files, other compressed bytes: the compressor is not deterministic.
                "same_content": same_content,
            });
            return Ok(());
        }
    }
    let (ca, cb): (Value, Value) = (
        serde_json::from_slice(ia.config_bytes()).map_err(Failure::env)?,
        serde_json::from_slice(ib.config_bytes()).map_err(Failure::env)?,
    );
    let mut keys: Vec<String> = Vec::new();
    for (k, v) in ca.as_object().into_iter().flatten() {
        if k == "config" {
            for (ck, cv) in v.as_object().into_iter().flatten() {
                if cb["config"].get(ck) != Some(cv) {
                    keys.push(format!("config.{ck}"));
                }
            }
        } else if cb.get(k) != Some(v) {
            keys.push(k.clone());
        }
    }
    r["config"] =
        json!(if keys.is_empty() { "the manifest (same layers and config)".to_string() } else { keys.join(", ") });
    Ok(())
}

/// The first action (in build order) among `target`'s dependencies, itself included, whose output
/// differs between the two builds.
fn first_difference(a: &Built, b: &Built, target: ActionId) -> Option<Value> {
    let mut todo = vec![target];
    let mut closure = BTreeSet::new();
    while let Some(i) = todo.pop() {
        if closure.insert(i) {
            todo.extend(a.graph.actions[i].deps.iter().copied());
        }
    }
    for i in closure {
        let (x, y): (Option<Arc<ActionOutput>>, Option<Arc<ActionOutput>>) =
            (a.report.outputs[i].clone(), b.report.outputs[i].clone());
        let (Some(x), Some(y)) = (x, y) else { continue };
        if x == y {
            continue;
        }
        let act = &a.graph.actions[i];
        let detail = match file_difference(&x, &y) {
            Some(f) if !f.is_empty() => Some(format!("files {}", f.join(", "))),
            _ => match (x.as_ref(), y.as_ref()) {
                (ActionOutput::Layer { diff_id: p, .. }, ActionOutput::Layer { diff_id: q, .. }) => {
                    Some(format!("layer {p} -> {q}"))
                }
                _ => None,
            },
        };
        return Some(json!({"label": act.label.to_string(), "action": act.kind.mnemonic(), "detail": detail}));
    }
    None
}
