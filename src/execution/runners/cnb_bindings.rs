//! Service bindings (CNB platform spec: `<platform>/bindings/<name>/` holding `type`, optional
//! `provider` and one file per key; `SERVICE_BINDING_ROOT`) for detect and build: Maven
//! `settings.xml`, `.npmrc` tokens, CA certificates — secrets that must reach buildpacks but never
//! the repository, the cache, a log or an image.
//!
//! * A binding is a directory outside the workspace, named in `cnb_image(bindings = {...})` or by
//!   `--binding NAME=DIR`. Its files are read once per build (at key time) and kept in memory; the
//!   sandbox sees a private copy in its scratch `/platform` (mode 0400, owned by the build user),
//!   deleted with the scratch dir.
//! * Keyed, so a cache hit never differs from a clean build: a changed value reruns detect and
//!   build. The key component is an HMAC-SHA256 of the binding's files, never a plain digest (a
//!   short token's sha256 would be guessable from a shared cache). The HMAC key is
//!   `CBUILD_BINDINGS_KEY` when set (give CI runners the same secret to share results of builds with
//!   bindings through the remote cache), else a random key kept in the cache directory (mode 0600):
//!   results are then reused on this machine only.
//! * Never stored: not in action results, components (only the HMAC), logs or `--json`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::execution::ActionError;

/// The HMAC key variable (any string; shared by runners that should share results).
pub const BINDINGS_KEY_ENV: &str = "CBUILD_BINDINGS_KEY";
/// Largest file of a binding read.
const MAX_FILE: u64 = 1 << 20;
/// Most files in a binding.
const MAX_FILES: usize = 256;

/// A binding's files, read once: (file name, bytes), `type` among them.
pub struct Binding {
    pub name: String,
    pub files: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Binding {
    // Values are secrets: names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Binding").field("name", &self.name).field("files", &names).finish()
    }
}

/// Bindings loaded in this build, by directory (detect and build read each once, and the same bytes).
#[derive(Default)]
pub struct Loaded(Mutex<BTreeMap<PathBuf, Arc<Binding>>>);

/// Whether `name` can be a binding name (a directory name under `/platform/bindings`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks that `dir` can be the binding `name`: an existing directory outside `workspace`, with a
/// `type` file. Errors name the binding and the path (never a value).
pub fn check(name: &str, dir: &Path, workspace: &Path) -> Result<PathBuf, ActionError> {
    let hint = "a binding is a directory outside the workspace holding a `type` file and one file per key \
                (CNB platform spec); see README › Service bindings";
    if !valid_name(name) {
        return Err(ActionError::user(format!("binding name `{name}` is not valid (letters, digits, `.`, `_`, `-`)"))
            .hint(hint));
    }
    let real = std::fs::canonicalize(dir).map_err(|e| {
        ActionError::user(format!("binding `{name}`: `{}` cannot be used: {e}", dir.display())).hint(hint)
    })?;
    if !real.is_dir() {
        return Err(ActionError::user(format!("binding `{name}`: `{}` is not a directory", dir.display())).hint(hint));
    }
    if let Ok(ws) = std::fs::canonicalize(workspace) {
        if real.starts_with(&ws) {
            return Err(ActionError::user(format!(
                "binding `{name}`: `{}` is inside the workspace, where it would be committed with the code",
                dir.display()
            ))
            .hint("keep secrets outside the repository, e.g. under $HOME or a CI secret mount"));
        }
    }
    if !real.join("type").is_file() {
        return Err(ActionError::user(format!("binding `{name}`: `{}` has no `type` file", dir.display())).hint(hint));
    }
    Ok(real)
}

impl Loaded {
    /// The binding at `dir`, read on first use.
    pub fn get(&self, name: &str, dir: &Path) -> Result<Arc<Binding>, ActionError> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = m.get(dir) {
            return Ok(b.clone());
        }
        let b = Arc::new(read(name, dir)?);
        m.insert(dir.to_path_buf(), b.clone());
        Ok(b)
    }
}

/// Reads a binding's top-level regular files (following links, as a Kubernetes secret volume's
/// `key -> ..data/key` needs; names starting with `.` are skipped).
fn read(name: &str, dir: &Path) -> Result<Binding, ActionError> {
    let err = |what: String| ActionError::user(format!("binding `{name}` (`{}`): {what}", dir.display()));
    let mut files = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| err(format!("cannot list it: {e}")))?;
    for e in rd {
        let e = e.map_err(|e| err(format!("cannot list it: {e}")))?;
        let Some(file) = e.file_name().to_str().map(str::to_string) else { continue };
        if file.starts_with('.') {
            continue;
        }
        let p = e.path();
        let md = std::fs::metadata(&p).map_err(|e| err(format!("`{file}`: {e}")))?;
        if !md.is_file() {
            continue;
        }
        if md.len() > MAX_FILE {
            return Err(err(format!("`{file}` is larger than {MAX_FILE} bytes")));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&p)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes))
            .map_err(|e| err(format!("cannot read `{file}`: {e}")))?;
        files.push((file, bytes));
        if files.len() > MAX_FILES {
            return Err(err(format!("it has more than {MAX_FILES} files")));
        }
    }
    files.sort();
    if !files.iter().any(|(n, _)| n == "type") {
        return Err(err("it has no `type` file".into()));
    }
    Ok(Binding { name: name.to_string(), files })
}

