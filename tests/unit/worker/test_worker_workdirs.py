"""Per-execution working directories: always empty and private, recycled when left so."""

from __future__ import annotations

import os
from pathlib import Path

from pycoflux.worker.workdirs import WorkDirs


def exists(path: str) -> bool:
    return os.path.exists(path)


def is_link(path: str) -> bool:
    return os.path.islink(path)


def fill(path: str) -> None:
    Path(path, "sub").mkdir()
    Path(path, "sub", "file.txt").write_text("left behind")
    Path(path, ".hidden").write_text("")


def link_to_new_directory(path: str, target: Path) -> None:
    target.mkdir(mode=0o700)
    os.symlink(target, path)


async def test_an_empty_directory_is_reused() -> None:
    dirs = WorkDirs(keep=2)
    first = dirs.acquire()
    assert os.listdir(first) == []
    await dirs.release(first)
    assert dirs.idle == 1
    assert dirs.acquire() == first
    await dirs.release(first)
    dirs.close()
    assert not exists(first)


async def test_directories_in_use_are_never_shared() -> None:
    dirs = WorkDirs(keep=4)
    held = [dirs.acquire() for _ in range(3)]
    assert len(set(held)) == 3
    for path in held:
        await dirs.release(path)
    again = [dirs.acquire() for _ in range(3)]
    assert sorted(again) == sorted(held)
    for path in again:
        await dirs.release(path)
    dirs.close()


async def test_a_directory_left_with_content_is_removed() -> None:
    dirs = WorkDirs(keep=2)
    path = dirs.acquire()
    fill(path)
    await dirs.release(path)
    assert not exists(path)
    assert dirs.idle == 0
    fresh = dirs.acquire()
    assert fresh != path and os.listdir(fresh) == []
    await dirs.release(fresh)
    dirs.close()


async def test_a_directory_with_changed_permissions_is_removed() -> None:
    dirs = WorkDirs(keep=2)
    path = dirs.acquire()
    os.chmod(path, 0o755)
    await dirs.release(path)
    assert not exists(path)
    assert dirs.idle == 0
    dirs.close()


async def test_a_directory_replaced_by_a_symlink_is_not_reused(tmp_path: Path) -> None:
    dirs = WorkDirs(keep=2)
    path = dirs.acquire()
    os.rmdir(path)
    target = tmp_path / "elsewhere"
    link_to_new_directory(path, target)
    try:
        await dirs.release(path)
        assert dirs.idle == 0
        assert exists(str(target))  # what the link pointed at is left alone
    finally:
        if is_link(path):
            os.unlink(path)
    dirs.close()


async def test_a_vanished_directory_is_forgotten() -> None:
    dirs = WorkDirs(keep=2)
    path = dirs.acquire()
    os.rmdir(path)
    await dirs.release(path)
    assert dirs.idle == 0
    dirs.close()


async def test_only_keep_directories_are_kept_and_none_after_close() -> None:
    dirs = WorkDirs(keep=1)
    a, b = dirs.acquire(), dirs.acquire()
    await dirs.release(a)
    await dirs.release(b)
    assert dirs.idle == 1
    assert exists(a) != exists(b)
    dirs.close()
    assert not exists(a) and not exists(b)
    c = dirs.acquire()
    await dirs.release(c)  # closed: removed, not kept
    assert not exists(c)
