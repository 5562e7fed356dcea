"""`su - alice` and `sudo -i -u alice` at the agent's prompt: the user's own shell, stacked on root's.

What a new operator does to see what a user sees: the shell is alice's (her uid, groups, home and
environment) until `exit`, which comes back to root's shell with su's status in `$?`. Lines that are
not a bare su are the node's real su and sudo; whatever the node does to the user's start-up is a
result of the step, never a broken episode.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hpcgym.runtime import Cluster
from hpcgym.runtime.su import SwitchUser, parse_switch_user
from hpcgym.scenarios.incident import prompt

ALICE_UID = 2001


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("su - alice", SwitchUser("alice", True)),
        ("su -l bob", SwitchUser("bob", True)),
        ("su --login carol", SwitchUser("carol", True)),
        ("  su   alice ", SwitchUser("alice", False)),
        ("su", SwitchUser("root", False)),
        ("su -", SwitchUser("root", True)),
        ("/usr/bin/su -m alice", SwitchUser("alice", False)),
        ("sudo -i", SwitchUser("root", True)),
        ("sudo -s", SwitchUser("root", False)),
        ("sudo -iu alice", SwitchUser("alice", True)),
        ("sudo -i -u bob", SwitchUser("bob", True)),
        ("sudo -u bob -i", SwitchUser("bob", True)),
        ("sudo --user=carol --login", SwitchUser("carol", True)),
        ("sudo su - alice", SwitchUser("alice", True)),
        ("sudo su", SwitchUser("root", False)),
        ("su - alice -c id", None),
        ("su -c id alice", None),
        ("su -s /bin/sh alice", None),
        ("su alice bob", None),
        ("su - alice; id", None),
        ("su - alice && id", None),
        ("su - $USER", None),
        ("sudo -u alice id", None),
        ("sudo -u", None),
        ("sudo id", None),
        ("sudo -i id", None),
        ("sudo -l", None),
        ("suu - alice", None),
        ("echo su - alice", None),
        ("", None),
    ],
)
def test_which_lines_open_a_users_shell(line: str, expected: SwitchUser | None) -> None:
    assert parse_switch_user(line) == expected


def test_prompt_says_whose_shell_it_is() -> None:
    assert prompt("login01") == "[root@login01 ~]# "
    assert prompt("compute-02", "alice") == "[alice@compute-02 ~]$ "


def _host_uid(cluster: Cluster) -> int:
    seat_shell = cluster._stack[-1].shell
    assert seat_shell is not None
    status = Path(f"/proc/{seat_shell.shell_pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])


def test_su_login_gives_alices_shell_and_exit_returns_with_its_status(cluster: Cluster) -> None:
    cluster.execute("cd /tmp")
    opened = cluster.execute("su - alice")
    assert opened.exit_code == 0 and opened.output == ""
    assert cluster.current_user == "alice" and cluster.current_node == "login01"
    assert cluster.execute("whoami; pwd; echo $HOME $USER $LOGNAME").output == (
        "alice\n/home/alice\n/home/alice alice alice\n"
    )
    assert cluster.execute("id -u; id -g").output == f"{ALICE_UID}\n{ALICE_UID}\n"
    # Seen from the host, her shell is her uid in this cluster's own range, not root's.
    assert _host_uid(cluster) == cluster.uid_base + ALICE_UID
    # What she makes is hers; what only root may touch stays closed to her.
    assert cluster.execute("touch ~/made-by-alice; stat -c %U ~/made-by-alice").output == "alice\n"
    denied = cluster.execute("cat /etc/shadow")
    assert denied.exit_code == 1 and "Permission denied" in denied.output
    # A shell's state lasts between commands, as in a real session.
    cluster.execute("cd /tmp; export MINE=kept")
    assert cluster.execute("pwd; echo $MINE").output == "/tmp\nkept\n"
    left = cluster.execute("exit 3")
    assert left.exit_code == 3 and "logout" in left.output and not left.ended
    assert cluster.current_user == "root"
    assert cluster.execute("echo $?").output == "3\n"
    assert cluster.execute("whoami; pwd").output == "root\n/tmp\n"


def test_non_login_su_stays_in_roots_directory_and_groups_come_from_the_node(cluster: Cluster) -> None:
    cluster.execute("cd /var/tmp")
    cluster.execute("su carol")
    assert cluster.execute("pwd; whoami").output == "/var/tmp\ncarol\n"
    # initgroups, as su does: carol's supplementary group from the node's /etc/group.
    assert "ansys-users" in cluster.execute("id -Gn").output.split()
    assert "exit" in cluster.execute("exit").output
    assert cluster.execute("sudo -i -u bob").exit_code == 0
    assert cluster.execute("whoami; pwd").output == "bob\n/home/bob\n"
    cluster.execute("exit")
    assert cluster.current_user == "root"


def test_ssh_from_a_users_shell_is_that_user_on_the_other_node(cluster: Cluster) -> None:
    cluster.execute("su - alice")
    assert cluster.execute("ssh compute-01").exit_code == 0
    assert (cluster.current_user, cluster.current_node) == ("alice", "compute-01")
    assert cluster.execute("hostname; whoami; pwd").output == "compute-01\nalice\n/home/alice\n"
    back = cluster.execute("exit")
    assert back.output.endswith("Connection to compute-01 closed.\n")
    assert (cluster.current_user, cluster.current_node) == ("alice", "login01")
    cluster.execute("exit")
    assert (cluster.current_user, cluster.current_node) == ("root", "login01")
    # Root on a compute node can become a user there too, and come back to that node's root.
    cluster.execute("ssh compute-02")
    cluster.execute("su - bob")
    assert cluster.execute("hostname; whoami").output == "compute-02\nbob\n"
    cluster.execute("exit")
    assert (cluster.current_user, cluster.current_node) == ("root", "compute-02")


def test_lines_su_does_not_open_a_shell_for_are_the_nodes_real_su(cluster: Cluster) -> None:
    missing = cluster.execute("su - nosuchuser")
    assert missing.exit_code == 1
    assert missing.output == (
        "su: user nosuchuser does not exist or the user entry does not contain all the required fields\n"
    )
    nologin = cluster.execute("su - daemon")
    assert nologin.exit_code == 1 and "This account is currently not available." in nologin.output
    assert cluster.execute("su - alice -c 'id -un'").output == "alice\n"
    assert cluster.current_user == "root"
    # A user is no root: her su asks for a password, which an empty stdin cannot give.
    cluster.execute("su - alice")
    refused = cluster.execute("su - bob")
    assert refused.exit_code == 1 and "Authentication failure" in refused.output
    assert cluster.current_user == "alice"


def test_a_hostile_profile_is_the_steps_result_and_leaves_nothing(cluster: Cluster) -> None:
    cluster.execute("printf 'sleep 600\\n' > /home/alice/.bash_profile")
    hung = cluster.execute("su - alice", timeout_s=1.5)
    assert hung.timed_out and hung.exit_code == 124 and "timed out" in hung.output
    assert cluster.current_user == "root"
    assert cluster.execute("pgrep -u alice -l . || echo none").output == "none\n"
    cluster.execute("printf 'echo from-profile\\nexit 7\\n' > /home/alice/.bash_profile")
    gone = cluster.execute("su - alice")
    assert gone.exit_code == 7 and "from-profile" in gone.output and cluster.current_user == "root"
    cluster.execute("rm /home/alice/.bash_profile")
    cluster.execute("su - alice")
    killed = cluster.execute("kill -9 $$")
    assert cluster.current_user == "root" and killed.exit_code == 137
    assert cluster.execute("whoami").output == "root\n"


def test_closing_the_cluster_ends_every_users_shell(cluster: Cluster) -> None:
    cluster.execute("su - alice")
    cluster.execute("sleep 900 &")
    shell = cluster._stack[-1].shell
    assert shell is not None
    pid = shell.shell_pid
    cluster.close()
    assert not os.path.exists(f"/proc/{pid}")
    uid = cluster.uid_base + ALICE_UID
    left = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == uid]
    assert left == []


def _uid_of(pid: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])


@pytest.mark.parametrize(
    "getent",
    [
        "#!/bin/sh\nhead -c 3000000 /dev/zero | tr '\\\\0' a\n",  # a flood, no colon
        "#!/bin/sh\nprintf 'alice:x:-5:zz::relative:/bin/bash\\\\n'\n",  # ids and home that are no ids
        "#!/bin/sh\nsleep 60\n",  # never answers
        "#!/bin/sh\nprintf 'bob:x:0:0::/root:/bin/bash\\\\n'\n",  # another name than asked
    ],
    ids=["flood", "malformed", "silent", "other-name"],
)
def test_a_hostile_getent_leaves_su_to_the_node(cluster: Cluster, getent: str) -> None:
    # The host reads what the node's getent prints; nothing it prints (or withholds) opens a shell
    # the node's passwd would not, and the step still ends with the node's own su answering.
    cluster.execute(f"printf '{getent}' > /usr/bin/getent; chmod 755 /usr/bin/getent")
    started = time.monotonic()
    result = cluster.execute("su - alice")
    assert time.monotonic() - started < 8
    assert cluster.current_user == "root" and not result.timed_out
    assert cluster.execute("whoami").output == "root\n"
