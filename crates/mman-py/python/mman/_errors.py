"""The exceptions of mman: every failure is an ``mman.Error``, a subclass of ``OSError``.

Each carries ``errno`` (when the operating system reported one), ``operation`` (such as
``"mmap"`` or ``"recv"``), ``path`` (the file or shared-memory name, when there is one),
``hint`` (what to do about it, when mman knows) and ``kind`` (the Rust ``ErrorKind``'s
name). ``str(e)`` is mman's one-line message with all of these.
"""


class Error(OSError):
    """An mman operation failed."""

    operation = None
    path = None
    hint = None
    kind = "Os"


class TruncatedError(Error):
    """A mapped file shrank: the bytes asked for are gone (``truncation`` = (needed, size now))."""

    truncation = None


class Disconnected(Error, EOFError):
    """The other end of a channel is gone: closed, or its process died."""


class CorruptedError(Error):
    """Shared state holds values no mman peer writes (a peer scribbled over it)."""


class NotFoundError(Error, FileNotFoundError):
    """The file or shared-memory object does not exist."""


class PermissionDeniedError(Error, PermissionError):
    """Not allowed: a read-only file or mapping, another user's object."""


class ExistsError(Error, FileExistsError):
    """The name is taken."""


class InvalidInputError(Error, ValueError):
    """An argument is malformed or out of range."""


class ResourceLimitError(Error, MemoryError):
    """A resource limit stands in the way (RLIMIT_MEMLOCK, memory, huge pages)."""


class UnsupportedError(Error):
    """The kernel or platform lacks the feature."""


class NotMappableError(Error):
    """The file cannot be memory-mapped (a pipe, a /proc file): read it instead."""


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, Error):
        _cls.__module__ = "mman"
del _cls
