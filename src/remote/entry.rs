//! How one cbuild action result is laid out in a Bazel HTTP cache: the `/ac/<key>` value is an
//! `ActionResult` whose output files are every referenced blob (`blobs/<n>`) plus
//! `cbuild-result.json`, a CAS blob holding the result and key components. No HTTP here.
//!
//! `cbuild-result.json` is an envelope (format [`ENVELOPE_FORMAT`]) around the entry record
//! (format [`ENTRY_FORMAT`]): `{"format":2,"entry":"<record JSON>","signature":{"public_key":
//! "<base64>","signature":"<base64>"}}`. The record is carried as a string so the signed bytes are
//! exactly the bytes read back (no re-serialisation); see [`super::signing`] for what is signed.
//! A bare record (format 1, written before entries were signed) reads as an unsigned entry.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::signing::{PublicKey, SigningKey, SIGNATURE_LEN};
use crate::model::digest::{Blake3, Digest};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, Digest as ProtoDigest, ExecutedActionMetadata, OutputFile,
};
use prost::Message as _;

/// Path of the output file whose blob holds cbuild's own result JSON.
pub const RESULT_FILE: &str = "cbuild-result.json";
/// `execution_metadata.worker` of entries cbuild writes (REAPI advises a non-empty value).
pub const WORKER: &str = "cbuild";
/// Version of the entry record inside the envelope; another version is an unusable entry.
pub const ENTRY_FORMAT: u32 = 1;
/// Version of the signed envelope that [`RESULT_FILE`] holds.
pub const ENVELOPE_FORMAT: u32 = 2;

/// An action result read from the remote cache. Blobs are not downloaded: fetch the ones needed
/// with [`RemoteCache::fetch_blob`](super::RemoteCache::fetch_blob).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The runner's result, exactly as given to `put_action`.
    pub result_json: String,
    /// The key components (JSON of [`crate::cache::Components`]), exactly as given.
    pub components_json: String,
    /// Every blob the result references, with its size, in the order given to `put_action`
    /// (duplicates removed).
    pub blobs: Vec<(Digest, u64)>,
    /// The trusted key whose valid signature the entry carries; `None` when the reader trusts no
    /// keys (then nothing is checked and the entry is unauthenticated).
    pub signer: Option<PublicKey>,
    /// How long the action ran for its writer (what a hit saves): the remote time budget's credit.
    pub exec_ms: Option<u64>,
}

/// The entry record (the signed bytes). Field order is fixed (serde follows declaration order), so
/// the same result always makes the same record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultFile {
    format: u32,
    /// The action key the entry was written for; a value served under another key is refused.
    key: String,
    result: String,
    components: String,
    /// The referenced blobs in their original order (the `ActionResult` list may be reordered
    /// by a server; REAPI clients must not assume an order).
    blobs: Vec<Digest>,
    /// Milliseconds the action ran for its writer (absent in entries of older writers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec_ms: Option<u64>,
}

/// The entry record: the bytes a writer signs.
pub fn result_file(key: &Blake3, result_json: &str, components_json: &str, blobs: &[Digest]) -> Vec<u8> {
    result_file_timed(key, result_json, components_json, blobs, None)
}

/// [`result_file`] recording how long the action ran.
pub fn result_file_timed(
    key: &Blake3,
    result_json: &str,
    components_json: &str,
    blobs: &[Digest],
    exec_ms: Option<u64>,
) -> Vec<u8> {
    let f = ResultFile {
        format: ENTRY_FORMAT,
        key: key.to_hex(),
        result: result_json.to_string(),
        components: components_json.to_string(),
        blobs: blobs.to_vec(),
        exec_ms,
    };
    serde_json::to_vec(&f).expect("strings and digests always serialise")
}

/// The envelope around a record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: u32,
    entry: String,
    signature: Option<SignatureField>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureField {
    public_key: String,
    signature: String,
}

