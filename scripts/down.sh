#!/usr/bin/env bash
# Usage: scripts/down.sh [name...]
#
# Stops what scripts/up.sh started (all services, or the named ones): SIGTERM, then SIGKILL
# for any process still alive after DOWN_TIMEOUT seconds (default 10), and removes the pid
# files. When nothing started by up.sh is left running and up.sh had started the private
# Postgres cluster (target/pg/), that cluster is stopped too. A Postgres server that up.sh
# found running is never touched. Honours RUN_DIR, like up.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

DOWN_TIMEOUT="${DOWN_TIMEOUT:-10}"

svc_load
svc_select "$@"

# Signal everything first, then wait, so the services stop in parallel.
declare -A pids=()
for name in "${SELECTED[@]}"; do
  if pid=$(svc_pid "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    pids[$name]=$pid
  else
    rm -f "$(svc_pid_file "$name")"
  fi
done

deadline=$((SECONDS + DOWN_TIMEOUT))
for name in "${SELECTED[@]}"; do
  [[ -n ${pids[$name]:-} ]] || continue
  pid=${pids[$name]}
  while svc_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if svc_alive "$pid"; then
    echo "$name: still alive after ${DOWN_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while svc_alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$(svc_pid_file "$name")"
  echo "$name: stopped (pid $pid)"
done

remaining=0
for name in "${SVC_NAMES[@]}"; do
  if svc_running "$name"; then remaining=$((remaining + 1)); fi
done
if [[ $remaining -eq 0 && -f "$RUN_DIR/pg.started" ]]; then
  pg_stop_private
  rm -f "$RUN_DIR/pg.started"
elif [[ $remaining -gt 0 ]]; then
  echo "$remaining service(s) still running"
fi
