"""Build with a Docker engine through its Python SDK: import the base, build with network none, export."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from hpcgym.errors import BuildError, MissingTool
from hpcgym.imagebuild.backends import iter_build_errors
from hpcgym.imagebuild.spec import BuildBackend
from hpcgym.run import run


class DockerBuilder:
    name = BuildBackend.DOCKER

    def __init__(self) -> None:
        try:
            self.client = docker.from_env(timeout=600)
            self.client.ping()
        except docker.errors.DockerException as e:
            raise MissingTool(
                f"no Docker engine answers ({e})",
                hint="apt-get install docker.io, then start it: dockerd --iptables=false --bridge=none &",
            ) from None

    def version(self) -> str:
        return str(self.client.version()["Version"])

    def has_image(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True

    def import_base(self, tarball: Path, tag: str) -> None:
        repository, _, version = tag.rpartition(":")
        self.client.api.import_image_from_file(str(tarball), repository=repository, tag=version)

    def build(self, context: Path, build_args: dict[str, str], tag: str, *, pull: bool) -> None:
        try:
            self.client.images.build(
                path=str(context),
                dockerfile="Containerfile",
                tag=tag,
                buildargs=build_args,
                network_mode="none",
                pull=pull,
                rm=True,
                forcerm=True,
                nocache=True,
            )
        except docker.errors.BuildError as e:
            log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in e.build_log)
            raise BuildError(
                "docker could not build the Containerfile:\n" + "\n".join(iter_build_errors(log)),
                hint="the lines above are the failing step and its output",
            ) from None
        except docker.errors.APIError as e:
            raise BuildError(f"the Docker engine refused the build: {e.explanation}") from None

    @contextlib.contextmanager
    def exported_root(self, tag: str, scratch: Path) -> Iterator[Path]:
        container = self.client.containers.create(tag, command=["/bin/true"], network_mode="none")
        root = scratch / "rootfs"
        root.mkdir()
        exported = scratch / "export.tar"
        try:
            with open(exported, "wb") as f:
                for chunk in container.export():
                    f.write(chunk)
            # GNU tar as root keeps owners, setuid bits and hardlinks; Python's filters would drop setuid.
            run(["tar", "--extract", "--file", str(exported), "--directory", str(root),
                 "--numeric-owner", "--preserve-permissions", "--same-owner"])  # fmt: skip
            exported.unlink()
            yield root
        finally:
            container.remove(force=True)

    def remove_image(self, tag: str) -> None:
        with contextlib.suppress(docker.errors.ImageNotFound):
            self.client.images.remove(tag, force=True)
