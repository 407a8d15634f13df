#!/bin/bash
# bench/rss.sh - peak RSS of a cold `cbuild build //big:layer` (one `layer` over every file of a
# generated tree, gzip) as the file count grows with the bytes fixed: does memory grow per file?
# (issue 23: "peak RSS flat in file count", limit 100 MiB for 100,000 files.)
#
# Usage: bench/rss.sh [CBUILD [BEFORE]]
#   CBUILD  the cbuild measured (default target/release/cbuild)
#   BEFORE  optional second binary (e.g. an older build) measured in the same run, interleaved
# Env: COUNTS="100 20000 40000 100000"  file counts (100: the fixed part, compression buffers etc.)
#      SIZE_MB=100   bytes of every tree (the same for every count, so only the file count varies)
#      RUNS=3        runs per binary and count; the median is reported (min and max too)
#      W=/tmp/cbuild-rss-bench   work dir (trees are kept between invocations, caches are not)
#      LIMIT_MIB=100 the limit the 100,000-file row is compared with
# Each run: the cache and cbuild-out removed, then `/usr/bin/time -f %M` (GNU time: the peak RSS
# of cbuild, KiB) around the build; the runs go round-robin over counts and binaries, so a change
# in machine load hits all of them alike. Also one no-op build per count after the last run.
# Output: a Markdown table on stdout; raw figures in $W/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CBUILD=${1:-$ROOT/target/release/cbuild}
BEFORE=${2:-}
COUNTS=${COUNTS:-100 20000 40000 100000}
SIZE_MB=${SIZE_MB:-100}
RUNS=${RUNS:-3}
W=${W:-/tmp/cbuild-rss-bench}
LIMIT_MIB=${LIMIT_MIB:-100}
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time; apt-get install time)" >&2; exit 2; }
mkdir -p "$W"
R=$W/results.txt
: >"$R"

for n in $COUNTS; do
  ws=$W/ws-$n-$SIZE_MB
  if [ ! -f "$ws/.complete" ]; then
    python3 "$ROOT/bench/gen.py" big "$ws" --files "$n" --size-mb "$SIZE_MB" >&2
    touch "$ws/.complete"
  fi
done

bins=(after)
declare -A BIN=([after]=$CBUILD)
if [ -n "$BEFORE" ]; then bins=(before after); BIN[before]=$BEFORE; fi

# one cold build: prints "KiB ms"
cold() {
  local bin=$1 ws=$2 cache=$W/cache t0 t1
  rm -rf "$cache" "$ws/cbuild-out"
  t0=$(date +%s%3N)
  /usr/bin/time -f %M -o "$W/rss.txt" "$bin" -C "$ws" --cache-dir "$cache" build //big:layer >/dev/null 2>"$W/err.txt" \
    || { echo "build failed ($bin, $ws):" >&2; tail -5 "$W/err.txt" >&2; exit 1; }
  t1=$(date +%s%3N)
  echo "$(tail -1 "$W/rss.txt") $((t1 - t0))"
}

for run in $(seq "$RUNS"); do
  for n in $COUNTS; do
    for b in "${bins[@]}"; do
      out=$(cold "${BIN[$b]}" "$W/ws-$n-$SIZE_MB")   # exits on a failed build (set -e)
      read -r kib ms <<<"$out"
      echo "$b $n cold $run $kib $ms" >>"$R"
      echo "run $run: $b $n files: $((kib / 1024)) MiB, $ms ms" >&2
    done
  done
done
# no-op: a second build over the last run's cache
for n in $COUNTS; do
  for b in "${bins[@]}"; do
    cold "${BIN[$b]}" "$W/ws-$n-$SIZE_MB" >/dev/null
    /usr/bin/time -f %M -o "$W/rss.txt" "${BIN[$b]}" -C "$W/ws-$n-$SIZE_MB" --cache-dir "$W/cache" build //big:layer >/dev/null 2>&1
    echo "$b $n noop 1 $(tail -1 "$W/rss.txt") 0" >>"$R"
  done
done
rm -rf "$W/cache"

python3 - "$R" "$LIMIT_MIB" "$SIZE_MB" "${bins[@]}" <<'EOF'
import sys, statistics
path, limit, size_mb, bins = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
rows = [l.split() for l in open(path) if l.strip()]
cold, noop, wall = {}, {}, {}
for b, n, kind, _, kib, ms in rows:
    key = (b, int(n))
    if kind == "cold":
        cold.setdefault(key, []).append(int(kib) / 1024)
        wall.setdefault(key, []).append(int(ms))
    else:
        noop[key] = int(kib) / 1024
counts = sorted({n for _, n in cold})
print(f"Peak RSS of a cold `cbuild build //big:layer`, {size_mb} MB of files in every tree; "
      f"median of {len(next(iter(cold.values())))} runs (min–max); no-op: one build over the cold build's cache.\n")
head = "| files |" + "".join(f" {b}: peak RSS | {b}: wall |" for b in bins) + " no-op peak RSS | after vs limit |"
print(head)
print("|---|" + "---|---|" * len(bins) + "---|---|")
for n in counts:
    cells = []
    for b in bins:
        v = cold[(b, n)]
        cells.append(f" {statistics.median(v):.0f} MiB ({min(v):.0f}–{max(v):.0f}) | {statistics.median(wall[(b, n)]) / 1000:.2f} s |")
    a = statistics.median(cold[("after", n)])
    print(f"| {n} |" + "".join(cells) + f" {noop.get(('after', n), 0):.0f} MiB | {a / limit:.2f}× {limit:.0f} MiB |")
if len(counts) >= 2:
    lo, hi = counts[1] if len(counts) > 2 else counts[0], counts[-1]
    for b in bins:
        d = statistics.median(cold[(b, hi)]) - statistics.median(cold[(b, lo)])
        print(f"\n{b}: {d * 1024 * 1024 / (hi - lo):.0f} bytes of peak RSS per file ({lo} → {hi} files)", end="")
    print()
EOF
