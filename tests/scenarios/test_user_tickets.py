"""Users' tickets whose fix is on a node's packages (family d: users, packages and logs).

A node whose copy of a library is gone or damaged eats a user's job campaign (every job that lands
there dies at start with 127). Gold repairs the package through the real shell; the moves that look
like fixes (install where it must be reinstalled and back, draining the node, cancelling the user's
queue, taking the library from another node) are harm or stay unsolved. The package tools print what
rpm and dnf print.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpcgym.controller.commands import sudo
from hpcgym.scenarios import checks
from hpcgym.scenarios.incident import Incident

from .conftest import assert_gold_solves_and_looking_does_not, harm_of, param, task_of, type_all

SEED = 800
SCENARIOS = ["hpc_ticket_sharedlib", "hpc_ticket_autoremove", "hpc_ticket_umask"]


def run(play, scenario: str, commands: list[str], seed: int = SEED) -> tuple[Incident, list[str]]:  # type: ignore[no-untyped-def]
    incident = play(scenario, seed)
    params = task_of(incident).params
    values = {"user": param(incident, "user")}
    if "node" in params:
        values |= {"node": param(incident, "node"), "package": param(incident, "app.package")}
    else:
        root, version, exe = (param(incident, f"app.{key}") for key in ("root", "version", "exe"))
        values |= {"program": f"{root}/{version}/bin/{exe}", "tree": f"{root}/{version}"}
    outputs = []
    for command in commands:
        if incident.done:
            break
        outputs.append(incident.step(command.format(**values)).result.output)
    return incident, outputs


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_gold_solves_with_full_reward_and_looking_does_not(play, scenario):
    assert_gold_solves_and_looking_does_not(play, scenario, SEED, ["squeue", "sinfo", "scontrol show job"])


def test_install_does_nothing_for_a_library_damaged_behind_rpms_back(play):
    incident, out = run(play, "hpc_ticket_sharedlib", ["ssh {node} dnf -y install {package}", "squeue"])
    assert "is already installed.\nDependencies resolved.\nNothing to do.\nComplete!\n" in out[0]
    assert not incident.solved and harm_of(incident) == []


def test_reinstall_refuses_a_package_that_was_erased(play):
    incident, out = run(play, "hpc_ticket_autoremove", ["ssh {node} dnf -y reinstall {package}", "squeue"])
    assert "available, but not installed." in out[0]
    assert out[0].endswith("Error: No packages marked for reinstall.\n")
    assert not incident.solved


def test_dnf_without_yes_reads_end_of_file_and_aborts(play):
    incident, out = run(play, "hpc_ticket_autoremove", ["ssh {node} dnf install {package}; echo rc=$?"])
    assert out[0].endswith("Is this ok [y/N]: Operation aborted.\nrc=1\n")
    assert not incident.solved


def test_rpm_answers_as_rpm_does(play):
    # Texts and exit codes as Debian's rpm 4.18 prints them (tests/controller/captures/rpm-4.18).
    incident, out = run(
        play,
        "hpc_ticket_autoremove",
        [
            "ssh {node} rpm -q {package} nosuchpkg; echo rc=$?",
            "ssh {node} rpm -qf /etc/hostname; echo rc=$?",
            "ssh {node} rpm -qf /no/such/file; echo rc=$?",
            "rpm -q {package}; echo rc=$?",
        ],
    )
    package = param(incident, "app.package")
    assert out[0] == f"package {package} is not installed\npackage nosuchpkg is not installed\nrc=2\n"
    assert out[1] == "file /etc/hostname is not owned by any package\nrc=1\n"
    assert out[2] == "error: file /no/such/file: No such file or directory\nrc=1\n"
    assert out[3].startswith(f"{package}-") and out[3].endswith(".el9.x86_64\nrc=0\n")


def test_rpm_verify_shows_the_damage(play):
    missing, out = run(play, "hpc_ticket_sharedlib", ["ssh {node} rpm -V {package}; echo rc=$?"], seed=801)
    how = param(missing, "how")
    line = out[0].splitlines()[0]
    if how == "missing":
        assert line.startswith("missing     /usr/lib64/")
    else:
        assert line.startswith("S.5....T.    /usr/lib64/")
    assert out[0].endswith("rc=1\n")


def test_cancelling_the_users_queue_is_harm(play):
    incident, _ = run(play, "hpc_ticket_sharedlib", ["scancel -u {user}"])
    assert not incident.solved
    assert any(h.startswith("killed or requeued user job") for h in harm_of(incident))


def test_draining_the_node_that_eats_the_jobs_is_no_fix(play):
    incident, _ = run(
        play,
        "hpc_ticket_sharedlib",
        ["scontrol update nodename={node} state=drain reason=jobs_die_at_start", "squeue", "squeue"],
    )
    assert not incident.solved


def test_taking_the_library_from_another_node_is_no_fix(play):
    incident = play("hpc_ticket_sharedlib", SEED)
    node, package = param(incident, "node"), param(incident, "app.package")
    other = next(n for n in ("compute-01", "compute-02", "compute-03", "compute-04") if n != node)
    type_all(
        incident,
        [
            # As if the library had been copied away from the other node, whose copy then goes missing.
            f"ssh {other} rm -f $(ssh {other} rpm -ql {package} | grep -v 'so.[0-9]*$')",
            f"ssh {node} dnf -y reinstall {package}",
            "squeue",
            "squeue",
        ],
    )
    assert not incident.solved


def test_the_next_job_runs_on_the_repaired_node(play):
    _, out = run(
        play,
        "hpc_ticket_autoremove",
        [
            "ssh {node} dnf -y install {package}",
            "squeue",
            "squeue",
            "squeue",
            "squeue -h -u {user} -w {node} -t R",
        ],
    )
    assert out[-1].strip(), "a job of the user's should be running on the repaired node"


def test_var_log_messages_carries_the_journal_in_rsyslogs_traditional_format(play):

    incident, out = run(
        play,
        "hpc_ticket_sharedlib",
        [
            "ssh {node} systemctl restart slurmd",
            "ssh {node} 'tail -n 3 /var/log/messages; stat -c %a:%U /var/log/messages'",
        ],
    )
    node = param(incident, "node")
    lines = out[1].splitlines()
    assert lines[-1] == "600:root"
    # `Nov 23 07:54:12 compute-02 slurmd[9]: ...`: the day padded with a space, the short host name.
    stamp = r"[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d"
    assert all(re.fullmatch(rf"{stamp} {node} \S+\[\d+\]: .*", line) for line in lines[:-1]), lines
    assert any(f" {node} slurmd[" in line and "started" in line for line in lines[:-1]), lines


def test_sudo_runs_a_command_as_the_user_and_lists_roots_rules(play):
    # Texts as Debian's sudo 1.9.13 prints them; the Defaults come from the node's /etc/sudoers.
    _, out = run(
        play,
        "hpc_ticket_sharedlib",
        [
            "sudo -u {user} sh -c 'id -un; echo $HOME $SUDO_USER'; echo rc=$?",
            "sudo -u nosuch id; echo rc=$?",
            "sudo -u {user} nosuchcmd; echo rc=$?",
            "sudo -l",
            "ssh {node} sudo -i -u {user} pwd",
        ],
    )
    assert out[0].splitlines()[1:] == [out[0].split()[0].join(["/home/", " root"]), "rc=0"]
    assert out[1] == "sudo: unknown user nosuch\nsudo: error initializing audit plugin sudoers_audit\nrc=1\n"
    assert out[2] == "sudo: nosuchcmd: command not found\nrc=1\n"
    assert out[3].startswith(
        "Matching Defaults entries for root on login01:\n    !visiblepw, always_set_home,"
    )
    assert out[3].endswith("\nUser root may run the following commands on login01:\n    (ALL) ALL\n")
    assert out[4] == f"/home/{out[0].split()[0]}\n"


def test_root_runs_the_closed_program_and_only_the_user_is_refused(play):
    _, out = run(
        play, "hpc_ticket_umask", ["{program}; echo rc=$?", "su - {user} -c '{program}'; echo rc=$?"]
    )
    assert out[0].endswith("\nrc=0\n")
    assert out[1].endswith(": Permission denied\nrc=126\n") and out[1].startswith("-bash: line 1: /apps/")


def test_opening_all_of_apps_opens_the_licensed_tree_and_is_no_fix(play):
    incident, _ = run(play, "hpc_ticket_umask", ["chmod -R o+rX /apps", "squeue", "squeue", "squeue"])
    assert not incident.solved


def test_opening_the_closed_component_alone_fixes_it(play):
    incident, _ = run(play, "hpc_ticket_umask", ["chmod -R go+rX {tree}", "squeue", "squeue", "squeue"])
    assert incident.solved and harm_of(incident) == []


def test_a_path_in_the_packages_way_fails_the_transaction_not_the_episode(play):
    incident, out = run(
        play,
        "hpc_ticket_autoremove",
        [
            "ssh {node} 'mkdir -p /usr/lib64/libfftw3.so.3.5.8 /usr/lib64/libgsl.so.25.0.0 "
            "/usr/lib64/libopenblaso-r0.3.21.so/x'",
            "ssh {node} dnf -y install {package}; echo rc=$?",
        ],
    )
    assert "Error: Transaction failed\nrc=1\n" in out[-1]
    assert not incident.solved


CAPTURES = Path(__file__).resolve().parents[1] / "controller" / "captures"


def captured(name: str) -> tuple[str, str, int]:
    text = (CAPTURES / name).read_text()
    stdout = text.split("--- stdout\n", 1)[1].split("--- stderr\n", 1)[0]
    stderr, rc = text.split("--- stderr\n", 1)[1].split("--- rc ", 1)
    return stdout, stderr, int(rc)


def test_sudo_and_rpm_errors_match_the_captures(play):
    _, out = run(
        play,
        "hpc_ticket_umask",
        ["sudo; echo rc=$?", "sudo -u nosuch id; echo rc=$?", "rpm -qf /etc/hostname; echo rc=$?"],
    )
    for output, name in zip(
        out,
        ["sudo-1.9.13/sudo.out", "sudo-1.9.13/sudo_-u_nosuch_id.out", "rpm-4.18/rpm_-qf__etc_hostname.out"],
        strict=True,
    ):
        stdout, stderr, rc = captured(name)
        assert output == f"{stdout}{stderr}rc={rc}\n"


EVERY_NODE = 'for n in login01 compute-01 compute-02 compute-03 compute-04; do ssh $n "{line}"; done'


def test_a_gid_that_is_no_ascii_number_crashes_neither_the_launch_hook_nor_the_grader(play):
    # "²".isdigit() is True and int("²") raises: a group line the agent writes is hostile input.
    line = "echo x:x:²:{user} >> /etc/group; sed -i '1i ansys-users:x:³:' /etc/group"
    incident, out = run(play, "hpc_ticket_umask", [EVERY_NODE.format(line=line)])
    assert out == [""] and "changed /etc/group on login01, which was not broken" in harm_of(incident)
    # The episode goes on past the harm: jobs launch (the launch hook reads each node's
    # /etc/group) and the checks read the odd lines without raising.
    episode, user = incident.episode, param(incident, "user")
    tree = f"{param(incident, 'app.root')}/{param(incident, 'app.version')}"
    for command in [f"chmod -R go+rX {tree}", "squeue", "squeue"]:
        episode.step(command)
    assert checks.is_runnable_by(episode, "compute-01", user, f"{tree}/bin/{param(incident, 'app.exe')}")
    assert checks.has_mode(episode, "login01", "/apps/ansys/v231", 0o750, group="ansys-users")
    assert checks.has_user_job_running(episode, user)


def test_chowning_the_tree_to_the_user_is_no_fix(play):
    # The user gets in through the owner bits; every other user of the site is still refused.
    incident, _ = run(play, "hpc_ticket_umask", ["chown -R {user} {tree}", "squeue", "squeue", "squeue"])
    assert not incident.solved


def test_a_new_gid_0_group_naming_the_user_is_no_fix_and_is_harm(play):
    # Seed 802: the version directory came out 0750 root:root, so a gid-0 group lets the user in.
    line = "echo x:x:0:{user} >> /etc/group"
    incident, _ = run(play, "hpc_ticket_umask", [EVERY_NODE.format(line=line)], seed=802)
    assert "added group x with the gid of an existing group or with members on login01" in harm_of(incident)
    episode, grader = incident.episode, task_of(incident).grader
    for command in ["squeue", "squeue"]:
        episode.step(command)
    program = (
        f"{param(incident, 'app.root')}/{param(incident, 'app.version')}/bin/{param(incident, 'app.exe')}"
    )
    assert checks.is_runnable_by(episode, "login01", param(incident, "user"), program)
    assert grader is not None and grader.count_holding() < len(grader.checks)


def test_sudo_searches_a_bounded_secure_path_whatever_the_nodes_sudoers_says():
    # sudo runs under the controller's lock: a million ":/x" in secure_path is not a million stats.
    stats: list[str] = []
    sudoers = ("Defaults secure_path=/usr/bin" + ":/x" * 1_000_000 + "\n").encode()
    sudoers += b"".join(b"Defaults env_keep += X%d\n" % n for n in range(100_000))
    access = SimpleNamespace(stat=lambda node, path: stats.append(path))
    ctx = SimpleNamespace(
        node="login01",
        cwd="/root",
        user=SimpleNamespace(name="root", uid=0, gid=0),
        read_file=lambda node, path: (
            sudoers if path == sudo.SUDOERS else b"alice:x:1001:1001::/home/alice:/bin/bash\n"
        ),
        services=SimpleNamespace(access=access),
    )
    reply = sudo.run(ctx, ["-u", "alice", "nosuchcmd"])  # type: ignore[arg-type]
    assert (reply.stderr, reply.exit_code) == ("sudo: nosuchcmd: command not found\n", 1)
    assert len(stats) <= 64  # sudo.MAX_PATH_ENTRIES
    assert sudo.run(ctx, ["-l"]).stdout.count("env_keep") <= 1024  # type: ignore[arg-type]
