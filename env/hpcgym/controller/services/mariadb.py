"""The MariaDB server slurmdbd stores into: its option files, its start-up checks, its error log.

mariadbd (10.5, as Rocky 9 ships it) first reads its option files (mysys/my_default.c): /etc/my.cnf
and /etc/mysql/my.cnf, with their `!include` and `!includedir` directives, keeping the options of
the groups a server reads ([mysqld], [server], [mariadb], ...). A malformed file stops it there with
"Fatal error in defaults handling. Program aborted". It then parses the options (my_getopt.c): a
name it does not know, and that is no unique prefix of one it knows, is "unknown variable" and
the server aborts. Then it changes into its datadir ("Can't change dir to ..." when it cannot). All
of this goes to stderr, the journal; only then does it open its error log (`log-error`) and start
its storage engines, of which Aria writes `aria_log_control` into the datadir first: a datadir
mysql may not write fails there, in the error log. What the server runs with is kept as its
`MariadbFacts` (datadir, socket, options), and slurmdbd's connection asks it (slurmdbd.py).

Not modelled: InnoDB's own start-up lines and failures, option values (a size or a number is
taken as written), ~/.my.cnf, and most of the 600-odd server variables: `KNOWN_OPTIONS` holds the
common ones, and a name outside it reads as unknown.
"""

from __future__ import annotations

import posixpath
import stat as statmod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hpcgym.controller.services.access import FileStat, NodeAccess
from hpcgym.controller.services.daemon import Launch, Line, RunningUnits, exec_argv, iso_time, lookup_ids
from hpcgym.controller.services.facts import DaemonFacts
from hpcgym.controller.services.units import UnitFile

if TYPE_CHECKING:
    from hpcgym.controller.services.peers import NodeClocks

MARIADB = "mariadb.service"
MARIADBD = "/usr/libexec/mariadbd"
MARIADB_VERSION = "10.5.22-MariaDB"
DATADIR = "/var/lib/mysql"
SOCKET = "/var/lib/mysql/mysql.sock"
PORT = "3306"
# Where mysys looks for option files on Linux (no ~/.my.cnf here: see the module docstring).
OPTION_FILES = ("/etc/my.cnf", "/etc/mysql/my.cnf")
# load_default_groups of sql/mysqld.cc in 10.5 (WITH_WSREP).
SERVER_GROUPS = frozenset(
    {"wsrep", "galera", "mysqld", "server", "mysqld-10.5", "mariadb", "mariadb-10.5", "mariadbd",
     "mariadbd-10.5", "client-server"}
)  # fmt: skip
# my_getopt.c's special_opt_prefix: `--skip-name-resolve`, `--loose-foo=1`.
SPECIAL_PREFIXES = ("skip", "disable", "enable", "maximum", "loose", "autoset")
MAX_INCLUDE_DEPTH = 10
# Enough for any real server's option files; a directory or file past it is read no further.
MAX_DIR_ENTRIES = 256
MAX_OPTIONS = 2000
# Server variables and options of 10.5, by their underscore spelling (`-` and `_` are one in a name).
_KNOWN_OPTION_NAMES = """
    aria_log_file_size aria_pagecache_buffer_size autocommit back_log basedir bind_address
    binlog_format binlog_row_image bulk_insert_buffer_size character_set_client_handshake
    character_set_filesystem character_set_server collation_server concurrent_insert connect_timeout
    console core_file datadir default_password_lifetime default_storage_engine default_time_zone
    default_tmp_storage_engine default_week_format delay_key_write event_scheduler expire_logs_days
    explicit_defaults_for_timestamp external_locking extra_max_connections extra_port flush
    ft_min_word_len general_log general_log_file group_concat_max_len gtid_domain_id gtid_strict_mode
    init_connect innodb_adaptive_hash_index innodb_autoextend_increment innodb_autoinc_lock_mode
    innodb_buffer_pool_dump_at_shutdown innodb_buffer_pool_instances innodb_buffer_pool_load_at_startup
    innodb_buffer_pool_size innodb_change_buffering innodb_checksum_algorithm
    innodb_compression_algorithm innodb_data_file_path innodb_data_home_dir innodb_deadlock_detect
    innodb_default_row_format innodb_defragment innodb_doublewrite innodb_encrypt_log
    innodb_encrypt_tables innodb_fast_shutdown innodb_file_per_table innodb_flush_log_at_trx_commit
    innodb_flush_method innodb_force_recovery innodb_ft_min_token_size innodb_io_capacity
    innodb_io_capacity_max innodb_lock_wait_timeout innodb_log_buffer_size innodb_log_file_size
    innodb_log_files_in_group innodb_log_group_home_dir innodb_log_write_ahead_size
    innodb_lru_scan_depth innodb_max_dirty_pages_pct innodb_numa_interleave innodb_open_files
    innodb_page_size innodb_print_all_deadlocks innodb_purge_threads innodb_read_io_threads
    innodb_rollback_on_timeout innodb_sort_buffer_size innodb_stats_on_metadata innodb_strict_mode
    innodb_temp_data_file_path innodb_thread_concurrency innodb_undo_directory innodb_use_native_aio
    innodb_write_io_threads interactive_timeout join_buffer_size key_buffer_size key_cache_segments
    large_pages lc_messages lc_messages_dir local_infile log_basename log_bin log_bin_index log_error
    log_output log_queries_not_using_indexes log_slave_updates log_slow_admin_statements
    log_slow_rate_limit log_slow_verbosity log_warnings long_query_time low_priority_updates
    lower_case_table_names max_allowed_packet max_binlog_size max_connect_errors max_connections
    max_heap_table_size max_prepared_stmt_count max_user_connections memlock min_examined_row_limit
    myisam_recover_options myisam_sort_buffer_size net_buffer_length net_read_timeout
    net_write_timeout old_mode open_files_limit optimizer_search_depth optimizer_switch
    performance_schema pid_file plugin_dir plugin_load_add plugin_maturity port query_cache_limit
    query_cache_size query_cache_type read_buffer_size read_only read_rnd_buffer_size relay_log
    report_host require_secure_transport secure_file_priv server_id skip_grant_tables
    skip_name_resolve skip_networking skip_slave_start slave_net_timeout slave_parallel_threads
    slow_query_log slow_query_log_file socket sort_buffer_size sql_mode ssl_ca ssl_cert ssl_key
    stack_trace symbolic_links sync_binlog table_definition_cache table_open_cache
    table_open_cache_instances thread_cache_size thread_handling thread_pool_max_threads
    thread_pool_size thread_stack tmp_memory_table_size tmp_table_size tmpdir transaction_isolation
    user userstat wait_timeout wsrep_cluster_address wsrep_cluster_name wsrep_node_address
    wsrep_node_name wsrep_on wsrep_provider wsrep_sst_method
"""
KNOWN_OPTIONS = frozenset(_KNOWN_OPTION_NAMES.split())


