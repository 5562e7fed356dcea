"""The expert runbook's accounting chapter: slurmdbd, its database, associations (issue 17, a).

A sub-plan in the shape of policies.py's (`out = yield command`): it reads what sacct, systemctl,
journalctl and sacctmgr print and what the site's notes say, never a value of the scenario.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Generator

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
        log = yield "journalctl -u mariadb --no-pager -n 10"
        if "Permission denied" in log:
            yield "chown -R mysql:mysql /var/lib/mysql"
        yield "systemctl start mariadb"
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
