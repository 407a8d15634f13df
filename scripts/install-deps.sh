#!/bin/bash
# install-deps.sh - installs the system packages cbuild's build, examples and tests need (Debian/Ubuntu).
# Idempotent: does nothing when every tool is present. Runs apt-get update before apt-get install.
#   bubblewrap        the sandbox for genrules and buildpacks
#   busybox-static    the example stack's userland
#   skopeo umoci oci-image-tool jq runc   independent image validators and the OCI runtime (tests)
#   docker-registry apache2-utils nginx   a real registry and HTTP cache server (tests)
#   graphviz          `dot`, to check `cbuild query --output dot`
#   hyperfine pigz zstd buildah time  benchmarks and their peers (bench/run.sh; BuildKit via docker.io)
#   gcc libc6-dev     a static C probe in the sandbox tests (the Rust toolchain links with cc anyway)
#   docker.io podman  real engines for `cbuild load` (tests: ../shared/harness/dockerd.sh; podman load)
#   git               `cbuild affected --base` and its tests
#   python3-junitparser  a real JUnit XML reader for `cbuild test --junit` (tests; PyPI's junitparser)
#   python3-venv      the venv of the SBOM/provenance validators below
#   postgresql        BuildGrid's SQL scheduler (tests/harness/buildgrid-exec.sh runs its own; the system one is held back)
#   qemu-user-static binfmt-support  user-mode emulation of foreign architectures (a cnb_image built for
#                     linux/arm64 on amd64 runs its buildpacks under it; registered with the fix-binary
#                     flag, so the handlers work inside the sandbox)
# Then, in a venv at $CBUILD_TOOLS_VENV (default /opt/cbuild-tools/venv), the independent validators
# of cbuild's SBOMs and provenance (scripts/validate-sbom.py; Debian packages none of them):
#   spdx-tools (pyspdxtools), cyclonedx-python-lib[json-validation], in-toto-attestation (PyPI)
set -euo pipefail
PKGS=(bubblewrap busybox-static skopeo umoci oci-image-tool jq runc docker-registry apache2-utils nginx
      graphviz hyperfine pigz zstd buildah time curl xz-utils ca-certificates gcc libc6-dev docker.io podman git
      python3-junitparser python3-venv postgresql qemu-user-static binfmt-support)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if [ ${#missing[@]} -ne 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  held=(); rest=()
  for p in "${missing[@]}"; do if [ "$p" = postgresql ]; then held+=("$p"); else rest+=("$p"); fi; done
  if [ ${#rest[@]} -ne 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${rest[@]}" >/dev/null
  fi
  if [ ${#held[@]} -ne 0 ]; then
    # The system cluster is not started: a policy-rc.d that forbids service starts during this install.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null; $SUDO chmod +x "$policy"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${held[@]}" >/dev/null ||
      { [ -z "$policy" ] || $SUDO rm -f "$policy"; exit 1; }
    [ -z "$policy" ] || $SUDO rm -f "$policy"
  fi
fi
# binfmt_misc: a machine without systemd may not have it mounted; binfmt-support registers
# qemu-user-static's handlers when it is, and `update-binfmts --enable` (re)does it otherwise.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
    echo "install-deps: cannot mount binfmt_misc: foreign-architecture builds will not run here" >&2
fi
if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  $SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 ||
    echo "install-deps: cannot register qemu-aarch64: linux/arm64 builds will not run here" >&2
fi
VENV=${CBUILD_TOOLS_VENV:-/opt/cbuild-tools/venv}
if ! "$VENV/bin/python" -c 'import spdx_tools, cyclonedx.validation.json, in_toto_attestation' 2>/dev/null; then
  echo "install-deps: installing the SBOM validators into $VENV" >&2
  $SUDO /usr/bin/python3 -m venv "$VENV"
  $SUDO "$VENV/bin/pip" install -q 'spdx-tools==0.8.5' 'cyclonedx-python-lib[json-validation]==11.12.0' \
    'in-toto-attestation==0.9.3'
fi
