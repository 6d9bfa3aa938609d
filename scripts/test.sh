#!/usr/bin/env bash
# Usage: scripts/test.sh [--install-deps] [-- cargo test arguments]
#
# The whole test suite, as README.md and .ci/run run it. It first checks that the machine has
# what the suite needs (scripts/install_deps.sh --check) and stops with the list of what is
# missing; --install-deps installs it first (Debian or Ubuntu, as root or with sudo).
#
#   1. finds or starts Postgres exactly as scripts/up.sh does (scripts/lib/pg.sh: the server at
#      PG_URL, default postgres://postgres@127.0.0.1:5432, else a private cluster under
#      target/pg/, stopped again at the end if this script started it) and exports PG_URL;
#      the tests create (and drop) their own databases on it;
#   2. shellcheck (when installed), cargo fmt --check, cargo clippy -D warnings, cargo deny
#      (when installed; deny.toml; advisories only when their database can be fetched from GitHub),
#      cargo test, cargo doc with -D warnings;
#   2b. crates/tcc copied alone outside the workspace, built and tested there as a service that
#      copies it would (scripts/tcc_alone.sh). TEST_TCC_ALONE=0 skips it.
#   2c. docs/ADOPTING.md followed from its code blocks alone (scripts/adoption_check.sh): a project
#      outside the workspace with a copy of crates/tcc, two of its banks behind a private
#      coordinator: a commit, a rollback, a Try refusing another op. TEST_ADOPTION=0 skips it.
#   2d. docs/WORKSHOP.md run exercise by exercise against a private copy of the system
#      (scripts/workshop_check.sh): each exercise's command blocks as written, and what its text
#      says will be seen (stops, statuses, balances, log lines, barrier rows, diagram lines).
#      TEST_WORKSHOP=0 skips it.
#   3. the DTM-client compatibility check (scripts/dtmcli_check.sh: Python dtmcli 1.7.7.0
#      from PyPI against a private copy of the system, debug build). TEST_DTMCLI=0 skips it.
#   3b. the check behind another DTM-compatible coordinator (scripts/dtmrs_check.sh: the AP and
#      the RMs, debug build, behind dtmrs 0.13.0 from crates.io, installed once under
#      target/dtmrs/: about 6 minutes cold on two cores). TEST_DTMRS=0 skips it.
#   4. the API fuzz run (scripts/fuzz_api.sh: schemathesis from PyPI against every binary's
#      OpenAPI description, on a private copy of the system, debug build): no 5xx, no answer
#      outside its description. TEST_FUZZ=0 skips it.
#   5. a short chaos run (scripts/chaos.sh: random faults and SIGKILLs of every binary, then the
#      invariants "nothing lost"), TEST_CHAOS_SECONDS long (default 20), debug build.
#      TEST_CHAOS=0 skips it.
#   6. the compose check (scripts/compose_check.sh: docker-compose.yml built and run, the
#      README's promises checked through the published ports) when a Docker engine and
#      docker-compose are there; TEST_COMPOSE=1 requires it (CI), TEST_COMPOSE=0 skips it. When
#      something (usually the tests' Postgres) holds 127.0.0.1:5432, the compose Postgres is
#      published on POSTGRES_HOST_PORT=15432 instead.
#
# Extra arguments are passed to `cargo test` (e.g. scripts/test.sh -- --nocapture).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"

step() { printf '\n==> %s\n' "$*"; }

if [[ ${1:-} == --install-deps ]]; then
  shift
  step "scripts/install_deps.sh"
  "$ROOT/scripts/install_deps.sh"
fi
if ! missing=$("$ROOT/scripts/install_deps.sh" --check); then
  printf 'error: this machine lacks what the tests need:\n' >&2
  while IFS= read -r item; do printf '  - %s\n' "$item"; done <<<"$missing" >&2
  printf 'scripts/test.sh --install-deps installs the packages (Debian or Ubuntu; the list is in scripts/install_deps.sh); Rust comes from rustup.\n' >&2
  exit 1
fi

pg_ensure
if [[ $PG_STARTED_HERE == 1 ]]; then
  trap pg_stop_private EXIT
fi
echo "Postgres for the tests: PG_URL=$PG_URL"

