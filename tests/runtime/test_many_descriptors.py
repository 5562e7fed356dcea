"""A process holding many episodes hands out descriptors past 1023, where select() stops working.

Filling the low descriptors first puts every descriptor a new cluster opens (its pty, the bwrap
handshake pipes, the report socket, the control socket, the stale-share device) above
select()'s FD_SETSIZE, so each wait on them must be poll or epoll.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.runtime import Runtime
from hpcgym.runtime.host import raise_open_file_limit
from tests.runtime.conftest import require_sandbox_host

FD_SETSIZE = 1024


@pytest.fixture
def low_descriptors_taken() -> Iterator[int]:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FD_SETSIZE + 512:
        pytest.skip(f"the soft descriptor limit {soft} leaves no room above {FD_SETSIZE}")
    taken = []
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    taken.append(null)
    while (fd := os.dup(null)) < FD_SETSIZE + 8:
        taken.append(fd)
    taken.append(fd)
    try:
        yield fd
    finally:
        for fd in taken:
            os.close(fd)


def test_a_cluster_works_with_every_descriptor_past_fd_setsize(
    images_dir: Path, scratch_dir: Path, low_descriptors_taken: int
) -> None:
    require_sandbox_host()
    # No warm pool: every cluster here is made after the low descriptors are gone.
    with (
        Runtime(images_dir, pool_size=0, scratch_dir=scratch_dir, default_timeout_s=10) as runtime,
        runtime.new_cluster(compute_nodes=["compute-01"]) as cluster,
    ):
        shell = cluster.nodes[cluster.login_node].shell
        assert shell is not None and shell.child is not None
        assert shell.child.child_fd > FD_SETSIZE
        assert cluster.execute("echo hi; false").output == "hi\n"
        assert cluster.execute("echo hi; false").exit_code == 1
        # A stub reaches the control socket (accepted past 1023) and the runtime's echo handler.
        result = cluster.execute("sinfo -N")
        assert result.exit_code == 0 and result.output.startswith("login01 /root ")
        # A second node: another bwrap handshake read past 1023.
        assert cluster.execute("ssh compute-01 hostname").output == "compute-01\n"
        # A stale share: its FUSE device is served past 1023 too.
        cluster.execute("ssh compute-01")
        cluster.nodes["compute-01"].make_share_stale("apps")
        assert cluster.execute("ls /apps").output == "ls: cannot access '/apps': Stale file handle\n"


def test_the_runtime_lifts_the_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # Only the soft limit is lowered here: a hard limit once lowered may not come back.
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        lifted = raise_open_file_limit()
        now_soft, now_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert lifted == now_soft == now_hard >= hard
        # Root with CAP_SYS_RESOURCE goes on to the kernel's ceiling (a thousand episodes need ~40,000).
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        assert now_hard in (hard, min(nr_open, 1 << 20))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
