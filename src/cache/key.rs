//! Action keys: a blake3 over an explicit, versioned, length-prefixed encoding of an action's kind
//! and named input components (never `derive(Hash)`, never serde output), plus the human-readable
//! [`Components`] kept next to each key so `cbuild explain` can say what changed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::db::SCHEMA_VERSION;
use crate::model::digest::{Blake3, Digest};

/// Version of the key encoding itself. Bump it when [`KeyBuilder`]'s byte layout changes; every
/// existing action key then changes, so nothing stored under the old layout is ever misread.
pub const CACHE_KEY_VERSION: u32 = 1;

/// Domain separator at the start of every encoded key.
const KEY_DOMAIN: &[u8] = b"cbuild.action-key\0";

/// One input of an action, as it enters the key. Maps are sorted by key (a `BTreeMap`), so
/// insertion order never changes a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComponentValue {
    /// A string (a command, a path, a parameter).
    Str(String),
    /// An integer parameter (a uid, a mode).
    U64(u64),
    /// A boolean flag.
    Bool(bool),
    /// An OCI/sha256 content digest (an image, a layer, a blob).
    Digest(Digest),
    /// A blake3 hash (a source file, another action's key, a directory fingerprint).
    Blake3(Blake3),
    /// Named values, e.g. `srcs` (path → digest) or `env` (name → value). Diffed entry by entry.
    Map(BTreeMap<String, ComponentValue>),
    /// An ordered list (e.g. argv, a buildpack order).
    List(Vec<ComponentValue>),
    /// A string kept compact: a source's or output's digest text as its 32 bytes. Encoded exactly
    /// as [`ComponentValue::Str`] of its text (same key either way), but made and shown without
    /// formatting hex into a string and parsing it back — once per file per key on every build
    /// (issue 23, no-op).
    Text(ShownText),
}

impl ComponentValue {
    /// A map from any iterator of (name, value) pairs; the order of the pairs does not matter.
    pub fn map<K: Into<String>, V: Into<ComponentValue>>(entries: impl IntoIterator<Item = (K, V)>) -> ComponentValue {
        ComponentValue::Map(entries.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// An environment as a key component: each value is replaced by a blake3 digest of the name and
    /// value (domain-separated), so the key still changes when a value does and `explain` still says
    /// "env NPM_TOKEN changed", but no value is stored in the cache database, the run history or a
    /// remote-cache entry (env values may be tokens).
    pub fn env_map<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> ComponentValue {
        ComponentValue::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let mut h = blake3::Hasher::new_derive_key("cbuild 2026 env value in an action key");
                    h.update(k.as_bytes());
                    h.update(&[0]);
                    h.update(v.as_bytes());
                    (k.clone(), ComponentValue::Blake3(Blake3(*h.finalize().as_bytes())))
                })
                .collect(),
        )
    }

    /// A list from any iterator of values, order preserved.
    pub fn list<V: Into<ComponentValue>>(items: impl IntoIterator<Item = V>) -> ComponentValue {
        ComponentValue::List(items.into_iter().map(Into::into).collect())
    }

    // Tags are part of the key layout: never renumber, only append.
    fn encode(&self, out: &mut impl Sink) {
        match self {
            ComponentValue::Str(s) => {
                out.push(1);
                put_str(out, s);
            }
            ComponentValue::Text(t) => {
                out.push(1);
                t.encode_str(out);
            }
            ComponentValue::U64(n) => {
                out.push(2);
                out.extend_from_slice(&n.to_le_bytes());
            }
            ComponentValue::Bool(b) => {
                out.push(3);
                out.push(u8::from(*b));
            }
            ComponentValue::Digest(d) => {
                out.push(4);
                // The digest's textual form is fixed (`sha256:` + 64 lowercase hex), so its bytes
                // are canonical; length-prefixed like any string.
                put_str(out, &d.to_string());
            }
            ComponentValue::Blake3(h) => {
                out.push(5);
                out.extend_from_slice(&h.0);
            }
            ComponentValue::Map(m) => {
                out.push(6);
                put_len(out, m.len());
                for (k, v) in m {
                    put_str(out, k);
                    v.encode(out);
                }
            }
            ComponentValue::List(items) => {
                out.push(7);
                put_len(out, items.len());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }

    /// The human-readable form stored in [`Components`], taking the value apart (a map of 100,000
    /// sources is not copied: its names move into the shown map).
    fn into_shown(self) -> Shown {
        match self {
            ComponentValue::Map(m) => Shown::Map(SharedMap(std::sync::Arc::new(
                m.into_iter().map(|(k, v)| (k, v.into_shown_text())).collect(),
            ))),
            ComponentValue::List(items) => {
                Shown::List(items.into_iter().map(ComponentValue::into_shown_inline).collect())
            }
            v => Shown::Value(v.into_shown_inline()),
        }
    }

    fn into_shown_inline(self) -> String {
        match self {
            ComponentValue::Str(s) => s,
            v => v.show_inline(),
        }
    }

    fn into_shown_text(self) -> ShownText {
        match self {
            ComponentValue::Text(t) => t,
            v => ShownText::new(v.into_shown_inline()),
        }
    }

    fn show_inline(&self) -> String {
        match self {
            ComponentValue::Str(s) => s.clone(),
            ComponentValue::Text(t) => t.to_string(),
            ComponentValue::U64(n) => n.to_string(),
            ComponentValue::Bool(b) => b.to_string(),
            ComponentValue::Digest(d) => d.to_string(),
            ComponentValue::Blake3(h) => format!("blake3:{}", h.to_hex()),
            ComponentValue::Map(m) => {
                let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.show_inline())).collect();
                format!("{{{}}}", inner.join(", "))
            }
            ComponentValue::List(items) => {
                let inner: Vec<String> = items.iter().map(ComponentValue::show_inline).collect();
                format!("[{}]", inner.join(", "))
            }
        }
    }
}

