"""``python -m mman.bench``: mman's channel against the standard library's ways of moving
messages between two processes, measured in the same run.

Rows: ``mman`` (``Channel``), ``mp_pipe`` (``multiprocessing.Pipe``, ``send_bytes``),
``mp_queue`` (``multiprocessing.Queue``), ``faster_fifo`` (if installed) and
``shared_memory_queue`` (``multiprocessing.shared_memory`` slots plus a ``Queue`` of
notifications). Sizes 64 B, 4 KiB and 1 MiB as ``bytes``, and 1 MiB as a numpy array (when
numpy is installed): ``send_obj``/``recv_obj`` for mman (pickle protocol 5, out-of-band),
``send_bytes`` of the array for the pipe, ``put`` for the queues.

* Round trip: the parent sends a message, the child sends it back; the median of many.
* One way: the parent sends a stream of messages, the child takes them (each way's best:
  ``recv_batch`` for mman, ``get_many`` for faster_fifo) and answers once at the end;
  messages per second over the whole stream. The count adapts so a stream lasts about
  ``--seconds``.

mman's endpoints spin up to 50 µs, where that can help, before they sleep (its default); ``--spin 0`` makes them sleep
at once, which is faster on a loaded machine, where a spinning waiter takes the CPU its
peer needs.

Options: ``--json`` (``{"results": [{"method", "size", "payload", "rtt_median_ns",
"msgs_per_s"}]}``), ``--quick`` (fewer rounds), ``--methods a,b``, ``--seconds S``.
Figures depend on the machine and its load: compare rows of one run, not runs.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

KIB = 1024
MIB = 1024 * 1024
SIZES = [(64, "bytes"), (4 * KIB, "bytes"), (MIB, "bytes"), (MIB, "numpy")]
METHODS = ["mman", "mp_pipe", "mp_queue", "faster_fifo", "shared_memory_queue"]
END = b""  # ends a one-way stream (payloads are never empty)
QUIT = b"Q"  # ends the child (payloads are never one byte)


# --- transports: each gives the parent's and the child's end --------------------------------


class MmanEnd:
    def __init__(self, tx, rx, objects):
        self.tx, self.rx, self.objects = tx, rx, objects

    def send(self, m):
        if self.objects:
            self.tx.send_obj(m)
        else:
            self.tx.send(m)

    def recv(self):
        return self.rx.recv_obj() if self.objects else self.rx.recv()

    def recv_many(self):
        if self.objects:
            return [self.rx.recv_obj()]
        return self.rx.recv_batch(4096)


MMAN_SPIN = [None]  # --spin (None: mman's default)


def make_mman(objects):
    import mman

    cap = 8 * MIB
    spin = MMAN_SPIN[0]
    fwd, back = mman.Channel(capacity=cap, spin=spin), mman.Channel(capacity=cap, spin=spin)
    return (
        MmanEnd(fwd.sender(), back.receiver(), objects),
        MmanEnd(back.sender(), fwd.receiver(), objects),
    )


class PipeEnd:
    def __init__(self, conn, objects):
        self.conn, self.objects = conn, objects

    def send(self, m):
        if self.objects and not _is_array(m):
            self.conn.send_bytes(b"O" + _dumps(m))
        else:
            self.conn.send_bytes(m)

    def recv(self):
        b = self.conn.recv_bytes()
        if self.objects:
            if b[:1] == b"O":
                import pickle

                return pickle.loads(b[1:])
            import numpy

            return numpy.frombuffer(b, dtype=numpy.uint8)
        return b

    def recv_many(self):
        return [self.recv()]


def _dumps(m):
    import pickle

    return pickle.dumps(m)


def _is_array(m):
    return type(m).__name__ == "ndarray"


def make_mp_pipe(objects):
    a, b = mp.Pipe(duplex=True)
    return PipeEnd(a, objects), PipeEnd(b, objects)


class QueueEnd:
    def __init__(self, out, inq, many=False):
        self.out, self.inq, self.many = out, inq, many

    def send(self, m):
        self.out.put(m)

    def recv(self):
        return self.inq.get()

    def recv_many(self):
        if self.many:
            return self.inq.get_many(max_messages_to_get=4096)
        return [self.inq.get()]


def make_mp_queue(objects):
    fwd, back = mp.Queue(), mp.Queue()
    return QueueEnd(fwd, back), QueueEnd(back, fwd)


def make_faster_fifo(objects):
    import faster_fifo

    fwd = faster_fifo.Queue(max_size_bytes=16 * MIB)
    back = faster_fifo.Queue(max_size_bytes=16 * MIB)
    return QueueEnd(fwd, back, True), QueueEnd(back, fwd, True)


class ShmQueueEnd:
    """Messages copied into one of SLOTS shared-memory slots; the slot's index goes over a
    Queue, and comes back over another when the receiver has copied the message out."""

    SLOTS = 8

    def __init__(self, block, base, full, free, objects):
        self.block, self.base, self.full, self.free, self.objects = block, base, full, free, objects

    def send(self, m):
        if isinstance(m, bytes) and len(m) < 8:  # control messages
            self.full.put((-1, m))
            return
        mv = memoryview(m).cast("B")
        i = self.free.get()
        start = self.base + i * MIB
        self.block.buf[start:start + len(mv)] = mv
        self.full.put((i, len(mv)))

    def recv(self):
        i, n = self.full.get()
        if i < 0:
            return n
        start = self.base + i * MIB
        if self.objects:
            import numpy

            out = numpy.frombuffer(self.block.buf[start:start + n], dtype=numpy.uint8).copy()
        else:
            out = bytes(self.block.buf[start:start + n])
        self.free.put(i)
        return out

    def recv_many(self):
        return [self.recv()]


def make_shared_memory_queue(objects):
    from multiprocessing import shared_memory

    # Two halves: one direction each.
    block = shared_memory.SharedMemory(create=True, size=2 * ShmQueueEnd.SLOTS * MIB)
    fwd_full, fwd_free, back_full, back_free = (mp.Queue() for _ in range(4))
    for i in range(ShmQueueEnd.SLOTS):
        fwd_free.put(i)
        back_free.put(i)
    parent = ShmQueueEnd(block, 0, fwd_full, fwd_free, objects)
    parent.back = ShmQueueEnd(block, HALF, back_full, back_free, objects)
    return parent, (block.name, fwd_full, fwd_free, back_full, back_free)


class ShmQueuePair:
    def __init__(self, tx, rx):
        self.tx, self.rx = tx, rx

    def send(self, m):
        self.tx.send(m)

    def recv(self):
        return self.rx.recv()

    def recv_many(self):
        return [self.rx.recv()]


HALF = ShmQueueEnd.SLOTS * MIB

MAKERS = {
    "mman": make_mman,
    "mp_pipe": make_mp_pipe,
    "mp_queue": make_mp_queue,
    "faster_fifo": make_faster_fifo,
    "shared_memory_queue": make_shared_memory_queue,
}


def _available(method):
    if method == "faster_fifo":
        try:
            import faster_fifo  # noqa: F401
        except ImportError:
            return False
    return True


# --- the child --------------------------------------------------------------------------------


def _child(method, end, objects):
    if method == "shared_memory_queue":
        from multiprocessing import shared_memory

        name, fwd_full, fwd_free, back_full, back_free = end
        block = shared_memory.SharedMemory(name=name)
        end = ShmQueuePair(ShmQueueEnd(block, HALF, back_full, back_free, objects),
                           ShmQueueEnd(block, 0, fwd_full, fwd_free, objects))
    try:
        while True:
            m = end.recv()
            if _is_control(m, QUIT):
                return
            if _is_control(m, b"E"):  # echo mode until END
                while True:
                    m = end.recv()
                    if _is_control(m, END):
                        break
                    end.send(m)
                end.send(b"ok")
            elif _is_control(m, b"S"):  # sink mode until END
                done = False
                while not done:
                    for m in end.recv_many():
                        if _is_control(m, END):
                            done = True
                end.send(b"ok")
    finally:
        if method == "shared_memory_queue":
            block.close()


def _is_control(m, c):
    return isinstance(m, bytes) and m == c


# --- measurements -----------------------------------------------------------------------------


def _payload(size, kind):
    if kind == "numpy":
        import numpy

        return numpy.ones(size, dtype=numpy.uint8)
    return b"x" * size


def _round_trips(end, msg, n):
    end.send(b"E")
    times = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        end.send(msg)
        end.recv()
        times.append(clock() - t)
    end.send(END)
    assert end.recv() == b"ok"
    return statistics.median(times)


def _one_way(end, msg, n):
    end.send(b"S")
    t = time.perf_counter()
    for _ in range(n):
        end.send(msg)
    end.send(END)
    assert end.recv() == b"ok"
    return n / (time.perf_counter() - t)


def _limits(size):
    # (round trips, first stream, the longest stream): 1 MiB messages are bounded so that
    # queues that buffer in the sender (multiprocessing.Queue's feeder) stay small.
    if size >= MIB:
        return 30, 16, 256
    if size >= 4 * KIB:
        return 500, 1000, 200_000
    return 2000, 2000, 2_000_000


def measure(method, size, kind, seconds, quick):
    objects = kind == "numpy"
    parent, child_end = MAKERS[method](objects)
    if method == "shared_memory_queue":
        parent_end = ShmQueuePair(parent, parent.back)
    else:
        parent_end = parent
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_child, args=(method, child_end, objects), daemon=True)
    proc.start()
    try:
        msg = _payload(size, kind)
        rounds, first, longest = _limits(size)
        if quick:
            rounds, first = max(10, rounds // 10), max(8, first // 10)
        _round_trips(parent_end, msg, max(5, rounds // 10))  # warm up
        rtt = _round_trips(parent_end, msg, rounds)
        rate = _one_way(parent_end, msg, first)
        if not quick:
            n = int(min(longest, max(first, rate * seconds)))
            rate = _one_way(parent_end, msg, n)
        parent_end.send(QUIT)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        if method == "shared_memory_queue":
            parent.block.close()
            parent.block.unlink()
    return {"method": method, "size": size, "payload": kind, "rtt_median_ns": int(rtt), "msgs_per_s": rate}


def _ratio(results, method, other, size, kind, key):
    def get(m):
        for r in results:
            if r["method"] == m and r["size"] == size and r["payload"] == kind:
                return r[key]
        return None

    a, b = get(method), get(other)
    if a is None or b is None or a == 0 or b == 0:
        return None
    return b / a if key == "rtt_median_ns" else a / b


def targets(results):
    """The issue's targets, as ratios of this run: (what, ratio, the target)."""
    rows = [
        ("64 B round trip vs mp_pipe", _ratio(results, "mman", "mp_pipe", 64, "bytes", "rtt_median_ns"), 5),
        ("64 B one way vs mp_queue", _ratio(results, "mman", "mp_queue", 64, "bytes", "msgs_per_s"), 20),
        ("64 B one way vs faster_fifo (get_many)",
         _ratio(results, "mman", "faster_fifo", 64, "bytes", "msgs_per_s"), 3),
        ("1 MiB numpy one way vs mp_pipe (send_bytes)",
         _ratio(results, "mman", "mp_pipe", MIB, "numpy", "msgs_per_s"), 3),
    ]
    return [(what, r, t) for what, r, t in rows if r is not None]


