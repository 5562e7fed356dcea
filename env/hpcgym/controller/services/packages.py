"""Each node's RPM database and the site's offline repository: what `rpm` and `dnf` answer for.

The images are Debian dressed as Rocky 9 (ARCHITECTURE.md, decision 2), so no real rpmdb exists in
them. The controller keeps one here instead: a small catalogue of the Rocky 9 packages a node of this
site has (their NEVRA and the files each owns), which of them each node has installed, and the
site's repository (`site-appstream` on login01's /apps export) that `dnf install`/`reinstall` take
them from. A package's files are the image's own: what a file should be (size, digest, mode, owner)
is read from the node's pristine image, never from the node, and `dnf reinstall` writes those bytes
back through the controller's node-file access.

Jobs whose program needs a package's library are registered here (`require`); when one starts, the
node's dynamic loader looks for that library, and a missing or damaged copy ends the job at once
with exit code 127 and ld.so's message in its output file, as a real node does.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import stat as statmod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hpcgym.controller.services.access import NodeAccess, NodeFileError
from hpcgym.controller.state import Job

# The dynamic loader's exit code for a program it cannot load (`127`, as the shell's for "not found").
LOADER_EXIT = 127
REPO_ID = "site-appstream"
REPO_NAME = "Site AppStream mirror (login01:/apps/repo)"


@dataclass(frozen=True)
class PackageFile:
    """One file a package owns; `link` is a symlink's target (rpm -V checks only that it is one)."""

    path: str
    link: str | None = None


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    release: str
    summary: str
    files: tuple[PackageFile, ...]
    size_kb: int
    arch: str = "x86_64"
    # Rocky's repository the package came from (dnf list installed shows it as @appstream).
    from_repo: str = "appstream"
    license: str = "GPLv2+"
    # The library a program loads (its soname) and the file that soname resolves to.
    soname: str | None = None

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}"

    @property
    def evr(self) -> str:
        return f"{self.version}-{self.release}"

    def library_file(self) -> str | None:
        regular = [f.path for f in self.files if f.link is None and f.path.startswith("/usr/lib64/")]
        return regular[0] if regular else None


def _lib(path: str, target: str) -> tuple[PackageFile, PackageFile]:
    return PackageFile(path, link=target), PackageFile(posixpath.join(posixpath.dirname(path), target))


# The packages of every node, in the order `rpm -qa` lists them (install order, as rpm does).
CATALOGUE: tuple[Package, ...] = (
    Package("bash", "5.1.8", "9.el9", "The GNU Bourne Again shell", (PackageFile("/usr/bin/bash"),), 7738),
    Package(
        "coreutils",
        "8.32",
        "36.el9",
        "A set of basic GNU tools commonly used in shell scripts",
        (PackageFile("/usr/bin/cat"), PackageFile("/usr/bin/ls")),
        5956,
    ),
    Package(
        "munge",
        "0.5.13",
        "13.el9",
        "Enables uid & gid authentication across a host cluster",
        (PackageFile("/usr/lib/systemd/system/munge.service"),),
        247,
    ),
    Package(
        "fftw-libs-double",
        "3.3.8",
        "12.el9",
        "FFTW library, double precision",
        _lib("/usr/lib64/libfftw3.so.3", "libfftw3.so.3.5.8"),
        3474,
        soname="libfftw3.so.3",
    ),
    Package(
        "gsl",
        "2.6",
        "7.el9",
        "The GNU Scientific Library for numerical analysis",
        _lib("/usr/lib64/libgsl.so.25", "libgsl.so.25.0.0"),
        6406,
        license="GPLv3+",
        soname="libgsl.so.25",
    ),
    Package(
        "openblas-openmp",
        "0.3.21",
        "2.el9",
        "An optimized BLAS library based on GotoBLAS2, OpenMP version",
        _lib("/usr/lib64/libopenblaso.so.0", "libopenblaso-r0.3.21.so"),
        38114,
        license="BSD",
        soname="libopenblaso.so.0",
    ),
)
BY_NAME = {package.name: package for package in CATALOGUE}

ImageReader = Callable[[str, str], bytes | None]


@dataclass(frozen=True)
class Requirement:
    """A job's program and the package whose library it loads."""

    program: str
    package: str


