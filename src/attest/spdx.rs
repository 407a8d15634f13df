//! cbuild's SBOM of an image as an SPDX 2.3 JSON document: the image (a `CONTAINER` package), the
//! Debian packages it holds (purl, sha256 of the `.deb`), the images under it, the buildpacks that
//! built it, and the buildpacks' own SBOM files in its SBOM layer (SPDX files, SHA-1 and SHA-256),
//! tied together by relationships. Deterministic: elements sorted, ids derived from names, the
//! one timestamp from SOURCE_DATE_EPOCH.

use serde_json::{json, Value};

use super::facts::{deb_purl, oci_purl, ImageFacts};

/// The media type of an SPDX JSON document.
pub const MEDIA_TYPE: &str = "application/spdx+json";

/// The document as bytes (pretty JSON, a final newline).
pub fn document(f: &ImageFacts) -> Vec<u8> {
    let mut ids = Ids::default();
    let image_id = ids.make("Image", &f.label);
    let hex = f.manifest.hex().to_string();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": f.label,
        "versionInfo": f.manifest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
        "externalRefs": [purl_ref(&oci_purl(label_name(&f.label), &f.manifest, Some(&f.architecture), None))],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!("OCI image {} ({}/{}) built by cbuild", f.manifest, f.os, f.architecture),
    })];
    let mut files = Vec::new();
    let mut rels = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", &image_id, None)];
    let mut extracted: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();

    for p in &f.packages {
        let id = ids.make("Deb", &format!("{}-{}-{}", p.name, p.version, p.architecture));
        let (declared, comment) = match &p.licenses {
            Some(ls) if !ls.is_empty() => (
                license_expression(ls, &mut extracted),
                format!("as stated in /usr/share/doc/{}/copyright (DEP-5): {}", p.name, ls.join("; ")),
            ),
            _ => (
                "NOASSERTION".to_string(),
                "not known: the image has no machine-readable copyright file for it, and the lock pins no licences"
                    .to_string(),
            ),
        };
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": "Organization: Debian",
            "packageFileName": p.filename.rsplit('/').next().unwrap_or(&p.filename),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256.hex()}],
            "externalRefs": [purl_ref(&deb_purl(p))],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "licenseComments": comment,
            "copyrightText": "NOASSERTION",
            "comment": format!("{} ({}) from `{}` of `{}`", p.filename, p.suite, p.lock, p.image),
        }));
        rels.push(rel(&image_id, "CONTAINS", &id, None));
    }
    for (b, in_image) in f.bases.iter().map(|b| (b, true)).chain(f.build_images.iter().map(|b| (b, false))) {
        let id = ids.make("Image", &format!("{}-{}", b.role, b.label));
        let repo = b.reference.as_deref().and_then(registry_repository);
        let mut p = json!({
            "SPDXID": id,
            "name": b.reference.clone().unwrap_or_else(|| b.label.clone()),
            "versionInfo": b.digest.to_string(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [{"algorithm": "SHA256", "checksumValue": b.digest.hex()}],
            "externalRefs": [purl_ref(&oci_purl(label_name(&b.label), &b.digest, None, repo.as_deref()))],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": format!("{} `{}`", b.role, b.label),
        });
        match (&b.reference, &b.layout) {
            (Some(r), _) => p["sourceInfo"] = json!(format!("pulled from `{r}`")),
            (None, Some(l)) => p["sourceInfo"] = json!(format!("imported from `{l}` in the workspace")),
            (None, None) => p["sourceInfo"] = json!(format!("built by cbuild from `{}`", b.label)),
        }
        packages.push(p);
        if in_image {
            rels.push(rel(&image_id, "DESCENDANT_OF", &id, Some(&format!("its {} `{}`", b.role, b.label))));
        } else {
            rels.push(rel(&id, "BUILD_TOOL_OF", &image_id, Some(&format!("{} `{}`", b.role, b.label))));
        }
    }
    let mut bp_ids = Vec::new();
    for b in &f.buildpacks {
        let id = ids.make("Buildpack", &format!("{}-{}", b.id, b.version));
        let mut p = json!({
            "SPDXID": id,
            "name": b.id,
            "versionInfo": b.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": format!("Cloud Native Buildpack from `{}`", b.source),
        });
        if let Some(d) = &b.digest {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": d.hex()}]);
        }
        if let Some(h) = &b.homepage {
            p["homepage"] = json!(h);
        }
        if !b.licenses.is_empty() {
            p["licenseComments"] = json!(format!("buildpack.toml declares {}", b.licenses.join(", ")));
        }
        packages.push(p);
        rels.push(rel(&id, "BUILD_TOOL_OF", &image_id, None));
        bp_ids.push((b.id.clone(), id));
    }
    for s in &f.cnb_sboms {
        let id = ids.make("File", &s.path);
        files.push(json!({
            "SPDXID": id,
            "fileName": format!(".{}", s.path),
            "fileTypes": ["SPDX", "DOCUMENTATION"],
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": s.sha1},
                {"algorithm": "SHA256", "checksumValue": s.sha256.hex()},
            ],
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": format!(
                "CNB SBOM ({}) of buildpack `{}`{}",
                crate::cnb::sbom::media_type(&s.format).unwrap_or("unknown format"),
                s.buildpack,
                s.layer.as_ref().map(|l| format!(", layer `{l}`")).unwrap_or_default()
            ),
        }));
        // A metafile of the image (the image package is not file-analysed: CONTAINS would claim
        // to list its files).
        rels.push(rel(&id, "METAFILE_OF", &image_id, Some("in the image's SBOM layer")));
        if let Some((_, bp)) = bp_ids.iter().find(|(b, _)| *b == s.buildpack) {
            rels.push(rel(bp, "OTHER", &id, Some("the buildpack's SBOM of what it put in the image")));
        }
    }
    packages[1..].sort_by(|a, b| a["SPDXID"].as_str().cmp(&b["SPDXID"].as_str()));
    rels.sort_by_key(|r| r.to_string());
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} {}", f.label, f.manifest),
        "documentNamespace": format!("https://cbuild.invalid/spdx/{}/{}", slug(&f.label), f.manifest.to_string().replace(':', "-")),
        "creationInfo": {
            "created": f.created,
            "creators": [format!("Tool: cbuild-{}", env!("CARGO_PKG_VERSION"))],
            "comment": "Made by cbuild from its build graph: Debian packages from the lock files of the stacks, buildpacks and images from the build's inputs.",
        },
        "packages": packages,
        "files": files,
        "relationships": rels,
        "hasExtractedLicensingInfos": extracted.into_values().collect::<Vec<_>>(),
    });
    to_bytes(&doc)
}

