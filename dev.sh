#!/usr/bin/env bash
# One entry point for developers; every command sets itself up on a fresh clone.
#   ./dev.sh studio   # create .venv if needed, install, launch MGD Studio on the bundled demo
#   ./dev.sh test     # create .venv if needed, install, run the whole test suite (one process per core)
#   ./dev.sh demo     # headless: mgd-train on the bundled demo preset
#   ./dev.sh setup    # only create / update the virtual environment
set -euo pipefail
cd "$(dirname "$0")"
VENV=${MGD_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV ..."
        "$PY" -m venv "$VENV"
    fi
    # Re-install only when the project's requirements changed (a stamp holds their hash).
    local stamp="$VENV/.mgd-installed" want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing MGD Studio and its dependencies into $VENV (torch is large: this takes a few minutes once) ..."
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        echo "$want" > "$stamp"
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    setup) setup ;;
    studio) setup; exec "$VENV/bin/mgd-studio" --demo "$@" ;;
    demo) setup; exec "$VENV/bin/mgd-train" resources/presets/demo.yaml "$@" ;;
    # one test process per core (pytest-xdist); a later -n given here wins, -n 0 runs in this process
    test) setup; QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen} exec "$VENV/bin/python" -m pytest -n auto "$@" ;;
    *) sed -n '2,7p' "$0"; exit 1 ;;
esac
