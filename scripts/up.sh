#!/usr/bin/env bash
# Usage: scripts/up.sh [name...]
#
# Builds and starts the system locally, in the background: coordinator (TM), trans-out and
# trans-in (the two banks' RMs), stock (RM) and app (AP). With names, only those
# (`scripts/up.sh coordinator`). Services already running (live pid file) are left alone, so
# running it again starts only what is missing. Stop everything with scripts/down.sh.
#
# Postgres: the server at PG_URL (default postgres://postgres@127.0.0.1:5432); if none answers,
# a private throwaway cluster under target/pg/ (see scripts/lib/pg.sh). Each service gets its
# own database, created if missing: DATABASE_URL=$PG_URL/<db>.
#
# Files: target/run/<name>.log (appended), target/run/<name>.pid, target/run/signing-secret,
# target/run/admin-token. Ports and databases: scripts/services.txt.
#
# Environment:
#   PROFILE=release|dev   cargo profile to build and run (default release)
#   SKIP_BUILD=1          do not run cargo build (use the binaries already built)
#   UP_TIMEOUT=120        seconds to wait for every /api/health
#   RUST_LOG=info         passed to every service
#   RUN_DIR, PORT_OFFSET, DB_PREFIX   run a second copy side by side (scripts/lib/services.sh)
#   BRANCH_SIGNING_SECRET the secret the coordinator signs Confirm/Cancel calls with, the AP
#                         derives each gid's token from, and the RMs check both with
#                         (docs/PROTOCOL.md, "Signed branch calls"). Default: a random one
#                         generated once per RUN_DIR into $RUN_DIR/signing-secret (mode 600) and
#                         reused on later runs, so restarted services keep agreeing. `off`:
#                         none (demo mode: the RMs accept unsigned Confirm/Cancel calls), for a
#                         coordinator that neither signs nor forwards branch headers (dtmrs 0.13).
#   ADMIN_TOKEN           the bearer token the coordinator's admin actions (retry-now, force-stop)
#                         require. Default: a random one generated once per RUN_DIR into
#                         $RUN_DIR/admin-token (mode 600), so the actions are never open to
#                         whoever reaches the port; read it with `cat target/run/admin-token`.
#   DTM_URL               the coordinator the AP uses (and the RMs check Trys against), e.g.
#                         another DTM-compatible server such as dtmrs or DTM itself. Default: the
#                         bundled coordinator, http://127.0.0.1:36789/api/dtmsvr (+ PORT_OFFSET).
#                         When it names another server, the bundled coordinator is not started
#                         (and not built): nothing would use it.
# Any other variable a service reads (CRON_INTERVAL_MS, FAULT_INJECTION, SEED_ACCOUNTS, ...)
# is passed through from the caller's environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

PROFILE="${PROFILE:-release}"
UP_TIMEOUT="${UP_TIMEOUT:-120}"
case "$PROFILE" in
  release) PROFILE_DIR=release ;;
  dev | debug) PROFILE=dev PROFILE_DIR=debug ;;
  *) PROFILE_DIR=$PROFILE ;;
esac
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE_DIR"

svc_load
svc_select "$@"
mkdir -p "$RUN_DIR"

url_of() { echo "http://127.0.0.1:$(svc_port "$1")"; }

