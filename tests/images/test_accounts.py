"""Service accounts and cluster users, with fixed ids so every node agrees."""

import pytest


@pytest.mark.parametrize(
    ("name", "uid", "shell"),
    [("munge", 981, "/sbin/nologin"), ("slurm", 982, "/sbin/nologin"), ("alice", 2001, "/bin/bash")],
)
def test_user(host, name, uid, shell):
    user = host.user(name)
    assert user.exists
    assert user.uid == uid
    assert user.gid == uid
    assert user.shell == shell


def test_root_is_the_only_uid_zero(host):
    zero = host.run("awk -F: '$3 == 0 {print $1}' /etc/passwd").stdout.split()
    assert zero == ["root"]


def test_user_homes_exist(host):
    home = host.file("/home/alice")
    assert home.is_directory and home.user == "alice" and home.mode == 0o700
