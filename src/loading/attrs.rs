//! Attribute values of targets as plain data ([`AttrValue`]), and the checks that turn Starlark
//! values into them according to a rule's attribute spec (type, mandatory, default, allowed values).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use starlark::values::dict::DictRef;
use starlark::values::list::ListRef;
use starlark::values::{Value, ValueLike};

use crate::model::label::{Label, PackagePath};

/// A checked attribute value. Labels are resolved to absolute form; files are workspace-relative.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    None,
    Bool(bool),
    Int(i64),
    String(String),
    Label(Label),
    /// A source file, workspace-relative (`services/api/app.py`).
    File(FileRef),
    /// A member of a builder order marked `optional(...)`.
    Optional(Label),
    List(Vec<AttrValue>),
    Dict(BTreeMap<String, AttrValue>),
}

/// A source file reference: path relative to the workspace root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FileRef {
    pub file: String,
}

impl serde::Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_label(&self) -> Option<&Label> {
        match self {
            AttrValue::Label(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_list(&self) -> &[AttrValue] {
        match self {
            AttrValue::List(v) => v,
            _ => &[],
        }
    }
    pub fn as_dict(&self) -> Option<&BTreeMap<String, AttrValue>> {
        match self {
            AttrValue::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Every label mentioned in this value (deps of the target).
    pub fn labels(&self, out: &mut Vec<Label>) {
        match self {
            AttrValue::Label(l) | AttrValue::Optional(l) => out.push(l.clone()),
            AttrValue::List(v) => v.iter().for_each(|x| x.labels(out)),
            AttrValue::Dict(d) => d.values().for_each(|x| x.labels(out)),
            _ => {}
        }
    }
}

/// The declared type of an attribute (`attr.string()`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    String,
    Int,
    Bool,
    StringList,
    StringDict,
    Label,
    LabelList,
    /// A dict of string to label (`integration_test`'s `images`): each value is a dependency.
    LabelDict,
    SourceList,
    Image,
    Order,
    Path,
    /// Plain data: None, bools, ints, strings, and lists and dicts (string keys) of them. The rule's
    /// analysis checks the shape (`image_test`'s `commands`, `service`).
    Data,
}

impl AttrType {
    pub fn parse(s: &str) -> Option<AttrType> {
        Some(match s {
            "string" => AttrType::String,
            "int" => AttrType::Int,
            "bool" => AttrType::Bool,
            "string_list" => AttrType::StringList,
            "string_dict" => AttrType::StringDict,
            "label" => AttrType::Label,
            "label_list" => AttrType::LabelList,
            "label_dict" => AttrType::LabelDict,
            "source_list" => AttrType::SourceList,
            "image" => AttrType::Image,
            "order" => AttrType::Order,
            "path" => AttrType::Path,
            "data" => AttrType::Data,
            _ => return None,
        })
    }
    /// What a user should pass, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            AttrType::String => "a string",
            AttrType::Int => "an int",
            AttrType::Bool => "a bool",
            AttrType::StringList => "a list of strings",
            AttrType::StringDict => "a dict of string to string",
            AttrType::Label => "a label string such as \"//pkg:name\" or \":name\"",
            AttrType::LabelList => "a list of label strings",
            AttrType::LabelDict => "a dict of string to label string",
            AttrType::SourceList => "a list of files of the package (e.g. from glob()) or labels",
            AttrType::Image => "an image label or \"scratch\"",
            AttrType::Order => "a list of groups, each a list of buildpack labels or optional(label)",
            AttrType::Path => "a path relative to the package",
            AttrType::Data => "plain data (strings, ints, bools, lists and dicts of them)",
        }
    }
}

/// Context for resolving relative labels and package files.
pub struct ConvertCtx<'a> {
    pub package: &'a PackagePath,
    pub package_dir: &'a Path,
    /// Package-relative paths `glob()` found (not directories) in this evaluation: known to
    /// exist, so not `lstat`ed again.
    pub globbed: Option<&'a std::collections::HashSet<String>>,
}

