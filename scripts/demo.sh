#!/usr/bin/env bash
# Usage: scripts/demo.sh [scenario...] [--pause SECONDS | --step]
#        scripts/demo.sh reset
#        scripts/demo.sh --list
#
# With the system up (scripts/up.sh), runs TCC scenarios through the AP and prints, for each:
# the balances of the two bank accounts before and after, the AP's answer, the coordinator's
# record of the global transaction (its status and every branch op), and the live sequence
# diagram the coordinator draws from its event log (Mermaid text; the admin page at
# <coordinator>/admin renders it). Only `duplicates` has no diagram: its calls go straight to
# the RM, outside any global transaction of the coordinator.
# Without arguments it runs the default scenarios (success, then rollback); `all` runs every one.
#
# Step by step: with `--pause SECONDS` (or `--step`, waiting for Enter) the scenario's global
# transaction really stops after each protocol step (each Try, submit or abort, each Confirm or
# Cancel), held at an RM by a `pause` fault, and each stop prints what is true at that moment:
# the coordinator's status, lease and next retry, both accounts, and the gid's holds and barrier
# rows in each bank (scripts/lib/steps.sh). Available for success and rollback.
#
# `race --cancel-first` (or `--try-first`) forces who wins the race: the Try is held at TransOut
# (before its work, or after it with its answer held) while the abort's Cancel runs.
#
# `reset` returns every database to its seeded state: it stops the system started by
# scripts/up.sh, drops its databases and starts it again (up.sh creates and seeds them; the
# build is skipped unless SKIP_BUILD=0). Every transaction and balance of everyone is gone.
#
# A room sharing one system: PARTICIPANT=ana puts `ana-` in front of the gid of every transaction
# the demos start through the AP (its gid_prefix parameter), so each person finds their own (the
# admin page filters by gid prefix); FROM and TO give each person their own accounts.
#
# Scenarios (add one: a scenario_<name> function, a line in SCENARIOS, a case in run_scenario);
# `scripts/demo.sh --list` prints them all. The failure cases use the AP's fault parameters
# (trans_in_confirm=error:3, ...), which travel in the branch data to the RMs. Scenarios that
# kill or reconfigure a binary (ap-crash, coordinator-crash, coordinator-crash-cancel, rm-down,
# replicas, retention, confirm-failure) restart it with scripts/up.sh, so they need the system
# started by scripts/up.sh (pid files in RUN_DIR); give them the same PROFILE (and SKIP_BUILD=1
# to skip the build check) as that system. `retention` deletes every transaction of the system
# finished more than 5 s before and the banks' settled barrier rows.
#
# Environment (the defaults follow scripts/up.sh: its ports plus PORT_OFFSET, its RUN_DIR and
# DB_PREFIX, so `PORT_OFFSET=10000 RUN_DIR=... scripts/demo.sh` drives a private copy):
#   APP_URL=http://127.0.0.1:8080/api        DTM_URL=http://127.0.0.1:36789/api/dtmsvr
#   TRANS_OUT_URL=http://127.0.0.1:8081/api  TRANS_IN_URL=http://127.0.0.1:8082/api
#   STOCK_URL=http://127.0.0.1:8083/api
#   FROM=1 TO=1 AMOUNT=30   accounts (bank A, bank B) and amount in minor units
#   WAIT_FINAL=30           seconds to wait for a global transaction to reach a final status
#   LEASE_SECONDS=30        the coordinator's lease (what `replicas` waits for)
#   ADMIN_TOKEN             the coordinator's admin token (default: RUN_DIR/admin-token, as
#                           up.sh); `confirm-failure` sends it with the admin action retry-now
#   BRANCH_SIGNING_SECRET   the signing secret (default: RUN_DIR/signing-secret, as up.sh);
#                           `duplicates` signs its Cancels with it, as the TM does
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib/pg.sh
source "$SCRIPTS/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$SCRIPTS/lib/services.sh"
# shellcheck source=scripts/lib/http.sh
source "$SCRIPTS/lib/http.sh"
# shellcheck source=scripts/lib/steps.sh
source "$SCRIPTS/lib/steps.sh"
svc_load

url_of() { echo "http://127.0.0.1:$(svc_port "$1")"; }
APP_URL="${APP_URL:-$(url_of app)/api}"
DTM_URL="${DTM_URL:-$(url_of coordinator)/api/dtmsvr}"
# The coordinator's base URL (its admin API lives beside the DTM one).
TM_URL="${DTM_URL%/api/dtmsvr}"
TRANS_OUT_URL="${TRANS_OUT_URL:-$(url_of trans-out)/api}"
TRANS_IN_URL="${TRANS_IN_URL:-$(url_of trans-in)/api}"
STOCK_URL="${STOCK_URL:-$(url_of stock)/api}"
FROM="${FROM:-1}"
TO="${TO:-1}"
AMOUNT="${AMOUNT:-30}"
WAIT_FINAL="${WAIT_FINAL:-30}"
LEASE_SECONDS="${LEASE_SECONDS:-30}"
# race's forced order (--cancel-first, --try-first); empty: a real race.
RACE_ORDER=""

