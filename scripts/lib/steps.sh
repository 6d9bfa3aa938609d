# shellcheck shell=bash
# Step-through of a demo scenario (scripts/demo.sh NAME --pause SECONDS | --step): the global
# transaction really stops between its protocol steps, and each stop prints what is true at that
# moment, read live from the RMs' and the coordinator's APIs.
#
# How it stops: the scenario's fire request carries `pause` and `pause-after` faults
# (service_kit::pause). `pause-after` on a Try holds its answer once the Try has committed (the
# AP cannot go on to the next branch or to submit); `pause` on a Confirm or Cancel holds the call
# before its work (the TM's pass waits there). A held call shows in its RM's GET /api/paused; the
# demo prints the state, waits (STEP_PAUSE seconds, or Enter with --step), and resumes it with
# POST /api/paused/resume. A held call resumes by itself after 50 s, so the fire request sets
# request_timeout=60 and no call times out while a room looks.
#
# Needs demo.sh's helpers (http, json_get, snapshot, wait_final, verdict, the URLs, FROM/TO/AMOUNT,
# TM_URL, die).

# STEP_PAUSE (seconds) or STEP_ENTER=1; set by demo.sh's --pause / --step.
STEP_PAUSE=${STEP_PAUSE:-}
STEP_ENTER=${STEP_ENTER:-0}

# The scenarios that can be stepped through, each a function step_<name> below (demo.sh names
# them when asked for another).
# shellcheck disable=SC2034
STEPPED_SCENARIOS=(success rollback)

# Prints what is true for gid $1 now: the coordinator's status, lease and next retry, each op;
# both accounts; each bank's holds and barrier rows of the gid.
show_moment() {
  local gid=$1 tx a b
  tx=$(http GET "$TM_URL/api/admin/transactions/$gid")
  a=$(http GET "$TRANS_OUT_URL/accounts/$FROM")
  b=$(http GET "$TRANS_IN_URL/accounts/$TO")
  local out_view in_view
  out_view=$(http GET "$TRANS_OUT_URL/branches/$gid")
  in_view=$(http GET "$TRANS_IN_URL/branches/$gid")
  python3 - "$tx" "$a" "$b" "$out_view" "$in_view" <<'EOF'
import json, sys

def body(reply):
    code, _, text = reply.partition(" ")
    try:
        return json.loads(text) if code == "200" else {}
    except ValueError:
        return {}

tx, a, b, out_view, in_view = (body(r) for r in sys.argv[1:])
t = tx.get("transaction") or {}
dash = lambda v: "-" if v in (None, "") else v
print("  coordinator: status=%s owner=%s lease_expire=%s next_retry_time=%s timeout_time=%s" % (
    dash(t.get("status")), dash(t.get("owner")), dash(t.get("lease_expire")),
    dash(t.get("next_retry_time")), dash(t.get("timeout_time"))))
for branch in tx.get("branches") or []:
    ops = ", ".join("%s %s (attempts %s)" % (o["op"], o["status"], o["attempts"])
                    for o in branch.get("ops") or [])
    print("    branch %s: %s" % (branch.get("branch_id"), ops or "registered"))
print("  bank A account %s: balance=%s trading_balance=%s (frozen)" % (
    a.get("id"), a.get("balance"), a.get("trading_balance")))
print("  bank B account %s: balance=%s pending_in=%s (credits promised)" % (
    b.get("id"), b.get("balance"), b.get("pending_in")))
for name, view in (("bank A", out_view), ("bank B", in_view)):
    holds = ["%s %s %s %s" % (h["branch_id"], h["direction"], h["amount"], h["state"])
             for h in view.get("holds") or []]
    rows = ["%s %s (by %s)" % (r["branch_id"], r["op"], r["reason"]) for r in view.get("barrier") or []]
    print("  %s holds: %s" % (name, "; ".join(holds) or "none"))
    print("  %s barrier: %s" % (name, "; ".join(rows) or "none"))
EOF
}

