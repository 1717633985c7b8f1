"""memoryviews of mman's memory (``Mapping.buf``, ``SharedMemory.buf``).

The views are made with ctypes, which the stable ABI for CPython 3.9 allows (an abi3 module
may export the buffer protocol only from 3.11). Each view keeps the memory mapped: the
mapping is unmapped when its object is closed *and* every view of it is gone, so a view
never points at unmapped memory.

What a view sees after the file was truncated under it: the pages past the new end read as
zeros (mman's SIGBUS handler put zero pages there), writes to them go nowhere, and nothing
kills the interpreter. Only mman's copying calls (slicing, ``read``, ``find``...) raise
``TruncatedError``; a view cannot raise, so check ``Mapping.verify()`` or
``Mapping.truncated`` after work done through views.
"""

_types = {}


def view(export):
    owner, address, length, readonly = export
    if length == 0:
        return memoryview(b"") if readonly else memoryview(bytearray())
    import ctypes

    cls = _types.get(length)
    if cls is None:
        cls = type("_MmanBytes", (ctypes.c_char * length,), {})
        if len(_types) < 64:
            _types[length] = cls
    arr = cls.from_address(address)
    arr._mman_owner = owner  # the mapping lives as long as the array, hence every view
    mv = memoryview(arr).cast("B")
    return mv.toreadonly() if readonly else mv
