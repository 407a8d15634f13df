#!/bin/bash
# bench/remote.sh - runner B against a warm remote cache, over both protocols: Bazel HTTP (nginx
# WebDAV, ../shared/harness/http-cache.sh) and REAPI v2 gRPC (BuildGrid, ../shared/harness/buildgrid.sh),
# on the example monorepo. Prints, as Markdown:
#   * bytes runner B downloads on a full hit of ONE image (`//services/api:image`) next to that
#     image's own blobs and next to everything runner A stored (the whole monorepo);
#   * the wall time of runner B (empty local cache, `//...`) per protocol: RUNS runs, median;
#   * both again with lazy bytes (`--remote-download toplevel`).
# Usage: bench/remote.sh [CBUILD]   (default: target/release/cbuild, else target/debug/cbuild)
# Needs: nginx (http-cache.sh), python3 + python3-venv (buildgrid.sh installs BuildGrid from PyPI
# into its venv on first use), bubblewrap; scripts/install-deps.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HARNESS=${HARNESS:-$ROOT/../shared/harness}
CBUILD=${1:-}
[ -n "$CBUILD" ] || { [ -x target/release/cbuild ] && CBUILD=$ROOT/target/release/cbuild || CBUILD=$ROOT/target/debug/cbuild; }
RUNS=${RUNS:-5}
W=$(mktemp -d /tmp/cbuild-remote-bench.XXXXXX)
trap '"$HARNESS/http-cache.sh" stop "$W/http" >/dev/null 2>&1 || true; "$HARNESS/buildgrid.sh" stop "$W/grid" >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
HTTP=$("$HARNESS/http-cache.sh" start "$W/http")
GRPC=$("$HARNESS/buildgrid.sh" start "$W/grid")
"$CBUILD" cache keygen "$W/key.pem" >"$W/key.pub" 2>/dev/null
export CBUILD_REMOTE_TRUSTED_KEYS; CBUILD_REMOTE_TRUSTED_KEYS=$(cat "$W/key.pub")
copy() { rm -rf "$1"; cp -r "$ROOT/examples" "$1"; rm -rf "$1/cbuild-out"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| protocol | runner A stored (whole monorepo) | B downloaded for \`//services/api:image\` | that image's own blobs | B / own | B wall time, \`//...\` (median of $RUNS) |"
echo "|---|---|---|---|---|---|"
for proto in http grpc http-toplevel grpc-toplevel; do
  lazy=()
  case $proto in *-toplevel) lazy=(--remote-download toplevel) ;; esac
  url=$HTTP; case $proto in grpc*) url=$GRPC ;; esac
  copy "$W/a"
  CBUILD_REMOTE_SIGNING_KEY=$W/key.pem "$CBUILD" -C "$W/a" --cache-dir "$W/cache-a-$proto" --remote-cache "$url" build //... >/dev/null 2>&1
  stored=$(du -sb "$W/cache-a-$proto/cas" | cut -f1)
  copy "$W/b"; rm -rf "$W/cache-b"
  "$CBUILD" -C "$W/b" --cache-dir "$W/cache-b" --remote-cache "$url" "${lazy[@]}" build --json //services/api:image >"$W/b.json" 2>/dev/null
  executed=$(jq -r 'select(.type=="summary") | .executed' "$W/b.json")
  [ "$executed" = 0 ] || echo "warning: runner B executed $executed actions over $proto" >&2
  got=$(du -sb "$W/cache-b/cas" | cut -f1)
  own=$(du -sbL "$W/b/cbuild-out/services/api/image/blobs" | cut -f1)
  rm -rf "$W/cache-b"
  times=$(for _ in $(seq "$RUNS"); do
    copy "$W/b"; rm -rf "$W/cache-b"
    s=$(date +%s%N); "$CBUILD" -C "$W/b" --cache-dir "$W/cache-b" --remote-cache "$url" "${lazy[@]}" build //... >/dev/null 2>&1; e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
  done | median)
  mb() { awk -v b="$1" 'BEGIN {printf "%.1f MB", b / 1e6}'; }
  echo "| $proto | $(mb "$stored") | $(mb "$got") | $(mb "$own") | $(awk -v g="$got" -v o="$own" 'BEGIN {printf "%.2f×", g / o}') | ${times} ms |"
done
echo
echo "cbuild: $CBUILD; $(nproc) cores; load $(cut -d' ' -f1 /proc/loadavg)"
