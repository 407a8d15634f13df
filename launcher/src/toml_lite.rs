//! A small TOML reader for the two documents the launcher reads: `<layers>/config/metadata.toml`
//! and the `NAME = "value"` output of `exec.d` programs. Handles all string forms, booleans,
//! numbers, arrays, inline tables, `[table]` and `[[array]]` headers; not a validator.

/// A TOML value as far as the launcher cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Array(Vec<Value>),
    Table(Vec<(String, Value)>),
    /// Floats, dates and the like, as written.
    Other(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A string array (or a single string, as older metadata.toml wrote `command`).
    pub fn as_strings(&self) -> Option<Vec<String>> {
        match self {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_string)).collect(),
            _ => None,
        }
    }
}

/// One `[header]` or `[[header]]` section with its key/value pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub header: String,
    pub array: bool,
    pub entries: Vec<(String, Value)>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A document: the root keys, then the sections in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub root: Section,
    pub sections: Vec<Section>,
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

/// Parses `text`; errors say the line.
pub fn parse(text: &str) -> Result<Doc, String> {
    let mut p = P { s: text.as_bytes(), i: 0, line: 1 };
    let mut doc =
        Doc { root: Section { header: String::new(), array: false, entries: Vec::new() }, sections: Vec::new() };
    loop {
        p.skip_blank(true);
        let Some(c) = p.peek() else { break };
        if c == b'[' {
            let array = p.s.get(p.i + 1) == Some(&b'[');
            p.i += if array { 2 } else { 1 };
            let start = p.i;
            while let Some(c) = p.peek() {
                if c == b']' || c == b'\n' {
                    break;
                }
                p.i += 1;
            }
            let header = String::from_utf8_lossy(&p.s[start..p.i]).trim().replace(['"', '\''], "");
            for _ in 0..if array { 2 } else { 1 } {
                p.expect(b']')?;
            }
            doc.sections.push(Section { header, array, entries: Vec::new() });
        } else {
            let (k, v) = p.key_value()?;
            match doc.sections.last_mut() {
                Some(s) => s.entries.push((k, v)),
                None => doc.root.entries.push((k, v)),
            }
        }
        p.skip_blank(false);
        match p.peek() {
            None => break,
            Some(b'\n') => {}
            Some(c) => return Err(p.err(&format!("unexpected `{}` after value", c as char))),
        }
    }
    Ok(doc)
}

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn err(&self, m: &str) -> String {
        format!("line {}: {m}", self.line)
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }

    /// Skips spaces, tabs and comments; with `newlines` also line ends.
    fn skip_blank(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'\n' if newlines => {
                    self.line += 1;
                    self.i += 1;
                }
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn key(&mut self) -> Result<String, String> {
        let mut parts = Vec::new();
        loop {
            self.skip_blank(false);
            let part = match self.peek() {
                Some(b'"') => self.basic_string()?,
                Some(b'\'') => self.literal_string()?,
                _ => {
                    let start = self.i;
                    while let Some(c) = self.peek() {
                        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                    if start == self.i {
                        return Err(self.err("expected a key"));
                    }
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
                }
            };
            parts.push(part);
            self.skip_blank(false);
            if self.peek() == Some(b'.') {
                self.i += 1;
            } else {
                return Ok(parts.join("."));
            }
        }
    }

    fn key_value(&mut self) -> Result<(String, Value), String> {
        let k = self.key()?;
        self.skip_blank(false);
        self.expect(b'=')?;
        self.skip_blank(false);
        let v = self.value()?;
        Ok((k, v))
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => self.basic_string().map(Value::Str),
            Some(b'\'') => self.literal_string().map(Value::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank(true);
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.skip_blank(true);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {}
                        _ => return Err(self.err("expected `,` or `]` in array")),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut entries = Vec::new();
                loop {
                    self.skip_blank(false);
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Value::Table(entries));
                    }
                    entries.push(self.key_value()?);
                    self.skip_blank(false);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {}
                        _ => return Err(self.err("expected `,` or `}` in inline table")),
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b']' | b'}' | b'#' | b'\n') {
                        break;
                    }
                    self.i += 1;
                }
                let tok = String::from_utf8_lossy(&self.s[start..self.i]).trim().to_string();
                Ok(match tok.as_str() {
                    "" => return Err(self.err("expected a value")),
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    t => match t.replace('_', "").parse::<i64>() {
                        Ok(i) => Value::Int(i),
                        Err(_) => Value::Other(t.to_string()),
                    },
                })
            }
            None => Err(self.err("expected a value")),
        }
    }

    fn starts_with(&self, pat: &[u8]) -> bool {
        self.s[self.i..].starts_with(pat)
    }

    fn literal_string(&mut self) -> Result<String, String> {
        let multi = self.starts_with(b"'''");
        let delim: &[u8] = if multi { b"'''" } else { b"'" };
        self.i += delim.len();
        if multi {
            self.skip_first_newline();
        }
        let start = self.i;
        loop {
            if self.i >= self.s.len() {
                return Err(self.err("unterminated string"));
            }
            if self.starts_with(delim) {
                let out = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += delim.len();
                return Ok(out);
            }
            if self.s[self.i] == b'\n' {
                if !multi {
                    return Err(self.err("newline in string"));
                }
                self.line += 1;
            }
            self.i += 1;
        }
    }

    fn skip_first_newline(&mut self) {
        if self.starts_with(b"\r\n") {
            self.i += 2;
            self.line += 1;
        } else if self.starts_with(b"\n") {
            self.i += 1;
            self.line += 1;
        }
    }

    fn basic_string(&mut self) -> Result<String, String> {
        let multi = self.starts_with(b"\"\"\"");
        let delim: &[u8] = if multi { b"\"\"\"" } else { b"\"" };
        self.i += delim.len();
        if multi {
            self.skip_first_newline();
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            if self.i >= self.s.len() {
                return Err(self.err("unterminated string"));
            }
            if self.starts_with(delim) {
                self.i += delim.len();
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'\n' if !multi => return Err(self.err("newline in string")),
                b'\n' => {
                    self.line += 1;
                    out.push(c);
                }
                b'\\' => {
                    let e = self.peek().ok_or_else(|| self.err("unterminated escape"))?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'e' => out.push(27),
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'u' | b'U' => {
                            let n = if e == b'u' { 4 } else { 8 };
                            let hex = self.s.get(self.i..self.i + n).ok_or_else(|| self.err("short unicode escape"))?;
                            let code = u32::from_str_radix(&String::from_utf8_lossy(hex), 16)
                                .map_err(|_| self.err("bad unicode escape"))?;
                            let ch = char::from_u32(code).ok_or_else(|| self.err("bad unicode escape"))?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            self.i += n;
                        }
                        b' ' | b'\t' | b'\r' | b'\n' if multi => {
                            // Line-ending backslash: drop the newline and leading whitespace.
                            self.i -= 1;
                            while let Some(w) = self.peek() {
                                match w {
                                    b' ' | b'\t' | b'\r' => self.i += 1,
                                    b'\n' => {
                                        self.line += 1;
                                        self.i += 1;
                                    }
                                    _ => break,
                                }
                            }
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                _ => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_shape() {
        let d = parse(
            "buildpack-default-process-type = \"web\"\n\n[[buildpacks]]\n  id = \"acme/a\"\n  api = \"0.9\"\n\n[[processes]]\ntype = \"web\" # c\ncommand = [\"sh\", \"-c\", \"echo \\\"x\\\"\\n\\u00e9\"]\nargs = []\ndirect = true\n[[labels]]\nkey = 'lit\\eral'\n[bom]\nx = { a = 1, b = [1, 2] }\nn = 1_000\nf = 1.5\nd = 1979-05-27 07:32:00Z\n",
        )
        .unwrap();
        assert_eq!(d.root.get("buildpack-default-process-type"), Some(&Value::Str("web".into())));
        assert_eq!(d.sections.len(), 4);
        assert!(d.sections[0].array);
        assert_eq!(d.sections[0].header, "buildpacks");
        let cmd = d.sections[1].get("command").unwrap().as_strings().unwrap();
        assert_eq!(cmd, ["sh", "-c", "echo \"x\"\né"]);
        assert_eq!(d.sections[1].get("args"), Some(&Value::Array(vec![])));
        assert_eq!(d.sections[1].get("direct"), Some(&Value::Bool(true)));
        assert_eq!(d.sections[2].get("key").unwrap().as_str(), Some("lit\\eral"));
        assert_eq!(d.sections[3].get("n"), Some(&Value::Int(1000)));
        assert_eq!(d.sections[3].get("f"), Some(&Value::Other("1.5".into())));
        assert!(!d.sections[3].array);
    }

    #[test]
    fn exec_d_output_shapes() {
        let d = parse("A = \"1\"\nB = '''\nmulti\nline'''\nC = \"\"\"\nx \\\n   y\"\"\"\n\"quoted key\" = \"q\"\n")
            .unwrap();
        let get = |k: &str| d.root.get(k).and_then(|v| v.as_str()).map(str::to_string);
        assert_eq!(get("A").as_deref(), Some("1"));
        assert_eq!(get("B").as_deref(), Some("multi\nline"));
        assert_eq!(get("C").as_deref(), Some("x y"));
        assert_eq!(get("quoted key").as_deref(), Some("q"));
        assert_eq!(parse("").unwrap().root.entries.len(), 0);
    }

    #[test]
    fn multiline_arrays_and_errors() {
        let d = parse("a = [\n  \"x\", # c\n  \"y\",\n]\n").unwrap();
        assert_eq!(d.root.get("a").unwrap().as_strings().unwrap(), ["x", "y"]);
        assert!(parse("a = \"x").unwrap_err().contains("line 1"));
        assert!(parse("a = 1 2\nb = [\n").is_err());
        assert!(parse("\n\n= 3").unwrap_err().contains("line 3"));
        assert!(parse("a = \"\\q\"").is_err());
    }
}
