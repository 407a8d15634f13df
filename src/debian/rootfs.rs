//! A root filesystem from a lock, as one reproducible layer: every package's data extracted in
//! lock order, then what maintainer scripts (which are not run) would have made and minimal
//! images need: users and groups, `/tmp`, `/workspace`, the CA bundle, dpkg's `status` file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::deb::{clean_name, extract_deb, key, resolve_in_root, FileMeta, MetaMap, ResolveError};
use super::error::{io_err, DebianError, Result};
use super::fetch::DebCache;
use super::lock::Lock;
use crate::cas::BlobDir;
use crate::oci::layer::{write_layer, LayerBlob, LayerOptions};
use crate::oci::tar::{entries_from_dir, EntryKind, TarEntry};

/// The stack's user: the owner of `/workspace` and its home, `CNB_USER_ID`/`CNB_GROUP_ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackUser {
    pub name: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

impl Default for StackUser {
    /// `cnb`, 1000:1000, home `/home/cnb`, shell `/bin/sh`.
    fn default() -> Self {
        StackUser {
            name: "cnb".into(),
            uid: 1000,
            group: "cnb".into(),
            gid: 1000,
            home: "/home/cnb".into(),
            shell: "/bin/sh".into(),
        }
    }
}

/// Options of [`build_rootfs_layer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsOptions {
    pub user: StackUser,
    /// The stack id for the `io.buildpacks.stack.id` / `io.buildpacks.base.id` labels; empty means
    /// `io.buildpacks.stacks.<suite>`.
    pub stack_id: String,
    /// Start from Debian's merged `/usr` (`bin`, `sbin`, `lib` and on amd64 `lib64` as symlinks
    /// into `usr/`), as `debootstrap` does for bookworm; package files under `/bin` land in
    /// `/usr/bin`.
    pub merged_usr: bool,
    /// Compression and mtime of the layer.
    pub layer: LayerOptions,
}

impl Default for RootfsOptions {
    fn default() -> Self {
        RootfsOptions {
            user: StackUser::default(),
            stack_id: String::new(),
            merged_usr: true,
            layer: LayerOptions::default(),
        }
    }
}

impl RootfsOptions {
    /// A canonical, versioned description of everything that changes the layer besides the lock,
    /// for action keys (hash it together with [`Lock::digest`]).
    pub fn key_material(&self) -> String {
        let u = &self.user;
        format!(
            "debian-rootfs-v1\nuser={}:{}:{}:{}:{}:{}\nstack_id={}\nmerged_usr={}\ncompression={:?}\nmtime={}\n",
            u.name,
            u.uid,
            u.group,
            u.gid,
            u.home,
            u.shell,
            self.stack_id,
            self.merged_usr,
            self.layer.compression,
            self.layer.mtime
        )
    }

    fn stack_id_for(&self, lock: &Lock) -> String {
        if self.stack_id.is_empty() {
            format!("io.buildpacks.stacks.{}", lock.suite)
        } else {
            self.stack_id.clone()
        }
    }
}

/// A populated root directory: owners and modes per path, and the parsed `os-release`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootfsTree {
    pub meta: MetaMap,
    pub os_release: BTreeMap<String, String>,
    /// Devices and fifos in packages that were skipped.
    pub skipped_special: u64,
}

/// The result of [`build_rootfs_layer`]: the layer and what the image config should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsLayer {
    pub layer: LayerBlob,
    /// `io.buildpacks.base.distro.name/version`, `io.buildpacks.stack.id`, `io.buildpacks.base.id`.
    pub labels: BTreeMap<String, String>,
    /// `CNB_USER_ID` and `CNB_GROUP_ID`, for the build image's config.
    pub env: BTreeMap<String, String>,
    /// The root filesystem's `/etc/os-release` fields.
    pub os_release: BTreeMap<String, String>,
}

/// Builds the root filesystem of `lock` from the `.deb`s in `debs` (fetch them first, see
/// `fetch::fetch_debs`; each is re-verified against the lock) and stores it as one layer in
/// `blobs`. Works unprivileged: owners come from the packages' tar headers, not the host. The
/// same lock and options give the same layer digest on any machine.
pub fn build_rootfs_layer(lock: &Lock, debs: &DebCache, opts: &RootfsOptions, blobs: &BlobDir) -> Result<RootfsLayer> {
    let tmp = tempfile::Builder::new().prefix("cbuild-rootfs-").tempdir().map_err(io_err(&std::env::temp_dir()))?;
    let root = tmp.path().join("root");
    let tree = populate_rootfs(lock, debs, opts, &root)?;
    let entries = rootfs_entries(&root, &tree.meta)?;
    let layer = write_layer(entries, &opts.layer, blobs, &|_, _| None)?;
    Ok(RootfsLayer {
        layer,
        labels: image_labels(&tree.os_release, &opts.stack_id_for(lock)),
        env: stack_env(&opts.user),
        os_release: tree.os_release,
    })
}

