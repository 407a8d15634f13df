//! Builds the CNB launcher (`launcher/`, std + libc) as a static executable and hands its path to
//! the crate (`CBUILD_LAUNCHER`), which embeds it: every app image gets `/cnb/lifecycle/launcher`
//! from the cbuild binary itself, built from this repository's source. The launcher gets its own
//! target dir so the nested cargo never waits on the outer one's lock.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for p in ["launcher/src", "launcher/Cargo.toml", "src/cnb/env_files.rs"] {
        println!("cargo:rerun-if-changed={p}");
    }
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let target_dir = out.join("launcher-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "cnb-launcher", "--target", &target, "--target-dir"])
        .arg(&target_dir)
        // The outer build's flags (coverage, sanitizers, -C target-cpu) must not leak into a binary
        // that runs on any image; static glibc so it needs no libc in the run image.
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static\x1f-Cstrip=symbols\x1f-Cdebuginfo=0")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .status()
        .expect("running cargo to build the launcher");
    assert!(status.success(), "building the static CNB launcher (launcher/) failed");
    let bin = target_dir.join(&target).join("release/launcher");
    println!("cargo:rustc-env=CBUILD_LAUNCHER={}", bin.display());
}
