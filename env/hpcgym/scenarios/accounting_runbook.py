"""The expert runbook's accounting chapter: slurmdbd, its database, associations (issue 17, a).

A sub-plan in the shape of policies.py's (`out = yield command`): it reads what sacct, systemctl,
journalctl and sacctmgr print, MariaDB's option files and error log, and what the site's notes say,
never a value of the scenario. It knows MariaDB's server variables (the simulator's table of them).
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Generator

from hpcgym.controller.services.mariadb import KNOWN_OPTIONS

Plan = Generator[str, str, None]
DBD_CONF = "/etc/slurm/slurmdbd.conf"
_ABOUT_ACCOUNTING = re.compile(r"sacct|sbatch|accounting|slurmdbd|association|QOS", re.IGNORECASE)
# What a QOS change meant (a change note quoting the sacctmgr command it was to run).
_QOS_CHANGE = re.compile(r"modify qos (\S+) set (MaxTRESPerUser|GrpTRES)=(\S+)", re.IGNORECASE)
# A ticket from a user whose jobs are refused at submit (quoting sbatch's error), and the colleague
# whose group they joined.
_REFUSED = re.compile(r"(?s)Ticket from ([a-z][a-z0-9_-]*)\b.*Invalid account or account/partition")
_SPONSOR = re.compile(r"\bjoined ([a-z][a-z0-9_-]*)'s group")


def accounting(alert: str) -> Plan:
    """Check that accounting answers; repair slurmdbd and its database, then users' associations.

    Only where the alert is about accounting: other incidents keep their step budget.
    """
    if not _ABOUT_ACCOUNTING.search(alert):
        return
    out = yield "sacct -X -n -S 00:00 2>&1 | tail -3"
    if "Connection refused" in out:
        yield from _slurmdbd()
    refused = _REFUSED.search(alert)
    if refused is not None:
        yield from _association(refused[1], alert)
    if re.search(r"\bQOS\w*Limit\b", alert):
        yield from _qos()


def _qos() -> Plan:
    # A job held by its QOS: the QOS as it is against what the last change to it meant.
    have = yield "sacctmgr -n -P show qos format=name,maxtrespu,grptres"
    current = {}
    for line in have.splitlines():
        fields = line.split("|")
        if len(fields) == 3:
            current[fields[0]] = {"maxtresperuser": fields[1], "grptres": fields[2]}
    notes = yield "cat /root/changes/* 2>/dev/null | tail -40"
    for name, key, value in _QOS_CHANGE.findall(notes):
        if name in current and current[name].get(key.lower()) != value and re.fullmatch(r"[a-z]+=\d+", value):
            yield f"sacctmgr -i modify qos {name} set {key}={value}"
    yield "squeue -h -o '%i %u %T %r'"


def _slurmdbd() -> Plan:
    states = (yield "systemctl is-active mariadb slurmdbd").split()
    if states and states[0] != "active":
        yield from _mariadb()
    log = yield "journalctl -u slurmdbd --no-pager -n 8"
    if "should be 600" in log:
        yield f"chmod 0600 {DBD_CONF}"
    if "not owned by SlurmUser" in log:
        yield f"chown slurm:slurm {DBD_CONF}"
    if "Access denied for user" in log:
        # The database refuses slurmdbd's password: a rotation. The change note names the new secret.
        notes = yield "cat /root/changes/* 2>/dev/null | tail -40"
        secret = re.search(r"(?im)^New secret:\s*(\S+)", notes)
        if secret is None:
            return
        value = (yield f"cat {shlex.quote(secret[1])}").strip().splitlines()
        if not value or not re.fullmatch(r"[A-Za-z0-9_.@%+=:-]+", value[0]):
            return
        yield f"sed -i 's/^StoragePass=.*/StoragePass={value[0]}/' {DBD_CONF}"
    yield "systemctl restart slurmdbd"
    yield "sdiag | grep -i 'dbd agent'"


def _mariadb() -> Plan:
    """MariaDB does not start: read what it printed (journal, then its error log) and repair that."""
    journal = yield "journalctl -u mariadb --no-pager -a -n 20"
    # What was printed since the last start attempt only.
    journal = journal.rsplit("Starting MariaDB", 1)[-1]
    options = yield "grep -Hs '' /etc/my.cnf /etc/mysql/my.cnf /etc/my.cnf.d/*.cnf"
    log_file = next((value for _, name, value in _option_lines(options) if name == "log_error"), "")
    log = (yield f"tail -n 20 {shlex.quote(log_file)}") if log_file.startswith("/") else ""
    aria = re.search(r"Can't create/write to file '(/\S+?)/?aria_log_control' \(Errcode: 13", log)
    unknown = re.search(r"unknown variable '([A-Za-z0-9_-]+)=", journal)
    chdir = re.search(r"Can't change dir to '([^']+)'", journal)
    if aria is not None:
        # The datadir (or what the restore left in it) is not the server's account's.
        yield f"chown -R mysql:mysql {shlex.quote(aria[1])}"
    elif unknown is not None:
        meant = _meant_option(unknown[1])
        where = next((path for path, name, _ in _option_lines(options) if name == _spelling(unknown[1])), "")
        if meant is not None and where:
            yield f"sed -i 's/^{unknown[1]}=/{meant}=/' {shlex.quote(where)}"
    elif chdir is not None:
        # The datadir is wherever the system schema (the mysql database) lives.
        found = (yield "ls -d /var/lib/*/mysql /srv/*/mysql /data/*/mysql 2>/dev/null").split()
        where = next((path for path, name, _ in _option_lines(options) if name == "datadir"), "")
        if len(found) == 1 and where and re.fullmatch(r"/[A-Za-z0-9_./-]+", found[0]):
            datadir = found[0].rsplit("/", 1)[0]
            yield f"sed -i 's|^datadir=.*|datadir={datadir}|' {shlex.quote(where)}"
    yield "systemctl start mariadb"


def _option_lines(grep_output: str) -> list[tuple[str, str, str]]:
    """(file, option in its underscore spelling, value) for each `file:name=value` line of grep -H."""
    found = []
    for line in grep_output.splitlines():
        path, _, text = line.partition(":")
        name, sep, value = text.strip().partition("=")
        if sep and not name.startswith(("#", ";", "[")):
            found.append((path, _spelling(name), value.strip()))
    return found


def _spelling(name: str) -> str:
    return name.strip().replace("-", "_")


def _meant_option(name: str) -> str | None:
    """The server variable a name the server refused was meant to be (a typo, or a client option)."""
    key = _spelling(name)
    if key == "default_character_set":
        return "character-set-server"  # the client's option; the server's is character-set-server
    close = difflib.get_close_matches(key, sorted(KNOWN_OPTIONS), n=1, cutoff=0.85)
    return close[0] if close else None


def _association(user: str, alert: str) -> Plan:
    out = yield f"sacctmgr -n -P show assoc user={user} format=account"
    if out.strip() and "error" not in out:
        return
    # The account the user's group works under: that of the colleague the ticket names.
    sponsor = _SPONSOR.search(alert)
    if sponsor is None:
        return
    out = yield f"sacctmgr -n -P show assoc user={sponsor[1]} format=account"
    accounts = sorted({line.strip() for line in out.splitlines() if line.strip()})
    if len(accounts) != 1:
        return
    yield f"sacctmgr -i add user {user} account={accounts[0]}"
    yield f"sacctmgr show assoc user={user}"
