#!/usr/bin/env bash
# The Python package's and the Ansible collection's tests (pytest,
# python/tests), against real `wiresh serve` processes on loopback.
#
# Makes a virtualenv on first use (python/.venv, or $WIRESH_VENV) with the
# pinned tools (maturin, pytest, ansible-core from PyPI), builds the
# extension into it (a debug build: quick, and what the tests need), builds
# the wiresh binary unless $WIRESH_BIN names one, and runs pytest with the
# arguments given. `cargo test --workspace` runs this too (tests/python.rs)
# once the virtualenv exists.
#
# Usage: python/run-tests.sh [PYTEST ARGS...]     e.g. -k ansible -x
set -euo pipefail
cd "$(dirname "$0")"
VENV=${WIRESH_VENV:-$PWD/.venv}

if [ ! -x "$VENV/bin/pytest" ] || [ ! -x "$VENV/bin/maturin" ] || [ ! -x "$VENV/bin/ansible-playbook" ]; then
    echo "== making $VENV (maturin, pytest, ansible-core)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        'maturin==1.16.0' 'pytest>=8,<10' 'ansible-core==2.19.*'
fi

if [ -z "${WIRESH_BIN:-}" ]; then
    (cd .. && cargo build -q --locked --bin wiresh)
    export WIRESH_BIN=$PWD/../target/debug/wiresh
fi

echo "== building the extension (debug) into $VENV"
VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH "$VENV/bin/maturin" develop -q --locked

echo "== pytest"
PATH=$VENV/bin:$PATH exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
