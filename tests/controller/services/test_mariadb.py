"""MariaDB's start-up as the service layer runs it: option files, options, datadir, error log, Aria.

And slurmdbd's side of it: a slurmdbd that starts while the database is down loops in its plugin's
init, one try every 5 s, and serves from the first try that reaches the database. The texts follow
mysys and MariaDB 10.5 (services/mariadb.py names the sources); journalctl hides a line with a
control character as blob data, as systemd 252 does.
"""

from __future__ import annotations

import re

import pytest

from hpcgym.controller.services import mariadb
from hpcgym.controller.services.journal import format_bytes
from hpcgym.controller.services.slurmdbd import RETRY_TEXT, is_serving

from .conftest import LOGIN, SLURM_UID, Env, make_env

MYSQL_UID = 983
SERVER_CNF = "/etc/my.cnf.d/mariadb-server.cnf"
ERROR_LOG = "/var/log/mariadb/mariadb.log"
SITE_CNF = (
    "[server]\n\n[mysqld]\ndatadir=/var/lib/mysql\nsocket=/var/lib/mysql/mysql.sock\n"
    f"log-error={ERROR_LOG}\npid-file=/run/mariadb/mariadb.pid\n"
    "innodb_buffer_pool_size=8G\nmax_connections=400\n\n[galera]\n#wsrep_on=ON\n\n[mariadb-10.5]\n"
)
CHDIR_MISSING = "\a/usr/libexec/mariadbd: Can't change dir to '/var/lib/myslq/' (Errcode: 2 \"No such file or directory\")"


def mariadb_env(server_cnf: str | None = SITE_CNF, datadir_uid: int = MYSQL_UID) -> Env:
    def prepare(access):  # type: ignore[no-untyped-def]
        passwd = (
            access.read(LOGIN, "/etc/passwd") + b"mysql:x:983:983:MySQL Server:/var/lib/mysql:/sbin/nologin\n"
        )
        access.put(LOGIN, "/etc/passwd", passwd)
        access.put(LOGIN, "/etc/group", access.read(LOGIN, "/etc/group") + b"mysql:x:983:\n")
        access.chown(LOGIN, "/etc/slurm/slurmdbd.conf", SLURM_UID, SLURM_UID)
        access.chmod(LOGIN, "/etc/slurm/slurmdbd.conf", 0o600)
        access.mkdir(LOGIN, "/var/lib/mysql", mode=0o755, uid=datadir_uid, gid=datadir_uid)
        access.mkdir(LOGIN, "/var/log/mariadb", mode=0o750, uid=MYSQL_UID, gid=MYSQL_UID)
        if server_cnf is not None:
            access.put(LOGIN, "/etc/my.cnf", "[client-server]\n\n!includedir /etc/my.cnf.d\n")
            access.put(LOGIN, SERVER_CNF, server_cnf)

    return make_env(prepare)


def journal(env: Env, *flags: str) -> str:
    """The unit's journal, each line's pid dropped (`mariadbd: ...`)."""
    shown = env.run(LOGIN, "journalctl", "-u", "mariadb", "--no-pager", *flags).stdout
    return re.sub(r"\[[0-9]+\]: ", ": ", shown)


def error_log(env: Env) -> str:
    return (env.access.read(LOGIN, ERROR_LOG) or b"").decode()


def test_without_option_files_the_server_starts_on_its_defaults_and_logs_to_the_journal() -> None:
    env = mariadb_env(server_cnf=None)
    assert env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    shown = journal(env)
    assert "0 [Note] /usr/libexec/mariadbd: ready for connections.\n" in shown
    assert "mariadbd: Version: '10.5.22-MariaDB'  socket: '/var/lib/mysql/mysql.sock'  port: 3306" in shown
    assert is_serving(env.services, LOGIN)


def test_the_site_config_sends_the_servers_words_to_its_error_log_and_keeps_its_options() -> None:
    env = mariadb_env()
    assert env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    log = error_log(env).splitlines()
    assert log[0].endswith(" 0 [Note] /usr/libexec/mariadbd: ready for connections.")
    assert (
        log[1]
        == "Version: '10.5.22-MariaDB'  socket: '/var/lib/mysql/mysql.sock'  port: 3306  MariaDB Server"
    )
    assert "ready for connections" not in journal(env)
    assert mariadb.server_option(env.services, LOGIN, "innodb-buffer-pool-size") == "8G"
    assert mariadb.server_datadir(env.services, LOGIN) == "/var/lib/mysql/"
    assert env.access.read(LOGIN, "/run/mariadb/mariadb.pid") is not None


