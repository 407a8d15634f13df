//! Debian version numbers (`[epoch:]upstream[-revision]`) and dpkg's ordering of them
//! (`lib/dpkg/version.c`): epochs numerically, then upstream and revision with `~` sorting
//! before everything, even the end of the string, and letters before other symbols.

use std::cmp::Ordering;
use std::fmt;

use super::error::{DebianError, Result};

/// A parsed Debian version. Equality is dpkg's: `1.0`, `0:1.0` and `1.0-0` are equal.
#[derive(Clone, Debug)]
pub struct Version {
    /// The epoch (0 when absent).
    pub epoch: u64,
    /// The upstream part.
    pub upstream: String,
    /// The Debian revision (`""` when absent, which compares equal to `"0"`).
    pub revision: String,
}

impl Version {
    /// Parses `[epoch:]upstream[-revision]`: the epoch is digits before the first `:`, the revision
    /// what follows the last `-`. The upstream part must be non-empty and start with a digit, as
    /// dpkg requires; no part may contain whitespace.
    pub fn parse(s: &str) -> Result<Version> {
        let bad = |reason: &str| DebianError::BadVersion { version: s.to_string(), reason: reason.to_string() };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.contains(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the epoch is not a number"));
                }
                let epoch = e.parse().map_err(|_| bad("the epoch is too large"))?;
                (epoch, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => {
                if r.is_empty() {
                    return Err(bad("the revision after `-` is empty"));
                }
                (u, r)
            }
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(bad("the upstream version is empty"));
        }
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err(bad("the upstream version does not start with a digit"));
        }
        let ok = |c: char, extra: &str| c.is_ascii_alphanumeric() || ".+~".contains(c) || extra.contains(c);
        if !upstream.chars().all(|c| ok(c, "-:")) {
            return Err(bad("the upstream version has a character other than `A-Za-z0-9.+~-:`"));
        }
        if !revision.chars().all(|c| ok(c, "")) {
            return Err(bad("the revision has a character other than `A-Za-z0-9.+~`"));
        }
        Ok(Version { epoch, upstream: upstream.to_string(), revision: revision.to_string() })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, o: &Self) -> Ordering {
        self.epoch
            .cmp(&o.epoch)
            .then_with(|| verrevcmp(&self.upstream, &o.upstream))
            .then_with(|| verrevcmp(&self.revision, &o.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Version {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Compares two version strings the way `dpkg --compare-versions` does. Strings that do not
/// parse are compared with the same algorithm on the whole string (dpkg does the same after a
/// warning), so the order stays total.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => verrevcmp(a, b),
    }
}

/// The weight of one character: digits 0 (they are compared as numbers elsewhere), letters
/// their code, `~` below everything (even the end), other symbols after all letters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit runs (compared by [`order`]) and digit runs
/// (compared numerically, leading zeros ignored).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    let digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        while (at(a, i).is_some() && !digit(at(a, i))) || (at(b, j).is_some() && !digit(at(b, j))) {
            let (ac, bc) = (order(at(a, i)), order(at(b, j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(a, i) == Some(b'0') {
            i += 1;
        }
        while at(b, j) == Some(b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(at(a, i)) && digit(at(b, j)) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(at(a, i)) {
            return Ordering::Greater;
        }
        if digit(at(b, j)) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn compares_like_dpkg() {
        let cases: &[(&str, &str, Ordering)] = &[
            ("1.0", "1.0", Equal),
            ("1.0", "1.0.1", Less),
            ("1.0", "1.1", Less),
            ("1.2", "1.10", Less),
            ("1.00", "1.0", Equal),
            ("001", "1", Equal),
            ("1.0-1", "1.0-2", Less),
            ("2.30-5", "2.30-10", Less),
            ("1.0-0", "1.0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1:0.1", "2.0", Greater),
            ("1:1.0", "0:9.9", Greater),
            ("2:1", "10:0", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~", "1.0", Less),
            ("1.0~~", "1.0~~a", Less),
            ("1.0~~a", "1.0~", Less),
            ("1.0~", "1.0~~", Greater),
            ("1.0", "1.0+b1", Less),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0b", Less),
            ("1.0a", "1.0+", Less),
            ("1.0+", "1.0.", Less),
            ("1.0-1~bpo1", "1.0-1", Less),
            ("1.0-1+deb12u1", "1.0-1", Greater),
            ("1.0-1+deb12u1", "1.0-1+deb12u2", Less),
            ("1.2.3", "1.2-3", Greater),
            ("1.2-3-4", "1.2-3-5", Less),
            ("12.4+deb12u5", "12.4+deb12u10", Less),
            ("1:1.35.0-4", "1:1.35.0-4+b1", Less),
            ("2.36-9+deb12u4", "2.36-9", Greater),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
            ("1.0", "1.0-", Less), // unparsable: falls back to the raw comparison
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), *want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn parses_parts() {
        let v = Version::parse("1:2.3-4-5").unwrap();
        assert_eq!((v.epoch, v.upstream.as_str(), v.revision.as_str()), (1, "2.3-4", "5"));
        assert_eq!(v.to_string(), "1:2.3-4-5");
        let v = Version::parse("2.3").unwrap();
        assert_eq!((v.epoch, v.revision.as_str()), (0, ""));
        assert_eq!(Version::parse("0:1.0").unwrap(), Version::parse("1.0-0").unwrap());
    }

    #[test]
    fn rejects_bad_versions() {
        for s in ["", "a1.0", "x:1.0", ":1.0", "1.0-", "1 .0", "1.0_1", "1:", "1.0-a_b"] {
            assert!(Version::parse(s).is_err(), "{s:?}");
        }
    }
}