/// Where the key encoding goes: a buffer ([`KeyBuilder::encode`]) or straight into the hasher
/// ([`KeyBuilder::finish`]: the encoding of a 100,000-file layer is never held whole).
trait Sink {
    fn extend_from_slice(&mut self, b: &[u8]);
    fn push(&mut self, b: u8) {
        self.extend_from_slice(&[b]);
    }
}

impl Sink for Vec<u8> {
    fn extend_from_slice(&mut self, b: &[u8]) {
        Vec::extend_from_slice(self, b);
    }
}

impl Sink for blake3::Hasher {
    fn extend_from_slice(&mut self, b: &[u8]) {
        self.update(b);
    }
}

fn put_len(out: &mut impl Sink, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_str(out: &mut impl Sink, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

impl From<&str> for ComponentValue {
    fn from(s: &str) -> Self {
        ComponentValue::Str(s.to_string())
    }
}
impl From<String> for ComponentValue {
    fn from(s: String) -> Self {
        ComponentValue::Str(s)
    }
}
impl From<&String> for ComponentValue {
    fn from(s: &String) -> Self {
        ComponentValue::Str(s.clone())
    }
}
impl From<ShownText> for ComponentValue {
    fn from(t: ShownText) -> Self {
        ComponentValue::Text(t)
    }
}
impl From<u64> for ComponentValue {
    fn from(n: u64) -> Self {
        ComponentValue::U64(n)
    }
}
impl From<u32> for ComponentValue {
    fn from(n: u32) -> Self {
        ComponentValue::U64(n.into())
    }
}
impl From<bool> for ComponentValue {
    fn from(b: bool) -> Self {
        ComponentValue::Bool(b)
    }
}
impl From<Digest> for ComponentValue {
    fn from(d: Digest) -> Self {
        ComponentValue::Digest(d)
    }
}
impl From<&Digest> for ComponentValue {
    fn from(d: &Digest) -> Self {
        ComponentValue::Digest(d.clone())
    }
}
impl From<Blake3> for ComponentValue {
    fn from(h: Blake3) -> Self {
        ComponentValue::Blake3(h)
    }
}
impl From<&Blake3> for ComponentValue {
    fn from(h: &Blake3) -> Self {
        ComponentValue::Blake3(*h)
    }
}
impl<V: Into<ComponentValue>> From<BTreeMap<String, V>> for ComponentValue {
    fn from(m: BTreeMap<String, V>) -> Self {
        ComponentValue::map(m)
    }
}
impl<V: Into<ComponentValue>> From<Vec<V>> for ComponentValue {
    fn from(v: Vec<V>) -> Self {
        ComponentValue::list(v)
    }
}

/// Builds an action key from an action kind and its named components.
///
/// Components are encoded sorted by name, so the order of `component` calls does not matter; a
/// second component of the same name replaces the first.
///
/// ```
/// use cbuild::cache::{ComponentValue, KeyBuilder};
/// let (key, components) = KeyBuilder::new("layer", 1)
///     .component("prefix", "/usr/local/bin")
///     .component("srcs", ComponentValue::map([("tool.sh", "abc")]))
///     .finish();
/// assert_eq!(components.items.len(), 2);
/// assert_eq!(key.to_hex().len(), 64);
/// ```
#[derive(Clone, Debug)]
pub struct KeyBuilder {
    kind: String,
    kind_version: u32,
    components: BTreeMap<String, ComponentValue>,
}

impl KeyBuilder {
    /// Starts a key for an action of `kind`; bump `kind_version` when the action's behaviour
    /// changes so old results stop matching.
    pub fn new(kind: &str, kind_version: u32) -> KeyBuilder {
        KeyBuilder { kind: kind.to_string(), kind_version, components: BTreeMap::new() }
    }

    /// Adds (or replaces) a named component; chainable.
    pub fn component(mut self, name: &str, value: impl Into<ComponentValue>) -> KeyBuilder {
        self.push(name, value);
        self
    }

    /// Adds (or replaces) a named component in place, for loops.
    pub fn push(&mut self, name: &str, value: impl Into<ComponentValue>) -> &mut KeyBuilder {
        self.components.insert(name.to_string(), value.into());
        self
    }

    /// The canonical byte encoding the key hashes. Layout (all integers little-endian):
    /// domain separator, `u32 CACHE_KEY_VERSION`, `u32 SCHEMA_VERSION`, `str kind`,
    /// `u32 kind_version`, `u64 count`, then per component `str name` + tagged value, where
    /// `str` is `u64 length` + UTF-8 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut impl Sink) {
        let out = &mut *out;
        out.extend_from_slice(KEY_DOMAIN);
        out.extend_from_slice(&CACHE_KEY_VERSION.to_le_bytes());
        out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
        put_str(out, &self.kind);
        out.extend_from_slice(&self.kind_version.to_le_bytes());
        put_len(out, self.components.len());
        for (name, value) in &self.components {
            put_str(out, name);
            value.encode(out);
        }
    }

    /// The key and the human-readable components to store next to it. Consumes the builder: the
    /// encoding is streamed into the hasher and the values move into the components, so a key
    /// over N files holds one readable copy of its inputs, not three (issue 23, peak RSS).
    pub fn finish(self) -> (Blake3, Components) {
        let mut h = blake3::Hasher::new();
        self.encode_into(&mut h);
        let key = Blake3(*h.finalize().as_bytes());
        let components = Components {
            key_version: key_version(),
            kind: self.kind,
            kind_version: self.kind_version,
            items: self.components.into_iter().map(|(name, v)| Component { name, value: v.into_shown() }).collect(),
        };
        (key, components)
    }
}

fn key_version() -> String {
    format!("k{CACHE_KEY_VERSION}.s{SCHEMA_VERSION}")
}

/// The readable inputs of one action key, stored as JSON next to the action and each run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Components {
    /// `k<CACHE_KEY_VERSION>.s<SCHEMA_VERSION>` of the cbuild that made the key.
    pub key_version: String,
    /// The action kind (`layer`, `cnb_build`, ...).
    pub kind: String,
    /// The kind's version.
    pub kind_version: u32,
    /// The components, sorted by name.
    pub items: Vec<Component>,
}

