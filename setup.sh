#!/bin/bash
# setup.sh - installs what cbuild needs (system packages + the cbuild binary) and builds the example
# monorepo: every image target of examples/, checked by validate-oci.sh and run where possible.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
cargo install --locked --quiet --path . --root "${CBUILD_INSTALL_ROOT:-$HOME/.local}"
BIN=${CBUILD_INSTALL_ROOT:-$HOME/.local}/bin/cbuild
echo "installed $BIN ($("$BIN" --version))"
cd examples
"$BIN" query //...
"$BIN" build //...
"$BIN" run //tools:tool-versioned
