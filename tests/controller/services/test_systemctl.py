"""systemctl and journalctl over the simulated units: layouts, exit codes, and the real checks."""

from __future__ import annotations

from hpcgym.controller.services import MemoryNodeAccess
from hpcgym.controller.state import NodeBase, NodeFlag

from .conftest import MUNGE_UID, Env, make_env

KEY = "/etc/munge/munge.key"


def test_boot_starts_every_enabled_unit(env: Env) -> None:
    assert env.run("compute-01", "systemctl", "is-active", "munge", "slurmd").stdout == "active\nactive\n"
    for unit in ("munge", "slurmctld", "httpd"):
        assert env.run("login01", "systemctl", "is-active", unit).exit_code == 0
    reply = env.run("login01", "systemctl", "is-active", "slurmd")
    assert (reply.stdout, reply.exit_code) == ("inactive\n", 3)
    assert all(node.base is NodeBase.IDLE for node in env.controller.slurm.nodes.values())


def test_status_of_running_munge_has_systemd_252_layout(env: Env) -> None:
    reply = env.run("compute-01", "systemctl", "status", "munge")
    assert reply.exit_code == 0
    lines = reply.stdout.splitlines()
    assert lines[0] == "● munge.service - MUNGE authentication service"
    assert (
        lines[1] == "     Loaded: loaded (/usr/lib/systemd/system/munge.service; enabled; preset: disabled)"
    )
    assert lines[2].startswith("     Active: active (running) since Mon 2026-11-23 07:46:05 UTC; ")
    assert "   Main PID: 100 (munged)" in lines
    assert lines[-1] == "Nov 23 07:46:05 compute-01 systemd[1]: Started MUNGE authentication service."


def test_unknown_unit(env: Env) -> None:
    reply = env.run("compute-01", "systemctl", "status", "foo")
    assert (reply.stdout, reply.stderr, reply.exit_code) == ("", "Unit foo.service could not be found.\n", 4)
    reply = env.run("compute-01", "systemctl", "start", "foo.service")
    assert (reply.stderr, reply.exit_code) == (
        "Failed to start foo.service: Unit foo.service not found.\n",
        5,
    )
    reply = env.run("compute-01", "systemctl", "stop", "foo")
    assert (reply.stderr, reply.exit_code) == (
        "Failed to stop foo.service: Unit foo.service not loaded.\n",
        5,
    )
    reply = env.run("compute-01", "systemctl", "is-enabled", "foo")
    assert reply.exit_code == 1
    assert (
        env.run("compute-01", "systemctl", "frobnicate", "munge").stderr
        == "Unknown command verb frobnicate.\n"
    )
    assert (
        env.run("compute-01", "systemctl", "--bogus").stderr == "systemctl: unrecognized option '--bogus'\n"
    )


def _key_fault(mode: int, uid: int = MUNGE_UID):  # type: ignore[no-untyped-def]
    def prepare(access: MemoryNodeAccess) -> None:
        access.chmod("compute-02", KEY, mode)
        access.chown("compute-02", KEY, uid, uid)

    return prepare


