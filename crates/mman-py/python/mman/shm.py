"""Named shared-memory objects: what exists, and removing those whose creator is gone.

mman needs no resource tracker: each object mman creates records its creator (process and
start time), so one left behind by a process that died (``kill -9``) is recognisable and
``remove_stale()`` removes it, while objects in use by live processes are never touched.
"""

from dataclasses import dataclass
from typing import List, Optional

from ._mman import SharedMemory, shm_list as _list, shm_remove_stale as _remove_stale

__all__ = ["ObjectInfo", "SharedMemory", "list_objects", "remove_stale"]


@dataclass(frozen=True)
class ObjectInfo:
    """One shared-memory object."""

    name: str
    size: int
    uid: int
    mode: int
    creator: Optional[int]
    creator_alive: Optional[bool]
    mman: bool

    @property
    def is_stale(self) -> bool:
        """Whether its creator is known to be gone."""
        return self.creator_alive is False


def list_objects(all: bool = False) -> List[ObjectInfo]:
    """mman's objects (``all``: every object in /dev/shm, mman's or not)."""
    return [ObjectInfo(*t) for t in _list(all)]


def remove_stale() -> List[str]:
    """Unlink this user's mman objects whose creator is gone; returns their names."""
    return _remove_stale()
