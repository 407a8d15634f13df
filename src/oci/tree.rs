//! An image's file tree read straight from its layer blobs, without extracting anything: the
//! metadata of every path after whiteouts ([`ImageTree::read`]), symlinks resolved inside the image
//! ([`ImageTree::resolve`]), and the bytes of the few files asked for ([`ImageTree::contents`]).
//! Nothing here writes to disk; a layer's bytes are never followed outside the tree.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};

use super::compress;
use super::error::{OciError, Result};
use crate::cas::BlobDir;
use crate::model::digest::Digest;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// How many symlinks one path may go through (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    /// A symbolic link, with its target text.
    Symlink(String),
    /// A hard link to another path of the same layer (image-relative, no leading slash).
    Hardlink(String),
    /// A device, FIFO or socket.
    Other,
}

/// One path of the image as the last layer that touched it left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits with set-id and sticky bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Index of the layer (bottom first) holding this version of the path.
    pub layer: usize,
}

/// The merged file tree of an image's layers. Paths are relative to `/` without a leading slash
/// (`etc/passwd`); the root itself is `""`.
#[derive(Clone, Debug, Default)]
pub struct ImageTree {
    nodes: BTreeMap<String, Node>,
    layers: Vec<Digest>,
}

/// `./a/b/`, `/a/b` → `a/b`.
fn clean(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    parts.join("/")
}

impl ImageTree {
    /// Reads the tree of `layers` (bottom first) from `blobs`; each blob is verified first.
    pub fn read(blobs: &BlobDir, layers: &[Digest]) -> Result<ImageTree> {
        let mut t = ImageTree { nodes: BTreeMap::new(), layers: layers.to_vec() };
        t.nodes.insert(String::new(), Node { kind: NodeKind::Dir, mode: 0o755, uid: 0, gid: 0, size: 0, layer: 0 });
        for (i, d) in layers.iter().enumerate() {
            blobs.verify(d)?;
            t.apply_layer(blobs.open_blob(d)?, d, i)?;
        }
        Ok(t)
    }