def test_insecure_key_fails_munge_with_the_real_message_and_node_goes_down() -> None:
    env = make_env(_key_fault(0o644))
    status = env.run("compute-02", "systemctl", "status", "munge")
    assert status.exit_code == 3
    assert status.stdout.startswith("\u00d7 munge.service - MUNGE authentication service\n")
    assert "     Active: failed (Result: exit-code) since Mon 2026-11-23 07:46:05 UTC;" in status.stdout
    assert (
        "    Process: 100 ExecStart=/usr/sbin/munged $OPTIONS (code=exited, status=1/FAILURE)"
        in status.stdout
    )
    journal = env.run("compute-02", "journalctl", "-u", "munge", "--no-pager").stdout
    assert journal == (
        "Nov 23 07:46:05 compute-02 systemd[1]: Starting MUNGE authentication service...\n"
        "Nov 23 07:46:05 compute-02 (munged)[100]: munge.service: Referenced but unset environment variable "
        "evaluates to an empty string: OPTIONS\n"
        'Nov 23 07:46:05 compute-02 munged[100]: munged: Error: Keyfile is insecure: "/etc/munge/munge.key" '
        "should not be readable or writable by group (perms=0644)\n"
        "Nov 23 07:46:05 compute-02 systemd[1]: munge.service: Control process exited, code=exited, status=1/FAILURE\n"
        "Nov 23 07:46:05 compute-02 systemd[1]: munge.service: Failed with result 'exit-code'.\n"
        "Nov 23 07:46:05 compute-02 systemd[1]: Failed to start MUNGE authentication service.\n"
    )
    # munged also wrote its own log, as in capture 01 (ls_-l_..._tail_-n_30_var_log_munge_munged.log).
    log = env.access.read("compute-02", "/var/log/munge/munged.log")
    assert log is not None and log.decode().endswith(
        '+0000 Error:     Keyfile is insecure: "/etc/munge/munge.key" should not be readable or writable '
        "by group (perms=0644)\n"
    )
    # slurmd runs but cannot sign its registration: the node stops responding, then goes down.
    assert env.run("compute-02", "systemctl", "is-active", "slurmd").stdout == "active\n"
    slurmd = env.run("compute-02", "journalctl", "-u", "slurmd", "-n", "1").stdout
    assert slurmd.endswith("slurmd[101]: slurmd: error: Unable to register: Protocol authentication error\n")
    env.tick(45)  # SlurmdTimeout=30: DOWN at the ping round after the failed one (about 40 s)
    node = env.controller.slurm.nodes["compute-02"]
    assert node.base is NodeBase.DOWN and node.flags & NodeFlag.NOT_RESPONDING
    # The fix: chmod, restart munge. slurmd registers again and ReturnToService=1 revives the node.
    env.access.chmod("compute-02", KEY, 0o400)
    restart = env.run("compute-02", "systemctl", "restart", "munge")
    assert (restart.stdout, restart.stderr, restart.exit_code) == ("", "", 0)
    env.tick(1)
    assert node.base is NodeBase.IDLE and not node.flags & NodeFlag.NOT_RESPONDING


def test_start_of_failing_forking_unit_prints_the_job_failure() -> None:
    env = make_env(_key_fault(0o640))
    reply = env.run("compute-02", "systemctl", "start", "munge")
    assert reply.exit_code == 1
    assert reply.stderr == (
        "Job for munge.service failed because the control process exited with error code.\n"
        'See "systemctl status munge.service" and "journalctl -xeu munge.service" for details.\n'
    )


def test_key_owner_and_other_bits_and_missing_key() -> None:
    def msg(env: Env) -> str:
        return env.run("compute-02", "journalctl", "-u", "munge", "-t", "munged", "-o", "cat").stdout

    assert msg(make_env(_key_fault(0o400, uid=0))) == (
        'munged: Error: Keyfile is insecure: "/etc/munge/munge.key" should be owned by UID 981 instead of UID 0\n'
    )
    assert "by other (perms=0604)" in msg(make_env(_key_fault(0o604)))

    def remove(access: MemoryNodeAccess) -> None:
        access.remove("compute-02", KEY)

    assert msg(make_env(remove)) == (
        'munged: Error: Failed to find keyfile "/etc/munge/munge.key": No such file or directory '
        "(Did you run mungekey?)\n"
    )


