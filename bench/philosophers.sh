#!/usr/bin/env bash
# Dining philosophers, mman (futex Semaphore) vs C on glibc sem_t, same table layout and
# rules, in one run: meals/s of each, their ratio, and the fairness of each (the fewest
# meals of a philosopher over the most). mman's dinner is its default, fair one (whoever gets
# 2% ahead of the hungriest waits); its greedy dinner (--greedy, no rule at the table, the
# semaphores' own order as with sem_t) runs in the same run, last column.
# usage: bench/philosophers.sh [SECONDS (default 2)] [N ...(default 5)]
# RUNS=k repeats each N k times (a row each): where the scheduler puts the processes on
# this machine's two CPUs moves a dinner's meals/s by up to 5x from one run to the next.
# PLACEMENTS="same split free busy" (the default: all four) puts both dinners' processes
# on one CPU (taskset -c 0), philosopher i on CPU i mod 2 (pinned as they sit down, before
# the gate opens; with fewer than 2 CPUs the row is skipped), nowhere in particular, or
# nowhere in particular beside a CPU-bound process pinned to each CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}; shift || true
ns=("${@:-5}")
[ ${#ns[@]} -gt 0 ] || ns=(5)
mman=${MMAN:-target/release/mman}  # MMAN=path compares another build
[ -x "$mman" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
gcc -O2 -pthread -o "$work/philosophers" bench/philosophers.c
ncpu=$(nproc)
hogs=()
stop_hogs() { [ ${#hogs[@]} -eq 0 ] || { kill "${hogs[@]}" 2>/dev/null; wait "${hogs[@]}" 2>/dev/null; }; hogs=(); }
trap 'stop_hogs; rm -rf "$work"' EXIT
# Pin the children of $1 (the philosophers, as they start) to CPU i mod 2, for 1 s.
split_pin() {
  local end=$((SECONDS + 2)) pinned=" " k=0
  while [ $SECONDS -lt $end ] && kill -0 "$1" 2>/dev/null; do
    for c in $(pgrep -P "$1" 2>/dev/null); do
      case "$pinned" in *" $c "*) continue ;; esac
      taskset -pc $((k % 2)) "$c" >/dev/null 2>&1 && pinned="$pinned$c " && k=$((k + 1))
    done
    sleep 0.01
  done
}
# Run "$@" in placement $place; prints what it prints.
placed() {
  case "$place" in
    same) taskset -c 0 "$@" ;;
    split) "$@" > "$work/out" & local pid=$!; split_pin "$pid"; wait "$pid"; cat "$work/out" ;;
    *) "$@" ;;
  esac
}
dinner() { # mman's dinner: prints "meals/s fairness"
  rm -f "$work/table"
  placed "$mman" philosophers -n "$1" --seconds "$secs" --file "$work/table" "${@:2}" | tail -1 |
    sed -E 's/.*: ([0-9]+) meals\/s; fairness min\/max [0-9]+\/[0-9]+ \(([0-9.]+)\).*/\1 \2/'
}
printf '%-9s %-4s %13s %13s %6s %14s %14s   %s\n' placement N "mman meals/s" "sem_t meals/s" ratio \
  "fairness mman" "fairness sem_t" "mman --greedy: meals/s (ratio), fairness"
for place in ${PLACEMENTS:-same split free busy}; do
 if [ "$place" = split ] && [ "$ncpu" -lt 2 ]; then echo "split skipped: one CPU"; continue; fi
 if [ "$place" = busy ]; then
   for c in $(seq 0 $((ncpu - 1))); do taskset -c "$c" sh -c 'while :; do :; done' & hogs+=($!); done
   sleep 0.1
 fi
 for n in "${ns[@]}"; do
  for _ in $(seq "${RUNS:-1}"); do
   read -r m_rate m_fair < <(dinner "$n")
   read -r c_rate _ c_min c_max < <(placed "$work/philosophers" "$n" "$secs" "$work/ctable")
   read -r f_rate f_fair < <(dinner "$n" --greedy)
   python3 - "$place" "$n" "$m_rate" "$m_fair" "$c_rate" "$c_min" "$c_max" "$f_rate" "$f_fair" <<'PY'
import sys
p, n, m, mf, c, cmin, cmax, f, ff = sys.argv[1:]
m, c, f = int(m), int(c), int(f)
cf = int(cmin) / int(cmax) if int(cmax) else 1.0
print(f"{p:<9} {n:<4} {m:>13} {c:>13} {m/c:>6.2f} {float(mf):>14.2f} {cf:>14.2f}   {f} ({f/c:.2f}), {float(ff):.2f}")
PY
  done
 done
 stop_hogs
done