    fn apply_layer(&mut self, blob: impl Read, d: &Digest, index: usize) -> Result<()> {
        let terr = |source| OciError::TarRead { subject: d.to_string(), source };
        let (_, r) = compress::decoder(BufReader::with_capacity(1 << 20, blob)).map_err(terr)?;
        let mut ar = tar::Archive::new(r);
        let mut added: BTreeMap<String, Node> = BTreeMap::new();
        let mut removed: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        for e in ar.entries().map_err(terr)? {
            let e = e.map_err(terr)?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let path = clean(&raw);
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == OPAQUE {
                opaque.push(dir);
                continue;
            }
            if let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) {
                removed.push(if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") });
                continue;
            }
            let h = e.header();
            let link = || e.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Symlink => NodeKind::Symlink(link()),
                tar::EntryType::Link => NodeKind::Hardlink(clean(&link())),
                tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File,
                _ => NodeKind::Other,
            };
            let num = |v: std::io::Result<u64>| v.unwrap_or(0);
            let node = Node {
                kind,
                mode: h.mode().unwrap_or(0) & 0o7777,
                uid: num(h.uid()) as u32,
                gid: num(h.gid()) as u32,
                size: e.size(),
                layer: index,
            };
            if path.is_empty() {
                // The root directory's own entry: keep its metadata.
                self.nodes.insert(String::new(), node);
                continue;
            }
            added.insert(path, node);
        }
        // Whiteouts and opaque markers hide what the layers below put there, never this layer's entries.
        for p in removed {
            self.remove_tree(&p, true);
        }
        for dir in opaque {
            self.remove_tree(&dir, false);
        }
        for (p, n) in added {
            // A non-directory replacing a directory hides everything that was below it.
            if n.kind != NodeKind::Dir && self.nodes.get(&p).is_some_and(|o| o.kind == NodeKind::Dir) {
                self.remove_tree(&p, false);
            }
            self.nodes.insert(p, n);
        }
        Ok(())
    }

    /// Removes everything below `p` (and `p` itself if `this`).
    fn remove_tree(&mut self, p: &str, this: bool) {
        if this {
            self.nodes.remove(p);
        }
        let prefix = if p.is_empty() { String::new() } else { format!("{p}/") };
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            if !k.is_empty() {
                self.nodes.remove(&k);
            }
        }
    }

    /// Every path below `prefix` (a directory, `cnb/buildpacks/a/1`) with its entry, in path order.
    pub fn below<'a>(&'a self, prefix: &str) -> impl Iterator<Item = (&'a str, &'a Node)> + 'a {
        let p = clean(prefix);
        let start = if p.is_empty() { String::new() } else { format!("{p}/") };
        self.nodes
            .range(start.clone()..)
            .take_while(move |(k, _)| k.starts_with(&start))
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, n)| (k.as_str(), n))
    }

    /// The entry at `path` itself (a symlink is not followed), if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&clean(path))
    }

    /// Follows symlinks in every component of `path` (absolute targets start at the image root, `..`
    /// stops at it), as the kernel does inside the container. Returns the resolved path and its entry;
    /// `None` if something on the way does not exist or loops.
    pub fn resolve(&self, path: &str) -> Option<(String, &Node)> {
        let mut todo: Vec<String> = clean(path).split('/').filter(|c| !c.is_empty()).rev().map(String::from).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            let p = cur.join("/");
            let node = self.nodes.get(&p)?;
            if let NodeKind::Symlink(target) = &node.kind {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                todo.extend(target.split('/').filter(|c| !c.is_empty() && *c != ".").rev().map(String::from));
            } else if !todo.is_empty() && node.kind != NodeKind::Dir {
                return None;
            }
        }
        let p = cur.join("/");
        self.nodes.get(&p).map(|n| (p, n))
    }

    /// The bytes of regular files (image paths as [`resolve`](Self::resolve) returns them), at most
    /// `max` bytes each; reads only the layers that hold them. A path that is not a regular file or
    /// hard link to one is left out.
    pub fn contents(&self, blobs: &BlobDir, paths: &[String], max: u64) -> Result<BTreeMap<String, Vec<u8>>> {
        // (layer, path in that layer) → the image paths wanting those bytes.
        let mut want: BTreeMap<usize, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for p in paths {
            let Some(n) = self.nodes.get(p) else { continue };
            let in_layer = match &n.kind {
                NodeKind::File => p.clone(),
                NodeKind::Hardlink(t) => t.clone(),
                _ => continue,
            };
            want.entry(n.layer).or_default().entry(in_layer).or_default().push(p.clone());
        }
        let mut out = BTreeMap::new();
        for (layer, files) in want {
            let d = &self.layers[layer];
            let terr = |source| OciError::TarRead { subject: d.to_string(), source };
            let (_, r) = compress::decoder(BufReader::with_capacity(1 << 20, blobs.open_blob(d)?)).map_err(terr)?;
            let mut ar = tar::Archive::new(r);
            for e in ar.entries().map_err(terr)? {
                let e = e.map_err(terr)?;
                let path = clean(&String::from_utf8_lossy(&e.path_bytes()));
                let Some(targets) = files.get(&path) else { continue };
                if e.header().entry_type() == tar::EntryType::Link {
                    continue; // the bytes are at the link's target, read under its own name
                }
                let mut buf = Vec::new();
                e.take(max).read_to_end(&mut buf).map_err(terr)?;
                for t in targets {
                    out.insert(t.clone(), buf.clone());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layer::{write_layer, LayerOptions};
    use crate::oci::tar::TarEntry;

    fn layer(blobs: &BlobDir, dir: &std::path::Path, entries: Vec<TarEntry>) -> Digest {
        let _ = dir;
        write_layer(entries, &LayerOptions::default(), blobs, &|_, _| None).unwrap().digest
    }

    #[test]
    fn whiteouts_links_and_contents() {
        let t = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(t.path().join("cas")).unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "hello world\n").unwrap();
        let empty = t.path().join("e");
        std::fs::write(&empty, "").unwrap();
        let l1 = layer(
            &blobs,
            t.path(),
            vec![
                TarEntry::dir("etc", 0o755),
                TarEntry::file("etc/greeting", &f, 0o640).owned_by(1000, 1001),
                TarEntry::file("etc/gone", &f, 0o644),
                TarEntry::dir("opt", 0o755),
                TarEntry::file("opt/old", &f, 0o644),
                TarEntry::dir("bin", 0o755),
                TarEntry::file("bin/busybox", &f, 0o755),
                TarEntry::symlink("bin/sh", "busybox"),
                TarEntry::symlink("link", "/etc"),
            ],
        );
        let l2 = layer(
            &blobs,
            t.path(),
            vec![
                TarEntry::dir("etc", 0o755),
                TarEntry::file("etc/.wh.gone", &empty, 0o644),
                TarEntry::dir("opt", 0o755),
                TarEntry::file("opt/.wh..wh..opq", &empty, 0o644),
                TarEntry::file("opt/new", &f, 0o600),
            ],
        );
        let tree = ImageTree::read(&blobs, &[l1, l2]).unwrap();
        let g = tree.get("/etc/greeting").unwrap();
        assert_eq!((g.mode, g.uid, g.gid, g.size), (0o640, 1000, 1001, 12));
        assert!(tree.get("/etc/gone").is_none(), "whited out");
        assert!(tree.get("/opt/old").is_none(), "hidden by the opaque marker");
        assert!(tree.get("/opt/new").is_some(), "the opaque layer's own entry stays");
        let (p, n) = tree.resolve("/bin/sh").unwrap();
        assert_eq!((p.as_str(), n.mode), ("bin/busybox", 0o755));
        let (p, _) = tree.resolve("/link/greeting").unwrap();
        assert_eq!(p, "etc/greeting");
        assert!(tree.resolve("/link/nothing").is_none());
        let below: Vec<&str> = tree.below("/opt").map(|(p, _)| p).collect();
        assert_eq!(below, ["opt/new"]);
        let c = tree.contents(&blobs, &["etc/greeting".to_string()], 1 << 20).unwrap();
        assert_eq!(c["etc/greeting"], b"hello world\n");
    }
}