/// The bytes of the `cbuild-result.json` blob: `record` (from [`result_file`]) in an envelope,
/// signed by `signer` for `key` when given. Deterministic (Ed25519 signatures are).
pub fn seal(key: &Blake3, record: &[u8], signer: Option<&SigningKey>) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = Envelope {
        format: ENVELOPE_FORMAT,
        entry: String::from_utf8(record.to_vec()).expect("records are JSON, hence UTF-8"),
        signature: signer.map(|s| SignatureField {
            public_key: s.public_key().to_base64(),
            signature: b64.encode(s.sign(key, record)),
        }),
    };
    serde_json::to_vec(&env).expect("strings always serialise")
}

/// An opened `cbuild-result.json`: the record bytes and the signature claimed for them (not
/// verified here).
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub record: Vec<u8>,
    pub signature: Option<(PublicKey, Vec<u8>)>,
}

/// Opens the `cbuild-result.json` bytes; a bare format-1 record is an unsigned entry.
pub fn open(bytes: &[u8]) -> Result<Opened, String> {
    #[derive(Deserialize)]
    struct Probe {
        format: u32,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| format!("`{RESULT_FILE}`: {e}"))?;
    match probe.format {
        ENTRY_FORMAT => Ok(Opened { record: bytes.to_vec(), signature: None }),
        ENVELOPE_FORMAT => {
            let env: Envelope = serde_json::from_slice(bytes).map_err(|e| format!("`{RESULT_FILE}`: {e}"))?;
            let signature = match env.signature {
                None => None,
                Some(s) => {
                    let pk = PublicKey::parse(&s.public_key).map_err(|e| format!("signature key: {e}"))?;
                    let sig = base64::engine::general_purpose::STANDARD
                        .decode(&s.signature)
                        .ok()
                        .filter(|v| v.len() == SIGNATURE_LEN)
                        .ok_or_else(|| format!("the signature is not {SIGNATURE_LEN} bytes of base64"))?;
                    Some((pk, sig))
                }
            };
            Ok(Opened { record: env.entry.into_bytes(), signature })
        }
        f => Err(format!(
            "`{RESULT_FILE}` has format {f}, this cbuild reads formats {ENTRY_FORMAT} and {ENVELOPE_FORMAT}"
        )),
    }
}

/// The `/ac/` value as bytes (HTTP): [`action_result`] in protobuf encoding. prost writes fields
/// in tag order and omits defaults, REAPI's canonical form, so equal entries are equal bytes.
pub fn encode(result_file: (&Digest, u64), blobs: &[(Digest, u64)]) -> Vec<u8> {
    action_result(result_file, blobs).encode_to_vec()
}

/// The action-cache value: one output file per blob, then the result file.
pub fn action_result(result_file: (&Digest, u64), blobs: &[(Digest, u64)]) -> ActionResult {
    let file = |path: String, d: &Digest, size: u64| OutputFile {
        path,
        digest: Some(ProtoDigest { hash: d.hex().to_string(), size_bytes: size as i64 }),
        ..Default::default()
    };
    let mut output_files: Vec<OutputFile> =
        blobs.iter().enumerate().map(|(i, (d, n))| file(format!("blobs/{i}"), d, *n)).collect();
    output_files.push(file(RESULT_FILE.to_string(), result_file.0, result_file.1));
    ActionResult {
        output_files,
        execution_metadata: Some(ExecutedActionMetadata { worker: WORKER.to_string(), ..Default::default() }),
        ..Default::default()
    }
}

/// A decoded `/ac/` value: where the result file is and the sizes of the blobs it lists.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Digest and size of `cbuild-result.json`.
    pub result_file: (Digest, u64),
    /// Every other output file, by digest.
    pub blobs: BTreeMap<Digest, u64>,
}

/// Decodes an `/ac/` value (HTTP); the error says why it is not a cbuild entry.
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let ar = ActionResult::decode(bytes).map_err(|e| format!("malformed protobuf: {e}"))?;
    decode_result(&ar)
}

