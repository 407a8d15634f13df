//! `.deb` handling without the network: packages built here (ar + tar.xz/zst/gz), extracted
//! under the safe-extraction rules (malicious entries refused naming the package), downloaded from
//! a local HTTP server standing in for an archive (a tampered `.deb` refused and not kept), and a
//! whole root-filesystem layer built twice from two empty caches with identical digests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cbuild::cas::BlobDir;
use cbuild::debian::deb::{extract_deb, read_control, FileMeta, MetaMap};
use cbuild::debian::fetch::{fetch_debs, DebCache};
use cbuild::debian::lock::{Lock, LockedPackage, LOCK_VERSION};
use cbuild::debian::rootfs::{build_rootfs_layer, RootfsOptions};
use cbuild::debian::{Archive, ArchiveOrigin, ArchiveUrl, DebianError};
use cbuild::model::digest::Digest;

use crate::common;
use crate::common::http::{FakeServer, Response};

/// A tar built entry by entry with raw headers, so hostile names (`../x`) can be written.
struct RawTar(tar::Builder<Vec<u8>>);

impl RawTar {
    fn new() -> Self {
        RawTar(tar::Builder::new(Vec::new()))
    }
    fn add(mut self, name: &str, kind: tar::EntryType, mode: u32, owner: (u64, u64), link: &str, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        let n = name.as_bytes();
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        let l = link.as_bytes();
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn dir(self, name: &str) -> Self {
        self.add(name, tar::EntryType::Directory, 0o755, (0, 0), "", b"")
    }
    fn file(self, name: &str, data: &[u8]) -> Self {
        self.add(name, tar::EntryType::Regular, 0o644, (0, 0), "", data)
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.add(name, tar::EntryType::Symlink, 0o777, (0, 0), target, b"")
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.add(name, tar::EntryType::Link, 0o644, (0, 0), target, b"")
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn compress(data: &[u8], how: &str) -> Vec<u8> {
    match how {
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 3).unwrap(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => data.to_vec(),
    }
}

/// A `.deb`: `debian-binary`, `control.tar.xz`, `data.tar.<how>`.
fn deb(name: &str, data: RawTar, how: &str) -> Vec<u8> {
    let control = format!(
        "Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: test\n"
    );
    let ctar = RawTar::new().dir("./").file("./control", control.as_bytes()).bytes();
    let mut ar = ar::Builder::new(Vec::new());
    let mut member = |id: &str, body: &[u8]| {
        let h = ar::Header::new(id.as_bytes().to_vec(), body.len() as u64);
        ar.append(&h, body).unwrap();
    };
    member("debian-binary", b"2.0\n");
    member("control.tar.xz", &compress(&ctar, "xz"));
    let dname = if how.is_empty() { "data.tar".to_string() } else { format!("data.tar.{how}") };
    member(&dname, &compress(&data.bytes(), how));
    ar.into_inner().unwrap()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    (t, root, outside)
}

#[test]
fn extracts_debs_of_each_compression_recording_owners_and_modes() {
    for how in ["xz", "zst", "gz", ""] {
        let (_t, root, _) = setup();
        let data = RawTar::new()
            .dir("./")
            .dir("./usr/")
            .dir("./usr/bin/")
            .add("./usr/bin/su", tar::EntryType::Regular, 0o4755, (0, 0), "", b"#!/bin/sh\n")
            .add("./var/log/tool/", tar::EntryType::Directory, 0o2750, (5, 6), "", b"")
            .file("./usr/bin/a", b"A")
            .hardlink("./usr/bin/b", "./usr/bin/a")
            .symlink("./usr/bin/c", "a");
        let mut meta = MetaMap::new();
        let x = extract_deb(&deb("tool", data, how)[..], "tool", &root, &mut meta).unwrap();
        assert!(x.control.starts_with("Package: tool\n"), "{how}");
        assert_eq!(x.entries, 7, "{how}: every entry but the root itself");
        assert_eq!(std::fs::read(root.join("usr/bin/b")).unwrap(), b"A");
        assert_eq!(std::fs::metadata(root.join("usr/bin/a")).unwrap().nlink(), 2);
        assert_eq!(std::fs::read_link(root.join("usr/bin/c")).unwrap(), Path::new("a"));
        assert_eq!(meta["usr/bin/su"], FileMeta { uid: 0, gid: 0, mode: 0o4755 });
        assert_eq!(meta["var/log/tool"], FileMeta { uid: 5, gid: 6, mode: 0o2750 });
        assert_eq!(meta["usr/bin/b"], meta["usr/bin/a"]);
        // nothing was chowned or made set-id on the host
        let m = std::fs::metadata(root.join("usr/bin/su")).unwrap();
        assert_eq!(m.mode() & 0o7000, 0);
    }
}

#[test]
fn reads_control_only() {
    let d = deb("hello", RawTar::new().file("./x", b"x"), "xz");
    assert!(read_control(&d[..], "hello").unwrap().contains("Package: hello"));
}

#[test]
fn merged_usr_symlinks_are_kept_and_written_through() {
    let (_t, root, _) = setup();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let data = RawTar::new().dir("./bin/").file("./bin/sh", b"sh");
    let mut meta = MetaMap::new();
    extract_deb(&deb("dash", data, "xz")[..], "dash", &root, &mut meta).unwrap();
    assert!(std::fs::symlink_metadata(root.join("bin")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(root.join("usr/bin/sh")).unwrap(), b"sh");
    assert!(meta.contains_key("usr/bin/sh") && meta.contains_key("usr/bin"));
}

fn refused(data: RawTar, root: &Path, entry: &str) -> String {
    let mut meta = MetaMap::new();
    let err = extract_deb(&deb("evil-pkg", data, "xz")[..], "evil-pkg", root, &mut meta).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DebianError::UnsafeEntry { .. }), "{msg}");
    assert!(msg.contains("package `evil-pkg`"), "{msg}");
    assert!(msg.contains(&format!("entry `{entry}`")), "{msg}");
    msg
}

#[test]
fn refuses_dotdot_entries_naming_the_package() {
    let (_t, root, outside) = setup();
    refused(RawTar::new().file("./../outside/pwned", b"x"), &root, "./../outside/pwned");
    refused(RawTar::new().file("usr/../../outside/pwned", b"x"), &root, "usr/../../outside/pwned");
    assert!(!outside.join("pwned").exists());
}

#[test]
fn refuses_escaping_symlinks_and_writing_through_them() {
    let (_t, root, outside) = setup();
    let msg = refused(RawTar::new().symlink("./esc", "../outside"), &root, "./esc");
    assert!(msg.contains("leads outside the root"), "{msg}");
    assert!(!root.join("esc").exists() && std::fs::read_dir(&outside).unwrap().count() == 0);
    refused(RawTar::new().dir("./usr/").symlink("./usr/esc", "../../outside"), &root, "./usr/esc");
    // a symlink placed by an earlier package, written through by a later one
    let (_t, root, outside) = setup();
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("esc")).unwrap();
    refused(RawTar::new().file("./esc/pwned", b"x"), &root, "./esc/pwned");
    assert!(!outside.join("pwned").exists());
    // absolute targets resolve inside the root, as in the image
    let abs = outside.display().to_string();
    let mut meta = MetaMap::new();
    let d = deb("abs", RawTar::new().symlink("./abs", &abs).file("./abs/inside", b"x"), "xz");
    extract_deb(&d[..], "abs", &root, &mut meta).unwrap();
    assert!(!outside.join("inside").exists());
    assert!(root.join(abs.trim_start_matches('/')).join("inside").is_file());
}

#[test]
fn refuses_hard_links_outside_the_root() {
    let (_t, root, _) = setup();
    refused(RawTar::new().hardlink("./p", "../../../../etc/passwd"), &root, "./p");
    let msg = refused(RawTar::new().hardlink("./p", "/etc/passwd"), &root, "./p");
    assert!(msg.contains("not in the root"), "{msg}");
    refused(RawTar::new().dir("./d/").hardlink("./h", "./d"), &root, "./h");
}

#[test]
fn refuses_malformed_debs_naming_the_package() {
    let (_t, root, _) = setup();
    let mut meta = MetaMap::new();
    for bad in [
        b"not an ar archive at all".to_vec(),
        {
            let mut ar = ar::Builder::new(Vec::new());
            ar.append(&ar::Header::new(b"control.tar.xz".to_vec(), 1), &b"x"[..]).unwrap();
            ar.into_inner().unwrap()
        },
        {
            let mut d = deb("x1", RawTar::new().file("./a", b"a"), "xz");
            let i = d.windows(11).position(|w| w == b"data.tar.xz").unwrap();
            d[i + 9..i + 11].copy_from_slice(b"bz");
            d
        },
    ] {
        let err = extract_deb(&bad[..], "broken", &root, &mut meta).unwrap_err();
        assert!(err.to_string().contains("package `broken`"), "{err}");
    }
}

/// A fake Debian mirror on the loopback interface serving `files` by path (404 otherwise); the
/// archive is `URL/debian`.
fn serve(files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>) -> FakeServer {
    FakeServer::start(move |req| match files.lock().unwrap().get(req.path.trim_start_matches('/')) {
        Some(b) => Response::new(200, b.clone()),
        None => Response::new(404, ""),
    })
}

fn locked(name: &str, bytes: &[u8]) -> LockedPackage {
    LockedPackage {
        name: name.into(),
        version: "1.0-1".into(),
        architecture: "amd64".into(),
        filename: format!("pool/main/{}/{name}/{name}_1.0-1_amd64.deb", &name[..1]),
        sha256: Digest::of_bytes(bytes),
        size: bytes.len() as u64,
    }
}

fn lock_of(packages: Vec<LockedPackage>) -> Lock {
    let mut packages = packages;
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Lock {
        version: LOCK_VERSION,
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        components: vec!["main".into()],
        requested: packages.iter().map(|p| p.name.clone()).collect(),
        packages,
        others: Vec::new(),
    }
}

#[test]
fn a_tampered_deb_is_refused_naming_the_package_and_not_kept() {
    let good = deb("hello", RawTar::new().file("./usr/bin/hello", b"hi"), "xz");
    let evil = deb("hello", RawTar::new().file("./usr/bin/hello", b"pwned"), "xz");
    let lock = lock_of(vec![locked("hello", &good)]);
    let files = Arc::new(Mutex::new(BTreeMap::from([(format!("debian/{}", lock.packages[0].filename), evil)])));
    let mirror = serve(files.clone());
    let url = format!("{}/debian", mirror.url());
    let t = tempfile::tempdir().unwrap();
    let cache = DebCache::open(t.path()).unwrap();
    let archive = || Archive::new(ArchiveUrl::new(&url, ArchiveOrigin::Env).unwrap());
    let err = fetch_debs(&lock, &cache, archive).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DebianError::DebMismatch(_)), "{msg}");
    assert!(msg.contains("package `hello` 1.0-1"), "{msg}");
    assert_eq!(std::fs::read_dir(t.path().join("debs/sha256")).unwrap().count(), 0, "nothing kept");
    // a build from that cache is refused too, not silently done without the package
    let blobs = BlobDir::open(t.path().join("blobs")).unwrap();
    let err = build_rootfs_layer(&lock, &cache, &RootfsOptions::default(), &blobs).unwrap_err();
    assert!(err.to_string().contains("package `hello`"), "{err}");
    // once the archive serves the right file, the same fetch succeeds
    files.lock().unwrap().insert(format!("debian/{}", lock.packages[0].filename), good);
    let stats = fetch_debs(&lock, &cache, archive).unwrap();
    assert_eq!((stats.downloaded, stats.cached), (1, 0));
}

