#!/usr/bin/env bash
# Usage: scripts/fuzz_api.sh [binary...]
#
# Fuzzes every binary's HTTP API from its own OpenAPI description (GET /api/openapi.json,
# generated from the code by utoipa) with schemathesis, against a private copy of the whole
# system, so it never disturbs one started by scripts/up.sh. With names, only those binaries
# (coordinator trans-out trans-in stock app).
#
# What is checked, on every answer (schemathesis --checks):
#   not_a_server_error            no 5xx, ever (a panic, a leaked database error, ...)
#   status_code_conformance       the status is one the description documents for that operation
#   content_type_conformance      the Content-Type is the one documented for that status
#   response_schema_conformance   the body matches the schema documented for that status
# How many cases: FUZZ_EXAMPLES per operation (default 40) in each of schemathesis' phases
# examples, coverage (boundary values, missing and wrongly typed fields, negative cases) and
# fuzzing (generated from the schemas); FUZZ_SEED fixes the random choices (default: printed by
# schemathesis, pass it back to replay a run).
#
# How the system runs while fuzzed:
#   - BRANCH_HOST_ALLOWLIST=127.0.0.1,localhost: whatever URL the fuzzer registers, the
#     coordinator only ever calls this machine's loopback;
#   - BRANCH_SIGNING_SECRET and ADMIN_TOKEN set (random): unsigned Confirm/Cancel calls must be
#     refused with a documented 401 (or 503), never run unless the coordinator reports them due;
#     the coordinator is fuzzed with the admin token, so that retry-now and force-stop are
#     exercised past their authorization (the token's refusals are covered by
#     crates/test-support/tests/admin.rs);
#   - FAULT_INJECTION=off: an injected `error` fault answers 500 on purpose, which is not a bug;
#     with injection off, fault parameters must be refused with a documented 400 instead.
# Setup as scripts/dtmcli_check.sh: schemathesis (pinned) in a venv under target/fuzz-venv,
# Postgres from scripts/lib/pg.sh, fresh databases fuzz_*, ports = defaults + an offset,
# logs in target/fuzz-run/, everything stopped and dropped on exit (KEEP=1 keeps it).
#
# Environment: PROFILE=release|dev (default release; scripts/test.sh uses dev), SKIP_BUILD=1,
# FUZZ_EXAMPLES, FUZZ_SEED, KEEP=1, FUZZ_VENV, PYTHON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUN_DIR="${FUZZ_RUN_DIR:-$ROOT/target/fuzz-run}"
export DB_PREFIX=fuzz_
export PORT_OFFSET=0
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source=scripts/lib/python.sh
source "$ROOT/scripts/lib/python.sh"

VENV="${FUZZ_VENV:-$ROOT/target/fuzz-venv}"
SCHEMATHESIS_VERSION=4.32.5
EXAMPLES="${FUZZ_EXAMPLES:-40}"
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

log() { printf '[fuzz-api] %s\n' "$*"; }

svc_load
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${SVC_NAMES[@]}")
for name in "${targets[@]}"; do
  svc_port "$name" >/dev/null 2>&1 || svc_die "unknown binary $name (one of ${SVC_NAMES[*]})"
done
py_install "$VENV" schemathesis "$SCHEMATHESIS_VERSION"
export BRANCH_HOST_ALLOWLIST=127.0.0.1,localhost
export FAULT_INJECTION=off
BRANCH_SIGNING_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
ADMIN_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export BRANCH_SIGNING_SECRET ADMIN_TOKEN
svc_start_private fuzz-api

seed_args=()
[[ -n ${FUZZ_SEED:-} ]] && seed_args=(--seed "$FUZZ_SEED")
failed=()
for name in "${targets[@]}"; do
  url="http://127.0.0.1:$(svc_port "$name")/api/openapi.json"
  auth_args=()
  [[ $name == coordinator ]] && auth_args=(--header "Authorization: Bearer $ADMIN_TOKEN")
  log "$name: schemathesis $SCHEMATHESIS_VERSION, $EXAMPLES examples per operation, checks $CHECKS"
  if ! "$PY_BIN/schemathesis" run "$url" \
    --checks "$CHECKS" \
    --max-examples "$EXAMPLES" \
    --phases examples,coverage,fuzzing \
    --request-timeout 30 \
    --workers 1 \
    --no-color \
    ${auth_args[@]+"${auth_args[@]}"} \
    ${seed_args[@]+"${seed_args[@]}"}; then
    failed+=("$name")
  fi
  # The fuzzer must never have crashed the binary.
  svc_running "$name" || { failed+=("$name (process died)"); tail -n 30 "$(svc_log_file "$name")" >&2; }
done
if [[ ${#failed[@]} -gt 0 ]]; then
  log "FAILED: ${failed[*]} (logs in $RUN_DIR)"
  exit 1
fi
log "no 5xx, no undocumented status, content type or body on ${targets[*]}"
