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
for b in $bins; do
  echo "memcheck: $(basename "$b")"
  valgrind --quiet --error-exitcode=99 --leak-check=no --track-origins=no "$b" --test-threads=1 -q "${skip[@]}"
done
