"""Clean up after hpcgym processes that died without closing their clusters (SIGKILL, OOM, power).

Every cluster's files live under `<scratch>/hpcgym-<pid>-<starttime>-<seq>`, named after the process
that owns it; the start time (from /proc/PID/stat) tells a live owner from a new process that reuses
its pid. A sweep at start-up unmounts (deepest first) and removes whatever dead owners left. Their
sandboxes are already gone: bwrap's `--die-with-parent` kills them when the owner dies, and a
fuse-overlayfs daemon exits when its mount is detached.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from hpcgym.runtime import overlay

log = logging.getLogger(__name__)

PREFIX = "hpcgym-"
_OWNED = re.compile(rf"^{PREFIX}(\d+)-(\d+)-")


def process_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may itself hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}{pid}-{process_start_time(pid)}"


def is_owner_alive(name: str) -> bool:
    match = _OWNED.match(name)
    if match is None:
        return True  # not ours to judge
    pid, start = int(match.group(1)), int(match.group(2))
    return process_start_time(pid) == start


def mount_points() -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like escaped as octal.
        raw = line.split()[4]
        points.append(Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw)))
    return points


def remove_tree(path: Path) -> None:
    """Delete a directory tree a node may have shaped: any depth, symlinks never followed.

    Python's rmtree recurses once per level, so a tree a few thousand directories deep (one shell
    loop in copy mode, where nodes write straight into the scratch dir) raises RecursionError past
    `ignore_errors`. GNU rm walks with fts and stays on the tree's own filesystem.
    """
    try:
        path.rmdir()  # the usual case: the episode's tmpfs is gone and its mount point is empty
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    done = subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        log.warning("could not remove %s: %s", path, done.stderr.strip()[-500:])


def sweep_stale(scratch_dir: Path) -> list[Path]:
    """Unmount and remove every cluster dir under `scratch_dir` whose owner is dead; return them."""
    if not scratch_dir.is_dir():
        return []
    stale = [p for p in scratch_dir.iterdir() if p.name.startswith(PREFIX) and not is_owner_alive(p.name)]
    stale_names = {p.name for p in stale}
    # Mounts can outlive a dir listing (a dir removed while still mounted), so go by mountinfo too.
    for point in sorted(mount_points(), key=lambda p: len(p.parts), reverse=True):
        if point.parent == scratch_dir or scratch_dir in point.parents:
            top = point.relative_to(scratch_dir).parts[0]
            if top.startswith(PREFIX) and (top in stale_names or not is_owner_alive(top)):
                overlay.unmount(point)
    for path in stale:
        remove_tree(path)
        log.info("swept %s left by a dead hpcgym process", path)
    return stale


def sweep_partial_unpacks(cache_dir: Path) -> None:
    """Remove half-extracted lower dirs whose unpacking process died."""
    if not cache_dir.is_dir():
        return
    for path in cache_dir.glob(".*.partial-*"):
        pid = int(path.name.rsplit("-", 1)[1])
        if process_start_time(pid) is None:
            shutil.rmtree(path, ignore_errors=True)
