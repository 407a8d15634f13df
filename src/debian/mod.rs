//! Stacks from Debian packages: archive indexes, dependency resolution, lock files, `.deb`
//! download and extraction, and one reproducible root-filesystem layer built from a lock.
//!
//! ```text
//! find_archive ─► Archive::index ─► resolve ─► Lock (TOML, committed) ─► fetch_debs ─► build_rootfs_layer
//!   (setting, env,     (Release +       (Depends,                            (cache by      (extract in Rust,
//!    /etc/apt)          Packages)        Pre-Depends)                          sha256)        one layer)
//! ```
//!
//! Builds read only the lock: the archive is asked for `.deb`s the cache lacks, each verified
//! against the lock's sha256. What is deliberately not done, like `debootstrap` would:
//! maintainer scripts (`preinst`/`postinst`) are never run, `Recommends`/`Suggests` are ignored,
//! `Conflicts`/`Breaks`/`Replaces` are not checked, the `Release` signature is not verified, and
//! dpkg's database holds only a `status` file. [`rootfs`] provides the few things those scripts
//! would have made that minimal images need (users, `/tmp`, CA bundle).

pub mod archive;
pub mod control;
pub mod copyright;
pub mod deb;
pub mod error;
pub mod fetch;
pub mod lock;
pub mod relation;
pub mod resolve;
pub mod rootfs;
pub mod source;
pub mod version;

pub use archive::{Archive, Package, PackageIndex, Release};
pub use error::{DebianError, Result};
pub use fetch::{fetch_debs, DebCache};
pub use lock::{create_lock, refresh, Lock, LockChange, LockRequest};
pub use rootfs::{build_rootfs_layer, RootfsLayer, RootfsOptions, StackUser};
pub use source::{find_archive, ArchiveOrigin, ArchiveUrl, ARCHIVE_ENV};
pub use version::{compare_versions, Version};
