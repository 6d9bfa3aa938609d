#!/usr/bin/env bash
# Usage: scripts/chaos.sh [seconds]
#
# The chaos run ("nothing lost"): starts the five binaries as processes on fresh
# databases, fires many concurrent transfers and purchases over a few hot accounts and products
# with random faults (Try refusals, Confirm/Cancel errors and ONGOING answers, a misbehaving RM's
# 202 or 307 that did nothing, Trys that outlast the request timeout), while SIGKILLing and restarting the coordinator, each RM and the AP at
# random moments; then waits until every global transaction has finished and checks the
# invariants (money conserved, nothing frozen or tentative, stock never oversold, every gid
# finished, each branch applied at most once) with SQL. It prints a summary and exits non-zero on
# any violation. The run itself is the ignored Rust test crates/test-support/tests/chaos.rs
# (its module docs describe every check).
#
#   seconds               how long to fire and kill (default: CHAOS_SECONDS, else 60)
#
# Environment (all optional; see chaos.rs):
#   CHAOS_SEED            seed of every random choice (default: random); printed first, give it
#                         back to replay the same choices
#   CHAOS_CONCURRENCY=16  concurrent AP callers
#   CHAOS_ACCOUNTS=5 CHAOS_BALANCE=200000 CHAOS_PRODUCTS=3 CHAOS_STOCK=200
#   CHAOS_KILL_MS=1000-4000   pause between two kills (milliseconds, MIN-MAX)
#   CHAOS_SETTLE_SECONDS=120  how long every transaction may take to finish after the chaos
#   PROFILE=dev|release   cargo profile (default dev). The run's speed is set by Postgres, the
#                         injected delays and the timeouts, not by the binaries' CPU time, and
#                         the dev build is the one `cargo test` (scripts/test.sh, CI) has just
#                         made: a release build of the test and everything it links costs
#                         minutes on a two-core machine before the run even starts.
#   PG_URL                the Postgres server (scripts/lib/pg.sh finds or starts one, as
#                         scripts/test.sh does); the run creates and drops its own databases and
#                         holds about 25 connections.
#
# The whole output is also written to target/chaos/chaos-<seed>.log; the binaries' logs are under
# target/test-logs/ (their paths are printed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"

die() {
  printf 'chaos: error: %s\n' "$*" >&2
  exit 2
}

SECONDS_ARG="${1:-${CHAOS_SECONDS:-60}}"
[[ $SECONDS_ARG =~ ^[0-9]+$ && $SECONDS_ARG -ge 1 ]] || die "seconds must be a whole number >= 1, got '$SECONDS_ARG'"
export CHAOS_SECONDS=$SECONDS_ARG
# Chosen here when not given, so that it is printed even if the build or a start fails.
if [[ -z ${CHAOS_SEED:-} ]]; then
  CHAOS_SEED=$(od -An -N8 -tu8 /dev/urandom | tr -d ' \n')
fi
[[ $CHAOS_SEED =~ ^[0-9]+$ ]] || die "CHAOS_SEED must be a whole number, got '$CHAOS_SEED'"
export CHAOS_SEED

PROFILE="${PROFILE:-dev}"
case "$PROFILE" in
  dev | debug) profile_args=() ;;
  release) profile_args=(--release) ;;
  *) die "PROFILE must be dev or release, got '$PROFILE'" ;;
esac

echo "chaos: seed $CHAOS_SEED, $CHAOS_SECONDS s, profile $PROFILE (replay: CHAOS_SEED=$CHAOS_SEED scripts/chaos.sh $CHAOS_SECONDS)"
start=$SECONDS

pg_ensure
if [[ $PG_STARTED_HERE == 1 ]]; then
  trap pg_stop_private EXIT
fi
echo "chaos: Postgres at PG_URL=$PG_URL"

echo "chaos: building ($PROFILE)"
cargo build ${profile_args[@]+"${profile_args[@]}"} -p coordinator -p bank -p stock -p app --bins
cargo test ${profile_args[@]+"${profile_args[@]}"} -p test-support --test chaos --no-run
built=$SECONDS

mkdir -p target/chaos
log="target/chaos/chaos-$CHAOS_SEED.log"
status=0
# By its exact name, and checked below to have run: a renamed or removed test would otherwise
# make cargo report "0 passed", a success.
test_name=a_chaos_run_with_random_faults_and_kills_loses_and_creates_nothing
cargo test ${profile_args[@]+"${profile_args[@]}"} -p test-support --test chaos -- \
  --ignored --exact "$test_name" --nocapture 2>&1 | tee "$log" || status=$?

echo
echo "chaos: seed $CHAOS_SEED; build $((built - start)) s, run $((SECONDS - built)) s, total $((SECONDS - start)) s; output in $log"
if [[ $status != 0 ]]; then
  echo "chaos: FAILED (exit $status). Replay: CHAOS_SEED=$CHAOS_SEED scripts/chaos.sh $CHAOS_SECONDS (with the same other CHAOS_* settings: the test prints them all)" >&2
  exit 1
fi
if ! grep -q "test result: ok\. 1 passed" "$log"; then
  echo "chaos: FAILED: the test $test_name did not run (see $log)" >&2
  exit 1
fi
echo "chaos: passed"
