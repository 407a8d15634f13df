#!/bin/bash
# test.sh - the whole test suite: formatting and lints, unit tests, CLI snapshot tests, integration
# tests against real parts (bubblewrap, skopeo/umoci/oci-image-tool validators, runc, a registry, an
# HTTP cache server). Installs missing system packages.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
export INSTA_UPDATE=no
# Lints first: a formatting or clippy finding fails the run before the long tests start.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast "$@"
