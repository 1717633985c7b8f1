#!/usr/bin/env bash
# Dining philosophers, mman (futex Semaphore) vs C on glibc sem_t, same table layout and
# rules, in one run: meals/s of each, their ratio, and the fairness of each (the fewest
# meals of a philosopher over the most). mman's dinner is its default, fair one (whoever gets
# 2% ahead of the hungriest waits); its greedy dinner (--greedy, no rule at the table, the
# semaphores' own order as with sem_t) runs in the same run, last column.
# usage: bench/philosophers.sh [SECONDS (default 2)] [N ...(default 5)]
# RUNS=k repeats each N k times (a row each): where the scheduler puts the processes on
# this machine's two CPUs moves a dinner's meals/s by up to 5x from one run to the next.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}; shift || true
ns=("${@:-5}")
[ ${#ns[@]} -gt 0 ] || ns=(5)
mman=target/release/mman
[ -x "$mman" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
gcc -O2 -pthread -o "$work/philosophers" bench/philosophers.c
dinner() { # mman's dinner: prints "meals/s fairness"
  rm -f "$work/table"
  "$mman" philosophers -n "$1" --seconds "$secs" --file "$work/table" "${@:2}" | tail -1 |
    sed -E 's/.*: ([0-9]+) meals\/s; fairness min\/max [0-9]+\/[0-9]+ \(([0-9.]+)\).*/\1 \2/'
}
printf '%-4s %13s %13s %6s %14s %14s   %s\n' N "mman meals/s" "sem_t meals/s" ratio \
  "fairness mman" "fairness sem_t" "mman --greedy: meals/s (ratio), fairness"
for n in "${ns[@]}"; do
 for _ in $(seq "${RUNS:-1}"); do
  read -r m_rate m_fair < <(dinner "$n")
  read -r c_rate _ c_min c_max < <("$work/philosophers" "$n" "$secs" "$work/ctable")
  read -r f_rate f_fair < <(dinner "$n" --greedy)
  python3 - "$n" "$m_rate" "$m_fair" "$c_rate" "$c_min" "$c_max" "$f_rate" "$f_fair" <<'PY'
import sys
n, m, mf, c, cmin, cmax, f, ff = sys.argv[1:]
m, c, f = int(m), int(c), int(f)
cf = int(cmin) / int(cmax) if int(cmax) else 1.0
print(f"{n:<4} {m:>13} {c:>13} {m/c:>6.2f} {float(mf):>14.2f} {cf:>14.2f}   {f} ({f/c:.2f}), {float(ff):.2f}")
PY
 done
done