@pytest.mark.parametrize(
    ("line", "typed", "words"),
    [
        (
            "innodb_buffer_pool_size=8G",
            "innodb_bufer_pool_size=8G",
            "unknown variable 'innodb_bufer_pool_size=8G'",
        ),
        # A client's option in the server's group: the classic after an upgrade.
        (
            "max_connections=400",
            "default-character-set=utf8",
            "unknown variable 'default-character-set=utf8'",
        ),
        ("max_connections=400", "max_conn=400", "variable prefix 'max_conn' is not unique"),
        ("max_connections=400", "skip-name-reslove", "unknown option '--skip-name-reslove'"),
    ],
)
def test_an_option_the_server_does_not_know_stops_it_in_the_journal(
    line: str, typed: str, words: str
) -> None:
    env = mariadb_env(SITE_CNF.replace(line, typed))
    assert not env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    shown = journal(env)
    said = f" 0 [ERROR] /usr/libexec/mariadbd: {words}\n"
    assert said in shown
    assert shown.index(said) < shown.index(" 0 [ERROR] Aborting") < shown.index("status=1/FAILURE")
    assert error_log(env) == ""


def test_a_unique_prefix_a_loose_option_and_dashes_are_taken() -> None:
    cnf = SITE_CNF.replace("max_connections=400", "max-connections = 500\nloose-no_such_plugin_option=1")
    env = mariadb_env(cnf.replace("innodb_buffer_pool_size=8G", "innodb_buffer_pool_s=6G"))
    assert env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    assert mariadb.server_option(env.services, LOGIN, "max_connections") == "500"
    assert mariadb.server_option(env.services, LOGIN, "innodb_buffer_pool_s") == "6G"


def test_a_missing_datadir_is_reported_before_the_error_log_opens_and_shown_as_blob_data() -> None:
    env = mariadb_env(SITE_CNF.replace("datadir=/var/lib/mysql", "datadir=/var/lib/myslq"))
    assert not env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    hidden = journal(env)
    assert "0 [Warning] Can't create test file /var/lib/myslq/login01.lower-test\n" in hidden
    assert "mariadbd: [102B blob data]\n" in hidden
    assert f"mariadbd: {CHDIR_MISSING}\n" in journal(env, "-a")
    assert CHDIR_MISSING in env.run(LOGIN, "journalctl", "-u", "mariadb", "-o", "cat").stdout
    status = env.run(LOGIN, "systemctl", "status", "mariadb").stdout
    assert "[102B blob data]" in status and CHDIR_MISSING not in status
    assert CHDIR_MISSING in env.run(LOGIN, "systemctl", "status", "-a", "mariadb").stdout
    assert error_log(env) == ""


def test_a_datadir_mysql_may_not_write_fails_in_aria_in_the_error_log() -> None:
    env = mariadb_env(datadir_uid=0)
    assert not env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    assert "0 [Warning] Can't create test file /var/lib/mysql/login01.lower-test" in journal(env)
    assert [line.split(" 0 ", 1)[1] for line in error_log(env).splitlines()] == [
        "[ERROR] mariadbd: Can't create/write to file '/var/lib/mysql/aria_log_control' "
        '(Errcode: 13 "Permission denied")',
        "[ERROR] mariadbd: Got error 'Can't create file' when trying to use aria control file "
        "'/var/lib/mysql/aria_log_control'",
        "[ERROR] Plugin 'Aria' init function returned error.",
        "[ERROR] Plugin 'Aria' registration as a STORAGE ENGINE failed.",
        "[ERROR] Aborting",
    ]
    # chown mysql:mysql /var/lib/mysql, and it starts.
    env.access.mkdir(LOGIN, "/var/lib/mysql", mode=0o755, uid=MYSQL_UID, gid=MYSQL_UID)
    assert env.run(LOGIN, "systemctl", "start", "mariadb").exit_code == 0
    assert env.services.systemd.is_active(LOGIN, mariadb.MARIADB)


