//! Stamping (`--stamp`), as Bazel's `--stamp` and rules_oci do it: `{NAME}` placeholders in a
//! target's `tags` and `labels` are filled from the commit and the build — `GIT_SHA`,
//! `GIT_SHORT_SHA`, `GIT_BRANCH`, `BUILD_TIMESTAMP` (seconds since the epoch) — and from the
//! `KEY VALUE` lines the `build.workspace_status` command of `cbuild.toml` prints (Bazel's
//! `--workspace_status_command`).
//!
//! Stamping happens after the build, on the final image only: the config's declared labels are
//! rewritten and a new manifest made around the same layers. No action key contains a stamp
//! value, so a new commit reruns no layer, buildpack or export action. Without `--stamp`,
//! placeholders stay as written (the image stays reproducible) and a tag with a placeholder cannot
//! be pushed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::cas::BlobDir;
use crate::cli::output::Failure;
use crate::model::digest::Digest;

/// The `{NAME}` placeholders in `s` (NAME: upper-case letters, digits, `_`; starting with a letter).
pub fn placeholders(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        rest = &rest[i + 1..];
        let Some(j) = rest.find('}') else { break };
        let name = &rest[..j];
        let mut chars = name.chars();
        if chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            out.push(name.to_string());
            rest = &rest[j + 1..];
        }
    }
    out
}

/// Fills the placeholders of `s`; `what` names it in the error for one without a value.
pub fn expand(s: &str, values: &BTreeMap<String, String>, what: &str) -> Result<String, Failure> {
    let mut out = s.to_string();
    for p in placeholders(s) {
        let v = values.get(&p).ok_or_else(|| {
            Failure::user_hint(
                format!("{what}: `{{{p}}}` has no value while stamping"),
                format!(
                    "known: {}; add `{p} VALUE` to the output of `build.workspace_status` in cbuild.toml",
                    values.keys().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        out = out.replace(&format!("{{{p}}}"), v);
    }
    Ok(out)
}

/// The stamp values: git facts of the workspace (when it is a git checkout), the build time, and
/// the `workspace_status` command's `KEY VALUE` lines (which win).
pub fn values(root: &Path, workspace_status: Option<&str>, now: u64) -> Result<BTreeMap<String, String>, Failure> {
    let mut v = BTreeMap::new();
    v.insert("BUILD_TIMESTAMP".to_string(), now.to_string());
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|s| !s.is_empty())
    };
    if let Some(sha) = git(&["rev-parse", "HEAD"]) {
        v.insert("GIT_SHORT_SHA".to_string(), sha.chars().take(12).collect());
        v.insert("GIT_SHA".to_string(), sha);
    }
    if let Some(b) = git(&["rev-parse", "--abbrev-ref", "HEAD"]) {
        v.insert("GIT_BRANCH".to_string(), b);
    }
    if let Some(cmd) = workspace_status {
        let o =
            Command::new("sh").arg("-c").arg(cmd).current_dir(root).output().map_err(|e| {
                Failure::user(format!("cbuild.toml `build.workspace_status` (`{cmd}`) cannot start: {e}"))
            })?;
        if !o.status.success() {
            return Err(Failure::user(format!(
                "cbuild.toml `build.workspace_status` (`{cmd}`) failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        for (i, line) in String::from_utf8_lossy(&o.stdout).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (k, val) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            if placeholders(&format!("{{{k}}}")).len() != 1 {
                return Err(Failure::user(format!(
                    "`build.workspace_status` output line {}: `{k}` is not a stamp key (upper-case letters, digits, `_`)",
                    i + 1
                )));
            }
            v.insert(k.to_string(), val.trim().to_string());
        }
    }
    Ok(v)
}

/// The image `manifest` with the declared `labels` that hold placeholders filled in (others and
/// every layer untouched); `None` when nothing needs stamping. The new config and manifest are
/// stored in `blobs`.
pub fn stamp_image(
    blobs: &BlobDir,
    manifest: &Digest,
    labels: &BTreeMap<String, String>,
    values: &BTreeMap<String, String>,
    target: &str,
) -> Result<Option<Digest>, Failure> {
    let mut patch = crate::oci::image::ConfigPatch::default();
    for (k, v) in labels {
        if !placeholders(v).is_empty() {
            patch.labels.insert(k.clone(), expand(v, values, &format!("label `{k}` of `{target}`"))?);
        }
    }
    if patch.labels.is_empty() {
        return Ok(None);
    }
    let img = crate::oci::Image::load(blobs, manifest).map_err(|e| Failure::of(&e))?;
    let stamped = crate::oci::image::with_config(&img, &patch).map_err(|e| Failure::of(&e))?;
    let (d, _) = stamped.write_to(blobs).map_err(|e| Failure::of(&e))?;
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_upper_case_names_in_braces() {
        assert_eq!(placeholders("r/app:{GIT_SHA}-{BUILD_TIMESTAMP}"), ["GIT_SHA", "BUILD_TIMESTAMP"]);
        assert!(placeholders("{\"json\": 1} {lower} {} {9X}").is_empty());
        let v: BTreeMap<String, String> = [("GIT_SHA".to_string(), "abc".to_string())].into();
        assert_eq!(expand("x:{GIT_SHA}", &v, "t").unwrap(), "x:abc");
        let e = expand("x:{NOPE}", &v, "tag `x:{NOPE}`").unwrap_err().render();
        assert!(e.contains("{NOPE}") && e.contains("no value") && e.contains("{GIT_SHA}"), "{e}");
    }

    #[test]
    fn workspace_status_lines_win_and_bad_keys_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let v = values(d.path(), Some("echo 'RELEASE 1.2.3'; echo 'GIT_BRANCH main'"), 42).unwrap();
        assert_eq!(v["RELEASE"], "1.2.3");
        assert_eq!(v["GIT_BRANCH"], "main");
        assert_eq!(v["BUILD_TIMESTAMP"], "42");
        assert!(values(d.path(), Some("echo 'bad-key x'"), 0).is_err());
        assert!(values(d.path(), Some("exit 3"), 0).is_err());
    }
}
