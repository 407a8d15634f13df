//! Layer extraction treats every layer as hostile (`cbuild::oci::extract`). cbuild runs as root, so
//! a layer that makes it follow a symlink after the entry was written (a chmod at the end of the
//! layer, a chown, a whiteout, a write) changes the host. Each test extracts into `<t>/work/root`
//! next to a "canary" tree `<t>/cbuild-canary-3f9d` that symlinks and hard links of the layers point
//! at, and checks that every entry of the canary (content, mode, owner, mtime, ctime, link count) is
//! unchanged and nothing was created outside the root.
//!
//! Test layers only ever point at the canary, never at `/` or another host path: a regression must
//! not damage the machine that runs the tests.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cbuild::model::digest::Digest;
use cbuild::oci::extract::{extract_layer, ExtractOptions, ExtractStats};

const CANARY: &str = "cbuild-canary-3f9d";

/// One tar entry (names are relative, no `..`; link targets are anything).
#[derive(Clone, Debug)]
enum E {
    Dir(String, u32),
    File(String, u32),
    Sym(String, String),
    Hard(String, String),
    /// `.wh.<base>` next to the path.
    Whiteout(String),
    /// `<path>/.wh..wh..opq`.
    Opaque(String),
    Char(String),
    Block(String),
    Fifo(String),
}

fn layer(entries: &[E], uid: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_234_567_890);
        h.set_size(0);
        h.set_mode(0o644);
        let (kind, name, data): (_, String, &[u8]) = match e {
            E::Dir(p, m) => {
                h.set_mode(*m);
                (tar::EntryType::Directory, format!("{p}/"), b"")
            }
            E::File(p, m) => {
                h.set_mode(*m);
                h.set_size(6);
                (tar::EntryType::Regular, p.clone(), b"pwned!")
            }
            E::Sym(p, t) | E::Hard(p, t) => {
                let k = if matches!(e, E::Sym(..)) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                h.set_entry_type(k);
                h.set_mode(0o777);
                b.append_link(&mut h, p, t).unwrap();
                continue;
            }
            E::Whiteout(p) => {
                let (dir, base) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, b)| (d, b));
                let n = if dir.is_empty() { format!(".wh.{base}") } else { format!("{dir}/.wh.{base}") };
                (tar::EntryType::Regular, n, b"")
            }
            E::Opaque(p) => (tar::EntryType::Regular, format!("{p}/.wh..wh..opq"), b""),
            E::Char(p) => (tar::EntryType::Char, p.clone(), b""),
            E::Block(p) => (tar::EntryType::Block, p.clone(), b""),
            E::Fifo(p) => (tar::EntryType::Fifo, p.clone(), b""),
        };
        h.set_entry_type(kind);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            // /dev/mem and /dev/sda: what a device entry would expose if it were created
            h.set_device_major(if kind == tar::EntryType::Char { 1 } else { 8 }).unwrap();
            h.set_device_minor(1).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A temp dir holding the canary tree and `work/` (where roots go).
struct Env {
    t: tempfile::TempDir,
    before: BTreeMap<PathBuf, String>,
    /// Mode and owner of `<t>` and `<t>/work` (a link to `..` from the root reaches them).
    dirs: Vec<(u32, u32, u32)>,
}

impl Env {
    fn new() -> Env {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join(CANARY);
        fs::create_dir_all(c.join("sub")).unwrap();
        fs::write(c.join("file"), "canary\n").unwrap();
        fs::write(c.join("sub/file"), "canary too\n").unwrap();
        std::os::unix::fs::symlink("../file", c.join("sub/link")).unwrap();
        fs::create_dir(t.path().join("work")).unwrap();
        // A past mtime, so that a utime through a symlink shows (ctime shows any chmod/chown).
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for p in ["file", "sub/file", "sub", ""] {
            fs::File::open(c.join(p)).unwrap().set_times(fs::FileTimes::new().set_modified(old)).unwrap();
        }
        let before = snapshot(&c);
        let dirs = dir_modes(t.path());
        // Names the in-image paths and shifted relative links could reach on the host: none may exist.
        for p in host_paths(t.path()) {
            assert!(fs::symlink_metadata(&p).is_err(), "`{}` exists on this host; the test cannot run", p.display());
        }
        Env { t, before, dirs }
    }

