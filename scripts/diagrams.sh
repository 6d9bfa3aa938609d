#!/usr/bin/env bash
# Usage: scripts/diagrams.sh [name...]
#
# With the system up (scripts/up.sh), runs each scenario below through the AP, waits for the
# global transaction's final status, fetches its sequence diagram from the coordinator
# (GET /api/admin/transactions/{gid}/diagram, drawn from the coordinator's event log) and writes
# it to docs/diagrams/<name>.mmd; then docs/diagrams/README.md shows them all (Mermaid blocks,
# rendered by GitHub). With names, only those scenarios.
#
# The committed files are checked against the system by crates/test-support/tests/diagrams.rs
# (same participants and messages in the same order; latencies and retry delays aside): run
# this script again when a change to the protocol or the scenarios changes a diagram, and
# review the diff. Keep the scenario list in step with that test's SCENARIOS.
#
# Environment (defaults = scripts/up.sh's ports; the same names the app reads):
#   APP_URL=http://127.0.0.1:8080/api   DTM_URL=http://127.0.0.1:36789/api/dtmsvr
#   OUT_DIR=docs/diagrams               WAIT_FINAL=30 (seconds to wait for a final status)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APP_URL="${APP_URL:-http://127.0.0.1:8080/api}"
DTM_URL="${DTM_URL:-http://127.0.0.1:36789/api/dtmsvr}"
OUT_DIR="${OUT_DIR:-$ROOT/docs/diagrams}"
WAIT_FINAL="${WAIT_FINAL:-30}"
# The coordinator's base URL: DTM_URL without its /api/dtmsvr.
TM_URL="${DTM_URL%/api/dtmsvr}"

# name|AP path and query|final status|what it shows
SCENARIOS=(
  "fireTcc|fireTcc|succeed|a transfer that commits: Try on both banks, then Confirm on both, the last registered first"
  "fireTccRollback|fireTccRollback|failed|TransIn's Try refused: abort, Cancel on both banks, the last registered first"
  "confirm-retry|fireTcc?trans_in_confirm=error:2&retry_interval=1|succeed|TransIn's Confirm answers 500 twice: each attempt, the backoff, then the success"
  "fireTccNested|fireTccNested|succeed|nested TCC: branch 02's Try is an AP that adds TransIn as child 0201"
  "firePurchase|firePurchase|succeed|Stock, TransOut and TransIn in one global transaction"
)

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# json_field NAME: the top-level string field NAME of the JSON on stdin, or nothing.
json_field() {
  python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
    v = v[sys.argv[1]]
except Exception:
    sys.exit(0)
print(v if isinstance(v, str) else json.dumps(v))
' "$1"
}

# Prints the status of gid $1 once it is succeed or failed, or the last one seen after WAIT_FINAL.
wait_final() {
  local deadline=$((SECONDS + WAIT_FINAL)) status=""
  while ((SECONDS < deadline)); do
    status=$(curl -sS --max-time 10 "$DTM_URL/query?gid=$1" 2>/dev/null |
      python3 -c 'import json, sys
try:
    print(json.load(sys.stdin)["transaction"]["status"])
except Exception:
    pass')
    [[ $status == succeed || $status == failed ]] && break
    sleep 0.2
  done
  echo "$status"
}

# Runs scenario line $1 and writes its diagram.
generate() {
  local name path expect summary answer gid status file diagram line
  IFS='|' read -r name path expect summary <<<"$1"
  answer=$(curl -sS --max-time 60 "$APP_URL/$path") || die "GET $APP_URL/$path: no answer (is the system up? scripts/up.sh)"
  gid=$(json_field gid <<<"$answer")
  [[ -n $gid ]] || die "GET $APP_URL/$path answered no gid: $answer"
  status=$(wait_final "$gid")
  [[ $status == "$expect" ]] || die "$name: gid $gid ended '$status', expected '$expect'"
  file="$OUT_DIR/$name.mmd"
  diagram=$(curl -fsS --max-time 10 "$TM_URL/api/admin/transactions/$gid/diagram") ||
    die "GET $TM_URL/api/admin/transactions/$gid/diagram failed"
  # The gid comment changes with every run; name the scenario instead.
  while IFS= read -r line; do
    if [[ $line == "    %% global transaction "* ]]; then
      line="    %% $name: GET /api/$path ($summary). Written by scripts/diagrams.sh from a real run."
    fi
    printf '%s\n' "$line"
  done <<<"$diagram" >"$file"
  printf '%-16s gid %s %-8s -> %s\n' "$name" "$gid" "$status" "${file#"$ROOT"/}"
}

# docs/diagrams/README.md: every .mmd of the list, in a Mermaid block.
write_index() {
  local line name path expect summary
  {
    echo "# Sequence diagrams from real runs"
    echo
    echo "Each diagram below is what the coordinator drew from its event log for one real run of the"
    echo "scenario (\`GET /api/admin/transactions/{gid}/diagram\`), written by \`scripts/diagrams.sh\`"
    echo "with the system started by \`scripts/up.sh\`. \`crates/test-support/tests/diagrams.rs\` checks"
    echo "that the system still draws the same participants and messages in the same order; the"
    echo "latencies and retry delays are those of the run that wrote them."
    for line in "${SCENARIOS[@]}"; do
      IFS='|' read -r name path expect summary <<<"$line"
      [[ -f $OUT_DIR/$name.mmd ]] || continue
      echo
      echo "## $name"
      echo
      echo "\`GET /api/$path\`: $summary (final status \`$expect\`). Source: [\`$name.mmd\`]($name.mmd)."
      echo
      echo '```mermaid'
      cat "$OUT_DIR/$name.mmd"
      echo '```'
    done
  } >"$OUT_DIR/README.md"
}

main() {
  command -v curl >/dev/null || die "curl is required"
  command -v python3 >/dev/null || die "python3 is required"
  curl -fsS -o /dev/null --max-time 5 "$APP_URL/ping" || die "the AP does not answer at $APP_URL (start the system: scripts/up.sh)"
  mkdir -p "$OUT_DIR"
  local line found known
  for found in "$@"; do
    known=0
    for line in "${SCENARIOS[@]}"; do [[ ${line%%|*} == "$found" ]] && known=1; done
    [[ $known == 1 ]] || die "unknown scenario '$found' (known: fireTcc fireTccRollback confirm-retry fireTccNested firePurchase)"
  done
  for line in "${SCENARIOS[@]}"; do
    if [[ $# -eq 0 ]]; then
      generate "$line"
      continue
    fi
    for found in "$@"; do
      [[ ${line%%|*} == "$found" ]] && generate "$line"
    done
  done
  write_index
}

main "$@"