#[test]
fn missing_files_and_unreachable_archives_are_clear_errors() {
    let data = deb("gone", RawTar::new().file("./x", b"x"), "xz");
    let lock = lock_of(vec![locked("gone", &data)]);
    let mirror = serve(Arc::new(Mutex::new(BTreeMap::new())));
    let url = format!("{}/debian", mirror.url());
    let t = tempfile::tempdir().unwrap();
    let cache = DebCache::open(t.path()).unwrap();
    let err = fetch_debs(&lock, &cache, || Archive::new(ArchiveUrl::new(&url, ArchiveOrigin::Setting)?)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("HTTP 404") && msg.contains("the cbuild setting") && msg.contains("hint:"), "{msg}");
    // a port nothing listens on
    let url = format!("http://127.0.0.1:{}/debian", common::free_port());
    let err = fetch_debs(&lock, &cache, || Archive::new(ArchiveUrl::new(&url, ArchiveOrigin::Env)?)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DebianError::Unreachable { .. }), "{msg}");
    assert!(msg.contains("CBUILD_DEBIAN_ARCHIVE") && msg.contains(&url) && msg.contains("hint:"), "{msg}");
}

/// (type, mode, uid, gid, content, link target) of one tar entry.
type Entry = (tar::EntryType, u32, u64, u64, Vec<u8>, String);