# Waits until RM $1 (its /api base URL) holds a call of a gid starting with $2; prints
# "gid op stage".
wait_held() {
  local rm=$1 prefix=$2 deadline=$((SECONDS + 60)) found
  while ((SECONDS < deadline)); do
    found=$(http GET "$rm/paused" | cut -d' ' -f2- | python3 -c '
import json, sys
prefix = sys.argv[1]
try:
    calls = json.load(sys.stdin)
except ValueError:
    calls = []
for c in calls:
    if c["gid"].startswith(prefix):
        print(c["gid"], c["op"], c["stage"]); break
' "$prefix")
    [[ -n $found ]] && { echo "$found"; return 0; }
    sleep 0.1
  done
  die "no call held at $rm within 60 s (is fault injection on? FAULT_INJECTION=on)"
}

# Waits as the step mode says, then resumes gid $2's held call at RM $1.
go_on() {
  if [[ $STEP_ENTER == 1 ]]; then
    read -r -p "  [Enter] next step " _ </dev/tty
  else
    sleep "$STEP_PAUSE"
  fi
  local reply
  reply=$(http POST "$1/paused/resume?gid=$2")
  [[ ${reply%% *} == 200 ]] || die "resume at $1 answered $reply"
}

# The gid prefix of one stepped run: the participant's name and a run number, so that this run
# finds its own transaction even in a room sharing one system.
run_prefix() {
  local who=${PARTICIPANT:-demo}
  echo "${who:0:20}-$RANDOM$RANDOM"
}

# Fires AP path $2 with the pause faults in $3 and stops at each held call: $7... are
# "RM_URL|what the stop shows" in the order the calls are held; $1 is the title; $4 the expected
# final status, $5 and $6 the expected balance changes of bank A and B. Sets demo.sh's LAST_GID
# and FAILED (verdict); prints the AP's answer and the settled state at the end.
stepped_fire() {
  local title=$1 path=$2 faults=$3 expect=$4 delta_a=$5 delta_b=$6
  shift 6
  local prefix tmp gid="" held rm_url what n=0 code a0 at0 b0 bt0 a1 at1 b1 bt1
  prefix=$(run_prefix)
  tmp=$(mktemp -d)
  echo "=== $title (step by step: $([[ $STEP_ENTER == 1 ]] && echo "Enter between steps" || echo "${STEP_PAUSE} s per stop"))"
  snapshot a0 at0 b0 bt0
  echo "AP: GET $APP_URL/$path&$faults&request_timeout=60&gid_prefix=$prefix (in the background)"
  curl -sS --max-time 900 -o "$tmp/answer" -w '%{http_code}' \
    "$APP_URL/$path&$faults&request_timeout=60&gid_prefix=$prefix" >"$tmp/code" 2>/dev/null &
  local fire_pid=$!
  for stop in "$@"; do
    rm_url=${stop%%|*}
    what=${stop#*|}
    n=$((n + 1))
    read -r held _ <<<"$(wait_held "$rm_url" "$prefix-")"
    if [[ -z $gid ]]; then
      gid=$held
      echo "gid: $gid"
    fi
    echo "--- stop $n: $what"
    show_moment "$gid"
    go_on "$rm_url" "$gid"
  done
  wait "$fire_pid" || true
  code=$(cat "$tmp/code")
  echo "AP answered $code:"
  json_pretty <"$tmp/answer"
  rm -rf "$tmp"
  # shellcheck disable=SC2034 # read by demo.sh's scenarios
  LAST_GID=$gid
  local status
  status=$(wait_final "$gid")
  echo "--- settled: $status"
  show_moment "$gid"
  snapshot a1 at1 b1 bt1
  local ok=0
  [[ $status == "$expect" && $((a1 - a0)) == "$delta_a" && $((b1 - b0)) == "$delta_b" &&
    $at1 == "$at0" && $bt1 == "$bt0" ]] && ok=1
  verdict "$ok" "$expect" "$delta_a" "$delta_b" "nothing left frozen"
}

step_success() {
  stepped_fire "success: fireTcc moves $AMOUNT from bank A to bank B" \
    "fireTcc?amount=$AMOUNT&from=$FROM&to=$TO" \
    "trans_out_try=pause-after&trans_in_try=pause-after&trans_in_confirm=pause&trans_out_confirm=pause" \
    succeed "-$AMOUNT" "$AMOUNT" \
    "$TRANS_OUT_URL|Try 01 (TransOut) committed, its answer held: $AMOUNT frozen at bank A, hold tentative; branch 02 not registered yet" \
    "$TRANS_IN_URL|Try 02 (TransIn) committed, its answer held: a credit promised at bank B; not submitted yet (prepared)" \
    "$TRANS_IN_URL|submitted; Confirm 02 (TransIn, the last registered first) held before its work: both holds still tentative" \
    "$TRANS_OUT_URL|Confirm 02 applied (bank B credited); Confirm 01 (TransOut) held: bank A still frozen"
}

step_rollback() {
  stepped_fire "rollback: fireTccRollback, TransIn's Try refused, nothing moves" \
    "fireTccRollback?amount=$AMOUNT&from=$FROM&to=$TO" \
    "trans_out_try=pause-after&trans_in_cancel=pause&trans_out_cancel=pause" \
    failed 0 0 \
    "$TRANS_OUT_URL|Try 01 (TransOut) committed, its answer held: $AMOUNT frozen at bank A, hold tentative" \
    "$TRANS_IN_URL|Try 02 refused, the AP aborted: aborting; Cancel 02 (TransIn) held before its work, no Try there to undo" \
    "$TRANS_OUT_URL|Cancel 02 done (an empty compensation: its barrier wrote the try row); Cancel 01 (TransOut) held: bank A still frozen"
}
