//! The build session's attestations: for every image target it writes, cbuild's SBOMs (SPDX,
//! CycloneDX) and provenance as OCI artifacts whose `subject` is the image, in a referrers layout
//! beside the image's (`cbuild-out/<package>/<name>.referrers/`); `push` sends the same artifacts
//! to the registry. The documents come from [`crate::attest`]; this file only wires them in.

use std::collections::{BTreeMap, BTreeSet};

use crate::attest::{Attachment, Inputs};
use crate::cache::Cache;
use crate::cli::output::Failure;
use crate::execution::BuildReport;
use crate::model::action::ActionGraph;
use crate::model::digest::Digest;
use crate::model::label::Label;

/// Per package (`services/api`; `""` for the root): its BUILD file and the `.star` files it loads.
pub fn package_files(loaded: &crate::loading::Loaded) -> BTreeMap<String, BTreeSet<String>> {
    loaded.package_inputs.iter().map(|(p, i)| (p.as_str().to_string(), i.files.clone())).collect()
}

/// What every attestation of one session reads.
pub struct Attester<'a> {
    pub root: &'a std::path::Path,
    pub graph: &'a ActionGraph,
    pub report: &'a BuildReport,
    pub cache: &'a Cache,
    pub package_files: &'a BTreeMap<String, BTreeSet<String>>,
    pub source_date_epoch: u64,
}

impl Attester<'_> {
    /// The attachments of image target `l` (manifest `manifest`); with `layout` (the image's layout,
    /// workspace-relative), also written as the referrers layout beside it.
    pub fn attest(&self, l: &Label, manifest: &Digest, layout: Option<&str>) -> Result<Vec<Attachment>, Failure> {
        let memo = self.cache.dir().join("attest");
        let inp = Inputs {
            root: self.root,
            graph: self.graph,
            outputs: &self.report.outputs,
            cas: self.cache.cas(),
            source_date_epoch: self.source_date_epoch,
            package_files: self.package_files,
            memo_dir: Some(&memo),
        };
        let atts = crate::attest::attest(&inp, l, manifest)
            .map_err(|e| Failure::of_in(format_args!("making the SBOMs and provenance of `{l}`"), &e))?;
        if let Some(rel) = layout {
            let dir = crate::attest::referrers_dir(rel);
            crate::attest::artifact::write_layout(&self.root.join(&dir), &atts).map_err(|e| {
                Failure::env(anyhow::anyhow!(
                    "writing the referrers of `{l}` to `{dir}`: {}",
                    crate::execution::chain(&e)
                ))
            })?;
        }
        Ok(atts)
    }
}

/// The attachments as the registry client pushes them.
pub fn artifacts(atts: &[Attachment]) -> Vec<crate::registry::referrers::Artifact> {
    atts.iter()
        .map(|a| crate::registry::referrers::Artifact {
            manifest: a.manifest.clone(),
            blobs: a.blobs.iter().map(|(_, b)| b.clone()).collect(),
            descriptor: a.descriptor(),
        })
        .collect()
}
