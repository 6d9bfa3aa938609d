#!/usr/bin/env bash
# Usage: scripts/dtmrs_check.sh
#
# Runs the AP and the RMs of this repository behind another DTM-compatible coordinator, dtmrs
# 0.13.0 (crates.io, a Rust reimplementation of DTM's server), instead of the bundled one, with
# the security settings scripts/up.sh uses by default (a signing secret shared by the AP and the
# RMs), and checks three global transactions:
#   1. fireTcc: the AP answers 200; dtmrs ends the global transaction `succeed` with every
#      Confirm `succeed`; bank A's account is down by the amount, bank B's up by it, and neither
#      has frozen funds (trading_balance) left;
#   2. fireTccRollback: the AP answers 409; dtmrs ends it `failed` with every Cancel `succeed`;
#      both balances unchanged and nothing left frozen;
#   3. fireTccNested, which dtmrs 0.13 cannot run (it refuses the child branch id `0201`: its
#      branch ids must be the sequence numbers 01, 02, ...; docs/PROTOCOL.md, "Behind another
#      DTM-compatible coordinator"): the AP answers 409, dtmrs ends it `failed`, the parent
#      branches are cancelled and nothing moved or stays frozen.
# Exits 1, with the logs' last lines, on any mismatch.
#
# How:
#   - dtmrs is installed once with `cargo install dtmrs --version 0.13.0 --locked` into
#     target/dtmrs/ (its build in target/dtmrs-build/, so CI can cache it), reused afterwards;
#   - dtmrs runs on a free 127.0.0.1 port with a throwaway SQLite database
#     (target/dtmrs-run/dtmrs.db), log target/dtmrs-run/dtmrs.log;
#   - the four other binaries run as a private copy of the system (scripts/lib/services.sh:
#     Postgres found or started as scripts/up.sh does, fresh databases dtmrs_*, ports = defaults
#     + an offset, logs in target/dtmrs-run/), with DTM_URL pointing at dtmrs, so scripts/up.sh
#     starts no coordinator of its own;
#   - on exit dtmrs and the binaries are stopped and the databases dropped (KEEP=1 keeps them).
#
# dtmrs 0.13 neither signs the Confirm/Cancel calls nor forwards the gid token the AP puts into
# branch_headers, so they reach the RMs with neither. With the default settings (a signing secret,
# TRY_VERIFICATION=coordinator) the RMs accept such a call only when their coordinator, dtmrs
# itself, reports the op due: the gid submitted/succeed for a Confirm, aborting/failed for a
# Cancel, the branch registered (docs/PROTOCOL.md, "Signed branch calls"). Any 401 of an RM for
# a gid of the check fails it, with the RM's log line. BRANCH_SIGNING_SECRET=off runs everything
# without a secret (demo mode); TRY_VERIFICATION=token makes the RMs refuse every such call (the
# check then fails).
#
# Environment: PROFILE=release|dev (default release; scripts/test.sh uses dev), SKIP_BUILD=1,
# KEEP=1, DTMRS_BIN (a dtmrs 0.13.0 binary to use instead of installing one), DTMRS_ROOT (default
# target/dtmrs), DTMRS_BUILD_DIR (default target/dtmrs-build), WAIT_FINAL (seconds to wait for
# a final status, default 30), AMOUNT (minor units, default 25).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUN_DIR="${DTMRS_RUN_DIR:-$ROOT/target/dtmrs-run}"
export DB_PREFIX=dtmrs_
export PORT_OFFSET=0
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source=scripts/lib/http.sh
source "$ROOT/scripts/lib/http.sh"

DTMRS_VERSION=0.13.0
DTMRS_ROOT="${DTMRS_ROOT:-$ROOT/target/dtmrs}"
DTMRS_BUILD_DIR="${DTMRS_BUILD_DIR:-$ROOT/target/dtmrs-build}"
WAIT_FINAL="${WAIT_FINAL:-30}"
AMOUNT="${AMOUNT:-25}"
ACCOUNT=1
started=$SECONDS

log() { printf '[dtmrs-check] %s\n' "$*"; }

# 1. dtmrs itself: installed once (cargo install keeps .crates.toml in its root, naming the
#    installed version), never committed.
if [[ -n ${DTMRS_BIN:-} ]]; then
  [[ -x $DTMRS_BIN ]] || svc_die "DTMRS_BIN=$DTMRS_BIN is not an executable"
elif [[ -x $DTMRS_ROOT/bin/dtmrs ]] && grep -qF "\"dtmrs $DTMRS_VERSION " "$DTMRS_ROOT/.crates.toml" 2>/dev/null; then
  DTMRS_BIN=$DTMRS_ROOT/bin/dtmrs
else
  log "installing dtmrs $DTMRS_VERSION from crates.io into $DTMRS_ROOT (once; several minutes on two cores)"
  install_start=$SECONDS
  CARGO_TARGET_DIR="$DTMRS_BUILD_DIR" cargo install dtmrs --version "$DTMRS_VERSION" --locked \
    --root "$DTMRS_ROOT" --force
  log "dtmrs installed in $((SECONDS - install_start)) s"
  DTMRS_BIN=$DTMRS_ROOT/bin/dtmrs
