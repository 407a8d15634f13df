//! Hand-written protobuf wire format for the three REAPI messages an `/ac/` value needs
//! (`ActionResult`, `OutputFile`, `Digest`, plus `ExecutedActionMetadata.worker`). No other
//! messages, no reflection; unknown fields are skipped on decode, as protobuf requires.
//!
//! Field numbers, from `build/bazel/remote/execution/v2/remote_execution.proto`
//! (bazelbuild/remote-apis):
//!
//! ```text
//! message ActionResult { repeated OutputFile output_files = 2;             // 1 is reserved
//!                        ExecutedActionMetadata execution_metadata = 9; … }
//! message OutputFile   { string path = 1; Digest digest = 2; bool is_executable = 4; … } // 3 reserved
//! message Digest       { string hash = 1; int64 size_bytes = 2; }
//! message ExecutedActionMetadata { string worker = 1; … }
//! ```
//!
//! Encoding follows the REAPI canonical rules (fields in tag order, proto3 defaults omitted, no
//! unknown or duplicate fields), so equal values always encode to equal bytes.

use std::fmt;

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

/// `build.bazel.remote.execution.v2.Digest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtoDigest {
    /// Lowercase hex hash (sha256 here).
    pub hash: String,
    /// Size of the blob in bytes (`int64` on the wire).
    pub size_bytes: i64,
}

/// `build.bazel.remote.execution.v2.OutputFile` (the fields cbuild uses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputFile {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Digest of the file's content in the CAS.
    pub digest: ProtoDigest,
    /// The executable bit.
    pub is_executable: bool,
}

/// `build.bazel.remote.execution.v2.ActionResult` (the fields cbuild uses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionResult {
    /// `output_files` (field 2).
    pub output_files: Vec<OutputFile>,
    /// `execution_metadata.worker` (field 9, then 1); empty means absent.
    pub worker: String,
}

/// A protobuf value that could not be decoded: what was wrong and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    /// Byte offset in the message being decoded (nested messages count from their own start).
    pub offset: usize,
    /// What was wrong.
    pub what: String,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed protobuf at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for ProtoError {}

// ---- encoding ----

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, WT_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl ProtoDigest {
    fn encode(&self, out: &mut Vec<u8>) {
        if !self.hash.is_empty() {
            put_bytes(out, 1, self.hash.as_bytes());
        }
        if self.size_bytes != 0 {
            put_tag(out, 2, WT_VARINT);
            // int64: negative values are ten-byte two's complement varints.
            put_varint(out, self.size_bytes as u64);
        }
    }

    fn merge(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader { buf, pos: 0 };
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (1, WT_LEN) => self.hash = r.string()?,
                (2, WT_VARINT) => self.size_bytes = r.varint()? as i64,
                (1 | 2, _) => return Err(r.wrong_type("Digest", field, wt)),
                _ => r.skip(wt)?,
            }
        }
        Ok(())
    }
}

impl OutputFile {
    fn encode(&self, out: &mut Vec<u8>) {
        if !self.path.is_empty() {
            put_bytes(out, 1, self.path.as_bytes());
        }
        let mut d = Vec::new();
        self.digest.encode(&mut d);
        // A message field is present even when empty (it is not a scalar default).
        put_bytes(out, 2, &d);
        if self.is_executable {
            put_tag(out, 4, WT_VARINT);
            put_varint(out, 1);
        }
    }

    fn merge(&mut self, buf: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader { buf, pos: 0 };
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (1, WT_LEN) => self.path = r.string()?,
                (2, WT_LEN) => {
                    let at = r.pos;
                    self.digest.merge(r.bytes()?).map_err(|e| e.nested(at))?
                }
                (4, WT_VARINT) => self.is_executable = r.varint()? != 0,
                (1 | 2 | 4, _) => return Err(r.wrong_type("OutputFile", field, wt)),
                _ => r.skip(wt)?,
            }
        }
        Ok(())
    }
}

