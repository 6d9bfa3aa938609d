#!/usr/bin/env bash
# Usage: scripts/demo.sh [scenario...]
#        scripts/demo.sh --list
#
# With the system up (scripts/up.sh), runs TCC scenarios through the AP and prints, for each:
# the balances of the two bank accounts before and after, the AP's answer, the coordinator's
# record of the global transaction (its status and every branch op), and the live sequence
# diagram the coordinator draws from its event log (Mermaid text; the admin page at
# <coordinator>/admin renders it).
# Without arguments it runs the default scenarios (success, then rollback).
#
# Scenarios (add one: a scenario_<name> function, a line in SCENARIOS, a case in run_scenario);
# `scripts/demo.sh --list` prints them all. The failure cases use the AP's fault parameters
# (trans_in_confirm=error:3, ...), which travel in the branch data to the RMs. Scenarios that
# kill a binary (ap-crash, coordinator-crash, rm-down) restart it with scripts/up.sh, so they
# need the system started by scripts/up.sh (pid files in target/run/).
#
# Environment (defaults = scripts/up.sh's ports; the same names the app reads):
#   APP_URL=http://127.0.0.1:8080/api        DTM_URL=http://127.0.0.1:36789/api/dtmsvr
#   TRANS_OUT_URL=http://127.0.0.1:8081/api  TRANS_IN_URL=http://127.0.0.1:8082/api
#   FROM=1 TO=1 AMOUNT=30   accounts (bank A, bank B) and amount in minor units
#   WAIT_FINAL=30           seconds to wait for a global transaction to reach a final status
set -euo pipefail

APP_URL="${APP_URL:-http://127.0.0.1:8080/api}"
DTM_URL="${DTM_URL:-http://127.0.0.1:36789/api/dtmsvr}"
# The coordinator's base URL (its admin API lives beside the DTM one).
TM_URL="${DTM_URL%/api/dtmsvr}"
TRANS_OUT_URL="${TRANS_OUT_URL:-http://127.0.0.1:8081/api}"
TRANS_IN_URL="${TRANS_IN_URL:-http://127.0.0.1:8082/api}"
FROM="${FROM:-1}"
TO="${TO:-1}"
AMOUNT="${AMOUNT:-30}"
WAIT_FINAL="${WAIT_FINAL:-30}"

# name|description; the first column is what `scripts/demo.sh <name>` accepts.
SCENARIOS=(
  "success|fireTcc: a transfer that commits (Confirm on both banks)"
  "rollback|fireTccRollback: TransIn's Try refused, Cancel on both banks (TransIn's is an empty compensation)"
  "confirm-retry|TransIn's Confirm answers 500 three times: retried with backoff, alert, then succeed"
  "ongoing|TransOut's Confirm answers ONGOING twice: polled at a fixed interval"
  "try-timeout|TransIn's Try takes 3 s, the AP's request_timeout is 1 s: the AP aborts"
  "hanging-try|TransOut's Try takes 3 s: its Cancel arrives first, the late Try freezes nothing"
  "empty-compensation|TransIn's Try refused: its Cancel finds no Try and changes nothing"
  "duplicates|the same Try (then Cancel) sent twice at once to TransOut: applied once"
  "ap-crash|the AP dies after its Trys: the coordinator times the transaction out and cancels"
  "coordinator-crash|kill -9 the coordinator while TransIn's Confirm is in flight, restart it"
  "rm-down|trans-in is down during the second phase: retried until it is back"
  "purchase|firePurchase: Stock + TransOut + TransIn in one global transaction"
  "nested|fireTccNested: branch 02's Try is itself an AP that adds TransIn as child 0201"
  "nested-rollback|fireTccNested with the child's Try refused: 0201, 02 and 01 cancelled"
)
DEFAULT_SCENARIOS=(success rollback)

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# json_get FIELD...: reads JSON on stdin, prints the value at that path (object keys or list
# indexes), or nothing when absent. jq when installed, python3 otherwise.
json_get() {
  if command -v jq >/dev/null 2>&1; then
    local filter="" part
    for part in "$@"; do
      if [[ $part =~ ^[0-9]+$ ]]; then filter+="[$part]"; else filter+=".\"$part\""; fi
    done
    jq -r "${filter:-.} // empty" 2>/dev/null || true
  else
    python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
    for k in sys.argv[1:]:
        v = v[int(k)] if isinstance(v, list) else v[k]
except Exception:
    sys.exit(0)
if v is not None:
    print(v if not isinstance(v, (dict, list)) else json.dumps(v))
' "$@"
  fi
}

