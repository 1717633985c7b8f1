"""Named shared-memory objects: what exists, and removing those left behind.

mman needs no resource tracker: every handle to an object mman creates holds a lock the
kernel drops when its process dies or execs, so one left behind by a process that died
(``kill -9``) is recognisable and ``remove_stale()`` removes it, while objects a live
process holds, and objects created to be kept, are never touched.
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
    #: Created to be kept (``mman shm create``): never stale.
    kept: bool
    #: Whether a live handle holds it (None: cannot tell).
    in_use: Optional[bool]
    mman: bool
    stale: bool

    @property
    def is_stale(self) -> bool:
        """Whether it is left behind: mman's, not kept, and no live handle holds it."""
        return self.stale


def list_objects(all: bool = False) -> List[ObjectInfo]:
    """mman's objects (``all``: every object in /dev/shm, mman's or not)."""
    return [ObjectInfo(*t) for t in _list(all)]


def remove_stale() -> List[str]:
    """Unlink this user's mman objects whose creator is gone; returns their names."""
    return _remove_stale()