@dataclass
class ServerConfig:
    """What mariadbd made of its option files: the options in order, or why it stopped."""

    # (name as written, value or None), in the order mysys hands them to the option parser.
    options: list[tuple[str, str | None]] = field(default_factory=list)
    # Lines mysys printed to stderr while reading (warnings, and a fatal error's own words).
    stderr: list[str] = field(default_factory=list)
    fatal: bool = False

    def value(self, name: str, default: str) -> str:
        """The last value given for `name` (in its underscore spelling), else `default`."""
        found = default
        for written, value in self.options:
            if normalize(written) == name and value is not None:
                found = value
        return found

    def is_set(self, name: str) -> bool:
        return any(normalize(written) == name for written, _ in self.options)


def normalize(name: str) -> str:
    return name.strip().replace("-", "_")


def read_config(access: NodeAccess, node: str) -> ServerConfig:
    """Read the node's option files as mysys's my_load_defaults does, for the server's groups."""
    config = ServerConfig()
    for path in OPTION_FILES:
        if not _read_file(access, node, path, config, 0):
            config.stderr.append("Fatal error in defaults handling. Program aborted")
            config.fatal = True
            break
    return config


def _read_file(access: NodeAccess, node: str, path: str, config: ServerConfig, depth: int) -> bool:
    """One option file into `config`; False where mysys stops (`goto err`)."""
    info = access.stat(node, path)
    if info is None:
        return True
    if info.is_file() and info.perms & statmod.S_IWOTH:
        config.stderr.append(f"Warning: World-writable config file '{path}' is ignored")
        return True
    raw = access.read(node, path)
    if raw is None:
        return True
    group: str | None = None
    for number, line in enumerate(raw.decode(errors="replace").splitlines(), start=1):
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        if text[0] == "!":
            if not _directive(access, node, path, number, text, config, depth):
                return False
            continue
        if text[0] == "[":
            end = text.find("]")
            if end < 0:
                config.stderr.append(f"error: Wrong group definition in config file: {path} at line {number}")
                return False
            group = text[1:end].strip()
            continue
        if group is None:
            config.stderr.append(
                f"error: Found option without preceding group in config file: {path} at line: {number}"
            )
            return False
        if group in SERVER_GROUPS and len(config.options) < MAX_OPTIONS:
            config.options.append(_option(text))
    return True