def _size_name(size):
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB" if size >= KIB else f"{size} B"


def table(results):
    lines = [f"{'method':<20} {'payload':<8} {'size':>7} {'round trip':>12} {'one way msgs/s':>15} {'MB/s':>9}"]
    for r in results:
        mbs = r["msgs_per_s"] * r["size"] / 1e6
        lines.append(
            f"{r['method']:<20} {r['payload']:<8} {_size_name(r['size']):>7} "
            f"{r['rtt_median_ns'] / 1000:>9.2f} us {r['msgs_per_s']:>15,.0f} {mbs:>9,.0f}"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mman.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quick", action="store_true", help="few rounds (a smoke test, not a measurement)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated rows to run")
    p.add_argument("--seconds", type=float, default=0.3, help="length of each one-way stream")
    p.add_argument(
        "--spin", type=float, default=None,
        help="seconds mman's waiting endpoints spin before sleeping (default: mman's, up to 50 us; "
        "0, sleeping at once, is faster on a loaded machine, where a spinner takes the CPU "
        "its peer needs)",
    )
    args = p.parse_args(argv)
    if args.spin is not None and not (0 <= args.spin <= 0.01):
        p.error("--spin: from 0 to 0.01 seconds")
    MMAN_SPIN[0] = args.spin
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in MAKERS:
            p.error(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    if not (0 < args.seconds <= 60):
        p.error("--seconds: from 0 to 60")
    try:
        import numpy  # noqa: F401

        sizes = SIZES
    except ImportError:
        sizes = [s for s in SIZES if s[1] != "numpy"]
    results, skipped = [], []
    for method in methods:
        if not _available(method):
            skipped.append(method)
            continue
        for size, kind in sizes:
            results.append(measure(method, size, kind, args.seconds, args.quick))
            if not args.json:
                print(f"  measured {method} {kind} {_size_name(size)}", file=sys.stderr)
    if args.json:
        out = {
            "results": results,
            "skipped": skipped,
            "targets": [{"what": w, "ratio": r, "target": t} for w, r, t in targets(results)],
            "mman_spin_s": args.spin,
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        }
        print(json.dumps(out, indent=2))
    else:
        print(table(results))
        for m in skipped:
            print(f"{m}: not installed, skipped")
        for what, r, t in targets(results):
            print(f"{what}: {r:.1f}x (target {t}x){'' if r >= t else '  MISSED'}")
        spin = "default (up to 50 us)" if args.spin is None else f"{args.spin * 1e6:g} us"
        print(f"mman spin {spin}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
