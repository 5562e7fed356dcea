"""A unit runs the program its ExecStart reaches, as the node's kernel resolves the path.

Any spelling of a daemon's program (`//`, `.`, `..`, the image's /sbin symlink, a symlink of one's
own) starts the simulated daemon with all its start-up checks; any other program runs as itself,
is `active` to systemctl, and is no daemon: `Systemd.daemon_of` says None, and nothing that
needs the daemon (slurmd's registration, munge's socket) counts it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcgym.episode import Episode
from hpcgym.runtime.sandbox import children_of

NODE = "compute-01"
UNIT_FILE = "/etc/systemd/system/slurmd.service"


def use_exec_start(episode: Episode, unit: str, exec_start: str) -> None:
    """An override in /etc/systemd/system: the image's unit with another ExecStart=."""
    result = episode.step(
        f"sed 's|^ExecStart=.*|ExecStart={exec_start}|' /usr/lib/systemd/system/{unit}"
        f" > /etc/systemd/system/{unit} && systemctl daemon-reload"
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("setup", "exec_start"),
    [
        ("", "/usr/sbin//slurmd -D -s"),
        ("", "/usr/sbin/./slurmd -D -s"),
        ("", "/usr/bin/../sbin/slurmd -D -s"),
        ("", "/sbin/slurmd -D -s"),  # the image's /sbin -> usr/sbin
        ("ln -s ../../sbin/slurmd /usr/local/sbin/sd && ln -s /usr/local/sbin/sd /root/sd", "/root/sd -D"),
        ("ln -s /usr/sbin/slurmd /usr/local/sbin/slurmd", "slurmd -D"),  # no slash: systemd's search path
    ],
    ids=["double-slash", "dot", "dotdot", "sbin-symlink", "own-symlinks", "search-path"],
)
def test_every_spelling_of_slurmd_is_slurmd_with_its_checks(episode, setup, exec_start):
    episode.step(f"ssh {NODE}")
    if setup:
        assert episode.step(setup).exit_code == 0
    use_exec_start(episode, "slurmd.service", exec_start)
    # slurmd's own start-up check still runs: no spool dir nor its parent, no slurmd.
    result = episode.step("rm -rf /var/spool; systemctl restart slurmd; systemctl is-active slurmd")
    assert result.output.endswith("failed\n")
    journal = episode.step("journalctl -u slurmd -n 8 --no-pager").output
    assert "Domain socket directory /var/spool/slurmd: No such file or directory" in journal
    assert "fatal: mkdir(/var/spool/slurmd): No such file or directory" in journal
    assert episode.services.systemd.daemon_of(NODE, "slurmd.service") is None
    result = episode.step("mkdir -p /var/spool/slurmd; systemctl restart slurmd; systemctl is-active slurmd")
    assert result.output == "active\n"
    assert episode.step("pgrep -x slurmd").exit_code == 0
    assert episode.services.systemd.daemon_of(NODE, "slurmd.service") == "slurmd"
    assert episode.services.is_slurmd_registered(NODE)