/// One named component in readable form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// The component's name (`srcs`, `env`, `builder`, ...).
    pub name: String,
    /// Its value.
    pub value: Shown,
}

/// A readable component value: digests as `sha256:…`, blake3 hashes as `blake3:…`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shown {
    /// A scalar.
    Value(String),
    /// A map, diffed per entry. Shared: the scheduler clones components for the run history and
    /// the cache row, which for a layer of 100,000 files would copy 100,000 entries each time.
    Map(SharedMap),
    /// A list, diffed as a whole.
    List(Vec<String>),
}

/// A read-only map shared between clones of [`Components`]; serialized as the plain map of
/// strings it was made from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SharedMap(std::sync::Arc<BTreeMap<String, ShownText>>);

impl SharedMap {
    pub fn new(m: BTreeMap<String, String>) -> SharedMap {
        SharedMap(std::sync::Arc::new(m.into_iter().map(|(k, v)| (k, ShownText::new(v))).collect()))
    }
}

impl std::ops::Deref for SharedMap {
    type Target = BTreeMap<String, ShownText>;
    fn deref(&self) -> &BTreeMap<String, ShownText> {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for SharedMap {
    fn from(m: BTreeMap<String, String>) -> SharedMap {
        SharedMap::new(m)
    }
}

impl FromIterator<(String, String)> for SharedMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(it: I) -> SharedMap {
        SharedMap(std::sync::Arc::new(it.into_iter().map(|(k, v)| (k, ShownText::new(v))).collect()))
    }
}

impl Serialize for SharedMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for SharedMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SharedMap, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(SharedMap::new)
    }
}

