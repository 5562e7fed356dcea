"""uptime: the node's own boot on the virtual clock, never the host's."""

from __future__ import annotations

from hpcgym.controller import Controller, parse_slurm_conf
from hpcgym.controller.commands.uptime import pretty, since_text

CONF = """
ClusterName=hpc
SlurmctldHost=login01(10.10.0.10)
NodeName=compute-0[1-2] CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=compute Nodes=compute-0[1-2] Default=YES MaxTime=INFINITE State=UP
"""


def uptime(controller: Controller, node: str, *args: str) -> str:
    reply = controller.handle(node, ["uptime", *args], "/root")
    return reply.stdout + reply.stderr


def test_uptime_reads_the_virtual_clock_and_each_node_has_its_own_boot() -> None:
    controller = Controller(parse_slurm_conf(CONF), step_s=5)
    login = uptime(controller, "login01")
    assert login.startswith(" 07:46:05 up 19 days,  3:17,  1 user,  load average: ")
    assert uptime(controller, "login01", "-s") == "2026-11-04 04:29:05\n"
    assert uptime(controller, "login01", "-p") == "up 2 weeks, 5 days, 3 hours, 17 minutes\n"
    first, second = uptime(controller, "compute-01", "-s"), uptime(controller, "compute-02", "-s")
    assert first != second  # nodes were not all booted at once
    controller.advance(120)
    assert uptime(controller, "login01").startswith(" 07:48:05 up 19 days,  3:19,  1 user,")
    assert " 0 users, " in uptime(controller, "compute-01")
    assert uptime(Controller(parse_slurm_conf(CONF)), "compute-01", "-s") == first  # same bytes next time


def test_procps_layouts_and_errors() -> None:
    assert since_text(42 * 60) == "up 42 min,"
    assert since_text(86400 + 3600) == "up 1 day,  1:00,"
    assert pretty(30) == "up 0 minutes"
    assert pretty(2 * 86400) == "up 2 days"
    controller = Controller(parse_slurm_conf(CONF))
    assert uptime(controller, "login01", "-V") == "uptime from procps-ng 3.3.17\n"
    assert uptime(controller, "login01", "-x").startswith(
        "uptime: invalid option -- 'x'\n\nUsage:\n uptime [options]\n"
    )