/// The image labels for a root filesystem with this `os-release` and stack id.
pub fn image_labels(os_release: &BTreeMap<String, String>, stack_id: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    if let Some(id) = os_release.get("ID") {
        l.insert("io.buildpacks.base.distro.name".into(), id.clone());
    }
    if let Some(v) = os_release.get("VERSION_ID").or_else(|| os_release.get("VERSION_CODENAME")) {
        l.insert("io.buildpacks.base.distro.version".into(), v.clone());
    }
    l.insert("io.buildpacks.stack.id".into(), stack_id.to_string());
    l.insert("io.buildpacks.base.id".into(), stack_id.to_string());
    l
}

/// `CNB_USER_ID` / `CNB_GROUP_ID` of a stack user.
pub fn stack_env(user: &StackUser) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("CNB_USER_ID".to_string(), user.uid.to_string()),
        ("CNB_GROUP_ID".to_string(), user.gid.to_string()),
    ])
}

/// The layer entries of a populated root: a deterministic walk of `root` with owners and modes
/// taken from `meta` (paths it lacks are `0:0`, directories 0755).
pub fn rootfs_entries(root: &Path, meta: &MetaMap) -> Result<Vec<TarEntry>> {
    let mut entries = entries_from_dir(root, "", 0, 0, None)?;
    for e in &mut entries {
        if let Some(m) = meta.get(&e.path) {
            e.uid = m.uid;
            e.gid = m.gid;
            e.mode = match e.kind {
                EntryKind::Symlink { .. } => 0o777,
                _ => m.mode,
            };
        } else if e.kind == EntryKind::Dir {
            e.mode = 0o755;
        }
    }
    Ok(entries)
}

/// Extracts every package of `lock` into `root` (which must not exist or be empty) and adds the
/// generated files. Returns the owners/modes to put in the layer.
pub fn populate_rootfs(lock: &Lock, debs: &DebCache, opts: &RootfsOptions, root: &Path) -> Result<RootfsTree> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let root = fs::canonicalize(root).map_err(io_err(root))?;
    let mut tree = RootfsTree::default();
    if opts.merged_usr {
        let mut links = vec!["bin", "sbin", "lib"];
        if lock.architecture == "amd64" {
            links.push("lib64");
        }
        for l in links {
            let target = root.join("usr").join(l);
            fs::create_dir_all(&target).map_err(io_err(&target))?;
            let link = root.join(l);
            std::os::unix::fs::symlink(format!("usr/{l}"), &link).map_err(io_err(&link))?;
            tree.meta.insert(l.to_string(), FileMeta { uid: 0, gid: 0, mode: 0o777 });
        }
    }
    let mut controls = Vec::new();
    for p in &lock.packages {
        let f = debs.open_verified(p)?;
        let x = extract_deb(f, &p.name, &root, &mut tree.meta)?;
        tree.skipped_special += x.skipped_special;
        controls.push(x.control);
    }
    let g = Gen { root: &root, meta: &mut tree.meta };
    let mut g = g;
    g.dpkg_status(&controls)?;
    g.users(&opts.user)?;
    g.dir("tmp", FileMeta { uid: 0, gid: 0, mode: 0o1777 })?;
    if g.find("var/tmp")?.is_some() {
        g.dir("var/tmp", FileMeta { uid: 0, gid: 0, mode: 0o1777 })?;
    }
    let u = &opts.user;
    g.dir("workspace", FileMeta { uid: u.uid, gid: u.gid, mode: 0o755 })?;
    if lock.get("ca-certificates").is_some() {
        g.ca_bundle()?;
    }
    tree.os_release = g.os_release(lock)?;
    Ok(tree)
}

/// Writes generated files into the root, safely (parents resolved inside it) and with meta.
struct Gen<'a> {
    root: &'a Path,
    meta: &'a mut MetaMap,
}

