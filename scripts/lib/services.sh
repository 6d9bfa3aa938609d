# shellcheck shell=bash
# Shared by scripts/up.sh, scripts/down.sh and scripts/dtmcli_check.sh: the service table
# (scripts/services.txt) and the bookkeeping of processes started by up.sh.
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
