//! Checks a remote entry against the action it is to answer before any of it is used or stored
//! locally: a result that is not an output of the right shape is an unusable entry (a miss with a
//! warning), never a local cache entry that breaks the next build. No HTTP here.
//!
//! What is checked: the result parses as an [`ActionOutput`] and is exactly its canonical JSON
//! (so unknown fields or another writer's encoding are refused); its variant is the one the
//! action kind produces; a file output has exactly the files the action declares (dependents
//! index it by those names); the blobs it references are exactly the entry's blobs, and sizes
//! recorded in the output agree with the entry; after the download, every blob has the listed
//! size and an image's manifest names its config and only layers the output has.

use std::collections::{BTreeMap, BTreeSet};

use crate::cas::BlobDir;
use crate::model::action::{ActionKind, ActionOutput};
use crate::model::digest::Digest;

use super::entry::RemoteEntry;

/// Largest image manifest read (registries commonly refuse manifests over 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// What a valid output of one action looks like; cheap to build and to move between threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// `files`, `layer`, `data` or `image`.
    variant: &'static str,
    /// For file outputs: exactly these names.
    files: Option<BTreeSet<String>>,
}

impl Expected {
    /// A `data` output (e.g. a target's CNB cache state).
    pub fn data() -> Expected {
        Expected { variant: "data", files: None }
    }

    /// The expectation for an action of `kind`.
    pub fn of(kind: &ActionKind) -> Expected {
        let (variant, files) = match kind {
            ActionKind::Genrule { outs, .. } => ("files", Some(outs.iter().cloned().collect())),
            ActionKind::Buildpack { files, .. } => ("files", Some(files.iter().map(|(n, _)| n.clone()).collect())),
            ActionKind::Layer { .. } => ("layer", None),
            ActionKind::CnbDetect(_)
            | ActionKind::CnbBuild { .. }
            | ActionKind::ImageTest { .. }
            | ActionKind::ReadBuilder { .. }
            | ActionKind::ReadBuildpackage { .. } => ("data", None),
            ActionKind::ImportImage { .. }
            | ActionKind::Image { .. }
            | ActionKind::PullImage { .. }
            | ActionKind::DebianImage(_)
            | ActionKind::CnbExport(_)
            | ActionKind::BuilderRunImage { .. }
            | ActionKind::BuilderImage(_)
            | ActionKind::Buildpackage { .. } => ("image", None),
            ActionKind::ImageIndex { .. } => ("index", None),
        };
        Expected { variant, files }
    }
}

fn variant(o: &ActionOutput) -> &'static str {
    match o {
        ActionOutput::Files { .. } => "files",
        ActionOutput::Layer { .. } => "layer",
        ActionOutput::Data { .. } => "data",
        ActionOutput::Image { .. } => "image",
        ActionOutput::Index { .. } => "index",
    }
}

/// The entry's result as an output of the expected shape, checked against the entry's blob list.
pub fn check_result(expected: &Expected, entry: &RemoteEntry) -> Result<ActionOutput, String> {
    let out: ActionOutput =
        serde_json::from_str(&entry.result_json).map_err(|e| format!("the result is not an action output: {e}"))?;
    if out.to_json() != entry.result_json {
        return Err("the result is not in the canonical form cbuild writes".into());
    }
    if variant(&out) != expected.variant {
        return Err(format!("the result is a `{}` output, this action produces `{}`", variant(&out), expected.variant));
    }
    let sizes: BTreeMap<&Digest, u64> = entry.blobs.iter().map(|(d, n)| (d, *n)).collect();
    let mut referenced = BTreeSet::new();
    for d in out.blobs() {
        if !sizes.contains_key(&d) {
            return Err(format!("the result references blob `{d}`, which the entry does not list"));
        }
        referenced.insert(d);
    }
    if referenced.len() != sizes.len() {
        return Err("the entry lists blobs the result does not reference".into());
    }
    match &out {
        ActionOutput::Files { files } => {
            let names: BTreeSet<String> = files.keys().cloned().collect();
            if let Some(want) = &expected.files {
                if &names != want {
                    let missing: Vec<&String> = want.difference(&names).collect();
                    let extra: Vec<&String> = names.difference(want).collect();
                    return Err(format!(
                        "the result's files differ from the action's (missing {missing:?}, extra {extra:?})"
                    ));
                }
            }
        }
        ActionOutput::Layer { digest, size, .. } => {
            if sizes[digest] != *size {
                return Err(format!("the layer is {size} bytes in the result and {} in the entry", sizes[digest]));
            }
        }
        ActionOutput::Data { json, .. } => {
            serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| format!("the result's data is not JSON: {e}"))?;
        }
        ActionOutput::Image { manifest, manifest_size, .. } => check_manifest_size(manifest, *manifest_size, &sizes)?,
        ActionOutput::Index { index, index_size, images } => {
            check_manifest_size(index, *index_size, &sizes)?;
            for i in images {
                match i {
                    ActionOutput::Image { manifest, manifest_size, .. } => {
                        check_manifest_size(manifest, *manifest_size, &sizes)?
                    }
                    other => return Err(format!("the index lists a `{}` output, not an image", variant(other))),
                }
            }
        }
    }
    Ok(out)
}

fn check_manifest_size(manifest: &Digest, manifest_size: u64, sizes: &BTreeMap<&Digest, u64>) -> Result<(), String> {
    if manifest_size > MAX_MANIFEST_BYTES {
        return Err(format!("the manifest is {manifest_size} bytes (at most {MAX_MANIFEST_BYTES} are read)"));
    }
    if sizes[manifest] != manifest_size {
        return Err(format!(
            "the manifest is {manifest_size} bytes in the result and {} in the entry",
            sizes[manifest]
        ));
    }
    Ok(())
}

