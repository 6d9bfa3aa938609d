#!/usr/bin/env bash
# Usage: scripts/bench.sh coordinator|transfer|baseline|all [tcc-bench options...]
#
# The benchmark (docs/BENCHMARKS.md). Builds the release binaries (tcc-bench and the
# services), starts the system with scripts/up.sh on its own ports and run directory, runs the
# load generator `tcc-bench MODE` for each mode (a sweep over concurrency 1, 8, 32 and 128 in
# flight, a fixed duration per point), prints its table and writes target/bench/<mode>.json.
# `all` runs coordinator, transfer, baseline (transfer and baseline in the same run, so their
# ratio compares like with like). Extra arguments go to every tcc-bench call
# (e.g. `--hot 10`, `--concurrency 1,8`, `--duration 5`; see `tcc-bench --help`).
#
# Postgres: by default a PRIVATE cluster (PG_URL=postgres://postgres@127.0.0.1:55999; when
# nothing answers there scripts/lib/pg.sh creates one under target/pg and starts it on that
# port), so that the load disturbs no shared server and the pg_stat_database deltas see only
# this load. fsync stays on. The cluster gets max_connections=200 and pg_stat_statements (for
# the per-statement profile), and is restarted once to apply them. Point PG_URL at another
# server to use it instead (its settings are then left alone).
#
# Environment:
#   BENCH_DURATION=10     seconds per point (tcc-bench --duration)
#   BENCH_CONCURRENCY=1,8,32,128
#   PORT_OFFSET=1000      added to every service port (the default ports may be in use)
#   RUN_DIR=target/bench-run   pid files and logs of the services started here
#   BENCH_HALF_PEAK=1     transfer: a last point open-loop at half the sweep's best tx/s (where
#                         the p99 target, under 25 ms, is read); 0 skips it
#   SKIP_BUILD=1          use the binaries already built
#   KEEP_UP=1             leave the services (and a private cluster) running afterwards
#   RUST_LOG=warn         log level of the services (info logs several lines per transaction)
#   DB_POOL_SIZE=32       connections per service pool (the services' default is 10)
#   WORKER_BATCH, ...     passed through to the services (scripts/up.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

[[ $# -ge 1 ]] || usage 1
MODE=$1
shift
case "$MODE" in
  coordinator | transfer | baseline) MODES=("$MODE") ;;
  all) MODES=(coordinator transfer baseline) ;;
  -h | --help) usage 0 ;;
  *)
    echo "error: unknown mode '$MODE' (coordinator, transfer, baseline or all)" >&2
    exit 1
    ;;
esac

export PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:55999}"
export PG_PRIVATE_PORT="${PG_PRIVATE_PORT:-${PG_URL##*:}}"
export PORT_OFFSET="${PORT_OFFSET:-1000}"
export RUN_DIR="${RUN_DIR:-$ROOT/target/bench-run}"
export RUST_LOG="${RUST_LOG:-warn}"
# The AP's fire rate limit (per client address) stops a flood from one address; the benchmark's
# load generator is one, on purpose.
export FIRE_RATE_LIMIT_PER_SECOND="${FIRE_RATE_LIMIT_PER_SECOND:-0}"
export SEED_ACCOUNTS="${SEED_ACCOUNTS:-1000}"
# The pools default to 10 connections, which the coordinator exhausts (each statement holds a
# connection through its commit's WAL flush): measured 106 tx/s at 10, 150-177 at 32, no more at 64.
export DB_POOL_SIZE="${DB_POOL_SIZE:-32}"
BENCH_DURATION="${BENCH_DURATION:-10}"
BENCH_CONCURRENCY="${BENCH_CONCURRENCY:-1,8,32,128}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  echo "[bench] building (release): tcc-bench and the services"
  cargo build --release --bin tcc-bench --bin coordinator --bin trans-out --bin trans-in \
    --bin stock --bin app
fi
export SKIP_BUILD=1

pg_ensure
if [[ $PG_STARTED_HERE == 1 ]]; then
  mkdir -p "$RUN_DIR"
  echo "$PG_URL" >"$RUN_DIR/pg.started"
fi

# The private cluster (ours to configure): more connections than the services' pools need, and
# pg_stat_statements for the profile. Restarted once when the settings are new.
pg_data=""
if [[ -f "$PG_PRIVATE_DIR/data/PG_VERSION" && $PG_URL == "postgres://postgres@127.0.0.1:$(cat "$PG_PRIVATE_DIR/port" 2>/dev/null)" ]]; then
  pg_data="$PG_PRIVATE_DIR/data"
  preload=$(psql "$PG_URL/postgres" -XqtA -c 'SHOW shared_preload_libraries')
  if [[ $preload != *pg_stat_statements* ]]; then
    echo "[bench] configuring the private cluster (max_connections=200, pg_stat_statements)"
    pg_as_owner sh -c "printf '%s\n' 'max_connections = 200' \
      \"shared_preload_libraries = 'pg_stat_statements'\" 'pg_stat_statements.track = top' \
      >>'$pg_data/postgresql.conf'"
    pg_ctl=$(pg_find_bin pg_ctl)
    (cd "$PG_PRIVATE_DIR" && pg_as_owner "$pg_ctl" -D "$pg_data" -m fast -w -t 60 restart \
      -l "$PG_PRIVATE_DIR/postgres.log" >/dev/null)
  fi
  psql "$PG_URL/postgres" -Xq -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' >/dev/null
fi
echo "[bench] Postgres: $PG_URL (fsync=$(psql "$PG_URL/postgres" -XqtA -c 'SHOW fsync'))"

started_here=0
if ! svc_load || ! svc_running coordinator || ! svc_running app; then
  started_here=1
fi
BASELINE_ENDPOINTS=on "$ROOT/scripts/up.sh" coordinator trans-out trans-in stock app
# Called by the EXIT trap (shellcheck cannot see that).
# shellcheck disable=SC2317
cleanup() {
  if [[ ${KEEP_UP:-0} != 1 && $started_here == 1 ]]; then
    "$ROOT/scripts/down.sh" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

url() { echo "http://127.0.0.1:$(svc_port "$1")"; }
mkdir -p "$ROOT/target/bench"
bench_args=(
  --concurrency "$BENCH_CONCURRENCY" --duration "$BENCH_DURATION"
  --dtm "$(url coordinator)/api/dtmsvr" --app "$(url app)/api"
  --pg-url "$PG_URL" --run-dir "$RUN_DIR" --accounts "$SEED_ACCOUNTS"
)
if [[ -n $pg_data ]]; then bench_args+=(--pg-data "$pg_data"); fi

status=0
for mode in "${MODES[@]}"; do
  echo
  echo "[bench] mode $mode"
  mode_args=()
  # The fireTcc latency target is "p99 at half the peak throughput": measured open-loop.
  if [[ $mode == transfer && ${BENCH_HALF_PEAK:-1} != 0 ]]; then mode_args+=(--half-peak); fi
  "$TARGET_DIR/release/tcc-bench" "$mode" "${bench_args[@]}" "${mode_args[@]}" \
    --out "$ROOT/target/bench/$mode.json" "$@" || status=$?
done
exit "$status"