fn root_err(e: ResolveError, what: &str) -> DebianError {
    match e {
        ResolveError::Unsafe(r) => DebianError::Rootfs { reason: format!("`{what}`: {r}") },
        ResolveError::Io(e) => DebianError::Io { path: PathBuf::from(what), source: e },
    }
}

fn comps(rel: &str) -> Vec<OsString> {
    clean_name(Path::new(rel)).expect("generated paths have no `..`")
}

impl Gen<'_> {
    /// The resolved path of `rel` if it exists (following symlinks inside the root).
    fn find(&self, rel: &str) -> Result<Option<Vec<OsString>>> {
        resolve_in_root(self.root, &comps(rel), false, true).map_err(|e| root_err(e, rel))
    }

    fn abs(&self, rel: &[OsString]) -> PathBuf {
        self.root.join(rel.iter().collect::<PathBuf>())
    }

    fn read(&self, rel: &str) -> Result<Option<String>> {
        let Some(r) = self.find(rel)? else {
            return Ok(None);
        };
        let p = self.abs(&r);
        if !p.is_file() {
            return Ok(None);
        }
        fs::read_to_string(&p).map(Some).map_err(io_err(&p))
    }

    /// Creates (or keeps) directory `rel` and records its owner and mode.
    fn dir(&mut self, rel: &str, fm: FileMeta) -> Result<()> {
        let r = resolve_in_root(self.root, &comps(rel), true, false).map_err(|e| root_err(e, rel))?.expect("created");
        self.meta.insert(key(&r), fm);
        Ok(())
    }

    /// Writes file `rel` (replacing a file or symlink there) and records its owner and mode.
    fn file(&mut self, rel: &str, bytes: &[u8], fm: FileMeta) -> Result<()> {
        let c = comps(rel);
        let (base, parent) = c.split_last().expect("not the root");
        let mut r = resolve_in_root(self.root, parent, true, false).map_err(|e| root_err(e, rel))?.expect("created");
        r.push(base.clone());
        let p = self.abs(&r);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => return Err(DebianError::Rootfs { reason: format!("`{rel}` is a directory") }),
            Ok(_) => fs::remove_file(&p).map_err(io_err(&p))?,
            Err(_) => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(io_err(&p))?;
        f.write_all(bytes).map_err(io_err(&p))?;
        self.meta.insert(key(&r), fm);
        Ok(())
    }

    /// `/var/lib/dpkg/status` listing every package as installed, so image scanners and
    /// `dpkg -l` see what the image holds.
    fn dpkg_status(&mut self, controls: &[String]) -> Result<()> {
        let mut stanzas: Vec<String> = controls
            .iter()
            .map(|c| {
                let mut out = String::new();
                for line in c.trim_end().lines() {
                    out.push_str(line);
                    out.push('\n');
                    if line.starts_with("Package:") {
                        out.push_str("Status: install ok installed\n");
                    }
                }
                out
            })
            .collect();
        stanzas.sort();
        let root_dir = FileMeta { uid: 0, gid: 0, mode: 0o755 };
        self.dir("var/lib/dpkg", root_dir)?;
        self.dir("var/lib/dpkg/info", root_dir)?;
        self.file("var/lib/dpkg/status", stanzas.join("\n").as_bytes(), FileMeta { mode: 0o644, ..root_dir })
    }

    /// `/etc/passwd` and `/etc/group` from base-passwd's master files (or a minimal root entry),
    /// plus the stack user and group; `/root` and the user's home.
    fn users(&mut self, u: &StackUser) -> Result<()> {
        let passwd = match self.read("etc/passwd")? {
            Some(p) => p,
            None => self
                .read("usr/share/base-passwd/passwd.master")?
                .unwrap_or_else(|| "root:x:0:0:root:/root:/bin/sh\n".into()),
        };
        let group = match self.read("etc/group")? {
            Some(g) => g,
            None => self.read("usr/share/base-passwd/group.master")?.unwrap_or_else(|| "root:x:0:\n".into()),
        };
        let passwd = add_entry(
            &passwd,
            &u.name,
            u.uid,
            &format!("{}:x:{}:{}::{}:{}", u.name, u.uid, u.gid, u.home, u.shell),
            2,
            "user",
        )?;
        let group = add_entry(&group, &u.group, u.gid, &format!("{}:x:{}:", u.group, u.gid), 2, "group")?;
        let f = FileMeta { uid: 0, gid: 0, mode: 0o644 };
        self.file("etc/passwd", passwd.as_bytes(), f)?;
        self.file("etc/group", group.as_bytes(), f)?;
        self.dir("root", FileMeta { uid: 0, gid: 0, mode: 0o700 })?;
        let home = u.home.trim_start_matches('/');
        if !home.is_empty() && !home.split('/').any(|c| c == "..") {
            self.dir(home, FileMeta { uid: u.uid, gid: u.gid, mode: 0o755 })?;
        }
        Ok(())
    }

    /// `/etc/ssl/certs/ca-certificates.crt`: every `*.crt` under `/usr/share/ca-certificates`,
    /// in path order, concatenated (what `update-ca-certificates` makes with the default
    /// configuration; the per-certificate hash links are not made).
    fn ca_bundle(&mut self) -> Result<()> {
        let Some(r) = self.find("usr/share/ca-certificates")? else {
            return Ok(());
        };
        let dir = self.abs(&r);
        let mut bundle = Vec::new();
        for e in walkdir::WalkDir::new(&dir).follow_links(false).sort_by_file_name() {
            let e = e.map_err(|e| io_err(&dir)(e.into()))?;
            if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "crt") {
                let mut b = fs::read(e.path()).map_err(io_err(e.path()))?;
                if !b.ends_with(b"\n") {
                    b.push(b'\n');
                }
                bundle.extend(b);
            }
        }
        let root_dir = FileMeta { uid: 0, gid: 0, mode: 0o755 };
        self.dir("etc/ssl/certs", root_dir)?;
        self.file("etc/ssl/certs/ca-certificates.crt", &bundle, FileMeta { mode: 0o644, ..root_dir })
    }

    /// Parses `/etc/os-release` (base-files ships it); writes a minimal one if it is missing.
    fn os_release(&mut self, lock: &Lock) -> Result<BTreeMap<String, String>> {
        let text = match self.read("etc/os-release")? {
            Some(t) => t,
            None => {
                let t = format!(
                    "PRETTY_NAME=\"Debian GNU/Linux ({s})\"\nNAME=\"Debian GNU/Linux\"\nVERSION_CODENAME={s}\nID=debian\n",
                    s = lock.suite
                );
                self.file("etc/os-release", t.as_bytes(), FileMeta { uid: 0, gid: 0, mode: 0o644 })?;
                t
            }
        };
        Ok(parse_os_release(&text))
    }
}