/// A value of a shown map, compact: the text of a source's digest (`blake3:` or `sha256:` and 64
/// lowercase hex digits, maybe `+x`) is kept as its 32 bytes, any other text as it is. A layer of
/// 100,000 files keeps one per file for the whole build (issue 23: 34 bytes instead of a
/// 71-byte string and its 24-byte header). The same text always gives the same value, so values
/// compare as their texts do.
#[derive(Clone, PartialEq, Eq)]
pub enum ShownText {
    /// `blake3:<hex>` (`sha256: false`) or `sha256:<hex>`, then `+x` if `exec`.
    Hash { sha256: bool, bytes: [u8; 32], exec: bool },
    /// Any other text.
    Text(Box<str>),
}

impl ShownText {
    pub fn new(s: String) -> ShownText {
        let parsed = (|| {
            let (sha256, rest) = match (s.strip_prefix("blake3:"), s.strip_prefix("sha256:")) {
                (Some(r), _) => (false, r),
                (_, Some(r)) => (true, r),
                _ => return None,
            };
            let (hex_part, exec) = match rest.len() {
                64 => (rest, false),
                66 if rest.ends_with("+x") => (&rest[..64], true),
                _ => return None,
            };
            // Lowercase only, so that the text is given back byte for byte.
            if !hex_part.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hex_part, &mut bytes).ok()?;
            Some(ShownText::Hash { sha256, bytes, exec })
        })();
        parsed.unwrap_or_else(|| ShownText::Text(s.into_boxed_str()))
    }
}

impl ShownText {
    /// The text of `prefix` (`blake3:` or `sha256:`) and a 32-byte hash, without formatting it.
    pub fn hash(sha256: bool, bytes: [u8; 32]) -> ShownText {
        ShownText::Hash { sha256, bytes, exec: false }
    }

    /// Appends `s` to the text: `+x` on a hash without it stays compact, anything else makes a
    /// plain text. The result always equals `ShownText::new(old text + s)`.
    pub fn push_str(&mut self, s: &str) {
        if let (ShownText::Hash { exec: exec @ false, .. }, "+x") = (&mut *self, s) {
            *exec = true;
            return;
        }
        let t = format!("{self}{s}");
        *self = ShownText::new(t);
    }

    /// Its text as a key string (`u64` length + bytes), the same bytes as `put_str` of the text.
    fn encode_str(&self, out: &mut impl Sink) {
        match self {
            ShownText::Hash { sha256, bytes, exec } => {
                put_len(out, 7 + 64 + if *exec { 2 } else { 0 });
                out.extend_from_slice(if *sha256 { b"sha256:" } else { b"blake3:" });
                out.extend_from_slice(crate::model::digest::HexBuf::of(bytes).as_str().as_bytes());
                if *exec {
                    out.extend_from_slice(b"+x");
                }
            }
            ShownText::Text(t) => put_str(out, t),
        }
    }
}

