#!/bin/bash
# bench/run.sh - cbuild vs its peers (BuildKit, buildah) and the physical limits (stat walk, tar|pigz, tar|zstd),
# all in ONE run on this machine; ends by regenerating BENCHMARKS.md (bench/report.py).
#
# Usage:   bench/run.sh [WORKDIR]        (default /tmp/cbuild-bench; wiped and regenerated)
#          cargo build --release first (the script uses target/release/cbuild, or $CBUILD).
# Quick:   FILES=2000 SIZE_MB=20 BIG_FILES=4000 BIG_MB=40 RUNS=3 bench/run.sh
# Env:     RUNS=5          hyperfine runs per cbuild scenario / limit (median, min, max reported)
#          PEER_RUNS=RUNS  hyperfine runs per buildah / BuildKit scenario (slow peers; lower it if needed)
#          SERVICES=5 FILES=10000 SIZE_MB=100 LIB_FRAC=0.2   the generated monorepo (bench/gen.py)
#          BIG_FILES=20000 BIG_MB=200   the big-layer tree; a 2x tree (2*BIG_FILES, 2*BIG_MB) too
#          SKIP_BUILDAH=1  skip the buildah peer;  SKIP_BUILDKIT=1  skip the BuildKit peer
#          SKIP_BIG=1  skip the layer-creation benchmarks
#          SKIP_RSS=1  skip bench/rss.sh (peak RSS of a 100 / 20k / 40k / 100k-file layer; RSS_RUNS=3)
#          CBUILD=path     the cbuild binary;  OUT=path  the report (default BENCHMARKS.md at the root)
# Needs:   hyperfine pigz zstd buildah jq time (GNU /usr/bin/time) python3 bubblewrap docker.io (dockerd
#          and /usr/bin/docker 20.10, BuildKit built in); nginx + curl for the remote-cache scenario.
#          Root (buildah chroot, dockerd, bind mounts).  On Debian/Ubuntu:
#            apt-get install -y hyperfine pigz zstd buildah jq time python3 bubblewrap docker.io nginx curl
# Scenarios (each after `sync`: hyperfine --warmup 1 --export-json, --prepare for the state change, GNU time %M for peak RSS):
#   cbuild  1 cold (empty cache dir, no cbuild-out)   2 no-op   3 one file edited in one service
#           4 one file edited in the shared lib       5 run-image change (rebase: exports only)
#           6 fresh local cache + warm remote cache (if `cbuild build --help` has --remote-cache)
#   buildah (bud --isolation chroot --layers + push to an OCI layout, per service): cold, no-op,
#           edit (one service file), edit-lib (one shared-lib file)
#   BuildKit (DOCKER_BUILDKIT=1 /usr/bin/docker build --network none into a throwaway engine's store,
#           ../shared/harness/dockerd.sh; per service: peer/SVC.bk.Dockerfile with its own
#           SVC.bk.Dockerfile.dockerignore, context W/docker/ctx/SVC = a bind mount of the monorepo):
#           cold (builder prune -af, service images removed, base kept), no-op, edit, edit-lib
#   limits  stat walk of the sources (no-op floor); tar|pigz -p 2 and tar|zstd -T2 of the big trees
#           vs cbuild's cold build of a `layer` over the same tree (and a 2x tree for RSS)
# Results: WORKDIR/results/{hf-*.json,rss-*.txt,out-*.jsonl,err-*.txt,load-*.txt,engine-*.txt,meta.env}
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${1:-/tmp/cbuild-bench}
RUNS=${RUNS:-5}; PEER_RUNS=${PEER_RUNS:-$RUNS}
SERVICES=${SERVICES:-5}; FILES=${FILES:-10000}; SIZE_MB=${SIZE_MB:-100}; LIB_FRAC=${LIB_FRAC:-0.2}
BIG_FILES=${BIG_FILES:-20000}; BIG_MB=${BIG_MB:-200}
SKIP_BUILDAH=${SKIP_BUILDAH:-0}; SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}; SKIP_BIG=${SKIP_BIG:-0}
CBUILD=${CBUILD:-$ROOT/target/release/cbuild}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
HARNESS=${HARNESS:-$(cd "$ROOT/.." && pwd)/shared/harness}