@dataclass
class PackageDB:
    """Installed packages per node, verified against the image, repaired from the site repository.

    Args:
        access: the nodes' files (the controller's node-file access).
        image_read: (node, path) -> the file's bytes in that node's pristine image.
        nodes: every node; each starts with the whole catalogue installed.
    """

    access: NodeAccess
    image_read: ImageReader
    nodes: Iterable[str]
    installed: dict[str, list[str]] = field(init=False)
    # (user, job name) -> what that job's program loads.
    requirements: dict[tuple[str, str], Requirement] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.installed = {node: [p.name for p in CATALOGUE] for node in self.nodes}

    def is_installed(self, node: str, name: str) -> bool:
        return name in self.installed.get(node, ())

    def packages(self, node: str) -> list[Package]:
        return [BY_NAME[name] for name in self.installed.get(node, ())]

    def owner_of(self, path: str) -> Package | None:
        for package in CATALOGUE:
            if any(f.path == path for f in package.files):
                return package
        return None

    # ---- rpm -V ---------------------------------------------------------------------------------

    def verify(self, node: str, package: Package) -> list[str]:
        """The lines `rpm -V` prints for one installed package: one per file that differs from the package."""
        lines = []
        for owned in package.files:
            lstat = getattr(self.access, "lstat", None)
            found = lstat(node, owned.path) if lstat is not None else None
            if owned.link is not None:
                if found is None:
                    lines.append(f"missing     {owned.path}")
                elif not statmod.S_ISLNK(found.mode):
                    lines.append(f"....L....    {owned.path}")
                continue
            data = self.access.read(node, owned.path)
            if found is None and data is None:
                lines.append(f"missing     {owned.path}")
                continue
            want = self.image_read(node, owned.path)
            if want is None:
                continue  # the image has no such file: nothing to compare it with
            flags = ["."] * 9
            if data is None or len(data) != len(want):
                flags[0] = "S"
            if data is None or hashlib.sha256(data).digest() != hashlib.sha256(want).digest():
                flags[2] = "5"
                flags[7] = "T"  # a rewritten file has a new mtime too
            if "".join(flags) != "." * 9:
                lines.append(f"{''.join(flags)}    {owned.path}")
        return lines

    def is_intact(self, node: str, name: str) -> bool:
        """Installed, and every file it owns is the package's (rpm -V prints nothing)."""
        package = BY_NAME.get(name)
        return package is not None and self.is_installed(node, name) and not self.verify(node, package)

    # ---- what dnf does ----------------------------------------------------------------------------

    def lay_down(self, node: str, package: Package) -> None:
        """Write the package's files from the repository (the image's bytes) and record it."""
        symlink = getattr(self.access, "symlink", None)
        for owned in package.files:
            if owned.link is not None:
                if symlink is not None:
                    symlink(node, owned.path, owned.link)
                continue
            data = self.image_read(node, owned.path)
            if data is not None:
                self.access.write(node, owned.path, data, mode=0o755)
        if package.name not in self.installed.setdefault(node, []):
            self.installed[node].append(package.name)

    # ---- faults -----------------------------------------------------------------------------------

    def damage(self, node: str, name: str, how: str) -> None:
        """A package's library lost (`missing`) or cut short (`truncated`) behind rpm's back.

        `erased` removes the package as rpm -e does: its files and its rpmdb entry.
        """
        package = BY_NAME[name]
        target = package.library_file()
        if target is None:
            raise ValueError(f"{name} owns no library")
        if how == "erased":
            for owned in package.files:
                self.access.remove(node, owned.path)
            self.installed[node] = [p for p in self.installed.get(node, []) if p != name]
        elif how == "missing":
            self.access.remove(node, target)
        else:
            whole = self.image_read(node, target) or b""
            self.access.write(node, target, whole[: max(1, len(whole) // 97)], mode=0o755)

    # ---- the loader at job start --------------------------------------------------------------------

    def require(self, user: str, job_name: str, program: str, package: str) -> None:
        self.requirements[(user, job_name)] = Requirement(program, package)

    def loader_error(self, node: str, requirement: Requirement) -> str | None:
        """ld.so's complaint when `node` starts the program, or None when its library loads."""
        package = BY_NAME[requirement.package]
        target = package.library_file()
        if target is None or package.soname is None:
            return None
        data = self.access.read(node, target)
        want = self.image_read(node, target)
        prefix = f"{requirement.program}: error while loading shared libraries: {package.soname}: "
        if data is None:
            return prefix + "cannot open shared object file: No such file or directory\n"
        if want is not None and data != want:
            # glibc's loader reads the ELF header and program headers first: a cut file is short.
            return prefix + "file too short\n"
        return None

    def on_launch(self, job: Job) -> None:
        """Cluster launch hook: a job whose library does not load on its batch host dies at once."""
        requirement = self.requirements.get((job.user, job.name))
        if requirement is None or job.batch_host is None:
            return
        error = self.loader_error(job.batch_host, requirement)
        if error is None:
            return
        job.run_for_s = 0
        job.run_exit_code = LOADER_EXIT
        out = job.stdout_path or f"{job.work_dir.rstrip('/')}/slurm-{job.job_id}.out"
        # The agent may have made the output path unwritable; the job dies all the same.
        with contextlib.suppress(NodeFileError):
            self.access.write(job.batch_host, out, error.encode(), mode=0o644, uid=job.uid, gid=job.gid)
