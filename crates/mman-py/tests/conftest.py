"""Helpers for mman's Python tests: child interpreters run with bounded memory and time.

Every child that could allocate without bound (adversarial cases: garbage in shared
memory, killed peers) runs under RLIMIT_AS, so a defect shows as a MemoryError or a failed
test, never as a machine out of memory.
"""

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# Address space for child interpreters: enough for Python, numpy and mman's mappings.
CHILD_AS = 2 << 30
# Address space for this test process itself (the harness, hypothesis): set once.
SELF_AS = 4 << 30


def _limit_self():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft > SELF_AS:
        resource.setrlimit(resource.RLIMIT_AS, (SELF_AS, hard))


_limit_self()


def limit_child(as_bytes=CHILD_AS):
    """For preexec_fn and multiprocessing children: bound the address space."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        as_bytes = min(as_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (as_bytes, hard))


def spawn_py(code, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """Start `python -c code args...` with bounded memory; returns the Popen."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_child,
    )


def run_py(code, *args, timeout=60):
    """Run `python -c code args...` to its end; (returncode, stdout, stderr) as text."""
    p = spawn_py(code, *args)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"child timed out\nstdout: {out!r}\nstderr: {err!r}")
    return p.returncode, out.decode(), err.decode()


def wait_line(p, expect, timeout=30):
    """Read lines of p's stdout until one equals `expect` (the child says it is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        if line.decode().strip() == expect:
            return
    p.kill()
    raise AssertionError(f"child never said {expect!r}: stderr {p.stderr.read()!r}")


def interrupt_and_check(p, ready="ready", timeout=30):
    """Wait for the child to be blocked (it prints `ready` just before the call), send
    SIGINT, and return its output: the child must end by itself."""
    wait_line(p, ready)
    time.sleep(0.2)  # let it enter the blocking call
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("SIGINT did not end the blocking call")
    return p.returncode, out.decode(), err.decode()


@pytest.fixture
def uniq():
    """A name unique to this test run."""
    n = [0]

    def make(prefix="t"):
        n[0] += 1
        return f"pytest_{prefix}_{os.getpid()}_{time.monotonic_ns()}_{n[0]}"

    return make
