"""The store: whole entries or none, keys after entries, leftovers of dead builds swept."""

import json
import os
import subprocess
import sys

import pytest

from hpcgym.errors import DigestMismatch
from hpcgym.imagebuild.spec import sha256_file
from hpcgym.imagebuild.store import Store


def stage_entry(store, staged, payload=b"tar"):
    (staged / "rootfs.tar.zst").write_bytes(payload)
    manifest = {"artifact_sha256": sha256_file(staged / "rootfs.tar.zst")}
    (staged / "manifest.json").write_text(json.dumps(manifest))


def test_commit_then_lookup(tmp_path):
    store = Store(tmp_path / "store")
    assert store.lookup("k1") is None
    with store.staging() as staged:
        stage_entry(store, staged)
        entry = store.commit(staged, "d1", "k1")
    assert store.lookup("k1") == entry
    assert entry.artifact.read_bytes() == b"tar"
    store.verify(entry)
    assert not list((tmp_path / "store").glob("tmp-*"))


def test_corrupt_artifact_is_a_digest_mismatch(tmp_path):
    store = Store(tmp_path / "store")
    with store.staging() as staged:
        stage_entry(store, staged)
        entry = store.commit(staged, "d1", "k1")
    entry.artifact.write_bytes(b"tampered")
    with pytest.raises(DigestMismatch, match="delete it"):
        store.verify(entry)


def test_entry_without_manifest_is_not_an_entry(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "store" / "d1").mkdir()
    (tmp_path / "store" / "d1" / "rootfs.tar.zst").write_bytes(b"half")
    store.remember("k1", "d1")
    assert store.lookup("k1") is None


def test_sweep_removes_only_leftovers_of_dead_processes(tmp_path):
    store = Store(tmp_path / "store")
    # A process that stages and is killed before it can clean up.
    code = (
        "import os, sys; sys.path.insert(0, 'env'); from pathlib import Path; from hpcgym.imagebuild.store import Store; "
        f"s = Store(Path({str(tmp_path / 'store')!r})); cm = s.staging(); p = cm.__enter__(); "
        "print(p, flush=True); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    dead = proc.stdout.strip()
    assert dead and os.path.isdir(dead)
    with store.staging() as ours:
        removed = store.sweep()
        assert ours.is_dir(), "a live build keeps its staging folder"
    assert [str(p) for p in removed] == [dead]
    assert not os.path.exists(dead)
