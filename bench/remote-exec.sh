#!/bin/bash
# bench/remote-exec.sh - remote execution on BuildGrid (SQL scheduler on PostgreSQL,
# tests/harness/buildgrid-exec.sh) with 1, 2 and 3 `cbuild worker`s (each `--jobs 1`).
#   * Scaling: SERVICES cnb_images (default 6) whose buildpack's bin/build waits SLEEP seconds
#     (default 3; a dependency download, I/O bound) - wall time of `cbuild --remote-executor URL
#     build //slow/...` from empty caches (client and workers), RUNS runs (default 3), median;
#     next to a local build with -j1 and with the default jobs.
#   * Simulation: the example monorepo built locally with -j1 (`--json`, real action durations),
#     fed to bench/simulate-workers.py (list scheduling of the detect→build chains on N workers).
# Prints Markdown. Usage: bench/remote-exec.sh [CBUILD]  (default target/release/cbuild, else debug)
# Needs: postgresql, python3-venv (scripts/install-deps.sh), bubblewrap.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CBUILD=${1:-}
[ -n "$CBUILD" ] || { [ -x target/release/cbuild ] && CBUILD=$ROOT/target/release/cbuild || CBUILD=$ROOT/target/debug/cbuild; }
RUNS=${RUNS:-3}; SERVICES=${SERVICES:-6}; SLEEP=${SLEEP:-3}
W=$(mktemp -d /tmp/cbuild-remote-exec-bench.XXXXXX); chmod 755 "$W"  # the harness runs PostgreSQL as `postgres`
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; done
  tests/harness/buildgrid-exec.sh stop "$W/grid" >/dev/null 2>&1 || true; rm -rf "$W"; }
trap cleanup EXIT
URL=$(tests/harness/buildgrid-exec.sh start "$W/grid")
"$CBUILD" cache keygen "$W/key.pem" >"$W/key.pub" 2>/dev/null
export CBUILD_REMOTE_TRUSTED_KEYS; CBUILD_REMOTE_TRUSTED_KEYS=$(cat "$W/key.pub")
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The workspace: the examples plus //slow: a buildpack that waits, a builder, SERVICES apps.
mkws() {
  rm -rf "$1"; cp -r "$ROOT/examples" "$1"; rm -rf "$1/cbuild-out"
  mkdir -p "$1/slow/bp/bin"
  cat >"$1/slow/bp/buildpack.toml" <<'T'
api = "0.9"
[buildpack]
id = "bench/slow"
version = "0.1.0"
[[targets]]
os = "linux"
T
  printf '#!/bin/sh\n[ -f slow.txt ] || exit 100\n' >"$1/slow/bp/bin/detect"
  cat >"$1/slow/bp/bin/build" <<T
#!/bin/sh
set -eu
sleep $SLEEP
mkdir -p "\$CNB_LAYERS_DIR/dep"
cat slow.txt > "\$CNB_LAYERS_DIR/dep/fetched"
printf '[types]\nlaunch = true\n' > "\$CNB_LAYERS_DIR/dep.toml"
printf '[[processes]]\ntype = "web"\ncommand = ["cat", "/workspace/slow.txt"]\ndefault = true\n' > "\$CNB_LAYERS_DIR/launch.toml"
T
  chmod +x "$1/slow/bp/bin/"*
  { echo 'buildpack(name = "bp", srcs = glob(["bp/**"]))'
    echo 'builder(name = "builder", stack = "//stacks:default", order = [[":bp"]])'
  } >"$1/slow/BUILD.star"
  for i in $(seq "$SERVICES"); do
    mkdir -p "$1/slow/s$i"; echo "service $i $2" >"$1/slow/s$i/slow.txt"
    echo 'cnb_image(name = "image", srcs = ["slow.txt"], builder = "//slow:builder")' >"$1/slow/s$i/BUILD.star"
  done
}

start_workers() {
  PIDS=()
  for i in $(seq "$1"); do
    rm -rf "$W/worker$i"
    CBUILD_REMOTE_SIGNING_KEY=$W/key.pem CBUILD_CACHE_DIR=$W/worker$i/cache setsid "$CBUILD" worker --server "$URL" --jobs 1 \
      --name "bench-w$i" --work-dir "$W/worker$i/work" >"$W/worker$i.log" 2>&1 &
    PIDS+=($!)
  done
  sleep 2
}
stop_workers() { for p in "${PIDS[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); sleep 11; }

echo "### Scaling: $SERVICES buildpacks that wait ${SLEEP} s each (median of $RUNS, empty caches)"
echo
echo "| how | wall time | vs 1 worker | actions per worker (last run) |"
echo "|---|---|---|---|"
one=""
for n in 1 2 3; do
  start_workers "$n"
  dist=""
  t=$(for r in $(seq "$RUNS"); do
    mkws "$W/ws" "n$n-r$r-$RANDOM"; rm -rf "$W/client"
    s=$(date +%s%N)
    "$CBUILD" -C "$W/ws" --cache-dir "$W/client" --remote-executor "$URL" build --json //slow/... >"$W/out.json" 2>"$W/err.txt" ||
      { cat "$W/err.txt" >&2; exit 1; }
    e=$(date +%s%N); echo $(( (e - s) / 1000000 ))
  done | median)
  dist=$(jq -c 'select(.type=="summary") | .remote_workers' "$W/out.json")
  [ -n "$one" ] || one=$t
  echo "| $n worker(s) | ${t} ms | $(awk -v a="$one" -v b="$t" 'BEGIN {printf "%.2f×", a / b}') | \`$dist\` |"
  stop_workers
done
for j in 1 "$(nproc)"; do
  t=$(for r in $(seq "$RUNS"); do
    mkws "$W/ws" "local$j-r$r-$RANDOM"; rm -rf "$W/client"
    s=$(date +%s%N); "$CBUILD" -C "$W/ws" --cache-dir "$W/client" -j "$j" build --json //slow/... >"$W/local-j$j.json" 2>/dev/null; e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
  done | median)
  echo "| local, -j $j | ${t} ms | $(awk -v a="$one" -v b="$t" 'BEGIN {printf "%.2f×", a / b}') | - |"
done
echo
echo "The same $SERVICES apps simulated from the local -j1 run's action durations:"
echo
python3 bench/simulate-workers.py "$W/local-j1.json" 4
echo
echo "### Simulation from a real build's action durations (the example monorepo, local, -j1)"
echo
rm -rf "$W/ex" "$W/excache"; cp -r "$ROOT/examples" "$W/ex"; rm -rf "$W/ex/cbuild-out"
"$CBUILD" -C "$W/ex" --cache-dir "$W/excache" -j 1 build --json //... >"$W/ex.json" 2>/dev/null
python3 bench/simulate-workers.py "$W/ex.json" 6
echo
echo "cbuild: $CBUILD; $(nproc) cores; load $(cut -d' ' -f1 /proc/loadavg)"
