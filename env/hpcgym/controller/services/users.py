"""What a user's job may run on a node: the kernel's permission checks for that user, not root's.

Root in a node reads and runs everything, so an operator who checks a user's program as root sees
nothing wrong; the job runs as the user. When a registered job starts, its batch script's program
is looked up component by component as the job's uid and groups (the node's /etc/group) would be:
every directory on the way needs search (x) permission, the program read and execute. Where one
is missing the job dies at once with bash's message ("...: Permission denied", exit 126) in its
output file, as a real node's slurmstepd leaves it (the script runs as
/var/spool/slurmd/jobNNNNN/slurm_script).
"""

from __future__ import annotations

import contextlib
import stat as statmod
from dataclasses import dataclass, field

from hpcgym.controller.numbers import to_int
from hpcgym.controller.services.access import FileStat, NodeAccess, NodeFileError
from hpcgym.controller.state import Job

NOT_EXECUTABLE_EXIT = 126
# The batch script's line that runs the program (see scenarios/faults.py: app_jobs).
PROGRAM_LINE = 5


def user_groups(access: NodeAccess, node: str, user: str, gid: int) -> set[int]:
    """The user's primary group and every group of the node's /etc/group that lists them."""
    groups = {gid}
    raw = access.read(node, "/etc/group") or b""
    for line in raw.decode(errors="replace").splitlines():
        fields = line.split(":")
        gid_of = to_int(fields[2]) if len(fields) >= 4 else None
        if gid_of is not None and user in fields[3].split(","):
            groups.add(gid_of)
    return groups


def _allows(found: FileStat, uid: int, groups: set[int], bits: int) -> bool:
    # The class that applies is the first that matches (owner, then group, then others), as the
    # kernel does: an owner without the bit is refused even if others have it.
    if uid == 0:
        return True
    if found.uid == uid:
        return (found.mode >> 6) & bits == bits
    if found.gid in groups:
        return (found.mode >> 3) & bits == bits
    return found.mode & bits == bits


def refusal(access: NodeAccess, node: str, path: str, uid: int, groups: set[int]) -> str | None:
    """Why `uid` cannot run `path` on `node` ("Permission denied", ...), or None when it can."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts)):
        directory = "/" + "/".join(parts[:depth])
        found = access.stat(node, directory)
        if found is None or not found.is_dir():
            return "No such file or directory"
        if not _allows(found, uid, groups, 1):
            return "Permission denied"
    target = access.stat(node, path)
    if target is None:
        return "No such file or directory"
    if not statmod.S_ISREG(target.mode) or not _allows(target, uid, groups, 5):
        return "Permission denied"
    return None


@dataclass
class LaunchChecks:
    """Jobs whose program must be runnable by their user; a cluster launch hook."""

    access: NodeAccess
    # (user, job name) -> the program its batch script runs.
    programs: dict[tuple[str, str], str] = field(default_factory=dict)

    def require(self, user: str, job_name: str, program: str) -> None:
        self.programs[(user, job_name)] = program

    def on_launch(self, job: Job) -> None:
        program = self.programs.get((job.user, job.name))
        host = job.batch_host
        if program is None or host is None or job.run_for_s == 0:
            return  # not ours, or already ended by another launch check
        why = refusal(self.access, host, program, job.uid, user_groups(self.access, host, job.user, job.gid))
        if why is None:
            return
        job.run_for_s = 0
        job.run_exit_code = NOT_EXECUTABLE_EXIT if why == "Permission denied" else 127
        script = f"/var/spool/slurmd/job{job.job_id:05d}/slurm_script"
        text = f"{script}: line {PROGRAM_LINE}: {program}: {why}\n"
        out = job.stdout_path or f"{job.work_dir.rstrip('/')}/slurm-{job.job_id}.out"
        # The agent may have made the output path unwritable; the job dies all the same.
        with contextlib.suppress(NodeFileError):
            self.access.write(host, out, text.encode(), mode=0o644, uid=job.uid, gid=job.gid)