@pytest.mark.parametrize(
    ("setup", "exec_start", "comm"),
    [
        ("", "/bin/sleep infinity", "sleep"),
        # The daemon's name is no daemon: /usr/sbin/slurmd replaced by a symlink to sleep.
        ("rm /usr/sbin/slurmd && ln -s /bin/sleep /usr/sbin/slurmd", "/usr/sbin/slurmd 1000", "sleep"),
        # ... or by a script of the agent's own at the daemon's very path.
        (
            "rm /usr/sbin/slurmd && printf '#!/bin/sh\\nexec sleep 1000\\n' > /usr/sbin/slurmd"
            " && chmod 755 /usr/sbin/slurmd",
            "/usr/sbin/slurmd -D",
            "sleep",
        ),
        # The simulated daemon's own stand-in process (the init binary asleep) is not the daemon either.
        ("", "/usr/libexec/hpcgym/daemons/slurmd", "slurmd"),
    ],
    ids=["sleep", "symlink-to-sleep", "script-in-place", "stand-in-image"],
)
def test_another_program_in_slurmd_service_runs_and_is_not_slurmd(episode, setup, exec_start, comm):
    episode.step(f"ssh {NODE}")
    if setup:
        assert episode.step(setup).exit_code == 0, setup
    use_exec_start(episode, "slurmd.service", exec_start)
    # No spool dir nor its parent: the real slurmd would fail, the stand-in does not care.
    result = episode.step("rm -rf /var/spool; systemctl restart slurmd; systemctl is-active slurmd")
    assert result.output == "active\n"  # systemd runs what ExecStart names, and it runs
    pid = episode.services.systemd.unit(NODE, "slurmd.service").main_pid
    assert episode.step(f"ps -o comm= -p {pid}").output == f"{comm}\n"
    assert episode.services.systemd.daemon_of(NODE, "slurmd.service") is None
    assert not episode.services.systemd.is_active(NODE, "slurmd.service")
    assert not episode.services.is_slurmd_registered(NODE)
    assert "Domain socket directory" not in episode.step("journalctl -u slurmd -n 8 --no-pager").output


def test_sleep_as_munged_serves_no_credentials(episode):
    episode.step(f"ssh {NODE}")
    use_exec_start(episode, "munge.service", "/bin/sleep infinity")
    # Type=forking with sleep never forking is beyond this model; it runs and systemd calls it active.
    assert episode.step("systemctl restart munge; systemctl is-active munge").output == "active\n"
    assert episode.services.systemd.daemon_of(NODE, "munge.service") is None
    assert episode.step("munge -n").exit_code != 0
    assert episode.services.registration_problem(NODE) is not None
    # The image's ExecStart again: the real munged, and slurmd registers.
    episode.step("rm /etc/systemd/system/munge.service; systemctl daemon-reload; systemctl restart munge")
    assert episode.services.systemd.daemon_of(NODE, "munge.service") == "munged"
    assert episode.services.registration_problem(NODE) is None


@pytest.mark.parametrize(
    ("setup", "exec_start", "why"),
    [
        ("", "/usr/local/bin/nothing", "No such file or directory"),
        ("touch /root/plain", "/root/plain", "Permission denied"),
        ("mkdir /root/dir", "/root/dir", "Is a directory"),
        ("ln -s loop /root/loop", "/root/loop", "Too many levels of symbolic links"),
        ("", "/etc/hosts/slurmd", "Not a directory"),
    ],
    ids=["missing", "not-executable", "directory", "symlink-loop", "not-a-directory"],
)
def test_a_program_that_cannot_be_executed_is_203_exec(episode, setup, exec_start, why):
    episode.step(f"ssh {NODE}")
    if setup:
        assert episode.step(setup).exit_code == 0
    use_exec_start(episode, "slurmd.service", exec_start)
    assert episode.step("systemctl restart slurmd; systemctl is-active slurmd").output == "failed\n"
    journal = episode.step("journalctl -u slurmd -n 4 --no-pager -o cat").output
    assert journal.splitlines()[:3] == [
        f"slurmd.service: Failed to locate executable {exec_start}: {why}",
        f"slurmd.service: Failed at step EXEC spawning {exec_start}: {why}",
        "slurmd.service: Main process exited, code=exited, status=203/EXEC",
    ]


@pytest.mark.parametrize(
    ("edit", "step", "what", "status"),
    [
        ("sed -i '/^munge:/d' /etc/passwd", "USER", "user", 217),
        ("mkfifo /root/fifo && mv /root/fifo /etc/passwd", "USER", "user", 217),
        ("sed -i '/^munge:/d' /etc/group", "GROUP", "group", 216),
    ],
    ids=["no-munge-user", "passwd-fifo", "no-munge-group"],
)
def test_user_and_group_come_from_the_nodes_files(episode, edit, step, what, status):
    # munge.service has User=munge and Group=munge: systemd looks both up before it runs munged.
    episode.step(f"ssh {NODE}")
    assert episode.step(edit).exit_code == 0
    assert episode.step("systemctl restart munge").exit_code == 1
    journal = episode.step("journalctl -u munge -n 5 --no-pager -o cat").output.splitlines()
    assert journal[-5:-2] == [
        f"munge.service: Failed to determine {what} credentials: No such process",
        f"munge.service: Failed at step {step} spawning /usr/sbin/munged: No such process",
        f"munge.service: Main process exited, code=exited, status={status}/{step}",
    ]
    assert episode.services.systemd.daemon_of(NODE, "munge.service") is None


