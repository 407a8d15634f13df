//! Ed25519 signatures of remote-cache entries (`ring`): who may write results other runners use.
//!
//! A writer signs `DOMAIN || action key (32 bytes) || entry bytes`, where the entry bytes are the
//! exact `cbuild-result.json` record (result, key components, blob digests; see [`super::entry`]).
//! Every blob the entry names is content-addressed (sha256, checked on download), so the signature
//! covers everything a reader uses. Readers accept an entry only if it carries a valid signature
//! by one of their trusted public keys ([`TRUSTED_KEYS_ENV`]).
//!
//! Key files: the private key is PKCS#8 (PEM `PRIVATE KEY` or DER), as written by
//! [`generate_pem`] (`cbuild cache keygen`) or `openssl genpkey -algorithm ed25519`; public keys
//! are written as base64 of the 32 raw bytes (hex is accepted too).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::model::digest::Blake3;

/// Environment variable naming the private key file (PKCS#8) that signs uploads. Without one,
/// the remote cache is read-only.
pub const SIGNING_KEY_ENV: &str = "CBUILD_REMOTE_SIGNING_KEY";
/// Environment variable listing the public keys whose signatures readers accept (comma or
/// whitespace separated, base64 or hex). Without any, entries are accepted unauthenticated.
pub const TRUSTED_KEYS_ENV: &str = "CBUILD_REMOTE_TRUSTED_KEYS";
/// Domain separation: a signature over an entry can never be taken for one over anything else.
pub const DOMAIN: &[u8] = b"cbuild-remote-entry-v1\0";
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// The bytes a signature covers.
pub fn message(key: &Blake3, entry: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 32 + entry.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&key.0);
    m.extend_from_slice(entry);
    m
}

/// An Ed25519 public key (32 bytes). Shown as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> PublicKey {
        PublicKey(b)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses base64 (standard or URL-safe, padded or not) or 64 hex digits.
    pub fn parse(s: &str) -> Result<PublicKey, String> {
        let s = s.trim();
        let shown = if s.chars().count() > 80 {
            format!("{}…", s.chars().take(80).collect::<String>())
        } else {
            s.to_string()
        };
        let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(s).ok()
        } else {
            use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(s).ok())
        };
        match bytes.map(<[u8; 32]>::try_from) {
            Some(Ok(b)) => Ok(PublicKey(b)),
            Some(Err(v)) => Err(format!("`{shown}` is {} bytes, an Ed25519 public key is 32", v.len())),
            None => Err(format!("`{shown}` is neither base64 nor 64 hex digits")),
        }
    }

    /// Base64 (standard alphabet, padded): 44 characters.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// True if `signature` is this key's signature of `key` and `entry` (see [`message`]).
    pub fn verify(&self, key: &Blake3, entry: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0).verify(&message(key, entry), signature).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// Parses a list of public keys separated by commas and/or whitespace (empty items are skipped).
pub fn parse_public_keys(list: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    for item in list.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
        let k = PublicKey::parse(item)?;
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    Ok(keys)
}

/// A private signing key. `Debug` shows only the public half.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public)
    }
}

impl SigningKey {
    /// A key from PKCS#8 bytes: PEM (`-----BEGIN PRIVATE KEY-----`) or DER, v1 or v2.
    pub fn from_pkcs8(bytes: &[u8]) -> Result<SigningKey, String> {
        let der = match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN") => pem_to_der(text)?,
            _ => bytes.to_vec(),
        };
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key ({e}); create one with `cbuild cache keygen`"))?;
        let public = PublicKey(pair.public_key().as_ref().try_into().map_err(|_| "unexpected public key length")?);
        Ok(SigningKey { pair, public })
    }

    /// Reads a key file. The error names the file, never its content.
    pub fn from_file(path: &Path) -> Result<SigningKey, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read signing key `{}`: {e}", path.display()))?;
        SigningKey::from_pkcs8(&bytes).map_err(|e| format!("signing key `{}`: {e}", path.display()))
    }

    /// The public half (what readers list in [`TRUSTED_KEYS_ENV`]).
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The signature of `key` and `entry` (see [`message`]). Deterministic.
    pub fn sign(&self, key: &Blake3, entry: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sig = self.pair.sign(&message(key, entry));
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(sig.as_ref());
        out
    }
}

/// A new key pair as PKCS#8 v2 PEM (`-----BEGIN PRIVATE KEY-----`), readable by OpenSSL too.
pub fn generate_pem() -> Result<String, String> {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "the system random number generator failed".to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let mut pem = String::from(PEM_BEGIN);
    pem.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    Ok(pem)
}

