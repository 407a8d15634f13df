#!/bin/bash
# buildgrid-exec.sh - a throwaway BuildGrid remote-*execution* server on 127.0.0.1: CAS, ActionCache,
# ByteStream, Capabilities, Execution, Operations and the Remote Workers API's Bots service, with
# BuildGrid's SQL scheduler on a private PostgreSQL cluster under DIR (unix socket only, no TCP).
# BuildGrid 0.4.4 comes from the venv of ../shared/harness/buildgrid.sh ($BUILDGRID_VENV, default
# ~/.cache/cbuild-harness/buildgrid-venv; created with `buildgrid==0.4.4` from PyPI if absent), plus
# `psycopg2-binary` (BuildGrid's LISTEN/NOTIFY needs psycopg2), installed into it on first use.
# Needs PostgreSQL's server binaries (Debian `postgresql`: /usr/lib/postgresql/*/bin, or $PG_BIN);
# as root, the cluster runs as the `postgres` user (runuser), so DIR must be reachable by it.
#
# Usage: buildgrid-exec.sh start DIR [PORT]  start (idempotent); prints the endpoint (grpc://127.0.0.1:PORT)
#        buildgrid-exec.sh url DIR           print the endpoint of the running server (exit 1 if not running)
#        buildgrid-exec.sh stop DIR          stop BuildGrid and the PostgreSQL cluster (idempotent); data kept
#        buildgrid-exec.sh selftest DIR      start, then run tests/harness/reference-bot.py's end-to-end check
# DIR holds config.yml, cas/, pg/ (cluster data, socket), buildgrid.{pid,url,log}, postgres.{pid,log}.
# Instance name "". SHA256. No auth. Bots: worker.devices[0].properties must carry OSFamily, ISA and
# cbuild-protocol (matched); container-image, cbuild-build-image are accepted, unmatched. A bot silent
# for 10 s (bot-session-keepalive-timeout) loses its session; its leases are requeued (max 5 tries).
# Starting takes 5-16 s (initdb, migrations, server; more on a busy machine). BuildGrid logs at INFO to DIR/buildgrid.log
# ($BUILDGRID_LOG_LEVEL: -vvv for DEBUG, which shows every lease transition). See reference-bot.py
# for the bot protocol as this server implements it.
set -euo pipefail
cmd=${1:-}; DIR=${2:-}
usage() { sed -n '2,21p' "$0" >&2; exit 2; }
[ -n "$cmd" ] && [ -n "$DIR" ] || usage
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PIDF=$DIR/buildgrid.pid; URLF=$DIR/buildgrid.url; LOG=$DIR/buildgrid.log
PGDATA=$DIR/pg/data; PGSOCK=$DIR/pg/sock; PGLOG=$DIR/postgres.log; PGPIDF=$DIR/postgres.pid
VENV=${BUILDGRID_VENV:-$HOME/.cache/cbuild-harness/buildgrid-venv}
PSYCOPG2=psycopg2-binary==2.9.10
CONN="postgresql+psycopg2://bgd@/bgd?host=$PGSOCK"
running() { [ -s "$PIDF" ] && kill -0 "$(head -1 "$PIDF")" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
say() { echo "buildgrid-exec.sh: $*" >&2; }
STARTING=""
# Reports a failure with the logs' tails; a failed start also stops what it started (nothing is left running).
fail() { say "$*"; [ -f "$PGLOG" ] && { echo "--- tail of $PGLOG" >&2; tail -15 "$PGLOG" >&2; }
  [ -f "$LOG" ] && { echo "--- tail of $LOG" >&2; tail -30 "$LOG" >&2; }
  if [ -n "$STARTING" ]; then STARTING=""; stop_buildgrid; stop_postgres; fi; exit 1; }

pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local d; d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  d=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
  [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && { echo "$d"; return; }
  return 1
}
# Runs a PostgreSQL tool as the cluster's owner: `postgres` when we are root (postgres refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_running() { [ -f "$PGDATA/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

start_postgres() {
  PGBIN=$(pg_bin) || fail "PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)"
  # The socket path (DIR/pg/sock/.s.PGSQL.5432) must fit in sun_path (107 bytes).
  [ ${#PGSOCK} -le 90 ] || fail "DIR is too long for a unix socket path: $PGSOCK"
  mkdir -p "$DIR/pg"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || fail "no \`postgres\` user to run the cluster as (apt-get install postgresql)"
    chown postgres: "$DIR/pg"
    runuser -u postgres -- test -x "$DIR/pg" ||
      { chmod o+x "$DIR"; runuser -u postgres -- test -x "$DIR/pg"; } ||
      fail "the postgres user cannot reach $DIR (a parent directory is not searchable by others)"
    touch "$PGLOG"; chown postgres: "$PGLOG"
  fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    rm -rf "$PGDATA"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U bgd --auth=trust -E UTF8 --locale=C.UTF-8 >>"$PGLOG" 2>&1 ||
      as_pg "$PGBIN/initdb" -D "$PGDATA" -U bgd --auth=trust -E UTF8 --locale=C >>"$PGLOG" 2>&1 ||
      fail "initdb failed"
    # Unix socket only; a throwaway cluster, so durability is traded for speed.
    as_pg sh -c "cat >> '$PGDATA/postgresql.conf'" <<PGCONF
listen_addresses = ''
unix_socket_directories = '$PGSOCK'
unix_socket_permissions = 0700
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
PGCONF
  fi
  as_pg mkdir -p "$PGSOCK"
  if ! pg_running; then
    # setsid: a ^C in the terminal of whoever started us must not reach the postmaster.
    if [ "$(id -u)" = 0 ]; then
      setsid runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 start >>"$PGLOG" 2>&1 </dev/null
    else
      setsid "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 start >>"$PGLOG" 2>&1 </dev/null
    fi || fail "PostgreSQL did not start"
  fi
  head -1 "$PGDATA/postmaster.pid" >"$PGPIDF"
  if ! "$PGBIN/psql" -X -h "$PGSOCK" -U bgd -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='bgd'" 2>>"$PGLOG" | grep -q 1; then
    "$PGBIN/createdb" -h "$PGSOCK" -U bgd bgd >>"$PGLOG" 2>&1 || fail "createdb failed"
  fi
}

stop_postgres() {
  local p=""
  [ -s "$PGDATA/postmaster.pid" ] && p=$(head -1 "$PGDATA/postmaster.pid")
  [ -z "$p" ] && [ -s "$PGPIDF" ] && p=$(head -1 "$PGPIDF")
  if PGBIN=$(pg_bin) && [ -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 20 stop >/dev/null 2>&1 || true
  fi
  # Fallback: the postmaster by its pid, if it is still ours (its command line names our data dir).
  if [ -n "$p" ] && tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "$PGDATA"; then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$PGPIDF"
}

stop_buildgrid() {
  if running; then p=$(head -1 "$PIDF"); kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true; fi
  rm -f "$PIDF"
}

write_config() {
  cat > "$DIR/config.yml" <<CFG
server:
  - !channel
    address: "127.0.0.1:$1"
    insecure-mode: true
# Each Execute stream and each bot's long-poll holds a gRPC thread (default: 5 per core, 10 here):
# room for a build's in-flight actions and a few workers.
thread-pool-size: 64
authorization:
  method: none
connections:
  - !sql-connection &sql
    connection-string: "$CONN"
    pool-size: 10
    max-overflow: 20
    pool-timeout: 30
storages:
  - !disk-storage &main-storage
    path: $DIR/cas
caches:
  - !lru-action-cache &main-action
    storage: *main-storage
    max-cached-refs: 1000000
    allow-updates: true
    cache-failed-actions: false
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *main-storage
    action-cache: *main-action
    property-set: !dynamic-property-set
      # OSFamily and ISA are always match keys (BuildGrid adds them); OSFamily may be set once.
      match-property-keys: [OSFamily, ISA, cbuild-protocol]
      wildcard-property-keys: [container-image, cbuild-build-image]
    # A bot that has not called UpdateBotSession for this long is reaped (checked every
    # session-expiry-timer-interval) and its leases are requeued, up to max-job-attempts tries.
    bot-session-keepalive-timeout: 10
    session-expiry-timer-interval: 1
    max-job-attempts: 5
    max-execution-timeout: 3600
    poll-interval: 0.2
    bot-poll-interval: 0.2
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.1
        jitter-factor: 0.05
        failure-backoff: 0.5
instances:
  - name: ""
    services:
      - !action-cache
        cache: *main-action
      - !execution
        scheduler: *scheduler
        operation-stream-keepalive-timeout: 10
      - !cas
        storage: *main-storage
      - !bytestream
        storage: *main-storage
CFG
}

ensure_venv() {
  if [ ! -x "$VENV/bin/bgd" ]; then
    python3 -m venv "$VENV" >&2 || fail "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install -q "buildgrid==0.4.4" >&2 || fail "pip install buildgrid failed"
  fi
  if ! "$VENV/bin/python" -c 'import psycopg2' 2>/dev/null; then
    "$VENV/bin/pip" install -q "$PSYCOPG2" >&2 || fail "pip install $PSYCOPG2 failed"
  fi
}

case "$cmd" in
start)
  if running; then cat "$URLF"; exit 0; fi
  t0=$(date +%s.%N); STARTING=1
  ensure_venv
  start_postgres
  # BuildGrid's server does not migrate its database itself: `bgd migrate apply` (alembic, idempotent).
  "$VENV/bin/bgd" migrate apply "$CONN" >>"$LOG" 2>&1 || fail "bgd migrate apply failed"
  PORT=${3:-$(free_port)}
  write_config "$PORT"
  (cd "$DIR" && exec setsid "$VENV/bin/bgd" server start ${BUILDGRID_LOG_LEVEL--vv} "$DIR/config.yml" >>"$LOG" 2>&1 </dev/null) &
  echo $! >"$PIDF"
  for _ in $(seq 1 480); do
    if caps=$("$VENV/bin/bgd" capabilities --remote "http://127.0.0.1:$PORT" 2>/dev/null) &&
       tr -d ' \n' <<<"$caps" | grep -q '"execEnabled":true'; then
      echo "grpc://127.0.0.1:$PORT" | tee "$URLF"
      say "up in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"; exit 0; fi
    running || { rm -f "$PIDF"; fail "server exited; see $LOG"; }
    sleep 0.25
  done
  fail "server did not answer with execution enabled in 120 s; see $LOG" ;;
url) running && cat "$URLF" ;;
stop) stop_buildgrid; stop_postgres ;;
selftest)
  url=$("$0" start "$DIR")
  exec "$VENV/bin/python" "$HERE/reference-bot.py" selftest "$url" ;;
*) usage ;;
esac
