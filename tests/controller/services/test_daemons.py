"""The daemons run by hand: munged -F, slurmd -C/-V, httpd -t, apachectl."""

from __future__ import annotations

from .conftest import Env

KEY = "/etc/munge/munge.key"


def test_munged_by_hand_shows_why_the_key_is_refused(env: Env) -> None:
    env.run("compute-01", "systemctl", "stop", "munge")
    env.access.chmod("compute-01", KEY, 0o640)
    fg = env.run("compute-01", "munged", "-F")
    assert fg.exit_code == 1
    assert fg.stderr.splitlines()[0].startswith("munged: Notice: Starting munge-0.5.15 daemon (pid ")
    assert fg.stderr.splitlines()[-1] == (
        'munged: Error: Keyfile is insecure: "/etc/munge/munge.key" should not be readable or writable by group '
        "(perms=0640)"
    )
    daemon = env.run("compute-01", "munged")
    assert daemon.stderr.count("\n") == 1 and daemon.exit_code == 1
    env.access.chmod("compute-01", KEY, 0o400)
    assert env.run("compute-01", "munged").exit_code == 0
    assert env.run("compute-01", "systemctl", "is-active", "munge").stdout == "active\n"
    again = env.run("compute-01", "munged", "-F")
    assert again.stderr.endswith('pid 106 bound to socket "/run/munge/munge.socket.2"\n')


def test_versions_and_slurmd_config(env: Env) -> None:
    assert env.run("compute-02", "slurmd", "-V").stdout == "slurm-wlm 22.05.8\n"
    assert env.run("login01", "slurmctld", "-V").stdout == "slurm-wlm 22.05.8\n"
    assert env.run("compute-02", "munged", "--version").stdout == "munge-0.5.15 (2022-06-22)\n"
    env.tick(312)
    assert env.run("compute-02", "slurmd", "-C").stdout == (
        "NodeName=compute-02 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=4000\n"
        "UpTime=0-00:05:12\n"
    )


def test_httpd_configtest(env: Env) -> None:
    assert env.run("login01", "httpd", "-t").stderr == "Syntax OK\n"
    conf = "/etc/httpd/conf.d/ood-portal.conf"
    text = env.access.read("login01", conf)
    assert text is not None
    env.access.put("login01", conf, text.replace(b"  </Location>\n", b""))
    reply = env.run("login01", "apachectl", "configtest")
    assert (reply.stderr, reply.exit_code) == (
        "AH00526: Syntax error on line 22 of /etc/httpd/conf.d/ood-portal.conf:\n"
        "Expected </Location> but saw </VirtualHost>\n",
        1,
    )