/// Converts one attribute value; the error is a message without location (the caller adds it).
pub fn convert<'v>(ty: AttrType, v: Value<'v>, cx: &ConvertCtx) -> Result<AttrValue, String> {
    let wrong = || format!("expected {}, got {} `{}`", ty.describe(), v.get_type(), short(v));
    match ty {
        AttrType::String => v.unpack_str().map(|s| AttrValue::String(s.to_string())).ok_or_else(wrong),
        AttrType::Int => v.unpack_i32().map(|i| AttrValue::Int(i as i64)).ok_or_else(wrong),
        AttrType::Bool => v.unpack_bool().map(AttrValue::Bool).ok_or_else(wrong),
        AttrType::StringList => {
            let l = ListRef::from_value(v).ok_or_else(wrong)?;
            let mut out = Vec::new();
            for x in l.iter() {
                out.push(AttrValue::String(x.unpack_str().ok_or_else(|| elem_err(ty, x))?.to_string()));
            }
            Ok(AttrValue::List(out))
        }
        AttrType::StringDict => {
            let d = DictRef::from_value(v).ok_or_else(wrong)?;
            let mut out = BTreeMap::new();
            for (k, x) in d.iter() {
                let k = k.unpack_str().ok_or_else(|| format!("dict keys must be strings, got `{}`", short(k)))?;
                let x = x
                    .unpack_str()
                    .ok_or_else(|| format!("value of `{k}` must be a string, got {} `{}`", x.get_type(), short(x)))?;
                out.insert(k.to_string(), AttrValue::String(x.to_string()));
            }
            Ok(AttrValue::Dict(out))
        }
        AttrType::Label => {
            let s = v.unpack_str().ok_or_else(wrong)?;
            Label::parse(s, Some(cx.package)).map(AttrValue::Label).map_err(|e| e.to_string())
        }
        AttrType::Image => {
            let s = v.unpack_str().ok_or_else(wrong)?;
            if s == "scratch" {
                return Ok(AttrValue::String("scratch".into()));
            }
            Label::parse(s, Some(cx.package)).map(AttrValue::Label).map_err(|e| e.to_string())
        }
        AttrType::LabelList => {
            let l = ListRef::from_value(v).ok_or_else(wrong)?;
            let mut out = Vec::new();
            for x in l.iter() {
                let s = x.unpack_str().ok_or_else(|| elem_err(ty, x))?;
                out.push(AttrValue::Label(Label::parse(s, Some(cx.package)).map_err(|e| e.to_string())?));
            }
            Ok(AttrValue::List(out))
        }
        AttrType::LabelDict => {
            let d = DictRef::from_value(v).ok_or_else(wrong)?;
            let mut out = BTreeMap::new();
            for (k, x) in d.iter() {
                let k = k.unpack_str().ok_or_else(|| format!("dict keys must be strings, got `{}`", short(k)))?;
                let s = x.unpack_str().ok_or_else(|| {
                    format!("value of `{k}` must be a label string, got {} `{}`", x.get_type(), short(x))
                })?;
                let l = Label::parse(s, Some(cx.package)).map_err(|e| format!("value of `{k}`: {e}"))?;
                out.insert(k.to_string(), AttrValue::Label(l));
            }
            Ok(AttrValue::Dict(out))
        }
        AttrType::SourceList => {
            let l = ListRef::from_value(v).ok_or_else(wrong)?;
            let mut out = Vec::with_capacity(l.len());
            for x in l.iter() {
                let s = x.unpack_str().ok_or_else(|| elem_err(ty, x))?;
                out.push(if s.starts_with("//") || s.starts_with(':') {
                    AttrValue::Label(Label::parse(s, Some(cx.package)).map_err(|e| e.to_string())?)
                } else {
                    AttrValue::File(package_file(s, cx, false)?)
                });
            }
            // Two spellings of one file (`a.txt`, `./a.txt`) or label are one item, listed twice.
            // Hashed, not compared as shown text in a sorted set: a glob of a service's 2,000
            // files shares long prefixes (issue 23).
            let mut seen = std::collections::HashSet::with_capacity(out.len());
            if let Some(i) = out.iter().position(|item| !seen.insert(item)) {
                let s = l.iter().nth(i).and_then(|x| x.unpack_str()).unwrap_or("?");
                return Err(format!("`{s}` is listed twice"));
            }
            Ok(AttrValue::List(out))
        }
        AttrType::Path => {
            let s = v.unpack_str().ok_or_else(wrong)?;
            Ok(AttrValue::File(package_file(s, cx, true)?))
        }
        AttrType::Data => data(v, 0),
        AttrType::Order => {
            let groups = ListRef::from_value(v).ok_or_else(wrong)?;
            let mut out = Vec::new();
            for (gi, g) in groups.iter().enumerate() {
                let members = ListRef::from_value(g).ok_or_else(|| {
                    format!(
                        "order group {} must be a list of buildpack labels, got {} `{}`",
                        gi + 1,
                        g.get_type(),
                        short(g)
                    )
                })?;
                if members.is_empty() {
                    return Err(format!("order group {} is empty", gi + 1));
                }
                let mut group = Vec::new();
                for m in members.iter() {
                    if let Some(s) = m.unpack_str() {
                        group.push(AttrValue::Label(Label::parse(s, Some(cx.package)).map_err(|e| e.to_string())?));
                    } else if let Some(Some(inner)) = m.get_type().eq("struct").then(|| optional_label(m)) {
                        group.push(AttrValue::Optional(
                            Label::parse(&inner, Some(cx.package)).map_err(|e| e.to_string())?,
                        ));
                    } else {
                        return Err(format!(
                            "order group {} has {} `{}`; members are label strings or optional(\"//label\")",
                            gi + 1,
                            m.get_type(),
                            short(m)
                        ));
                    }
                }
                out.push(AttrValue::List(group));
            }
            Ok(AttrValue::List(out))
        }
    }
}

