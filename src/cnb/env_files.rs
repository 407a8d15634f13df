//! Layer environment files and layer root dirs (buildpack.md › Environment), std only: this file
//! is also compiled into the launcher with `#[path]`, so build and launch apply the same rules.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// An environment: variable name → value.
pub type EnvMap = BTreeMap<String, String>;

/// The modification an env file asks for, from its suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvAction {
    /// No suffix or `.override`: set the value.
    Override,
    /// `.default`: set only if the variable is empty.
    Default,
    /// `.append`: value after the current one, with `<NAME>.delim` between if both are non-empty.
    Append,
    /// `.prepend`: value before the current one, same delimiter rule.
    Prepend,
}

/// Splits an env file name into the variable name (up to the first `.`) and its action.
/// `.delim` files and unknown suffixes give `None` (ignored, like the lifecycle).
pub fn parse_env_file_name(file_name: &str) -> Option<(&str, EnvAction)> {
    let (name, suffix) = match file_name.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (file_name, None),
    };
    if name.is_empty() {
        return None;
    }
    let action = match suffix {
        None | Some("override") => EnvAction::Override,
        Some("default") => EnvAction::Default,
        Some("append") => EnvAction::Append,
        Some("prepend") => EnvAction::Prepend,
        Some(_) => return None,
    };
    Some((name, action))
}

/// Root directories of a layer and the path variables they are prepended to at build time.
pub const BUILD_ROOT_DIRS: [(&str, &[&str]); 4] = [
    ("bin", &["PATH"]),
    ("lib", &["LD_LIBRARY_PATH", "LIBRARY_PATH"]),
    ("include", &["CPATH"]),
    ("pkgconfig", &["PKG_CONFIG_PATH"]),
];

/// Root directories of a layer and the path variables they are prepended to at launch.
pub const LAUNCH_ROOT_DIRS: [(&str, &[&str]); 2] = [("bin", &["PATH"]), ("lib", &["LD_LIBRARY_PATH"])];

/// How env dirs are read. [`HostFs`] follows symlinks like the lifecycle inside its container (the
/// launcher, in the image); cbuild reads a buildpack's `/layers` through a confined implementation
/// instead (`crate::cnb::env::ConfinedEnvFs`), which never follows a symlink out of the tree.
pub trait EnvFs {
    /// Entries of `dir` sorted by name (Go `os.ReadDir` order), as (name, is_dir). A missing
    /// directory has no entries.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>>;
    /// The contents of the file `path` (`NotFound` if it does not exist).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
}

/// The host file system as paths name it (symlinks followed).
pub struct HostFs;

impl EnvFs for HostFs {
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        read_dir_sorted(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Entries of `dir` sorted by name (Go `os.ReadDir` order), as (name, is_dir following symlinks).
/// A missing directory has no entries.
pub fn read_dir_sorted(dir: &Path) -> io::Result<Vec<(String, bool)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.path().is_dir();
        out.push((name, is_dir));
    }
    out.sort();
    Ok(out)
}

