#!/usr/bin/env bash
# Usage: scripts/install_deps.sh           install what is missing (Debian or Ubuntu; root or sudo)
#        scripts/install_deps.sh --check   install nothing: list what is missing, fail if needed
#
# What scripts/test.sh needs beyond Rust (rustup with rustfmt and clippy), installed only when
# missing, so a second run does nothing. `scripts/test.sh --install-deps` runs it first, and
# .ci/run runs it on every CI machine.
#
# Needed (scripts/test.sh refuses to start without them and names this script):
#   libpq-dev            libpq to link Diesel's Postgres driver (pq-sys)
#   postgresql-client    psql, with which scripts/lib/pg.sh creates the tests' databases
#   python3-venv         the venvs of the dtmcli check and the API fuzz run (PyPI packages)
#   a Postgres server    one answering on 127.0.0.1:5432 (the machine's cluster is started when
#                        installed but stopped), or Postgres' initdb and pg_ctl, with which
#                        scripts/lib/pg.sh starts a private one (the postgresql package)
#   diesel_cli 2.3.14    `diesel print-schema`, with which the schema-drift test checks that each
#                        generated src/schema.rs matches its migrations (cargo install: ~3 min once)
# Optional (scripts/test.sh says what it skips without them):
#   ShellCheck           lints scripts/*.sh and .ci/run (package shellcheck)
#   chromium, chromium-driver   the admin page's browser test
#   cargo-deny 0.20.2    the dependency check against deny.toml (cargo install: ~3.5 min once)
#
# The compose check (scripts/compose_check.sh) needs a Docker engine and docker-compose; they
# are not installed here (see README.md, "Quick start").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
export DEBIAN_FRONTEND=noninteractive
CARGO_DENY_VERSION=0.20.2
# The diesel crate's version in Cargo.lock: print-schema's output may change between releases.
DIESEL_CLI_VERSION=2.3.14

say() { printf '[deps] %s\n' "$*"; }

has_libpq() { [[ -e /usr/include/postgresql/libpq-fe.h ]] || pkg-config --exists libpq 2>/dev/null; }
has_psql() { command -v psql >/dev/null 2>&1; }
has_venv() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }
has_postgres() {
  [[ -n ${PG_URL:-} ]] || pg_isready -q -h 127.0.0.1 -p 5432 -t 3 2>/dev/null ||
    { pg_find_bin initdb >/dev/null && pg_find_bin pg_ctl >/dev/null; }
}
has_shellcheck() { command -v shellcheck >/dev/null 2>&1; }
has_chromium() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }
has_cargo_deny() { cargo deny --version >/dev/null 2>&1; }
has_diesel_cli() { diesel --version 2>/dev/null | grep -q "Version: $DIESEL_CLI_VERSION$"; }

if [[ ${1:-} == --check ]]; then
  missing=()
  command -v cargo >/dev/null 2>&1 || missing+=("cargo (Rust: https://rustup.rs)")
  for tool in rustfmt clippy-driver; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (rustup component add rustfmt clippy)")
  done
  has_libpq || missing+=("libpq (libpq-dev)")
  has_psql || missing+=("psql (postgresql-client)")
  has_venv || missing+=("python3's venv (python3-venv)")
  has_postgres || missing+=("a Postgres server on 127.0.0.1:5432, or initdb and pg_ctl (postgresql)")
  has_diesel_cli || missing+=("diesel_cli $DIESEL_CLI_VERSION (cargo install --locked diesel_cli --version $DIESEL_CLI_VERSION --no-default-features --features postgres)")
  if [[ ${#missing[@]} -gt 0 ]]; then
    printf '%s\n' "${missing[@]}"
    exit 1
  fi
  exit 0
fi

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}
apt_updated=0
apt_install() {
  say "installing $*"
  if [[ $apt_updated == 0 ]]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root apt-get install -y -qq --no-install-recommends "$@"
}

has_libpq || apt_install libpq-dev
has_psql || apt_install postgresql-client
has_venv || apt_install python3-venv python3-pip
has_shellcheck || apt_install shellcheck
has_chromium || apt_install chromium chromium-driver
for tool in rustfmt clippy-driver; do
  command -v "$tool" >/dev/null 2>&1 || { say "error: $tool is missing (rustup component add rustfmt clippy)" >&2; exit 1; }
done
if ! has_cargo_deny; then
  say "installing cargo-deny $CARGO_DENY_VERSION (cargo install, about 3.5 minutes on two cores)"
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi
if ! has_diesel_cli; then
  say "installing diesel_cli $DIESEL_CLI_VERSION (cargo install, about 3 minutes on two cores)"
  cargo install --locked diesel_cli --version "$DIESEL_CLI_VERSION" --no-default-features --features postgres
fi

# Postgres: the machine's own cluster on 127.0.0.1:5432 if it is installed but stopped.
if ! pg_isready -q -h 127.0.0.1 -p 5432 -t 3 2>/dev/null && command -v pg_ctlcluster >/dev/null 2>&1; then
  for dir in /etc/postgresql/*/; do
    [[ -d $dir ]] || continue
    version=$(basename "$dir")
    say "starting the machine's Postgres $version cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 -t 1 && break
    sleep 1
  done
fi
# None answers and none can be started: the server package, whose initdb and pg_ctl
# scripts/lib/pg.sh uses for a private cluster under target/pg/ (found off PATH, under
# /usr/lib/postgresql/*/bin). Skipped when PG_URL names another server.
if ! has_postgres; then
  apt_install postgresql
  has_postgres || { say "error: postgresql is installed but initdb/pg_ctl are still not found" >&2; exit 1; }
fi
say "everything scripts/test.sh needs is installed"