impl ActionResult {
    /// The canonical wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f = Vec::new();
        for file in &self.output_files {
            f.clear();
            file.encode(&mut f);
            put_bytes(&mut out, 2, &f);
        }
        if !self.worker.is_empty() {
            let mut m = Vec::new();
            put_bytes(&mut m, 1, self.worker.as_bytes());
            put_bytes(&mut out, 9, &m);
        }
        out
    }

    /// Decodes any valid encoding (fields in any order, unknown fields skipped, repeated message
    /// fields merged). Never panics on malformed input.
    pub fn decode(buf: &[u8]) -> Result<ActionResult, ProtoError> {
        let mut out = ActionResult::default();
        let mut r = Reader { buf, pos: 0 };
        while let Some((field, wt)) = r.tag()? {
            match (field, wt) {
                (2, WT_LEN) => {
                    let at = r.pos;
                    let mut f = OutputFile::default();
                    f.merge(r.bytes()?).map_err(|e| e.nested(at))?;
                    out.output_files.push(f);
                }
                (9, WT_LEN) => {
                    let at = r.pos;
                    let mut m = Reader { buf: r.bytes()?, pos: 0 };
                    let inner = (|| {
                        while let Some((field, wt)) = m.tag()? {
                            match (field, wt) {
                                (1, WT_LEN) => out.worker = m.string()?,
                                (1, _) => return Err(m.wrong_type("ExecutedActionMetadata", field, wt)),
                                _ => m.skip(wt)?,
                            }
                        }
                        Ok(())
                    })();
                    inner.map_err(|e: ProtoError| e.nested(at))?;
                }
                (2 | 9, _) => return Err(r.wrong_type("ActionResult", field, wt)),
                _ => r.skip(wt)?,
            }
        }
        Ok(out)
    }
}

// ---- decoding ----

impl ProtoError {
    fn nested(mut self, at: usize) -> ProtoError {
        self.offset += at;
        self
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: impl Into<String>) -> ProtoError {
        ProtoError { offset: self.pos, what: what.into() }
    }

