#!/usr/bin/env bash
# Usage: KEEP_UP=1 scripts/bench.sh transfer; scripts/bench_drain.sh [N]
#
# The restart-backlog measurement (docs/BENCHMARKS.md): does a coordinator that
# restarts with a backlog of submitted transactions drain it at least at the steady-state rate?
# Runs against the system `scripts/bench.sh` left up (KEEP_UP=1: its private Postgres, ports
# +1000, target/bench-run):
#   1. fires N transfers (default 3000, 32 at a time) with wait_result=false,
#      trans_in_confirm=error:1 and retry_interval=600: each one's first Confirm on TransIn fails
#      and is rescheduled minutes ahead, so all N pile up in `submitted`;
#   2. SIGKILLs the coordinator, makes the whole backlog due now (the state a long outage
#      leaves: every retry overdue), starts the coordinator again (scripts/up.sh);
#   3. reports how long after the restart 99.9% of the backlog had finished (from the
#      transactions' `finish_time`), and that rate. A straggler or two can take longer on
#      purpose: a transaction killed between recording its Confirm attempt and sending it meets
#      the injected error on its next attempt and is rescheduled by its backoff.
# Compare the rate with the transfer mode's best point (scripts/bench.sh transfer).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N=${1:-3000}
export PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:55999}"
export PORT_OFFSET="${PORT_OFFSET:-1000}"
export RUN_DIR="${RUN_DIR:-$ROOT/target/bench-run}"
export RUST_LOG="${RUST_LOG:-warn}" FIRE_RATE_LIMIT_PER_SECOND=0 DB_POOL_SIZE="${DB_POOL_SIZE:-32}"
export SEED_ACCOUNTS="${SEED_ACCOUNTS:-1000}" SKIP_BUILD=1 PROFILE=release
app="http://127.0.0.1:$((8080 + PORT_OFFSET))/api"
sql() { psql "$PG_URL/coordinator" -XqAt -c "$1"; }
[[ -s $RUN_DIR/coordinator.pid ]] || {
  echo "no system in $RUN_DIR: run KEEP_UP=1 scripts/bench.sh transfer first" >&2
  exit 1
}

echo "[drain] firing $N transfers whose first TransIn Confirm fails (wait_result=false)"
since=$(sql "SELECT now()")
# The single quotes are the inner shell's script: $0 is the AP's URL, $i its own variable.
# shellcheck disable=SC2016
seq 1 "$N" | xargs -P 32 -I{} sh -c \
  'i={}; curl -s -o /dev/null -w "%{http_code}\n" "$0/fireTcc?amount=1&from=$((i % 1000 + 1))&to=$(((i * 7) % 1000 + 1))&wait_result=false&retry_interval=600&trans_in_confirm=error:1"' \
  "$app" | sort | uniq -c
sleep 2
kill -9 "$(cat "$RUN_DIR/coordinator.pid")"
sleep 1
backlog=$(sql "SELECT count(*) FROM trans_global WHERE status = 'submitted' AND create_time >= '$since'")
sql "UPDATE trans_global SET next_cron_time = now() WHERE status = 'submitted'" >/dev/null
echo "[drain] coordinator killed with $backlog transactions submitted; restarting it"
restart=$(sql "SELECT now()")
"$ROOT/scripts/up.sh" coordinator >/dev/null
# Wait until at most 0.1% is left (stragglers are rescheduled by their backoff, see above).
while (($(sql "SELECT count(*) FROM trans_global WHERE status = 'submitted' AND create_time >= '$since'") * 1000 > backlog)); do
  sleep 0.2
done
sql "WITH done AS (SELECT finish_time FROM trans_global
                   WHERE create_time >= '$since' AND finish_time >= '$restart')
     SELECT format('[drain] %s of %s finished; 99.9%% of the backlog within %s s of the restart: %s tx/s',
                   count(*), $backlog, round(s::numeric, 2), round(($backlog * 0.999 / s)::numeric))
     FROM done, LATERAL (SELECT extract(epoch FROM percentile_disc(0.999) WITHIN GROUP
                         (ORDER BY finish_time) - timestamptz '$restart') AS s FROM done) p
     GROUP BY s"