# name|description; the first column is what `scripts/demo.sh <name>` accepts.
SCENARIOS=(
  "success|fireTcc: a transfer that commits (Confirm on both banks)"
  "rollback|fireTccRollback: TransIn's Try refused, Cancel on both banks (TransIn's is an empty compensation)"
  "confirm-retry|TransIn's Confirm answers 500 three times: retried with backoff, alert, then succeed"
  "confirm-failure|TransIn's Confirm answers FAILURE: retried and alerted, never dropped, until the RM is fixed"
  "ongoing|TransOut's Confirm answers ONGOING twice: polled at a fixed interval"
  "try-timeout|TransIn's Try takes 3 s, the AP's request_timeout is 1 s: the AP aborts"
  "hanging-try|TransOut's Try takes 3 s: its Cancel arrives first, the late Try freezes nothing"
  "empty-compensation|TransIn's Try refused: its Cancel finds no Try and changes nothing"
  "duplicates|the same Try (then Cancel) sent twice at once straight to TransOut: applied once (no diagram)"
  "race|TransOut's Try (from the AP) and its Cancel (from the TM) at the same moment: no frozen leftover (--cancel-first, --try-first force an order)"
  "ap-crash|the AP dies after its Trys: the coordinator times the transaction out and cancels"
  "coordinator-crash|kill -9 the coordinator while TransIn's Confirm is in flight, restart it"
  "coordinator-crash-cancel|kill -9 the coordinator while TransOut's Cancel is in flight, restart it"
  "rm-down|trans-in is down during the second phase: retried until it is back"
  "replicas|a second coordinator replica on the same database finishes the work of a killed one"
  "wait-result|wait_result=false: the AP answers at submit (status submitted), the second phase finishes later"
  "retention|RETENTION_SECONDS=5: a finished transaction and its barrier rows are deleted"
  "purchase|firePurchase: Stock + TransOut + TransIn in one global transaction"
  "nested|fireTccNested: branch 02's Try is itself an AP that adds TransIn as child 0201"
  "nested-rollback|fireTccNested with the child's Try refused: 0201, 02 and 01 cancelled"
)
DEFAULT_SCENARIOS=(success rollback)

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# AP path $1 with `gid_prefix=$PARTICIPANT` added when PARTICIPANT is set, so that a participant
# finds their transactions among the room's.
with_participant() {
  if [[ -n ${PARTICIPANT:-} ]]; then echo "$1&gid_prefix=$PARTICIPANT"; else echo "$1"; fi
}

# Milliseconds since some fixed point (bash's EPOCHREALTIME), for latencies.
now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  echo $((t / 1000))
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
  path=$(with_participant "$path")
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
  verdict "$ok" "$expect" "$delta_a" "$delta_b"
}

# The last line of a transfer scenario, counting a miss in FAILED: $1 1 when it ended as expected,
# $2 the expected global status, $3 and $4 the expected changes of bank A and B, $5 what else held.
verdict() {
  local ok=$1 expect=$2 delta_a=$3 delta_b=$4 also=${5:-}
  if [[ $ok == 1 ]]; then
    echo "=> as expected: global $expect, bank A $(signed "$delta_a"), bank B $(signed "$delta_b")${also:+, $also}"
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
  "$SCRIPTS/up.sh" "$1" >/dev/null
}

# Stops binary $1 (scripts/down.sh) and starts it again with the extra environment VAR=VALUE in
# $2...; with no VAR=VALUE it comes back with the caller's environment, as scripts/up.sh started it.
restart_with() {
  local name=$1
  shift
  [[ -f $RUN_DIR/$name.pid ]] || die "$RUN_DIR/$name.pid not found: this scenario needs the system started by scripts/up.sh"
  echo "restarting $name${*:+ with $*}: scripts/down.sh $name; ${*:+$* }scripts/up.sh $name"
  "$SCRIPTS/down.sh" "$name" >/dev/null
  env "$@" "$SCRIPTS/up.sh" "$name" >/dev/null
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

# The secret the coordinator signs Confirm/Cancel calls with and the RMs check:
# BRANCH_SIGNING_SECRET, else the one scripts/up.sh keeps in RUN_DIR; nothing when neither exists
# (the RMs then run in demo mode and accept unsigned calls).
signing_secret() {
  if [[ -n ${BRANCH_SIGNING_SECRET:-} ]]; then
    echo "$BRANCH_SIGNING_SECRET"
  elif [[ -s $RUN_DIR/signing-secret ]]; then
    cat "$RUN_DIR/signing-secret"
  fi
}

# The gid token of gid $1 (docs/PROTOCOL.md, "Signed branch calls"), the X-Tcc-Gid-Token an AP
# holding the secret sends with its Trys; nothing without a secret or without openssl (the RM then
# checks the Try with its coordinator).
gid_token() {
  local secret
  secret=$(signing_secret)
  [[ -n $secret ]] && command -v openssl >/dev/null || return 0
  printf 'tcc-gid-token\n%s' "$1" | openssl dgst -sha256 -hmac "$secret" -r | sed -E 's/^([0-9a-f]+).*/v1=\1/'
}

# The coordinator's admin token: ADMIN_TOKEN, else the one scripts/up.sh keeps in RUN_DIR;
# nothing when neither exists (a coordinator started without one leaves its actions open).
admin_token() {
  if [[ -n ${ADMIN_TOKEN:-} ]]; then
    echo "$ADMIN_TOKEN"
  elif [[ -s $RUN_DIR/admin-token ]]; then
    cat "$RUN_DIR/admin-token"
  fi
}

# Lowercase hex HMAC-SHA256 of stdin keyed with $1.
hmac_sha256_hex() {
  if command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1
  else
    python3 -c 'import hashlib, hmac, sys
print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())' "$1"
  fi
}