def _directive(
    access: NodeAccess, node: str, path: str, number: int, text: str, config: ServerConfig, depth: int
) -> bool:
    if depth >= MAX_INCLUDE_DEPTH:
        config.stderr.append(
            f"Warning: skipping '{text}' directive as maximum includerecursion level was reached in "
            f"file {path} at line {number}"
        )
        return True
    word, _, argument = text[1:].strip().partition(" ")
    if word not in ("include", "includedir"):
        return True  # mysys skips a directive it does not know
    argument = argument.strip()
    if not argument:
        config.stderr.append(f"error: Wrong '!{word}' directive in config file: {path} at line {number}")
        return False
    if word == "include":
        _read_file(access, node, argument, config, depth + 1)
        return True
    info = access.stat(node, argument)
    if info is None or not info.is_dir():
        errno_text = '2 "No such file or directory"' if info is None else '20 "Not a directory"'
        config.stderr.append(f"{MARIADBD}: Can't read dir of '{argument}' (Errcode: {errno_text})")
        return False
    for name in access.list_dir(node, argument, max_entries=MAX_DIR_ENTRIES):
        if name.endswith(".cnf"):
            _read_file(access, node, posixpath.join(argument, name), config, depth + 1)
    return True


def _option(text: str) -> tuple[str, str | None]:
    # remove_end_comment: a `#` outside quotes ends the line.
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            text = text[:index]
            break
    name, sep, value = text.partition("=")
    if not sep:
        return name.strip(), None
    value = value.strip()
    if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
        value = value[1:-1]
    return name.strip(), value


def option_error(name: str, value: str | None) -> str | None:
    """my_getopt's complaint about one option (`--name[=value]`), or None if the server takes it."""
    key = normalize(name)
    loose = False
    for _ in range(2):
        found = _find(key)
        if found == 1:
            return None
        if found > 1:
            if value is not None:
                return f"{MARIADBD}: variable prefix '{name}' is not unique"
            return f"{MARIADBD}: ambiguous option '--{name}'"
        prefix = next((p for p in SPECIAL_PREFIXES if key.startswith(p + "_")), None)
        if prefix is None:
            break
        loose = loose or prefix == "loose"
        key = key[len(prefix) + 1 :]
    if loose:
        return None  # a loose- option the server does not know is a warning, and skipped
    shown = f"{name}={value}" if value is not None else name
    if value is not None:
        return f"{MARIADBD}: unknown variable '{shown}'"
    return f"{MARIADBD}: unknown option '--{shown}'"


def _find(key: str) -> int:
    # findopt: an exact name, else how many options the name is a prefix of.
    if key in KNOWN_OPTIONS:
        return 1
    return sum(1 for option in KNOWN_OPTIONS if option.startswith(key))


def server_paths(config: ServerConfig, node: str) -> tuple[str, str, str, str]:
    """(datadir with its trailing slash, socket, error log or "" for stderr, pid file)."""
    datadir = config.value("datadir", DATADIR).rstrip("/") + "/"
    socket = config.value("socket", SOCKET)
    log_error = ""
    if config.is_set("log_error"):
        # --log-error with no name: HOSTNAME.err in the datadir; a relative name is under it too.
        name = config.value("log_error", "") or f"{node}.err"
        log_error = name if name.startswith("/") else datadir + name
    pid_file = config.value("pid_file", "") or f"{node}.pid"
    if not pid_file.startswith("/"):
        pid_file = datadir + pid_file
    return datadir, socket, log_error, pid_file


def _may(info: FileStat, uid: int, gid: int, user_bit: int) -> bool:
    # The owner's bits for the owner, the group's for its group, the others' for the rest
    # (user_bit is S_IWUSR or S_IXUSR; the group's and others' bits sit 3 and 6 places lower).
    if info.uid == uid:
        return bool(info.perms & user_bit)
    if info.gid == gid:
        return bool(info.perms & (user_bit >> 3))
    return bool(info.perms & (user_bit >> 6))


@dataclass(frozen=True)
class MariadbFacts(DaemonFacts):
    """What a running server took at its start: clients find it, and read its options, by these."""

    datadir: str  # with its trailing slash
    socket: str
    # Option name (underscore spelling) -> the value it took ("ON" for a bare switch).
    options: dict[str, str]


