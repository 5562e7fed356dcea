"""Arguments a hostile agent types: gigantic or odd numbers, huge widths, explosive hostlists.

Each one must get the real tool's ordinary error (one line on stderr, its exit code) or a bounded
answer, quickly; never a Python exception out of `handle`. Texts as Debian's slurm-wlm 22.05.8
clients print them before they contact slurmctld, or as the captures show for the same error path.
"""

from __future__ import annotations

import time

import pytest

from hpcgym.controller import Controller, TaskResult, ToolReply, parse_slurm_conf
from hpcgym.controller.commands.base import MAX_FIELD_WIDTH, MAX_LINE_CHARS, parse_format
from hpcgym.controller.hostlist import expand_names
from tests.controller.services.conftest import make_env
from tests.controller.test_rules import CONF

BIG = "1" * 5000  # past int()'s 4,300-digit limit
MAX_REPLY_CHARS = 256 * 1024
MAX_SECONDS = 1.0


def _controller(read_file=None) -> Controller:  # type: ignore[no-untyped-def]
    return Controller(parse_slurm_conf(CONF), run_task=lambda task: TaskResult("x\n"), read_file=read_file)


def _run(controller: Controller, *argv: str) -> ToolReply:
    started = time.monotonic()
    reply = controller.handle("login", list(argv), "/root")
    assert time.monotonic() - started < MAX_SECONDS, argv[:2]
    assert len(reply.stdout) + len(reply.stderr) < MAX_REPLY_CHARS, argv[:2]
    return reply


def _one_line_error(reply: ToolReply, text: str, exit_code: int) -> None:
    assert reply.stdout == ""
    assert reply.stderr == text
    assert reply.stderr.count("\n") == 1
    assert reply.exit_code == exit_code


@pytest.mark.parametrize(
    ("argv", "stderr", "exit_code"),
    [
        (["squeue", "-j", BIG], f"squeue: error: Invalid job id: {BIG}\n", 1),
        (["squeue", "-j", "²"], "squeue: error: Invalid job id: ²\n", 1),
        (["squeue", "-j", "٣"], "squeue: error: Invalid job id: ٣\n", 1),
        (["squeue", "-j", "2147483648"], "squeue: error: Invalid job id: 2147483648\n", 1),
        (["squeue", "-j", "0"], "squeue: error: Invalid job id: 0\n", 1),
        (["scancel", "²"], "scancel: error: Invalid job id ²\n", 1),
        (["scancel", "٣"], "scancel: error: Invalid job id ٣\n", 1),
        (["scontrol", "show", "job", BIG], "slurm_load_jobs error: Invalid job id specified\n", 1),
        (["scontrol", "show", "job", "²"], "scontrol_print_job error: Invalid job id specified\n", 1),
        (["scontrol", "hold", BIG], f"Invalid job id specified for job {BIG}\n", 1),
        (
            ["scontrol", "update", f"JobId={BIG}", "TimeLimit=5"],
            f"Invalid job id specified for job {BIG}\n",
            1,
        ),
        (["sbatch", "--wrap", "x", "-t", BIG], "sbatch: error: Invalid --time specification\n", 255),
        (["sbatch", "--wrap", "x", "-t", "²"], "sbatch: error: Invalid --time specification\n", 255),
        (["sbatch", "--wrap", "x", "-t", f"1-{BIG}"], "sbatch: error: Invalid --time specification\n", 255),
        (["sbatch", "--wrap", "x", "--mem", BIG], "sbatch: error: Invalid --mem specification\n", 255),
        (["sbatch", "--wrap", "x", "--mem", "²"], "sbatch: error: Invalid --mem specification\n", 255),
        (["srun", "-t", BIG, "true"], "srun: error: Invalid --time specification\n", 255),
    ],
)
def test_odd_and_gigantic_numbers_get_the_tools_own_error(argv, stderr, exit_code):
    _one_line_error(_run(_controller(), *argv), stderr, exit_code)


@pytest.mark.parametrize(
    "argv",
    [
        ["sbatch", "--wrap", "x", "-N", BIG],
        ["sbatch", "--wrap", "x", "-N", f"1-{BIG}"],
        ["sbatch", "--wrap", "x", "-n", BIG],
        ["sbatch", "--wrap", "x", "-c", "²"],
        ["sbatch", "--wrap", "x", "--begin", f"now+{BIG}"],
        ["sbatch", "--wrap", "x", "--begin", f"now+{'9' * 17}weeks"],
        ["sbatch", "--wrap", "x", "-d", f"afterok:{BIG}"],
        ["srun", "-N", BIG, "true"],
    ],
)
def test_bad_counts_and_times_fail_the_submission_in_one_line(argv):
    reply = _run(_controller(), *argv)
    assert reply.exit_code in (1, 255) and reply.stdout == ""
    assert reply.stderr.startswith(f"{argv[0]}: error: ")


