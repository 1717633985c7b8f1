"""map_file, SharedMemory, Lock, Semaphore, Condition: two processes each, truncation under
a mapping, kill -9 of a lock's owner, Ctrl-C during acquire."""

import multiprocessing as mp
import os
import signal

import pytest

import mman

from conftest import interrupt_and_check, limit_child, run_py, spawn_py, wait_line


# --- map_file --------------------------------------------------------------------------------


def test_mapping_has_mmaps_habits(tmp_path):
    f = tmp_path / "data"
    f.write_bytes(b"hello world" + bytes(4085))
    with mman.map_file(f, write=True) as m:
        assert len(m) == 4096 and m[:5] == b"hello" and m[0] == ord("h")
        assert m.find(b"world") == 6
        assert m.read(5) == b"hello" and m.tell() == 5
        m.seek(0)
        m.write(b"HELLO")
        m.flush()
        mv = m.buf
        assert bytes(mv[:5]) == b"HELLO"
        del mv
    assert f.read_bytes()[:5] == b"HELLO"


TRUNCATE_CHILD = """
import os, sys, mman
path = sys.argv[1]
m = mman.map_file(path)
view = m.buf
assert m[:4] == b"abcd"
os.truncate(path, 0)          # another party (here: ourselves) shrinks the file
try:
    m[: len(m)]
    print("no error")
except mman.TruncatedError as e:
    assert isinstance(e, OSError) and e.operation and e.path, e
    print("TruncatedError", flush=True)
try:
    m.read(10)
except mman.TruncatedError:
    print("read raised", flush=True)
# A view sees zero pages, and nothing kills the interpreter.
print("view", bytes(view[:4]) == bytes(4), m.truncated, flush=True)
"""


def test_truncation_under_a_mapping_raises_and_the_interpreter_survives(tmp_path):
    f = tmp_path / "data"
    f.write_bytes(b"abcd" * 4096)
    rc, out, err = run_py(TRUNCATE_CHILD, f)
    assert rc == 0, err  # a SIGBUS would be -7
    assert "TruncatedError" in out and "read raised" in out
    assert "view True True" in out


def test_truncation_by_another_process(tmp_path):
    f = tmp_path / "data"
    f.write_bytes(b"x" * 65536)
    m = mman.map_file(f)
    rc, _, err = run_py("import os, sys; os.truncate(sys.argv[1], 100)", f)
    assert rc == 0, err
    with pytest.raises(mman.TruncatedError):
        m[:]
    assert m.truncated
    m.close()


def test_errors_carry_operation_path_errno_and_hint(tmp_path):
    with pytest.raises(mman.NotFoundError) as e:
        mman.map_file(tmp_path / "nope")
    assert isinstance(e.value, FileNotFoundError)
    assert e.value.errno == 2 and e.value.operation and "nope" in e.value.path


# --- SharedMemory ----------------------------------------------------------------------------


def _shm_child(name):
    limit_child()
    s = mman.SharedMemory(name)
    s.buf[:5] = b"child"
    s.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_shared_memory_between_processes(method):
    s = mman.SharedMemory(create=True, size=4096)
    try:
        p = mp.get_context(method).Process(target=_shm_child, args=(s.name,))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert bytes(s.buf[:5]) == b"child"
    finally:
        s.close()
        s.unlink()


def test_shared_memory_opens_pythons_own_blocks():
    from multiprocessing import shared_memory

    py = shared_memory.SharedMemory(create=True, size=100)
    try:
        py.buf[:3] = b"abc"
        m = mman.SharedMemory(py.name)
        assert bytes(m.buf[:3]) == b"abc"
        m.close()
    finally:
        py.close()
        py.unlink()