class MariadbHost(Protocol):
    """What mariadbd's start-up (and its clients) ask of the cluster: files, the time, what runs."""

    access: NodeAccess
    clocks: NodeClocks

    @property
    def systemd(self) -> RunningUnits: ...


def launch(host: MariadbHost, node: str, unit: UnitFile) -> Launch:
    """The start-up of mariadbd, in its order: option files, options, datadir, error log, Aria."""
    uid, gid = lookup_ids(host.access, node, unit.user or "mysql")
    result = Launch(ok=False, comm="mariadbd", argv=exec_argv(unit), uid=uid, gid=gid)
    result.stderr = [Line(text) for text in _start(host, node, result)]
    if not result.ok:
        result.exit_status = 1
    return result


def _start(host: MariadbHost, node: str, result: Launch) -> list[str]:
    """Run the checks into `result` (log file, facts); return what goes to stderr (the journal)."""
    stamp = log_time(host.clocks.now_s)
    config = read_config(host.access, node)
    journal = list(config.stderr)
    if config.fatal:
        return journal
    problem = next((e for e in (option_error(n, v) for n, v in config.options) if e is not None), None)
    if problem is not None:
        return [*journal, f"{stamp} 0 [ERROR] {problem}", f"{stamp} 0 [ERROR] Aborting"]
    datadir, socket, log_error, pid_file = server_paths(config, node)
    info = host.access.stat(node, datadir.rstrip("/") or "/")
    is_dir = info is not None and info.is_dir()
    if not (is_dir and info is not None and _may(info, result.uid, result.gid, statmod.S_IWUSR)):
        # test_if_case_insensitive writes HOSTNAME.lower-test into the datadir first.
        journal.append(f"{stamp} 0 [Warning] Can't create test file {datadir}{node}.lower-test")
    if info is None or not is_dir or not _may(info, result.uid, result.gid, statmod.S_IXUSR):
        why = '2 "No such file or directory"'
        if info is not None:
            why = '13 "Permission denied"' if is_dir else '20 "Not a directory"'
        # my_setwd's error goes through mysys's stderr reporter: the program's path, after a BEL.
        return [
            *journal,
            f"\a{MARIADBD}: Can't change dir to '{datadir}' (Errcode: {why})",
            f"{stamp} 0 [ERROR] Aborting",
        ]
    # From here on the server writes to its error log (stderr where log-error is not set).
    log: list[str] = []
    control = f"{datadir}aria_log_control"
    if not _may(info, result.uid, result.gid, statmod.S_IWUSR):
        log += [
            f"{stamp} 0 [ERROR] mariadbd: Can't create/write to file '{control}' "
            '(Errcode: 13 "Permission denied")',
            f"{stamp} 0 [ERROR] mariadbd: Got error 'Can't create file' when trying to use aria control "
            f"file '{control}'",
            f"{stamp} 0 [ERROR] Plugin 'Aria' init function returned error.",
            f"{stamp} 0 [ERROR] Plugin 'Aria' registration as a STORAGE ENGINE failed.",
            f"{stamp} 0 [ERROR] Aborting",
        ]
    else:
        result.ok = True
        result.pid_file = pid_file
        log += [
            f"{stamp} 0 [Note] {MARIADBD}: ready for connections.",
            f"Version: '{MARIADB_VERSION}'  socket: '{socket}'  port: {config.value('port', PORT)}  "
            "MariaDB Server",
        ]
        options = {normalize(name): value if value is not None else "ON" for name, value in config.options}
        result.facts = MariadbFacts(datadir, socket, options)
    if not log_error:
        return journal + log
    result.log_file, result.log_lines = log_error, log
    return journal


def log_time(time_s: int) -> str:
    """The stamp of MariaDB's log lines (sql/log.cc print_buffer_to_file: the hour space-padded)."""
    day, clock = iso_time(time_s).split("T")
    hour, rest = clock.split(":", 1)
    return f"{day} {int(hour):2d}:{rest}"


def running_server(host: MariadbHost, node: str) -> MariadbFacts | None:
    """What the server running on `node` took at its start, or None while none runs."""
    return host.systemd.facts(node, MARIADB, MariadbFacts) if host.systemd.is_active(node, MARIADB) else None


def server_option(host: MariadbHost, node: str, name: str) -> str | None:
    """The value the running server took for option `name` (underscore spelling), or None."""
    running = running_server(host, node)
    return running.options.get(normalize(name)) if running is not None else None


def server_datadir(host: MariadbHost, node: str) -> str | None:
    """The datadir of the running server (with its trailing slash), or None while none runs."""
    running = running_server(host, node)
    return running.datadir if running is not None else None