impl fmt::Display for ShownText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShownText::Hash { sha256, bytes, exec } => {
                let mut hex = [0u8; 64];
                hex::encode_to_slice(bytes, &mut hex).map_err(|_| fmt::Error)?;
                let hex = std::str::from_utf8(&hex).map_err(|_| fmt::Error)?;
                write!(f, "{}:{hex}{}", if *sha256 { "sha256" } else { "blake3" }, if *exec { "+x" } else { "" })
            }
            ShownText::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for ShownText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for ShownText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Shown {
    fn inline(&self) -> String {
        match self {
            Shown::Value(s) => s.clone(),
            Shown::Map(m) => {
                let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{{{}}}", inner.join(", "))
            }
            Shown::List(l) => format!("[{}]", l.join(", ")),
        }
    }
}

/// One difference between two [`Components`], as `cbuild explain` prints it. `entry` is set for
/// a single entry of a map-valued component (a source file, an environment variable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ComponentChange {
    /// A component (or map entry) that only the new key has.
    Added { name: String, entry: Option<String>, new: String },
    /// A component (or map entry) that only the old key has.
    Removed { name: String, entry: Option<String>, old: String },
    /// A component (or map entry) whose value differs.
    Changed { name: String, entry: Option<String>, old: String, new: String },
}

/// Names used for the pseudo-components that are not inputs but still change a key.
pub const KIND_COMPONENT: &str = "(action kind)";
/// See [`KIND_COMPONENT`].
pub const KEY_VERSION_COMPONENT: &str = "(cache key version)";

impl Components {
    /// What changed from `old` to `new`, in name order: whole components, and per entry for
    /// components that are maps on both sides.
    pub fn diff(old: &Components, new: &Components) -> Vec<ComponentChange> {
        let mut out = Vec::new();
        if old.key_version != new.key_version {
            out.push(ComponentChange::Changed {
                name: KEY_VERSION_COMPONENT.into(),
                entry: None,
                old: old.key_version.clone(),
                new: new.key_version.clone(),
            });
        }
        if (&old.kind, old.kind_version) != (&new.kind, new.kind_version) {
            out.push(ComponentChange::Changed {
                name: KIND_COMPONENT.into(),
                entry: None,
                old: format!("{} v{}", old.kind, old.kind_version),
                new: format!("{} v{}", new.kind, new.kind_version),
            });
        }
        let o: BTreeMap<&str, &Shown> = old.items.iter().map(|c| (c.name.as_str(), &c.value)).collect();
        let n: BTreeMap<&str, &Shown> = new.items.iter().map(|c| (c.name.as_str(), &c.value)).collect();
        let names: std::collections::BTreeSet<&str> = o.keys().chain(n.keys()).copied().collect();
        for name in names {
            match (o.get(name), n.get(name)) {
                (Some(a), None) => {
                    out.push(ComponentChange::Removed { name: name.into(), entry: None, old: a.inline() })
                }
                (None, Some(b)) => out.push(ComponentChange::Added { name: name.into(), entry: None, new: b.inline() }),
                (Some(Shown::Map(a)), Some(Shown::Map(b))) => diff_maps(name, a, b, &mut out),
                (Some(a), Some(b)) if a != b => out.push(ComponentChange::Changed {
                    name: name.into(),
                    entry: None,
                    old: a.inline(),
                    new: b.inline(),
                }),
                _ => {}
            }
        }
        out
    }
}

fn diff_maps(
    name: &str,
    a: &BTreeMap<String, ShownText>,
    b: &BTreeMap<String, ShownText>,
    out: &mut Vec<ComponentChange>,
) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let entry = Some(k.clone());
        match (a.get(k), b.get(k)) {
            (Some(x), None) => out.push(ComponentChange::Removed { name: name.into(), entry, old: x.to_string() }),
            (None, Some(y)) => out.push(ComponentChange::Added { name: name.into(), entry, new: y.to_string() }),
            (Some(x), Some(y)) if x != y => {
                out.push(ComponentChange::Changed { name: name.into(), entry, old: x.to_string(), new: y.to_string() })
            }
            _ => {}
        }
    }
}

