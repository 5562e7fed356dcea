"""SPEC -> IMAGE: the build, as a flat list of steps.

`build_images` bootstraps (or reuses) the base, then for each role stages the build context, runs the
builder, archives the result with the canonical tar writer and commits it to the store. Every step is
keyed by the hash of its inputs, so a rebuild with nothing changed only looks things up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from hpcgym.errors import BuildError
from hpcgym.imagebuild import base as base_step
from hpcgym.imagebuild.backends import Builder, open_builder
from hpcgym.imagebuild.client import ensure_stubs
from hpcgym.imagebuild.spec import (
    DEFAULT_SOURCE_DATE_EPOCH,
    PERSONA,
    BaseKind,
    BaseSpec,
    BuildBackend,
    ImageSpec,
    Role,
    finalize_cache_key,
    hash_tree,
    normalized_mode,
    sha256_file,
)
from hpcgym.imagebuild.store import ARTIFACT, MANIFEST, Store, StoreEntry, dump_manifest
from hpcgym.imagebuild.tarball import WRITER_VERSION, TarSummary, write_canonical_tar

# Files a container engine bind-mounts during a build, so what a Containerfile writes there is lost;
# the writer pins them to the role's own copies instead.
IDENTITY_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")
MANIFEST_SCHEMA = 1


@dataclass(frozen=True)
class BuildOptions:
    """Everything `build_images` needs; `tasks.py` fills it from flags."""

    repo_root: Path
    store_dir: Path
    out_dir: Path
    backend: BuildBackend = BuildBackend.BUILDAH
    roles: tuple[Role, ...] = (Role.LOGIN, Role.COMPUTE)
    base: BaseSpec = field(default_factory=BaseSpec)
    no_cache: bool = False
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH
    zstd_level: int = 6

    def image_spec(self, role: Role, stubs_dir: Path | None = None) -> ImageSpec:
        return ImageSpec(role, self.repo_root / "images", stubs_dir or self.repo_root / "stubs")


@dataclass(frozen=True)
class ImageResult:
    role: Role
    entry: StoreEntry
    cache_hit: bool
    seconds: float

    @property
    def manifest(self) -> dict[str, Any]:
        return self.entry.manifest()


class Reporter:
    """Prints each step with its duration; `tasks.py` passes a rich console."""

    def __init__(self, console: Any = None) -> None:
        self.console = console
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        status = self.console.status(f"{name} ...") if self.console else contextlib.nullcontext()
        with status:
            yield
        elapsed = time.monotonic() - start
        self.timings[name] = elapsed
        if self.console:
            self.console.print(f"  [green]done[/] {name} [dim]({elapsed:.1f} s)[/]")


def build_images(options: BuildOptions, reporter: Reporter | None = None) -> list[ImageResult]:
    """Build (or find in the store) each requested role and publish it to `options.out_dir`.

    Returns:
        One result per role, in the order asked for, each saying whether it came from the cache.

    Raises:
        BuildError: a step failed; the message names the step and shows the builder's output.
        MissingTool: a host program is missing or the Docker engine is not running.
    """
    reporter = reporter or Reporter()
    store = Store(options.store_dir)
    store.sweep()
    for role in options.roles:
        options.image_spec(role).check()
    # The native client first: a missing compiler should fail the build before the builder starts.
    stubs_dir = ensure_stubs(options.repo_root / "stubs", store, reporter)
    builder = open_builder(options.backend)
    base_ref, base_digest = ensure_base(options, store, builder, reporter)
    results = []
    for role in options.roles:
        result = ensure_image(options, store, builder, base_ref, base_digest, role, reporter, stubs_dir)
        publish_image(result.entry, options.out_dir / str(role))
        results.append(result)
    return results


def ensure_base(options: BuildOptions, store: Store, builder: Builder, reporter: Reporter) -> tuple[str, str]:
    """Return the builder's reference to the base image and the base's output digest."""
    spec = options.base
    if spec.kind is BaseKind.OCI:
        assert spec.reference is not None
        return spec.reference, spec.reference.rpartition("@sha256:")[2]
    inputs = {
        "step": "base",
        "base": spec.describe(),
        "source_date_epoch": options.source_date_epoch,
        "writer": WRITER_VERSION,
        "mmdebstrap": base_step.mmdebstrap_version() if spec.kind is BaseKind.MMDEBSTRAP else None,
    }
    key = finalize_cache_key(inputs)
    with store.locked(key):
        entry = None if options.no_cache else store.lookup(key)
        if entry is None:
            with store.staging() as staged, store.staging() as scratch:
                root = scratch / "base"
                with reporter.stage(f"base: {spec.kind}"):
                    base_step.assemble_base(spec, root, options.source_date_epoch)
                with reporter.stage("base: canonical tar"):
                    manifest = archive_root(root, staged, options, pinned={})
                manifest.update(kind="base", inputs=inputs, cache_key=key, packages=read_dpkg_packages(root))
                (staged / MANIFEST).write_text(dump_manifest(manifest))
                entry = store.commit(staged, manifest["digest"], key)
    tag = f"localhost/hpcgym-base:{entry.digest[:16]}"
    if options.no_cache or not builder.has_image(tag):
        with reporter.stage(f"base: import into {builder.name}"), store.staging() as scratch:
            tar = scratch / "base.tar"
            decompress(entry.artifact, tar)
            builder.import_base(tar, tag)
    return tag, entry.digest


def ensure_image(
    options: BuildOptions,
    store: Store,
    builder: Builder,
    base_ref: str,
    base_digest: str,
    role: Role,
    reporter: Reporter,
    stubs_dir: Path | None = None,
) -> ImageResult:
    start = time.monotonic()
    spec = options.image_spec(role, stubs_dir)
    inputs = {
        "step": "image",
        "role": str(role),
        "base_digest": base_digest,
        "containerfile": sha256_file(spec.containerfile),
        "trees": {name: hash_tree(tree) for name, tree in spec.context_trees.items()},
        "source_date_epoch": options.source_date_epoch,
        "backend": str(builder.name),
        "backend_version": builder.version(),
        "writer": WRITER_VERSION,
    }
    key = finalize_cache_key(inputs)
    with store.locked(key):
        entry = None if options.no_cache else store.lookup(key)
        if entry is not None:
            return ImageResult(role, entry, cache_hit=True, seconds=time.monotonic() - start)
        tag = f"localhost/hpcgym-{role}:{key[:16]}"
        with store.staging() as staged, store.staging() as scratch:
            context = scratch / "context"
            stage_context(spec, context)
            build_args = {"BASE": base_ref, "SOURCE_DATE_EPOCH": str(options.source_date_epoch)}
            with reporter.stage(f"{role}: {builder.name} build"):
                builder.build(context, build_args, tag, pull=options.base.kind is BaseKind.OCI)
            try:
                with reporter.stage(f"{role}: canonical tar"), builder.exported_root(tag, scratch) as root:
                    manifest = archive_root(root, staged, options, pinned=identity_files(spec))
                    packages = read_dpkg_packages(root)
            finally:
                builder.remove_image(tag)
            budget = role.size_budget_bytes()
            if manifest["tar_bytes"] > budget:
                raise BuildError(
                    f"{role} is {manifest['tar_bytes']} bytes, over its budget of {budget}",
                    hint="drop what grew it, or raise Role.size_budget_bytes on purpose",
                )
            manifest.update(
                kind="image",
                role=str(role),
                inputs=inputs,
                cache_key=key,
                packages=packages,
                persona=PERSONA,
                emulated=options.base.emulated,
                base=options.base.describe() | {"digest": base_digest},
                tools=finalize_tools(store, base_digest, builder, str(inputs["backend_version"])),
            )
            (staged / MANIFEST).write_text(dump_manifest(manifest))
            entry = store.commit(staged, manifest["digest"], key)
    return ImageResult(role, entry, cache_hit=False, seconds=time.monotonic() - start)


def finalize_tools(store: Store, base_digest: str, builder: Builder, builder_version: str) -> dict[str, Any]:
    """Versions of every tool whose behaviour shaped the bytes: the builder, mmdebstrap, the writer."""
    tools: dict[str, Any] = {str(builder.name): builder_version, "writer": WRITER_VERSION}
    base_entry = store.entry(base_digest)
    if base_entry is not None and base_entry.manifest()["inputs"].get("mmdebstrap"):
        tools["mmdebstrap"] = base_entry.manifest()["inputs"]["mmdebstrap"]
    tools["python-zstandard"] = zstandard.__version__
    return tools


def stage_context(spec: ImageSpec, context: Path) -> None:
    """Copy the Containerfile and its trees into a fresh build context with normalized modes."""
    context.mkdir(parents=True)
    shutil.copyfile(spec.containerfile, context / "Containerfile")
    for name, tree in spec.context_trees.items():
        shutil.copytree(tree, context / name, symlinks=True, copy_function=shutil.copyfile)
        for dirpath, dirnames, filenames in os.walk(context / name):
            for entry in [*dirnames, *filenames]:
                path = Path(dirpath) / entry
                if not path.is_symlink():
                    path.chmod(normalized_mode((tree / path.relative_to(context / name)).stat().st_mode))
        (context / name).chmod(0o755)


def identity_files(spec: ImageSpec) -> dict[str, bytes]:
    pinned = {}
    for name in IDENTITY_FILES:
        for tree in (spec.context_trees["files"], spec.context_trees["common"] / "files"):
            if (tree / name).is_file():
                pinned[name] = (tree / name).read_bytes()
                break
        else:
            raise BuildError(f"{spec.role} has no {name}", hint=f"add images/{spec.role}/files/{name}")
    return pinned


class _HashingFile:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self.f.write(data)


def archive_root(root: Path, staged: Path, options: BuildOptions, pinned: dict[str, bytes]) -> dict[str, Any]:
    """Write `root` as the canonical tar, zstd-compressed, into `staged`; return the manifest's core."""
    compressor = zstandard.ZstdCompressor(level=options.zstd_level, write_checksum=True)
    with open(staged / ARTIFACT, "wb") as raw:
        hashed = _HashingFile(raw)
        with compressor.stream_writer(hashed, closefd=False) as zst:  # type: ignore[arg-type]
            summary: TarSummary = write_canonical_tar(
                root,
                zst,
                epoch=options.source_date_epoch,
                pinned=pinned,  # type: ignore[arg-type]
            )
    return {
        "schema": MANIFEST_SCHEMA,
        "digest": summary.digest,
        "tar_bytes": summary.size_bytes,
        "entries": summary.entries,
        "artifact": ARTIFACT,
        "artifact_bytes": hashed.size,
        "artifact_sha256": hashed.hasher.hexdigest(),
        "compression": {"format": "zstd", "level": options.zstd_level},
        "source_date_epoch": options.source_date_epoch,
    }


def read_dpkg_packages(root: Path) -> dict[str, str]:
    status = root / "var/lib/dpkg/status"
    if not status.is_file():
        return {}
    packages = {}
    for stanza in status.read_text(errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))


def decompress(artifact: Path, out: Path) -> None:
    with open(artifact, "rb") as src, open(out, "wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)


def publish_image(entry: StoreEntry, dest: Path) -> None:
    """Place an image's artifact and manifest at `dest/`, replacing what was there atomically."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (ARTIFACT, MANIFEST):
        tmp = dest / f".{name}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(entry.path / name, tmp)
        except OSError:
            shutil.copyfile(entry.path / name, tmp)
        os.replace(tmp, dest / name)
