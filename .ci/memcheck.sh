#!/usr/bin/env bash
# Run the mman library's test binaries under valgrind memcheck: the check for the unsafe
# core on a stable toolchain (no Miri here). Multi-process tests re-execute the binary
# without valgrind (no --trace-children), so only this process's memory is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=$(cargo test -p mman --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]!=["bench"] and m.get("profile",{}).get("test"):
        print(m["executable"])')
[ -n "$bins" ] || { echo "memcheck: no test binaries found"; exit 1; }
# Valgrind cannot emulate a SIGBUS handler that remaps the faulting page under a running
# load (its JIT replays the access against its own shadow state), so the two tests that
# depend on exactly that run natively only; every other test, the handler's registry
# included, runs under memcheck.
skip=(--skip four_threads_reading_different_mappings_survive_truncation
      --skip truncation_by_another_process_is_an_error_with_sizes)
# Valgrind knows neither cachestat(2) nor mlock2(2), and its mmap hook reads the first pages
# of every file mapped (looking for ELF debug info), so exact page-cache counts cannot hold
# under it: the tests that assert them run natively only. The cache module's walk, touch of a
# truncated file and the maps parser still run under memcheck.
skip+=(--skip evict_then_touch_every_size
       --skip touch_reads_exactly_the_range_and_only_what_is_missing
       --skip cachestat_agrees_with_mincore
       --skip sparse_files_touch_and_report
       --skip evict_reports_pages_that_stay_mapped_and_locked
       --skip lock_holds_every_page_until_dropped
       --skip dropping_in_parts_drops_every_part_and_nothing_else)
# Ten million messages through a channel take minutes under memcheck's JIT: natively only
# (the same code paths run under memcheck in the other channel tests).
skip+=(--skip ten_million_messages_arrive_in_order_across_processes)
# A hundred peer processes killed one after the other, each waited for: minutes under
# memcheck, and the same channel code runs under it in the other tests.
skip+=(--skip a_peer_killed_at_any_instant_is_noticed)
# Threads racing a durable file for as long as it takes (a reader against a writer that
# commits as fast as it can; a peer scribbling on the heads until the reader gives up):
# memcheck runs one thread at a time, so the races take minutes or never settle; the same
# read and commit code runs under it in the other persist tests.
skip+=(--skip readers_racing_a_fast_writer_never_report_corruption
       --skip a_peer_scribbling_on_both_heads_fails_a_reader_in_bounded_time)
# A thread that rewrites a watched word as fast as it can (up to 10 s), beside a receive
# whose 100 ms deadline must end it: memcheck runs one thread at a time, so the receive gets
# a turn only now and then and the wall-clock bound cannot hold; the deadline logic runs
# under it in `a_deadline_past_ends_a_wait_whatever_the_words_say` (channel unit tests).
# The same for 5,000 round trips beside a thread scribbling on the CPU hints: the channel
# paths run under memcheck in every other channel test.
skip+=(--skip a_changing_header_does_not_outlive_the_receivers_deadline
       --skip a_changing_slot_word_does_not_outlive_the_subscribers_deadline
       --skip garbage_in_the_cpu_hints_never_hangs_a_waiter)
# Every register exact at each memory access: mman's SIGBUS guard backs a truncated page and
# lets the faulting instruction run again, and by default valgrind keeps only the stack and
# instruction pointers exact there, so a copy loop that keeps its addresses in registers (the
# long copies of sys/words.rs) resumed with stale ones and crashed under valgrind alone.
for b in $bins; do
  echo "memcheck: $(basename "$b")"
  valgrind --quiet --vex-iropt-register-updates=allregs-at-mem-access --error-exitcode=99 \
    --leak-check=no --track-origins=no "$b" --test-threads=1 -q "${skip[@]}"
done
