//! cbuild's SBOM of an image as a CycloneDX 1.5 JSON BOM: the image as `metadata.component` (a
//! container), the Debian packages it holds, the images under it, and the buildpacks that built it
//! (`scope: excluded`: not in the image) with their SBOM files linked as `bom` external references
//! (the path in the image and its SHA-256). Deterministic: components sorted, the serial number a
//! UUID derived from the image digest and label, the one timestamp from SOURCE_DATE_EPOCH.

use serde_json::{json, Value};

use super::facts::{deb_purl, oci_purl, ImageFacts};
use super::spdx::{label_name, registry_repository, to_bytes};
use crate::model::digest::Digest;

/// The media type of a CycloneDX JSON BOM.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// The BOM as bytes (pretty JSON, a final newline).
pub fn document(f: &ImageFacts) -> Vec<u8> {
    let image_ref = format!("image:{}", f.manifest);
    let mut components: Vec<Value> = Vec::new();
    let mut in_image: Vec<String> = Vec::new();
    for p in &f.packages {
        let purl = deb_purl(p);
        let stated = match &p.licenses {
            Some(ls) if !ls.is_empty() => format!("stated in /usr/share/doc/{}/copyright (DEP-5)", p.name),
            _ => "unknown: the image has no machine-readable copyright file for it, and the lock pins no licences"
                .to_string(),
        };
        let mut c = json!({
            "type": "library",
            "bom-ref": purl,
            "supplier": {"name": "Debian"},
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "hashes": [{"alg": "SHA-256", "content": p.sha256.hex()}],
            "properties": [
                {"name": "cbuild:deb:architecture", "value": p.architecture},
                {"name": "cbuild:deb:filename", "value": p.filename},
                {"name": "cbuild:deb:lock", "value": p.lock},
                {"name": "cbuild:deb:licenses", "value": stated},
            ],
        });
        if let Some(ls) = p.licenses.as_ref().filter(|l| !l.is_empty()) {
            let v: Vec<Value> = ls
                .iter()
                .map(|l| match crate::debian::copyright::spdx_id(l) {
                    Some(id) => json!({"license": {"id": id}}),
                    None => json!({"license": {"name": l}}),
                })
                .collect();
            c["licenses"] = json!(v);
        }
        components.push(c);
        in_image.push(purl);
    }
    let mut built_with: Vec<String> = Vec::new();
    for (b, holds) in f.bases.iter().map(|b| (b, true)).chain(f.build_images.iter().map(|b| (b, false))) {
        let repo = b.reference.as_deref().and_then(registry_repository);
        let r = format!("{}:{}:{}", b.role, b.label, b.digest);
        let mut c = json!({
            "type": "container",
            "bom-ref": r,
            "name": b.reference.clone().unwrap_or_else(|| b.label.clone()),
            "version": b.digest.to_string(),
            "purl": oci_purl(label_name(&b.label), &b.digest, None, repo.as_deref()),
            "hashes": [{"alg": "SHA-256", "content": b.digest.hex()}],
            "properties": [
                {"name": "cbuild:role", "value": b.role},
                {"name": "cbuild:label", "value": b.label},
            ],
        });
        if !holds {
            c["scope"] = json!("excluded");
        }
        if let Some(l) = &b.layout {
            c["properties"].as_array_mut().unwrap().push(json!({"name": "cbuild:layout", "value": l}));
        }
        components.push(c);
        if holds {
            in_image.push(r)
        } else {
            built_with.push(r)
        }
    }
    for b in &f.buildpacks {
        let r = format!("buildpack:{}@{}", b.id, b.version);
        let mut c = json!({
            "type": "application",
            "bom-ref": r,
            "name": b.id,
            "version": b.version,
            "scope": "excluded",
            "description": "Cloud Native Buildpack that built the image",
            "properties": [{"name": "cbuild:source", "value": b.source}],
        });
        if let Some(d) = &b.digest {
            c["hashes"] = json!([{"alg": "SHA-256", "content": d.hex()}]);
        }
        if !b.licenses.is_empty() {
            c["licenses"] = json!(b.licenses.iter().map(|l| json!({"license": {"name": l}})).collect::<Vec<_>>());
        }
        let mut refs: Vec<Value> = Vec::new();
        if let Some(h) = &b.homepage {
            refs.push(json!({"type": "website", "url": h}));
        }
        for s in f.cnb_sboms.iter().filter(|s| s.buildpack == b.id) {
            refs.push(json!({
                "type": "bom",
                "url": format!("file://{}", s.path),
                "comment": format!(
                    "the buildpack's SBOM ({}){} in the image's SBOM layer",
                    crate::cnb::sbom::media_type(&s.format).unwrap_or("unknown format"),
                    s.layer.as_ref().map(|l| format!(" of layer `{l}`")).unwrap_or_default()
                ),
                "hashes": [{"alg": "SHA-256", "content": s.sha256.hex()}],
            }));
        }
        if !refs.is_empty() {
            c["externalReferences"] = json!(refs);
        }
        components.push(c);
        built_with.push(r);
    }
    components.sort_by(|a, b| a["bom-ref"].as_str().cmp(&b["bom-ref"].as_str()));
    in_image.sort();
    let mut dependencies = vec![json!({"ref": image_ref, "dependsOn": in_image})];
    for c in &components {
        if c["bom-ref"] != image_ref {
            dependencies.push(json!({"ref": c["bom-ref"], "dependsOn": []}));
        }
    }
    built_with.sort();
    let doc = json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_from(&format!("cbuild cyclonedx\n{}\n{}", f.label, f.manifest))),
        "version": 1,
        "metadata": {
            "timestamp": f.created,
            "tools": {"components": [{"type": "application", "name": "cbuild", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": f.label,
                "version": f.manifest.to_string(),
                "purl": oci_purl(label_name(&f.label), &f.manifest, Some(&f.architecture), None),
                "hashes": [{"alg": "SHA-256", "content": f.manifest.hex()}],
                "properties": [
                    {"name": "cbuild:label", "value": f.label},
                    {"name": "cbuild:platform", "value": format!("{}/{}", f.os, f.architecture)},
                    {"name": "cbuild:built-with", "value": built_with.join(" ")},
                ],
            },
        },
        "components": components,
        "dependencies": dependencies,
    });
    to_bytes(&doc)
}

/// A version-8 (custom) UUID made from the sha256 of `s`: the same input, the same id.
pub fn uuid_from(s: &str) -> String {
    let d = Digest::of_bytes(s.as_bytes());
    let mut b: Vec<u8> = hex::decode(d.hex()).unwrap_or_default();
    b.truncate(16);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn serial_numbers_are_uuids_and_stable() {
        let a = super::uuid_from("x");
        assert_eq!(a, super::uuid_from("x"));
        assert_ne!(a, super::uuid_from("y"));
        let re = regex::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$").unwrap();
        assert!(re.is_match(&a), "{a}");
    }
}
