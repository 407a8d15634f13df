//! Debian control-file syntax (deb822): stanzas of `Field: value` lines with continuation lines,
//! as used by `Release`, `Packages`, `.sources` files and a package's `control`. No semantics here.

/// One stanza: fields in file order, names as written, values with continuation lines joined by
/// `\n` (the first line trimmed, continuation lines keeping their text after the leading space).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stanza {
    /// `(name, value)` in file order.
    pub fields: Vec<(String, String)>,
}

impl Stanza {
    /// The value of field `name` (case-insensitive, as deb822 field names are).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Splits `text` into stanzas. Blank lines separate stanzas; `#` comment lines are skipped; a
/// line starting with a space or tab continues the previous field. Returns the 1-based line
/// number and a reason for a line that is neither.
pub fn parse_stanzas(text: &str) -> Result<Vec<Stanza>, (usize, String)> {
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            let Some((_, v)) = cur.fields.last_mut() else {
                return Err((i + 1, "a continuation line before any field".into()));
            };
            let rest = &line[1..];
            // a lone `.` stands for an empty line inside a multi-line value
            let rest = if rest.trim() == "." { "" } else { rest };
            v.push('\n');
            v.push_str(rest.trim_end());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err((i + 1, format!("`{line}` is not a `Field: value` line")));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err((i + 1, format!("`{name}` is not a field name")));
        }
        cur.fields.push((name.to_string(), value.trim().to_string()));
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stanzas_with_continuations_and_comments() {
        let t = "# comment\nPackage: a\nDescription: short\n long line\n .\n more\n\n\nPackage: b\r\nDepends: x,\n y\n";
        let s = parse_stanzas(t).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("package"), Some("a"));
        assert_eq!(s[0].get("Description"), Some("short\nlong line\n\nmore"));
        assert_eq!(s[1].get("Depends"), Some("x,\ny"));
        assert_eq!(s[1].get("Missing"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_stanzas(" cont\n").unwrap_err().0, 1);
        assert_eq!(parse_stanzas("A: b\nnot a field\n").unwrap_err().0, 2);
    }
}
