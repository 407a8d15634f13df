//! The environment `bin/detect` and `bin/build` run with (buildpack.md › Detection, Build;
//! platform.md › Environment): the filtered host env, platform and build-config env, the env of
//! earlier build layers and the `CNB_*` variables per Buildpack API. Reads env dirs; spawns nothing.

use std::io;
use std::path::Path;

use super::buildpack_toml::{BuildpackApi, RunTarget, DEFAULT_EXEC_ENV};
use super::env_files::{apply_action, read_dir_sorted};
pub use super::env_files::{
    apply_env_dir, apply_layer_env_dirs, apply_root_dirs, parse_env_file_name, EnvAction, EnvFs, EnvMap,
    BUILD_ROOT_DIRS, LAUNCH_ROOT_DIRS,
};
use crate::fs::confined::{Kind, Root};

/// Largest env file cbuild reads from a buildpack's layers (a value, not a payload).
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// Env dirs of a tree a buildpack wrote, read through [`Root`]: paths are given as the sandbox
/// sees them (`<mount>/<rel>`, e.g. `/layers/acme_go/go/env`), so values that name layer dirs come
/// out as sandbox paths. A symlink anywhere on the way is an error naming the file; nothing outside
/// the tree is ever read.
pub struct ConfinedEnvFs<'a> {
    pub root: &'a Root,
    /// Where `root` is mounted in the sandbox.
    pub mount: &'a Path,
}

impl ConfinedEnvFs<'_> {
    fn rel<'p>(&self, p: &'p Path) -> io::Result<&'p Path> {
        p.strip_prefix(self.mount).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not under `{}`", p.display(), self.mount.display()),
            )
        })
    }
}

