//! OCI images the reproducible way: layer tars, compressed layer blobs, immutable image values with
//! `mutate`-style functions (append, config, rebase), OCI layouts, docker/OCI archives and safe
//! extraction. Blobs live in a [`crate::cas::BlobDir`]; no index, cache policy or registry I/O here.
//!
//! ```text
//! TarEntry list ─► tar (sorted, fixed mtime) ─► layer (diff_id, then gzip/zstd blob) ─► image::append_layer
//!   ─► image::with_config / rebase ─► layout::write_layout | docker_archive::write_docker_archive
//! layout::read_layout | docker_archive::read_archive ─► Image ─► extract::extract_layers (rootfs)
//! ```
//!
//! ```
//! use cbuild::cas::BlobDir;
//! use cbuild::oci::{append_layer, scratch, write_layer, write_layout, LayerOptions, TarEntry};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let blobs = BlobDir::open(tmp.path().join("cas"))?;
//! std::fs::write(tmp.path().join("hello.sh"), "#!/bin/sh\necho hello\n")?;
//! let entries = vec![TarEntry::file("usr/local/bin/hello", tmp.path().join("hello.sh"), 0o755)];
//! // `known` is the cache's diff_id -> blob lookup; nothing is known here
//! let layer = write_layer(entries, &LayerOptions::default(), &blobs, &|_, _| None)?;
//! let image = append_layer(&scratch("linux", "amd64")?, &layer, "hello layer")?;
//! let digest = write_layout(&tmp.path().join("layout"), &image, &blobs, Some("latest"))?;
//! assert_eq!(&digest, image.digest());
//! # Ok(()) }
//! ```

pub mod compress;
pub mod digest;
pub mod docker_archive;
pub mod error;
pub mod extract;
pub mod image;
pub mod index;
pub mod layer;
pub mod layout;
pub mod tar;
pub mod tree;

pub use compress::Compression;
pub use docker_archive::{read_archive, write_docker_archive};
pub use error::{OciError, Result};
pub use extract::{extract_layer, extract_layers, ExtractOptions, ExtractStats};
pub use image::{append_layer, rebase, rebase_with, scratch, with_config, with_created, ConfigPatch, Image, CREATED};
pub use index::Index;
pub use layer::{compress_tar, write_layer, LayerBlob, LayerOptions};
pub use layout::{read_layout, write_index_layout, write_layout, Selector};
pub use tar::{entries_from_dir, write_tar, EntryKind, LayerEntries, TarEntry, TarOptions, DEFAULT_MTIME};

/// OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The index annotation naming a manifest's tag in an OCI layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
