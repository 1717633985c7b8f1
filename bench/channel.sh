#!/usr/bin/env bash
# `mman bench channel` with iceoryx2 as a contender: builds bench/channel-peers (outside the
# workspace: iceoryx2 needs libclang for bindgen, `apt-get install libclang-dev clang`) and
# hands it to mman through MMAN_ICEORYX2_PEER. If it cannot be built, mman runs without it.
# usage: bench/channel.sh [ARGS for mman bench channel]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if log="$(cargo build --release --quiet -j1 --manifest-path "$here/channel-peers/Cargo.toml" 2>&1)"; then
    export MMAN_ICEORYX2_PEER="$here/channel-peers/target/release/channel-peers"
else
    printf '%s\n' "$log" >&2
    echo "bench/channel.sh: could not build bench/channel-peers (above); running without iceoryx2" >&2
fi
exec cargo run --release --quiet --manifest-path "$here/../Cargo.toml" -p mman-cli -- bench channel "$@"