fi

# 2. dtmrs on a free loopback port, on a fresh SQLite file. A dtmrs left by an interrupted run
#    in this RUN_DIR is stopped first.
mkdir -p "$RUN_DIR"
DTMRS_PID_FILE="$RUN_DIR/dtmrs.pid"
DTMRS_LOG="$RUN_DIR/dtmrs.log"
stop_dtmrs() {
  local pid
  [[ -f $DTMRS_PID_FILE ]] || return 0
  pid=$(<"$DTMRS_PID_FILE")
  if [[ $pid =~ ^[0-9]+$ ]] && svc_alive "$pid" && [[ $(ps -o comm= -p "$pid" 2>/dev/null) == dtmrs ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do svc_alive "$pid" || break; sleep 0.1; done
    if svc_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$DTMRS_PID_FILE"
}
# Called by svc_stop_private (scripts/lib/services.sh) on exit.
# shellcheck disable=SC2317 # called by the EXIT trap
svc_private_on_exit() { stop_dtmrs; }
stop_dtmrs
trap stop_dtmrs EXIT

dtmrs_port=
for port in $(seq 37100 37199); do
  if ! svc_port_busy "$port"; then dtmrs_port=$port && break; fi
done
[[ -n $dtmrs_port ]] || svc_die "no free port in 37100-37199 for dtmrs"
rm -f "$RUN_DIR"/dtmrs.db*
DTM="http://127.0.0.1:$dtmrs_port/api/dtmsvr"
printf '==== %s: started by scripts/dtmrs_check.sh on 127.0.0.1:%s\n' "$(date -u +%FT%TZ)" "$dtmrs_port" >>"$DTMRS_LOG"
# DTMRS_TICK_MS: its worker polls every 200 ms instead of 1 s (a Cancel after abort waits for
# it); DTMRS_GRPC_ADDR: only used by a build with the grpc feature, kept on loopback anyway.
DTMRS_DB="sqlite:$RUN_DIR/dtmrs.db" DTMRS_ADDR="127.0.0.1:$dtmrs_port" DTMRS_GRPC_ADDR=127.0.0.1:0 \
  DTMRS_TICK_MS=200 RUST_LOG=info nohup "$DTMRS_BIN" >>"$DTMRS_LOG" 2>&1 </dev/null &
echo $! >"$DTMRS_PID_FILE"
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$dtmrs_port/health" 2>/dev/null && break
  svc_alive "$(<"$DTMRS_PID_FILE")" || { tail -n 20 "$DTMRS_LOG" >&2; svc_die "dtmrs exited during start"; }
  sleep 0.1
done
curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$dtmrs_port/health" ||
  svc_die "dtmrs does not answer on 127.0.0.1:$dtmrs_port (log $DTMRS_LOG)"
log "dtmrs $DTMRS_VERSION ($DTMRS_BIN) on $DTM, pid $(<"$DTMRS_PID_FILE"), log $DTMRS_LOG"

# 3. The AP and the RMs, pointed at dtmrs (scripts/up.sh leaves the coordinator out).
SVC_PRIVATE_DTM_URL=$DTM svc_start_private dtmrs-check
APP="http://127.0.0.1:$(svc_port app)/api"
BANK_A="http://127.0.0.1:$(svc_port trans-out)/api"
BANK_B="http://127.0.0.1:$(svc_port trans-in)/api"
if [[ ${BRANCH_SIGNING_SECRET:-} == off ]]; then
  log "AP $APP and RMs started with DTM_URL=$DTM and no signing secret (BRANCH_SIGNING_SECRET=off)"
else
  secret_from=$RUN_DIR/signing-secret
  [[ -n ${BRANCH_SIGNING_SECRET:-} ]] && secret_from="the caller's BRANCH_SIGNING_SECRET"
  log "AP $APP and RMs started with DTM_URL=$DTM, a signing secret ($secret_from) and TRY_VERIFICATION=${TRY_VERIFICATION:-coordinator}"
fi

# 4. The check.
# "<balance> <trading_balance>" of account $2 in the bank at $1.
account() {
  local body
  body=$(curl -fsS --max-time 10 "$1/accounts/$2") || return 1
  echo "$(json_get balance <<<"$body") $(json_get trading_balance <<<"$body")"
}

# dtmrs's record of gid $1: "<status> | <branch_id> <op> <status>, ...".
dtmrs_record() {
  curl -fsS --max-time 10 "$DTM/query?gid=$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r.get("status", "?"), "|", ", ".join("%s %s %s" % (b.get("branch_id"), b.get("op"), b.get("status")) for b in r.get("branches", [])))'
}

# The first line of the RMs' logs where one refused a call of gid $1 with 401 (a Confirm or
# Cancel neither signed nor carrying the gid token that its coordinator did not vouch for);
# nothing when none did.
refused_401() {
  grep -h -F "gid=$1 " "$(svc_log_file trans-out)" "$(svc_log_file trans-in)" 2>/dev/null |
    grep -m1 -F "answered 401" || true
}

# Polls dtmrs until gid $1 is succeed or failed (or WAIT_FINAL passes, or an RM refused one of
# its calls with 401: dtmrs would retry that forever); prints its record.
wait_final() {
  local record deadline=$((SECONDS + WAIT_FINAL))
  while :; do
    record=$(dtmrs_record "$1") || record="(query failed)"
    case $record in succeed* | failed*) break ;; esac
    ((SECONDS < deadline)) || break
    [[ -z $(refused_401 "$1") ]] || break
    sleep 0.2
  done
  echo "$record"
}

FAILED=()
show_logs() {
  local name
  echo "--- last lines of $DTMRS_LOG" >&2
  tail -n 20 "$DTMRS_LOG" >&2 || true
  for name in app trans-out trans-in; do
    echo "--- last lines of $(svc_log_file "$name")" >&2
    tail -n 20 "$(svc_log_file "$name")" >&2 || true
  done
}

# Fires scenario $1, expects HTTP $2, final status $3, balance moves $4 (bank A) and $5 (bank B),
# and the text $6 (if given) in the AP's answer.
fire() {
  local scenario=$1 want_http=$2 want_status=$3 want_a=$4 want_b=$5 want_text=${6:-}
  local a0 b0 a1 b1 out code body gid record refused problems=()
  if ! a0=$(account "$BANK_A" "$ACCOUNT") || ! b0=$(account "$BANK_B" "$ACCOUNT"); then
    FAILED+=("$scenario: the banks' accounts cannot be read")
    return
  fi
  out=$(curl -sS --max-time 60 -w '\n%{http_code}' "$APP/$scenario?amount=$AMOUNT&from=$ACCOUNT&to=$ACCOUNT") ||
    { FAILED+=("$scenario: the AP did not answer"); return; }
  code=${out##*$'\n'}
  body=${out%$'\n'*}
  gid=$(json_get gid <<<"$body" 2>/dev/null || true)
  log "$scenario: AP answered $code $body"
  [[ $code == "$want_http" ]] || problems+=("the AP answered $code, expected $want_http")
  [[ $body == *"$want_text"* ]] || problems+=("the AP's answer does not say '$want_text'")
  if [[ -n $gid ]]; then
    record=$(wait_final "$gid")
    log "$scenario: dtmrs query?gid=$gid: $record"
    [[ $record == "$want_status |"* ]] || problems+=("dtmrs reports '${record%% |*}', expected $want_status")
    refused=$(refused_401 "$gid")
    [[ -z $refused ]] || problems+=("an RM refused dtmrs's call with 401 (dtmrs neither signs Confirm/Cancel nor forwards the gid token of branch_headers, and the RM's coordinator did not vouch for it): ${refused#*] }")
    # Every registered Confirm (on success) or Cancel (on rollback) called, and succeeded.
    local op=confirm
    [[ $want_status == failed ]] && op=cancel
    [[ $record == *" $op succeed"* && $record != *"$op prepared"* && $record != *"$op failed"* ]] ||
      problems+=("not every $op succeeded: $record")
  else
    problems+=("the AP's answer names no gid")
  fi
  if ! a1=$(account "$BANK_A" "$ACCOUNT") || ! b1=$(account "$BANK_B" "$ACCOUNT"); then
    FAILED+=("$scenario: the banks' accounts cannot be read afterwards")
    return
  fi
  log "$scenario: bank A balance trading_balance $a0 -> $a1; bank B $b0 -> $b1"
  (( ${a1% *} - ${a0% *} == want_a )) || problems+=("bank A's balance moved by $(( ${a1% *} - ${a0% *} )), expected $want_a")
  (( ${b1% *} - ${b0% *} == want_b )) || problems+=("bank B's balance moved by $(( ${b1% *} - ${b0% *} )), expected $want_b")
  [[ ${a1#* } == "${a0#* }" && ${b1#* } == "${b0#* }" ]] ||
    problems+=("frozen funds left: trading_balance A ${a0#* } -> ${a1#* }, B ${b0#* } -> ${b1#* }")
  if [[ ${#problems[@]} -gt 0 ]]; then
    local p
    for p in "${problems[@]}"; do FAILED+=("$scenario: $p"); done
  else
    log "$scenario: ok"
  fi
}

fire fireTcc 200 succeed "-$AMOUNT" "$AMOUNT"
fire fireTccRollback 409 failed 0 0
fire fireTccNested 409 failed 0 0 "refused registerBranch (HTTP 400)"

if [[ ${#FAILED[@]} -gt 0 ]]; then
  show_logs
  log "FAILED behind dtmrs $DTMRS_VERSION:"
  printf '  - %s\n' "${FAILED[@]}" >&2
  exit 1
fi
log "passed in $((SECONDS - started)) s: behind dtmrs $DTMRS_VERSION fireTcc committed, fireTccRollback rolled back, fireTccNested was refused cleanly"