    fn canary(&self) -> PathBuf {
        self.t.path().join(CANARY)
    }

    fn root(&self) -> PathBuf {
        self.t.path().join("work/root")
    }

    /// Extracts `layers` into a fresh root; the result of the first failing layer, if any.
    fn extract(&self, layers: &[Vec<u8>], opts: &ExtractOptions) -> Result<ExtractStats, String> {
        let root = self.root();
        if root.exists() {
            fs::remove_dir_all(&root).unwrap();
        }
        let mut s = ExtractStats::default();
        for (i, l) in layers.iter().enumerate() {
            s += extract_layer(&l[..], &Digest::of_bytes(&[i as u8]), &root, opts).map_err(|e| e.to_string())?;
        }
        Ok(s)
    }

    /// Extracts every layer of `layers` into a fresh root, going on after a refused one (the tree
    /// a half-extracted layer leaves is as hostile as any); the result of each.
    fn extract_each(&self, layers: &[Vec<u8>], opts: &ExtractOptions) -> Vec<Result<ExtractStats, String>> {
        let root = self.root();
        if root.exists() {
            fs::remove_dir_all(&root).unwrap();
        }
        let digest = |i: usize| Digest::of_bytes(&[i as u8]);
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| extract_layer(&l[..], &digest(i), &root, opts).map_err(|e| format!("{e}")))
            .collect()
    }

    /// The canary is unchanged and nothing exists outside the root that was not there before.
    fn check(&self, what: &dyn std::fmt::Debug) {
        let after = snapshot(&self.canary());
        for (k, v) in &self.before {
            assert_eq!(Some(v), after.get(k), "canary entry `{}` changed by {what:?}", k.display());
        }
        assert_eq!(self.before.len(), after.len(), "entries appeared in the canary: {what:?}");
        assert_eq!(dir_modes(self.t.path()), self.dirs, "{what:?}");
        assert_eq!(names(self.t.path()), vec![CANARY.to_string(), "work".into()], "{what:?}");
        assert!(names(&self.t.path().join("work")).iter().all(|n| n == "root"), "{what:?}");
        for p in host_paths(self.t.path()) {
            assert!(fs::symlink_metadata(&p).is_err(), "`{}` was created by {what:?}", p.display());
        }
    }
}

fn dir_modes(t: &Path) -> Vec<(u32, u32, u32)> {
    [t.to_path_buf(), t.join("work")]
        .iter()
        .map(|p| fs::symlink_metadata(p).unwrap())
        .map(|m| (m.mode(), m.uid(), m.gid()))
        .collect()
}

fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Host paths a buggy extractor would reach: the image's absolute names taken as host paths, and
/// the canary's name next to every ancestor of the test dir (where a relative `../..` link moved
/// to a shallower directory by a hard link points).
fn host_paths(t: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["/cbx", "/cby"].iter().map(PathBuf::from).collect();
    v.extend(t.ancestors().skip(1).map(|a| a.join(CANARY)));
    v
}

