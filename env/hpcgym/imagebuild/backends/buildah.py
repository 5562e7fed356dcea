"""Build with buildah through its command line: rootful, chroot isolation, no network for RUN steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hpcgym.errors import BuildError
from hpcgym.imagebuild.backends import iter_build_errors
from hpcgym.imagebuild.spec import BuildBackend
from hpcgym.run import CommandFailed, require_tool, run


class BuildahBuilder:
    name = BuildBackend.BUILDAH

    def __init__(self) -> None:
        require_tool("buildah")

    def version(self) -> str:
        return run(["buildah", "--version"]).stdout.split()[2]

    def has_image(self, tag: str) -> bool:
        return run(["buildah", "inspect", "--type", "image", tag], check=False).returncode == 0

    def import_base(self, tarball: Path, tag: str) -> None:
        container = run(["buildah", "from", "scratch"]).stdout.strip().splitlines()[-1]
        try:
            # buildah add unpacks a local tarball into the container, keeping owners and setuid bits.
            run(["buildah", "add", container, str(tarball), "/"])
            run(["buildah", "commit", "--quiet", "--omit-history", "--timestamp", "0", container, tag])
        finally:
            run(["buildah", "rm", container], check=False)

    def build(self, context: Path, build_args: dict[str, str], tag: str, *, pull: bool) -> None:
        if pull:
            # The only step that may use the network: fetch a pinned OCI base before the build is cut off.
            try:
                run(["buildah", "pull", "--quiet", build_args["BASE"]], timeout_s=1800)
            except CommandFailed as e:
                raise BuildError(
                    f"cannot pull the base image {build_args['BASE']}:\n{e}",
                    hint="is the registry reachable from here? use --base tarball:PATH otherwise",
                ) from None
        # chroot isolation cannot make a network namespace of its own, so the whole build runs in an
        # empty one: RUN steps see only a loopback interface, and the base is already local.
        argv = [
            "unshare", "--net", "--",
            "buildah", "bud",
            "--isolation", "chroot",
            "--omit-history",
            "--layers=false",
            "--pull-never",
            "--timestamp", build_args["SOURCE_DATE_EPOCH"],
            "--file", str(context / "Containerfile"),
            "--tag", tag,
        ]  # fmt: skip
        for key, value in sorted(build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        try:
            run([*argv, str(context)], timeout_s=1800)
        except CommandFailed as e:
            raise BuildError(
                "buildah could not build the Containerfile:\n" + "\n".join(iter_build_errors(e.output)),
                hint="the lines above are the failing step and its output",
            ) from None

    @contextlib.contextmanager
    def exported_root(self, tag: str, scratch: Path) -> Iterator[Path]:
        container = run(["buildah", "from", "--pull-never", tag]).stdout.strip().splitlines()[-1]
        try:
            mountpoint = run(["buildah", "mount", container]).stdout.strip()
            yield Path(mountpoint)
        finally:
            run(["buildah", "umount", container], check=False)
            run(["buildah", "rm", container], check=False)

    def remove_image(self, tag: str) -> None:
        run(["buildah", "rmi", "--force", tag], check=False)
