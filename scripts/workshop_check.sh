#!/usr/bin/env bash
# Usage: scripts/workshop_check.sh [exercise...]
#
# docs/WORKSHOP.md run as a participant runs it, so that the workshop cannot rot: for each
# exercise (`1` to `12`, and `follow` for "Following one transaction across all five logs"),
# the `sh` blocks under its heading are run as written against a private copy of the system,
# then what its text says will be seen is checked: statuses, balances moved (each demo's own
# `=> as expected` line, and no `UNEXPECTED`), the states printed at the step-through stops, log
# lines carrying the gid, barrier rows, diagram lines. After them, `scripts/demo.sh reset` must
# bring back the seeded state (balances, no transaction, no barrier row). With arguments, only
# those exercises (`setup`, `1` ... `12`, `follow`).
#
# The private copy: scripts/up.sh with its own RUN_DIR (target/workshop-run), databases
# (workshop_*) and ports (defaults + a free offset), started fresh and stopped and dropped on exit
# (KEEP=1 leaves it up). The blocks' `localhost:<port>` and `target/run/` are rewritten to that
# copy's ports and run directory. LEASE_SECONDS is 12 (exercise 12 waits for a lease to expire;
# the room's default is 30). At the end, the time each exercise took.
#
# Environment: PROFILE (default dev, as scripts/test.sh runs it), KEEP=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUN_DIR="$ROOT/target/workshop-run" DB_PREFIX=workshop_ PORT_OFFSET=0
export PROFILE="${PROFILE:-dev}" LEASE_SECONDS=12
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source=scripts/lib/http.sh
source "$ROOT/scripts/lib/http.sh"

DOC="$ROOT/docs/WORKSHOP.md"
EXERCISES=(setup 1 2 3 4 5 6 7 8 9 10 11 12 follow)
say() { printf '[workshop] %s\n' "$*"; }
FAILURES=0
fail() {
  say "FAILED: exercise $CURRENT: $*" >&2
  FAILURES=$((FAILURES + 1))
}

# The `sh` blocks of exercise $1 (`## N.` up to the next `## `; `setup`: "Setup (once)";
# `follow`: "Following one transaction"), one after the other.
blocks_of() {
  local heading="## $1."
  [[ $1 == setup ]] && heading="## Setup"
  [[ $1 == follow ]] && heading="## Following one transaction"
  awk -v heading="$heading" '
    index($0, heading) == 1 { seen = 1; next }
    seen && /^## / { exit }
    seen && !inside && /^```sh$/ { inside = 1; next }
    inside && /^```$/ { inside = 0; next }
    inside { print }' "$DOC"
}