fn pem_to_der(text: &str) -> Result<Vec<u8>, String> {
    if text.contains("ENCRYPTED PRIVATE KEY") {
        return Err("encrypted private keys are not supported; store the key unencrypted with mode 0600".into());
    }
    let start = text.find(PEM_BEGIN).ok_or("a PEM file without a `BEGIN PRIVATE KEY` block")? + PEM_BEGIN.len();
    let end = text[start..].find(PEM_END).ok_or("a PEM file without `END PRIVATE KEY`")? + start;
    let b64: String = text[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "the PEM block is not base64".to_string())
}

/// What `cbuild cache keygen` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The private key file (mode 0600).
    pub private: PathBuf,
    /// `<private>.pub`: the public key in base64 and a newline.
    pub public_file: PathBuf,
    pub public: PublicKey,
}

/// Writes a new key pair: `path` (PKCS#8 PEM, mode 0600, never overwriting a file) and
/// `path.pub` (the base64 public key).
pub fn write_new_key_pair(path: &Path) -> Result<GeneratedKey, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = generate_pem()?;
    let key = SigningKey::from_pkcs8(pem.as_bytes())?;
    let mut pub_name = path.as_os_str().to_owned();
    pub_name.push(".pub");
    let public_file = PathBuf::from(pub_name);
    let create = |p: &Path, mode: u32| {
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!("`{}` already exists; refusing to overwrite a key", p.display())
            } else {
                format!("cannot create `{}`: {e}", p.display())
            }
        })
    };
    if public_file.exists() {
        return Err(format!("`{}` already exists; refusing to overwrite a key", public_file.display()));
    }
    let mut f = create(path, 0o600)?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    let mut p = create(&public_file, 0o644)?;
    p.write_all(format!("{}\n", key.public_key()).as_bytes())
        .map_err(|e| format!("cannot write `{}`: {e}", public_file.display()))?;
    Ok(GeneratedKey { private: path.to_path_buf(), public_file, public: key.public_key() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_with_domain_separation() {
        let k = SigningKey::from_pkcs8(generate_pem().unwrap().as_bytes()).unwrap();
        let key = Blake3::of_bytes(b"action");
        let sig = k.sign(&key, b"entry");
        assert_eq!(sig, k.sign(&key, b"entry"), "Ed25519 is deterministic");
        let pk = k.public_key();
        assert!(pk.verify(&key, b"entry", &sig));
        assert!(!pk.verify(&key, b"entry!", &sig), "other bytes");
        assert!(!pk.verify(&Blake3::of_bytes(b"other"), b"entry", &sig), "other action key");
        assert!(!pk.verify(&key, b"entry", &sig[..63]), "truncated");
        let other = SigningKey::from_pkcs8(generate_pem().unwrap().as_bytes()).unwrap();
        assert!(!other.public_key().verify(&key, b"entry", &sig), "other key");
        // The signed message starts with the domain, so a raw signature of the entry differs.
        assert!(message(&key, b"entry").starts_with(b"cbuild-remote-entry-v1\0"));
    }

    #[test]
    fn public_keys_parse_as_base64_or_hex() {
        let pk = PublicKey::from_bytes([7; 32]);
        let b64 = pk.to_base64();
        assert_eq!(b64.len(), 44);
        assert_eq!(PublicKey::parse(&b64).unwrap(), pk);
        assert_eq!(PublicKey::parse(b64.trim_end_matches('=')).unwrap(), pk);
        assert_eq!(PublicKey::parse(&hex::encode([7u8; 32])).unwrap(), pk);
        let two = parse_public_keys(&format!(" {b64},\n{} ,,", PublicKey::from_bytes([9; 32]))).unwrap();
        assert_eq!(two, vec![pk, PublicKey::from_bytes([9; 32])]);
        assert!(parse_public_keys("").unwrap().is_empty());
        assert!(PublicKey::parse("AAAA").unwrap_err().contains("3 bytes"));
        assert!(PublicKey::parse("not base64 !").unwrap_err().contains("neither"));
    }

    #[test]
    fn key_files_round_trip_and_never_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.pem");
        let g = write_new_key_pair(&p).unwrap();
        let k = SigningKey::from_file(&p).unwrap();
        assert_eq!(k.public_key(), g.public);
        assert_eq!(std::fs::read_to_string(&g.public_file).unwrap().trim(), g.public.to_base64());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write_new_key_pair(&p).unwrap_err().contains("already exists"));
        assert_eq!(SigningKey::from_file(&p).unwrap().public_key(), g.public, "unchanged");
        // DER works too; garbage and encrypted keys are refused without echoing the content.
        let der = pem_to_der(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(SigningKey::from_pkcs8(&der).unwrap().public_key(), g.public);
        let e = SigningKey::from_pkcs8(b"s3cret garbage").unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("keygen"), "{e}");
        assert!(SigningKey::from_pkcs8(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA\n")
            .unwrap_err()
            .contains("encrypted"));
        assert!(format!("{k:?}").starts_with("SigningKey(public "));
    }
}
