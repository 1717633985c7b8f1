"""Page-cache control (Linux): vmtouch as a Python library, over ``mman::cache``.

Each call takes a file (``status``, ``touch``, ``evict``, ``lock``) or directory trees
(``status_tree`` and the like, walked on several threads, hard-linked files once) and
returns plain data classes. Every figure is one the kernel gave: ``resident`` is ``None``
(with the reason in ``unknown``) when the kernel will not tell, never made up.

    >>> import mman.cache
    >>> s = mman.cache.status("/var/lib/db/index")
    >>> s.resident, s.pages
    >>> mman.cache.evict("/var/lib/db/index").after.resident
    >>> with mman.cache.lock("/var/lib/db/index") as held:   # pages stay in memory
    ...     ...

The work runs on a worker thread without the GIL; Ctrl-C raises ``KeyboardInterrupt``
within 50 ms (a tree walk stops early; a lock taken meanwhile is released).
"""

from dataclasses import dataclass
from typing import List, Optional

from . import _mman

__all__ = [
    "Status", "Touched", "Evicted", "Locked", "Tree",
    "status", "touch", "evict", "lock",
    "status_tree", "touch_tree", "evict_tree", "lock_tree",
]


@dataclass(frozen=True)
class Status:
    """The residency of a file (or of the range asked)."""

    path: str
    size: int
    pages: int
    resident: Optional[int]
    unknown: Optional[str]
    dirty: Optional[int]
    writeback: Optional[int]
    evicted: Optional[int]
    recently_evicted: Optional[int]
    source: str  # "cachestat" or "mincore"


@dataclass(frozen=True)
class Touched:
    """What ``touch`` did: pages read in (only those missing), and the residency after."""

    path: str
    pages: int
    touched: int
    after: Status


@dataclass(frozen=True)
class Evicted:
    """What ``evict`` did: the residency before and after (``after.resident``: what stayed)."""

    path: str
    before: Status
    after: Status

    @property
    def evicted(self) -> Optional[int]:
        if self.before.resident is None or self.after.resident is None:
            return None
        return max(0, self.before.resident - self.after.resident)


@dataclass(frozen=True)
class Locked:
    """Pages of one file locked in memory (held by the ``Lock`` guard returned with it)."""

    path: str
    pages: int


@dataclass(frozen=True)
class Tree:
    """The outcome of a ``*_tree`` call: one entry per file, the errors of entries skipped
    (``mman.Error`` exceptions: unreadable, vanished, symlink loops), directories entered."""

    files: list
    skipped: List[BaseException]
    directories: int

    @property
    def pages(self) -> int:
        return sum(_pages(f) for f in self.files)


def _pages(f):
    if isinstance(f, Evicted):
        return f.after.pages
    return f.pages


class Lock:
    """Pages locked in memory until ``unlock()`` or the end of a ``with`` block (or until
    the object is garbage-collected). ``files``: what is locked, ``pages``: how many."""

    def __init__(self, guard, files):
        self._guard = guard
        self.files = files

    @property
    def pages(self) -> int:
        return sum(f.pages for f in self.files)

    @property
    def locked(self) -> bool:
        return self._guard.locked

    def unlock(self) -> None:
        self._guard.unlock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlock()
        return False

    def __repr__(self):
        return f"<mman.cache.Lock files={len(self.files)} pages={self.pages} locked={self.locked}>"


def _status(d):
    return Status(**d)


def _make(op, d):
    if op == "status":
        return _status(d)
    if op == "touch":
        return Touched(d["path"], d["pages"], d["touched"], _status(d["after"]))
    if op == "evict":
        return Evicted(d["path"], _status(d["before"]), _status(d["after"]))
    return Locked(d["path"], d["pages"])


def _file(op, path, start, end, write_back=False):
    d, guard = _mman.cache_file(op, path, start, end, write_back)
    return _make(op, d), guard


def status(path, start: int = 0, end: Optional[int] = None) -> Status:
    """The residency of the bytes ``start..end`` of the file ``path`` (whole pages)."""
    return _file("status", path, start, end)[0]


def touch(path, start: int = 0, end: Optional[int] = None) -> Touched:
    """Read into the page cache the pages of ``start..end`` not there yet. A file truncated
    meanwhile raises ``mman.TruncatedError`` (never SIGBUS)."""
    return _file("touch", path, start, end)[0]


def evict(path, start: int = 0, end: Optional[int] = None, write_back: bool = False) -> Evicted:
    """Drop the pages of ``start..end`` from the page cache; dirty pages stay unless
    ``write_back`` (then written back first, with ``fdatasync``)."""
    return _file("evict", path, start, end, write_back)[0]


def lock(path, start: int = 0, end: Optional[int] = None) -> Lock:
    """Lock the pages of ``start..end`` in memory (needs ``RLIMIT_MEMLOCK`` room or
    ``CAP_IPC_LOCK``: else ``mman.ResourceLimitError`` with the figures)."""
    locked, guard = _file("lock", path, start, end)
    return Lock(guard, [locked])


def _roots(roots):
    if isinstance(roots, (str, bytes)) or hasattr(roots, "__fspath__"):
        return [roots]
    return list(roots)


def _tree(op, roots, follow_symlinks, max_size, threads, write_back=False):
    files, skipped, dirs, guard = _mman.cache_tree(
        op, _roots(roots), follow_symlinks, max_size, threads, write_back
    )
    return Tree([_make(op, d) for d in files], list(skipped), dirs), guard


def status_tree(roots, *, follow_symlinks=False, max_size=None, threads=0) -> Tree:
    """``status`` of every regular file under ``roots`` (a path or a list of paths)."""
    return _tree("status", roots, follow_symlinks, max_size, threads)[0]


def touch_tree(roots, *, follow_symlinks=False, max_size=None, threads=0) -> Tree:
    """``touch`` of every regular file under ``roots``."""
    return _tree("touch", roots, follow_symlinks, max_size, threads)[0]


def evict_tree(roots, *, follow_symlinks=False, max_size=None, threads=0, write_back=False) -> Tree:
    """``evict`` of every regular file under ``roots``."""
    return _tree("evict", roots, follow_symlinks, max_size, threads, write_back)[0]


def lock_tree(roots, *, follow_symlinks=False, max_size=None, threads=0):
    """``lock`` of every regular file under ``roots``: (a ``Lock`` holding them all, the
    ``Tree`` of what was locked and skipped)."""
    tree, guard = _tree("lock", roots, follow_symlinks, max_size, threads)
    return Lock(guard, tree.files), tree
