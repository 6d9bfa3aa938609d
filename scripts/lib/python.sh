# shellcheck shell=bash
# A pinned Python package in a venv of its own, sourced by scripts/dtmcli_check.sh (dtmcli) and
# scripts/fuzz_api.sh (schemathesis):
#
#   source "scripts/lib/python.sh"
#   py_install "$ROOT/target/dtmcli-venv" dtmcli 1.7.7.0   # sets PY (the interpreter to run)
#                                                           # and PY_BIN (its scripts' directory)
#
# Installs once (pip, from PyPI) and reuses the venv while it holds that exact version. Where
# `python3 -m venv` is unavailable it falls back to `pip install --target <venv>-lib` and
# PYTHONPATH. PYTHON picks the interpreter (default python3).

# PY and PY_BIN are this function's results, read by the sourcing script.
# shellcheck disable=SC2034
py_install() {
  local venv=$1 package=$2 version=$3 python=${PYTHON:-python3}
  if [[ -x $venv/bin/python ]] &&
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$package') != '$version')" 2>/dev/null; then
    PY="$venv/bin/python"
    PY_BIN="$venv/bin"
    return 0
  fi
  command -v "$python" >/dev/null || {
    printf 'error: %s not found; install Python 3 (apt-get install python3 python3-venv)\n' "$python" >&2
    exit 1
  }
  printf '[python] installing %s==%s into %s\n' "$package" "$version" "$venv"
  rm -rf "$venv" "$venv-lib"
  if "$python" -m venv "$venv" >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$package==$version"
    PY="$venv/bin/python"
    PY_BIN="$venv/bin"
  else
    printf '[python] python3 -m venv is unavailable; using pip install --target %s-lib\n' "$venv"
    "$python" -m pip install -q --disable-pip-version-check --target "$venv-lib" "$package==$version"
    export PYTHONPATH="$venv-lib${PYTHONPATH:+:$PYTHONPATH}"
    PY=$python
    PY_BIN="$venv-lib/bin"
  fi
}