# Prints, one per line, the curl arguments that sign a POST of body $2 to URL $1 the way the
# TM signs its Confirm and Cancel calls (docs/PROTOCOL.md, "Signed branch calls"); nothing
# without a secret.
sign_args() {
  local url=$1 body=$2 secret rest path query="" ts body_hash mac
  secret=$(signing_secret)
  [[ -n $secret ]] || return 0
  rest=${url#*://*/}
  path="/${rest%%\?*}"
  if [[ $rest == *\?* ]]; then query=${rest#*\?}; fi
  ts=$(date +%s)
  body_hash=$(printf '%s' "$body" | sha256sum | cut -d' ' -f1)
  mac=$(printf 'POST\n%s\n%s\n%s\n%s' "$path" "$query" "$ts" "$body_hash" | hmac_sha256_hex "$secret")
  printf '%s\n' -H "X-Tcc-Timestamp: $ts" -H "X-Tcc-Signature: v1=$mac"
}

# POSTs body $2 to URL $1 twice at the same moment (signed as the TM signs when $3 is "signed")
# and prints each answer.
post_twice() {
  local url=$1 body=$2 tmp i
  local sig=()
  if [[ ${3:-} == signed ]]; then mapfile -t sig < <(sign_args "$url" "$body"); fi
  tmp=$(mktemp -d)
  for i in 1 2; do
    http POST "$url" "$body" "${sig[@]}" >"$tmp/$i" &
  done
  wait
  for i in 1 2; do echo "  call $i: POST /${url#*://*/} -> $(cat "$tmp/$i")"; done
  rm -rf "$tmp"
}

# The RM's own outcome words for gid $2 and op $3 in binary $1's log (applied, duplicate,
# empty_compensation, hanging), in order; nothing when the log is not in RUN_DIR.
rm_outcomes() {
  local log="$RUN_DIR/$1.log"
  [[ -f $log ]] || return 0
  grep -F "gid=$2 " "$log" | grep -F " op=$3 " | sed -n 's/.*Trans[A-Za-z]*: \([a-z_]*\).*/\1/p' | paste -sd' ' -
}

# Prepares global transaction $1 at the coordinator and registers TransOut's branch 01 with data
# $2, as an AP does before its Try: TransOut accepts a Try only for a branch its coordinator
# knows (or one carrying the gid's token).
prepare_trans_out_branch() {
  local gid=$1 escaped=${2//\"/\\\"} reply
  reply=$(http POST "$DTM_URL/prepare" "{\"gid\":\"$gid\",\"trans_type\":\"tcc\"}")
  [[ ${reply%% *} == 200 ]] || die "prepare answered $reply"
  reply=$(http POST "$DTM_URL/registerBranch" "{\"gid\":\"$gid\",\"trans_type\":\"tcc\",\"branch_id\":\"01\",\"data\":\"$escaped\",\"confirm\":\"$TRANS_OUT_URL/TransOutConfirm\",\"cancel\":\"$TRANS_OUT_URL/TransOutCancel\"}")
  [[ ${reply%% *} == 200 ]] || die "registerBranch answered $reply"
}

scenario_duplicates() {
  local gid="demo-dup-$RANDOM$RANDOM" q body bal0 tb0 bal1 tb1 bal2 tb2 ok=1
  q="gid=$gid&trans_type=tcc&branch_id=01"
  body="{\"account_id\":$FROM,\"amount\":$AMOUNT}"
  echo "=== duplicates: TransOutTry twice at once, then TransOutCancel twice at once (gid $gid)"
  echo "The calls go straight to TransOut, as a retrying AP (the Trys) and a retrying TM (the"
  echo "Cancels, signed with the TM's secret) would send them. The gid is prepared at the coordinator"
  echo "and its branch registered first, as an AP does: TransOut accepts no Try of a branch its"
  echo "coordinator does not know. What happened is in TransOut's answers, its balances and its log."
  prepare_trans_out_branch "$gid" "$body"
  read -r bal0 tb0 <<<"$(account "$TRANS_OUT_URL" "$FROM")"
  echo "bank A account $FROM before: balance=$bal0 trading_balance=$tb0"
  post_twice "$TRANS_OUT_URL/TransOutTry?$q&op=try" "$body"
  read -r bal1 tb1 <<<"$(account "$TRANS_OUT_URL" "$FROM")"
  echo "after both Trys:   balance=$bal1 trading_balance=$tb1 ($(signed $((tb1 - tb0))) frozen)"
  post_twice "$TRANS_OUT_URL/TransOutCancel?$q&op=cancel" "$body" signed
  read -r bal2 tb2 <<<"$(account "$TRANS_OUT_URL" "$FROM")"
  echo "after both Cancels: balance=$bal2 trading_balance=$tb2"
  if [[ -f $RUN_DIR/trans-out.log ]]; then
    echo "TransOut's barrier said: Try: $(rm_outcomes trans-out "$gid" try); Cancel: $(rm_outcomes trans-out "$gid" cancel)"
  fi
  show_log trans-out "$gid"
  # The coordinator's own Cancel, after the abort, is one more duplicate.
  http POST "$DTM_URL/abort" "{\"gid\":\"$gid\",\"trans_type\":\"tcc\",\"rollback_reason\":\"demo: duplicates done\",\"wait_result\":true}" >/dev/null
  [[ $((tb1 - tb0)) == "$AMOUNT" && $tb2 == "$tb0" && $bal2 == "$bal0" ]] || ok=0
  if [[ $ok == 1 ]]; then
    echo "=> as expected: two Trys froze $AMOUNT once, two Cancels released it once; balance unchanged"
  else
    echo "=> UNEXPECTED: wanted $AMOUNT frozen once, then released once (other transfers on account $FROM also move it)"
    FAILED=$((FAILED + 1))
  fi
  echo
}

# "success", "failure", "ongoing" or "error": how an AP reads HTTP status $1 (the reportTry
# outcome; docs/PROTOCOL.md, "Branch calls").
try_outcome() {
  case "$1" in
    2??) echo success ;;
    409) echo failure ;;
    425) echo ongoing ;;
    *) echo error ;;
  esac
}

