"""sacctmgr: the accounting database's accounts, users and associations (controller/accounting.py).

`show`/`list` print sacctmgr's print_fields tables (every column right-justified, a value longer
than its column cut with '+', one space after each column; -P/-p `|`-separated; -n without the
header). `add`/`delete` print what they will change and then ask "Would you like to commit changes?
(You have 30 seconds to decide)"; `-i` commits at once. The question is answered from standard input
where the shell pipes one (`echo y | sacctmgr ...`); at a terminal nobody answers the stub, so it
ends as the real one does after its 30 seconds: "timeout", and nothing changes. With standard input
at end of file (`< /dev/null`) Debian's 22.05.8 prints "(N/y): " again and again without end (it
filled a disk in the capture session); the stub prints one and discards the change instead.
Output shapes follow sacctmgr's user_functions.c and account_functions.c (22.05).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hpcgym.controller.accounting import Accounting, Association, Qos, format_tres, parse_tres
from hpcgym.controller.commands.base import Context, ToolReply, atoi_width, join_cells
from hpcgym.controller.commands.sacct import connection_errors, dbd_host, is_enabled
from hpcgym.controller.commands.usage import read_help

PROG = "sacctmgr"
COMMIT_QUESTION = "Would you like to commit changes? (You have 30 seconds to decide)\n(N/y): "
FLAGS = {"-i": "immediate", "--immediate": "immediate", "-n": "noheader", "--noheader": "noheader",
         "-P": "parsable2", "--parsable2": "parsable2", "-p": "parsable", "--parsable": "parsable",
         "-Q": "quiet", "--quiet": "quiet", "-v": "verbose", "-s": "withsubaccounts"}  # fmt: skip
_ENTITIES = {
    "association": "assoc", "associations": "assoc", "assoc": "assoc", "user": "user", "users": "user",
    "account": "account", "accounts": "account", "cluster": "cluster", "clusters": "cluster",
    "qos": "qos",
}  # fmt: skip
Getter = Callable[[Association], str]
ASSOC_COLUMNS: list[tuple[str, int, Getter]] = [
    ("Cluster", 10, lambda a: "hpc"),
    ("Account", 10, lambda a: a.account),
    ("User", 10, lambda a: a.user),
    ("Partition", 10, lambda a: a.partition),
    ("Share", 9, lambda a: str(a.share)),
    ("Priority", 10, lambda a: ""),
    ("GrpJobs", 7, lambda a: ""),
    ("GrpTRES", 13, lambda a: ""),
    ("GrpSubmit", 9, lambda a: ""),
    ("GrpWall", 11, lambda a: ""),
    ("GrpTRESMins", 13, lambda a: ""),
    ("MaxJobs", 7, lambda a: ""),
    ("MaxTRES", 13, lambda a: ""),
    ("MaxTRESPerNode", 14, lambda a: ""),
    ("MaxSubmit", 9, lambda a: ""),
    ("MaxWall", 11, lambda a: ""),
    ("MaxTRESMins", 13, lambda a: ""),
    ("QOS", 20, lambda a: a.qos),
    ("Def QOS", 9, lambda a: ""),
    ("GrpTRESRunMin", 13, lambda a: ""),
]


QosGetter = Callable[[Qos], str]
QOS_COLUMNS: list[tuple[str, int, QosGetter]] = [
    ("Name", 10, lambda q: q.name),
    ("Priority", 10, lambda q: str(q.priority)),
    ("GraceTime", 10, lambda q: "00:00:00"),
    ("Preempt", 10, lambda q: ""),
    ("PreemptExemptTime", 19, lambda q: ""),
    ("PreemptMode", 11, lambda q: "cluster"),
    ("Flags", 40, lambda q: ""),
    ("UsageThres", 11, lambda q: ""),
    ("UsageFactor", 11, lambda q: "1.000000"),
    ("GrpTRES", 13, lambda q: format_tres(q.grp_tres)),
    ("GrpTRESMins", 13, lambda q: ""),
    ("GrpTRESRunMin", 13, lambda q: ""),
    ("GrpJobs", 7, lambda q: ""),
    ("GrpSubmit", 9, lambda q: ""),
    ("GrpWall", 11, lambda q: ""),
    ("MaxTRES", 13, lambda q: ""),
    ("MaxTRESPerNode", 14, lambda q: ""),
    ("MaxTRESMins", 13, lambda q: ""),
    ("MaxWall", 11, lambda q: ""),
    ("MaxTRESPU", 13, lambda q: format_tres(q.max_tres_per_user)),
    ("MaxJobsPU", 9, lambda q: ""),
    ("MaxSubmitPU", 11, lambda q: ""),
    ("MaxTRESPA", 13, lambda q: ""),
    ("MaxJobsPA", 9, lambda q: ""),
    ("MaxSubmitPA", 11, lambda q: ""),
    ("MinTRES", 13, lambda q: ""),
]
# sacctmgr's names for the QOS limits it can set (case-blind), to the field they change.
QOS_LIMITS = {"maxtresperuser": "max_tres_per_user", "maxtrespu": "max_tres_per_user", "grptres": "grp_tres"}


def run(ctx: Context, args: list[str]) -> ToolReply:
    if not is_enabled(ctx):
        return ToolReply("", "sacctmgr: error: Problem talking to the database: Connection refused\n", 1)
    flags = {FLAGS[a] for a in args if a in FLAGS}
    words = [a for a in args if a not in FLAGS]
    if any(w in ("-h", "--help", "help") for w in words) or not words:
        return ToolReply(USAGE)
    if words[0] in ("-V", "--version", "version"):
        return ToolReply("slurm 22.05.8\n")
    if not ctx.slurm.accounting.serving:
        # sacctmgr stops after the first two of sacct's three lines (tests/fidelity/accounting).
        lines = connection_errors(PROG, dbd_host(ctx)).splitlines(keepends=True)
        return ToolReply("", "".join(lines[:2]), 1)
    verb, rest = words[0].lower(), words[1:]
    if not rest:
        return ToolReply("", f"sacctmgr: error: No command given for {verb}\n", 1)
    entity = _ENTITIES.get(rest[0].lower())
    if verb in ("show", "list"):
        if entity is None:
            return ToolReply("", f" Unknown list option: {rest[0]}\n", 1)
        return _show(ctx.slurm.accounting, entity, rest[1:], flags)
    if verb in ("add", "create"):
        if entity not in ("user", "account"):
            return ToolReply("", f" Unknown option: {rest[0]}\n", 1)
        return _add(ctx, entity, rest[1:], flags)
    if verb in ("modify", "update"):
        if entity != "qos":
            return ToolReply("", f" Unknown option: {rest[0]}\n", 1)
        return _modify_qos(ctx, rest[1:], flags)
    if verb in ("delete", "remove"):
        if entity not in ("user", "account"):
            return ToolReply("", f" Unknown option: {rest[0]}\n", 1)
        return _delete(ctx, entity, rest[1:], flags)
    return ToolReply("", f'sacctmgr: error: Invalid keyword "{words[0]}" specified\n', 1)


def _conditions(words: list[str]) -> tuple[dict[str, list[str]], list[str], str]:
    """`where`/`set` words as key -> values (keys lower-cased), the names given bare, and format=."""
    found: dict[str, list[str]] = {}
    names: list[str] = []
    fmt = ""
    for word in words:
        if word.lower() in ("where", "set", "withassoc", "withdeleted"):
            continue
        key, sep, value = word.partition("=")
        if not sep:
            names.extend(filter(None, word.split(",")))
            continue
        key = key.lower().rstrip("+-")
        if key in ("format", "form"):
            fmt = value
        else:
            found.setdefault(_KEY_ALIASES.get(key, key), []).extend(filter(None, value.split(",")))
    return found, names, fmt


_KEY_ALIASES = {"users": "user", "accounts": "account", "acct": "account", "name": "names",
                "defaultaccount": "defaultaccount", "clusters": "cluster"}  # fmt: skip


def _table(columns: list[tuple[str, int, list[str]]], flags: set[str]) -> str:
    rows = len(columns[0][2]) if columns else 0
    parsable = "parsable" in flags or "parsable2" in flags
    out = []
    if "noheader" not in flags:
        if parsable:
            out.append(_bar([h for h, _, _ in columns], "parsable" in flags))
        else:
            out.append(join_cells([h[:w].rjust(w) + " " for h, w, _ in columns]))
            out.append(join_cells(["-" * w + " " for _, w, _ in columns]))
    for i in range(rows):
        cells = [values[i] for _, _, values in columns]
        if parsable:
            out.append(_bar(cells, "parsable" in flags))
        else:
            out.append(join_cells([_cell(c, w) for c, (_, w, _) in zip(cells, columns, strict=True)]))
    return "".join(out)


def _bar(cells: list[str], trailing: bool) -> str:
    return "|".join(cells) + ("|" if trailing else "") + "\n"


def _cell(value: str, width: int) -> str:
    if len(value) > width:
        value = value[: width - 1] + "+"
    return value.rjust(width) + " "


T = TypeVar("T")


def _pick(
    columns: list[tuple[str, int, Callable[[T], str]]], fmt: str, aliases: dict[str, str]
) -> list[tuple[str, int, Callable[[T], str]]] | ToolReply:
    """format=name[%width],...: the named columns (case-blind), or the error for an unknown one."""
    known = {c[0].lower().replace(" ", ""): c for c in columns}
    picked = []
    for item in fmt.split(","):
        name, _, size = item.partition("%")
        column = known.get(aliases.get(name.lower(), name.lower()))
        if column is None:
            return ToolReply("", f" Unknown field '{name}'\n", 1)
        # `if (newlen > 0) field->len = newlen;` after atoi(), capped (base.atoi_width).
        number = atoi_width(size)
        width = number if number > 0 else column[1]
        picked.append((column[0], width, column[2]))
    return picked


def _lineage(assoc: Association) -> str:
    # slurmdbd's lineage: an account's path from root, a user's after its account ("0-" sorts first).
    path = "/" if assoc.account == "root" else f"/{assoc.account}/"
    return f"{path}0-{assoc.user}/" if assoc.user else path


def _show(acct: Accounting, entity: str, words: list[str], flags: set[str]) -> ToolReply:
    where, names, fmt = _conditions(words)
    if entity == "assoc":
        users = set(where.get("user", []) + where.get("names", []))
        accounts = set(where.get("account", []))
        assocs = [
            a
            for a in sorted(acct.associations, key=_lineage)
            if (not users or a.user in users) and (not accounts or a.account in accounts)
        ]
        columns = ASSOC_COLUMNS
        if fmt:
            picked = _pick(ASSOC_COLUMNS, fmt, {})
            if isinstance(picked, ToolReply):
                return picked
            columns = picked
        return ToolReply(_table([(h, w, [get(a) for a in assocs]) for h, w, get in columns], flags))
    if entity == "user":
        asked = set(names + where.get("names", []) + where.get("user", []))
        user_rows = [u for name, u in sorted(acct.users.items()) if not asked or name in asked]
        return ToolReply(
            _table(
                [
                    ("User", 10, [u.name for u in user_rows]),
                    ("Def Acct", 10, [u.default_account for u in user_rows]),
                    ("Admin", 9, [u.admin for u in user_rows]),
                ],
                flags,
            )
        )
    if entity == "account":
        asked = set(names + where.get("names", []) + where.get("account", []))
        account_rows = [a for name, a in sorted(acct.accounts.items()) if not asked or name in asked]
        return ToolReply(
            _table(
                [
                    ("Account", 10, [a.name for a in account_rows]),
                    ("Descr", 20, [a.description for a in account_rows]),
                    ("Org", 20, [a.organization for a in account_rows]),
                ],
                flags,
            )
        )
    if entity == "qos":
        asked = set(names + where.get("names", []))
        rows = [q for name, q in sorted(acct.qos.items()) if not asked or name in asked]
        qos_columns = QOS_COLUMNS
        if fmt:
            chosen = _pick(QOS_COLUMNS, fmt, {"maxtresperuser": "maxtrespu"})
            if isinstance(chosen, ToolReply):
                return chosen
            qos_columns = chosen
        return ToolReply(_table([(h, w, [get(q) for q in rows]) for h, w, get in qos_columns], flags))
    host = "10.10.0.10"
    return ToolReply(
        _table(
            [
                ("Cluster", 10, [acct.cluster_name]),
                ("ControlHost", 15, [host]),
                ("ControlPort", 12, ["6817"]),
                ("RPC", 5, ["9728"]),
                ("Share", 9, ["1"]),
                ("GrpJobs", 7, [""]),
                ("GrpTRES", 13, [""]),
                ("GrpSubmit", 9, [""]),
                ("MaxJobs", 7, [""]),
                ("MaxTRES", 13, [""]),
                ("MaxSubmit", 9, [""]),
                ("MaxWall", 11, [""]),
                ("QOS", 20, ["normal"]),
                ("Def QOS", 9, [""]),
            ],
            flags,
        )
    )


def _commit(ctx: Context, flags: set[str], text: str, apply: Callable[[], None]) -> ToolReply:
    """Print what will change, then commit at once (-i) or ask, as sacctmgr's commit_check does."""
    if "immediate" in flags:
        apply()
        return ToolReply(text)
    answer = (ctx.stdin or "").lstrip()[:1]
    if ctx.stdin is None:
        return ToolReply(f"{text}{COMMIT_QUESTION}timeout\n Changes Discarded\n")
    if answer in ("y", "Y"):
        apply()
        return ToolReply(f"{text}{COMMIT_QUESTION}")
    return ToolReply(f"{text}{COMMIT_QUESTION} Changes Discarded\n")


