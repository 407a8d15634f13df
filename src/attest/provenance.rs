//! The provenance of an image: an in-toto Statement v1 whose predicate is SLSA Provenance v1. The
//! builder is cbuild (its version); the build definition names the target, and its resolved
//! dependencies are what the build read: the workspace files that define the target (BUILD.star,
//! loaded `.star` files, lock files, cbuild.toml), the images under it and used to build it, the
//! buildpacks, and every Debian package of its stacks — each with its digest. Deterministic: no
//! invocation id and no time but SOURCE_DATE_EPOCH's.

use serde_json::{json, Value};

use super::facts::{deb_purl, oci_purl, ImageFacts};
use super::spdx::{label_name, registry_repository, to_bytes};

/// The media type of an in-toto statement (JSON).
pub const MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The SLSA Provenance v1 predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What a cbuild build is (`buildDefinition.buildType`).
pub const BUILD_TYPE: &str = "urn:cbuild:buildtype:v1";

/// The builder id: cbuild and its version.
pub fn builder_id() -> String {
    format!("urn:cbuild:builder:{}", env!("CARGO_PKG_VERSION"))
}

/// The statement as bytes (pretty JSON, a final newline).
pub fn statement(f: &ImageFacts) -> Vec<u8> {
    let mut deps: Vec<Value> = Vec::new();
    for (path, d) in &f.definition_files {
        deps.push(
            json!({"name": path, "digest": {"sha256": d.hex()}, "annotations": {"cbuild:kind": "workspace-file"}}),
        );
    }
    for (b, holds) in f.bases.iter().map(|b| (b, true)).chain(f.build_images.iter().map(|b| (b, false))) {
        let repo = b.reference.as_deref().and_then(registry_repository);
        let mut ann = json!({"cbuild:kind": "image", "cbuild:role": b.role, "cbuild:in-image": holds});
        if let Some(l) = &b.layout {
            ann["cbuild:layout"] = json!(l);
        }
        let mut r = json!({
            "uri": oci_purl(label_name(&b.label), &b.digest, None, repo.as_deref()),
            "name": b.label,
            "digest": {"sha256": b.digest.hex()},
            "annotations": ann,
        });
        if let Some(reference) = &b.reference {
            r["downloadLocation"] = json!(reference);
        }
        deps.push(r);
    }
    for b in &f.buildpacks {
        let mut r = json!({
            "name": format!("{}@{}", b.id, b.version),
            "annotations": {"cbuild:kind": "buildpack", "cbuild:source": b.source},
        });
        match &b.digest {
            Some(d) => r["digest"] = json!({"sha256": d.hex()}),
            // A buildpack read from an image: the image is among the dependencies.
            None => r["uri"] = json!(format!("urn:cnb:buildpack:{}@{}", b.id, b.version)),
        }
        deps.push(r);
    }
    for (p, holds) in f.packages.iter().map(|p| (p, true)).chain(f.build_packages.iter().map(|p| (p, false))) {
        deps.push(json!({
            "uri": deb_purl(p),
            "name": p.filename,
            "digest": {"sha256": p.sha256.hex()},
            "annotations": {"cbuild:kind": "deb", "cbuild:lock": p.lock, "cbuild:in-image": holds},
        }));
    }
    let st = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": f.label, "digest": {"sha256": f.manifest.hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"target": f.label},
                "internalParameters": {
                    "SOURCE_DATE_EPOCH": f.created,
                    "platform": format!("{}/{}", f.os, f.architecture),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": builder_id(), "version": {"cbuild": env!("CARGO_PKG_VERSION")}},
                "metadata": {},
                "byproducts": [{
                    "name": "image",
                    "uri": oci_purl(label_name(&f.label), &f.manifest, Some(&f.architecture), None),
                    "digest": {"sha256": f.manifest.hex()},
                    "mediaType": f.media_type,
                }],
            },
        },
    });
    to_bytes(&st)
}
