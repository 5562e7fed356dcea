"""date follows the virtual clock, and prints what GNU date prints for the same instant.

The host's own GNU date (run with TZ=UTC, LC_ALL=C on a fixed instant) is the reference for formats
and date strings; the simulated one must never show the host's clock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import pytest

from hpcgym.controller import Controller, TaskRequest, TaskResult, parse_slurm_conf
from hpcgym.controller.clock import DEFAULT_START_S

CONF = """
ClusterName=hpc
SlurmctldHost=head(10.0.0.1)
NodeName=compute-0[1-2] CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=compute Nodes=compute-0[1-2] Default=YES MaxTime=INFINITE State=UP
"""


def date(controller: Controller, *args: str) -> tuple[str, str, int]:
    reply = controller.handle("login", ["date", *args], "/root")
    return reply.stdout, reply.stderr, reply.exit_code


def gnu_date(*args: str) -> str:
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
    return subprocess.run(
        ["/usr/bin/date", *args], capture_output=True, text=True, env=env, check=True
    ).stdout


needs_gnu_date = pytest.mark.skipif(shutil.which("date") is None, reason="no GNU date on this host")


def test_date_reads_the_virtual_clock_and_moves_with_each_step() -> None:
    controller = Controller(parse_slurm_conf(CONF), step_s=5)
    assert date(controller) == ("Mon Nov 23 07:46:05 UTC 2026\n", "", 0)
    controller.tick()
    assert date(controller, "+%s")[0] == f"{DEFAULT_START_S + 5}\n"
    # Another controller with the same start prints the same bytes, whenever it runs.
    assert date(Controller(parse_slurm_conf(CONF), step_s=5))[0] == "Mon Nov 23 07:46:05 UTC 2026\n"


@needs_gnu_date
@pytest.mark.parametrize(
    "fmt",
    [
        "+%F %T",
        "+%Y-%m-%dT%H:%M:%S%z",
        "+%s",
        "+%a %e %b %-d %_H %j %U %V %G %u %w",
        "+%D %R %r %p %P %I %l %k",
        "+%:z %::z %Z %%",
        "+%N %3N",
        "+week %W of %y, %h %C %n%t|",
    ],
)
def test_formats_match_gnu_date(fmt: str) -> None:
    controller = Controller(parse_slurm_conf(CONF), start_s=DEFAULT_START_S + 86400 * 40 + 3601)
    expected = gnu_date("-d", f"@{DEFAULT_START_S + 86400 * 40 + 3601}", fmt)
    assert date(controller, fmt) == (expected, "", 0)


@needs_gnu_date
@pytest.mark.parametrize(
    "args",
    [
        ["-R"],
        ["-I"],
        ["-Iseconds"],
        ["--iso-8601=minutes"],
        ["--rfc-3339=seconds"],
        ["-u"],
    ],
)
def test_output_options_match_gnu_date(args: list[str]) -> None:
    controller = Controller(parse_slurm_conf(CONF))
    assert date(controller, *args)[0] == gnu_date("-d", f"@{DEFAULT_START_S}", *args)


@needs_gnu_date
@pytest.mark.parametrize(
    "string",
    [
        "2026-11-23",
        "2026-11-23 10:15",
        "2026-11-23T10:15:30",
        "2026-11-23 07:46:05 2 hours ago",
        "2026-11-23 +3 days",
        "2026-01-31 1 month",
        "2026-11-23 1 week ago",
        "@1700000000",
    ],
)
def test_date_strings_match_gnu_date(string: str) -> None:
    controller = Controller(parse_slurm_conf(CONF))
    assert date(controller, "-d", string, "+%F %T") == (gnu_date("-d", string, "+%F %T"), "", 0)


def test_relative_strings_count_from_the_virtual_now() -> None:
    controller = Controller(parse_slurm_conf(CONF))
    assert date(controller, "-d", "yesterday", "+%F")[0] == "2026-11-22\n"
    assert date(controller, "--date=1 hour ago", "+%T")[0] == "06:46:05\n"


def test_bad_input_gets_the_real_errors() -> None:
    controller = Controller(parse_slurm_conf(CONF))
    assert date(controller, "-d", "someday") == ("", "date: invalid date 'someday'\n", 1)
    out, err, code = date(controller, "-Ifortnight")
    assert code == 1 and err.startswith("date: invalid argument 'fortnight' for '--iso-8601'\n")
    assert date(controller, "-R", "+%s")[1:] == ("date: multiple output formats specified\n", 1)
    assert date(controller, "-Z")[1:] == (
        "date: invalid option -- 'Z'\nTry 'date --help' for more information.\n",
        1,
    )
    out, err, code = date(controller, "-s", "2030-01-01")
    assert (out, err, code) == (
        "Tue Jan  1 00:00:00 UTC 2030\n",
        "date: cannot set date: Operation not permitted\n",
        1,
    )
    # The clock did not move: setting the date is refused, as without CAP_SYS_TIME.
    assert date(controller, "+%s")[0] == f"{DEFAULT_START_S}\n"


def test_a_task_that_calls_a_tool_does_not_deadlock_the_controller() -> None:
    """`srun date`: the task's own tool call arrives on another thread while srun waits for it."""
    controller: Controller

    def run_task(task: TaskRequest) -> TaskResult:
        box: list[str] = []
        thread = threading.Thread(target=lambda: box.append(date(controller, "+%s")[0]))
        thread.start()
        thread.join(timeout=5)
        return TaskResult(box[0] if box else "", "" if box else "deadlocked\n", 0 if box else 1)

    controller = Controller(parse_slurm_conf(CONF), run_task=run_task)
    reply = controller.handle("login", ["srun", "-N1", "date"], "/root")
    assert (reply.stdout, reply.stderr, reply.exit_code) == (f"{DEFAULT_START_S}\n", "", 0)
