//! Cloud Native Buildpacks, the pure part: buildpack.toml, detection and plan resolution, layer
//! metadata, environment directories, launch.toml → image config and labels. No process spawning
//! and no sandbox here: `execution` runs `bin/detect` and `bin/build` and calls these functions.
//!
//! Files:
//! * [`buildpack_toml`]: buildpack descriptors (API 0.7–0.12), targets, composite orders, id escaping.
//! * [`plan`]: build plans written by `bin/detect`, order/group resolution, plan.toml, Buildpack Plans.
//! * [`layer_toml`]: `<layer>.toml`, reserved layer names, the restore matrix, export dispositions.
//! * [`env`]: environment of detect/build (filtered base env, platform env, CNB_* variables) and the
//!   layer env directories (shared with the launcher through `env_files.rs`).
//! * [`launch`]: launch.toml/build.toml/store.toml, merged `metadata.toml`, image labels as JSON.
//! * [`distribution`]: builder and buildpackage labels, `/cnb/order.toml`, `run.toml`, `stack.toml`,
//!   `system.toml` (read and written).
//! * [`project`]: project.toml (schema 0.2/0.3): include/exclude, build env, groups, metadata.
//! * [`sbom`]: CNB SBOM files (`*.sbom.<ext>`): what they describe, the checks, where they go.
//!
//! Where the spec and the reference lifecycle disagree we follow the lifecycle (marked `[L]`,
//! see `shared/cnb-checklist.md`).

pub mod buildpack_toml;
pub mod distribution;
pub mod env;
pub mod env_files;
pub mod launch;
pub mod layer_toml;
pub mod plan;
pub mod project;
pub mod sbom;

mod error;

pub use error::{CnbError, Phase};
