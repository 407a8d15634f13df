//! cbuild: application source in, reproducible OCI images out, the Cloud Native Buildpacks way,
//! driven by a Starlark build graph with a content-addressed action cache.
//!
//! The pipeline (data flows one way, as in Bazel):
//!
//! ```text
//! cli ─► loading ─► TargetGraph ─► analysis ─► ActionGraph ─► execution ─┬─► cache (SQLite + CAS)
//!                                                                         ├─► cnb  (buildpack API)
//!                                                                         └─► oci  (layers, images, layouts)
//! ```
//!
//! * [`model`]: labels, patterns, digests, the action graph. Imports nothing of ours.
//! * [`fs`]: atomic writes and path helpers.
//! * [`loading`]: `cbuild.toml`, `BUILD.star` evaluation with the embedded prelude → [`loading::TargetGraph`].
//! * [`analysis`]: targets → plain-data [`model::action::ActionGraph`] (no Starlark past this point).
//! * [`cache`]: the action cache and blob store (SQLite + files).
//! * [`oci`]: reproducible tar layers, image values, OCI layouts, docker-archive, safe extraction.
//! * [`cnb`]: pure functions of the Buildpack API (buildpack.toml, detection, plans, env, launch.toml).
//! * [`attest`]: cbuild's SBOMs (SPDX, CycloneDX) and SLSA provenance of images, made from the action
//!   graph and attached to them as OCI 1.1 artifacts.
//! * [`execution`]: the scheduler, the sandbox and one runner per action kind.
//! * [`cli`]: argument parsing, settings, printing; the only place that uses `anyhow`.

pub mod analysis;
pub mod attest;
pub mod cache;
pub mod cas;
pub mod cli;
pub mod cnb;
pub mod debian;
pub mod env;
pub mod execution;
pub mod fs;
pub mod loading;
pub mod model;
pub mod oci;
pub mod rebase;
pub mod registry;
pub mod remote;