/// Shortens `sha256:<64 hex>` / `blake3:<64 hex>` to 12 hex digits for humans; other text is
/// cut at 80 characters.
fn short(s: &str) -> String {
    for p in ["sha256:", "blake3:"] {
        if let Some(hex) = s.strip_prefix(p) {
            if hex.len() == 64 {
                return format!("{p}{}", &hex[..12]);
            }
        }
    }
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(79).collect::<String>())
    } else {
        s.to_string()
    }
}

fn is_hash(s: &str) -> bool {
    s.starts_with("sha256:") || s.starts_with("blake3:")
}

impl fmt::Display for ComponentChange {
    /// `srcs: services/api/app.py changed`, `env BP_X: 1 -> 2`, `builder: sha256:… -> sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentChange::Added { name, entry: Some(e), .. } => write!(f, "{name}: {e} added"),
            ComponentChange::Removed { name, entry: Some(e), .. } => {
                write!(f, "{name}: {e} removed")
            }
            ComponentChange::Changed { name, entry: Some(e), old, new } => {
                if is_hash(old) && is_hash(new) {
                    write!(f, "{name}: {e} changed")
                } else {
                    write!(f, "{name} {e}: {} -> {}", short(old), short(new))
                }
            }
            ComponentChange::Added { name, entry: None, new } => {
                write!(f, "{name} added: {}", short(new))
            }
            ComponentChange::Removed { name, entry: None, old } => {
                write!(f, "{name} removed (was {})", short(old))
            }
            ComponentChange::Changed { name, entry: None, old, new } => {
                write!(f, "{name}: {} -> {}", short(old), short(new))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyBuilder {
        KeyBuilder::new("layer", 1)
            .component("prefix", "/usr/local/bin")
            .component("mode", 0o755u32)
            .component("base", Digest::of_bytes(b"base"))
            .component(
                "srcs",
                ComponentValue::map([("tool.sh", Blake3::of_bytes(b"echo hi")), ("lib/a.sh", Blake3::of_bytes(b"a"))]),
            )
            .component("env", ComponentValue::map([("BP_X", "1"), ("A", "z")]))
            .component("argv", ComponentValue::list(["sh", "-c", "true"]))
            .component("strip", false)
    }

    /// If this fails, the key encoding drifted: every cached action of every user would miss (or,
    /// worse, if the drift were silent, collide). Bump CACHE_KEY_VERSION and update the constant.
    #[test]
    fn key_encoding_is_stable() {
        let (key, _) = sample().finish();
        assert_eq!(key.to_hex(), "51f730187182f209ce2e1af7b4a8f4bd7bd41fe18f8ab4c550bd2e1fb2594599");
    }

    #[test]
    fn finish_streams_the_same_bytes_as_encode() {
        let kb = sample();
        let want = Blake3::of_bytes(&kb.encode());
        let (key, c) = kb.clone().finish();
        assert_eq!(key, want);
        // A shown map is shared between clones, and serialized as the plain map it was.
        let c2 = c.clone();
        let srcs = c2.items.iter().find(|i| i.name == "srcs").unwrap();
        let Shown::Map(m) = &srcs.value else { panic!("{srcs:?}") };
        assert_eq!(m.len(), 2);
        assert!(matches!(m["tool.sh"], ShownText::Hash { sha256: false, exec: false, .. }));
        let j = serde_json::to_value(&srcs.value).unwrap();
        assert_eq!(j["map"]["tool.sh"], serde_json::json!(format!("blake3:{}", Blake3::of_bytes(b"echo hi").to_hex())));
    }

    #[test]
    fn shown_text_gives_back_every_text() {
        let h = Blake3::of_bytes(b"x").to_hex();
        for t in [
            format!("blake3:{h}"),
            format!("blake3:{h}+x"),
            format!("sha256:{h}"),
            format!("sha256:{h}+x"),
            format!("blake3:{}", h.to_uppercase()),
            format!("blake3:{h}+y"),
            format!("blake3:{}", &h[1..]),
            format!("md5:{h}"),
            String::new(),
            "plain".into(),
        ] {
            let v = ShownText::new(t.clone());
            assert_eq!(v.to_string(), t);
            assert_eq!(serde_json::to_string(&v).unwrap(), serde_json::to_string(&t).unwrap());
            assert_eq!(v, ShownText::new(t.clone()));
        }
        assert!(matches!(ShownText::new(format!("sha256:{h}+x")), ShownText::Hash { sha256: true, exec: true, .. }));
        assert!(matches!(ShownText::new(format!("blake3:{}", h.to_uppercase())), ShownText::Text(_)));
        assert_ne!(ShownText::new(format!("blake3:{h}")), ShownText::new(format!("blake3:{h}+x")));
    }

    /// A `Text` value is the same key and the same shown components as a `Str` of its text: the
    /// runners give digests as `Text` (no hex string per file), and every cached key must still
    /// match.
    #[test]
    fn text_values_key_and_show_as_their_strings() {
        let h = Blake3::of_bytes(b"x");
        let mut with_x = ShownText::hash(false, h.0);
        with_x.push_str("+x");
        let mut link = ShownText::hash(true, h.0);
        link.push_str(" -> ../lib/a");
        let mut twice = ShownText::hash(false, h.0);
        twice.push_str("+x");
        twice.push_str("+x");
        let values = [
            ShownText::hash(false, h.0),
            ShownText::hash(true, h.0),
            with_x,
            link,
            twice,
            ShownText::new("plain".into()),
        ];
        let texts: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        assert_eq!(texts[2], format!("blake3:{}+x", h.to_hex()));
        assert_eq!(texts[3], format!("sha256:{} -> ../lib/a", h.to_hex()));
        assert_eq!(texts[4], format!("blake3:{}+x+x", h.to_hex()));
        for (v, t) in values.iter().zip(&texts) {
            assert_eq!(*v, ShownText::new(t.clone()), "push_str gives what parsing the text gives");
        }
        let as_text = KeyBuilder::new("layer", 1)
            .component(
                "files",
                ComponentValue::map(texts.iter().enumerate().map(|(i, _)| (format!("f{i}"), values[i].clone()))),
            )
            .component("one", values[2].clone());
        let as_str = KeyBuilder::new("layer", 1)
            .component(
                "files",
                ComponentValue::map(texts.iter().enumerate().map(|(i, t)| (format!("f{i}"), t.clone()))),
            )
            .component("one", texts[2].clone());
        assert_eq!(as_text.encode(), as_str.encode());
        let (k1, c1) = as_text.finish();
        let (k2, c2) = as_str.finish();
        assert_eq!(k1, k2);
        assert_eq!(c1, c2);
        assert_eq!(serde_json::to_string(&c1).unwrap(), serde_json::to_string(&c2).unwrap());
    }

    #[test]
    fn encoding_starts_with_versions_and_length_prefixes() {
        let b = KeyBuilder::new("k", 7).component("n", "v").encode();
        let mut want = KEY_DOMAIN.to_vec();
        want.extend_from_slice(&CACHE_KEY_VERSION.to_le_bytes());
        want.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"k");
        want.extend_from_slice(&7u32.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"n");
        want.push(1);
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(b"v");
        assert_eq!(b, want);
    }