def test_a_malformed_option_file_stops_the_server_but_one_it_includes_does_not() -> None:
    env = mariadb_env("datadir=/var/lib/mysql\n")
    # The included file is read only up to its error: the server goes on with the others.
    assert env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    assert f"error: Found option without preceding group in config file: {SERVER_CNF} at line: 1" in journal(
        env
    )
    env.access.put(LOGIN, "/etc/my.cnf", "[client-server\n")
    assert env.run(LOGIN, "systemctl", "restart", "mariadb").exit_code != 0
    shown = journal(env).splitlines()[-6:]
    assert shown[1].endswith("mariadbd: error: Wrong group definition in config file: /etc/my.cnf at line 1")
    assert shown[2].endswith("mariadbd: Fatal error in defaults handling. Program aborted")
    env.access.put(LOGIN, "/etc/my.cnf", "[mysqld]\n!includedir /etc/nowhere\n")
    env.run(LOGIN, "systemctl", "restart", "mariadb")
    assert "mariadbd: Can't read dir of '/etc/nowhere' (Errcode: 2 \"No such file or directory\")" in journal(
        env
    )
    assert not env.services.systemd.is_active(LOGIN, mariadb.MARIADB)


def test_a_world_writable_option_file_is_ignored_with_a_warning() -> None:
    env = mariadb_env(SITE_CNF.replace("innodb_buffer_pool_size=8G", "innodb_bufer_pool_size=8G"))
    assert not env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    env.access.chmod(LOGIN, SERVER_CNF, 0o666)
    env.run(LOGIN, "systemctl", "start", "mariadb")
    assert f"Warning: World-writable config file '{SERVER_CNF}' is ignored" in journal(env)
    # Started on the defaults: none of the site's tuning, and its errors on stderr.
    assert env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    assert mariadb.server_option(env.services, LOGIN, "innodb_buffer_pool_size") is None


def test_slurmdbd_tries_every_five_seconds_and_serves_from_the_try_that_reaches_the_database() -> None:
    env = mariadb_env(SITE_CNF.replace("max_connections=400", "max_conections=400"))
    assert not is_serving(env.services, LOGIN)
    env.tick(12)
    log = env.run(LOGIN, "journalctl", "-u", "slurmdbd", "--no-pager", "-o", "cat").stdout.splitlines()
    tries = [line for line in log if "mysql_real_connect failed" in line]
    assert len(tries) == 3  # at start, then 5 and 10 s later
    assert tries[0] == (
        "slurmdbd: error: mysql_real_connect failed: 2002 Can't connect to local server through socket "
        "'/var/lib/mysql/mysql.sock' (2)"
    )
    assert log.count(f"slurmdbd: {RETRY_TEXT}") == 3
    dbd_log = (env.access.read(LOGIN, "/var/log/slurm/slurmdbd.log") or b"").decode()
    assert dbd_log.count("mysql_real_connect failed: 2002") == 3
    env.access.put(LOGIN, SERVER_CNF, SITE_CNF)
    assert env.run(LOGIN, "systemctl", "start", "mariadb").exit_code == 0
    # The database is back; slurmdbd finds it at its next try, not at once.
    assert not is_serving(env.services, LOGIN)
    env.tick(5)
    assert is_serving(env.services, LOGIN)
    log = env.run(LOGIN, "journalctl", "-u", "slurmdbd", "--no-pager", "-o", "cat").stdout.splitlines()
    assert log[-1] == "slurmdbd: slurmdbd version 22.05.8 started"
    env.tick(30)
    again = env.run(LOGIN, "journalctl", "-u", "slurmdbd", "--no-pager", "-o", "cat").stdout.splitlines()
    assert again == log


def test_a_server_on_another_socket_is_not_found_by_slurmdbd() -> None:
    env = mariadb_env(SITE_CNF.replace("socket=/var/lib/mysql/mysql.sock", "socket=/run/mariadb/mysql.sock"))
    assert env.services.systemd.is_active(LOGIN, mariadb.MARIADB)
    assert "socket: '/run/mariadb/mysql.sock'" in error_log(env)
    assert not is_serving(env.services, LOGIN)


@pytest.mark.parametrize(
    ("size", "shown"), [(0, "0B"), (102, "102B"), (1023, "1023B"), (1536, "1.5K"), (1100000, "1.0M")]
)
def test_sizes_are_shown_as_systemd_formats_them(size: int, shown: str) -> None:
    assert format_bytes(size) == shown


def test_the_log_stamp_pads_the_hour_with_a_space() -> None:
    assert mariadb.log_time(1795420000) == "2026-11-23  7:46:40"
    assert mariadb.log_time(1795460000) == "2026-11-23 18:53:20"