/// Deepest nesting of lists and dicts an `attr.data()` value may have.
const MAX_DATA_DEPTH: usize = 16;

/// Converts plain Starlark data (see [`AttrType::Data`]).
fn data(v: Value, depth: usize) -> Result<AttrValue, String> {
    if depth > MAX_DATA_DEPTH {
        return Err(format!("data nested deeper than {MAX_DATA_DEPTH} levels"));
    }
    if v.is_none() {
        return Ok(AttrValue::None);
    }
    if let Some(b) = v.unpack_bool() {
        return Ok(AttrValue::Bool(b));
    }
    if let Some(i) = v.unpack_i32() {
        return Ok(AttrValue::Int(i as i64));
    }
    if let Some(s) = v.unpack_str() {
        return Ok(AttrValue::String(s.to_string()));
    }
    if let Some(l) = ListRef::from_value(v) {
        return l.iter().map(|x| data(x, depth + 1)).collect::<Result<_, _>>().map(AttrValue::List);
    }
    if let Some(d) = DictRef::from_value(v) {
        let mut out = BTreeMap::new();
        for (k, x) in d.iter() {
            let k = k.unpack_str().ok_or_else(|| format!("dict keys must be strings, got `{}`", short(k)))?;
            out.insert(k.to_string(), data(x, depth + 1)?);
        }
        return Ok(AttrValue::Dict(out));
    }
    Err(format!("expected plain data (strings, ints, bools, lists, dicts), got {} `{}`", v.get_type(), short(v)))
}

fn optional_label(v: Value) -> Option<String> {
    // `optional()` in the prelude returns struct(cbuild_optional = label).
    let s = format!("{v}");
    let _ = s;
    let heap_free = v.to_value();
    starlark::values::structs::StructRef::from_value(heap_free).and_then(|st| {
        st.iter().find(|(k, _)| k.as_str() == "cbuild_optional").and_then(|(_, x)| x.unpack_str().map(String::from))
    })
}

fn elem_err(ty: AttrType, x: Value) -> String {
    format!("expected {}, but an element is {} `{}`", ty.describe(), x.get_type(), short(x))
}

fn short(v: Value) -> String {
    let s = v.to_repr();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Resolves a file path given relative to the package; it must stay inside the package and exist.
fn package_file(s: &str, cx: &ConvertCtx, allow_dir: bool) -> Result<FileRef, String> {
    // A path `glob()` returned is a plain relative one (no `.`, `..` or empty component) that
    // exists: neither normalized nor `lstat`ed again.
    if cx.globbed.is_some_and(|g| g.contains(s)) {
        return Ok(FileRef { file: cx.package.join(s) });
    }
    let rel = crate::fs::normalize_relative(Path::new(s)).filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| {
        format!("`{s}` escapes the package `//{}` (absolute or `..` paths are not allowed)", cx.package)
    })?;
    let rel = rel.to_str().ok_or_else(|| format!("`{s}` is not valid UTF-8"))?.to_string();
    if !cx.globbed.is_some_and(|g| g.contains(&rel)) {
        let full = cx.package_dir.join(&rel);
        crate::fs::reads::note(&full, true);
        let md = std::fs::symlink_metadata(&full)
            .map_err(|_| format!("source file `{s}` does not exist in package `//{}`", cx.package))?;
        if md.is_dir() && !allow_dir {
            return Err(format!("`{s}` is a directory; list its files (e.g. glob([\"{s}/**\"]))"));
        }
    }
    Ok(FileRef { file: cx.package.join(&rel) })
}
