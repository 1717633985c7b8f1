"""mman.Channel and mman.Broadcast: in one process, between processes (spawn, fork,
forkserver), dead peers, Ctrl-C during recv, garbage in the shared memory."""

import asyncio
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import mman

from conftest import interrupt_and_check, limit_child, run_py, spawn_py, wait_line

np = pytest.importorskip("numpy")


def test_send_recv_recv_into_and_batches():
    c = mman.Channel(capacity=1 << 16)
    tx, rx = c.sender(), c.receiver()
    tx.send(b"hello")
    tx.send(bytearray(b"ba"))
    tx.send(memoryview(b"xmvx")[1:3])
    assert rx.recv() == b"hello"
    buf = bytearray(8)
    assert rx.recv_into(buf) == 2 and bytes(buf[:2]) == b"ba"
    assert rx.recv() == b"mv"
    assert rx.try_recv() is None
    assert tx.send_batch([b"a", b"bb", b"ccc"]) == 3
    assert rx.recv_batch() == [b"a", b"bb", b"ccc"]


def test_recv_into_too_small_keeps_the_message():
    c = mman.Channel(capacity=1 << 16)
    tx, rx = c.sender(), c.receiver()
    tx.send(b"0123456789")
    with pytest.raises(ValueError):
        rx.recv_into(bytearray(4))
    buf = bytearray(16)
    assert rx.recv_into(buf) == 10 and bytes(buf[:10]) == b"0123456789"


def test_timeouts():
    c = mman.Channel(capacity=4096)
    tx, rx = c.sender(), c.receiver()
    with pytest.raises(TimeoutError):
        rx.recv(timeout=0.05)
    big = b"x" * c.max_message
    tx.send(big)
    assert tx.try_send(big) is False
    with pytest.raises(TimeoutError):
        tx.send(big, timeout=0.05)
    with pytest.raises(ValueError):
        rx.recv(timeout=-3)


def test_message_too_large_is_an_error_with_a_hint():
    c = mman.Channel(capacity=4096)
    with pytest.raises(mman.InvalidInputError) as e:
        c.sender().send(b"x" * 8192)
    assert e.value.operation and e.value.hint
    assert isinstance(e.value, OSError) and isinstance(e.value, ValueError)


def test_disconnected_when_the_sender_closes():
    c = mman.Channel()
    tx, rx = c.sender(), c.receiver()
    tx.send(b"last")
    tx.close()
    assert rx.recv() == b"last"
    with pytest.raises(mman.Disconnected) as e:
        rx.recv(timeout=5)
    assert isinstance(e.value, OSError) and isinstance(e.value, EOFError)
    assert e.value.operation == "recv"


def test_send_obj_numpy_arrives_as_a_view_of_one_copy():
    c = mman.Channel(capacity=1 << 22)
    tx, rx = c.sender(), c.receiver()
    a = np.arange(200_000, dtype=np.float64)
    small = np.arange(3)
    tx.send_obj({"a": a, "small": small, "s": "text", "n": None})
    o = rx.recv_obj()
    assert o["s"] == "text" and o["n"] is None
    np.testing.assert_array_equal(o["a"], a)
    np.testing.assert_array_equal(o["small"], small)
    # Not contiguous: pickled in band, still right.
    tx.send_obj(a[::2])
    np.testing.assert_array_equal(rx.recv_obj(), a[::2])


def test_recv_obj_of_a_plain_message_raises_corrupted():
    c = mman.Channel()
    tx, rx = c.sender(), c.receiver()
    tx.send(b"MMO5" + b"\xff" * 40)
    with pytest.raises(mman.CorruptedError):
        rx.recv_obj()
    tx.send(b"not an object")
    with pytest.raises(mman.CorruptedError):
        rx.recv_obj()


def test_recv_async():
    c = mman.Channel()
    tx, rx = c.sender(), c.receiver()

    async def main():
        task = asyncio.ensure_future(rx.recv_async())
        await asyncio.sleep(0.1)
        tx.send(b"later")
        return await task

    assert asyncio.run(main()) == b"later"

    async def timed():
        await rx.recv_async(timeout=0.1)

    with pytest.raises(TimeoutError):
        asyncio.run(timed())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=3000), max_size=40))
def test_any_messages_arrive_in_order(msgs):
    c = mman.Channel(capacity=1 << 17)
    tx, rx = c.sender(), c.receiver()
    assert tx.send_batch(msgs) == len(msgs)
    got = []
    while len(got) < len(msgs):
        got.extend(rx.recv_batch(timeout=5))
    assert got == msgs


