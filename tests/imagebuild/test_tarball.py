"""The canonical tar writer: same tree, same bytes; nothing of the host leaks in."""

import io
import os
import tarfile

import pytest

from hpcgym.imagebuild.tarball import write_canonical_tar

EPOCH = 1700000000


def make_tree(root, order=("b", "a")):
    root.mkdir()
    for name in order:  # creation order must not matter
        (root / name).write_text(name)
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("builder-host-123\n")
    (root / "etc" / "machine-id").write_text("0123456789abcdef\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "su").write_bytes(b"\x7fELF")
    os.chmod(root / "usr" / "bin" / "su", 0o4755)
    os.link(root / "usr" / "bin" / "su", root / "usr" / "bin" / "a-link")
    (root / "var" / "log" / "apt").mkdir(parents=True)
    (root / "var" / "log" / "apt" / "history.log").write_text("Start-Date: today\n")
    (root / "lib").symlink_to("usr/lib")
    os.mkfifo(root / "fifo")
    (root / ".dockerenv").write_text("")
    return root


def archive(root, **kwargs):
    out = io.BytesIO()
    summary = write_canonical_tar(root, out, epoch=EPOCH, **kwargs)
    return summary, out.getvalue()


def test_same_tree_same_bytes_whatever_the_mtimes_and_creation_order(tmp_path):
    one = make_tree(tmp_path / "one", order=("a", "b"))
    two = make_tree(tmp_path / "two", order=("b", "a"))
    os.utime(two / "a", (1, 1))
    s1, b1 = archive(one)
    s2, b2 = archive(two)
    assert b1 == b2 and s1.digest == s2.digest
    assert s1.size_bytes == len(b1) and len(b1) % 10240 == 0


def test_entries_are_sorted_numeric_and_epoch_stamped(tmp_path):
    _, data = archive(make_tree(tmp_path / "r"))
    members = tarfile.open(fileobj=io.BytesIO(data)).getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {EPOCH}
    assert {(m.uname, m.gname) for m in members} == {("", "")}


def test_setuid_kept_hardlinks_stable_and_scrubbed(tmp_path):
    _, data = archive(make_tree(tmp_path / "r"))
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data)).getmembers()}
    # The first name of a hardlink group in sorted order holds the data; the rest link to it.
    assert members["usr/bin/a-link"].isreg() and members["usr/bin/a-link"].mode == 0o4755
    assert members["usr/bin/su"].islnk() and members["usr/bin/su"].linkname == "usr/bin/a-link"
    assert members["lib"].issym() and members["lib"].linkname == "usr/lib"
    assert members["fifo"].isfifo()
    assert "var/log/apt" in members and "var/log/apt/history.log" not in members
    assert ".dockerenv" not in members
    assert members["etc/machine-id"].size == 0


def test_pinned_files_override_the_tree(tmp_path):
    _, data = archive(make_tree(tmp_path / "r"), pinned={"etc/hostname": b"login01\n"})
    tar = tarfile.open(fileobj=io.BytesIO(data))
    assert tar.extractfile("etc/hostname").read() == b"login01\n"
    assert tar.getmember("etc/mtab").linkname == "../proc/self/mounts"


def test_content_change_changes_digest(tmp_path):
    root = make_tree(tmp_path / "r")
    before, _ = archive(root)
    os.chmod(root / "a", 0o600)
    after_mode, _ = archive(root)
    (root / "a").write_text("changed")
    after_content, _ = archive(root)
    assert len({before.digest, after_mode.digest, after_content.digest}) == 3


def test_pinning_over_a_directory_is_refused(tmp_path):
    root = make_tree(tmp_path / "r")
    with pytest.raises(ValueError, match="is a directory"):
        archive(root, pinned={"etc": b""})
