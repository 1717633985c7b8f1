"""Objects over channels (``send_obj``/``recv_obj``), and ``recv_async``.

An object travels as one message: a header, the pickle (protocol 5), then each
out-of-band buffer (a numpy array's data, a ``PickleBuffer``) aligned to 16 bytes. The
sender gathers the parts into the ring with the GIL released; a large message is received
into memory mman owns and the buffers are handed to ``pickle.loads`` as views of it, so a
numpy array arrives with the one copy out of the ring and none after.

Header: ``b"MMO5"``, the buffer count (u32), the pickle's length (u64), then each buffer's
offset and length (u64 pairs), little-endian.
"""

import pickle
import struct

from . import _view

_MAGIC = b"MMO5"
_ALIGN = 16


def send_obj(tx, obj, timeout=None):
    bufs = []

    def out_of_band(pb):
        try:
            raw = pb.raw()
        except BufferError:  # not contiguous: pickled in-band
            return True
        bufs.append(raw)
        return False

    data = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
    head_len = 16 + 16 * len(bufs)
    parts = [None, data]
    offsets = []
    pos = head_len + len(data)
    for b in bufs:
        pad = -pos % _ALIGN
        if pad:
            parts.append(bytes(pad))
            pos += pad
        offsets.append((pos, b.nbytes))
        parts.append(b)
        pos += b.nbytes
    head = struct.pack("<4sIQ", _MAGIC, len(bufs), len(data))
    head += b"".join(struct.pack("<QQ", o, n) for o, n in offsets)
    parts[0] = head
    tx._send_parts(parts, timeout)


def _corrupt(why):
    from ._errors import CorruptedError

    e = CorruptedError("recv_obj: " + why)
    e.operation = "recv_obj"
    e.kind = "Corrupted"
    return e


def recv_obj(rx, timeout=None):
    raw = rx._recv_raw(timeout)
    mv = memoryview(raw) if isinstance(raw, bytes) else _view.view(raw)
    if len(mv) < 16 or bytes(mv[:4]) != _MAGIC:
        raise _corrupt("the message is not an object sent with send_obj")
    _, n, plen = struct.unpack_from("<4sIQ", mv, 0)
    if 16 + 16 * n + plen > len(mv):
        raise _corrupt("the header claims more bytes than the message holds")
    bufs = []
    for i in range(n):
        off, ln = struct.unpack_from("<QQ", mv, 16 + 16 * i)
        if off + ln > len(mv):
            raise _corrupt("a buffer lies outside the message")
        bufs.append(mv[off:off + ln])
    start = 16 + 16 * n
    return pickle.loads(mv[start:start + plen], buffers=bufs)


async def recv_async(rx, timeout=None):
    """Wait in a worker thread, 50 ms at a time, so a cancelled task stops waiting soon."""
    import asyncio
    import time

    m = rx.try_recv()
    if m is not None:
        return m
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
        try:
            return await loop.run_in_executor(None, rx.recv, left)
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise
