"""Whole builds through the real builders: cache hits, reproducibility, one digest for both backends,
and clear errors for bad input. The base is the tarball path (the base the main build made), so these
tests exercise `--base tarball:` while staying fast."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from hpcgym.errors import BuildError, MissingTool
from hpcgym.imagebuild import base as base_step
from hpcgym.imagebuild.pipeline import BuildOptions, Reporter, build_images, decompress
from hpcgym.imagebuild.spec import BaseKind, BaseSpec, BuildBackend, Role
from tests.conftest import REPO, STORE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def base_tarball(tmp_path_factory):
    for manifest_path in sorted(STORE.glob("*/manifest.json")):
        if json.loads(manifest_path.read_text()).get("kind") == "base":
            tar = tmp_path_factory.mktemp("base") / "base.tar"
            decompress(manifest_path.parent / "rootfs.tar.zst", tar)
            return tar
    pytest.skip("no base in .hpcgym/store: run `invoke build-images` first")


@pytest.fixture
def repo_copy(tmp_path):
    root = tmp_path / "repo"
    for tree in ("images", "stubs"):
        shutil.copytree(REPO / tree, root / tree, symlinks=True)
    return root


def options_for(repo_copy, base_tarball, tmp_path, **overrides):
    defaults = dict(
        repo_root=repo_copy,
        store_dir=tmp_path / "store",
        out_dir=tmp_path / "out",
        base=BaseSpec(kind=BaseKind.TARBALL, tarball=base_tarball),
    )
    return BuildOptions(**(defaults | overrides))


def digests(results):
    return {str(r.role): r.manifest["digest"] for r in results}


def test_rebuild_hits_cache_and_a_stub_change_rebuilds_images_not_base(repo_copy, base_tarball, tmp_path):
    options = options_for(repo_copy, base_tarball, tmp_path)
    first = build_images(options)
    assert [r.cache_hit for r in first] == [False, False]
    published = json.loads((tmp_path / "out" / "rocky-login" / "manifest.json").read_text())
    assert published["digest"] == first[0].manifest["digest"]

    reporter = Reporter()
    start = time.monotonic()
    again = build_images(options, reporter)
    assert time.monotonic() - start < 10
    assert [r.cache_hit for r in again] == [True, True]
    assert digests(again) == digests(first)
    assert reporter.timings == {}, "a no-op rebuild runs no step"

    stub = repo_copy / "stubs" / "hpcgym-client.py"
    stub.write_text(stub.read_text() + "# changed\n")
    reporter = Reporter()
    changed = build_images(options, reporter)
    assert [r.cache_hit for r in changed] == [False, False]
    assert not any(name.startswith("base") for name in reporter.timings), "the base does not depend on stubs"
    assert all(digests(changed)[role] != digests(first)[role] for role in digests(first))


def test_two_no_cache_builds_are_identical(repo_copy, base_tarball, tmp_path):
    first = build_images(options_for(repo_copy, base_tarball, tmp_path, no_cache=True))
    second = build_images(options_for(repo_copy, base_tarball, tmp_path, no_cache=True))
    assert [r.cache_hit for r in second] == [False, False]
    assert digests(first) == digests(second)
    assert first[0].manifest["artifact_sha256"] == second[0].manifest["artifact_sha256"]


@pytest.mark.docker
def test_buildah_and_docker_give_one_digest(repo_copy, base_tarball, tmp_path):
    try:
        docker_options = options_for(repo_copy, base_tarball, tmp_path, backend=BuildBackend.DOCKER)
        with_docker = build_images(docker_options)
    except MissingTool as e:
        pytest.skip(f"no Docker engine: {e}")
    with_buildah = build_images(options_for(repo_copy, base_tarball, tmp_path, backend=BuildBackend.BUILDAH))
    assert [r.cache_hit for r in with_buildah] == [False, False], "different backends key differently"
    assert digests(with_docker) == digests(with_buildah)


def test_broken_containerfile_shows_the_failing_step(repo_copy, base_tarball, tmp_path):
    containerfile = repo_copy / "images" / "rocky-compute" / "Containerfile"
    containerfile.write_text(containerfile.read_text() + "RUN no-such-command --now\n")
    options = options_for(repo_copy, base_tarball, tmp_path, roles=(Role.COMPUTE,))
    with pytest.raises(BuildError) as caught:
        build_images(options)
    assert "no-such-command --now" in str(caught.value)
    assert "buildah could not build" in str(caught.value)
    assert not list((tmp_path / "store").glob("tmp-*"))
    assert not (tmp_path / "out" / "rocky-compute").exists()


def test_missing_copied_file_is_a_build_error(repo_copy, base_tarball, tmp_path):
    shutil.rmtree(repo_copy / "images" / "rocky-login" / "files")
    with pytest.raises(BuildError, match="'files'"):
        build_images(options_for(repo_copy, base_tarball, tmp_path))


def test_killed_build_leaves_the_store_consistent(repo_copy, base_tarball, tmp_path):
    store = tmp_path / "store"
    args = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "build-images",
            "--store", str(store), "--out", str(tmp_path / "out"), "--base", f"tarball:{base_tarball}"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(store.glob("tmp-*/rootfs.tar.zst")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-write of the base artifact
    proc.wait()
    # The native client's entry may be whole already; no key may point at an unfinished entry.
    for key in store.glob("keys/*"):
        assert (store / key.read_text().strip() / "manifest.json").is_file(), key
    assert all((d / "manifest.json").is_file() for d in store.iterdir() if len(d.name) == 64)
    assert not any(
        json.loads((d / "manifest.json").read_text()).get("kind") == "base"
        for d in store.iterdir()
        if len(d.name) == 64
    ), "the base was killed mid-write"
    results = build_images(options_for(repo_copy, base_tarball, tmp_path))
    assert [r.cache_hit for r in results] == [False, False]
    assert not list(store.glob("tmp-*")), "the next build sweeps what the killed one left"


def test_unreachable_mirror_is_a_clear_error(tmp_path):
    spec = BaseSpec(mirrors=("deb http://127.0.0.1:9/debian bookworm main",))
    with pytest.raises(BuildError, match="could not reach the Debian mirror") as caught:
        base_step.bootstrap_debian(spec, tmp_path / "root", 1700000000)
    assert "--mirror" in str(caught.value)


def test_missing_builder_names_its_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("hpcgym.run.DEFAULT_PATH", "/nonexistent")
    from hpcgym.imagebuild.backends import open_builder

    with pytest.raises(MissingTool, match="buildah is not installed") as caught:
        open_builder(BuildBackend.BUILDAH)
    assert caught.value.hint == "apt-get install buildah"


def test_docker_engine_not_running_says_how_to_start_it(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    from hpcgym.imagebuild.backends import open_builder

    with pytest.raises(MissingTool) as caught:
        open_builder(BuildBackend.DOCKER)
    assert "dockerd --iptables=false --bridge=none" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("oci:quay.io/rockylinux/rockylinux:9.5", "not pinned by digest"),
        ("tarball:/nonexistent/rootfs.tar", "does not exist"),
        ("debootstrap", "unknown base"),
    ],
)
def test_bad_base_values_are_refused(text, message):
    with pytest.raises(BuildError, match=message):
        BaseSpec.parse(text)


def test_pinned_oci_reference_is_accepted():
    spec = BaseSpec.parse("oci:quay.io/rockylinux/rockylinux:9.5@sha256:" + "a" * 64)
    assert spec.kind is BaseKind.OCI and not spec.emulated
