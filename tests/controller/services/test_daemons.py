"""The daemons run by hand: munged -F, slurmd -C/-V, slurmdbd -V/-h/-D, mariadbd, httpd -t, apachectl."""

from __future__ import annotations

from hpcgym.controller import ToolReply
from hpcgym.controller.services.mariadb import MARIADB
from hpcgym.controller.services.slurmdbd import SLURMDBD

from .conftest import LOGIN, SLURM_UID, Env, make_env
from .test_mariadb import mariadb_env

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


DBD_CONF = "/etc/slurm/slurmdbd.conf"


def test_slurmdbd_reads_its_conf_before_its_options() -> None:
    # Debian's slurmdbd 22.05.8 stops at slurmdbd.conf even for -V and -h.
    env = make_env(lambda access: access.remove(LOGIN, DBD_CONF))
    missing = env.run(LOGIN, "slurmdbd", "-V")
    assert (missing.stdout, missing.exit_code) == ("", 1)
    assert missing.stderr == (
        "slurmdbd: No slurmdbd.conf file (/etc/slurm/slurmdbd.conf)\n"
        "slurmdbd: error: slurmdbd.conf lacks DbdHost parameter, using 'localhost'\n"
        "slurmdbd: fatal: StorageType must be specified\n"
    )
    env.access.put(LOGIN, DBD_CONF, "DbdHost=login01\nStorageType=accounting_storage/mysql\n")
    env.access.chmod(LOGIN, DBD_CONF, 0o644)
    open_conf = env.run(LOGIN, "slurmdbd", "-h")
    assert (open_conf.stderr, open_conf.exit_code) == (
        "slurmdbd: fatal: slurmdbd.conf file /etc/slurm/slurmdbd.conf should be 600 is 644 accessible "
        "for group or others\n",
        1,
    )


def test_slurmdbd_version_and_help_with_the_sites_conf() -> None:
    env = make_env(_site_dbd_conf)
    assert env.run(LOGIN, "slurmdbd", "-V") == ToolReply("slurm-wlm 22.05.8\n", "", 0)
    helped = env.run(LOGIN, "slurmdbd", "-h")
    assert helped.stderr.startswith(
        "Usage: /usr/sbin/slurmdbd [OPTIONS]\n  -D         \tRun daemon in foreground.\n"
    )
    assert helped.stderr.endswith("  -V         \tPrint version information and exit.\n")
    assert (helped.stdout, helped.exit_code) == ("", 0)


def test_slurmdbd_by_hand_takes_over_from_the_running_one() -> None:
    env = make_env(_site_dbd_conf)
    env.run(LOGIN, "systemctl", "stop", "slurmdbd")
    assert not env.services.systemd.is_active(LOGIN, SLURMDBD)
    first = env.run(LOGIN, "slurmdbd", "-D")
    assert env.services.systemd.is_active(LOGIN, SLURMDBD)
    assert "Killing old" not in first.stderr
    old = env.services.systemd.unit(LOGIN, SLURMDBD)
    assert old is not None and old.main_pid
    old_pid = old.main_pid
    second = env.run(LOGIN, "slurmdbd", "-D")
    # slurmdbd.c (_kill_old_slurmdbd): it SIGTERMs the PidFile's slurmdbd and starts in its place.
    assert second.stderr.startswith(f"slurmdbd: Killing old slurmdbd[{old_pid}]\n")
    new = env.services.systemd.unit(LOGIN, SLURMDBD)
    assert new is not None and new.main_pid not in (None, old_pid)
    assert env.services.systemd.is_active(LOGIN, SLURMDBD)


def test_mariadbd_version_help_and_root_refusal() -> None:
    env = make_env()
    assert env.run(LOGIN, "/usr/libexec/mariadbd", "--version").stdout == (
        "/usr/libexec/mariadbd  Ver 10.5.22-MariaDB for Linux on x86_64 (MariaDB Server)\n"
    )
    helped = env.run(LOGIN, "/usr/libexec/mariadbd", "--help")
    assert helped.stdout.startswith("/usr/libexec/mariadbd  Ver 10.5.22-MariaDB")
    assert "Usage: /usr/libexec/mariadbd [OPTIONS]\n" in helped.stdout and helped.exit_code == 0
    refused = env.run(LOGIN, "/usr/libexec/mariadbd")
    lines = refused.stderr.splitlines()
    assert refused.exit_code == 1 and len(lines) == 2
    assert lines[0] == (
        "/usr/libexec/mariadbd: Please consult the Knowledge Base to find out how to run mysqld as root!"
    )
    assert lines[1].endswith(" 0 [ERROR] Aborting")


def test_mariadbd_as_mysql_refuses_a_second_server() -> None:
    env = mariadb_env()
    env.run(LOGIN, "systemctl", "stop", "mariadb")
    assert not env.services.systemd.is_active(LOGIN, MARIADB)
    # Named an account to run as, with no server up, it starts as its unit would.
    assert env.run(LOGIN, "/usr/libexec/mariadbd", "--user=mysql").exit_code == 0
    assert env.services.systemd.is_active(LOGIN, MARIADB)
    again = env.run(LOGIN, "/usr/libexec/mariadbd", "--user=mysql")
    assert again.exit_code == 1
    assert (
        "[ERROR] Can't start server: Bind on TCP/IP port. Got error: 98: Address already in use\n"
        in again.stderr
    )
    assert again.stderr.endswith(" 0 [ERROR] Aborting\n")


def _site_dbd_conf(access):  # type: ignore[no-untyped-def]
    # setup-node.sh's owner and mode for the site's slurmdbd.conf.
    access.chown(LOGIN, DBD_CONF, SLURM_UID, SLURM_UID)
    access.chmod(LOGIN, DBD_CONF, 0o600)
