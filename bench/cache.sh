#!/usr/bin/env bash
# mman cache / mman maps side by side with vmtouch, util-linux fincore, procps pmap and the
# `pagers` crate, on a tree of 20,000 small files and on one 4 GiB file: agreement first,
# then times and ratios from one run (see bench/cache.py).
# Installs vmtouch (apt) and pagers (cargo, into a scratch directory) when missing.
# usage: bench/cache.sh [--files N] [--big-gib G] [--runs R] [--dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PAGERS_ROOT=${PAGERS_ROOT:-/work/scratch/pagers}
if ! command -v vmtouch >/dev/null; then
  echo "installing vmtouch..." >&2
  (apt-get install -y vmtouch >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y vmtouch >/dev/null)) \
    || echo "vmtouch did not install; it is left out" >&2
fi
if [ ! -x "$PAGERS_ROOT/bin/pagers" ]; then
  echo "installing pagers into $PAGERS_ROOT..." >&2
  cargo install --quiet pagers --root "$PAGERS_ROOT" >&2 || echo "pagers did not install; it is left out" >&2
fi
cargo build --release --quiet -p mman-cli
exec python3 bench/cache.py --pagers "$PAGERS_ROOT/bin/pagers" "$@"