/// Reads a decoded `ActionResult` (gRPC, or [`decode`]) as a cbuild entry.
pub fn decode_result(ar: &ActionResult) -> Result<Decoded, String> {
    let mut result_file = None;
    let mut blobs = BTreeMap::new();
    for f in &ar.output_files {
        let digest = f.digest.clone().unwrap_or_default();
        let d = Digest::from_hex(&digest.hash)
            .map_err(|_| format!("output `{}` has digest `{}`, not sha256", f.path, digest.hash))?;
        let size = u64::try_from(digest.size_bytes)
            .map_err(|_| format!("output `{}` has negative size {}", f.path, digest.size_bytes))?;
        if f.path == RESULT_FILE {
            if result_file.replace((d, size)).is_some() {
                return Err(format!("`{RESULT_FILE}` is listed twice"));
            }
        } else if let Some(old) = blobs.insert(d.clone(), size) {
            if old != size {
                return Err(format!("blob `{d}` is listed with sizes {old} and {size}"));
            }
        }
    }
    let worker = ar.execution_metadata.as_ref().map_or("", |m| m.worker.as_str());
    let result_file =
        result_file.ok_or_else(|| format!("no `{RESULT_FILE}` output (not written by cbuild, worker `{worker}`)"))?;
    Ok(Decoded { result_file, blobs })
}