/// Appends `line` to a passwd/group text unless an entry of that name exists; an id taken by
/// another name is an error. `id_field` is the index of the numeric id.
fn add_entry(text: &str, name: &str, id: u32, line: &str, id_field: usize, what: &str) -> Result<String> {
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() == Some(&name) {
            return Ok(text.to_string());
        }
        if f.get(id_field).and_then(|s| s.parse::<u32>().ok()) == Some(id) {
            return Err(DebianError::Rootfs {
                reason: format!("{what} id {id} for `{name}` is already used by `{}`", f[0]),
            });
        }
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    Ok(out)
}

/// Parses `os-release` (`KEY=value`, values optionally quoted).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.replace("\\\"", "\"")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let m = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n# c\n",
        );
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["VERSION_ID"], "12");
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        let l = image_labels(&m, "io.buildpacks.stacks.bookworm");
        assert_eq!(l["io.buildpacks.base.distro.name"], "debian");
        assert_eq!(l["io.buildpacks.base.distro.version"], "12");
        assert_eq!(l["io.buildpacks.stack.id"], l["io.buildpacks.base.id"]);
    }

    #[test]
    fn adds_users_once_and_refuses_id_clashes() {
        let p = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";
        let out = add_entry(p, "cnb", 1000, "cnb:x:1000:1000::/home/cnb:/bin/sh", 2, "user").unwrap();
        assert!(out.ends_with("nologin\ncnb:x:1000:1000::/home/cnb:/bin/sh\n"), "{out}");
        assert_eq!(add_entry(&out, "cnb", 1000, "x", 2, "user").unwrap(), out);
        let err = add_entry(p, "cnb", 65534, "cnb:x:65534:1::/:/bin/sh", 2, "user").unwrap_err();
        assert!(err.to_string().contains("`nobody`"), "{err}");
    }

    #[test]
    fn key_material_changes_with_options() {
        let a = RootfsOptions::default();
        let mut b = a.clone();
        b.user.uid = 1001;
        assert_ne!(a.key_material(), b.key_material());
        assert_eq!(a.key_material(), RootfsOptions::default().key_material());
    }
}
