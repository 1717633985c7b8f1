#!/usr/bin/env bash
# Build the Python package mman into a fresh virtual environment the way a user installs it
# (`pip install ./crates/mman-py`: maturin as the build backend) and run its tests; also
# lint the binding crate, which the cargo workspace excludes (it needs a Python).
#
#   bash crates/mman-py/ci.sh            # from anywhere
#
# The environment lives in crates/mman-py/target/ci-venv (git-ignored; MMAN_PY_VENV
# overrides). Needs python3 >= 3.9 with venv, and PyPI for pytest, hypothesis, numpy and
# maturin. MMAN_PY_LINT=0 skips cargo fmt/clippy of this crate. Exits non-zero when any step
# fails, including pytest collecting no tests (its exit status 5).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${MMAN_PY_VENV:-$here/target/ci-venv}"
python="${PYTHON:-python3}"

step() { printf '\n== %s\n' "$*" >&2; }

step "virtual environment $venv"
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        echo "ci.sh: $python lacks venv/ensurepip (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet pytest hypothesis numpy maturin

step "pip install $here"
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$here"

if [ "${MMAN_PY_LINT:-1}" != 0 ]; then
    step "cargo fmt --check, clippy -D warnings (mman-py)"
    cargo fmt --manifest-path "$here/Cargo.toml" -- --check
    PYO3_PYTHON="$venv/bin/python" cargo clippy --manifest-path "$here/Cargo.toml" \
        --all-targets -- -D warnings
fi

step "pytest"
cd "$here/tests"
# Run from the tests folder so that the installed package, not python/ of the source
# tree, is the one imported.
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "ci.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