    fn wrong_type(&self, msg: &str, field: u32, wt: u8) -> ProtoError {
        self.err(format!("{msg} field {field} has wire type {wt}"))
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    fn tag(&mut self) -> Result<Option<(u32, u8)>, ProtoError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let t = self.varint()?;
        let field = t >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(self.err(format!("invalid field number {field}")));
        }
        Ok(Some((field as u32, (t & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.err(format!("field of {n} bytes runs past the end")));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.err("length does not fit in memory"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, ProtoError> {
        let at = self.pos;
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| ProtoError { offset: at, what: "string field is not UTF-8".into() })
    }

    fn skip(&mut self, wt: u8) -> Result<(), ProtoError> {
        match wt {
            WT_VARINT => self.varint().map(drop),
            WT_I64 => self.take(8).map(drop),
            WT_LEN => self.bytes().map(drop),
            WT_I32 => self.take(4).map(drop),
            // 3/4 are proto2 groups, which no REAPI message uses; 6/7 do not exist.
            _ => Err(self.err(format!("unsupported wire type {wt}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ActionResult {
        ActionResult {
            output_files: vec![OutputFile {
                path: "a".into(),
                digest: ProtoDigest { hash: "ab".into(), size_bytes: 3 },
                is_executable: true,
            }],
            worker: "w".into(),
        }
    }

    /// Worked out by hand from the wire format spec:
    /// `12 0d` output_files (field 2, LEN 13) {
    ///   `0a 01 61` path "a", `12 06` digest (LEN 6) { `0a 02 61 62` hash "ab", `10 03` size 3 },
    ///   `20 01` is_executable }
    /// `4a 03` execution_metadata (field 9, LEN 3) { `0a 01 77` worker "w" }
    const GOLDEN: &[u8] = &[
        0x12, 0x0d, 0x0a, 0x01, 0x61, 0x12, 0x06, 0x0a, 0x02, 0x61, 0x62, 0x10, 0x03, 0x20, 0x01, 0x4a, 0x03, 0x0a,
        0x01, 0x77,
    ];

    #[test]
    fn golden_bytes() {
        assert_eq!(sample().encode(), GOLDEN);
        assert_eq!(ActionResult::decode(GOLDEN).unwrap(), sample());
    }

    #[test]
    fn multi_byte_varints_and_defaults() {
        let r = ActionResult {
            output_files: vec![
                OutputFile {
                    path: "p".into(),
                    digest: ProtoDigest { hash: "h".into(), size_bytes: 300 },
                    is_executable: false,
                },
                // An empty blob: size 0 is the proto3 default and is omitted, the digest is not.
                OutputFile {
                    path: "e".into(),
                    digest: ProtoDigest { hash: "h".into(), size_bytes: 0 },
                    is_executable: false,
                },
            ],
            worker: String::new(),
        };
        let bytes = r.encode();
        // 0x0b = path (3) + digest tag and length (2) + digest (0a 01 68 10 ac 02: 6).
        assert_eq!(
            bytes,
            [
                0x12, 0x0b, 0x0a, 0x01, b'p', 0x12, 0x06, 0x0a, 0x01, b'h', 0x10, 0xac, 0x02, // 300
                0x12, 0x08, 0x0a, 0x01, b'e', 0x12, 0x03, 0x0a, 0x01, b'h',
            ]
        );
        assert_eq!(ActionResult::decode(&bytes).unwrap(), r);
        assert_eq!(ActionResult::decode(&[]).unwrap(), ActionResult::default());
    }

    #[test]
    fn round_trips_large_values() {
        let r = ActionResult {
            output_files: (0..200)
                .map(|i| OutputFile {
                    path: format!("blobs/{i}"),
                    digest: ProtoDigest { hash: "f".repeat(64), size_bytes: i64::MAX - i },
                    is_executable: i % 2 == 0,
                })
                .collect(),
            worker: "cbuild".into(),
        };
        assert_eq!(ActionResult::decode(&r.encode()).unwrap(), r);
        // Negative sizes survive the wire (the entry layer rejects them).
        let neg = ActionResult {
            output_files: vec![OutputFile {
                path: "n".into(),
                digest: ProtoDigest { hash: "h".into(), size_bytes: -1 },
                is_executable: false,
            }],
            worker: String::new(),
        };
        assert_eq!(ActionResult::decode(&neg.encode()).unwrap(), neg);
    }

    #[test]
    fn skips_unknown_fields_in_any_order() {
        let mut b = Vec::new();
        put_tag(&mut b, 4, WT_VARINT); // exit_code = 7
        put_varint(&mut b, 7);
        put_tag(&mut b, 6, WT_LEN); // stdout_digest, empty
        put_varint(&mut b, 0);
        put_tag(&mut b, 20, WT_I64);
        b.extend_from_slice(&[0; 8]);
        put_tag(&mut b, 21, WT_I32);
        b.extend_from_slice(&[0; 4]);
        // execution_metadata before output_files; OutputFile with contents (5) and field 7.
        put_bytes(&mut b, 9, &[0x0a, 0x01, b'w', 0x62, 0x00]); // + virtual_execution_duration
        let mut f = Vec::new();
        put_bytes(&mut f, 5, b"inline");
        put_bytes(&mut f, 2, &[0x10, 0x03]);
        put_bytes(&mut f, 1, b"a");
        put_bytes(&mut f, 2, &[0x0a, 0x02, b'a', b'b']); // merged into the first digest
        put_tag(&mut f, 4, WT_VARINT);
        put_varint(&mut f, 1);
        put_bytes(&mut b, 2, &f);
        assert_eq!(ActionResult::decode(&b).unwrap(), sample());
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        for n in 0..GOLDEN.len() {
            // Every strict prefix either decodes (ends on a field boundary) or errors.
            let _ = ActionResult::decode(&GOLDEN[..n]);
        }
        assert!(ActionResult::decode(&GOLDEN[..GOLDEN.len() - 1]).is_err());
        for bad in [
            &[0x12, 0x7f][..],                                                   // length past the end
            &[0x10, 0x01],                                                       // output_files as varint
            &[0x12, 0x02, 0x0a, 0x05],                                           // nested length past the end
            &[0x00],                                                             // field 0
            &[0x0b],                                                             // group start
            &[0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // overflow
            &[0x12, 0x03, 0x0a, 0x01, 0xff],                                     // path not UTF-8
        ] {
            let e = ActionResult::decode(bad).unwrap_err();
            assert!(e.to_string().starts_with("malformed protobuf at byte"), "{e}");
        }
        // Cheap deterministic fuzz: every single-byte corruption of the golden value.
        for i in 0..GOLDEN.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = GOLDEN.to_vec();
                b[i] = v;
                let _ = ActionResult::decode(&b);
            }
        }
    }
}