fn delim(fs: &impl EnvFs, dir: &Path, name: &str) -> io::Result<String> {
    match fs.read(&dir.join(format!("{name}.delim"))) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Applies one modification; the delimiter is used only when both sides are non-empty.
pub fn apply_action(env: &mut EnvMap, name: &str, action: EnvAction, value: &str, delim: &str) {
    let cur = env.get(name).cloned().unwrap_or_default();
    let new = match action {
        EnvAction::Override => value.to_string(),
        EnvAction::Default if !cur.is_empty() => return,
        EnvAction::Default => value.to_string(),
        EnvAction::Append if cur.is_empty() => value.to_string(),
        EnvAction::Append => format!("{cur}{delim}{value}"),
        EnvAction::Prepend if cur.is_empty() => value.to_string(),
        EnvAction::Prepend => format!("{value}{delim}{cur}"),
    };
    env.insert(name.to_string(), new);
}

/// Applies the files of one env directory whose action `keep` accepts, in file-name order.
/// Contents are used verbatim (no trimming). Directories are skipped.
pub fn apply_env_dir_where(env: &mut EnvMap, dir: &Path, keep: impl Fn(EnvAction) -> bool) -> io::Result<()> {
    apply_env_dir_where_in(&HostFs, env, dir, keep)
}

/// [`apply_env_dir_where`] reading through `fs`.
pub fn apply_env_dir_where_in(
    fs: &impl EnvFs,
    env: &mut EnvMap,
    dir: &Path,
    keep: impl Fn(EnvAction) -> bool,
) -> io::Result<()> {
    for (file, is_dir) in fs.list(dir)? {
        if is_dir {
            continue;
        }
        let Some((name, action)) = parse_env_file_name(&file) else {
            continue;
        };
        if !keep(action) {
            continue;
        }
        let value = String::from_utf8_lossy(&fs.read(&dir.join(&file))?).into_owned();
        let d = match action {
            EnvAction::Append | EnvAction::Prepend => delim(fs, dir, name)?,
            _ => String::new(),
        };
        apply_action(env, name, action, &value, &d);
    }
    Ok(())
}

/// Applies every file of one env directory (lifecycle `AddEnvDir`).
pub fn apply_env_dir(env: &mut EnvMap, dir: &Path) -> io::Result<()> {
    apply_env_dir_where(env, dir, |_| true)
}

/// Applies a layer's env directories: `env/`, then `env.<phase>/` (`phase` is `"build"` or
/// `"launch"`), then `env.launch/<process>/` at launch. Override/append go in that order;
/// prepend/default go in reverse so the more specific directory takes precedence (checklist §7).
/// The lifecycle applies every action in forward order; the two differ only when one variable has
/// `.prepend`/`.default` files in more than one of these directories of the same layer.
pub fn apply_layer_env_dirs(env: &mut EnvMap, layer_dir: &Path, phase: &str, process: Option<&str>) -> io::Result<()> {
    apply_layer_env_dirs_in(&HostFs, env, layer_dir, phase, process)
}

/// [`apply_layer_env_dirs`] reading through `fs`.
pub fn apply_layer_env_dirs_in(
    fs: &impl EnvFs,
    env: &mut EnvMap,
    layer_dir: &Path,
    phase: &str,
    process: Option<&str>,
) -> io::Result<()> {
    let mut dirs = vec![layer_dir.join("env"), layer_dir.join(format!("env.{phase}"))];
    if let Some(p) = process.filter(|p| !p.is_empty() && phase == "launch") {
        dirs.push(layer_dir.join("env.launch").join(p));
    }
    for d in &dirs {
        apply_env_dir_where_in(fs, env, d, |a| matches!(a, EnvAction::Override | EnvAction::Append))?;
    }
    for d in dirs.iter().rev() {
        apply_env_dir_where_in(fs, env, d, |a| matches!(a, EnvAction::Prepend | EnvAction::Default))?;
    }
    Ok(())
}

/// Prepends `<layer>/<dir>` to the variables of `map` for each root dir that exists, `:` between
/// (lifecycle `AddRootDir`).
pub fn apply_root_dirs(env: &mut EnvMap, layer_dir: &Path, map: &[(&str, &[&str])]) {
    apply_root_dirs_in(&HostFs, env, layer_dir, map)
}

/// [`apply_root_dirs`] checking existence through `fs`.
pub fn apply_root_dirs_in(fs: &impl EnvFs, env: &mut EnvMap, layer_dir: &Path, map: &[(&str, &[&str])]) {
    for (dir, vars) in map {
        let child = layer_dir.join(dir);
        if !fs.exists(&child) {
            continue;
        }
        let child = child.to_string_lossy().into_owned();
        for var in *vars {
            apply_action(env, var, EnvAction::Prepend, &child, ":");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A temp dir removed on drop (std only: this file is also tested inside the launcher).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "cnb-env-files-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn file_names() {
        assert_eq!(parse_env_file_name("PATH"), Some(("PATH", EnvAction::Override)));
        assert_eq!(parse_env_file_name("A.override"), Some(("A", EnvAction::Override)));
        assert_eq!(parse_env_file_name("A.default"), Some(("A", EnvAction::Default)));
        assert_eq!(parse_env_file_name("A.append"), Some(("A", EnvAction::Append)));
        assert_eq!(parse_env_file_name("A.prepend"), Some(("A", EnvAction::Prepend)));
        assert_eq!(parse_env_file_name("A.delim"), None);
        assert_eq!(parse_env_file_name("A.weird"), None);
        assert_eq!(parse_env_file_name("A.b.append"), None);
        assert_eq!(parse_env_file_name(".hidden"), None);
    }

    #[test]
    fn suffix_rules_verbatim_and_delims() {
        let t = TempDir::new();
        let d = t.0.join("env");
        write(&d, "OVR", "  spaced\n");
        write(&d, "OVR2.override", "o");
        write(&d, "DEF.default", "d");
        write(&d, "KEEP.default", "ignored");
        write(&d, "APP.append", "a");
        write(&d, "NODELIM.prepend", "p");
        write(&d, "PRE.prepend", "p");
        write(&d, "PRE.delim", ":");
        write(&d, "EMPTY.append", "x");
        write(&d, "EMPTY.delim", ":");
        write(&d, "IGN.unknown", "no");
        fs::create_dir_all(d.join("SUBDIR")).unwrap();
        let mut e = env(&[("KEEP", "k"), ("APP", "0"), ("NODELIM", "n"), ("PRE", "q"), ("EMPTY", "")]);
        apply_env_dir(&mut e, &d).unwrap();
        assert_eq!(e["OVR"], "  spaced\n");
        assert_eq!(e["OVR2"], "o");
        assert_eq!(e["DEF"], "d");
        assert_eq!(e["KEEP"], "k");
        assert_eq!(e["APP"], "0a");
        assert_eq!(e["NODELIM"], "pn");
        assert_eq!(e["PRE"], "p:q");
        assert_eq!(e["EMPTY"], "x");
        assert!(!e.contains_key("IGN") && !e.contains_key("SUBDIR"));
        // A missing directory is not an error.
        apply_env_dir(&mut e, &t.0.join("nope")).unwrap();
    }

    #[test]
    fn layer_dir_ordering() {
        let t = TempDir::new();
        let l = &t.0;
        write(l, "env/A.append", "1");
        write(l, "env.launch/A.append", "2");
        write(l, "env.launch/web/A.append", "3");
        write(l, "env/P.prepend", "1");
        write(l, "env.launch/P.prepend", "2");
        write(l, "env.launch/web/P.prepend", "3");
        write(l, "env/D.default", "generic");
        write(l, "env.launch/web/D.default", "specific");
        write(l, "env/O", "generic");
        write(l, "env.launch/O.override", "launch");
        write(l, "env.build/B", "build-only");
        let mut e = EnvMap::new();
        apply_layer_env_dirs(&mut e, l, "launch", Some("web")).unwrap();
        assert_eq!(e["A"], "123");
        assert_eq!(e["P"], "123");
        assert_eq!(e["D"], "specific");
        assert_eq!(e["O"], "launch");
        assert!(!e.contains_key("B"));
        let mut e = EnvMap::new();
        apply_layer_env_dirs(&mut e, l, "launch", Some("worker")).unwrap();
        assert_eq!(e["A"], "12");
        assert_eq!(e["D"], "generic");
        let mut e = EnvMap::new();
        apply_layer_env_dirs(&mut e, l, "build", Some("web")).unwrap();
        assert_eq!(e["A"], "1");
        assert_eq!(e["B"], "build-only");
        assert_eq!(e["O"], "generic");
    }

    #[test]
    fn root_dirs() {
        let t = TempDir::new();
        let l = &t.0;
        for d in ["bin", "lib", "include", "pkgconfig"] {
            fs::create_dir_all(l.join(d)).unwrap();
        }
        let mut e = env(&[("PATH", "/usr/bin")]);
        apply_root_dirs(&mut e, l, &BUILD_ROOT_DIRS);
        let p = |d: &str| l.join(d).to_string_lossy().into_owned();
        assert_eq!(e["PATH"], format!("{}:/usr/bin", p("bin")));
        assert_eq!(e["LD_LIBRARY_PATH"], p("lib"));
        assert_eq!(e["LIBRARY_PATH"], p("lib"));
        assert_eq!(e["CPATH"], p("include"));
        assert_eq!(e["PKG_CONFIG_PATH"], p("pkgconfig"));
        let mut e = EnvMap::new();
        apply_root_dirs(&mut e, l, &LAUNCH_ROOT_DIRS);
        assert_eq!(e.len(), 2);
        assert!(!e.contains_key("LIBRARY_PATH"));
    }
}
