//! Rebase of a CNB app image onto a new run image, as pure functions on image values: the safety
//! checks of the platform spec (rebasable label, target or stack-id/mixins, run image name) and the
//! layer swap up to `runImage.topLayer`, with the lifecycle labels updated. No I/O: the CLI fetches
//! manifests and configs (never app layers) and pushes the result.

use serde_json::Value;

use crate::cnb::launch::LifecycleMetadata;
use crate::model::digest::Digest;
use crate::oci::image::{canonical_json, rebase_with, Image};

/// Why a rebase cannot be done (without `--force` for the checks that allow it).
#[derive(Debug, thiserror::Error)]
pub enum RebaseError {
    #[error("`{0}` is not a Cloud Native Buildpacks app image (no `io.buildpacks.lifecycle.metadata` label)")]
    NotCnb(String),
    #[error("`{image}`: {reason}")]
    Invalid { image: String, reason: String },
    #[error("refusing to rebase `{image}`:\n{}\nhint: pass --force to rebase anyway", .refusals.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Refused { image: String, refusals: Vec<String> },
}

/// The outcome of a successful rebase.
pub struct Rebased {
    pub image: Image,
    /// Checks skipped because of `force`, each saying what was skipped.
    pub warnings: Vec<String>,
}

fn labels(img: &Image) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_slice(img.config_bytes()).unwrap_or(Value::Null);
    v["config"]["Labels"].as_object().cloned().unwrap_or_default()
}

fn env_var(img: &Image, name: &str) -> Option<String> {
    let v: Value = serde_json::from_slice(img.config_bytes()).ok()?;
    v["config"]["Env"]
        .as_array()?
        .iter()
        .filter_map(|e| e.as_str())
        .find_map(|e| e.strip_prefix(&format!("{name}=")).map(String::from))
}

fn label<'a>(l: &'a serde_json::Map<String, Value>, k: &str) -> Option<&'a str> {
    l.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty())
}

/// `registry/repository` of a reference, for comparing run image names (tags and digests ignored).
fn repo_of(name: &str) -> String {
    crate::model::reference::Reference::parse(name)
        .map(|r| format!("{}/{}", r.registry(), r.repository()))
        .unwrap_or_else(|_| name.to_string())
}

fn api_at_least_0_12(api: &str) -> bool {
    let mut it = api.split('.');
    let major: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let minor: u32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (major, minor) >= (0, 12)
}