fn layer_files(blobs: &BlobDir, d: &Digest) -> BTreeMap<String, Entry> {
    let f = blobs.open_blob(d).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let p = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        out.insert(p, (h.entry_type(), h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), data, link));
    }
    out
}

#[test]
fn builds_a_rootfs_layer_reproducibly_from_a_lock() {
    let base = deb(
        "base-files",
        RawTar::new()
            .dir("./")
            .dir("./etc/")
            .symlink("./etc/os-release", "../usr/lib/os-release")
            .dir("./usr/lib/")
            .file("./usr/lib/os-release", b"NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n")
            .add("./tmp/", tar::EntryType::Directory, 0o755, (0, 0), "", b""),
        "xz",
    );
    let ca = deb(
        "ca-certificates",
        RawTar::new()
            .dir("./usr/share/ca-certificates/mozilla/")
            .file("./usr/share/ca-certificates/mozilla/B.crt", b"-----B-----\n")
            .file("./usr/share/ca-certificates/mozilla/A.crt", b"-----A-----"),
        "zst",
    );
    let tool = deb(
        "tool",
        RawTar::new()
            .dir("./bin/")
            .add("./bin/tool", tar::EntryType::Regular, 0o4755, (0, 0), "", b"tool")
            .hardlink("./bin/tool2", "./bin/tool")
            .add("./var/log/tool/", tar::EntryType::Directory, 0o2750, (5, 6), "", b""),
        "gz",
    );
    let lock = lock_of(vec![locked("base-files", &base), locked("ca-certificates", &ca), locked("tool", &tool)]);
    let lock = Lock::parse(&lock.to_toml(), "test lock").unwrap();
    let files: BTreeMap<String, Vec<u8>> =
        lock.packages.iter().zip([base, ca, tool]).map(|(p, b)| (format!("debian/{}", p.filename), b)).collect();
    let mirror = serve(Arc::new(Mutex::new(files)));
    let url = format!("{}/debian", mirror.url());
    let t = tempfile::tempdir().unwrap();
    let mut built = Vec::new();
    for i in 0..2 {
        let cache = DebCache::open(&t.path().join(format!("cache{i}"))).unwrap();
        fetch_debs(&lock, &cache, || Archive::new(ArchiveUrl::new(&url, ArchiveOrigin::Env)?)).unwrap();
        let blobs = BlobDir::open(t.path().join(format!("blobs{i}"))).unwrap();
        let l = build_rootfs_layer(&lock, &cache, &RootfsOptions::default(), &blobs).unwrap();
        built.push((blobs, l));
    }
    assert_eq!(built[0].1, built[1].1, "same lock, two empty caches, one digest");
    let (blobs, l) = &built[0];
    assert_eq!(l.labels["io.buildpacks.base.distro.name"], "debian");
    assert_eq!(l.labels["io.buildpacks.base.distro.version"], "12");
    assert_eq!(l.labels["io.buildpacks.base.id"], "io.buildpacks.stacks.bookworm");
    assert_eq!(l.env["CNB_GROUP_ID"], "1000");
    let f = layer_files(blobs, &l.layer.digest);
    let passwd = String::from_utf8_lossy(&f["etc/passwd"].4).to_string();
    assert_eq!(passwd, "root:x:0:0:root:/root:/bin/sh\ncnb:x:1000:1000::/home/cnb:/bin/sh\n");
    assert_eq!(String::from_utf8_lossy(&f["etc/group"].4), "root:x:0:\ncnb:x:1000:\n");
    assert_eq!((f["tmp"].1, f["tmp"].2), (0o1777, 0));
    assert_eq!((f["root"].1, f["home/cnb"].2, f["home/cnb"].3), (0o700, 1000, 1000));
    assert_eq!((f["workspace"].2, f["workspace"].3), (1000, 1000));
    assert_eq!(f["etc/ssl/certs/ca-certificates.crt"].4, b"-----A-----\n-----B-----\n");
    assert_eq!(f["bin"].0, tar::EntryType::Symlink);
    assert_eq!(f["bin"].5, "usr/bin");
    assert_eq!((f["usr/bin/tool"].1, f["usr/bin/tool"].2), (0o4755, 0));
    assert_eq!(f["usr/bin/tool2"].0, tar::EntryType::Link);
    let v = &f["var/log/tool"];
    assert_eq!((v.1, v.2, v.3), (0o2750, 5, 6));
    let status = String::from_utf8_lossy(&f["var/lib/dpkg/status"].4).to_string();
    assert!(status.contains("Package: tool\nStatus: install ok installed\n"), "{status}");
    // the layer does not depend on who built it: every owner comes from the packages or options
    assert!(f.values().all(|e| [0, 5, 1000].contains(&e.2)), "host uid leaked");
}