if command -v shellcheck >/dev/null 2>&1; then
  step "shellcheck (scripts, .ci/run)"
  shellcheck -x scripts/*.sh scripts/lib/*.sh .ci/run
else
  echo "(shellcheck not installed: shell scripts not linted)"
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The dependency tree against deny.toml. Licenses, bans and sources need nothing but Cargo.lock;
# advisories need the RustSec database, cloned from GitHub, so they run only when it can be
# fetched (see deny.toml). Duplicate versions are warnings; `cargo deny check bans` without
# --hide-inclusion-graph shows which dependents pull each one in.
if cargo deny --version >/dev/null 2>&1; then
  step "cargo deny check bans licenses sources"
  cargo deny check --hide-inclusion-graph bans licenses sources
  if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
    step "cargo deny check advisories"
    cargo deny check advisories
  else
    echo "(the RustSec advisory database could not be fetched from GitHub: advisories and yanked crates NOT checked)"
  fi
else
  echo "(cargo-deny not installed: the dependency tree is not checked against deny.toml; cargo install --locked cargo-deny)"
fi

step "cargo test --workspace"
cargo test --workspace "$@"

step "cargo doc --workspace --no-deps (RUSTDOCFLAGS=-Dwarnings)"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps

if [[ ${TEST_TCC_ALONE:-1} != 0 ]]; then
  step "scripts/tcc_alone.sh (crates/tcc built and tested outside the workspace)"
  "$ROOT/scripts/tcc_alone.sh"
fi

if [[ ${TEST_ADOPTION:-1} != 0 ]]; then
  step "scripts/adoption_check.sh (docs/ADOPTING.md's code, built outside the workspace, against the coordinator)"
  PROFILE=dev "$ROOT/scripts/adoption_check.sh"
fi

if [[ ${TEST_WORKSHOP:-1} != 0 ]]; then
  step "scripts/workshop_check.sh (docs/WORKSHOP.md's exercises, run as written, against a private system)"
  PROFILE=dev "$ROOT/scripts/workshop_check.sh"
fi

if [[ ${TEST_DTMCLI:-1} != 0 ]]; then
  step "scripts/dtmcli_check.sh (Python dtmcli against the coordinator and the banks)"
  PROFILE=dev "$ROOT/scripts/dtmcli_check.sh"
fi

if [[ ${TEST_DTMRS:-1} != 0 ]]; then
  step "scripts/dtmrs_check.sh (the AP and the RMs behind dtmrs, another DTM-compatible coordinator)"
  # With the default security settings whatever the caller exported: a signing secret of its
  # own, and Trys and unsigned Confirms/Cancels checked with the coordinator (dtmrs).
  env -u BRANCH_SIGNING_SECRET -u TRY_VERIFICATION PROFILE=dev "$ROOT/scripts/dtmrs_check.sh"
fi

if [[ ${TEST_FUZZ:-1} != 0 ]]; then
  step "scripts/fuzz_api.sh (schemathesis against every binary's /api/openapi.json)"
  PROFILE=dev "$ROOT/scripts/fuzz_api.sh"
fi

if [[ ${TEST_CHAOS:-1} != 0 ]]; then
  step "chaos run: scripts/chaos.sh ${TEST_CHAOS_SECONDS:-20} (TEST_CHAOS=0 skips it; CHAOS_SEED replays one)"
  PROFILE=dev "$ROOT/scripts/chaos.sh" "${TEST_CHAOS_SECONDS:-20}"
fi

# The directory of docker-compose goes first on PATH, for the docker CLI installed with it
# (scripts/compose_check.sh does the same); succeeds when that pair reaches an engine.
docker_engine() {
  local compose
  compose=$(command -v docker-compose 2>/dev/null) || return 1
  PATH="$(dirname "$compose"):$PATH" docker info >/dev/null 2>&1
}
if [[ ${TEST_COMPOSE:-auto} == 0 ]]; then
  echo "(TEST_COMPOSE=0: scripts/compose_check.sh not run)"
elif [[ ${TEST_COMPOSE:-auto} == 1 ]] || docker_engine; then
  step "scripts/compose_check.sh (docker-compose.yml built and run for real; TEST_COMPOSE=0 skips it)"
  if [[ -z ${POSTGRES_HOST_PORT:-} ]] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    export POSTGRES_HOST_PORT=15432
  fi
  "$ROOT/scripts/compose_check.sh"
else
  echo "(no Docker engine with docker-compose: scripts/compose_check.sh not run; TEST_COMPOSE=1 requires it)"
fi

step "all checks passed"
