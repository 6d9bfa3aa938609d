#!/usr/bin/env bash
# Usage: scripts/dtmcli_check.sh
#
# Runs scripts/dtmcli_check.py (DTM's Python client, dtmcli 1.7.7.0 from PyPI, driving our
# coordinator and bank RMs: one success, one rollback) against a private copy of the system,
# so it never disturbs a system started by scripts/up.sh:
#   - dtmcli is installed in a venv under target/dtmcli-venv (pip; once);
#   - Postgres is found or started as scripts/up.sh does (scripts/lib/pg.sh);
#   - fresh databases dtmcli_coordinator, dtmcli_trans_out, ... (DB_PREFIX=dtmcli_);
#   - the five binaries on free ports (default ports + an offset, 10000 or more), pid files and
#     logs in target/dtmcli-run/ (scripts/up.sh with RUN_DIR, PORT_OFFSET, DB_PREFIX);
#   - on exit everything it started is stopped and its databases dropped.
#
# Environment: PROFILE=release|dev (cargo profile, default release; scripts/test.sh uses dev
# to reuse its build), SKIP_BUILD=1, KEEP=1 (leave the system and databases in place to look at),
# DTMCLI_VENV (default target/dtmcli-venv), PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUN_DIR="${DTMCLI_RUN_DIR:-$ROOT/target/dtmcli-run}"
export DB_PREFIX=dtmcli_
export PORT_OFFSET=0
# shellcheck source=scripts/lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"
# shellcheck source=scripts/lib/python.sh
source "$ROOT/scripts/lib/python.sh"

VENV="${DTMCLI_VENV:-$ROOT/target/dtmcli-venv}"
DTMCLI_VERSION=1.7.7.0


py_install "$VENV" dtmcli "$DTMCLI_VERSION"
# 2. A fresh private system on fresh databases.
svc_start_private dtmcli-check

# 3. The check itself.
status=0
"$PY" "$ROOT/scripts/dtmcli_check.py" \
  --dtm "http://127.0.0.1:$(svc_port coordinator)/api/dtmsvr" \
  --trans-out "http://127.0.0.1:$(svc_port trans-out)/api" \
  --trans-in "http://127.0.0.1:$(svc_port trans-in)/api" || status=$?
if [[ $status -ne 0 ]]; then
  for name in coordinator trans-out trans-in; do
    echo "--- last lines of $(svc_log_file "$name")" >&2
    tail -n 20 "$(svc_log_file "$name")" >&2 || true
  done
fi
exit "$status"
