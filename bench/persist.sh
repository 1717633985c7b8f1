#!/usr/bin/env bash
# Durable<T> commits vs write()+fdatasync vs LMDB (heed), one run, ratios (bench/persist-peers).
# usage: bench/persist.sh [ROUNDS]   (run in the directory whose file system you care about)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cargo build --release --quiet --manifest-path "$here/persist-peers/Cargo.toml"
exec "$here/persist-peers/target/release/persist-peers" "$@"