def _add(ctx: Context, entity: str, words: list[str], flags: set[str]) -> ToolReply:
    acct = ctx.slurm.accounting
    where, names, _ = _conditions(words)
    names += where.get("names", [])
    if not names:
        return ToolReply("", f" Need name of {entity} to add.\n", 1)
    if entity == "account":
        new = [n for n in names if n not in acct.accounts]
        if not new:
            return ToolReply("", " Nothing new added.\n", 1)
        parent = (where.get("parent") or ["root"])[0]
        descr = (where.get("description") or [""])[0]
        org = (where.get("organization") or [""])[0]
        text = " Adding Account(s)\n" + "".join(f"  {n}\n" for n in new)
        text += " Settings\n"
        text += f"  Description     = {descr or 'Account Name'}\n"
        text += f"  Organization    = {org or 'Parent/Account Name'}\n"
        text += " Associations\n" + "".join(f"  A = {n:<10.10} C = {acct.cluster_name:<10.10}\n" for n in new)
        text += " Settings\n  Parent        = " + parent + "\n"

        def apply_accounts() -> None:
            for n in new:
                acct.add_account(n, descr or n, org or n, parent)

        return _commit(ctx, flags, text, apply_accounts)
    accounts = where.get("account", []) or where.get("defaultaccount", [])
    default = (where.get("defaultaccount") or accounts or [""])[0]
    if not accounts:
        return ToolReply("", " Need a default account for these users\n", 1)
    missing = [a for a in accounts if a not in acct.accounts]
    if missing:
        return ToolReply(
            "",
            "".join(
                f" This account '{a}' doesn't exist.\n        Contact your admin to add this account.\n"
                for a in missing
            ),
            1,
        )
    pairs = [(u, a) for u in names for a in accounts if acct.association(u, a) is None]
    if not pairs:
        return ToolReply("", " Nothing new added.\n", 1)
    new_users = [u for u in names if u not in acct.users]
    text = ""
    if new_users:
        text += " Adding User(s)\n" + "".join(f"  {u}\n" for u in new_users)
        if where.get("defaultaccount"):
            text += f" Settings =\n  Default Account = {default}\n"
    text += " Associations =\n" + "".join(
        f"  U = {u:<9.9} A = {a:<10.10} C = {acct.cluster_name:<10.10}\n" for u, a in pairs
    )
    text += " Non Default Settings\n"

    def apply_users() -> None:
        for u, a in pairs:
            if u not in acct.users:
                acct.add_user(u, default)
            acct.add_user(u, a)

    return _commit(ctx, flags, text, apply_users)