# The coordinator of the AP and the RMs: the caller's DTM_URL, else the bundled one. A DTM_URL
# naming another server (dtmrs, DTM) means the bundled coordinator would serve nobody: it is
# left out. The comparison ignores a trailing slash and reads localhost as 127.0.0.1.
bundled_dtm_url="$(url_of coordinator)/api/dtmsvr"
DTM_URL="${DTM_URL:-$bundled_dtm_url}"
DTM_URL="${DTM_URL%/}"
same_url() { [[ ${1/:\/\/localhost:/://127.0.0.1:} == "${2/:\/\/localhost:/://127.0.0.1:}" ]]; }
if ! same_url "$DTM_URL" "$bundled_dtm_url" && [[ " ${SELECTED[*]} " == *" coordinator "* ]]; then
  echo "coordinator: not started (DTM_URL=$DTM_URL names another coordinator)"
  kept=()
  for name in "${SELECTED[@]}"; do [[ $name == coordinator ]] || kept+=("$name"); done
  SELECTED=("${kept[@]+"${kept[@]}"}")
  if [[ ${#SELECTED[@]} -eq 0 ]]; then exit 0; fi
fi

# Postgres first: without it there is no point in building.
pg_ensure
if [[ $PG_STARTED_HERE == 1 ]]; then
  # down.sh stops the private cluster only if up.sh started it for this RUN_DIR.
  echo "$PG_URL" >"$RUN_DIR/pg.started"
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  build_args=()
  for name in "${SELECTED[@]}"; do build_args+=(--bin "$name"); done
  echo "building (${PROFILE}): ${SELECTED[*]}"
  (cd "$ROOT" && cargo build --profile "$PROFILE" "${build_args[@]}")
fi
databases=()
for name in "${SELECTED[@]}"; do
  db=$(svc_db "$name")
  [[ -n $db ]] && databases+=("$db")
done
if [[ ${#databases[@]} -gt 0 ]]; then
  pg_create_databases "${databases[@]}"
fi

# One secret shared by the coordinator, the RMs and the AP: the caller's, else this RUN_DIR's (created
# on first use: 32 random bytes, hex). `off`: none at all (exported empty, so that no binary
# takes the word for a secret).
if [[ ${BRANCH_SIGNING_SECRET:-} == off ]]; then
  export BRANCH_SIGNING_SECRET=""
  echo "BRANCH_SIGNING_SECRET=off: no signing secret; the RMs accept unsigned Confirm/Cancel calls from anyone (demo mode)"
elif [[ -z ${BRANCH_SIGNING_SECRET:-} ]]; then
  secret_file="$RUN_DIR/signing-secret"
  if [[ ! -s $secret_file ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secret_file")
  fi
  BRANCH_SIGNING_SECRET=$(<"$secret_file")
fi

# The coordinator's admin token: the caller's, else this RUN_DIR's (created on first use, like
# the secret). Never empty: an empty ADMIN_TOKEN leaves force-stop open to anyone.
admin_token_from="the caller's ADMIN_TOKEN"
if [[ -z ${ADMIN_TOKEN:-} ]]; then
  admin_token_file="$RUN_DIR/admin-token"
  if [[ ! -s $admin_token_file ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$admin_token_file")
  fi
  ADMIN_TOKEN=$(<"$admin_token_file")
  admin_token_from="cat $admin_token_file"
fi

# The environment of one service: only the variables the binaries read (see each crate's
# configuration.rs); everything else is inherited. HOST is set because some shells export a
# HOST of their own (the machine's name), and the health checks below use 127.0.0.1.
service_env() {
  local name=$1 db
  echo "HOST=127.0.0.1"
  echo "PORT=$(svc_port "$name")"
  echo "RUST_LOG=${RUST_LOG:-info}"
  db=$(svc_db "$name")
  if [[ -n $db ]]; then echo "DATABASE_URL=$PG_URL/$db"; fi
  # All five: the coordinator signs with it, the RMs check, the AP derives each gid's token.
  echo "BRANCH_SIGNING_SECRET=$BRANCH_SIGNING_SECRET"
  if [[ $name == coordinator ]]; then echo "ADMIN_TOKEN=$ADMIN_TOKEN"; fi
  # The AP's coordinator; the RMs ask it about a Try that carries no gid token.
  if [[ $name != coordinator ]]; then echo "DTM_URL=$DTM_URL"; fi
  if [[ $name == app ]]; then
    echo "TRANS_OUT_URL=$(url_of trans-out)/api"
    echo "TRANS_IN_URL=$(url_of trans-in)/api"
    echo "STOCK_URL=$(url_of stock)/api"
    echo "APP_URL=$(url_of app)/api"
  fi
}

for name in "${SELECTED[@]}"; do
  if pid=$(svc_pid "$name"); then
    echo "$name: already running (pid $pid)"
    continue
  fi
  rm -f "$(svc_pid_file "$name")"
  bin="$BIN_DIR/$name"
  [[ -x $bin ]] || svc_die "$bin not found; build it first (run without SKIP_BUILD)"
  port=$(svc_port "$name")
  if svc_port_busy "$port"; then
    svc_die "$name: port $port is already in use by a process up.sh did not start from $RUN_DIR (stop it, or use PORT_OFFSET)"
  fi
  log=$(svc_log_file "$name")
  mapfile -t env_vars < <(service_env "$name")
  # Logged without any password of PG_URL, nor the signing secret, nor the admin token.
  printf '==== %s: started by scripts/up.sh with %s\n' "$(date -u +%FT%TZ)" \
    "$(sed -E -e 's#(://[^:/@ ]+):[^@ ]*@#\1:***@#g' -e 's#((BRANCH_SIGNING_SECRET|ADMIN_TOKEN)=)[^ ]*#\1***#g' <<<"${env_vars[*]}")" >>"$log"
  # env then the binary both exec, so $! is the service's own pid.
  nohup env "${env_vars[@]}" "$bin" >>"$log" 2>&1 </dev/null &
  echo $! >"$(svc_pid_file "$name")"
  echo "$name: starting (pid $!, log $log)"
done

# Polls every /api/health until all answer 200, or one process dies, or the deadline passes.
deadline=$((SECONDS + UP_TIMEOUT))
pending=("${SELECTED[@]}")
while [[ ${#pending[@]} -gt 0 ]]; do
  still=()
  for name in "${pending[@]}"; do
    if ! svc_running "$name"; then
      echo "error: $name exited during start; last lines of $(svc_log_file "$name"):" >&2
      tail -n 30 "$(svc_log_file "$name")" >&2 || true
      rm -f "$(svc_pid_file "$name")"
      exit 1
    fi
    if ! curl -fsS -o /dev/null --max-time 2 "$(url_of "$name")/api/health" 2>/dev/null; then
      still+=("$name")
    fi
  done
  pending=("${still[@]+"${still[@]}"}")
  [[ ${#pending[@]} -eq 0 ]] && break
  if ((SECONDS >= deadline)); then
    echo "error: no healthy answer within ${UP_TIMEOUT}s from: ${pending[*]} (logs in $RUN_DIR)" >&2
    for name in "${pending[@]}"; do
      echo "--- $(svc_log_file "$name") (last lines)" >&2
      tail -n 15 "$(svc_log_file "$name")" >&2 || true
    done
    exit 1
  fi
  sleep 0.3
done

echo
echo "up (Postgres: $PG_URL):"
for name in "${SELECTED[@]}"; do
  printf '  %-12s %-28s pid %-8s %s\n' "$name" "$(url_of "$name")" "$(svc_pid "$name")" "$(svc_log_file "$name")"
done
if ! same_url "$DTM_URL" "$bundled_dtm_url"; then
  echo "  coordinator  not started: the AP uses DTM_URL=$DTM_URL"
fi
if [[ " ${SELECTED[*]} " == *" coordinator "* ]]; then
  echo
  echo "admin actions (retry-now, force-stop) need: Authorization: Bearer <token>, token: $admin_token_from"
fi
if [[ " ${SELECTED[*]} " == *" app "* ]]; then
  echo
  echo "try:  curl -s $(url_of app)/api/fireTcc"
  echo "      curl -s '$DTM_URL/query?gid=<gid>'"
fi
