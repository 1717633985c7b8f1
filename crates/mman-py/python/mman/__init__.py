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
from ._mman import (  # noqa: F401
    Broadcast,
    Channel,
    Condition,
    Lock,
    Mapping,
    Publisher,
    Receiver,
    Semaphore,
    Sender,
    Subscriber,
    SharedMemory,
    map_file,
)
from . import cache, shm  # noqa: F401
from ._mman import _after_fork_in_child

import os as _os

# Channel and broadcast endpoints inherited across a fork belong to the parent: the child
# attaches its own on first use.
_os.register_at_fork(after_in_child=_after_fork_in_child)
del _os