def _modify_qos(ctx: Context, words: list[str], flags: set[str]) -> ToolReply:
    """`modify qos NAME set Key=Value ...` (or `where name=NAME set ...`), as qos_functions.c prints it."""
    acct = ctx.slurm.accounting
    lower = [w.lower() for w in words]
    cut = lower.index("set") if "set" in lower else len(words)
    where, names, _ = _conditions(words[:cut])
    names += where.get("names", [])
    changes: dict[str, dict[str, int]] = {}
    for word in words[cut + 1 :]:
        key, sep, value = word.partition("=")
        target = QOS_LIMITS.get(key.lower())
        tres = parse_tres(value) if sep else None
        if target is None or tres is None:
            return ToolReply("", f" Unknown option: {word}\n Use keyword 'where' to modify condition\n", 1)
        changes[target] = tres
    if not changes:
        return ToolReply("", " You didn't give me anything to set\n", 1)
    found = [acct.qos[n] for n in names if n in acct.qos]
    if not found:
        return ToolReply("", " Nothing modified\n", 1)
    text = " Modified qos...\n" + "".join(f"  {q.name}\n" for q in found)

    def apply() -> None:
        for qos in found:
            for target, tres in changes.items():
                setattr(qos, target, tres)
        ctx.slurm.schedule()

    return _commit(ctx, flags, text, apply)