# ---- tools -------------------------------------------------------------------------------------
missing=()
for t in hyperfine pigz zstd jq python3 tar find xargs stat; do command -v $t >/dev/null || missing+=("$t"); done
[ -x /usr/bin/time ] || missing+=(time)
[ "$SKIP_BUILDAH" = 1 ] || command -v buildah >/dev/null || missing+=(buildah)
[ "$SKIP_BUILDKIT" = 1 ] || { command -v dockerd >/dev/null && [ -x /usr/bin/docker ]; } || missing+=(docker.io)
command -v bwrap >/dev/null || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/run.sh: missing tools: ${missing[*]}" >&2
  echo "install them with:  apt-get install -y hyperfine pigz zstd buildah jq time python3 bubblewrap docker.io nginx curl" >&2
  exit 1
fi
[ -x "$CBUILD" ] || { echo "bench/run.sh: no cbuild binary at $CBUILD (run: cargo build --release)" >&2; exit 1; }
if [ "$SKIP_BUILDAH" != 1 ] && [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh: buildah with --isolation chroot needs root here; run as root or SKIP_BUILDAH=1" >&2; exit 1
fi
if [ "$SKIP_BUILDKIT" != 1 ] && [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh: the throwaway Docker engine (BuildKit peer) needs root; run as root or SKIP_BUILDKIT=1" >&2; exit 1
fi

# ---- layout ------------------------------------------------------------------------------------
R=$W/results; MONO=$W/mono; BIG1=$W/big1; BIG2=$W/big2
BW=$W/buildah; BSTORE="--root $BW/storage --runroot $BW/run --storage-driver ${DRIVER:-overlay}"
wipe_buildah() {
  if [ -d "$BW/storage" ]; then
    buildah $BSTORE rm -a >/dev/null 2>&1 || true; buildah $BSTORE rmi -a -f >/dev/null 2>&1 || true
    { grep -o " $BW/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  fi
}
umount_under() { { grep -o " $1/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done; }
# the BuildKit peer: a throwaway engine under $DK; its build contexts are bind mounts under $DK/ctx
DK=$W/docker
stop_engine() {
  if [ -s "$DK/engine/docker.pid" ]; then "$HARNESS/dockerd.sh" stop "$DK/engine" >/dev/null 2>&1 || true; fi
  if [ -d "$DK" ]; then umount_under "$DK"; fi
}
trap stop_engine EXIT
trap 'exit 130' INT TERM
wipe_buildah
stop_engine
if [ -f "$W/http-cache/url" ]; then "$HARNESS/http-cache.sh" stop "$W/http-cache" >/dev/null 2>&1 || true; fi
rm -rf "$W"; mkdir -p "$R" "$W/bin" "$W/tmp" "$BW"
T_START=$(date +%s)
# a private copy of the binary: others may rebuild target/release while the benchmark runs
cp "$CBUILD" "$W/bin/cbuild"; CBUILD_SRC=$CBUILD; CBUILD=$W/bin/cbuild

cat >"$W/bin/edit" <<'EOF'
#!/bin/sh
# edit FILE: one new line with a unique value (a real content change, same file count)
echo "// edit $(date +%s%N)" >>"$1"
EOF
cat >"$W/bin/patch" <<'EOF'
#!/bin/sh
# patch FILE: new content for the run image's patch-level file
echo "patch $(date +%s%N)" >"$1"
EOF
chmod +x "$W/bin/edit" "$W/bin/patch"

echo "== generating workspaces in $W"
python3 "$HERE/gen.py" mono "$MONO" --services "$SERVICES" --files "$FILES" --size-mb "$SIZE_MB" --lib-frac "$LIB_FRAC"
if [ "$SKIP_BIG" != 1 ]; then
  python3 "$HERE/gen.py" big "$BIG1" --files "$BIG_FILES" --size-mb "$BIG_MB"
  python3 "$HERE/gen.py" big "$BIG2" --files $((BIG_FILES * 2)) --size-mb "$(awk -v m="$BIG_MB" 'BEGIN{print m*2}')"
  # same file count as big1, twice the bytes: separates RSS per file from RSS per byte
  python3 "$HERE/gen.py" big "$W/big1x2" --files "$BIG_FILES" --size-mb "$(awk -v m="$BIG_MB" 'BEGIN{print m*2}')" --seed 43
fi
tree_bytes() { find "$1" -type f -printf '%s\n' | awk '{s+=$1} END{print s+0}'; }
tree_files() { find "$1" -type f | wc -l; }

HAS_REMOTE=0
"$CBUILD" build --help 2>&1 | grep -q -- '--remote-cache' && HAS_REMOTE=1
{
  echo "CBUILD=$CBUILD"; echo "CBUILD_SRC=$CBUILD_SRC"; echo "CBUILD_BUILT=$(date -u -r "$CBUILD_SRC" +%Y-%m-%dT%H:%MZ)"
  echo "CBUILD_VERSION=$("$CBUILD" --version 2>/dev/null | head -1)"
  echo "GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "GIT_DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -vc '^??' || true)"
  echo "WORKDIR=$W"; echo "RUNS=$RUNS"; echo "PEER_RUNS=$PEER_RUNS"; echo "WARMUP=1"
  echo "SERVICES=$SERVICES"; echo "FILES=$FILES"; echo "SIZE_MB=$SIZE_MB"; echo "LIB_FRAC=$LIB_FRAC"
  echo "MONO_FILES=$(tree_files "$MONO")"; echo "MONO_BYTES=$(tree_bytes "$MONO")"
  if [ "$SKIP_BIG" != 1 ]; then
    echo "BIG1_FILES=$(tree_files "$BIG1/big/data")"; echo "BIG1_BYTES=$(tree_bytes "$BIG1/big/data")"
    echo "BIG2_FILES=$(tree_files "$BIG2/big/data")"; echo "BIG2_BYTES=$(tree_bytes "$BIG2/big/data")"
    echo "BIG1X2_FILES=$(tree_files "$W/big1x2/big/data")"; echo "BIG1X2_BYTES=$(tree_bytes "$W/big1x2/big/data")"
  fi
  echo "HAS_REMOTE=$HAS_REMOTE"
  echo "SKIP_BUILDAH=$SKIP_BUILDAH"; echo "SKIP_BUILDKIT=$SKIP_BUILDKIT"; echo "SKIP_BIG=$SKIP_BIG"
  echo "BUILDAH_VERSION=$(buildah --version 2>/dev/null || echo none)"
  echo "DOCKER_VERSION=$(/usr/bin/docker --version 2>/dev/null || echo none)"
  echo "DOCKER_PACKAGE=$(dpkg-query -W -f '${Package} ${Version}' docker.io 2>/dev/null || echo unknown)"
  echo "HYPERFINE_VERSION=$(hyperfine --version)"
  echo "PIGZ_VERSION=$(pigz --version 2>&1)"
  echo "ZSTD_VERSION=$(zstd --version | sed 's/^\*\** *//; s/ *\*\**$//')"
  echo "LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$R/meta.env"

# ---- helpers -----------------------------------------------------------------------------------
# hf NAME RUNS PREPARE COMMAND: hyperfine with GNU time around the command (peak RSS per run into
# rss-NAME.txt); stdout of the command is appended to out-NAME.jsonl (cbuild's --json events).
TIME="/usr/bin/time -f %M -a -o"
hf() {
  local name=$1 runs=$2 prep=$3 cmd=$4
  cut -d' ' -f1-3 /proc/loadavg >"$R/load-$name.txt"
  : >"$R/rss-$name.txt"; : >"$R/out-$name.jsonl"
  # the command as a script (a pipeline is measured as a whole; GNU time reports its largest process)
  case "$cmd" in *'|'*) printf '#!/bin/bash\nset -o pipefail\n%s\n' "$cmd" ;; *) printf '#!/bin/bash\nexec %s\n' "$cmd" ;; esac >"$W/bin/$name.sh"
  chmod +x "$W/bin/$name.sh"; echo "$prep" >"$W/bin/$name.prepare"
  printf '%-24s ' "$name"
  # Every scenario starts from a settled machine: the previous one's writes flushed (a cold build
  # leaves hundreds of MB of writeback that slowed the next no-op's first runs by up to 60 ms), and
  # one warm-up run (prepared like the others) is not counted.
  sync
  if hyperfine --warmup 1 --runs "$runs" --prepare "$prep" --export-json "$R/hf-$name.json" --style none \
      "$TIME $R/rss-$name.txt $W/bin/$name.sh >>$R/out-$name.jsonl 2>>$R/err-$name.txt" >/dev/null 2>"$R/hferr-$name.txt"; then
    jq -r '.results[0] | "median \(.median*1000|round) ms  (min \(.min*1000|round), max \(.max*1000|round))"' "$R/hf-$name.json" |
      tr '\n' ' '
    echo " rss max $(sort -n "$R/rss-$name.txt" | grep -E '^[0-9]+$' | tail -1) KiB"
  else
    echo "FAILED (see $R/hferr-$name.txt, $R/err-$name.txt)"; rm -f "$R/hf-$name.json"
  fi
  cut -d' ' -f1-3 /proc/loadavg >>"$R/load-$name.txt"
}
CB="$CBUILD build --json"
CACHE=$W/cache
cb() { "$CBUILD" build --json -C "$MONO" --cache-dir "$CACHE" "$@" //... >>"$R/out-setup.jsonl" 2>>"$R/err-setup.txt"; }
summary() { jq -c 'select(.type=="summary") | {executed, cached_local, cached_remote, failed, from_record}' "$R/out-$1.jsonl" | tail -1; }

# ---- cbuild scenarios --------------------------------------------------------------------------
echo "== cbuild: monorepo $(grep MONO_FILES "$R/meta.env" | cut -d= -f2) files, $(( $(grep MONO_BYTES "$R/meta.env" | cut -d= -f2) / 1048576 )) MiB"
cb || { echo "cbuild cannot build the generated workspace; see $R/err-setup.txt" >&2; tail -20 "$R/err-setup.txt" >&2; exit 1; }
# Cold: no cache dir and none of the copies kept for it outside (the targets' app dirs under the
# sandbox scratch root belong to the cache dir's instance: the next build would sweep them, timed;
# the prepare removes them instead). Extracted build-image root file systems stay, keyed by image
# digest and shared by every cache, as BuildKit keeps its unpacked base image.
APPS="${TMPDIR:-/tmp}/cbuild-sandbox-$(id -u)/apps"
hf cbuild-cold "$RUNS" "rm -rf $CACHE $MONO/cbuild-out $APPS" "$CB -C $MONO --cache-dir $CACHE //..."
echo "   summary: $(summary cbuild-cold)"
cb
hf cbuild-noop "$RUNS" "true" "$CB -C $MONO --cache-dir $CACHE //..."
echo "   summary: $(summary cbuild-noop)"
hf floor-stat "$RUNS" "true" "find $MONO -path $MONO/cbuild-out -prune -o -type f -print0 | xargs -0 stat >/dev/null"
PY=/usr/bin/python3; [ -x $PY ] || PY=python3   # not a pyenv shim: its start-up is a bash script
cat >"$W/bin/pystat.py" <<'EOF'
import os, sys
def walk(p, skip):
    for e in os.scandir(p):
        if e.is_dir(follow_symlinks=False):
            if e.path != skip:
                walk(e.path, skip)
        else:
            os.stat(e.path)
walk(sys.argv[1], os.path.join(sys.argv[1], "cbuild-out"))
EOF
hf floor-pystat "$RUNS" "true" "$PY $W/bin/pystat.py $MONO"
hf cbuild-edit-svc "$RUNS" "$W/bin/edit $MONO/services/svc00/src/m000/f00000.js" "$CB -C $MONO --cache-dir $CACHE //..."
echo "   summary: $(summary cbuild-edit-svc)"
hf cbuild-edit-lib "$RUNS" "$W/bin/edit $MONO/lib/src/m000/f00000.js" "$CB -C $MONO --cache-dir $CACHE //..."
echo "   summary: $(summary cbuild-edit-lib)"
hf cbuild-run-image "$RUNS" "$W/bin/patch $MONO/stacks/run-layer/etc/patch-level" "$CB -C $MONO --cache-dir $CACHE //..."
echo "   summary: $(summary cbuild-run-image)"
if [ "$HAS_REMOTE" = 1 ]; then
  URL=$("$HARNESS/http-cache.sh" start "$W/http-cache")
  echo "   remote cache at $URL"
  echo "REMOTE_URL=$URL" >>"$R/meta.env"
  rm -rf "$W/cache-a" "$MONO/cbuild-out"
  # Only a runner with a signing key writes to the remote cache (RELIABILITY.md, "Remote cache trust").
  "$CBUILD" cache keygen "$W/signing.pem" >"$W/signing.pub"
  CBUILD_REMOTE_SIGNING_KEY="$W/signing.pem" "$CBUILD" build --json -C "$MONO" --cache-dir "$W/cache-a" --remote-cache "$URL" //... >"$R/out-remote-fill.jsonl" 2>"$R/err-remote-fill.txt" ||
    echo "   filling the remote cache failed (see $R/err-remote-fill.txt)"
  export CBUILD_REMOTE_TRUSTED_KEYS="$(cat "$W/signing.pub")"
  hf cbuild-remote-warm "$RUNS" "rm -rf $W/cache-b $MONO/cbuild-out" "$CB -C $MONO --cache-dir $W/cache-b --remote-cache $URL //..."
  unset CBUILD_REMOTE_TRUSTED_KEYS
  echo "   summary: $(summary cbuild-remote-warm)"
  "$HARNESS/http-cache.sh" stop "$W/http-cache" >/dev/null 2>&1 || true
else
  echo "cbuild-remote-warm      not available in this build (no --remote-cache in \`cbuild build --help\`)"
fi
cb  # leave a complete build (the buildah base image comes from cbuild-out)

# ---- buildah peer ------------------------------------------------------------------------------
if [ "$SKIP_BUILDAH" != 1 ]; then
  echo "== buildah $(buildah --version | cut -d' ' -f3) (--isolation chroot, storage under $BW)"
  cp -rL "$MONO/cbuild-out/stacks/run-image" "$BW/base"   # the example run image as an OCI layout
  # build.sh [bud args]: every service, one Dockerfile each (same context: the monorepo), then
  # `buildah push` to an OCI layout (cbuild's result is an OCI layout too). NOPUSH=1 skips the push.
  cat >"$BW/build.sh" <<EOF
#!/bin/bash
set -e
while read -r svc kind; do
  buildah $BSTORE bud --quiet --isolation chroot "\$@" --build-arg BASE=$BW/base:latest \\
    -f $MONO/peer/\$svc.Dockerfile -t localhost/\$svc:latest $MONO >/dev/null
  if [ "\${NOPUSH:-0}" != 1 ]; then
    mkdir -p $BW/out; rm -rf $BW/out/\$svc; buildah $BSTORE push --quiet localhost/\$svc:latest oci:$BW/out/\$svc:latest >/dev/null
  fi
done <$MONO/peer/services.txt
EOF
  cat >"$BW/wipe.sh" <<EOF
#!/bin/bash
buildah $BSTORE rm -a >/dev/null 2>&1 || true; buildah $BSTORE rmi -a -f >/dev/null 2>&1 || true
EOF
  chmod +x "$BW/build.sh" "$BW/wipe.sh"
  "$BW/build.sh" --layers 2>"$R/err-buildah-setup.txt" || { echo "buildah setup build failed:" >&2; tail -20 "$R/err-buildah-setup.txt" >&2; SKIP_BUILDAH=failed; }
fi
if [ "$SKIP_BUILDAH" = 0 ]; then
  hf buildah-cold "$PEER_RUNS" "$BW/wipe.sh" "$BW/build.sh --layers"
  "$BW/build.sh" --layers
  hf buildah-noop "$PEER_RUNS" "true" "$BW/build.sh --layers"
  hf buildah-noop-nopush "$PEER_RUNS" "true" "env NOPUSH=1 $BW/build.sh --layers"
  hf buildah-edit-svc "$PEER_RUNS" "$W/bin/edit $MONO/services/svc00/src/m000/f00000.js" "$BW/build.sh --layers"
  hf buildah-edit-svc-nopush "$PEER_RUNS" "$W/bin/edit $MONO/services/svc00/src/m000/f00000.js" "env NOPUSH=1 $BW/build.sh --layers"
  hf buildah-edit-lib "$PEER_RUNS" "$W/bin/edit $MONO/lib/src/m000/f00000.js" "$BW/build.sh --layers"
  wipe_buildah
fi
echo "SKIP_BUILDAH_EFFECTIVE=$SKIP_BUILDAH" >>"$R/meta.env"

# ---- BuildKit peer -----------------------------------------------------------------------------
# One throwaway engine (../shared/harness/dockerd.sh: its own data root and socket, no network),
# stopped after these scenarios (and by the EXIT trap on failure). The base image is the example run
# image cbuild built (`cbuild export`, a docker-archive, then `docker load`): cbuild-bench/run:latest.
# Each service builds from peer/SVC.bk.Dockerfile (FROM ${BASE}; the steps of the buildah file) with
# peer/SVC.bk.Dockerfile.dockerignore (its context: lib/src + the service). Each service has its own
# context path W/docker/ctx/SVC, a bind mount of the monorepo: BuildKit keeps one synced copy of a
# context per client and context path, so with one shared path every build would re-send its
# service's files after the previous service's build replaced them. The builds' --progress=plain
# output goes to err-NAME.txt; its "transferring context" lines show what each build sent.
if [ "$SKIP_BUILDKIT" != 1 ]; then
  echo "== BuildKit ($(/usr/bin/docker --version | cut -d, -f1), DOCKER_BUILDKIT=1, engine under $DK)"
  mkdir -p "$DK/ctx" "$DK/config"
  if DH=$("$HARNESS/dockerd.sh" start "$DK/engine" 2>"$R/err-dockerd.txt"); then
    :
  else
    echo "   the Docker engine did not start (see $R/err-dockerd.txt, $DK/engine/dockerd.log)" >&2; SKIP_BUILDKIT=failed
  fi
fi
if [ "$SKIP_BUILDKIT" = 0 ]; then
  cat >"$W/bin/dk" <<EOF_DK
#!/bin/sh
# the docker client of the throwaway engine (Debian's /usr/bin/docker, its own config dir)
export DOCKER_HOST=$DH DOCKER_BUILDKIT=1 DOCKER_CONFIG=$DK/config
exec /usr/bin/docker "\$@"
EOF_DK
  chmod +x "$W/bin/dk"
  echo "DOCKER_ENGINE=$("$W/bin/dk" version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}' 2>/dev/null || echo unknown)" >>"$R/meta.env"
  echo "DOCKER_STORAGE=$("$W/bin/dk" info --format '{{.Driver}}' 2>/dev/null || echo unknown)" >>"$R/meta.env"
  if "$CBUILD" export -q -C "$MONO" --cache-dir "$CACHE" --tag cbuild-bench/run:latest -o "$DK/base.tar" //stacks:run-image >/dev/null 2>"$R/err-buildkit-base.txt" &&
     "$W/bin/dk" load -q -i "$DK/base.tar" >/dev/null 2>>"$R/err-buildkit-base.txt"; then
    ctx=perservice
    while read -r svc kind; do
      mkdir -p "$DK/ctx/$svc"
      mount --bind "$MONO" "$DK/ctx/$svc" 2>>"$R/err-buildkit-base.txt" || ctx=shared
    done <"$MONO/peer/services.txt"
    if [ $ctx = shared ]; then umount_under "$DK/ctx"; echo "   bind mounts failed: every service builds from $MONO (one shared context path)"; fi
    echo "BUILDKIT_CONTEXT=$ctx" >>"$R/meta.env"
    # build.sh: every service in turn, into the engine's image store (cbuild-bench/SVC:latest)
    cat >"$DK/build.sh" <<EOF_B
#!/bin/bash
set -e
echo "== build.sh \$(date +%s%N)" >&2
while read -r svc kind; do
  ctx=$DK/ctx/\$svc; [ $ctx = perservice ] || ctx=$MONO
  $W/bin/dk build --network none --progress=plain --build-arg BASE=cbuild-bench/run:latest \\
    -f $MONO/peer/\$svc.bk.Dockerfile -t cbuild-bench/\$svc:latest \$ctx >/dev/null
done <$MONO/peer/services.txt
EOF_B
    # wipe.sh: the whole build cache (the synced contexts too) and the service images; the base stays
    cat >"$DK/wipe.sh" <<EOF_W
#!/bin/bash
$W/bin/dk builder prune -af >/dev/null 2>&1 || true
$W/bin/dk image rm -f \$(sed 's|^\([^ ]*\).*|cbuild-bench/\1:latest|' $MONO/peer/services.txt) >/dev/null 2>&1 || true
EOF_W
    chmod +x "$DK/build.sh" "$DK/wipe.sh"
    "$DK/build.sh" 2>"$R/err-buildkit-setup.txt" || { echo "BuildKit setup build failed:" >&2; tail -20 "$R/err-buildkit-setup.txt" >&2; SKIP_BUILDKIT=failed; }
  else
    echo "loading the base image into the engine failed:" >&2; tail -20 "$R/err-buildkit-base.txt" >&2; SKIP_BUILDKIT=failed
  fi
fi
if [ "$SKIP_BUILDKIT" = 0 ]; then
  # engine-NAME.txt, before and after the scenario (its prepares included): CPU seconds (user+sys) of
  # dockerd and its children (containerd; exited shims and runc counted through cutime/cstime), and
  # dockerd's peak RSS (VmHWM, KiB). hyperfine and GNU time see only the docker client.
  engine_stat() {
    local p; p=$(cat "$DK/engine/docker.pid")
    { echo "$p"; pgrep -P "$p" || true; } | while read -r q; do sed 's/^.*) //' "/proc/$q/stat" 2>/dev/null || true; done |
      awk -v hz="$(getconf CLK_TCK)" '{t+=$12+$13+$14+$15} END{printf "%.2f", t/hz}'
    echo " $(awk '/VmHWM/{print $2}' "/proc/$p/status")"
  }
  bk() { engine_stat >"$R/engine-$1.txt"; hf "$@"; engine_stat >>"$R/engine-$1.txt"; }
  bk buildkit-cold "$PEER_RUNS" "$DK/wipe.sh" "$DK/build.sh"
  "$DK/build.sh" 2>>"$R/err-buildkit-setup.txt"
  bk buildkit-noop "$PEER_RUNS" "true" "$DK/build.sh"
  bk buildkit-edit-svc "$PEER_RUNS" "$W/bin/edit $MONO/services/svc00/src/m000/f00000.js" "$DK/build.sh"
  bk buildkit-edit-lib "$PEER_RUNS" "$W/bin/edit $MONO/lib/src/m000/f00000.js" "$DK/build.sh"
fi
echo "SKIP_BUILDKIT_EFFECTIVE=$SKIP_BUILDKIT" >>"$R/meta.env"
stop_engine

# ---- layer creation: cbuild vs tar | pigz -p 2 / tar | zstd -T2 -----------------------------------
# pigz at cbuild's own gzip level (oci::compress::GZIP_LEVEL), so the two do the same kind of work.
GZIP_LEVEL=$(sed -n 's/^pub const GZIP_LEVEL: u32 = \([0-9]\);.*/\1/p' "$HERE/../src/oci/compress.rs")
echo "GZIP_LEVEL=${GZIP_LEVEL:?cannot read GZIP_LEVEL from src/oci/compress.rs}" >>"$R/meta.env"
if [ "$SKIP_BIG" != 1 ]; then
  echo "== layer creation (big trees)"
  for b in big1 big2; do
    D=$W/$b
    hf "layer-cbuild-gzip-$b" "$RUNS" "rm -rf $W/cache-$b $D/cbuild-out" "$CB -C $D --cache-dir $W/cache-$b //big:layer"
    # the gzip blob (the largest in the cache) before the zstd runs below reuse that cache dir
    [ $b = big1 ] && echo "BIG1_GZ_BYTES=$(stat -c %s "$W"/cache-big1/cas/sha256/* 2>/dev/null | sort -n | tail -1)" >>"$R/meta.env"
    hf "layer-pigz-$b" "$RUNS" "rm -f $W/tmp/$b.tar.gz" "tar -C $D/big -cf - data | pigz -p 2 -$GZIP_LEVEL >$W/tmp/$b.tar.gz"
    if [ $b = big1 ]; then
      echo "PIGZ_BIG1_BYTES=$(stat -c %s "$W/tmp/$b.tar.gz")" >>"$R/meta.env"
      hf "layer-cbuild-zstd-$b" "$RUNS" "rm -rf $W/cache-$b $D/cbuild-out" "$CB -C $D --cache-dir $W/cache-$b //big:layer-zstd"
      hf "layer-zstd-$b" "$RUNS" "rm -f $W/tmp/$b.tar.zst" "tar -C $D/big -cf - data | zstd -q -T2 >$W/tmp/$b.tar.zst"
      hf "layer-tar-$b" "$RUNS" "rm -f $W/tmp/$b.tar" "tar -C $D/big -cf - data >$W/tmp/$b.tar"
    fi
    rm -f "$W/tmp/$b".tar*
  done
  hf "layer-cbuild-gzip-big1x2" "$RUNS" "rm -rf $W/cache-big1x2 $W/big1x2/cbuild-out" "$CB -C $W/big1x2 --cache-dir $W/cache-big1x2 //big:layer"
fi

# ---- peak RSS vs the file count: bench/rss.sh (100 / 20k / 40k / 100k files of 100 MB, median of 3)
if [ "${SKIP_RSS:-0}" != 1 ]; then
  echo "== peak RSS vs file count (bench/rss.sh)"
  W="$W/rss" RUNS="${RSS_RUNS:-3}" "$HERE/rss.sh" "$CBUILD" >"$R/rss-files.md" 2>"$R/err-rss-files.txt" \
    && cp "$W/rss/results.txt" "$R/rss-files.txt" || echo "bench/rss.sh failed: see $R/err-rss-files.txt" >&2
fi

echo "LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$R/meta.env"
echo "ELAPSED_S=$(( $(date +%s) - T_START ))" >>"$R/meta.env"
echo "== report"
python3 "$HERE/report.py" "$R" "$OUT"
echo "wrote $OUT"