scenario_race() {
  local reply gid data tmp bal0 tb0 bal1 tb1 status try_seen cancel_seen token ok=1
  echo "=== race: TransOut's Try (sent as the AP sends it) and its Cancel (the TM's, after abort) at the same moment"
  reply=$(http GET "$DTM_URL/newGid")
  gid=$(json_get gid <<<"${reply#* }")
  [[ -n $gid ]] || die "newGid answered ${reply%% *}: ${reply#* }"
  data="{\"account_id\":$FROM,\"amount\":$AMOUNT}"
  # A forced order holds the Try at TransOut (a pause fault in its data) while the abort runs.
  case "$RACE_ORDER" in
    cancel-first) data="{\"account_id\":$FROM,\"amount\":$AMOUNT,\"fault\":{\"try\":\"pause\"}}" ;;
    try-first) data="{\"account_id\":$FROM,\"amount\":$AMOUNT,\"fault\":{\"try\":\"pause-after\"}}" ;;
  esac
  prepare_trans_out_branch "$gid" "$data"
  echo "prepared $gid and registered branch 01 (TransOut); now, at the same moment: TransOutTry, and abort"
  read -r bal0 tb0 <<<"$(account "$TRANS_OUT_URL" "$FROM")"
  tmp=$(mktemp -d)
  # With the gid's token, as the AP sends it: the RM applies it without asking the coordinator,
  # so only the barrier decides the race (without a token, a Try checked after the abort is
  # refused 403 before the barrier).
  local token_header=()
  token=$(gid_token "$gid")
  [[ -n $token ]] && token_header=(-H "X-Tcc-Gid-Token: $token")
  (
    t0=$(now_ms)
    r=$(http POST "$TRANS_OUT_URL/TransOutTry?gid=$gid&trans_type=tcc&branch_id=01&op=try" "$data" "${token_header[@]}")
    t1=$(now_ms)
    echo "$r" >"$tmp/try"
    code=${r%% *}
    # Reported to the coordinator as the AP client reports its Trys, so the diagram draws it.
    http POST "$DTM_URL/reportTry" "{\"gid\":\"$gid\",\"branch_id\":\"01\",\"url\":\"$TRANS_OUT_URL/TransOutTry\",\"outcome\":\"$(try_outcome "$code")\",\"http_status\":$([[ $code == 000 ]] && echo null || echo "$code"),\"latency_ms\":$((t1 - t0))}" >/dev/null
  ) &
  local abort="{\"gid\":\"$gid\",\"trans_type\":\"tcc\",\"rollback_reason\":\"demo: an abort racing the Try\",\"wait_result\":true}"
  if [[ -n $RACE_ORDER ]]; then
    wait_held "$TRANS_OUT_URL" "$gid" >/dev/null
    case "$RACE_ORDER" in
      cancel-first) echo "  ($RACE_ORDER) TransOut holds the Try before its work; abort now, and the Cancel runs first" ;;
      try-first) echo "  ($RACE_ORDER) the Try has committed, TransOut holds its answer; abort now, and the Cancel runs second" ;;
    esac
    http POST "$DTM_URL/abort" "$abort" >"$tmp/abort"
    http POST "$TRANS_OUT_URL/paused/resume?gid=$gid" >/dev/null
  else
    http POST "$DTM_URL/abort" "$abort" >"$tmp/abort" &
  fi
  wait
  echo "  TransOutTry -> $(cat "$tmp/try")"
  echo "  abort       -> $(cat "$tmp/abort")"
  rm -rf "$tmp"
  status=$(wait_final "$gid")
  read -r bal1 tb1 <<<"$(account "$TRANS_OUT_URL" "$FROM")"
  echo "bank A account $FROM: balance $bal0 -> $bal1, trading_balance $tb0 -> $tb1"
  show_transaction "$gid"
  show_diagram "$gid"
  show_log trans-out "$gid"
  try_seen=$(rm_outcomes trans-out "$gid" try)
  cancel_seen=$(rm_outcomes trans-out "$gid" cancel)
  case "$try_seen/$cancel_seen" in
    applied*/applied*) echo "this time the Try won: it froze $AMOUNT, then the Cancel released exactly that" ;;
    hanging*/empty_compensation*) echo "this time the Cancel won: an empty compensation, and the late Try found its row taken (hanging) and froze nothing" ;;
    /) echo "(TransOut's log is not in $RUN_DIR: its answers do not say which came first)" ;;
    *) echo "TransOut's barrier said: Try: $try_seen; Cancel: $cancel_seen" ;;
  esac
  [[ -n $RACE_ORDER ]] || echo "(run it again: which one wins changes; the end state never does; --cancel-first or --try-first forces an order)"
  [[ $status == failed && $bal1 == "$bal0" && $tb1 == "$tb0" ]] || ok=0
  if [[ $ok == 1 ]]; then
    echo "=> as expected: global failed, balance unchanged, nothing left frozen"
  else
    echo "=> UNEXPECTED: global $status, balance $(signed $((bal1 - bal0))), trading_balance $(signed $((tb1 - tb0)))"
    FAILED=$((FAILED + 1))
  fi
  echo
}

