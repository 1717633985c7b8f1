"""mman: the Unix memory-mapping API for Python, SIGBUS-safe (Linux)."""

from ._errors import (  # noqa: F401
    CorruptedError,
    Disconnected,
    Error,
    ExistsError,
    InvalidInputError,
    NotFoundError,
    NotMappableError,
    OwnerDied,
    PermissionDeniedError,
    ResourceLimitError,
    TruncatedError,
    UnsupportedError,
)
from ._mman import Mapping, map_file  # noqa: F401