/// Rebases `app` (named `app_name` in messages) onto `new_run`, which was found as `new_run_name`
/// at `new_run_digest`. Checks per platform.md › Rebase; `force` turns refusals into warnings.
/// `explicit`: the user named the run image (`--run-image`), which is honoured as `pack rebase`
/// does — the recorded name and mirrors are not required to match; the checks that protect the
/// image (os/arch and distro, or stack id and mixins) still apply.
pub fn rebase(
    app: &Image,
    app_name: &str,
    new_run: &Image,
    new_run_name: &str,
    new_run_digest: &Digest,
    explicit: bool,
    force: bool,
) -> Result<Rebased, RebaseError> {
    let al = labels(app);
    let nl = labels(new_run);
    let md_text =
        label(&al, "io.buildpacks.lifecycle.metadata").ok_or_else(|| RebaseError::NotCnb(app_name.to_string()))?;
    let mut md = LifecycleMetadata::from_label(md_text).map_err(|e| RebaseError::Invalid {
        image: app_name.into(),
        reason: format!("its `io.buildpacks.lifecycle.metadata` label is not valid: {e}"),
    })?;
    let mut refusals = Vec::new();
    if label(&al, "io.buildpacks.rebasable") == Some("false") {
        refusals.push("the image says it is not rebasable (`io.buildpacks.rebasable=false`)".to_string());
    }
    let (aos, aarch) = app.platform();
    let (nos, narch) = new_run.platform();
    match env_var(app, "CNB_PLATFORM_API") {
        Some(api) if api_at_least_0_12(&api) => {
            if aos != nos || aarch != narch {
                refusals
                    .push(format!("target mismatch: the image is {aos}/{aarch}, the new run image is {nos}/{narch}"));
            }
            for k in ["io.buildpacks.base.distro.name", "io.buildpacks.base.distro.version"] {
                if let (Some(n), Some(a)) = (label(&nl, k), label(&al, k)) {
                    if n != a {
                        refusals.push(format!(
                            "target mismatch: `{k}` is `{a}` on the image but `{n}` on the new run image"
                        ));
                    }
                }
            }
        }
        // Platform API < 0.12 (stack-id model): same stack id, and the new run image has every mixin.
        _ => {
            let (a, n) = (label(&al, "io.buildpacks.stack.id"), label(&nl, "io.buildpacks.stack.id"));
            if a != n {
                refusals.push(format!(
                    "stack mismatch: the image was built for stack `{}`, the new run image is `{}`",
                    a.unwrap_or("?"),
                    n.unwrap_or("?")
                ));
            }
            let mixins = |l: &serde_json::Map<String, Value>| -> Vec<String> {
                label(l, "io.buildpacks.stack.mixins")
                    .and_then(|m| serde_json::from_str::<Vec<String>>(m).ok())
                    .unwrap_or_default()
            };
            let have = mixins(&nl);
            let missing: Vec<String> = mixins(&al).into_iter().filter(|m| !have.contains(m)).collect();
            if !missing.is_empty() {
                refusals.push(format!("the new run image lacks mixins {missing:?}"));
            }
        }
    }
    let recorded = md.run_image.image.clone();
    let known: Vec<String> = std::iter::once(recorded.clone())
        .chain(md.run_image.mirrors.iter().cloned())
        .filter(|s| !s.is_empty())
        .map(|s| repo_of(&s))
        .collect();
    let name_ok = known.is_empty() || known.contains(&repo_of(new_run_name));
    let mut warnings = Vec::new();
    if !name_ok && explicit {
        warnings.push(format!(
            "the image records run image `{recorded}`; rebasing onto `{new_run_name}` as --run-image asks"
        ));
    } else if !name_ok {
        refusals.push(format!(
            "the new run image `{new_run_name}` is neither the recorded run image `{recorded}` nor one of its mirrors"
        ));
    }
    if !refusals.is_empty() {
        if !force {
            return Err(RebaseError::Refused { image: app_name.into(), refusals });
        }
        warnings.extend(refusals.iter().map(|r| format!("--force: skipped the check that refuses when {r}")));
    }

    // Swap the layers up to runImage.topLayer.
    let diff_ids = app.diff_ids();
    let top = Digest::parse(&md.run_image.top_layer).map_err(|_| RebaseError::Invalid {
        image: app_name.into(),
        reason: format!("runImage.topLayer `{}` is not a digest", md.run_image.top_layer),
    })?;
    let idx = diff_ids.iter().position(|d| d == &top).ok_or_else(|| RebaseError::Invalid {
        image: app_name.into(),
        reason: format!("runImage.topLayer `{top}` is not one of its layers"),
    })?;
    let old_base_config = serde_json::json!({
        "architecture": aarch, "os": aos,
        "rootfs": {"type": "layers", "diff_ids": diff_ids[..=idx].iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "config": {},
    });
    let inv = |e: crate::oci::OciError| RebaseError::Invalid { image: app_name.into(), reason: e.to_string() };
    let old_base = Image::from_config_bytes(
        canonical_json(&old_base_config, "old base config").map_err(inv)?,
        &app.layers()[..=idx],
    )
    .map_err(inv)?;
    let swapped = rebase_with(app, &old_base, new_run, force).map_err(inv)?;

    // Labels: runImage follows the new run image; base/stack labels are the new run image's.
    md.run_image.top_layer = new_run.diff_ids().last().map(|d| d.to_string()).unwrap_or_default();
    md.run_image.reference = new_run_digest.to_string();
    if !name_ok {
        md.run_image.image = new_run_name.to_string();
        md.run_image.mirrors.clear();
    }
    if let Some(st) = &mut md.stack {
        st.run_image.image = md.run_image.image.clone();
        st.run_image.mirrors = md.run_image.mirrors.clone();
    }
    let mut cfg: Value = serde_json::from_slice(swapped.config_bytes())
        .map_err(|e| RebaseError::Invalid { image: app_name.into(), reason: e.to_string() })?;
    let mut new_labels: serde_json::Map<String, Value> = al
        .into_iter()
        .filter(|(k, _)| !k.starts_with("io.buildpacks.base.") && !k.starts_with("io.buildpacks.stack."))
        .collect();
    for (k, v) in nl {
        if k.starts_with("io.buildpacks.base.") || k.starts_with("io.buildpacks.stack.") {
            new_labels.insert(k, v);
        }
    }
    new_labels.insert("io.buildpacks.lifecycle.metadata".into(), Value::String(md.to_label()));
    cfg["config"]["Labels"] = Value::Object(new_labels);
    let bytes = canonical_json(&cfg, "rebased config").map_err(inv)?;
    let image = Image::from_config_bytes(bytes, swapped.layers()).map_err(inv)?;
    Ok(Rebased { image, warnings })
}