scenario_ap_crash() {
  local reply gid status
  echo "=== ap-crash: the AP exits after its Trys (crash_after_try), timeout_to_fail=3"
  local prefix
  prefix=$(run_prefix)
  reply=$(http GET "$APP_URL/fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&crash_after_try=true&timeout_to_fail=3&gid_prefix=$prefix")
  echo "AP: ${reply%% *} (000 = no answer: it died)"
  # The AP died before answering: this run's gid is the one starting with its own prefix.
  gid=$(http GET "$TM_URL/api/admin/transactions?gid_prefix=$prefix-&limit=1" | cut -d' ' -f2- | json_get transactions 0 gid)
  [[ -n $gid ]] || die "the coordinator holds no transaction starting with $prefix-"
  echo "the coordinator holds $gid: prepared until its timeout_time, with funds frozen by the Trys:"
  show_moment "$gid"
  status=$(wait_final "$gid")
  show_transaction "$gid"
  show_diagram "$gid"
  echo "  bank A account $FROM balance trading_balance = $(account "$TRANS_OUT_URL" "$FROM")"
  if [[ $status == failed ]]; then
    echo "=> as expected: the coordinator timed the abandoned transaction out and cancelled both branches"
  else
    echo "=> UNEXPECTED: $status"
    FAILED=$((FAILED + 1))
  fi
  restart app
  echo
}

# Fires $2 with wait_result=false, then kills binary $1 after $3 seconds and restarts it after $4;
# expects global status $5 and balance changes $6 (bank A) and $7 (bank B); shows the log of $1
# and of the binary named in $8, if any.
crash_during_second_phase() {
  local name=$1 path=$2 kill_after=$3 down_for=$4 expect=$5 delta_a=$6 delta_b=$7 other=${8:-}
  local reply gid status a_before ta_before b_before
  read -r a_before ta_before <<<"$(account "$TRANS_OUT_URL" "$FROM")"
  b_before=$(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1)
  path=$(with_participant "$path")
  reply=$(http GET "$APP_URL/$path")
  echo "AP: GET $APP_URL/$path -> ${reply%% *}"
  gid=$(json_get gid <<<"${reply#* }")
  sleep "$kill_after"
  if [[ $name == coordinator ]]; then
    echo "just before the kill: the pass holds the lease (owner, lease_expire) while its call is in flight"
    show_moment "$gid"
  fi
  crash "$name"
  sleep "$down_for"
  restart "$name"
  status=$(wait_final "$gid")
  show_transaction "$gid"
  show_diagram "$gid"
  show_log "$name" "$gid"
  if [[ -n $other ]]; then show_log "$other" "$gid"; fi
  local a_after ta_after da db
  read -r a_after ta_after <<<"$(account "$TRANS_OUT_URL" "$FROM")"
  da=$((a_after - a_before))
  db=$(($(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1) - b_before))
  if [[ $status == "$expect" && $da == "$delta_a" && $db == "$delta_b" && $ta_after == "$ta_before" ]]; then
    echo "=> as expected: global $status, bank A $(signed "$da"), bank B $(signed "$db") (exactly once), nothing left frozen"
  else
    echo "=> UNEXPECTED: global $status, bank A $(signed "$da"), bank B $(signed "$db"), trading_balance $(signed $((ta_after - ta_before)))"
    FAILED=$((FAILED + 1))
  fi
  echo
}

scenario_coordinator_crash() {
  echo "=== coordinator-crash: kill -9 the coordinator while TransIn's Confirm (3 s) is in flight"
  crash_during_second_phase coordinator \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_confirm=delay:3000&request_timeout=5&retry_interval=1&wait_result=false" \
    1 1 succeed "-$AMOUNT" "$AMOUNT" trans-in
}

scenario_coordinator_crash_cancel() {
  echo "=== coordinator-crash-cancel: kill -9 the coordinator while TransOut's Cancel (3 s) is in flight"
  echo "(fireTccRollback: TransIn's Try is refused, the AP aborts; Cancel 02 is quick, Cancel 01 takes 3 s)"
  crash_during_second_phase coordinator \
    "fireTccRollback?amount=$AMOUNT&from=$FROM&to=$TO&trans_out_cancel=delay:3000&request_timeout=5&retry_interval=1&wait_result=false" \
    1 1 failed 0 0 trans-out
}

scenario_rm_down() {
  echo "=== rm-down: trans-in is killed during the second phase and comes back 3 s later"
  crash_during_second_phase trans-in \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_confirm=error:1&retry_interval=1&wait_result=false" \
    0.3 3 succeed "-$AMOUNT" "$AMOUNT"
}