def test_a_gigantic_job_id_names_no_job_as_in_scancel():
    # Real scancel passes the id through; slurmctld finds no such job, and only -v says so (capture
    # 60-errors: `scancel 99999` is silent and exits 0).
    c = _controller()
    assert _run(c, "scancel", BIG) == ToolReply()
    reply = _run(c, "scancel", "-v", BIG)
    assert reply.stderr.endswith(
        f"scancel: error: Kill job error on job id {BIG}: Invalid job id specified\n"
    )
    assert reply.exit_code == 0


def test_huge_sleep_in_a_script_still_prints_its_end_time():
    script = f"#!/bin/sh\nsleep {BIG}\nsleep {'9' * 17}\nexit {BIG}\n".encode()
    c = _controller(read_file=lambda node, path: script if path == "/root/job.sh" else b"x")
    assert _run(c, "sbatch", "job.sh").exit_code == 0
    c.tick()
    assert _run(c, "squeue", "-h", "-o", "%i %e").stdout.startswith("1 ")
    assert "EndTime=" in _run(c, "scontrol", "show", "job", "1").stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["sinfo", "-o", "%999999999N"],
        ["sinfo", "-o", f"%.{BIG}N"],
        ["sinfo", "-N", "-o", "%.99999999P"],
        ["sinfo", "-O", "NodeList:999999999"],
        ["sinfo", "-O", f"NodeList:.{BIG}"],
        ["squeue", "-o", "%.99999999i"],
        ["squeue", "-O", "JobID:999999999"],
        ["sinfo", "-o", "%1024N" * 20000],
    ],
)
def test_format_widths_are_capped(argv):
    c = _controller()
    _run(c, "sbatch", "--wrap", "sleep 100")
    reply = _run(c, *argv)
    assert reply.exit_code == 0 and reply.stderr == ""
    assert all(len(line) <= MAX_LINE_CHARS for line in reply.stdout.splitlines())


def test_a_long_reason_repeated_by_the_format_is_cut_per_line():
    c = _controller()
    _run(c, "scontrol", "update", "NodeName=compute-01", "State=DRAIN", "Reason=" + "x" * 100_000)
    reply = _run(c, "sinfo", "-R", "-o", "%E" * 50_000)
    assert 0 < len(reply.stdout) < MAX_REPLY_CHARS


def test_width_digits_are_ascii_and_bounded():
    assert parse_format(f"%{BIG}N")[1][0].width == MAX_FIELD_WIDTH
    assert parse_format("%0012N")[1][0].width == 12
    # "٣" is a digit to Python's regex \d, not to Slurm: here it is the field letter.
    assert parse_format("%٣N")[1][0].letter == "٣"


@pytest.mark.parametrize(
    "expression",
    [
        "compute-[1-99999999999]",
        "a[1-2]" * 300,
        "a[1-65535]" * 1000,
        "[" * 100_000,
        "c[1-65536]" + "x" * 1000,
        "compute-[1-²]",
        f"compute-[1-{BIG}]",
    ],
)
def test_explosive_hostlists_are_one_literal_name(expression):
    started = time.monotonic()
    assert expand_names(expression) == [expression]
    assert time.monotonic() - started < MAX_SECONDS
    reply = _run(_controller(), "scontrol", "show", "node", expression)
    assert reply.exit_code == 1 and reply.stdout.startswith("Node ")


def test_unicode_digits_in_passwd_do_not_crash_user_lookup():
    passwd = f"root:x:0:0::/root:/bin/sh\nodd:x:²:1::/:/bin/sh\nbig:x:{BIG}:1::/:/bin/sh\n".encode()
    c = _controller(read_file=lambda node, path: passwd if path == "/etc/passwd" else b"x")
    for name in ("odd", "big", "²", BIG):
        _one_line_error(_run(c, "scancel", "-u", name), f"scancel: error: Invalid user name: {name}\n", 1)


def test_service_tools_refuse_gigantic_numbers():
    env = make_env()
    since = env.run("login01", "journalctl", "--since", f"-{BIG}s")
    _one_line_error(since, f"Failed to parse timestamp: -{BIG}s\n", 1)
    lines = env.run("login01", "journalctl", "-n", BIG)
    _one_line_error(lines, f"Failed to parse lines '{BIG}'\n", 1)
    priority = env.run("login01", "journalctl", "-p", "²")
    _one_line_error(priority, "Failed to parse log level: ²\n", 1)


def test_daemon_users_with_odd_uids_fall_back_instead_of_crashing():
    def odd_passwd(access):  # type: ignore[no-untyped-def]
        for node in ("login01", "compute-01"):
            access.put(node, "/etc/passwd", f"root:x:0:0::/root:/bin/sh\nmunge:x:{BIG}:²::/:/bin/sh\n")

    env = make_env(odd_passwd)
    reply = env.run("compute-01", "systemctl", "start", "munge")
    assert 0 <= reply.exit_code <= 255


