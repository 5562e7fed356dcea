"""The invariant suite is only worth something if it fails on a broken image: break one, run it."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import zstandard

from hpcgym.imagebuild.tarball import write_canonical_tar
from tests.conftest import REPO, ROLES, unpack_image


@pytest.mark.slow
def test_insecure_munge_key_fails_the_suite(images_dir, tmp_path):
    broken = tmp_path / "images"
    for role in ROLES:
        shutil.copytree(images_dir / role, broken / role)
    root = unpack_image(images_dir / "rocky-compute", tmp_path / "root")
    os.chmod(root / "etc/munge/munge.key", 0o644)
    with open(broken / "rocky-compute" / "rootfs.tar.zst", "wb") as raw:
        with zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False) as zst:
            write_canonical_tar(root, zst, epoch=json.loads((images_dir / "rocky-compute" / "manifest.json")
                                                            .read_text())["source_date_epoch"])  # fmt: skip

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/images/test_cluster_config.py",
        ],
        cwd=REPO,
        env=os.environ | {"HPCGYM_IMAGES": str(broken)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout
    failed = [line.split(" - ")[0] for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert failed == [
        "FAILED tests/images/test_cluster_config.py::test_munge_key_is_private_to_munge[rocky-compute]"
    ]
