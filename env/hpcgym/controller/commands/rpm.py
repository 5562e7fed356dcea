"""`rpm` on a node: queries and verification against the controller's rpmdb (services/packages.py).

What it answers and how it prints follow rpm 4.16 (Rocky 9): `rpm -q NAME` prints the NEVRA or
"package NAME is not installed" (the exit status counts the names missing); `-qa` lists every installed
package; `-ql` a package's files; `-qf PATH` the owner or "file PATH is not owned by any package";
`-V` one line per file that differs, in lib/verify.c's layouts ("missing   %c %s" and
"%s  %c %s" with the SM5DLUGTP flags), exit 1 when any differs. A query exits with the number of
names that failed. The query messages and exit codes match Debian's rpm 4.18
(tests/controller/captures/rpm-4.18); installing and erasing are dnf's business here.
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.services.packages import BY_NAME, Package, PackageDB

VERSION = "RPM version 4.16.1.3\n"


def _db(ctx: Context) -> PackageDB | None:
    return ctx.services.packages


def run(ctx: Context, args: list[str]) -> ToolReply:
    db = _db(ctx)
    if db is None:
        return ToolReply("", "error: cannot open Packages database in /var/lib/rpm\n", 1)
    mode = ""
    flags: set[str] = set()
    names: list[str] = []
    for arg in args:
        if arg == "--version":
            return ToolReply(VERSION)
        if arg in ("--query",):
            mode = mode or "q"
        elif arg in ("--verify",):
            mode = mode or "V"
        elif arg in ("--all",):
            flags.add("a")
        elif arg.startswith("--"):
            return ToolReply("", f"rpm: {arg}: unknown option\n", 1)
        elif arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter in "qV" and not mode:
                    mode = letter
                elif letter in "alfi" or (letter in "qV" and mode == letter):
                    flags.add(letter)
                else:
                    return ToolReply("", f"rpm: -{letter}: unknown option\n", 1)
        else:
            names.append(arg)
    if not mode:
        return ToolReply("", "rpm: no operation specified\n", 1)
    if mode == "q":
        return _query(ctx, db, flags, names)
    return _verify(ctx, db, flags, names)


def _query(ctx: Context, db: PackageDB, flags: set[str], names: list[str]) -> ToolReply:
    installed = db.packages(ctx.node)
    if "a" in flags:
        chosen = [p for p in installed if not names or p.name in names]
        return ToolReply("".join(_describe(p, flags) for p in chosen))
    if not names:
        return ToolReply("", "rpm: no arguments given for query\n", 1)
    out: list[str] = []
    err: list[str] = []
    missing = 0
    for name in names:
        if "f" in flags:
            owner = db.owner_of(name)
            if owner is None or not db.is_installed(ctx.node, owner.name):
                if not _exists(ctx, name):
                    err.append(f"error: file {name}: No such file or directory\n")
                else:
                    out.append(f"file {name} is not owned by any package\n")
                missing += 1
            else:
                out.append(_describe(owner, flags - {"f"}))
            continue
        package = next((p for p in installed if name in (p.name, p.nevra, f"{p.name}-{p.evr}")), None)
        if package is None:
            out.append(f"package {name} is not installed\n")
            missing += 1
        else:
            out.append(_describe(package, flags))
    # rpm exits with the number of queries that failed (captures/rpm-4.18: two missing give 2).
    return ToolReply("".join(out), "".join(err), min(missing, 255))


def _exists(ctx: Context, path: str) -> bool:
    services = ctx.services
    lstat = getattr(services.access, "lstat", None)
    if lstat is not None:
        return lstat(ctx.node, path) is not None
    return services.access.stat(ctx.node, path) is not None


def _describe(package: Package, flags: set[str]) -> str:
    if "l" in flags:
        return "".join(f"{f.path}\n" for f in sorted(package.files, key=lambda f: f.path))
    return f"{package.nevra}\n"


def _verify(ctx: Context, db: PackageDB, flags: set[str], names: list[str]) -> ToolReply:
    if "a" in flags:
        chosen = db.packages(ctx.node)
    elif not names:
        return ToolReply("", "rpm: no arguments given for verify\n", 1)
    else:
        chosen = []
        out: list[str] = []
        for name in names:
            package = BY_NAME.get(name)
            if package is None or not db.is_installed(ctx.node, package.name):
                out.append(f"package {name} is not installed\n")
            else:
                chosen.append(package)
        if out:
            lines = [line for p in chosen for line in db.verify(ctx.node, p)]
            return ToolReply("".join(out) + "".join(f"{line}\n" for line in lines), "", 1)
    lines = [line for p in chosen for line in db.verify(ctx.node, p)]
    return ToolReply("".join(f"{line}\n" for line in lines), "", 1 if lines else 0)