def _delete(ctx: Context, entity: str, words: list[str], flags: set[str]) -> ToolReply:
    acct = ctx.slurm.accounting
    where, names, _ = _conditions(words)
    names += where.get("names", []) + where.get(entity, [])
    accounts = set(where.get("account", [])) if entity == "user" else set()
    if entity == "user":
        gone = [a for a in acct.associations if a.user in names and (not accounts or a.account in accounts)]
    else:
        gone = [a for a in acct.associations if a.account in names]
    if not gone:
        return ToolReply("", " Nothing deleted\n", 1)
    if entity == "user" and not accounts:
        text = " Deleting users...\n" + "".join(f"  {n}\n" for n in names if n in acct.users)
    else:
        text = " Deleting user associations...\n" if entity == "user" else " Deleting accounts...\n"
        text += "".join(
            f"  C = {acct.cluster_name:<10.10} A = {a.account:<10.10} U = {a.user:<9.9}\n" for a in gone
        )

    def apply() -> None:
        for a in gone:
            acct.associations.remove(a)
        for name in names:
            if entity == "user" and not any(a.user == name for a in acct.associations):
                acct.users.pop(name, None)
            if entity == "account":
                acct.accounts.pop(name, None)

    return _commit(ctx, flags, text, apply)


USAGE = read_help("sacctmgr-help.txt")