def test_handles_pickle_as_their_name():
    c = mman.Channel()
    tx = pickle.loads(pickle.dumps(c.sender()))
    rx = pickle.loads(pickle.dumps(c.receiver()))
    assert tx.name == c.name == rx.name
    tx.send(b"by name")
    assert rx.recv(timeout=5) == b"by name"
    assert pickle.loads(pickle.dumps(c)).name == c.name


# --- two processes ---------------------------------------------------------------------------


def _producer(tx, n):
    limit_child()
    for i in range(n):
        tx.send(i.to_bytes(4, "little"))
    tx.send_obj({"arr": np.full(1000, 7, dtype=np.int32)})


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_two_producers_in_child_processes(method):
    ctx = mp.get_context(method)
    c = mman.Channel(senders=3, capacity=1 << 16)
    rx = c.receiver()
    # The receiver is told Disconnected once every sender that attached is gone: a sender
    # kept here until the workers are done covers a worker that attaches late.
    keep = c.sender()
    assert keep.max_message > 0  # attaches it
    procs = [ctx.Process(target=_producer, args=(c.sender(), 500)) for _ in range(2)]
    for p in procs:
        p.start()
    got, arrays = [], 0
    while arrays < 2:
        m = rx.recv(timeout=60)
        if len(m) == 4:
            got.append(int.from_bytes(m, "little"))
        else:
            arrays += 1
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    keep.close()
    assert sorted(got) == sorted(list(range(500)) * 2)
    with pytest.raises(mman.Disconnected):
        rx.recv(timeout=10)


def _echo_obj(rx, tx):
    limit_child()
    while True:
        o = rx.recv_obj(timeout=60)
        if o is None:
            return
        tx.send_obj(o * 2)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_numpy_round_trip_with_a_child(method):
    ctx = mp.get_context(method)
    fwd, back = mman.Channel(capacity=1 << 22), mman.Channel(capacity=1 << 22)
    p = ctx.Process(target=_echo_obj, args=(fwd.receiver(), back.sender()))
    p.start()
    tx, rx = fwd.sender(), back.receiver()
    for n in (1, 1000, 300_000):
        a = np.arange(n, dtype=np.int64)
        tx.send_obj(a)
        np.testing.assert_array_equal(rx.recv_obj(timeout=60), a * 2)
    tx.send_obj(None)
    p.join(30)
    assert p.exitcode == 0


def test_kill_9_of_the_sender_gives_disconnected(uniq):
    name = uniq("chan")
    c = mman.Channel(name)
    rx = c.receiver()
    child = spawn_py(
        """
        import sys, time, mman
        tx = mman.Channel.open(sys.argv[1]).sender()
        tx.send(b"alive")
        print("ready", flush=True)
        time.sleep(600)
        """,
        name,
    )
    try:
        assert rx.recv(timeout=30) == b"alive"
        wait_line(child, "ready")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        with pytest.raises(mman.Disconnected):
            rx.recv(timeout=30)
    finally:
        child.kill()
        child.wait()


def test_kill_9_of_the_receiver_gives_disconnected(uniq):
    name = uniq("chan")
    c = mman.Channel(name, capacity=4096)
    tx = c.sender()
    child = spawn_py(
        """
        import sys, time, mman
        rx = mman.Channel.open(sys.argv[1]).receiver()
        rx.try_recv()
        print("ready", flush=True)
        time.sleep(600)
        """,
        name,
    )
    try:
        wait_line(child, "ready")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        with pytest.raises(mman.Disconnected):
            for _ in range(1000):  # fills the ring, then waits for room: the receiver is gone
                tx.send(b"x" * 1000, timeout=30)
    finally:
        child.kill()
        child.wait()


def test_sigint_during_a_blocking_recv_raises_keyboard_interrupt(uniq):
    name = uniq("chan")
    c = mman.Channel(name)
    tx = c.sender()  # a live sender: the receiver would wait for ever
    p = spawn_py(
        """
        import sys, mman
        rx = mman.Channel.open(sys.argv[1]).receiver()
        print("ready", flush=True)
        try:
            rx.recv()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
        name,
    )
    rc, out, err = interrupt_and_check(p)
    assert rc == 0, err
    assert "interrupted" in out
    tx.close()


def test_sigint_during_a_blocking_send_raises_keyboard_interrupt(uniq):
    name = uniq("chan")
    c = mman.Channel(name, capacity=4096)
    rx = c.receiver()
    rx.try_recv()
    p = spawn_py(
        """
        import sys, mman
        tx = mman.Channel.open(sys.argv[1]).sender()
        print("ready", flush=True)
        try:
            while True:
                tx.send(b"y" * 1000)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
        name,
    )
    rc, out, err = interrupt_and_check(p)
    assert rc == 0, err
    assert "interrupted" in out


