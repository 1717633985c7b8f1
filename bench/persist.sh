#!/usr/bin/env bash
# Durable<T> commits vs write()+fdatasync vs LMDB (heed), one run, ratios (bench/persist-peers).
# usage: bench/persist.sh [ROUNDS] [RUNS]   (run in the directory whose file system you care about;
# RUNS > 1 repeats it all on fresh files and ends with the median of the per-run ratios;
# a third argument `pair` times durable and write+fdatasync only, alternating; `parts` times
# a 1 MiB durable commit beside write+fdatasync built up one part of the protocol at a time;
# `same` times durable against write+fdatasync into a region of the durable variable's own file)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cargo build --release --quiet --manifest-path "$here/persist-peers/Cargo.toml"
exec "$here/persist-peers/target/release/persist-peers" "$@"