# Attempts so far of op $3 of branch $2 of gid $1, from the coordinator's record (0 when absent).
op_attempts() {
  local body i branch_id
  body=$(http GET "$DTM_URL/query?gid=$1" | cut -d' ' -f2-)
  for ((i = 0; ; i++)); do
    branch_id=$(json_get branches "$i" branch_id <<<"$body")
    [[ -n $branch_id ]] || break
    if [[ $branch_id == "$2" && $(json_get branches "$i" op <<<"$body") == "$3" ]]; then
      json_get branches "$i" attempts <<<"$body"
      return 0
    fi
  done
  echo 0
}

# The samples of metric $1 from URL $2 (Prometheus text), indented.
show_metric() {
  echo "metrics: GET $2 | grep ^$1"
  curl -sS --max-time 10 "$2" 2>/dev/null | grep "^$1" | sed 's/^/  /' || echo "  (none yet)"
}

scenario_confirm_failure() {
  local path reply gid deadline attempts=0 alert_after=${ALERT_AFTER_ATTEMPTS:-3} status auth=() token
  local a_before b_before da db
  echo "=== confirm-failure: TransIn's Confirm answers 409 FAILURE on every call"
  a_before=$(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1)
  b_before=$(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1)
  path="fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_confirm=failure&retry_interval=1&wait_result=false"
  path=$(with_participant "$path")
  reply=$(http GET "$APP_URL/$path")
  echo "AP: GET $APP_URL/$path -> $reply"
  gid=$(json_get gid <<<"${reply#* }")
  [[ -n $gid ]] || die "the AP answered no gid"
  echo "waiting for $alert_after Confirm attempts of branch 02 (ALERT_AFTER_ATTEMPTS)..."
  deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    attempts=$(op_attempts "$gid" 02 confirm)
    ((attempts >= alert_after)) && break
    sleep 0.5
  done
  show_transaction "$gid"
  show_log coordinator "$gid"
  show_metric tcc_branch_alerts_total "$TM_URL/api/metrics"
  echo "A Confirm must eventually succeed: the TM never gives up on it nor turns it into a rollback,"
  echo "it retries with backoff and raises an alert. Fix the RM: restart trans-in with FAULT_INJECTION=off,"
  echo "which ignores the fault the branch data carries, then ask for a retry now (admin action retry-now)."
  restart_with trans-in FAULT_INJECTION=off
  token=$(admin_token)
  if [[ -n $token ]]; then auth=(-H "Authorization: Bearer $token"); fi
  reply=$(http POST "$TM_URL/api/admin/transactions/$gid/retry-now" "" "${auth[@]}")
  echo "POST $TM_URL/api/admin/transactions/$gid/retry-now -> ${reply%% *}"
  status=$(wait_final "$gid")
  show_transaction "$gid"
  show_diagram "$gid"
  restart_with trans-in
  da=$(($(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1) - a_before))
  db=$(($(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1) - b_before))
  if [[ $attempts -ge $alert_after && $status == succeed && $da == "-$AMOUNT" && $db == "$AMOUNT" ]]; then
    echo "=> as expected: $attempts failed Confirm attempts (alerted), then global succeed, bank A $(signed "$da"), bank B $(signed "$db")"
  else
    echo "=> UNEXPECTED: $attempts attempts, global $status, bank A $(signed "$da"), bank B $(signed "$db")"
    FAILED=$((FAILED + 1))
  fi
  echo
}

scenario_wait_result() {
  local path reply gid t0 t1 answered now_status status a_before b_before da db
  echo "=== wait-result: wait_result=false, TransIn's Confirm takes 2 s"
  a_before=$(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1)
  b_before=$(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1)
  path="fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_confirm=delay:2000&request_timeout=5&wait_result=false"
  t0=$(now_ms)
  path=$(with_participant "$path")
  reply=$(http GET "$APP_URL/$path")
  t1=$(now_ms)
  echo "AP: GET $APP_URL/$path -> ${reply%% *} after $((t1 - t0)) ms"
  json_pretty <<<"${reply#* }"
  gid=$(json_get gid <<<"${reply#* }")
  [[ -n $gid ]] || die "the AP answered no gid"
  answered=$(json_get status <<<"${reply#* }")
  now_status=$(http GET "$DTM_URL/query?gid=$gid" | cut -d' ' -f2- | json_get transaction status)
  echo "the AP answered at submit: status $answered; the coordinator says $now_status right now"
  status=$(wait_final "$gid")
  echo "final status $status, $(($(now_ms) - t0)) ms after the call (with wait_result, the default, the AP would have answered only now)"
  show_transaction "$gid"
  show_diagram "$gid"
  da=$(($(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1) - a_before))
  db=$(($(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1) - b_before))
  if [[ $answered == submitted && $status == succeed && $da == "-$AMOUNT" && $db == "$AMOUNT" ]]; then
    echo "=> as expected: answered submitted at once, then succeed; bank A $(signed "$da"), bank B $(signed "$db")"
  else
    echo "=> UNEXPECTED: answered $answered, final $status, bank A $(signed "$da"), bank B $(signed "$db")"
    FAILED=$((FAILED + 1))
  fi
  echo
}