GARBAGE_CHILD = """
import os, sys, mman
name, seed = sys.argv[1], int(sys.argv[2])
rx = mman.Channel.open(name).receiver()
print("ready", flush=True)
sys.stdin = None
outcomes = set()
for _ in range(200):
    try:
        m = rx.recv(timeout=0.02)
        assert isinstance(m, bytes)
        outcomes.add("message")
    except TimeoutError:
        outcomes.add("timeout")
    except mman.Error as e:  # Corrupted, Disconnected, InvalidInput...
        assert e.operation, e
        outcomes.add(type(e).__name__)
        if isinstance(e, mman.Disconnected):
            break
print("survived", sorted(outcomes), flush=True)
"""


def _scribble(name, mode, seed):
    """The hostile peer: write garbage over the channel's memory (control words included)."""
    import mmap
    import random

    rng = random.Random(seed)
    fd = os.open(f"/dev/shm/mman.{name}", os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        m = mmap.mmap(fd, size)
        words = [b"\xff" * 8, (2**63 - 1).to_bytes(8, "little"), bytes(8), (1).to_bytes(8, "little")]
        if mode == "scatter":  # a few words anywhere
            for _ in range(64 * (seed + 1)):
                off = rng.randrange(0, size - 8) & ~7
                m[off:off + 8] = rng.choice(words + [rng.randbytes(8)])
        elif mode == "dense":  # half the words of the first pages
            for off in range(0, min(size, 4096 * (seed + 1)), 8):
                if rng.random() < 0.5:
                    m[off:off + 8] = rng.choice(words + [rng.randbytes(8)])
        else:  # every byte
            m[:size] = bytes([seed]) * size
        m.close()
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", ["scatter", "dense", "fill"])
@pytest.mark.parametrize("seed", [1, 2, 0x7F, 0xFF])
def test_garbage_written_by_a_peer_is_an_exception_never_a_crash(uniq, mode, seed):
    name = uniq("chan")
    c = mman.Channel(name, capacity=1 << 14)
    tx = c.sender()
    for i in range(20):
        tx.send(bytes([i]) * (i * 37 % 500 + 1))
    p = spawn_py(GARBAGE_CHILD, name, seed)
    try:
        wait_line(p, "ready")
        _scribble(name, mode, seed % 3 if mode != "fill" else seed)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, (p.returncode, err.decode()[-2000:])
    out = out.decode()
    assert "survived" in out
    if mode == "fill":  # nothing of the channel is left: the receiver must have said so
        assert "Error" in out or "Disconnected" in out, out


# --- broadcast -------------------------------------------------------------------------------


def test_broadcast_in_one_process():
    b = mman.Broadcast(slots=8, message_size=64)
    early = b.subscriber()
    pub = b.publisher()
    assert pub.publish(b"zero") == 0
    late = b.subscriber()
    pub.publish(b"one")
    assert early.recv(timeout=5) == b"zero"
    assert early.recv(timeout=5) == b"one"
    assert late.recv(timeout=5) == b"one"
    for i in range(20):
        pub.publish(bytes([i]))
    seq, missed, data = late.recv_delivery(timeout=5)
    assert (missed, data) == (12, bytes([12])) and late.missed == 12
    with pytest.raises(mman.InvalidInputError):
        pub.publish(b"x" * 65)


def _subscriber(sub, q):
    limit_child()
    got = []
    assert sub.try_recv() is None  # attaches: from now on it sees every message
    q.put("ready")
    try:
        while True:
            got.append(sub.recv(timeout=60))
    except mman.Disconnected:
        q.put(got)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_broadcast_to_two_child_processes(method):
    ctx = mp.get_context(method)
    b = mman.Broadcast(slots=16, message_size=32)
    q = ctx.Queue()
    subs = [b.subscriber(wait_for_me=True) for _ in range(2)]
    procs = [ctx.Process(target=_subscriber, args=(s, q)) for s in subs]
    for p in procs:
        p.start()
    for s in subs:
        s.close()  # the children subscribe anew, by name
    assert [q.get(timeout=60) for _ in procs] == ["ready", "ready"]
    pub = b.publisher()
    # Waited-for subscribers never miss a message, even 10x the slots.
    for i in range(160):
        pub.publish(i.to_bytes(2, "little"), timeout=60)
    pub.close()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    for got in results:
        assert [int.from_bytes(m, "little") for m in got] == list(range(160))


def test_messages_larger_than_the_ring_go_through_the_pool_or_as_sealed_memfds():
    # From 32 KiB up to a pool slot (2 MiB by default), a message goes through the pool:
    # copied out, so recv_obj's arrays are writable copies.
    c = mman.Channel(capacity=1 << 16)
    assert c.pool == (4, 2 << 20) and c.max_message == 2 << 20
    tx, rx = c.sender(), c.receiver()
    big = bytes(range(256)) * 2048  # 512 KiB, 8x the ring
    tx.send(big)
    assert rx.recv(timeout=30) == big
    tx.send(big)
    buf = bytearray(len(big))
    assert rx.recv_into(buf, timeout=30) == len(big) and buf == big
    a = np.arange(100_000, dtype=np.float64)
    tx.send_obj(a)
    got = rx.recv_obj(timeout=30)
    np.testing.assert_array_equal(got, a)
    assert got.flags.writeable
    # Larger than a slot: a sealed memfd, whose arrays are read-only views.
    huge = bytes(range(256)) * 12288  # 3 MiB
    tx.send(huge)
    assert rx.recv(timeout=30) == huge
    a = np.arange(400_000, dtype=np.float64)  # 3.2 MB
    tx.send_obj(a)
    got = rx.recv_obj(timeout=30)
    np.testing.assert_array_equal(got, a)
    assert not got.flags.writeable
    # Without a pool, everything past the ring goes sealed.
    c = mman.Channel(capacity=1 << 16, pool=(0, 0))
    assert c.pool == (0, 0) and c.max_message < 1 << 16
    tx, rx = c.sender(), c.receiver()
    tx.send(big)
    assert rx.recv(timeout=30) == big
    with pytest.raises(ValueError):
        mman.Channel(pool=(1, 1000))  # not a multiple of 4096
    # (Between processes: test_numpy_round_trip_with_a_child sends 2.4 MB arrays.)


def _send_with_inherited(tx):
    limit_child()
    tx.send(b"from the child")  # the parent's attached sender: the child attaches its own


def test_an_endpoint_attached_in_the_parent_works_in_a_forked_child():
    c = mman.Channel(senders=2)
    tx, rx = c.sender(), c.receiver()
    tx.send(b"from the parent")  # attached here before the fork
    p = mp.get_context("fork").Process(target=_send_with_inherited, args=(tx,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert rx.recv(timeout=30) == b"from the parent"
    assert rx.recv(timeout=30) == b"from the child"
    tx.send(b"the parent's still works")
    assert rx.recv(timeout=30) == b"the parent's still works"


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["u1", "i2", "i4", "f4", "f8", "c16"]),
    st.integers(0, 100_000),
    st.booleans(),
)
def test_send_obj_of_any_array_arrives_equal(dtype, n, fortran):
    c = mman.Channel(capacity=1 << 20)
    tx, rx = c.sender(), c.receiver()
    a = (np.random.default_rng(n).random(n) * 1000).astype(dtype)
    if fortran and n >= 4:
        a = np.asfortranarray(a[: n - n % 4].reshape(4, -1))
    tx.send_obj(("label", a))
    label, b = rx.recv_obj(timeout=30)
    assert label == "label" and b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_kill_9_of_the_publisher_gives_disconnected(uniq):
    name = uniq("bcast")
    b = mman.Broadcast(name, slots=8, message_size=64)
    sub = b.subscriber()
    child = spawn_py(
        """
        import sys, time, mman
        pub = mman.Broadcast.open(sys.argv[1]).publisher()
        pub.publish(b"alive")
        print("ready", flush=True)
        time.sleep(600)
        """,
        name,
    )
    try:
        wait_line(child, "ready")
        assert sub.recv(timeout=30) == b"alive"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        with pytest.raises(mman.Disconnected):
            sub.recv(timeout=30)
    finally:
        child.kill()
        child.wait()
