#!/usr/bin/env bash
# Usage: scripts/adoption_check.sh
#
# docs/ADOPTING.md followed as a newcomer would, from its code blocks only: a new project in a
# temporary directory outside this workspace, with a copy of crates/tcc under crates/tcc (step 1),
# the dependencies of step 1's `toml` block, step 4's bank (an RM: TransOut and TransIn through
# the barrier) as `src/bin/bank.rs` and step 5's AP as `src/bin/transfer.rs`, built with
# warnings as errors. Two banks run on their own databases (step 3's `sql` block applied with
# psql, one account seeded; each bank runs the barrier migration itself), behind this repository's
# coordinator (a private one: scripts/up.sh with its own run directory, ports and database).
# Checked, through the banks' databases:
#   1. a transfer commits: `transfer 30 1 1` prints `committed: true`, 30 left bank A and
#      arrived at bank B, nothing frozen, both holds confirmed;
#   2. a transfer whose credit is refused (no account 999 at bank B) rolls back: `committed:
#      false`, bank A's debit cancelled, nothing moved or frozen;
#   3. calls the banks must refuse change nothing (no barrier row, no hold, nothing frozen): a
#      Try without its gid's token and a Confirm without the coordinator's signature (401), and
#      the Try endpoint called with op=confirm or op=cancel, with or without the gid's token
#      (401 without it, 400 op_mismatch with it).
# One BRANCH_SIGNING_SECRET, made for the run, is shared by the coordinator, the banks and the AP.
# Everything it started is stopped and its databases dropped on exit (KEEP=1 leaves them).
# Build directory: target/adoption/, kept between runs. Environment: PROFILE (of the
# coordinator's build, default dev, as scripts/test.sh runs it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUN_DIR="$ROOT/target/adoption-run" DB_PREFIX=adoption_ PORT_OFFSET=0
export PROFILE="${PROFILE:-dev}"
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

say() { printf '[adoption] %s\n' "$*"; }
fail() {
  say "FAILED: $*" >&2
  for log in "$RUN_DIR"/bank-*.log "$(svc_log_file coordinator)"; do
    [[ -f $log ]] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
  done
  exit 1
}
started=$SECONDS

# The first code block of `lang` after the heading that starts with `heading`.
block() {
  awk -v heading="$1" -v fence="^\`\`\`$2" '
    index($0, heading) == 1 { seen = 1; next }
    seen && !inside && $0 ~ fence { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }' "$ROOT/docs/ADOPTING.md"
}

# 1. The project, from the guide.
work=$(mktemp -d "${TMPDIR:-/tmp}/adoption.XXXXXX")
project="$work/bank"
mkdir -p "$project/crates" "$project/src/bin"
cp -R "$ROOT/crates/tcc" "$project/crates/tcc"
cp "$ROOT/Cargo.lock" "$project/Cargo.lock"
{
  printf '[package]\nname = "adoption"\nversion = "0.1.0"\nedition = "2021"\npublish = false\n\n'
  block "## 1." toml
} >"$project/Cargo.toml"
block "## 4." rust >"$project/src/bin/bank.rs"
block "## 5." rust >"$project/src/bin/transfer.rs"
block "## 3." sql >"$work/bank.sql"
for f in "$project/Cargo.toml" "$project/src/bin/bank.rs" "$project/src/bin/transfer.rs" "$work/bank.sql"; do
  [[ $(wc -l <"$f") -gt 5 ]] || fail "no code block found for $f in docs/ADOPTING.md"
done
say "project from docs/ADOPTING.md in $project"
build_started=$SECONDS
(cd "$project" && CARGO_TARGET_DIR="$ROOT/target/adoption" RUSTFLAGS="-D warnings" cargo build --bins) ||
  fail "the guide's code does not build"
bin="$ROOT/target/adoption/debug"
say "built in $((SECONDS - build_started))s"

