//! A target platform in OCI words: `os/architecture[/variant]` (`linux/amd64`, `linux/arm64`,
//! `linux/arm/v7`), as `platforms` attributes, `--platform` and image indexes write it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One platform. Ordered so sets of platforms list them the same way everywhere.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Architectures an image index may name (the OCI image spec's `GOARCH` values in use).
const ARCHITECTURES: &[&str] =
    &["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64", "mips", "mipsle"];

impl Platform {
    /// Parses `os/arch[/variant]`. Common aliases are normalised as BuildKit does
    /// (`x86_64` → `amd64`, `aarch64` → `arm64`, `arm64/v8` → `arm64`).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let bad = |why: &str| format!("platform `{s}` {why} (expected os/arch[/variant], e.g. linux/arm64)");
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad("does not parse"));
        }
        let os = parts[0].to_ascii_lowercase();
        if os != "linux" {
            return Err(bad("is not a Linux platform: cbuild builds linux images only"));
        }
        let architecture = match parts[1].to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "i386" | "i686" => "386".to_string(),
            a => a.to_string(),
        };
        if !ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(bad(&format!(
                "names an unknown architecture `{architecture}` (known: {})",
                ARCHITECTURES.join(", ")
            )));
        }
        let variant = parts.get(2).map(|v| v.to_ascii_lowercase());
        if let Some(v) = &variant {
            if !(v.len() <= 8 && v.starts_with('v') && v[1..].chars().all(|c| c.is_ascii_digit()) && v.len() > 1) {
                return Err(bad(&format!("has an unknown variant `{v}` (e.g. v7, v8)")));
            }
        }
        // arm64's only variant is v8: `linux/arm64/v8` is `linux/arm64`.
        let variant = variant.filter(|v| !(architecture == "arm64" && v == "v8"));
        Ok(Platform { os, architecture, variant })
    }

    /// The host's platform (`linux/amd64` on x86_64, `linux/arm64` on aarch64).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            a => a,
        };
        Platform { os: std::env::consts::OS.to_string(), architecture: architecture.to_string(), variant: None }
    }

    /// The Debian name of the architecture (`386` is `i386`, `ppc64le` is `ppc64el`, `arm` is `armhf`).
    pub fn debian_arch(&self) -> &str {
        match self.architecture.as_str() {
            "386" => "i386",
            "ppc64le" => "ppc64el",
            "arm" => "armhf",
            "mips64le" => "mips64el",
            a => a,
        }
    }

    /// The `uname -m` name of the architecture (what a binfmt handler is registered for).
    pub fn machine(&self) -> &str {
        match self.architecture.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "386" => "i386",
            "arm" => "arm",
            a => a,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Parses a list of platforms; duplicates are an error (each platform is one image of the index).
pub fn parse_list(items: &[String]) -> Result<Vec<Platform>, String> {
    let mut out: Vec<Platform> = Vec::new();
    for s in items {
        let p = Platform::parse(s)?;
        if out.contains(&p) {
            return Err(format!("platform `{p}` is listed twice"));
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()), ("linux", "arm64", None));
        assert_eq!(Platform::parse("linux/aarch64").unwrap(), p);
        assert_eq!(Platform::parse("linux/arm64/v8").unwrap(), p);
        assert_eq!(Platform::parse("linux/x86_64").unwrap().to_string(), "linux/amd64");
        assert_eq!(Platform::parse("linux/arm/v7").unwrap().to_string(), "linux/arm/v7");
    }

    #[test]
    fn refuses_what_does_not_parse() {
        for bad in ["", "linux", "linux/", "/amd64", "linux/amd64/v1/x", "windows/amd64", "linux/sparc", "linux/arm/7"]
        {
            let e = Platform::parse(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(parse_list(&["linux/amd64".into(), "linux/x86_64".into()]).unwrap_err().contains("twice"));
    }
}