impl EnvFs for ConfinedEnvFs<'_> {
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, bool)>> {
        let rel = self.rel(dir)?;
        match self.root.meta(rel)? {
            None => return Ok(Vec::new()),
            Some(m) if m.kind == Kind::Dir => {}
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{}` is not a directory (symlinks are not followed)", dir.display()),
                ))
            }
        }
        let mut out = Vec::new();
        for n in self.root.read_dir(rel)? {
            let is_dir = self.root.is_dir(&rel.join(&n))?;
            out.push((n.to_string_lossy().into_owned(), is_dir));
        }
        Ok(out)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let rel = self.rel(path)?;
        self.root.read(rel, MAX_ENV_FILE_BYTES).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => e,
            _ => io::Error::new(e.kind(), format!("env file `{}`: {e}", path.display())),
        })
    }
    fn exists(&self, path: &Path) -> bool {
        self.rel(path).ok().and_then(|r| self.root.meta(r).ok().flatten()).is_some()
    }
}

/// [`apply_build_layer`] for a layer of a tree a buildpack wrote (see [`ConfinedEnvFs`]);
/// `layer_dir` is the layer's sandbox path.
pub fn apply_build_layer_confined(env: &mut EnvMap, fs: &ConfinedEnvFs<'_>, layer_dir: &Path) -> io::Result<()> {
    super::env_files::apply_root_dirs_in(fs, env, layer_dir, &BUILD_ROOT_DIRS);
    super::env_files::apply_layer_env_dirs_in(fs, env, layer_dir, "build", None)
}

/// Host variables that reach buildpacks (besides `*_PROXY`/`*_proxy`) [L].
pub const INHERITED_VARS: [&str; 8] =
    ["HOME", "HOSTNAME", "CNB_STACK_ID", "PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "PKG_CONFIG_PATH"];

/// Path-list variables: platform env files prepend to them with `:` instead of replacing.
pub const PATH_VARS: [&str; 5] = ["PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "PKG_CONFIG_PATH"];

/// Whether a host variable is passed to detect/build.
pub fn is_inherited(name: &str) -> bool {
    INHERITED_VARS.contains(&name) || name.ends_with("_PROXY") || name.ends_with("_proxy")
}

/// The host environment filtered to [`INHERITED_VARS`] and proxies (lifecycle `NewBuildEnv`).
pub fn filtered_base_env<I, K, V>(host: I) -> EnvMap
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    host.into_iter().map(|(k, v)| (k.into(), v.into())).filter(|(k, _)| is_inherited(k)).collect()
}

/// `env` with `<platform>/env/<NAME>` applied (lifecycle `WithPlatform`): the whole file name is
/// the variable; path variables get the value prepended with `:`, others are replaced. `HOME` is
/// never overridden.
pub fn with_platform_env(env: &EnvMap, platform_dir: &Path) -> io::Result<EnvMap> {
    let mut out = env.clone();
    let dir = platform_dir.join("env");
    for (name, is_dir) in read_dir_sorted(&dir)? {
        if is_dir || name == "HOME" {
            continue;
        }
        let value = String::from_utf8_lossy(&std::fs::read(dir.join(&name))?).into_owned();
        if PATH_VARS.contains(&name.as_str()) {
            apply_action(&mut out, &name, EnvAction::Prepend, &value, ":");
        } else {
            out.insert(name, value);
        }
    }
    Ok(out)
}

/// Applies `<build-config>/env/` (operator env): suffixes as for layers but an unsuffixed file is
/// a default. `HOME` and `CNB_*` are ignored and `BP_*` set by the user are never overridden.
pub fn apply_build_config_env(env: &mut EnvMap, build_config_dir: &Path) -> io::Result<()> {
    let dir = build_config_dir.join("env");
    for (file, is_dir) in read_dir_sorted(&dir)? {
        if is_dir {
            continue;
        }
        let Some((name, mut action)) = parse_env_file_name(&file) else {
            continue;
        };
        if name == "HOME" || name.starts_with("CNB_") {
            continue;
        }
        if !file.contains('.') || (name.starts_with("BP_") && env.contains_key(name)) {
            action = EnvAction::Default;
        }
        let value = String::from_utf8_lossy(&std::fs::read(dir.join(&file))?).into_owned();
        let delim = std::fs::read(dir.join(format!("{name}.delim")))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        apply_action(env, name, action, &value, &delim);
    }
    Ok(())
}

/// Adds one `build = true` layer of an earlier buildpack to the accumulated build env: root dirs
/// (`bin`, `lib`, `include`, `pkgconfig`), then `env/` and `env.build/` (lifecycle `setupEnv`).
/// Call for each build layer in group order, layers alphabetically.
pub fn apply_build_layer(env: &mut EnvMap, layer_dir: &Path) -> io::Result<()> {
    apply_root_dirs(env, layer_dir, &BUILD_ROOT_DIRS);
    apply_layer_env_dirs(env, layer_dir, "build", None)
}

/// Adds all launch layers of one buildpack for `process` (what the launcher does): root dirs of
/// every layer first, then the env dirs of every layer; `layer_dirs` sorted by name.
pub fn apply_launch_layers(env: &mut EnvMap, layer_dirs: &[&Path], process: Option<&str>) -> io::Result<()> {
    for l in layer_dirs {
        apply_root_dirs(env, l, &LAUNCH_ROOT_DIRS);
    }
    for l in layer_dirs {
        apply_layer_env_dirs(env, l, "launch", process)?;
    }
    Ok(())
}

/// The environment of a `bin/detect` or `bin/build` process: `accumulated` (the filtered base env
/// plus earlier build layers), then unless `clear_env` the platform env and the build-config env,
/// then the `CNB_*` variables.
pub fn buildpack_process_env(
    accumulated: &EnvMap,
    clear_env: bool,
    platform_dir: &Path,
    build_config_dir: Option<&Path>,
    cnb_vars: &[(String, String)],
) -> io::Result<EnvMap> {
    let mut env = if clear_env {
        accumulated.clone()
    } else {
        let mut e = with_platform_env(accumulated, platform_dir)?;
        if let Some(bc) = build_config_dir {
            apply_build_config_env(&mut e, bc)?;
        }
        e
    };
    for (k, v) in cnb_vars {
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

/// The Go name of this machine's architecture (what the lifecycle falls back to).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn target_vars(target: Option<&RunTarget>, out: &mut Vec<(String, String)>) {
    let t = target.cloned().unwrap_or_default();
    let os = if t.os.is_empty() { "linux".to_string() } else { t.os };
    let arch = if t.arch.is_empty() { host_arch().to_string() } else { t.arch };
    out.push(("CNB_TARGET_OS".into(), os));
    out.push(("CNB_TARGET_ARCH".into(), arch));
    if !t.arch_variant.is_empty() {
        out.push(("CNB_TARGET_ARCH_VARIANT".into(), t.arch_variant));
    }
    if let Some(d) = t.distro {
        out.push(("CNB_TARGET_DISTRO_NAME".into(), d.name));
        out.push(("CNB_TARGET_DISTRO_VERSION".into(), d.version));
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Inputs of the `CNB_*` variables of `bin/detect`.
#[derive(Debug, Clone)]
pub struct DetectVars<'a> {
    pub api: BuildpackApi,
    pub buildpack_dir: &'a Path,
    pub platform_dir: &'a Path,
    pub plan_path: &'a Path,
    pub target: Option<&'a RunTarget>,
    /// `None` → `production`.
    pub exec_env: Option<&'a str>,
}

/// `CNB_BUILDPACK_DIR` (all); `CNB_PLATFORM_DIR`, `CNB_BUILD_PLAN_PATH` (≥0.8); `CNB_TARGET_*`
/// (≥0.10); `CNB_EXEC_ENV` (≥0.12).
pub fn detect_cnb_vars(v: &DetectVars<'_>) -> Vec<(String, String)> {
    let mut out = vec![("CNB_BUILDPACK_DIR".to_string(), s(v.buildpack_dir))];
    if v.api.at_least(0, 8) {
        out.push(("CNB_PLATFORM_DIR".into(), s(v.platform_dir)));
        out.push(("CNB_BUILD_PLAN_PATH".into(), s(v.plan_path)));
    }
    if v.api.at_least(0, 10) {
        target_vars(v.target, &mut out);
    }
    if v.api.at_least(0, 12) {
        out.push(("CNB_EXEC_ENV".into(), v.exec_env.unwrap_or(DEFAULT_EXEC_ENV).into()));
    }
    out
}

/// Inputs of the `CNB_*` variables of `bin/build`.
#[derive(Debug, Clone)]
pub struct BuildVars<'a> {
    pub api: BuildpackApi,
    pub buildpack_dir: &'a Path,
    /// `<layers>/<escaped-id>`.
    pub layers_dir: &'a Path,
    pub platform_dir: &'a Path,
    pub bp_plan_path: &'a Path,
    pub target: Option<&'a RunTarget>,
    pub exec_env: Option<&'a str>,
}

/// `CNB_BUILDPACK_DIR` (all); `CNB_LAYERS_DIR`, `CNB_PLATFORM_DIR`, `CNB_BP_PLAN_PATH` (≥0.8);
/// `CNB_TARGET_*` (≥0.10); `CNB_EXEC_ENV` (≥0.12).
pub fn build_cnb_vars(v: &BuildVars<'_>) -> Vec<(String, String)> {
    let mut out = vec![("CNB_BUILDPACK_DIR".to_string(), s(v.buildpack_dir))];
    if v.api.at_least(0, 8) {
        out.push(("CNB_LAYERS_DIR".into(), s(v.layers_dir)));
        out.push(("CNB_PLATFORM_DIR".into(), s(v.platform_dir)));
        out.push(("CNB_BP_PLAN_PATH".into(), s(v.bp_plan_path)));
    }
    if v.api.at_least(0, 10) {
        target_vars(v.target, &mut out);
    }
    if v.api.at_least(0, 12) {
        out.push(("CNB_EXEC_ENV".into(), v.exec_env.unwrap_or(DEFAULT_EXEC_ENV).into()));
    }
    out
}

/// `argv[1..]` of `bin/detect`: always `<platform> <plan>` [L][!].
pub fn detect_args(platform_dir: &Path, plan_path: &Path) -> Vec<String> {
    vec![s(platform_dir), s(plan_path)]
}

/// `argv[1..]` of `bin/build`: always `<layers>/<escaped-id> <platform> <bp-plan>` [L][!].
pub fn build_args(layers_dir: &Path, platform_dir: &Path, bp_plan_path: &Path) -> Vec<String> {
    vec![s(layers_dir), s(platform_dir), s(bp_plan_path)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cnb::buildpack_toml::Distro;
    use std::fs;

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn get<'a>(v: &'a [(String, String)], k: &str) -> Option<&'a str> {
        v.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn base_env_is_filtered() {
        let e = filtered_base_env([
            ("HOME", "/home/cnb"),
            ("HOSTNAME", "h"),
            ("CNB_STACK_ID", "s"),
            ("HTTPS_PROXY", "p"),
            ("no_proxy", "n"),
            ("PATH", "/bin"),
            ("PKG_CONFIG_PATH", "/pc"),
            ("SECRET", "x"),
            ("BP_FOO", "y"),
            ("CNB_PLATFORM_API", "0.12"),
        ]);
        let keys: Vec<_> = e.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["CNB_STACK_ID", "HOME", "HOSTNAME", "HTTPS_PROXY", "PATH", "PKG_CONFIG_PATH", "no_proxy"]);
    }

    #[test]
    fn platform_env_prepends_paths_and_overrides_others() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "env/PATH", "/p/bin");
        write(t.path(), "env/CPATH", "/inc");
        write(t.path(), "env/BP_X", "1\n");
        write(t.path(), "env/HOME", "/evil");
        write(t.path(), "env/FOO.append", "raw-name");
        let base: EnvMap = [("PATH", "/bin"), ("BP_X", "0"), ("HOME", "/h")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let e = with_platform_env(&base, t.path()).unwrap();
        assert_eq!(e["PATH"], "/p/bin:/bin");
        assert_eq!(e["CPATH"], "/inc");
        assert_eq!(e["BP_X"], "1\n");
        assert_eq!(e["HOME"], "/h");
        assert_eq!(e["FOO.append"], "raw-name");
        assert_eq!(base["PATH"], "/bin");
    }

    #[test]
    fn build_config_env_unsuffixed_is_default() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "env/A", "op");
        write(t.path(), "env/B", "op");
        write(t.path(), "env/C.override", "op");
        write(t.path(), "env/BP_USER.override", "op");
        write(t.path(), "env/BP_NEW.override", "op");
        write(t.path(), "env/CNB_X", "op");
        write(t.path(), "env/HOME.override", "op");
        let mut e: EnvMap = [("B", "user"), ("C", "user"), ("BP_USER", "user"), ("HOME", "/h")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        apply_build_config_env(&mut e, t.path()).unwrap();
        assert_eq!(e["A"], "op");
        assert_eq!(e["B"], "user");
        assert_eq!(e["C"], "op");
        assert_eq!(e["BP_USER"], "user");
        assert_eq!(e["BP_NEW"], "op");
        assert_eq!(e["HOME"], "/h");
        assert!(!e.contains_key("CNB_X"));
    }

    #[test]
    fn process_env_respects_clear_env() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "platform/env/BP_X", "1");
        write(t.path(), "config/env/OP", "o");
        let base: EnvMap = [("PATH".to_string(), "/bin".to_string())].into_iter().collect();
        let vars = vec![("CNB_BUILDPACK_DIR".to_string(), "/cnb/bp".to_string())];
        let bc = t.path().join("config");
        let e = buildpack_process_env(&base, false, &t.path().join("platform"), Some(&bc), &vars).unwrap();
        assert_eq!((e["BP_X"].as_str(), e["OP"].as_str()), ("1", "o"));
        assert_eq!(e["CNB_BUILDPACK_DIR"], "/cnb/bp");
        let e = buildpack_process_env(&base, true, &t.path().join("platform"), Some(&bc), &vars).unwrap();
        assert!(!e.contains_key("BP_X") && !e.contains_key("OP"));
        assert_eq!(e["PATH"], "/bin");
    }

    #[test]
    fn build_layers_accumulate() {
        let t = tempfile::tempdir().unwrap();
        let l = t.path().join("acme_go/go");
        fs::create_dir_all(l.join("bin")).unwrap();
        fs::create_dir_all(l.join("lib")).unwrap();
        write(&l, "env/GOROOT", "/go");
        write(&l, "env.build/GOFLAGS.default", "-mod=vendor");
        write(&l, "env.launch/ONLY_LAUNCH", "x");
        let mut e: EnvMap = [("PATH".to_string(), "/bin".to_string())].into_iter().collect();
        apply_build_layer(&mut e, &l).unwrap();
        assert_eq!(e["PATH"], format!("{}:/bin", l.join("bin").display()));
        assert_eq!(e["LIBRARY_PATH"], l.join("lib").display().to_string());
        assert_eq!(e["GOROOT"], "/go");
        assert_eq!(e["GOFLAGS"], "-mod=vendor");
        assert!(!e.contains_key("ONLY_LAUNCH"));
        let mut e = EnvMap::new();
        apply_launch_layers(&mut e, &[l.as_path()], Some("web")).unwrap();
        assert_eq!(e["ONLY_LAUNCH"], "x");
        assert!(!e.contains_key("LIBRARY_PATH") && e.contains_key("LD_LIBRARY_PATH"));
    }

    #[test]
    fn cnb_vars_per_api() {
        let p = Path::new;
        let target = RunTarget {
            os: "linux".into(),
            arch: "arm".into(),
            arch_variant: "v7".into(),
            distro: Some(Distro { name: "ubuntu".into(), version: "22.04".into() }),
        };
        let mut dv = DetectVars {
            api: BuildpackApi::new(0, 7),
            buildpack_dir: p("/cnb/buildpacks/a/1"),
            platform_dir: p("/platform"),
            plan_path: p("/tmp/plan.toml"),
            target: Some(&target),
            exec_env: None,
        };
        let v = detect_cnb_vars(&dv);
        assert_eq!(v.len(), 1);
        dv.api = BuildpackApi::new(0, 9);
        let v = detect_cnb_vars(&dv);
        assert_eq!(get(&v, "CNB_BUILD_PLAN_PATH"), Some("/tmp/plan.toml"));
        assert_eq!(get(&v, "CNB_TARGET_OS"), None);
        dv.api = BuildpackApi::new(0, 10);
        let v = detect_cnb_vars(&dv);
        assert_eq!(get(&v, "CNB_TARGET_ARCH_VARIANT"), Some("v7"));
        assert_eq!(get(&v, "CNB_TARGET_DISTRO_VERSION"), Some("22.04"));
        assert_eq!(get(&v, "CNB_EXEC_ENV"), None);
        dv.api = BuildpackApi::new(0, 12);
        dv.target = None;
        let v = detect_cnb_vars(&dv);
        assert_eq!(get(&v, "CNB_EXEC_ENV"), Some("production"));
        assert_eq!(get(&v, "CNB_TARGET_OS"), Some("linux"));
        assert_eq!(get(&v, "CNB_TARGET_ARCH"), Some(host_arch()));
        assert_eq!(get(&v, "CNB_TARGET_DISTRO_NAME"), None);

        let mut bv = BuildVars {
            api: BuildpackApi::new(0, 7),
            buildpack_dir: p("/cnb/buildpacks/a/1"),
            layers_dir: p("/layers/a"),
            platform_dir: p("/platform"),
            bp_plan_path: p("/tmp/bp-plan.toml"),
            target: None,
            exec_env: Some("test"),
        };
        assert_eq!(build_cnb_vars(&bv).len(), 1);
        bv.api = BuildpackApi::new(0, 12);
        let v = build_cnb_vars(&bv);
        assert_eq!(get(&v, "CNB_LAYERS_DIR"), Some("/layers/a"));
        assert_eq!(get(&v, "CNB_BP_PLAN_PATH"), Some("/tmp/bp-plan.toml"));
        assert_eq!(get(&v, "CNB_EXEC_ENV"), Some("test"));
        assert!(get(&v, "CNB_TARGET_OS").is_some());
    }

    #[test]
    fn positional_args_always_passed() {
        let p = Path::new;
        assert_eq!(detect_args(p("/platform"), p("/plan")), ["/platform", "/plan"]);
        assert_eq!(build_args(p("/layers/a_b"), p("/platform"), p("/plan")), ["/layers/a_b", "/platform", "/plan"]);
    }
}