def test_killed_munged_is_restarted_by_restart_on_abort(env: Env) -> None:
    env.access.kill("compute-03", 100, 9)
    assert env.run("compute-03", "systemctl", "is-active", "munge").stdout == "active\n"
    journal = env.run("compute-03", "journalctl", "-u", "munge", "-o", "cat").stdout.splitlines()
    assert journal[3:] == [
        "munge.service: Main process exited, code=killed, status=9/KILL",
        "munge.service: Failed with result 'signal'.",
        "munge.service: Scheduled restart job, restart counter is at 1.",
        "Stopped MUNGE authentication service.",
        "Starting MUNGE authentication service...",
        "munge.service: Referenced but unset environment variable evaluates to an empty string: OPTIONS",
        "Started MUNGE authentication service.",
    ]
    assert env.access.read("compute-03", "/run/munge/munged.pid") == b"103\n"


def test_killed_slurmd_fails_its_unit_and_the_node_goes_down(env: Env) -> None:
    env.access.kill("compute-04", 101, 9)
    status = env.run("compute-04", "systemctl", "status", "slurmd")
    assert status.exit_code == 3
    assert "     Active: failed (Result: signal) since" in status.stdout
    assert "   Main PID: 101 (code=killed, signal=KILL)" in status.stdout
    env.tick(45)  # SlurmdTimeout=30: DOWN at the ping round after the failed one (about 40 s)
    assert env.controller.slurm.nodes["compute-04"].base is NodeBase.DOWN
    assert env.run("compute-04", "systemctl", "start", "slurmd").exit_code == 0
    env.tick(1)
    assert env.controller.slurm.nodes["compute-04"].base is NodeBase.IDLE


def test_stop_and_list_units_failed(env: Env) -> None:
    assert env.run("compute-01", "systemctl", "stop", "slurmd").exit_code == 0
    status = env.run("compute-01", "systemctl", "status", "slurmd")
    assert status.exit_code == 3
    assert "     Active: inactive (dead) since" in status.stdout
    assert status.stdout.startswith("○ slurmd.service")
    assert env.access.read("compute-01", "/run/slurmd.pid") is None
    none = env.run("compute-01", "systemctl", "list-units", "--failed")
    assert none.stdout == "  UNIT LOAD ACTIVE SUB DESCRIPTION\n0 loaded units listed.\n"
    env.access.kill("compute-01", 100, 9)
    env.access.chmod("compute-01", KEY, 0o644)  # so that Restart=on-abort fails too
    failed = env.run("compute-01", "systemctl", "list-units", "--failed", "--type=service")
    assert failed.stdout.splitlines()[:2] == [
        "  UNIT          LOAD   ACTIVE SUB    DESCRIPTION",
        "● munge.service loaded failed failed MUNGE authentication service",
    ]
    assert failed.stdout.endswith("1 loaded units listed.\n")


def test_show_and_enable(env: Env) -> None:
    reply = env.run("compute-01", "systemctl", "show", "-p", "ActiveState,SubState", "munge")
    assert reply.stdout == "ActiveState=active\nSubState=running\n"
    assert env.run("compute-01", "systemctl", "show", "-p", "MainPID", "--value", "slurmd").stdout == "101\n"
    reply = env.run("compute-01", "systemctl", "disable", "--now", "slurmd")
    assert reply.stderr == 'Removed "/etc/systemd/system/multi-user.target.wants/slurmd.service".\n'
    assert env.run("compute-01", "systemctl", "is-enabled", "slurmd").stdout == "disabled\n"
    reply = env.run("compute-01", "systemctl", "enable", "slurmd")
    assert reply.stderr == (
        "Created symlink /etc/systemd/system/multi-user.target.wants/slurmd.service → "
        "/usr/lib/systemd/system/slurmd.service.\n"
    )
    assert env.run("compute-01", "systemctl", "reload", "munge").stderr == (
        "Failed to reload munge.service: Job type reload is not applicable for unit munge.service.\n"
    )


def test_slurmctld_down_reaches_the_slurm_side(env: Env) -> None:
    env.run("login01", "systemctl", "stop", "slurmctld")
    assert env.controller.slurm.slurmctld_up is False
    env.run("login01", "systemctl", "stop", "munge")
    assert "login01" in env.controller.slurm.munge_down
    env.run("login01", "systemctl", "start", "munge", "slurmctld")
    assert env.controller.slurm.slurmctld_up is True