def test_munge_and_curl_refuse_gigantic_ids_and_ports():
    env = make_env()
    uid = env.run("login01", "munge", "-n", f"--uid={BIG}")
    _one_line_error(uid, f'munge: Error: Unrecognized user "{BIG}"\n', 1)
    # curl 7.88 on Debian 12: a port past 65535 is a bad URL, exit 3.
    port = env.run("login01", "curl", f"http://login01:{BIG}/")
    _one_line_error(port, "curl: (3) URL using bad/illegal format or missing URL\n", 3)


@pytest.mark.parametrize(
    ("argv", "stderr"),
    [
        # GNU coreutils 9.1 date, TZ=UTC LC_ALL=C, exit 1 for each.
        (["-d", "@99999999999999999999"], "date: invalid date '@99999999999999999999'\n"),
        (["-d", "@-9223372036854775809"], "date: invalid date '@-9223372036854775809'\n"),
        (["-d", f"@{BIG}"], f"date: invalid date '@{BIG}'\n"),
        (["-d", "@1e400"], "date: invalid date '@1e400'\n"),
        (["-d", "@1e3"], "date: invalid date '@1e3'\n"),
        (["-d", "@nan"], "date: invalid date '@nan'\n"),
        (["-d", "@²"], "date: invalid date '@\\302\\262'\n"),
        (["-d", "@9223372036854775807"], "date: time '9223372036854775807' is out of range\n"),
        (["-d", "@67768036191676800"], "date: time '67768036191676800' is out of range\n"),
        (["-d", "@-67768040609740800.5"], "date: time '-67768040609740801' is out of range\n"),
        (["-d", f"{BIG} seconds"], f"date: invalid date '{BIG} seconds'\n"),
        (["-d", "99999999999999999999 seconds"], "date: invalid date '99999999999999999999 seconds'\n"),
        (["-d", "999999999999 days"], "date: invalid date '999999999999 days'\n"),
        (["-d", "2147483647 years"], "date: invalid date '2147483647 years'\n"),
        (["-d", "٣ days"], "date: invalid date '\\331\\243 days'\n"),
        (["-d", "a'b"], "date: invalid date 'a\\'b'\n"),
    ],
)
def test_date_refuses_gigantic_and_odd_times_as_gnu_date(argv, stderr):
    _one_line_error(_run(_controller(), "date", *argv), stderr, 1)


@pytest.mark.parametrize(
    ("argv", "stdout"),
    [
        (["-d", "@67768036191676799"], "Wed Dec 31 23:59:59 UTC 2147485547\n"),
        (["-d", "@-67768040609740800", "+%F %C %y %G"], "-2147481748-01-01 -21474817 48 -2147481748\n"),
        (["-d", "@-1.5", "+%s.%N %-N %3N %_5N|%-20N"], "-2.500000000 500000000 500 5    |5\n"),
        (["-d", "0005-01-01", "+%Y %C %y %G %+6Y"], "0005 00 05 0004 +00005\n"),
        (["-d", "10000-01-01", "+%F %q"], "+10000-01-01 1\n"),
        (
            ["-d", "@0", "+%10% %5:q %Oa %EY %20:z %_20z %#Z %^P"],
            "       %10%   %5:q %Oa 1970 +0000000000000000:00                   +0 utc am\n",
        ),
    ],
)
def test_date_prints_extreme_years_and_odd_conversions_as_gnu_date(argv, stdout):
    assert _run(_controller(), "date", *argv) == ToolReply(stdout)


@pytest.mark.parametrize(
    "conversion", ["%99999999999N", "%5000000000s", f"%{BIG}N", f"%{BIG}s", "%2147483648Y", "%٣Y"]
)
def test_date_widths_are_capped(conversion):
    # GNU date saturates a width at INT_MAX and prints 2 GiB; here a width stops at MAX_FIELD_WIDTH.
    reply = _run(_controller(), "date", "-d", "@0", f"+{conversion}")
    assert reply.exit_code == 0 and reply.stderr == ""
    assert len(reply.stdout) <= MAX_FIELD_WIDTH + 1
    assert len(_run(_controller(), "date", "+" + "%1024c" * 5000).stdout) <= MAX_LINE_CHARS + 1


def test_date_file_of_hostile_lines_stays_small_and_fast():
    lines = b"".join(
        [b"@1e400\n", f"{BIG} days\n".encode(), b"1" * 200_000 + b"\n"] * 200 + [b"now\n"] * 50_000
    )
    c = _controller(read_file=lambda node, path: lines if path == "/root/dates" else None)
    reply = _run(c, "date", "-f", "/root/dates")
    assert reply.exit_code == 1
    assert reply.stderr.startswith("date: invalid date '@1e400'\ndate: invalid date '1111")