# Pretty-prints JSON on stdin (raw text if it is not JSON), indented by two spaces.
json_pretty() {
  local text
  text=$(cat)
  if command -v jq >/dev/null 2>&1 && jq . <<<"$text" >/dev/null 2>&1; then
    jq . <<<"$text"
  elif python3 -m json.tool <<<"$text" >/dev/null 2>&1; then
    python3 -m json.tool <<<"$text"
  else
    printf '%s\n' "$text"
  fi | sed 's/^/  /'
}

# http METHOD URL: prints "<status> <body>"; status 000 when nothing answered.
http() {
  local out status
  out=$(curl -sS -X "$1" -w $'\n%{http_code}' --max-time 60 "$2" 2>/dev/null) || true
  status=${out##*$'\n'}
  printf '%s %s\n' "${status:-000}" "${out%$'\n'*}"
}

# Prints "balance trading_balance" of account $2 at bank URL $1.
account() {
  local reply body
  reply=$(http GET "$1/accounts/$2")
  body=${reply#* }
  [[ ${reply%% *} == 200 ]] || die "GET $1/accounts/$2 answered ${reply%% *}: $body (is the system up? scripts/up.sh)"
  printf '%s %s\n' "$(json_get balance <<<"$body")" "$(json_get trading_balance <<<"$body")"
}

# Snapshot of both accounts into the named globals: bank A (FROM) then bank B (TO).
snapshot() {
  local a b
  a=$(account "$TRANS_OUT_URL" "$FROM")
  b=$(account "$TRANS_IN_URL" "$TO")
  read -r "$1" "$2" <<<"$a"
  read -r "$3" "$4" <<<"$b"
}

# A number with its sign: +30, -30, 0.
signed() { if (($1 > 0)); then echo "+$1"; else echo "$1"; fi; }

# Polls the coordinator until gid $1 is succeed or failed (or WAIT_FINAL passes); prints the
# final status (or the last one seen).
wait_final() {
  local gid=$1 deadline=$((SECONDS + WAIT_FINAL)) status=""
  while ((SECONDS < deadline)); do
    status=$(http GET "$DTM_URL/query?gid=$gid" | cut -d' ' -f2- | json_get transaction status)
    [[ $status == succeed || $status == failed ]] && break
    sleep 0.2
  done
  echo "$status"
}

# Prints the coordinator's record of gid $1: the transaction and one line per branch op.
show_transaction() {
  local reply body
  reply=$(http GET "$DTM_URL/query?gid=$1")
  body=${reply#* }
  echo "coordinator: GET $DTM_URL/query?gid=$1 -> ${reply%% *}"
  if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    print("  (not JSON)"); sys.exit(0)
t = d.get("transaction") or {}
print("  transaction: gid=%s trans_type=%s status=%s" % (t.get("gid"), t.get("trans_type"), t.get("status")))
for k in ("rollback_reason", "create_time", "finish_time"):
    if t.get(k):
        print("    %s: %s" % (k, t[k]))
for b in d.get("branches") or []:
    print("  branch %-6s %-8s %-8s attempts=%-3s %-40s %s" % (b.get("branch_id"), b.get("op"), b.get("status"),
          b.get("attempts"), b.get("url"), b.get("last_result") or ""))
' <<<"$body"
  else
    json_pretty <<<"$body"
  fi
}

# Prints the coordinator's sequence diagram of gid $1: Mermaid text drawn from its event log
# (GET /api/admin/transactions/{gid}/diagram), as it happened up to now.
show_diagram() {
  local reply line
  reply=$(http GET "$TM_URL/api/admin/transactions/$1/diagram")
  echo "diagram: GET $TM_URL/api/admin/transactions/$1/diagram -> ${reply%% *}"
  if [[ ${reply%% *} == 200 ]]; then
    while IFS= read -r line; do printf '  %s\n' "$line"; done <<<"${reply#* }"
  else
    json_pretty <<<"${reply#* }"
  fi
}

# Runs one fire endpoint and prints the whole story. $1 title, $2 AP path with query string,
# $3 expected global status; the expected balance changes for bank A and B in $4 and $5.
fire_and_show() {
  local title=$1 path=$2 expect=$3 delta_a=$4 delta_b=$5
  local a_before at_before b_before bt_before a_after at_after b_after bt_after
  local reply code body gid status ok=1
  echo "=== $title"
  snapshot a_before at_before b_before bt_before
  echo "before: bank A account $FROM balance=$a_before trading_balance=$at_before;" \
    "bank B account $TO balance=$b_before trading_balance=$bt_before"
  reply=$(http GET "$APP_URL/$path")
  code=${reply%% *}
  body=${reply#* }
  echo "AP: GET $APP_URL/$path -> $code"
  json_pretty <<<"$body"
  gid=$(json_get gid <<<"$body")
  [[ -n $gid ]] || die "the AP answered no gid"
  LAST_GID=$gid
  status=$(wait_final "$gid")
  snapshot a_after at_after b_after bt_after
  echo "after:  bank A account $FROM balance=$a_after ($(signed $((a_after - a_before)))) trading_balance=$at_after;" \
    "bank B account $TO balance=$b_after ($(signed $((b_after - b_before)))) trading_balance=$bt_after"
  show_transaction "$gid"
  show_diagram "$gid"
  [[ $status == "$expect" ]] || ok=0
  [[ $((a_after - a_before)) == "$delta_a" && $((b_after - b_before)) == "$delta_b" ]] || ok=0
  if [[ $ok == 1 ]]; then
    echo "=> as expected: global $status, bank A $(signed "$delta_a"), bank B $(signed "$delta_b")"
  else
    echo "=> UNEXPECTED: wanted global $expect, bank A $(signed "$delta_a"), bank B $(signed "$delta_b")" \
      "(other transfers running at the same time also move these balances)"
    FAILED=$((FAILED + 1))
  fi
  echo
}

scenario_success() {
  fire_and_show "success: fireTcc moves $AMOUNT from bank A to bank B" \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO" succeed "-$AMOUNT" "$AMOUNT"
}

scenario_rollback() {
  fire_and_show "rollback: fireTccRollback, TransIn's Try refused, nothing moves" \
    "fireTccRollback?amount=$AMOUNT&from=$FROM&to=$TO" failed 0 0
}

RUN_DIR="${RUN_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/run}"

# Prints the lines of binary $1's log (target/run/<name>.log, when up.sh started it) about gid $2.
show_log() {
  local log="$RUN_DIR/$1.log"
  [[ -f $log ]] || return 0
  echo "$1 log (gid=$2):"
  grep -F "gid=$2" "$log" | sed 's/^/  /' | tail -n 12 || true
}

# kill -9 of binary $1 started by scripts/up.sh.
crash() {
  local pid_file="$RUN_DIR/$1.pid"
  [[ -f $pid_file ]] || die "$pid_file not found: this scenario needs the system started by scripts/up.sh"
  echo "kill -9 $1 (pid $(cat "$pid_file"))"
  kill -9 "$(cat "$pid_file")" 2>/dev/null || true
}

restart() {
  echo "restarting $1: scripts/up.sh $1"
  "$(dirname "${BASH_SOURCE[0]}")/up.sh" "$1" >/dev/null
}

scenario_confirm_retry() {
  fire_and_show "confirm-retry: TransIn's Confirm fails 3 times (HTTP 500), then succeeds" \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_confirm=error:3&retry_interval=1" \
    succeed "-$AMOUNT" "$AMOUNT"
  show_log coordinator "$LAST_GID"
}

scenario_ongoing() {
  fire_and_show "ongoing: TransOut's Confirm answers ONGOING (425) twice" \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_out_confirm=ongoing:2&retry_interval=1&wait_result=false" \
    succeed "-$AMOUNT" "$AMOUNT"
}

scenario_try_timeout() {
  fire_and_show "try-timeout: TransIn's Try outlasts the AP's request_timeout" \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_try=delay:3000&request_timeout=1" failed 0 0
}

scenario_hanging_try() {
  fire_and_show "hanging-try: TransOut's Try arrives after its Cancel" \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_out_try=delay:3000&request_timeout=1" failed 0 0
  echo "waiting 3 s for the delayed Try to reach the barrier..."
  sleep 3
  show_log trans-out "$LAST_GID"
  echo "bank A account $FROM now: balance trading_balance = $(account "$TRANS_OUT_URL" "$FROM")"
}

scenario_empty_compensation() {
  fire_and_show "empty-compensation: TransIn's Try is refused, its Cancel has nothing to undo" \
    "fireTccRollback?amount=$AMOUNT&from=$FROM&to=$TO" failed 0 0
  show_log trans-in "$LAST_GID"
}

scenario_duplicates() {
  local gid="demo-dup-$RANDOM$RANDOM" q before after
  q="gid=$gid&trans_type=tcc&branch_id=01"
  echo "=== duplicates: TransOutTry twice at once, then TransOutCancel twice at once (gid $gid)"
  before=$(account "$TRANS_OUT_URL" "$FROM")
  for op in try try; do
    curl -sS -X POST -H 'content-type: application/json' -d "{\"account_id\":$FROM,\"amount\":$AMOUNT}" \
      "$TRANS_OUT_URL/TransOutTry?$q&op=$op" &
  done
  wait
  echo
  after=$(account "$TRANS_OUT_URL" "$FROM")
  echo "balance trading_balance before: $before; after both Trys: $after (frozen once)"
  for op in cancel cancel; do
    curl -sS -X POST -H 'content-type: application/json' -d "{\"account_id\":$FROM,\"amount\":$AMOUNT}" \
      "$TRANS_OUT_URL/TransOutCancel?$q&op=$op" &
  done
  wait
  echo
  echo "after both Cancels: $(account "$TRANS_OUT_URL" "$FROM") (released once)"
  show_log trans-out "$gid"
  echo "(no diagram: these calls went straight to the RM, outside any global transaction of the coordinator)"
  echo
}

scenario_ap_crash() {
  local reply gid status
  echo "=== ap-crash: the AP exits after its Trys (crash_after_try), timeout_to_fail=3"
  reply=$(http GET "$APP_URL/fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&crash_after_try=true&timeout_to_fail=3")
  echo "AP: ${reply%% *} (000 = no answer: it died)"
  gid=$(http GET "$DTM_URL/all?limit=1" | cut -d' ' -f2- | json_get transactions 0 gid)
  echo "the coordinator holds $gid: prepared, with funds frozen by the Trys:"
  echo "  bank A account $FROM balance trading_balance = $(account "$TRANS_OUT_URL" "$FROM")"
  status=$(wait_final "$gid")
  show_transaction "$gid"
  show_diagram "$gid"
  echo "  bank A account $FROM balance trading_balance = $(account "$TRANS_OUT_URL" "$FROM")"
  [[ $status == failed ]] || { echo "=> UNEXPECTED: $status"; FAILED=$((FAILED + 1)); }
  restart app
  echo
}

# Fires $2 with wait_result=false, then kills binary $1 after $3 seconds and restarts it after $4.
crash_during_second_phase() {
  local name=$1 path=$2 kill_after=$3 down_for=$4 expect=$5 delta_a=$6 delta_b=$7
  local reply gid status a_before b_before
  a_before=$(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1)
  b_before=$(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1)
  reply=$(http GET "$APP_URL/$path")
  echo "AP: GET $APP_URL/$path -> ${reply%% *}"
  gid=$(json_get gid <<<"${reply#* }")
  sleep "$kill_after"
  crash "$name"
  sleep "$down_for"
  restart "$name"
  status=$(wait_final "$gid")
  show_transaction "$gid"
  show_diagram "$gid"
  show_log "$name" "$gid"
  local da db
  da=$(($(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1) - a_before))
  db=$(($(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1) - b_before))
  if [[ $status == "$expect" && $da == "$delta_a" && $db == "$delta_b" ]]; then
    echo "=> as expected: global $status, bank A $(signed "$da"), bank B $(signed "$db") (exactly once)"
  else
    echo "=> UNEXPECTED: global $status, bank A $(signed "$da"), bank B $(signed "$db")"
    FAILED=$((FAILED + 1))
  fi
  echo
}

scenario_coordinator_crash() {
  echo "=== coordinator-crash: kill -9 the coordinator while TransIn's Confirm (3 s) is in flight"
  crash_during_second_phase coordinator \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_confirm=delay:3000&request_timeout=5&retry_interval=1&wait_result=false" \
    1 1 succeed "-$AMOUNT" "$AMOUNT"
}

scenario_rm_down() {
  echo "=== rm-down: trans-in is killed during the second phase and comes back 3 s later"
  crash_during_second_phase trans-in \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_out_confirm=delay:1000&retry_interval=1&wait_result=false" \
    0.3 3 succeed "-$AMOUNT" "$AMOUNT"
}

scenario_purchase() {
  local price
  price=$(http GET "${STOCK_URL:-http://127.0.0.1:8083/api}/products/1" | cut -d' ' -f2- | json_get price)
  [[ -n $price ]] || die "the stock service did not answer the price of product 1"
  fire_and_show "purchase: 1 unit of product 1 (price $price): stock reserved, then deducted; money moves" \
    "firePurchase?product_id=1&quantity=1&buyer=$FROM&merchant=$TO" succeed "-$price" "$price"
}

scenario_nested() {
  fire_and_show "nested: TransOut (01) and a nested branch (02) whose Try adds TransIn as 0201" \
    "fireTccNested?amount=$AMOUNT&from=$FROM&to=$TO" succeed "-$AMOUNT" "$AMOUNT"
}

scenario_nested_rollback() {
  fire_and_show "nested-rollback: the child 0201's Try is refused" \
    "fireTccNested?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_try=failure" failed 0 0
}

run_scenario() {
  case "$1" in
    success | fireTcc) scenario_success ;;
    rollback | fireTccRollback) scenario_rollback ;;
    confirm-retry) scenario_confirm_retry ;;
    ongoing) scenario_ongoing ;;
    try-timeout) scenario_try_timeout ;;
    hanging-try) scenario_hanging_try ;;
    empty-compensation) scenario_empty_compensation ;;
    duplicates) scenario_duplicates ;;
    ap-crash) scenario_ap_crash ;;
    coordinator-crash) scenario_coordinator_crash ;;
    rm-down) scenario_rm_down ;;
    purchase | firePurchase) scenario_purchase ;;
    nested | fireTccNested) scenario_nested ;;
    nested-rollback) scenario_nested_rollback ;;
    all) for s in "${SCENARIOS[@]}"; do run_scenario "${s%%|*}"; done ;;
    *) die "unknown scenario '$1'; scripts/demo.sh --list shows them" ;;
  esac
}

list_scenarios() {
  local line
  for line in "${SCENARIOS[@]}"; do printf '  %-12s %s\n' "${line%%|*}" "${line#*|}"; done
}

main() {
  if [[ ${1:-} == --list || ${1:-} == -l ]]; then
    list_scenarios
    return 0
  fi
  if [[ ${1:-} == --help || ${1:-} == -h ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    return 0
  fi
  command -v curl >/dev/null || die "curl is required"
  command -v python3 >/dev/null || command -v jq >/dev/null || die "python3 or jq is required"
  local scenarios=("$@")
  [[ ${#scenarios[@]} -gt 0 ]] || scenarios=("${DEFAULT_SCENARIOS[@]}")
  FAILED=0
  for s in "${scenarios[@]}"; do run_scenario "$s"; done
  if [[ $FAILED -gt 0 ]]; then
    echo "$FAILED scenario(s) did not end as expected"
    return 1
  fi
}

main "$@"