def test_journalctl_catalog_since_and_no_entries(env: Env) -> None:
    env.tick(60)
    env.run("compute-01", "systemctl", "restart", "munge")
    since = env.run("compute-01", "journalctl", "-u", "munge", "--since", "-30s", "-o", "cat").stdout
    assert since.splitlines()[0] == "Stopping MUNGE authentication service..."
    xe = env.run("compute-01", "journalctl", "-xeu", "munge.service").stdout.splitlines()
    assert xe[-8:] == [
        "Nov 23 07:47:05 compute-01 systemd[1]: Started MUNGE authentication service.",
        "░░ Subject: A start job for unit munge.service has finished successfully",
        "░░ Defined-By: systemd",
        "░░ Support: https://access.redhat.com/support",
        "░░ ",
        "░░ A start job for unit munge.service has finished successfully.",
        "░░ ",
        "░░ The job identifier is 105.",
    ]
    assert env.run("compute-01", "journalctl", "-u", "nope").stdout == "-- No entries --\n"
    bad = env.run("compute-01", "journalctl", "--since", "yesterdayish")
    assert (bad.stderr, bad.exit_code) == ("Failed to parse timestamp: yesterdayish\n", 1)


def test_same_commands_same_bytes() -> None:
    def session() -> list[str]:
        env = make_env(_key_fault(0o644))
        out = []
        for argv in (
            ("systemctl", "status", "munge", "slurmd"),
            ("journalctl", "-xe"),
            ("systemctl", "restart", "munge"),
        ):
            reply = env.run("compute-02", *argv)
            out.append(reply.stdout + reply.stderr + str(reply.exit_code))
            env.tick(7)
        return out

    assert session() == session()


def test_changed_unit_file_warns_until_daemon_reload(env: Env) -> None:
    path = "/usr/lib/systemd/system/slurmd.service"
    text = env.access.read("compute-01", path)
    assert text is not None
    env.access.put("compute-01", path, text.replace(b"Slurm node daemon", b"Slurm node daemon (patched)"))
    status = env.run("compute-01", "systemctl", "status", "slurmd")
    assert status.stderr == (
        "Warning: The unit file, source configuration file or drop-ins of slurmd.service changed on disk. "
        "Run 'systemctl daemon-reload' to reload units.\n"
    )
    assert status.stdout.startswith("● slurmd.service - Slurm node daemon\n")
    assert env.run("compute-01", "systemctl", "daemon-reload").exit_code == 0
    status = env.run("compute-01", "systemctl", "status", "slurmd")
    assert status.stderr == ""
    assert status.stdout.startswith("● slurmd.service - Slurm node daemon (patched)\n")


def test_list_units_all_and_plain_systemctl(env: Env) -> None:
    env.run("compute-01", "systemctl", "stop", "slurmd")
    assert env.run("compute-01", "systemctl").stdout.splitlines()[2].startswith("  munge.service ")
    listing = env.run("compute-01", "systemctl", "list-units", "--all", "--no-legend").stdout
    assert listing == (
        "  chronyd.service loaded active   running NTP client/server\n"
        "  munge.service   loaded active   running MUNGE authentication service\n"
        "  slurmd.service  loaded inactive dead    Slurm node daemon\n"
    )


def test_reload_of_inactive_unit(env: Env) -> None:
    env.run("compute-01", "systemctl", "stop", "slurmd")
    reply = env.run("compute-01", "systemctl", "reload", "slurmd")
    assert (reply.stderr, reply.exit_code) == ("slurmd.service is not active, cannot reload.\n", 1)
    env.run("compute-01", "systemctl", "start", "slurmd")
    assert env.run("compute-01", "systemctl", "reload", "slurmd").exit_code == 0


