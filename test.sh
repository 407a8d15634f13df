#!/bin/bash
# test.sh - the whole test suite: unit tests, CLI snapshot tests, integration tests against real
# parts (bubblewrap, skopeo/umoci/oci-image-tool validators, runc). Installs missing system packages.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
export INSTA_UPDATE=no
cargo test --workspace --locked --no-fail-fast "$@"
