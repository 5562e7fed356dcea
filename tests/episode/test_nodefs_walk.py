"""NodeFS's no-follow reads and its walk: symlinks are never followed, FIFOs never opened, depth bounded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpcgym.episode.nodefs import NodeFS


@pytest.fixture
def fs(tmp_path: Path) -> NodeFS:
    root = tmp_path / "root"
    (root / "home" / "alice" / "sub").mkdir(parents=True)
    (root / "home" / "alice" / "sub" / "a.txt").write_text("a")
    (root / "home" / "alice" / "b.txt").write_text("b")
    os.mkfifo(root / "home" / "alice" / "fifo")
    (root / "home" / "alice" / "loop").symlink_to("loop")
    (root / "home" / "alice" / "out").symlink_to(tmp_path)  # outside the node: never entered
    (root / "home" / "bob").symlink_to("alice")
    (tmp_path / "secret").write_text("host")
    return NodeFS(root, os.getuid(), 1 << 16)


def test_walk_lists_without_following(fs: NodeFS) -> None:
    found = dict(fs.walk("/home", max_entries=100, max_depth=8))
    assert sorted(found) == [
        "/home/alice",
        "/home/alice/b.txt",
        "/home/alice/fifo",
        "/home/alice/loop",
        "/home/alice/out",
        "/home/alice/sub",
        "/home/alice/sub/a.txt",
        "/home/bob",
    ]
    assert stat.S_ISLNK(found["/home/bob"].st_mode)


def test_walk_is_bounded(fs: NodeFS) -> None:
    assert len(fs.walk("/home", max_entries=3, max_depth=8)) == 3
    assert "/home/alice/sub/a.txt" not in dict(fs.walk("/home", max_entries=100, max_depth=1))
    assert fs.walk("/home/bob", max_entries=100, max_depth=8) == []  # a symlinked top is not walked
    assert fs.walk("/nowhere", max_entries=100, max_depth=8) == []


def test_no_follow_reads_refuse_any_symlink_on_the_way(fs: NodeFS) -> None:
    assert fs.read("/home/bob/b.txt") == b"b"
    assert fs.read("/home/bob/b.txt", follow_symlinks=False) is None
    assert fs.read("/home/alice/b.txt", follow_symlinks=False) == b"b"
    assert fs.read("/home/alice/loop", follow_symlinks=False) is None
    assert fs.read("/home/alice/fifo", follow_symlinks=False) is None
    link = fs.stat("/home/alice/loop", follow_symlinks=False)
    assert link is not None and stat.S_ISLNK(link.st_mode)
    assert fs.stat("/home/bob/b.txt", follow_symlinks=False) is None
    assert fs.stat("/home/alice/loop") is None