/// Parses an entry record (from [`open`], its signature already checked by the caller) and checks
/// it against the key it was looked up under and the blob list of the `ActionResult`. The
/// returned entry has no `signer`; the caller sets it.
pub fn parse_result_file(key: &Blake3, bytes: &[u8], decoded: &Decoded) -> Result<RemoteEntry, String> {
    let f: ResultFile = serde_json::from_slice(bytes).map_err(|e| format!("`{RESULT_FILE}`: {e}"))?;
    if f.format != ENTRY_FORMAT {
        return Err(format!("`{RESULT_FILE}` has format {}, this cbuild reads format {ENTRY_FORMAT}", f.format));
    }
    if f.key != key.to_hex() {
        return Err(format!("it was written for action `{}`", f.key));
    }
    let mut blobs = Vec::with_capacity(f.blobs.len());
    for d in &f.blobs {
        let size = decoded
            .blobs
            .get(d)
            .ok_or_else(|| format!("blob `{d}` of the result is not an output file of the entry"))?;
        blobs.push((d.clone(), *size));
    }
    if let Some(extra) = decoded.blobs.keys().find(|d| !f.blobs.contains(d)) {
        return Err(format!("output blob `{extra}` is not referenced by the result"));
    }
    Ok(RemoteEntry { result_json: f.result, components_json: f.components, blobs, signer: None, exec_ms: f.exec_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Vec<(Digest, u64)> {
        vec![(Digest::of_bytes(b"one"), 3), (Digest::of_bytes(b"three"), 5)]
    }

    #[test]
    fn round_trip() {
        let key = Blake3::of_bytes(b"key");
        let digests: Vec<Digest> = blobs().into_iter().map(|(d, _)| d).collect();
        let rf = result_file(&key, r#"{"layer":1}"#, r#"[["kind","layer"]]"#, &digests);
        let rd = Digest::of_bytes(&rf);
        let ac = encode((&rd, rf.len() as u64), &blobs());
        let decoded = decode(&ac).unwrap();
        assert_eq!(decoded.result_file, (rd, rf.len() as u64));
        let e = parse_result_file(&key, &rf, &decoded).unwrap();
        assert_eq!(
            e,
            RemoteEntry {
                result_json: r#"{"layer":1}"#.into(),
                components_json: r#"[["kind","layer"]]"#.into(),
                blobs: blobs(),
                signer: None,
                exec_ms: None,
            }
        );
        // The value lists paths bazel-remote can validate: every blob plus the result file.
        let ar = ActionResult::decode(ac.as_slice()).unwrap();
        let paths: Vec<&str> = ar.output_files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["blobs/0", "blobs/1", RESULT_FILE]);
        assert_eq!(ar.execution_metadata.unwrap().worker, WORKER);
        // The bytes of the hand-written encoder this replaced (checked against it; REAPI canonical
        // form): entries
        // written by earlier cbuilds and by this one are the same values.
        let one = encode((&Digest::of_bytes(b"r"), 2), &[]);
        let mut want = vec![0x12, 0x5a, 0x0a, 0x12];
        want.extend_from_slice(RESULT_FILE.as_bytes());
        want.extend_from_slice(&[0x12, 0x44, 0x0a, 0x40]);
        want.extend_from_slice(Digest::of_bytes(b"r").hex().as_bytes());
        want.extend_from_slice(&[0x10, 0x02, 0x4a, 0x08, 0x0a, 0x06]);
        want.extend_from_slice(WORKER.as_bytes());
        assert_eq!(one, want);
    }

    #[test]
    fn result_file_is_deterministic() {
        let key = Blake3::of_bytes(b"k");
        let a = result_file(&key, "{}", "[]", &[Digest::of_bytes(b"x")]);
        assert_eq!(a, result_file(&key, "{}", "[]", &[Digest::of_bytes(b"x")]));
        assert!(String::from_utf8(a).unwrap().starts_with(r#"{"format":1,"key":""#));
    }

    #[test]
    fn envelopes_carry_the_record_and_its_signature() {
        let key = Blake3::of_bytes(b"key");
        let record = result_file(&key, "{}", "[]", &[Digest::of_bytes(b"x")]);
        let signer = SigningKey::from_pkcs8(super::super::signing::generate_pem().unwrap().as_bytes()).unwrap();
        let sealed = seal(&key, &record, Some(&signer));
        assert_eq!(sealed, seal(&key, &record, Some(&signer)), "deterministic");
        assert!(String::from_utf8(sealed.clone()).unwrap().starts_with(r#"{"format":2,"entry":"{\"format\":1,"#));
        let o = open(&sealed).unwrap();
        assert_eq!(o.record, record);
        let (pk, sig) = o.signature.unwrap();
        assert_eq!(pk, signer.public_key());
        assert!(pk.verify(&key, &record, &sig));
        // Unsigned envelopes and bare format-1 records (older writers) open as unsigned.
        assert_eq!(open(&seal(&key, &record, None)).unwrap(), Opened { record: record.clone(), signature: None });
        assert_eq!(open(&record).unwrap(), Opened { record: record.clone(), signature: None });
        // Unknown formats, unknown fields, malformed signatures: errors, never panics.
        assert!(open(br#"{"format":3}"#).unwrap_err().contains("format 3"));
        assert!(open(br#"{"format":2,"entry":"","signature":null,"x":1}"#).unwrap_err().contains("unknown field"));
        let bad_sig = br#"{"format":2,"entry":"","signature":{"public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","signature":"AAAA"}}"#;
        assert!(open(bad_sig).unwrap_err().contains("64 bytes"));
        assert!(open(b"\xff").is_err());
    }

    #[test]
    fn rejects_inconsistent_entries() {
        let key = Blake3::of_bytes(b"key");
        let other = Blake3::of_bytes(b"other");
        let digests: Vec<Digest> = blobs().into_iter().map(|(d, _)| d).collect();
        let rf = result_file(&key, "{}", "[]", &digests);
        let rd = Digest::of_bytes(&rf);
        let decoded = decode(&encode((&rd, rf.len() as u64), &blobs())).unwrap();
        let e = parse_result_file(&other, &rf, &decoded).unwrap_err();
        assert!(e.contains("written for action"), "{e}");

        let missing_one = decode(&encode((&rd, rf.len() as u64), &blobs()[..1])).unwrap();
        assert!(parse_result_file(&key, &rf, &missing_one).unwrap_err().contains("not an output file"));
        let rf1 = result_file(&key, "{}", "[]", &digests[..1]);
        assert!(parse_result_file(&key, &rf1, &decoded).unwrap_err().contains("not referenced"));
        assert!(parse_result_file(&key, b"not json", &decoded).is_err());

        // Not a cbuild entry: no result file; a foreign hash; a negative size.
        let foreign = ActionResult {
            output_files: vec![OutputFile {
                path: "bazel-out/x".into(),
                digest: Some(ProtoDigest { hash: "ab".repeat(32), size_bytes: 1 }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(decode(&foreign.encode_to_vec()).unwrap_err().contains("no `cbuild-result.json`"));
        let mut bad = foreign.clone();
        bad.output_files[0].digest.as_mut().unwrap().hash = "xyz".into();
        assert!(decode(&bad.encode_to_vec()).unwrap_err().contains("not sha256"));
        let mut neg = foreign;
        neg.output_files[0].digest.as_mut().unwrap().size_bytes = -5;
        assert!(decode(&neg.encode_to_vec()).unwrap_err().contains("negative size"));
        assert!(decode(b"\xff\xff").unwrap_err().contains("malformed protobuf"));
    }
}