# A block rewritten for the private copy: its ports and run directory.
private_copy_of() {
  local text name port
  text=$(cat)
  for name in "${SVC_NAMES[@]}"; do
    port=${SVC_PORT[$name]}
    text=${text//localhost:$port/127.0.0.1:$((port + PORT_OFFSET))}
    text=${text//127.0.0.1:$port/127.0.0.1:$((port + PORT_OFFSET))}
  done
  printf '%s\n' "${text//target\/run\//$RUN_DIR/}"
}

# Checks on the output of the exercise being checked ($OUT):
seen() { grep -qF -- "$1" "$OUT" || fail "the output has no line with: $1"; }
not_seen() { ! grep -qF -- "$1" "$OUT" || fail "the output has: $1"; }
# The line after the first line containing $1 that contains $2 (a stop's state).
at_stop() {
  awk -v stop="$1" -v want="$2" 'index($0, stop) { on = 1; next } on && /^--- / { exit }
    on && index($0, want) { found = 1; exit } END { exit !found }' "$OUT" ||
    fail "at '$1' no line with: $2"
}
# The first gid the output names (a step-through's `gid: ...`, or an AP answer's "gid").
first_gid() { grep -oE '(^gid: |"gid": ")[A-Za-z0-9_.:-]+' "$OUT" | head -1 | sed -E 's/^(gid: |"gid": ")//'; }
# Waits up to 10 s for binary $1's log to have a line about gid $2 containing $3.
logged() {
  local log="$RUN_DIR/$1.log" deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    grep -F "gid=$2 " "$log" | grep -qF -- "$3" && return 0
    sleep 0.2
  done
  fail "$1's log has no line about gid $2 with: $3"
}
# How many lines of binary $1's log about gid $2 contain $3.
log_count() { grep -F "gid=$2 " "$RUN_DIR/$1.log" | grep -cF -- "$3" || true; }
# The diagram of gid $1 has the lines $2... in that order (other lines between them).
diagram_in_order() {
  local gid=$1 diagram line rest
  shift
  diagram=$(http GET "$(svc_url coordinator)/api/admin/transactions/$gid/diagram" | cut -d' ' -f2-)
  rest=$diagram
  for line in "$@"; do
    [[ $rest == *"$line"* ]] || { fail "the diagram of $gid lacks, in order: $line"; return 0; }
    rest=${rest#*"$line"}
  done
}
svc_url() { echo "http://127.0.0.1:$(svc_port "$1")"; }

# The seeded state, as the banks start it: account 1 with 1,000,000 minor units, nothing frozen.
SEEDED="1000000 0"

check_setup() {
  seen "success "
  seen "started again: bank A account 1 = $SEEDED, bank B account 1 = $SEEDED"
}

# After every exercise moved money and left transactions behind, `scripts/demo.sh reset` (the
# setup's command) brings back the seeded state: balances, no transaction, no barrier row.
check_reset_after_use() {
  CURRENT=reset
  OUT="$RUN_DIR/reset.out"
  local used_gid
  used_gid=$(grep -ohE '^gid: [A-Za-z0-9_.:-]+' "$RUN_DIR"/exercise-1.out | head -1 | cut -d' ' -f2)
  "$ROOT/scripts/demo.sh" reset >"$OUT" 2>&1 || fail "scripts/demo.sh reset failed: $(tail -n 3 "$OUT")"
  seen "started again: bank A account 1 = $SEEDED, bank B account 1 = $SEEDED"
  local list view
  list=$(http GET "$(svc_url coordinator)/api/admin/transactions")
  [[ $list == *'"transactions":[]'* ]] || fail "transactions left after the reset: ${list:0:200}"
  if [[ -n $used_gid ]]; then
    view=$(http GET "$(svc_url trans-out)/api/branches/$used_gid")
    [[ $view == *'"holds":[]'* && $view == *'"barrier":[]'* ]] || fail "TransOut still knows $used_gid: $view"
  fi
}

check_1() {
  local gid
  gid=$(first_gid)
  at_stop "stop 1:" "status=prepared"
  at_stop "stop 1:" "bank A holds: 01 out 30 tentative"
  at_stop "stop 1:" "bank A barrier: 01 try (by try)"
  at_stop "stop 1:" "bank B holds: none"
  at_stop "stop 2:" "pending_in=30"
  at_stop "stop 3:" "status=submitted owner=localhost"
  at_stop "stop 3:" "bank B holds: 02 in 30 tentative"
  at_stop "stop 4:" "bank B holds: 02 in 30 confirmed"
  at_stop "stop 4:" "bank A holds: 01 out 30 tentative"
  at_stop "settled: succeed" "bank A holds: 01 out 30 confirmed"
  seen "=> as expected: global succeed, bank A -30, bank B +30"
  diagram_in_order "$gid" "AP->>TM: prepare" "registerBranch 01" "Try 01" "registerBranch 02" \
    "Try 02" "AP->>TM: submit" "Confirm 02" "Confirm 01" "submitted -> succeed"
  local metrics
  metrics=$(http GET "$(svc_url coordinator)/api/metrics")
  [[ $metrics == *'tcc_transactions_finished_total{status="succeed",trans_type="tcc"}'* ]] ||
    fail "no tcc_transactions_finished_total{status=\"succeed\",trans_type=\"tcc\"} in the metrics"
}

check_2() {
  local gid
  gid=$(first_gid)
  at_stop "stop 1:" "bank A holds: 01 out 30 tentative"
  at_stop "stop 2:" "status=aborting"
  at_stop "stop 2:" "bank B barrier: none"
  at_stop "stop 3:" "bank B barrier: 02 try (by cancel); 02 cancel (by cancel)"
  at_stop "stop 3:" "bank A holds: 01 out 30 tentative"
  seen "AP answered 409"
  seen "=> as expected: global failed, bank A 0, bank B 0"
  logged trans-in "$gid" "TransInCancel: empty_compensation"
  diagram_in_order "$gid" "Try 02" "abort" "Cancel 02" "Cancel 01"
}

check_3() {
  local gid
  gid=$(first_gid)
  seen '"status": "submitted"'
  seen "=> as expected: global succeed"
  logged coordinator "$gid" "ALERT"
  logged coordinator "$gid" "retrying in"
  logged trans-in "$gid" "fault error:3, call 1 of 3: injected"
  logged trans-in "$gid" "fault error:3, call 4 of 3: spent, none injected"
  [[ $(log_count trans-in "$gid" "TransInConfirm: applied") == 1 ]] || fail "TransIn applied its Confirm more or less than once"
}

check_4() {
  seen "=> as expected"
}

check_5() {
  seen "=> as expected: global succeed"
  seen "attempts=3"
}

check_6() {
  local gid
  gid=$(first_gid)
  seen "no answer within the request timeout (1 s)"
  seen "=> as expected: global failed, bank A 0, bank B 0"
  logged trans-in "$gid" "TransInTry: hanging"
}

check_7() {
  local gid view
  gid=$(first_gid)
  seen "=> as expected: global failed"
  logged trans-out "$gid" "TransOutCancel: empty_compensation"
  logged trans-out "$gid" "TransOutTry: hanging"
  view=$(http GET "$(svc_url trans-out)/api/branches/$gid")
  [[ $view == *'"op":"try","reason":"cancel"'* && $view == *'"holds":[]'* ]] ||
    fail "TransOut's view of $gid is not a try row written by the Cancel and no hold: $view"
}

check_8() {
  seen "=> as expected: two Trys froze 30 once, two Cancels released it once"
  seen "this time the Cancel won"
  seen "this time the Try won"
  not_seen "UNEXPECTED"
  [[ $(grep -c "=> as expected: global failed, balance unchanged" "$OUT") == 3 ]] || fail "not every race ended as expected"
  local manual
  manual=$(grep -oE '^gid: manual-[0-9]+' "$OUT" | cut -d' ' -f2)
  [[ -n $manual ]] || { fail "the block by hand printed no gid"; return 0; }
  logged trans-out "$manual" "TransOutTry: applied"
  logged trans-out "$manual" "TransOutTry: duplicate"
  [[ $(log_count trans-out "$manual" "TransOutTry: applied") == 1 ]] || fail "the Try by hand applied more than once"
}

check_9() {
  seen "prepared until its timeout_time"
  grep -q "status=prepared .* timeout_time=20" "$OUT" || fail "no timeout_time shown while prepared"
  seen "Timeout after 3 seconds"
  seen "=> as expected: the coordinator timed the abandoned transaction out"
}

check_10() {
  grep -A1 "just before the kill" "$OUT" | grep -q "owner=localhost" || fail "no lease shown before the kill"
  [[ $(grep -c "=> as expected" "$OUT") == 2 ]] || fail "not both crashes ended as expected"
  grep -q "released .* leases" "$RUN_DIR/coordinator.log" || fail "the restarted coordinator did not say it released its leases"
}

check_11() {
  seen "=> as expected"
  seen "connection refused or unreachable"
}

check_12() {
  seen "=> as expected"
}

check_follow() {
  local name
  for name in app coordinator stock trans-out trans-in; do
    grep -qE "^$name +\[" "$OUT" || fail "no line from $name"
  done
  seen "committed, status=succeed"
}

# Runs exercise $1's blocks and checks them; records its time.
run_exercise() {
  CURRENT=$1
  local script started=$SECONDS before=$FAILURES
  script=$(blocks_of "$1" | private_copy_of)
  [[ -n ${script//[[:space:]]/} ]] || { fail "no sh block under its heading"; return 0; }
  OUT="$RUN_DIR/exercise-$1.out"
  say "exercise $1: running its blocks"
  # As a participant's shell runs them: one command after the other, without `set -e`; a demo
  # that fails says `error: ...` or `UNEXPECTED`, and exits non-zero as the block's last command.
  if ! (cd "$ROOT" && bash -c "$script") >"$OUT" 2>&1; then
    fail "its last command failed (its output: $OUT)"
  fi
  ! grep -q '^error: ' "$OUT" || fail "a command stopped with an error: $(grep -m1 '^error: ' "$OUT")"
  not_seen "UNEXPECTED"
  "check_$1"
  TIMES+=("$1 $((SECONDS - started))")
  if ((FAILURES > before)); then
    tail -n 40 "$OUT" | sed 's/^/  | /' >&2
  else
    say "exercise $1: as the text says ($((SECONDS - started)) s)"
  fi
}

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=("${EXERCISES[@]}")
for e in "${wanted[@]}"; do
  [[ " ${EXERCISES[*]} " == *" $e "* ]] || { say "unknown exercise '$e' (known: ${EXERCISES[*]})"; exit 2; }
done
started=$SECONDS
svc_start_private workshop
export SKIP_BUILD=1 PORT_OFFSET
TIMES=()
for e in "${wanted[@]}"; do run_exercise "$e"; done
if [[ " ${wanted[*]} " == *" 1 "* ]]; then
  check_reset_after_use
  say "reset after use: the seeded state is back"
fi
say "time per exercise (s): ${TIMES[*]}"
if ((FAILURES > 0)); then
  say "$FAILURES check(s) failed"
  exit 1
fi
say "passed: every exercise runs as written and shows what its text says ($((SECONDS - started)) s)"
