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