scenario_replicas() {
  local b_run="$RUN_DIR/replica-b" b_offset=$((PORT_OFFSET + 1)) b_url b_log secret
  local path reply gid status a_before b_before da db
  echo "=== replicas: a second coordinator (COORDINATOR_ID=replica-b) on the same database takes over"
  secret=$(signing_secret)
  [[ -n $secret ]] || die "no signing secret found (BRANCH_SIGNING_SECRET or $RUN_DIR/signing-secret): replica-b must sign as the first coordinator does"
  b_url="http://127.0.0.1:$(PORT_OFFSET=$b_offset svc_port coordinator)"
  b_log="$b_run/coordinator.log"
  echo "starting replica-b on $b_url, same database: RUN_DIR=$b_run PORT_OFFSET=$b_offset COORDINATOR_ID=replica-b scripts/up.sh coordinator"
  RUN_DIR=$b_run PORT_OFFSET=$b_offset COORDINATOR_ID=replica-b BRANCH_SIGNING_SECRET=$secret \
    ADMIN_TOKEN=$(admin_token) "$SCRIPTS/up.sh" coordinator >/dev/null
  a_before=$(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1)
  b_before=$(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1)
  path="fireTcc?amount=$AMOUNT&from=$FROM&to=$TO&trans_in_confirm=delay:3000&request_timeout=5&retry_interval=1&wait_result=false"
  path=$(with_participant "$path")
  reply=$(http GET "$APP_URL/$path")
  echo "AP (its coordinator is the first one, $TM_URL): GET $APP_URL/$path -> ${reply%% *}"
  gid=$(json_get gid <<<"${reply#* }")
  [[ -n $gid ]] || die "the AP answered no gid"
  sleep 1
  crash coordinator
  echo "replica-b claims $gid once the killed replica's lease has expired (LEASE_SECONDS=$LEASE_SECONDS, at least request_timeout + 5 s); waiting..."
  status=$(DTM_URL="$b_url/api/dtmsvr" WAIT_FINAL=$((LEASE_SECONDS + 30)) wait_final "$gid")
  DTM_URL="$b_url/api/dtmsvr" show_transaction "$gid"
  TM_URL=$b_url show_diagram "$gid"
  echo "replica-b's log ($b_log), gid=$gid:"
  grep -F "gid=$gid " "$b_log" | sed 's/^/  /' | tail -n 12 || true
  show_log trans-in "$gid"
  restart coordinator
  echo "stopping replica-b: RUN_DIR=$b_run PORT_OFFSET=$b_offset scripts/down.sh coordinator"
  RUN_DIR=$b_run PORT_OFFSET=$b_offset "$SCRIPTS/down.sh" coordinator >/dev/null
  da=$(($(account "$TRANS_OUT_URL" "$FROM" | cut -d' ' -f1) - a_before))
  db=$(($(account "$TRANS_IN_URL" "$TO" | cut -d' ' -f1) - b_before))
  if [[ $status == succeed && $da == "-$AMOUNT" && $db == "$AMOUNT" ]] && grep -qF "gid=$gid branch_id=- op=- submitted -> succeed" "$b_log"; then
    echo "=> as expected: replica-b finished it: global succeed, bank A $(signed "$da"), bank B $(signed "$db") (exactly once)"
  else
    echo "=> UNEXPECTED: global $status, bank A $(signed "$da"), bank B $(signed "$db") (finished by replica-b: see its log above)"
    FAILED=$((FAILED + 1))
  fi
  echo
}

# psql on the database of binary $1, on the server scripts/up.sh uses (PG_URL, else its private
# cluster); fails when psql is missing or no server answers.
demo_psql() {
  local url=${PG_URL:-postgres://postgres@127.0.0.1:5432}
  command -v psql >/dev/null 2>&1 || return 1
  url=${url%/}
  if ! pg_answers "$url"; then url=$(pg_private_url) || return 1; fi
  psql "$url/$(svc_db "$1")" -XqtA -v ON_ERROR_STOP=1
}

# Barrier rows of gid $2 in binary $1's database ("?" when they cannot be read).
barrier_rows() {
  [[ $2 =~ ^[A-Za-z0-9._:-]+$ ]] || die "unexpected gid '$2'"
  demo_psql "$1" <<<"SELECT count(*) FROM dtm_barrier.barrier WHERE gid = '$2'" 2>/dev/null || echo "?"
}

scenario_retention() {
  local gid code out_rows in_rows deadline t0 gone_tm="" gone_rm=""
  echo "=== retention: the coordinator with RETENTION_SECONDS=5, the banks with BARRIER_RETENTION_SECONDS=5"
  echo "(this deletes every transaction of this system that finished more than 5 s ago, and the banks'"
  echo "settled barrier rows; the three binaries are restarted with the setting and afterwards without it)"
  restart_with coordinator RETENTION_SECONDS=5
  restart_with trans-out BARRIER_RETENTION_SECONDS=5
  restart_with trans-in BARRIER_RETENTION_SECONDS=5
  fire_and_show "retention: a transfer to be forgotten" \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO" succeed "-$AMOUNT" "$AMOUNT"
  gid=$LAST_GID
  t0=$SECONDS
  echo "barrier rows of $gid now: trans_out $(barrier_rows trans-out "$gid"), trans_in $(barrier_rows trans-in "$gid")"
  echo "waiting for the retention jobs (the coordinator's every 10 worker ticks, the banks' every 0.5 s)..."
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)) && [[ -z $gone_tm || -z $gone_rm ]]; do
    if [[ -z $gone_tm ]]; then
      code=$(http GET "$DTM_URL/query?gid=$gid" | cut -d' ' -f1)
      if [[ $code == 404 ]]; then
        gone_tm=$((SECONDS - t0))
        echo "  after ${gone_tm} s: GET $DTM_URL/query?gid=$gid -> 404 (transaction and branch ops deleted)"
      fi
    fi
    if [[ -z $gone_rm ]]; then
      out_rows=$(barrier_rows trans-out "$gid")
      in_rows=$(barrier_rows trans-in "$gid")
      if [[ $out_rows == 0 && $in_rows == 0 ]]; then
        gone_rm=$((SECONDS - t0))
        echo "  after ${gone_rm} s: no barrier rows of $gid left in trans_out nor trans_in"
      elif [[ $out_rows == "?" ]]; then
        gone_rm="?"
        echo "  (the barrier rows cannot be read: psql missing or the database unreachable)"
      fi
    fi
    sleep 0.5
  done
  restart_with coordinator
  restart_with trans-out
  restart_with trans-in
  if [[ -n $gone_tm && -n $gone_rm ]]; then
    echo "=> as expected: the finished transaction and its barrier rows were deleted (unfinished ones never are)"
  else
    echo "=> UNEXPECTED: after 60 s, $gid deleted by the coordinator: ${gone_tm:+yes}${gone_tm:-no}; barrier rows left: ${out_rows:-?} in trans_out, ${in_rows:-?} in trans_in"
    FAILED=$((FAILED + 1))
  fi
  echo
}

