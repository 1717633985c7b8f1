#!/usr/bin/env bash
# The C baseline's dinner (bench/philosophers.c) must end, never hang at its start gate,
# when a philosopher cannot be started (fork fails) or dies before it sits down. A preloaded
# fork() makes the third fork fail, or the second child exit at once.
# usage: bench/philosophers-c-test.sh      exits 0 if both cases end within 10 s
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
gcc -O2 -Wall -Werror -pthread -o "$work/philosophers" bench/philosophers.c
cat > "$work/shim.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
pid_t fork(void) {
    static int calls;
    static pid_t (*real)(void);
    if (!real) real = (pid_t (*)(void))dlsym(RTLD_NEXT, "fork");
    const char *how = getenv("SHIM");
    calls++;
    if (how && !strcmp(how, "fail") && calls == 3) { errno = EAGAIN; return -1; }
    pid_t p = real();
    if (p == 0 && how && !strcmp(how, "die") && calls == 2) _exit(9);
    return p;
}
C
gcc -shared -fPIC -o "$work/shim.so" "$work/shim.c" -ldl
fail=0
for how in fail die; do
  set +e
  SHIM=$how LD_PRELOAD="$work/shim.so" timeout 10 "$work/philosophers" 5 0.2 "$work/table" >/dev/null 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 124 ]; then
    echo "FAIL ($how): the C dinner hung at its gate (killed after 10 s)"; fail=1
  elif [ "$rc" -eq 0 ]; then
    echo "FAIL ($how): the C dinner reported success without all its philosophers"; fail=1
  else
    echo "ok ($how): ended with status $rc"
  fi
done
exit "$fail"