# 2. A private coordinator and two banks, sharing one secret.
BRANCH_SIGNING_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export BRANCH_SIGNING_SECRET
svc_load
"$ROOT/scripts/down.sh" >/dev/null
svc_pick_port_offset
pg_ensure
SVC_PRIVATE_PG_STARTED=$PG_STARTED_HERE
SVC_PRIVATE_DATABASES=("$(svc_db coordinator)" adoption_bank_a adoption_bank_b)
bank_pids=()
# Called by svc_stop_private, the EXIT trap.
# shellcheck disable=SC2317
svc_private_on_exit() {
  [[ ${#bank_pids[@]} -gt 0 ]] && kill "${bank_pids[@]}" 2>/dev/null
  rm -rf "$work"
}
trap svc_stop_private EXIT
pg_drop_databases "${SVC_PRIVATE_DATABASES[@]}"
mkdir -p "$RUN_DIR"
"$ROOT/scripts/up.sh" coordinator >"$RUN_DIR/up.log" 2>&1 || {
  cat "$RUN_DIR/up.log" >&2
  fail "scripts/up.sh coordinator"
}
dtm_url="http://127.0.0.1:$(svc_port coordinator)/api/dtmsvr"

port=$(($(svc_port coordinator) + 100))
declare -A bank_url
for bank in a b; do
  db=adoption_bank_$bank
  pg_create_databases "$db"
  # The business schema with psql ("any tool"); the bank creates its barrier table itself.
  psql "$PG_URL/$db" -Xq -v ON_ERROR_STOP=1 -f "$work/bank.sql" >/dev/null
  psql "$PG_URL/$db" -Xq -c "INSERT INTO accounts (id, balance) VALUES (1, 1000)"
  port=$(pg_free_port $((port + 1)))
  DATABASE_URL="$PG_URL/$db" PORT=$port RUST_LOG=info "$bin/bank" >"$RUN_DIR/bank-$bank.log" 2>&1 &
  bank_pids+=($!)
  bank_url[$bank]="http://127.0.0.1:$port/api"
done
for bank in a b; do
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "${bank_url[$bank]}/TransOutTry" || true)
    [[ $code != 000 ]] && break
    sleep 0.1
  done
  [[ $code != 000 ]] || fail "bank $bank does not answer at ${bank_url[$bank]}"
done
say "coordinator $dtm_url, bank A ${bank_url[a]}, bank B ${bank_url[b]}"

q() { psql "$PG_URL/adoption_bank_$1" -XqtA -c "$2"; }
expect() { # what, got, want
  [[ $2 == "$3" ]] || fail "$1: got '$2', want '$3'"
  say "ok: $1 ($2)"
}
transfer() {
  DTM_URL=$dtm_url BANK_A_URL=${bank_url[a]} BANK_B_URL=${bank_url[b]} "$bin/transfer" "$@"
}
account='SELECT balance, trading_balance FROM accounts WHERE id = 1'
holds="SELECT coalesce(string_agg(state, ',' ORDER BY state), '') FROM holds"

# 3. A transfer that commits.
out=$(transfer 30 1 1) || fail "transfer 30 1 1: $out"
expect "transfer 30 1 1 answers" "$(tail -n 1 <<<"$out")" "committed: true"
expect "bank A after the commit (balance|frozen)" "$(q a "$account")" "970|0"
expect "bank B after the commit" "$(q b "$account")" "1030|0"
expect "holds after the commit (A, B)" "$(q a "$holds"),$(q b "$holds")" "confirmed,confirmed"

# 4. A transfer whose credit is refused rolls back.
out=$(transfer 30 1 999) || fail "transfer 30 1 999: $out"
expect "transfer 30 1 999 answers" "$(tail -n 1 <<<"$out")" "committed: false"
grep -q "rolled back: .*unknown account" <<<"$out" || fail "no rollback reason in: $out"
expect "bank A after the rollback" "$(q a "$account")" "970|0"
expect "bank B after the rollback" "$(q b "$account")" "1030|0"
expect "bank A's holds after the rollback" "$(q a "$holds")" "cancelled,confirmed"

# 5. What the banks must refuse, and that it changes nothing.
gid_token() {
  python3 -c 'import hashlib, hmac, sys
key, gid = sys.argv[1].encode(), sys.argv[2].encode()
print("v1=" + hmac.new(key, b"tcc-gid-token\n" + gid, hashlib.sha256).hexdigest())' \
    "$BRANCH_SIGNING_SECRET" "$1"
}
refused() { # what, want (status and code), endpoint, op, headers...
  local what=$1 want=$2 endpoint=$3 op=$4 gid="adoption-refused-$4" answer
  shift 4
  answer=$(curl -s -w ' %{http_code}' -X POST -H 'Content-Type: application/json' "$@" \
    -d '{"account_id": 1, "amount": 30}' \
    "${bank_url[a]}/$endpoint?gid=$gid&trans_type=tcc&branch_id=01&op=$op")
  [[ $answer == *"\"${want#* }\""*" ${want%% *}" ]] || fail "$what answered: $answer (want $want)"
  say "ok: $what is refused ($want)"
}
refused "a Try without its gid's token" "401 missing_gid_token" TransOutTry try
refused "a Try with another gid's token" "401 bad_gid_token" TransOutTry try \
  -H "X-Tcc-Gid-Token: $(gid_token some-other-gid)"
refused "a Confirm without the coordinator's signature" "401 missing_signature" TransOutConfirm confirm
for op in confirm cancel; do
  refused "TransOutTry with op=$op" "401 missing_signature" TransOutTry "$op"
  refused "TransOutTry with op=$op and the gid's token" "400 op_mismatch" TransOutTry "$op" \
    -H "X-Tcc-Gid-Token: $(gid_token "adoption-refused-$op")"
done
expect "barrier rows of the refused calls" \
  "$(q a "SELECT count(*) FROM dtm_barrier.barrier WHERE gid LIKE 'adoption-refused-%'")" "0"
expect "bank A after the refused calls" "$(q a "$account")" "970|0"
expect "bank A's holds after the refused calls" "$(q a "$holds")" "cancelled,confirmed"

say "passed in $((SECONDS - started))s: the guide's bank and AP commit, roll back, and refuse unproven callers and a wrong op"
