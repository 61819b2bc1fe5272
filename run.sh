#!/bin/sh
# The README's two commands, each doing its own set-up on a fresh Debian machine with python3:
#   ./run.sh study [ARGS]  create .venv as needed, then run the main job (ARGS go to raycert)
#   ./run.sh test [ARGS]   install Chromium (apt) and create .venv as needed, then run pytest
# A shell script, not a Makefile: a fresh Debian has sh and python3 but not make.
# .venv is (re)built when missing or when pyproject.toml changed since it was built.
set -eu

ROOT=$(cd "$(dirname "$0")" && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.raycert-installed"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

venv() {
    want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
    if [ -x "$VENV/bin/raycert" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
        return
    fi
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install python3-venv  # Debian ships venv and pip apart from python3
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    (cd "$ROOT" && "$VENV/bin/pip" install -e '.[test]')
    echo "$want" >"$STAMP"
}

task=${1:-}
[ $# -gt 0 ] && shift
case "$task" in
study)
    venv
    exec "$VENV/bin/raycert" study mnist --preset quick --min-acc 0.95 --data-dir ../shared/data "$@"
    ;;
test)
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium  # headless Chromium for the report's browser test
    fi
    venv
    cd "$ROOT"
    exec "$VENV/bin/pytest" "$@"
    ;;
*)
    echo "usage: ./run.sh study [RAYCERT-ARGS] | ./run.sh test [PYTEST-ARGS]" >&2
    exit 2
    ;;
esac