scenario_purchase() {
  local price
  price=$(http GET "$STOCK_URL/products/1" | cut -d' ' -f2- | json_get price)
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

# Every database back to its seeded state: stop, drop, start (scripts/up.sh creates and seeds).
reset_system() {
  local url name dbs=()
  [[ -f $RUN_DIR/coordinator.pid || -f $RUN_DIR/app.pid ]] ||
    die "no system started by scripts/up.sh in $RUN_DIR: nothing to reset"
  echo "=== reset: stopping the system, dropping its databases, starting it again (seeded)"
  "$SCRIPTS/down.sh" >/dev/null
  url=${PG_URL:-postgres://postgres@127.0.0.1:5432}
  url=${url%/}
  if ! pg_answers "$url"; then url=$(pg_private_url) || die "no Postgres answers at $url"; fi
  for name in "${SVC_NAMES[@]}"; do
    [[ -n $(svc_db "$name") ]] && dbs+=("$(svc_db "$name")")
  done
  PG_URL=$url pg_drop_databases "${dbs[@]}"
  echo "dropped ${dbs[*]}"
  SKIP_BUILD=${SKIP_BUILD:-1} "$SCRIPTS/up.sh" >/dev/null
  echo "started again: bank A account $FROM = $(account "$TRANS_OUT_URL" "$FROM"), bank B account $TO = $(account "$TRANS_IN_URL" "$TO") (balance trading_balance)"
}

run_scenario() {
  if [[ -n $STEP_PAUSE || $STEP_ENTER == 1 ]]; then
    case "$1" in
      success | fireTcc) step_success ;;
      rollback | fireTccRollback) step_rollback ;;
      *) die "$1 cannot be stepped through; these can: ${STEPPED_SCENARIOS[*]}" ;;
    esac
    return 0
  fi
  case "$1" in
    success | fireTcc) scenario_success ;;
    rollback | fireTccRollback) scenario_rollback ;;
    confirm-retry) scenario_confirm_retry ;;
    ongoing) scenario_ongoing ;;
    try-timeout) scenario_try_timeout ;;
    hanging-try) scenario_hanging_try ;;
    empty-compensation) scenario_empty_compensation ;;
    confirm-failure) scenario_confirm_failure ;;
    duplicates) scenario_duplicates ;;
    race) scenario_race ;;
    ap-crash) scenario_ap_crash ;;
    coordinator-crash) scenario_coordinator_crash ;;
    coordinator-crash-cancel) scenario_coordinator_crash_cancel ;;
    rm-down) scenario_rm_down ;;
    replicas) scenario_replicas ;;
    wait-result) scenario_wait_result ;;
    retention) scenario_retention ;;
    purchase | firePurchase) scenario_purchase ;;
    nested | fireTccNested) scenario_nested ;;
    nested-rollback) scenario_nested_rollback ;;
    all) for s in "${SCENARIOS[@]}"; do run_scenario "${s%%|*}"; done ;;
    *) die "unknown scenario '$1'; scripts/demo.sh --list shows them" ;;
  esac
}

list_scenarios() {
  local line
  for line in "${SCENARIOS[@]}"; do printf '  %-25s %s\n' "${line%%|*}" "${line#*|}"; done
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
  local scenarios=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --pause)
        [[ ${2:-} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--pause needs a number of seconds"
        STEP_PAUSE=$2
        shift 2
        ;;
      --step) STEP_ENTER=1 && shift ;;
      --cancel-first | --try-first) RACE_ORDER=${1#--} && shift ;;
      reset) reset_system && return 0 ;;
      *) scenarios+=("$1") && shift ;;
    esac
  done
  if [[ -n ${PARTICIPANT:-} && ! $PARTICIPANT =~ ^[A-Za-z0-9_]{1,20}$ ]]; then
    die "PARTICIPANT may hold 1 to 20 letters, digits or _, got '$PARTICIPANT'"
  fi
  [[ ${#scenarios[@]} -gt 0 ]] || scenarios=("${DEFAULT_SCENARIOS[@]}")
  FAILED=0
  for s in "${scenarios[@]}"; do run_scenario "$s"; done
  if [[ $FAILED -gt 0 ]]; then
    echo "$FAILED scenario(s) did not end as expected"
    return 1
  fi
}

main "$@"
