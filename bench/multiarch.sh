#!/bin/bash
# bench/multiarch.sh - the two-platform build of examples/multiarch (a cnb_image on a Debian stack for
# linux/amd64 and linux/arm64; arm64's buildpacks run under qemu-user-static emulation), cold local
# cache (the .deb download cache warm, so the mirror is not measured). Prints, as Markdown:
#   * wall time of a cold build per platform set (amd64 only, arm64 only, both): RUNS runs, median;
#   * per platform, the median time of the actions that run buildpacks (detect + build) and of the
#     Debian images (no emulation), and the arm64/amd64 ratio of each;
#   * an emulated CPU-bound probe: `sha256sum` of 64 MiB inside the run image, native vs emulated.
# Usage: bench/multiarch.sh [CBUILD]   (default: target/release/cbuild, else target/debug/cbuild)
# Needs: qemu-user-static + binfmt-support (scripts/install-deps.sh), bubblewrap, jq, the Debian mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CBUILD=${1:-}
[ -n "$CBUILD" ] || { [ -x target/release/cbuild ] && CBUILD=$ROOT/target/release/cbuild || CBUILD=$ROOT/target/debug/cbuild; }
RUNS=${RUNS:-5}
W=$(mktemp -d /tmp/cbuild-multiarch-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
export CBUILD_DEBIAN_CACHE=$W/debs
cp -r "$ROOT/examples/multiarch" "$W/ws"; rm -rf "$W/ws/cbuild-out"
"$CBUILD" -C "$W/ws" --cache-dir "$W/warm" build //:app >/dev/null 2>&1   # fills the .deb cache
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { date +%s%3N; }

SETS=(linux/amd64 linux/arm64 linux/amd64,linux/arm64)
declare -A WALLS BPS WALL BP
# Interleaved (each run builds every set once) so a change in machine load hits all sets alike.
for _ in $(seq "$RUNS"); do
  for set in "${SETS[@]}"; do
    rm -rf "$W/cache"
    t0=$(ms)
    "$CBUILD" -C "$W/ws" --cache-dir "$W/cache" --platform "$set" build --json //:app >"$W/out.json" 2>/dev/null
    WALLS[$set]+="$(( $(ms) - t0 )) "
    # Buildpack time of a one-platform build: every detect and build action's duration (ms).
    case "$set" in
      *,*) ;;
      *) BPS[$set]+="$(jq -s '[ .[] | select(.type=="finished" and (.action=="detect" or .action=="build")) | .duration ] | add' "$W/out.json") " ;;
    esac
  done
done
for set in "${SETS[@]}"; do
  WALL[$set]=$(printf '%s\n' ${WALLS[$set]} | median)
  [ -n "${BPS[$set]:-}" ] && BP[$set]=$(printf '%s\n' ${BPS[$set]} | median)
done
echo "| platforms | cold build, wall (median of $RUNS) | buildpacks (detect + build) |"
echo "|---|---|---|"
echo "| linux/amd64 | ${WALL[linux/amd64]} ms | ${BP[linux/amd64]} ms |"
echo "| linux/arm64 (emulated) | ${WALL[linux/arm64]} ms | ${BP[linux/arm64]} ms |"
echo "| both (one index) | ${WALL[linux/amd64,linux/arm64]} ms | — |"
awk -v a="${BP[linux/amd64]}" -v b="${BP[linux/arm64]}" -v wa="${WALL[linux/amd64]}" -v wb="${WALL[linux/amd64,linux/arm64]}" \
  'BEGIN { printf "\narm64/amd64 buildpack time: %.1fx; two platforms / one: %.2fx wall\n", b/a, wb/wa }'
# A CPU-bound probe in the run image itself, timed inside the container (no start-up): native vs
# emulated sha256sum of 256 MiB of zeros.
probe() { "$CBUILD" -C "$W/ws" --cache-dir "$W/cache" --platform "$1" run --entrypoint '' //:app -- \
  /bin/sh -c 's=$(date +%s%N); head -c 268435456 /dev/zero | sha256sum >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))' 2>/dev/null; }
"$CBUILD" -C "$W/ws" --cache-dir "$W/cache" build //:app >/dev/null 2>&1
declare -A PROBE
for p in linux/amd64 linux/arm64; do
  ts=(); for _ in $(seq "$RUNS"); do ts+=("$(probe "$p" | tail -1)"); done
  PROBE[$p]=$(printf '%s\n' "${ts[@]}" | median)
done
echo "sha256sum of 256 MiB in the run image: ${PROBE[linux/amd64]} ms native, ${PROBE[linux/arm64]} ms emulated (median of $RUNS)"
awk -v a="${PROBE[linux/amd64]}" -v b="${PROBE[linux/arm64]}" 'BEGIN { printf "emulated/native CPU-bound: %.1fx\n", b/a }'