/// The HMAC key: `CBUILD_BINDINGS_KEY`, else `<cache>/bindings.key` (32 random bytes, created
/// with mode 0600).
pub fn hmac_key(cache_dir: &Path) -> Result<ring::hmac::Key, ActionError> {
    if let Some(k) = crate::env::var(BINDINGS_KEY_ENV) {
        return Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.as_bytes()));
    }
    let path = cache_dir.join("bindings.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => b,
        _ => {
            use ring::rand::SecureRandom;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut b = vec![0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut b)
                .map_err(|_| ActionError::env("no randomness for the bindings key"))?;
            let tmp = cache_dir.join(format!(".bindings.key.{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| ActionError::env(format!("creating `{}`: {e}", tmp.display())))?;
            f.write_all(&b).map_err(|e| ActionError::env(format!("writing `{}`: {e}", tmp.display())))?;
            // Whoever renames first wins; everyone then reads the winner's key.
            if std::fs::hard_link(&tmp, &path).is_err() {
                let _ = std::fs::remove_file(&tmp);
                return hmac_key_file(&path);
            }
            let _ = std::fs::remove_file(&tmp);
            b
        }
    };
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
}

fn hmac_key_file(path: &Path) -> Result<ring::hmac::Key, ActionError> {
    let b = std::fs::read(path).map_err(|e| ActionError::env(format!("reading `{}`: {e}", path.display())))?;
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b))
}

/// The key component of a binding: its name, file names and an HMAC over names and bytes.
pub fn key_value(b: &Binding, key: &ring::hmac::Key) -> String {
    let mut ctx = ring::hmac::Context::with_key(key);
    for (n, v) in &b.files {
        ctx.update(&(n.len() as u64).to_le_bytes());
        ctx.update(n.as_bytes());
        ctx.update(&(v.len() as u64).to_le_bytes());
        ctx.update(v);
    }
    let names: Vec<&str> = b.files.iter().map(|(n, _)| n.as_str()).collect();
    format!("files={} hmac-sha256={}", names.join(","), hex::encode(ctx.sign().as_ref()))
}

/// Writes the bindings under `<platform>/bindings/<name>/` for the build user `host_uid:host_gid`
/// (files 0400, directories 0500: nobody else on the host reads them).
pub fn write(platform: &Path, bindings: &[Arc<Binding>], host_ids: (u32, u32)) -> Result<(), ActionError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if bindings.is_empty() {
        return Ok(());
    }
    let root = platform.join("bindings");
    std::fs::create_dir_all(&root).map_err(|e| ActionError::of(&e))?;
    for b in bindings {
        let dir = root.join(&b.name);
        std::fs::create_dir(&dir).map_err(|e| ActionError::of(&e))?;
        for (n, v) in &b.files {
            let p = dir.join(n);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&p)
                .map_err(|e| ActionError::of(&e))?;
            std::io::Write::write_all(&mut f, v).map_err(|e| ActionError::of(&e))?;
            std::os::unix::fs::fchown(&f, Some(host_ids.0), Some(host_ids.1)).map_err(|e| ActionError::of(&e))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).map_err(|e| ActionError::of(&e))?;
        std::os::unix::fs::chown(&dir, Some(host_ids.0), Some(host_ids.1)).map_err(|e| ActionError::of(&e))?;
    }
    Ok(())
}

/// Loads every binding of a phase (name → directory), checked.
pub fn load_all(
    bindings: &BTreeMap<String, String>,
    loaded: &Loaded,
    workspace: &Path,
) -> Result<Vec<Arc<Binding>>, ActionError> {
    let mut out = Vec::new();
    for (name, dir) in bindings {
        let real = check(name, Path::new(dir), workspace)?;
        out.push(loaded.get(name, &real)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_hmac_never_by_value_and_checked() {
        let ws = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let b = out.path().join("npm");
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("type"), "npmrc").unwrap();
        std::fs::write(b.join("token"), "s3cr3t-t0ken").unwrap();
        std::fs::create_dir(b.join("..data")).unwrap();
        let loaded = Loaded::default();
        let one = loaded.get("npm", &check("npm", &b, ws.path()).unwrap()).unwrap();
        assert_eq!(one.files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["token", "type"]);
        assert!(!format!("{one:?}").contains("s3cr3t"));
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let v1 = key_value(&one, &k);
        assert!(!v1.contains("s3cr3t") && !v1.contains(&hex::encode(b"s3cr3t-t0ken")));
        std::fs::write(b.join("token"), "other").unwrap();
        let two = read("npm", &b).unwrap();
        assert_ne!(key_value(&two, &k), v1, "a changed value changes the key");
        let k2 = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k2");
        assert_ne!(key_value(&two, &k2), key_value(&two, &k));

        // Inside the workspace, missing, without `type`, bad name: refused.
        let inside = ws.path().join("b");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("type"), "x").unwrap();
        assert!(check("b", &inside, ws.path()).unwrap_err().message.contains("inside the workspace"));
        assert!(check("b", &out.path().join("nope"), ws.path()).is_err());
        let untyped = out.path().join("untyped");
        std::fs::create_dir(&untyped).unwrap();
        assert!(check("u", &untyped, ws.path()).unwrap_err().message.contains("no `type` file"));
        assert!(check("../x", &b, ws.path()).is_err());
    }

    #[test]
    fn the_cache_key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let c = tempfile::tempdir().unwrap();
        let b = Binding { name: "x".into(), files: vec![("type".into(), b"t".to_vec())] };
        let k1 = key_value(&b, &hmac_key(c.path()).unwrap());
        let k2 = key_value(&b, &hmac_key(c.path()).unwrap());
        assert_eq!(k1, k2);
        let mode = std::fs::metadata(c.path().join("bindings.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