@pytest.mark.parametrize(
    ("make", "runs"),
    [
        # systemd's unit name map skips these, and the vendor unit in /usr/lib/systemd/system counts.
        (f"mkdir {UNIT_FILE}", True),
        (f"mkfifo {UNIT_FILE}", True),
        # These are the unit, and it has no command.
        (f"ln -s slurmd.service {UNIT_FILE}", False),
        (f"ln -s /dev/zero {UNIT_FILE}", False),
        (f"head -c 4096 /dev/urandom > {UNIT_FILE}", False),
        (f"truncate -s 100M {UNIT_FILE}", False),
    ],
    ids=["directory", "fifo", "symlink-loop", "symlink-to-device", "random-bytes", "sparse-100M"],
)
def test_what_lies_under_a_units_name_in_etc(episode, make, runs):
    episode.step(f"ssh {NODE}")
    assert episode.step(make).exit_code == 0
    result = episode.step("systemctl daemon-reload; systemctl restart slurmd")
    if runs:
        assert result.exit_code == 0
        assert episode.services.systemd.daemon_of(NODE, "slurmd.service") == "slurmd"
        return
    assert (result.output, result.exit_code) == (
        "Failed to restart slurmd.service: Unit slurmd.service has a bad unit file setting.\n"
        "See system logs and 'systemctl status slurmd.service' for details.\n",
        1,
    )
    assert episode.services.systemd.daemon_of(NODE, "slurmd.service") is None


def test_slurmd_makes_a_missing_spool_dir_itself_as_the_real_one_does(episode):
    # Debian's 22.05.8: a missing SlurmdSpoolDir whose parent is there is made at init (0755, root).
    episode.step(f"ssh {NODE}")
    result = episode.step("rm -rf /var/spool/slurmd; systemctl restart slurmd; systemctl is-active slurmd")
    assert result.output == "active\n"
    assert episode.step("stat -c '%a %U' /var/spool/slurmd").output == "755 root\n"
    assert "Domain socket directory" not in episode.step("journalctl -u slurmd -n 8 --no-pager").output


def test_the_spool_check_only_looks(episode):
    # Only a starting slurmd makes its spool dir: the grader's check that reads the same rules
    # must not make it on its way (a check that repaired the fault would solve it).
    from hpcgym.scenarios import checks

    episode.step(f"ssh {NODE} rm -rf /var/spool/slurmd")
    assert not checks.run_check(episode, "has_slurmd_spool", {"node": NODE})
    assert episode.step(f"ssh {NODE} ls -d /var/spool/slurmd").exit_code == 2


def test_a_daemon_is_a_static_sleeper_under_its_name_that_a_signal_ends(episode):
    episode.step(f"ssh {NODE}")
    pid = episode.step("pidof munged").output.strip()
    assert pid.isdigit()
    assert episode.step(f"cat /proc/{pid}/comm; grep State /proc/{pid}/status").output == (
        "munged\nState:\tS (sleeping)\n"
    )
    # Seen from the host (a node's root may not read another process's maps): the init binary
    # under the daemon's name, with no shared library: a few pages, not a glibc program's ~250 KiB.
    shell = episode.cluster.nodes[NODE].shell
    host_pid = next(p for p in children_of(shell.pid1) if Path(f"/proc/{p}/comm").read_text() == "munged\n")
    assert os.readlink(f"/proc/{host_pid}/exe").endswith("/usr/libexec/hpcgym/daemons/munged")
    assert ".so" not in Path(f"/proc/{host_pid}/maps").read_text()
    result = episode.step(f"kill -TERM {pid}; sleep 0.3; systemctl is-active munge")
    assert result.output == "inactive\n"
