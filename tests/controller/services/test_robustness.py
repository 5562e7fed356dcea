"""Random command lines never make a service tool raise: bad input is the agent's, an observation."""

from __future__ import annotations

import random

from hpcgym.controller.tools import SLURM_CLIENTS, TOOLS

from .conftest import make_env

WORDS = [
    "status", "start", "stop", "restart", "reload", "enable", "disable", "is-active", "is-enabled", "is-failed",
    "daemon-reload", "list-units", "show", "munge", "slurmd", "slurmctld", "httpd", "foo", "munge.service", "-p",
    "--property=ActiveState", "--value", "--failed", "--type=service", "--all", "-n", "5", "-u", "-x", "-e", "-b",
    "--since", "-1h", "today", "garbage", "--no-pager", "-I", "-s", "-o", "/tmp/out", "-w", "%{http_code}", "-v",
    "http://localhost/", "http://login01:8080/x", "https://login01/", "ftp://x/", "-L", "-u", "a:b", "-f",
    "eth0", "eth1", "route", "add", "del", "10.10.0.0/24", "via", "10.10.1.254", "dev", "addr", "-q", "-d",
    "ECC", "-r", "-i", "0", "7", "--query-gpu=name", "--format=csv", "-t", "-F", "-C", "-V", "-h", "-N",
    "compute-99", "configtest", "graceful", "", "--", "-", "-S", "/tmp/sock", "--bogus", "=", "%%", "\\n",
]  # fmt: skip
NODES = ["login01", "compute-01", "compute-03", "nosuchnode"]


def test_random_command_lines_never_raise() -> None:
    rng = random.Random(4)
    env = make_env()
    programs = sorted(set(TOOLS) - SLURM_CLIENTS)  # srun needs a task runner this env has not
    for _ in range(2000):
        program = rng.choice(programs)
        argv = [rng.choice(WORDS) for _ in range(rng.randrange(0, 6))]
        stdin = rng.choice([None, "", "garbage\n", "MUNGE:AwQFAAA=:\n"])
        reply = env.run(rng.choice(NODES), program, *argv, stdin=stdin)
        assert isinstance(reply.exit_code, int) and 0 <= reply.exit_code <= 255, (program, argv)
        if rng.random() < 0.05:
            env.tick(rng.randrange(1, 60))
