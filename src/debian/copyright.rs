//! The licences a Debian package states in its machine-readable `copyright` file (DEP-5,
//! `/usr/share/doc/<package>/copyright` with `Format: …/copyright-format/1.0/`): the short names of
//! the `License:` fields of its `Files:` paragraphs, as written (`GPL-2+`, `BSD-3-clause`,
//! `GPL-2+ or Artistic`), and their SPDX counterparts where the name has one. Pure functions.

/// The licence short names a DEP-5 copyright file states for its files, sorted and unique;
/// `None` when the file is not machine-readable (no DEP-5 `Format:` header).
pub fn licenses(text: &str) -> Option<Vec<String>> {
    let mut paragraphs = paragraphs(text);
    let header = paragraphs.first()?;
    let format = field(header, "Format")?;
    if !format.contains("copyright-format/1.0") {
        return None;
    }
    let mut out: Vec<String> = paragraphs
        .iter()
        .skip(1)
        .filter(|p| field(p, "Files").is_some())
        .filter_map(|p| field(p, "License"))
        .map(|l| l.lines().next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if out.is_empty() {
        // Only a header: its `License:` (if any) covers the package.
        out.extend(field(&paragraphs.remove(0), "License").map(|l| l.lines().next().unwrap_or("").trim().to_string()));
    }
    out.retain(|l| !l.is_empty());
    out.sort();
    out.dedup();
    Some(out)
}

/// The SPDX identifier of a Debian licence short name, when there is an exact one (`GPL-2+` →
/// `GPL-2.0-or-later`, `Expat` → `MIT`).
pub fn spdx_id(short: &str) -> Option<&'static str> {
    const MAP: &[(&str, &str)] = &[
        ("GPL-1", "GPL-1.0-only"),
        ("GPL-1+", "GPL-1.0-or-later"),
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-3", "GPL-3.0-only"),
        ("GPL-3+", "GPL-3.0-or-later"),
        ("LGPL-2", "LGPL-2.0-only"),
        ("LGPL-2+", "LGPL-2.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPL-3", "LGPL-3.0-only"),
        ("LGPL-3+", "LGPL-3.0-or-later"),
        ("AGPL-3", "AGPL-3.0-only"),
        ("AGPL-3+", "AGPL-3.0-or-later"),
        ("GFDL-1.2+", "GFDL-1.2-or-later"),
        ("GFDL-1.3+", "GFDL-1.3-or-later"),
        ("Apache-2.0", "Apache-2.0"),
        ("MIT", "MIT"),
        ("Expat", "MIT"),
        ("BSD-2-clause", "BSD-2-Clause"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("BSD-4-clause", "BSD-4-Clause"),
        ("ISC", "ISC"),
        ("Zlib", "Zlib"),
        ("zlib", "Zlib"),
        ("MPL-2.0", "MPL-2.0"),
        ("CC0-1.0", "CC0-1.0"),
        ("X11", "X11"),
        ("OpenSSL", "OpenSSL"),
        ("curl", "curl"),
    ];
    MAP.iter().find(|(d, _)| d.eq_ignore_ascii_case(short)).map(|(_, s)| *s)
}

/// Paragraphs: blocks of lines separated by blank lines.
fn paragraphs(text: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A field's value (continuation lines joined with `\n`), matched case-insensitively.
fn field(p: &[&str], name: &str) -> Option<String> {
    let mut lines = p.iter();
    while let Some(l) = lines.next() {
        let Some((k, v)) = l.split_once(':') else { continue };
        if l.starts_with([' ', '\t']) || !k.eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = v.trim().to_string();
        for c in lines.by_ref().take_while(|c| c.starts_with([' ', '\t'])) {
            value.push('\n');
            value.push_str(c.trim());
        }
        return Some(value);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: x
Comment: a header comment
 spanning two lines

Files: *
Copyright: 1999 someone
License: GPL-3+

Files: lib/*
Copyright: 2000 other
License: LGPL-2.1+
 with a text
 .
 more text

Files: debian/*
License: GPL-3+

License: GPL-3+
 The full text.
";

    #[test]
    fn dep5_licences_of_files_paragraphs() {
        assert_eq!(licenses(DEP5), Some(vec!["GPL-3+".to_string(), "LGPL-2.1+".to_string()]));
        assert_eq!(licenses("This is the Debian package of foo.\nCopyright: someone\n"), None);
        let header_only = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nLicense: MIT\n";
        assert_eq!(licenses(header_only), Some(vec!["MIT".to_string()]));
        assert_eq!(spdx_id("GPL-2+"), Some("GPL-2.0-or-later"));
        assert_eq!(spdx_id("expat"), Some("MIT"));
        assert_eq!(spdx_id("Artistic"), None);
    }
}