def test_stale_objects_are_removed_after_kill_9():
    rc, out, err = run_py(
        """
        import os, mman
        s = mman.SharedMemory(create=True, size=4096)
        print(s.name, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    assert rc == -signal.SIGKILL
    name = out.strip()
    assert any(o.name == name and o.is_stale for o in mman.shm.list_objects())
    assert name in mman.shm.remove_stale()
    with pytest.raises(FileNotFoundError):
        mman.SharedMemory(name)


# --- Lock, Semaphore, Condition --------------------------------------------------------------


def _count_under_lock(lock, shm_name, n):
    limit_child()
    s = mman.SharedMemory(shm_name)
    for _ in range(n):
        with lock:
            v = int.from_bytes(s.buf[:8], "little")
            s.buf[:8] = (v + 1).to_bytes(8, "little")
    s.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_lock_by_name_excludes_across_processes(method, uniq):
    lock = mman.Lock(uniq("lock"))
    s = mman.SharedMemory(create=True, size=8)
    try:
        ctx = mp.get_context(method)
        procs = [ctx.Process(target=_count_under_lock, args=(lock, s.name, 300)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        assert int.from_bytes(s.buf[:8], "little") == 600
    finally:
        s.close()
        s.unlink()
        mman.Lock.unlink(lock.name)


def test_kill_9_of_a_lock_owner_is_reported(uniq):
    name = uniq("lock")
    lock = mman.Lock(name)
    p = spawn_py(
        """
        import sys, time, mman
        l = mman.Lock(sys.argv[1])
        l.acquire()
        print("ready", flush=True)
        time.sleep(600)
        """,
        name,
    )
    try:
        wait_line(p, "ready")
        assert lock.acquire(timeout=0.05) is False
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        assert lock.acquire(timeout=30) is True
        assert lock.owner_died
        lock.release()
        assert not lock.owner_died
        assert lock.acquire(timeout=5)
        assert not lock.owner_died
        lock.release()
    finally:
        p.kill()
        p.wait()
        mman.Lock.unlink(name)


def test_sigint_during_a_blocking_acquire_raises_keyboard_interrupt(uniq):
    name = uniq("lock")
    lock = mman.Lock(name)
    lock.acquire()
    try:
        p = spawn_py(
            """
            import sys, mman
            l = mman.Lock(sys.argv[1])
            print("ready", flush=True)
            try:
                l.acquire()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            """,
            name,
        )
        rc, out, err = interrupt_and_check(p)
        assert rc == 0, err
        assert "interrupted" in out
    finally:
        lock.release()
        mman.Lock.unlink(name)


def test_sigint_during_a_semaphore_acquire(uniq):
    name = uniq("sem")
    sem = mman.Semaphore(name, value=0)
    try:
        p = spawn_py(
            """
            import sys, mman
            s = mman.Semaphore(sys.argv[1], value=0)
            print("ready", flush=True)
            try:
                s.acquire()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            """,
            name,
        )
        rc, out, err = interrupt_and_check(p)
        assert rc == 0, err
        assert "interrupted" in out
    finally:
        mman.Semaphore.unlink(name)
        del sem


def test_semaphore_between_processes(uniq):
    name = uniq("sem")
    sem = mman.Semaphore(name, value=0)
    try:
        rc, _, err = run_py("import sys, mman; mman.Semaphore(sys.argv[1]).release(3)", name)
        assert rc == 0, err
        assert sem.value == 3
        assert all(sem.acquire(timeout=5) for _ in range(3))
        assert sem.acquire(blocking=False) is False
    finally:
        mman.Semaphore.unlink(name)


def test_condition_wakes_another_process(uniq):
    name = uniq("cond")
    cond = mman.Condition(name)
    p = spawn_py(
        """
        import sys, mman
        c = mman.Condition(sys.argv[1])
        with c:
            print("ready", flush=True)
            print("woken" if c.wait(timeout=60) else "timed out", flush=True)
        """,
        name,
    )
    try:
        wait_line(p, "ready")
        with cond:  # the child is waiting once it released the lock in wait()
            cond.notify()
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert b"woken" in out
    finally:
        p.kill()
        p.wait()
        mman.Condition.unlink(name)