/// Pretty JSON with a final newline (serde_json's maps are sorted: the same value, the same bytes).
pub(crate) fn to_bytes(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("JSON values serialise");
    b.push(b'\n');
    b
}

/// An SPDX licence expression for Debian licence short names (`GPL-2+ or Artistic`): all of them
/// (`AND`), each name its SPDX id where there is an exact one, else a `LicenseRef-Debian-…` added
/// to `extracted` (SPDX requires a text for it: it points at the copyright files).
fn license_expression(names: &[String], extracted: &mut std::collections::BTreeMap<String, Value>) -> String {
    let mut terms = Vec::new();
    for n in names {
        let mut parts: Vec<String> = Vec::new();
        let mut cur: Vec<&str> = Vec::new();
        let mut flush = |cur: &mut Vec<&str>, parts: &mut Vec<String>| {
            if cur.is_empty() {
                return;
            }
            let name = cur.join(" ");
            cur.clear();
            let id = match crate::debian::copyright::spdx_id(&name) {
                Some(id) => id.to_string(),
                None => {
                    let id = format!("LicenseRef-Debian-{}", slug(&name));
                    extracted.entry(id.clone()).or_insert_with(|| {
                        json!({
                            "licenseId": id,
                            "name": name,
                            "extractedText": format!("The licence Debian calls `{name}`: its text is in the copyright files (/usr/share/doc/<package>/copyright) of the packages that state it."),
                        })
                    });
                    id
                }
            };
            parts.push(id);
        };
        for w in n.split_whitespace() {
            if w.eq_ignore_ascii_case("or") || w.eq_ignore_ascii_case("and") {
                flush(&mut cur, &mut parts);
                parts.push(w.to_uppercase());
            } else {
                cur.push(w);
            }
        }
        flush(&mut cur, &mut parts);
        // A dangling operator (`GPL-2+ or`) is not an expression: keep the names only.
        while parts.last().is_some_and(|p| p == "OR" || p == "AND") {
            parts.pop();
        }
        if parts.first().is_some_and(|p| p == "OR" || p == "AND") {
            parts.remove(0);
        }
        if parts.is_empty() {
            continue;
        }
        terms.push(if parts.len() > 1 { format!("({})", parts.join(" ")) } else { parts.remove(0) });
    }
    terms.sort();
    terms.dedup();
    if terms.is_empty() {
        "NOASSERTION".to_string()
    } else {
        terms.join(" AND ")
    }
}

fn purl_ref(purl: &str) -> Value {
    json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl})
}

fn rel(a: &str, kind: &str, b: &str, comment: Option<&str>) -> Value {
    let mut r = json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b});
    if let Some(c) = comment {
        r["comment"] = json!(c);
    }
    r
}

/// The target name of a label (`image` of `//services/api:image`).
pub(crate) fn label_name(label: &str) -> &str {
    label.rsplit(':').next().unwrap_or(label).rsplit('/').next().unwrap_or(label)
}

/// `registry/repo` of a registry reference (`registry/repo:tag@sha256:…`); `None` for a path.
pub(crate) fn registry_repository(reference: &str) -> Option<String> {
    let r = crate::model::reference::Reference::parse(reference).ok()?;
    Some(format!("{}/{}", r.registry(), r.repository()))
}

/// Letters, digits, `.` and `-` only (SPDX ids, URL segments).
pub(crate) fn slug(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

/// Unique SPDX ids made from names.
#[derive(Default)]
struct Ids(std::collections::BTreeSet<String>);

impl Ids {
    fn make(&mut self, kind: &str, name: &str) -> String {
        let base = format!("SPDXRef-{kind}-{}", slug(name));
        let mut id = base.clone();
        let mut n = 2;
        while !self.0.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_slugs() {
        assert_eq!(slug("//services/api:image"), "services-api-image");
        let mut ids = Ids::default();
        assert_eq!(ids.make("Deb", "libc6 2.36"), "SPDXRef-Deb-libc6-2.36");
        assert_eq!(ids.make("Deb", "libc6_2.36"), "SPDXRef-Deb-libc6-2.36-2");
        assert_eq!(label_name("//services/api:image"), "image");
        assert_eq!(registry_repository("127.0.0.1:5000/base/run:1").as_deref(), Some("127.0.0.1:5000/base/run"));
    }
}
