#!/usr/bin/env bash
# The project's test command: the Rust workspace's tests, then the Python package's (built
# into a virtual environment the way a user installs it, then pytest). Exits non-zero if
# either fails.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace
bash crates/mman-py/ci.sh
