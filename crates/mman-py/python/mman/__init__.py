"""mman: the Unix memory-mapping API for Python, SIGBUS-safe (Linux)."""

from ._errors import (  # noqa: F401
    CorruptedError,
    Disconnected,
    Error,
    ExistsError,
    InvalidInputError,
    NotFoundError,
    NotMappableError,
    PermissionDeniedError,
    ResourceLimitError,
    TruncatedError,
    UnsupportedError,
)
from ._mman import Condition, Lock, Mapping, Semaphore, SharedMemory, map_file  # noqa: F401
from . import shm  # noqa: F401