/// The blobs [`check_fetched`] reads (manifests, configs, indexes): a lazy hit fetches them.
pub fn metadata_blobs(out: &ActionOutput) -> BTreeSet<Digest> {
    match out {
        ActionOutput::Image { manifest, config, .. } => [manifest.clone(), config.clone()].into(),
        ActionOutput::Index { index, images, .. } => {
            let mut s: BTreeSet<Digest> = images.iter().flat_map(metadata_blobs).collect();
            s.insert(index.clone());
            s
        }
        _ => BTreeSet::new(),
    }
}

/// Checks of an output whose blobs are now local (downloaded and digest-verified): an image's
/// manifest must name the output's config and only layers the output has (local or remote).
pub fn check_fetched(out: &ActionOutput, local: &BlobDir) -> Result<(), String> {
    if let ActionOutput::Index { index, images, .. } = out {
        // The index must list exactly the result's images, in order.
        let bytes = local.read_verified(index).map_err(|e| format!("index `{index}`: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("index `{index}` is not JSON: {e}"))?;
        let listed: Vec<String> = v["manifests"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.get("digest").and_then(|d| d.as_str()).map(str::to_string))
            .collect();
        let ours: Vec<String> = images
            .iter()
            .filter_map(|i| match i {
                ActionOutput::Image { manifest, .. } => Some(manifest.to_string()),
                _ => None,
            })
            .collect();
        if listed != ours {
            return Err(format!("index `{index}` does not list the result's images"));
        }
        for i in images {
            check_fetched(i, local)?;
        }
        return Ok(());
    }
    let ActionOutput::Image { manifest, config, blobs, remote, .. } = out else { return Ok(()) };
    let bytes = local.read_verified(manifest).map_err(|e| format!("manifest `{manifest}`: {e}"))?;
    let m: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("manifest `{manifest}` is not JSON: {e}"))?;
    let digest_of = |v: &serde_json::Value| v.get("digest").and_then(|d| d.as_str()).map(str::to_string);
    if digest_of(&m["config"]).as_deref() != Some(config.to_string().as_str()) {
        return Err(format!("manifest `{manifest}` does not name the config `{config}`"));
    }
    let known: BTreeSet<String> = blobs.iter().chain(remote.iter().map(|r| &r.digest)).map(|d| d.to_string()).collect();
    for l in m["layers"].as_array().map(Vec::as_slice).unwrap_or_default() {
        match digest_of(l) {
            Some(d) if known.contains(&d) => {}
            other => {
                return Err(format!(
                    "manifest `{manifest}` has a layer `{}` the result does not list",
                    other.unwrap_or_default()
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::action::OutFile;

    fn entry(out: &ActionOutput, blobs: &[(Digest, u64)]) -> RemoteEntry {
        RemoteEntry {
            result_json: out.to_json(),
            components_json: "[]".into(),
            blobs: blobs.to_vec(),
            signer: None,
            exec_ms: None,
        }
    }

    fn layer_kind() -> ActionKind {
        ActionKind::Layer {
            files: vec![],
            mode: None,
            uid: 0,
            gid: 0,
            symlinks: Default::default(),
            dirs: Default::default(),
            compression: "gzip".into(),
        }
    }

    #[test]
    fn shapes_and_blob_lists_must_match_the_action() {
        let d = Digest::of_bytes(b"layer");
        let layer = ActionOutput::Layer { diff_id: d.clone(), digest: d.clone(), size: 5, media_type: "m".into() };
        let want = Expected::of(&layer_kind());
        assert_eq!(check_result(&want, &entry(&layer, &[(d.clone(), 5)])).unwrap(), layer);
        // Wrong size, a missing or an extra blob, another variant, junk, non-canonical JSON.
        assert!(check_result(&want, &entry(&layer, &[(d.clone(), 6)])).unwrap_err().contains("bytes"));
        assert!(check_result(&want, &entry(&layer, &[])).unwrap_err().contains("does not list"));
        let extra = [(d.clone(), 5), (Digest::of_bytes(b"x"), 1)];
        assert!(check_result(&want, &entry(&layer, &extra)).unwrap_err().contains("does not reference"));
        let files = ActionOutput::Files {
            files: [("out.txt".to_string(), OutFile { digest: d.clone(), executable: false })].into(),
        };
        assert!(check_result(&want, &entry(&files, &[(d.clone(), 5)])).unwrap_err().contains("`files` output"));
        let mut e = entry(&layer, &[(d.clone(), 5)]);
        e.result_json = "{not json".into();
        assert!(check_result(&want, &e).unwrap_err().contains("not an action output"));
        e.result_json = layer.to_json().replacen('{', "{ ", 1);
        assert!(check_result(&want, &e).unwrap_err().contains("canonical"));
        e.result_json = layer.to_json().replacen('{', r#"{"evil":1,"#, 1);
        assert!(check_result(&want, &e).is_err());

        // A genrule's file output must have exactly its declared outs.
        let genrule = ActionKind::Genrule {
            srcs: vec![],
            outs: vec!["out.txt".into()],
            cmd: String::new(),
            env: Default::default(),
            image: None,
        };
        let want = Expected::of(&genrule);
        assert!(check_result(&want, &entry(&files, &[(d.clone(), 5)])).is_ok());
        let other = ActionOutput::Files {
            files: [("../../etc/x".to_string(), OutFile { digest: d.clone(), executable: false })].into(),
        };
        let e = check_result(&want, &entry(&other, &[(d, 5)])).unwrap_err();
        assert!(e.contains("missing [\"out.txt\"]") && e.contains("../../etc/x"), "{e}");
    }
}
