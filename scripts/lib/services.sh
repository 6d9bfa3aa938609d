# shellcheck shell=bash
# Shared by scripts/up.sh, scripts/down.sh and the checks that start a private system
# (scripts/dtmcli_check.sh, scripts/dtmrs_check.sh, scripts/fuzz_api.sh, ...):
# the service table (scripts/services.txt), the bookkeeping of processes started by up.sh, and
# a private copy of the whole system for a check (svc_start_private).
#
#   source "scripts/lib/services.sh"
#   svc_load                 # reads scripts/services.txt
#   svc_select "$@"          # validates names into SELECTED (all services when none given)
#   svc_port trans-out       # 8081 + PORT_OFFSET
#   svc_db trans-out         # DB_PREFIX + trans_out ("" for app)
#   svc_running trans-out    # true when the pid file names a live trans-out process
#
# Knobs shared by every script (so several copies of the system can run side by side, e.g. the
# dtmcli check beside a demo): RUN_DIR (pid files and logs, default <repo>/target/run),
# PORT_OFFSET (added to every default port, default 0), DB_PREFIX (prepended to every
# database name, default none).

SVC_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SVC_TABLE="$SVC_REPO_ROOT/scripts/services.txt"
RUN_DIR="${RUN_DIR:-$SVC_REPO_ROOT/target/run}"
PORT_OFFSET="${PORT_OFFSET:-0}"
DB_PREFIX="${DB_PREFIX:-}"

declare -a SVC_NAMES=()
declare -a SELECTED=()
declare -A SVC_PORT=() SVC_DB=()

svc_die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

svc_load() {
  local name port db
  [[ $PORT_OFFSET =~ ^[0-9]+$ ]] || svc_die "PORT_OFFSET must be a whole number, got '$PORT_OFFSET'"
  [[ $DB_PREFIX =~ ^[a-z0-9_]*$ ]] || svc_die "DB_PREFIX may only hold a-z, 0-9 and _, got '$DB_PREFIX'"
  SVC_NAMES=()
  while read -r name port db _; do
    [[ -z $name || $name == \#* ]] && continue
    SVC_NAMES+=("$name")
    SVC_PORT[$name]=$port
    SVC_DB[$name]=$db
  done <"$SVC_TABLE"
}

svc_select() {
  local name
  SELECTED=()
  if [[ $# -eq 0 ]]; then
    SELECTED=("${SVC_NAMES[@]}")
    return 0
  fi
  for name in "$@"; do
    [[ -n ${SVC_PORT[$name]:-} ]] || svc_die "unknown service '$name' (known: ${SVC_NAMES[*]})"
    SELECTED+=("$name")
  done
}

svc_port() { echo $((SVC_PORT[$1] + PORT_OFFSET)); }

svc_db() {
  if [[ ${SVC_DB[$1]} == - ]]; then echo ""; else echo "$DB_PREFIX${SVC_DB[$1]}"; fi
}

svc_pid_file() { echo "$RUN_DIR/$1.pid"; }

svc_log_file() { echo "$RUN_DIR/$1.log"; }

# Succeeds when process $1 exists and is not a zombie (where PID 1 does not reap orphans, a
# killed service can linger as a zombie, which kill -0 still reports).
svc_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $stat && $stat != Z* ]]
}

# The pid in the pid file, if that process is alive and is this binary.
svc_pid() {
  local file pid comm
  file=$(svc_pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  svc_alive "$pid" || return 1
  comm=$(ps -o comm= -p "$pid" 2>/dev/null) || return 1
  [[ $(basename "$comm") == "$1" ]] || return 1
  echo "$pid"
}

svc_running() { svc_pid "$1" >/dev/null; }

# Succeeds when something accepts TCP connections on 127.0.0.1:$1.
svc_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets PORT_OFFSET to the first of 10000, 11000, ... 19000 at which all five default ports are
# free, for a private copy of the system beside one started by scripts/up.sh (dtmcli_check.sh,
# fuzz_api.sh). Needs svc_load first.
svc_pick_port_offset() {
  local offset name busy
  for offset in 10000 11000 12000 13000 14000 15000 16000 17000 18000 19000; do
    PORT_OFFSET=$offset
    busy=0
    for name in "${SVC_NAMES[@]}"; do
      if svc_port_busy "$(svc_port "$name")"; then busy=1; fi
    done
    [[ $busy == 0 ]] && return 0
  done
  svc_die "no free port range found for the private system"
}

# Starts a private copy of the whole system for a check (dtmcli_check.sh, fuzz_api.sh), beside
# any system scripts/up.sh started: the caller sets RUN_DIR and DB_PREFIX (and sources
# scripts/lib/pg.sh); this stops leftovers of an interrupted run in that RUN_DIR, picks a free
# PORT_OFFSET, finds or starts Postgres, creates fresh databases, and starts the five binaries
# (scripts/up.sh, log in $RUN_DIR/up.log). On exit everything is stopped and the databases
# dropped (with KEEP=1 the system is left up and the command that stops it printed). Any variable
# the services read (FAULT_INJECTION, ...) passes through from the caller's environment, except
# DTM_URL: a private system uses its own coordinator unless the caller sets SVC_PRIVATE_DTM_URL
# (then up.sh points the AP and the RMs at that server and does not start the coordinator).
svc_start_private() {
  local label=$1 name db
  svc_load
  "$SVC_REPO_ROOT/scripts/down.sh" >/dev/null
  svc_pick_port_offset
  pg_ensure
  SVC_PRIVATE_PG_STARTED=$PG_STARTED_HERE
  SVC_PRIVATE_DATABASES=()
  for name in "${SVC_NAMES[@]}"; do
    db=$(svc_db "$name")
    [[ -n $db ]] && SVC_PRIVATE_DATABASES+=("$db")
  done
  trap svc_stop_private EXIT
  pg_drop_databases "${SVC_PRIVATE_DATABASES[@]}"
  printf '[%s] starting a private system: ports +%s, databases %s, logs in %s\n' \
    "$label" "$PORT_OFFSET" "${SVC_PRIVATE_DATABASES[*]}" "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  local dtm=()
  [[ -n ${SVC_PRIVATE_DTM_URL:-} ]] && dtm=("DTM_URL=$SVC_PRIVATE_DTM_URL")
  if ! env -u DTM_URL "${dtm[@]+"${dtm[@]}"}" "$SVC_REPO_ROOT/scripts/up.sh" >"$RUN_DIR/up.log" 2>&1; then
    cat "$RUN_DIR/up.log" >&2
    svc_die "scripts/up.sh failed for the private system"
  fi
}

# The EXIT trap of svc_start_private. A check that runs more than the five binaries (dtmrs_check.sh:
# the dtmrs server) defines svc_private_on_exit, which is called first, unless KEEP=1.
# shellcheck disable=SC2317 # called by the EXIT trap
svc_stop_private() {
  local rc=$?
  if [[ ${KEEP:-0} == 1 ]]; then
    printf 'KEEP=1: the system is left up; stop it with RUN_DIR=%s PORT_OFFSET=%s DB_PREFIX=%s scripts/down.sh\n' \
      "$RUN_DIR" "$PORT_OFFSET" "$DB_PREFIX"
    exit "$rc"
  fi
  if declare -F svc_private_on_exit >/dev/null; then svc_private_on_exit || true; fi
  "$SVC_REPO_ROOT/scripts/down.sh" >/dev/null || true
  (pg_drop_databases "${SVC_PRIVATE_DATABASES[@]}") || true
  if [[ $SVC_PRIVATE_PG_STARTED == 1 ]]; then (pg_stop_private) || true; fi
  exit "$rc"
}
