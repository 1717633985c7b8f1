#!/usr/bin/env bash
# Dining philosophers, mman (futex Semaphore) vs C on glibc sem_t, same table layout and
# rules, in one run. Prints meals/s of each and the ratio, for each N.
# usage: bench/philosophers.sh [SECONDS (default 2)] [N ...(default 5)]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}; shift || true
ns=("${@:-5}")
[ ${#ns[@]} -gt 0 ] || ns=(5)
mman=target/release/mman
[ -x "$mman" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/philosophers" bench/philosophers.c
printf '%-4s %14s %14s %8s   %s\n' N "mman meals/s" "sem_t meals/s" ratio "fairness mman / sem_t (min/max)"
for n in "${ns[@]}"; do
  m=$("$mman" philosophers -n "$n" --seconds "$secs" --file "$work/table" | tail -1)
  m_rate=$(sed -E 's/.*: ([0-9]+) meals\/s.*/\1/' <<<"$m")
  m_fair=$(sed -E 's/.*fairness min\/max ([0-9]+\/[0-9]+).*/\1/' <<<"$m")
  read -r c_rate _ c_min c_max < <("$work/philosophers" "$n" "$secs" "$work/ctable")
  ratio=$(python3 -c "print(f'{$m_rate/$c_rate:.2f}')")
  printf '%-4s %14s %14s %8s   %s / %s\n' "$n" "$m_rate" "$c_rate" "$ratio" "$m_fair" "$c_min/$c_max"
done
