#!/usr/bin/env bash
# mman cat vs GNU cat vs uutils cat on one file, one run, ratios: see bench/cat.py.
# Installs uutils cat into a scratch directory (outside the repository) when missing.
# usage: bench/cat.sh [--size-mib N] [--runs R] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
UU_ROOT=${UU_ROOT:-/work/scratch/uu}
if [ ! -x "$UU_ROOT/bin/cat" ]; then
  echo "installing uutils cat into $UU_ROOT (about a minute)..." >&2
  cargo install --quiet uu_cat --root "$UU_ROOT" >&2 || echo "uutils cat did not install; it is left out" >&2
fi
cargo build --release --quiet -p mman-cli
exec python3 bench/cat.py --uu "$UU_ROOT/bin/cat" "$@"