    #[test]
    fn order_of_calls_and_map_insertion_does_not_matter() {
        let a = KeyBuilder::new("x", 1)
            .component("a", "1")
            .component("m", ComponentValue::map([("p", "1"), ("q", "2")]))
            .finish();
        let b = KeyBuilder::new("x", 1)
            .component("m", ComponentValue::map([("q", "2"), ("p", "1")]))
            .component("a", "1")
            .finish();
        assert_eq!(a, b);
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = KeyBuilder::new("x", 1).component("a", "1").finish().0;
        let variants = [
            KeyBuilder::new("y", 1).component("a", "1"),
            KeyBuilder::new("x", 2).component("a", "1"),
            KeyBuilder::new("x", 1).component("b", "1"),
            KeyBuilder::new("x", 1).component("a", "2"),
            KeyBuilder::new("x", 1).component("a", 1u64),
            KeyBuilder::new("x", 1).component("a", ComponentValue::list(["1"])),
            KeyBuilder::new("x", 1).component("a", "1").component("c", ""),
        ];
        for v in variants {
            assert_ne!(v.clone().finish().0, base, "{v:?}");
        }
    }

    #[test]
    fn length_prefixes_prevent_ambiguity() {
        // Without prefixes, ("ab","c") and ("a","bc") would encode the same bytes.
        let a = KeyBuilder::new("x", 1).component("ab", "c").finish().0;
        let b = KeyBuilder::new("x", 1).component("a", "bc").finish().0;
        assert_ne!(a, b);
        let l1 = ComponentValue::list(["a,b"]);
        let l2 = ComponentValue::list(["a", "b"]);
        assert_ne!(
            KeyBuilder::new("x", 1).component("l", l1).finish().0,
            KeyBuilder::new("x", 1).component("l", l2).finish().0
        );
    }