/// Every entry below and including `dir`, never followed: kind, mode, owner, size, links, mtime,
/// ctime, and content or target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(base: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let p = base.join(rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let body = if m.is_file() {
            format!("{:?}", fs::read(&p).unwrap())
        } else if m.file_type().is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.insert(
            rel.to_path_buf(),
            format!(
                "mode={:o} uid={} gid={} size={} nlink={} mtime={}.{} ctime={}.{} {body}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.size(),
                m.nlink(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
        );
        if m.is_dir() {
            for n in names(&p) {
                walk(base, &rel.join(n), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    out
}

fn opts(chown: bool, sanitize: bool) -> ExtractOptions {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    ExtractOptions { chown: chown && root, sanitize, ..ExtractOptions::default() }
}

#[test]
fn layer_dir_then_symlink_does_not_chmod_host() {
    let env = Env::new();
    let abs = env.canary().display().to_string();
    // root/x -> ../../<canary> is <t>/<canary> for the host kernel
    let rel = format!("../../{CANARY}");
    let cases: Vec<(&str, Vec<Vec<E>>)> = vec![
        ("one layer, absolute", vec![vec![E::Dir("x".into(), 0o6777), E::Sym("x".into(), abs.clone())]]),
        ("one layer, relative", vec![vec![E::Dir("x".into(), 0o6777), E::Sym("x".into(), rel.clone())]]),
        (
            "one layer, the parent replaced",
            vec![vec![E::Dir("x".into(), 0o755), E::Dir("x/sub".into(), 0o6777), E::Sym("x".into(), abs.clone())]],
        ),
        (
            "two layers, the directory re-declared over a lower one",
            vec![
                vec![E::Dir("x".into(), 0o755)],
                vec![E::Dir("x".into(), 0o6777), E::File("x/f".into(), 0o644), E::Sym("x".into(), rel.clone())],
            ],
        ),
        (
            "two layers, the parent of a re-declared directory replaced",
            vec![
                vec![E::Dir("x".into(), 0o755), E::Dir("x/sub".into(), 0o755)],
                vec![E::Dir("x/sub".into(), 0o6777), E::Sym("x".into(), abs.clone())],
            ],
        ),
        (
            "two layers, symlink first then a directory over it",
            vec![vec![E::Sym("x".into(), abs.clone())], vec![E::Dir("x".into(), 0o6777)]],
        ),
    ];
    for (what, layers) in cases {
        for o in [opts(true, false), opts(false, false), opts(true, true)] {
            let tars: Vec<Vec<u8>> = layers.iter().map(|l| layer(l, 4242)).collect();
            env.extract(&tars, &o).unwrap_or_else(|e| panic!("{what}: {e}"));
            env.check(&(what, o));
            let x = fs::symlink_metadata(env.root().join("x")).unwrap();
            if what.starts_with("two layers, symlink first") {
                assert!(x.is_dir(), "{what}");
                let want = if o.sanitize { 0o755 } else { 0o6777 };
                assert_eq!(x.mode() & 0o7777, want, "{what} {o:?}");
            } else {
                assert!(x.file_type().is_symlink(), "{what}");
            }
        }
    }
}

#[test]
fn whiteouts_through_symlinks_to_the_host_remove_nothing_there() {
    let env = Env::new();
    let abs = env.canary().display().to_string();
    let rel = format!("../../{CANARY}");
    for (target, refused) in [(abs.as_str(), false), (rel.as_str(), true)] {
        let l1 = layer(&[E::Sym("x".into(), target.into())], 0);
        for w in [E::Whiteout("x/file".into()), E::Opaque("x".into()), E::Opaque("x/sub".into())] {
            let r = env.extract(&[l1.clone(), layer(std::slice::from_ref(&w), 0)], &opts(true, false));
            // absolute: the image's own (missing) path, nothing to remove; relative: above the root
            assert_eq!(r.is_err(), refused, "{target} {w:?}: {r:?}");
            env.check(&(target, &w));
        }
    }
}

#[test]
fn writes_over_symlinks_and_hard_links_replace_them() {
    let env = Env::new();
    let abs = env.canary().display().to_string();
    let l1 = layer(
        &[
            E::Sym("f".into(), format!("{abs}/file")),
            E::Sym("d".into(), abs.clone()),
            E::File("a".into(), 0o644),
            E::Hard("h".into(), "a".into()),
        ],
        0,
    );
    let l2 = layer(&[E::File("f".into(), 0o4755), E::Dir("d".into(), 0o6777), E::File("h".into(), 0o600)], 0);
    env.extract(&[l1, l2], &opts(true, false)).unwrap();
    env.check(&"writes over links");
    let root = env.root();
    assert!(fs::symlink_metadata(root.join("f")).unwrap().is_file());
    assert!(fs::symlink_metadata(root.join("d")).unwrap().is_dir());
    assert_eq!(fs::metadata(root.join("a")).unwrap().nlink(), 1, "the hard link was replaced, not written through");
    assert_eq!(fs::metadata(root.join("a")).unwrap().mode() & 0o7777, 0o644);
}

#[test]
fn hard_links_to_symlinks_link_the_symlink_not_the_host_file() {
    let env = Env::new();
    let abs = env.canary().display().to_string();
    let l = layer(&[E::Sym("s".into(), format!("{abs}/file")), E::Hard("h".into(), "s".into())], 0);
    env.extract(&[l], &opts(true, false)).unwrap();
    env.check(&"hard link to symlink");
    assert!(fs::symlink_metadata(env.root().join("h")).unwrap().file_type().is_symlink());
    // the host path as a hard link target is the image's own path, which does not exist
    let l = layer(&[E::Hard("h".into(), format!("{abs}/file"))], 0);
    assert!(env.extract(&[l], &opts(true, false)).is_err());
    let l = layer(&[E::Hard("h".into(), format!("../../{CANARY}/file"))], 0);
    assert!(env.extract(&[l], &opts(true, false)).is_err());
    env.check(&"hard link to host file");
}

/// A tiny deterministic PRNG (xorshift64*), so a failure names a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// A random entry at one of a few colliding paths.
fn random_entry(r: &mut Rng, canary: &str) -> E {
    const PATHS: [&str; 6] = ["cbx", "cbx/cby", "cbx/cby/cbz", "cby", "cby/cbx", "cbx/f"];
    const MODES: [u32; 7] = [0o755, 0o6777, 0o0000, 0o1777, 0o2775, 0o4755, 0o777];
    let p = r.pick(&PATHS).to_string();
    let depth = p.split('/').count();
    // from root/<p>'s directory, `depth` + 1 `..` reach the test dir, where the canary is
    let up = "../".repeat(depth + 1);
    let mode = *r.pick(&MODES);
    match r.below(12) {
        0 | 1 => E::Dir(p, mode),
        2 | 3 => E::File(p, mode),
        4..=6 => {
            let t = match r.below(10) {
                0 => "cby".to_string(),
                1 => ".".into(),
                2 => "..".into(),
                3 => "/cbx".into(),
                4 => "/cbx/cby".into(),
                5 => format!("{up}{CANARY}"),
                6 => format!("{up}{CANARY}/sub"),
                7 => format!("{canary}/file"),
                8 => format!("{canary}/sub"),
                _ => canary.to_string(),
            };
            E::Sym(p, t)
        }
        7 => {
            let t = match r.below(8) {
                0 => format!("{canary}/file"),
                1 => format!("{up}{CANARY}/file"),
                _ => r.pick(&PATHS).to_string(),
            };
            E::Hard(p, t)
        }
        8 => E::Whiteout(p),
        9 => E::Opaque(p),
        10 => match r.below(3) {
            0 => E::Char(p),
            1 => E::Block(p),
            _ => E::Fifo(p),
        },
        _ => E::Dir(p, 0o6777),
    }
}

/// With `sanitize`: no set-id bit, no group/other write bit, no device, FIFO or socket below `root`.
fn assert_sanitized(root: &Path, what: &dyn std::fmt::Debug) {
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let ft = m.file_type();
        assert!(
            !(ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket()),
            "`{}` is special: {what:?}",
            e.path().display()
        );
        if !ft.is_symlink() && e.path() != root {
            assert_eq!(m.mode() & 0o6022, 0, "`{}` has mode {:o}: {what:?}", e.path().display(), m.mode());
        }
    }
}

#[test]
fn random_layer_sequences_never_touch_the_host() {
    let env = Env::new();
    let canary = env.canary().display().to_string();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut failed) = (0, 0);
    let mut reasons = BTreeMap::new();
    for case in 0..4000 {
        let seed = r.next() | 1;
        let mut c = Rng(seed);
        let layers: Vec<Vec<E>> =
            (0..1 + c.below(3)).map(|_| (0..1 + c.below(8)).map(|_| random_entry(&mut c, &canary)).collect()).collect();
        let o = opts(c.below(4) != 0, c.below(2) == 0);
        let uid = *c.pick(&[0, 1000, 65534]);
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| layer(l, uid)).collect();
        let what = (case, seed, &o, &layers);
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.extract_each(&tars, &o)))
            .unwrap_or_else(|_| panic!("extraction panicked: {what:?}"));
        for r in &results {
            match r {
                Ok(_) => ok += 1,
                // refusals are fine (escapes are not)
                Err(e) => {
                    failed += 1;
                    let why = e.split("refused: ").nth(1).unwrap_or(e).chars().take(40).collect::<String>();
                    *reasons.entry(why).or_insert(0) += 1;
                }
            }
        }
        if o.sanitize {
            assert_sanitized(&env.root(), &what);
        }
        env.check(&what);
    }
    eprintln!("{ok} layers extracted, {failed} refused: {reasons:#?}");
    // the generator must produce many layers that extract, or it tests little
    assert!(ok * 5 > (ok + failed) * 2, "{ok} layers extracted, {failed} refused");
}