def test_units_disabled_at_boot_stay_down_until_started() -> None:
    env = make_env()
    manager = type(env.services).from_slurm_conf(
        env.controller.slurm.conf,
        env.access,
        env.controller.clock,
        disabled={"compute-02": {"slurmd.service"}},
    )
    assert (
        manager.systemd.is_active("compute-01", "slurmd.service") is False
    )  # nothing booted before the first sync
    assert manager.is_slurmd_registered("compute-01")
    assert not manager.is_slurmd_registered("compute-02")
    assert manager.systemd.unit("compute-02", "slurmd.service").enabled.value == "disabled"  # type: ignore[union-attr]


def test_journal_priorities_follow_pid1_and_stderr() -> None:
    env = make_env(_key_fault(0o644))
    errors = env.run("compute-02", "journalctl", "-p", "err", "-o", "cat").stdout
    # munged's complaint went to stderr, which the journal files at info; only pid1's line is an error.
    assert errors == "Failed to start MUNGE authentication service.\n"
    warnings = env.run(
        "compute-02", "journalctl", "-p", "warning", "-u", "munge", "-o", "cat"
    ).stdout.splitlines()
    assert warnings == [
        "munge.service: Referenced but unset environment variable evaluates to an empty string: OPTIONS",
        "munge.service: Failed with result 'exit-code'.",
        "Failed to start MUNGE authentication service.",
    ]


def test_kill_main_process_hook(env: Env) -> None:
    assert env.services.systemd.kill_main_process("login01", "slurmctld.service") is not None
    assert env.run("login01", "systemctl", "is-failed", "slurmctld").stdout == "failed\n"
    assert env.controller.slurm.slurmctld_up is False
    assert env.services.systemd.kill_main_process("login01", "slurmctld.service") is None


def test_slurmd_without_slurm_conf_is_skipped_by_its_condition() -> None:
    def remove_conf(access: MemoryNodeAccess) -> None:
        access.remove("compute-04", "/etc/slurm/slurm.conf")

    env = make_env(remove_conf)
    env.tick(5)
    status = env.run("compute-04", "systemctl", "status", "slurmd")
    assert status.exit_code == 3
    assert status.stdout.splitlines()[2:5] == [
        "     Active: inactive (dead)",
        "  Condition: start condition failed at Mon 2026-11-23 07:46:05 UTC; 5s ago",
        "             └─ ConditionPathExists=/etc/slurm/slurm.conf was not met",
    ]
    assert status.stdout.endswith(
        "systemd[1]: Slurm node daemon was skipped because of an unmet condition check "
        "(ConditionPathExists=/etc/slurm/slurm.conf).\n"
    )
    assert env.run("compute-04", "systemctl", "start", "slurmd").exit_code == 0
    assert env.run("compute-04", "systemctl", "is-active", "slurmd").stdout == "inactive\n"


def test_start_limit_and_reset_failed(env: Env) -> None:
    env.tick(60)
    for _ in range(5):
        assert env.run("compute-01", "systemctl", "restart", "munge").exit_code == 0
    sixth = env.run("compute-01", "systemctl", "restart", "munge")
    assert sixth.exit_code == 1
    assert sixth.stderr == (
        "Job for munge.service failed because start of the service was attempted too often.\n"
        'See "systemctl status munge.service" and "journalctl -xeu munge.service" for details.\n'
        'To force a start use "systemctl reset-failed munge.service"\n'
        'followed by "systemctl start munge.service" again.\n'
    )
    assert (
        "Active: failed (Result: start-limit-hit)"
        in env.run("compute-01", "systemctl", "status", "munge").stdout
    )
    env.run("compute-01", "systemctl", "reset-failed", "munge")
    assert env.run("compute-01", "systemctl", "is-active", "munge").stdout == "inactive\n"
    assert env.run("compute-01", "systemctl", "start", "munge").exit_code == 0