    #[test]
    fn components_round_trip_through_json() {
        let (_, c) = sample().finish();
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Components>(&j).unwrap(), c);
        assert_eq!(
            c.items.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["argv", "base", "env", "mode", "prefix", "srcs", "strip"]
        );
    }

    #[test]
    fn diff_reports_per_entry_changes_of_maps() {
        let old = KeyBuilder::new("cnb_build", 1)
            .component(
                "srcs",
                ComponentValue::map([
                    ("services/api/app.py", Digest::of_bytes(b"v1")),
                    ("services/api/old.py", Digest::of_bytes(b"o")),
                ]),
            )
            .component("env", ComponentValue::map([("BP_X", "1"), ("BP_Y", "y")]))
            .component("builder", Digest::of_bytes(b"b1"))
            .component("gone", "x")
            .finish()
            .1;
        let new = KeyBuilder::new("cnb_build", 1)
            .component(
                "srcs",
                ComponentValue::map([
                    ("services/api/app.py", Digest::of_bytes(b"v2")),
                    ("services/api/new.py", Digest::of_bytes(b"n")),
                ]),
            )
            .component("env", ComponentValue::map([("BP_X", "2"), ("BP_Y", "y")]))
            .component("builder", Digest::of_bytes(b"b1"))
            .component("process", "web")
            .finish()
            .1;
        let lines: Vec<String> = Components::diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "env BP_X: 1 -> 2",
                "gone removed (was x)",
                "process added: web",
                "srcs: services/api/app.py changed",
                "srcs: services/api/new.py added",
                "srcs: services/api/old.py removed",
            ]
        );
        assert!(Components::diff(&new, &new).is_empty());
    }

    #[test]
    fn diff_reports_kind_and_scalar_changes() {
        let old = KeyBuilder::new("layer", 1).component("base", Digest::of_bytes(b"a")).finish().1;
        let new = KeyBuilder::new("layer", 2).component("base", Digest::of_bytes(b"b")).finish().1;
        let d = Components::diff(&old, &new);
        assert_eq!(
            d[0],
            ComponentChange::Changed {
                name: KIND_COMPONENT.into(),
                entry: None,
                old: "layer v1".into(),
                new: "layer v2".into()
            }
        );
        let shown = d[1].to_string();
        assert!(shown.starts_with("base: sha256:"), "{shown}");
        assert!(shown.len() < 60, "digests are shortened: {shown}");
    }

    #[test]
    fn diff_of_map_turned_scalar_is_a_whole_change() {
        let old = KeyBuilder::new("x", 1).component("v", ComponentValue::map([("a", "1")])).finish();
        let new = KeyBuilder::new("x", 1).component("v", "a=1").finish();
        assert_eq!(
            Components::diff(&old.1, &new.1),
            [ComponentChange::Changed { name: "v".into(), entry: None, old: "{a=1}".into(), new: "a=1".into() }]
        );
    }
}
