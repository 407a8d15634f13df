//! End-to-end stack from the configured Debian mirror (`CBUILD_DEBIAN_ARCHIVE` or the host's apt
//! sources; no host name is written here): resolve and lock `base-files` + `busybox` for
//! bookworm/amd64, then build the root-filesystem layer from a pinned lock twice from two empty
//! caches and check the digests agree and the rootfs holds the stack user and a 1777 `/tmp`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use cbuild::cas::BlobDir;
use cbuild::debian::fetch::{fetch_debs, DebCache};
use cbuild::debian::lock::{create_lock, diff, Lock, LockRequest};
use cbuild::debian::rootfs::{build_rootfs_layer, RootfsLayer, RootfsOptions};
use cbuild::debian::{find_archive, Archive};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debian").join(name)
}

fn archive() -> Archive {
    let url = find_archive(None).expect("a Debian archive is configured on this machine");
    Archive::new(url).unwrap()
}

fn request() -> LockRequest {
    LockRequest {
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        components: vec!["main".into()],
        packages: vec!["busybox".into(), "base-files".into()],
    }
}

/// Resolving against the live archive gives the fixture's package set (versions may have moved
/// on since the fixture was pinned; `CBUILD_UPDATE_FIXTURES=1` rewrites it).
#[test]
fn resolves_and_locks_busybox_from_the_archive() {
    let (lock, notes) = create_lock(&archive(), &request()).unwrap();
    let names: Vec<&str> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"busybox") && names.contains(&"base-files") && names.contains(&"libc6"), "{names:?}");
    assert_eq!(lock.requested, ["base-files", "busybox"]);
    assert!(notes.iter().all(|n| n.contains("virtual")), "{notes:?}");
    let text = lock.to_toml();
    assert!(!text.contains("://"), "the lock names no archive host");
    assert_eq!(Lock::parse(&text, "new").unwrap(), lock);
    let path = fixture("bookworm-busybox.lock");
    if std::env::var_os("CBUILD_UPDATE_FIXTURES").is_some() {
        lock.write(&path).unwrap();
    }
    let pinned = Lock::read(&path).unwrap();
    let pinned_names: Vec<&str> = pinned.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, pinned_names, "the package set changed: {:?}", diff(&pinned, &lock));
}

fn read_layer(blobs: &BlobDir, layer: &RootfsLayer) -> BTreeMap<String, (tar::EntryType, u32, u64, u64, Vec<u8>)> {
    let f = blobs.open_blob(&layer.layer.digest).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let p = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        out.insert(p, (h.entry_type(), h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), data));
    }
    out
}

#[test]
fn two_builds_from_two_empty_caches_give_the_same_layer() {
    let lock = Lock::read(&fixture("bookworm-busybox.lock")).unwrap();
    let mut layers = Vec::new();
    let t = tempfile::tempdir().unwrap();
    for i in 0..2 {
        let cache = DebCache::open(&t.path().join(format!("cache{i}"))).unwrap();
        let stats = fetch_debs(&lock, &cache, || Ok(archive())).unwrap();
        assert_eq!(stats.downloaded, lock.packages.len());
        let blobs = BlobDir::open(t.path().join(format!("blobs{i}"))).unwrap();
        let l = build_rootfs_layer(&lock, &cache, &RootfsOptions::default(), &blobs).unwrap();
        // a second fetch is answered by the cache
        assert_eq!(fetch_debs(&lock, &cache, || panic!("no download")).unwrap().cached, lock.packages.len());
        layers.push((blobs, l));
    }
    let (blobs, a) = &layers[0];
    assert_eq!(a, &layers[1].1, "two builds from empty caches differ");
    let pinned = std::fs::read_to_string(fixture("bookworm-busybox.diff_id")).unwrap_or_default();
    if std::env::var_os("CBUILD_UPDATE_FIXTURES").is_some() {
        std::fs::write(fixture("bookworm-busybox.diff_id"), format!("{}\n", a.layer.diff_id)).unwrap();
    } else {
        assert_eq!(pinned.trim(), a.layer.diff_id.to_string(), "the layer of the pinned lock changed");
    }
    assert_eq!(a.labels["io.buildpacks.base.distro.name"], "debian");
    assert_eq!(a.labels["io.buildpacks.base.distro.version"], "12");
    assert_eq!(a.labels["io.buildpacks.stack.id"], "io.buildpacks.stacks.bookworm");
    assert_eq!(a.env["CNB_USER_ID"], "1000");

    let files = read_layer(blobs, a);
    let passwd = String::from_utf8(files["etc/passwd"].4.clone()).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    assert!(passwd.contains("\ncnb:x:1000:1000::/home/cnb:/bin/sh\n"), "{passwd}");
    assert!(String::from_utf8_lossy(&files["etc/group"].4).contains("\ncnb:x:1000:\n"));
    let (kind, mode, uid, gid, _) = &files["tmp"];
    assert_eq!((*kind, *mode, *uid, *gid), (tar::EntryType::Directory, 0o1777, 0, 0));
    assert_eq!((files["workspace"].2, files["workspace"].3), (1000, 1000));
    assert_eq!((files["home/cnb"].2, files["home/cnb"].3), (1000, 1000));
    // merged /usr: busybox's /bin/busybox lands in usr/bin
    assert_eq!(files["bin"].0, tar::EntryType::Symlink);
    assert_eq!(files["usr/bin/busybox"].1 & 0o111, 0o111);
    assert!(files.contains_key("usr/lib/os-release"));
    let status = String::from_utf8_lossy(&files["var/lib/dpkg/status"].4).to_string();
    assert!(status.contains("Package: busybox\nStatus: install ok installed\n"), "{status}");
}
