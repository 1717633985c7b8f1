"""mman.cache: status, touch, evict and lock of files and trees, as data classes."""

import dataclasses
import os
import signal

import pytest

import mman
import mman.cache as cache

from conftest import interrupt_and_check, spawn_py

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "sub").mkdir()
    for p in ("a", "sub/b"):
        (tmp_path / p).write_bytes(os.urandom(16 * PAGE))
    os.link(tmp_path / "a", tmp_path / "hardlink")
    os.fsync(os.open(tmp_path / "a", os.O_RDONLY))
    return tmp_path


def test_status_touch_evict_of_a_file(tree):
    f = tree / "a"
    s = cache.status(f)
    assert dataclasses.is_dataclass(s)
    assert s.pages == 16 and s.size == 16 * PAGE and s.path == str(f)
    assert s.source in ("cachestat", "mincore")
    t = cache.touch(f, 0, 4 * PAGE)
    assert t.pages == 4
    if t.after.resident is not None:
        assert t.after.resident == 4
    e = cache.evict(f, write_back=True)
    assert e.before.pages == 16
    if e.before.resident is not None:
        assert e.evicted == e.before.resident - e.after.resident


def test_lock_of_a_file_unlocks_at_the_end_of_with(tree):
    try:
        held = cache.lock(tree / "a")
    except mman.ResourceLimitError as e:
        pytest.skip(f"RLIMIT_MEMLOCK: {e}")
    with held:
        assert held.locked and held.pages == 16
    assert not held.locked


def test_trees_count_hard_links_once_and_report_errors(tree):
    t = cache.status_tree(tree)
    assert sorted(os.path.basename(f.path) for f in t.files) in (["a", "b"], ["b", "hardlink"])
    assert t.directories == 2 and t.pages == 32
    t = cache.touch_tree([tree / "sub"])
    assert [os.path.basename(f.path) for f in t.files] == ["b"]
    e = cache.evict_tree(tree)
    assert len(e.files) == 2
    missing = cache.status_tree([tree / "missing"])
    assert missing.files == [] and len(missing.skipped) == 1
    assert isinstance(missing.skipped[0], FileNotFoundError)
    assert missing.skipped[0].path.endswith("missing")


def test_errors_for_a_missing_file_and_a_directory(tree):
    with pytest.raises(mman.NotFoundError) as e:
        cache.status(tree / "missing")
    assert e.value.errno == 2 and e.value.hint
    with pytest.raises(mman.InvalidInputError):
        cache.status(tree)


def test_sigint_during_a_long_tree_walk(tmp_path):
    # Walks of a deep tree, over and over: Ctrl-C ends the call in progress.
    p = spawn_py(
        """
        import os, sys, mman.cache
        root = sys.argv[1]
        d = root
        for i in range(200):
            d = os.path.join(d, "d")
            os.mkdir(d)
            open(os.path.join(d, "f"), "wb").write(b"x" * 100)
        print("ready", flush=True)
        try:
            while True:
                mman.cache.status_tree(root)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """,
        tmp_path,
    )
    rc, out, err = interrupt_and_check(p)
    assert rc == 0, err
    assert "interrupted" in out
