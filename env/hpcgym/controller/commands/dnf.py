"""An offline `dnf` (dnf 4, Rocky 9) over the site's own repository and the controller's rpmdb.

No node reaches a mirror; the site keeps `site-appstream` (/etc/yum.repos.d/site-appstream.repo),
and every package of the catalogue (services/packages.py) is in it. `install` of an installed
package is "already installed" and "Nothing to do."; `reinstall` lays the package's files down
again, which is how a library damaged behind rpm's back is repaired. Without `-y` dnf asks
"Is this ok [y/N]: " and, reading end of file (every command's stdin is empty here), prints
"Operation aborted." and exits 1, as the real one does. `list installed` prints the installed set.
"""

from __future__ import annotations

import time

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.services.access import NodeFileError
from hpcgym.controller.services.packages import BY_NAME, REPO_ID, Package, PackageDB

RULE = "=" * 80 + "\n"
# dnf checks metadata hourly; the mirror was last synced this long before the episode's first instant.
METADATA_AGE_S = 2 * 3600 + 17 * 60 + 4


def _size(kb: int) -> str:
    return f"{kb / 1024:.1f} M" if kb >= 1024 else f"{kb} k"


def _metadata_line(ctx: Context) -> str:
    age = METADATA_AGE_S + max(0, ctx.now_s - ctx.slurm.slurmctld_start_s)
    hours, rest = divmod(age, 3600)
    synced = ctx.now_s - age
    when = time.strftime("%a %d %b %Y %I:%M:%S %p UTC", time.gmtime(synced))
    return f"Last metadata expiration check: {hours}:{rest // 60:02d}:{rest % 60:02d} ago on {when}.\n"


def run(ctx: Context, args: list[str]) -> ToolReply:
    db = ctx.services.packages
    if db is None:
        return ToolReply("", "Error: Failed to download metadata for repo 'site-appstream'\n", 1)
    assume_yes = False
    words = []
    for arg in args:
        if arg in ("-y", "--assumeyes"):
            assume_yes = True
        elif arg in ("-q", "--quiet", "-C", "--cacheonly", "--nogpgcheck"):
            continue
        elif arg.startswith("-"):
            return ToolReply(
                "", f"usage: dnf [options] COMMAND\ndnf: error: unrecognized arguments: {arg}\n", 2
            )
        else:
            words.append(arg)
    if not words:
        return ToolReply("", "usage: dnf [options] COMMAND\nError: No command given.\n", 1)
    command, names = words[0], words[1:]
    if command == "list":
        return _list(ctx, db, names)
    if command in ("install", "reinstall"):
        return _transaction(ctx, db, command, names, assume_yes)
    return ToolReply("", f"No such command: {command}. Please use /usr/bin/dnf --help\n", 1)


def _list(ctx: Context, db: PackageDB, names: list[str]) -> ToolReply:
    scope, patterns = ("installed", names[1:]) if names[:1] == ["installed"] else ("all", names)
    installed = [p for p in db.packages(ctx.node) if not patterns or p.name in patterns]
    rows = [f"{p.name}.{p.arch:<32}"[:40].ljust(40) + f" {p.evr:<22} @{p.from_repo}\n" for p in installed]
    head = _metadata_line(ctx)
    if not rows and (scope == "installed" or patterns):
        return ToolReply(head, "Error: No matching Packages to list\n", 1)
    out = head + "Installed Packages\n" + "".join(sorted(rows))
    if scope == "all":
        others = [p for p in BY_NAME.values() if p.name not in {q.name for q in installed}]
        if others:
            out += "Available Packages\n" + "".join(
                f"{p.name}.{p.arch}".ljust(40) + f" {p.evr:<22} {REPO_ID}\n" for p in others
            )
    return ToolReply(out)


def _table(verb: str, packages: list[Package]) -> str:
    lines = [
        RULE,
        f" {'Package':<22} {'Architecture':<13} {'Version':<20} {'Repository':<15} {'Size':>5}\n",
        RULE,
        f"{verb}:\n",
    ]
    lines += [
        f" {p.name:<22} {p.arch:<13} {p.evr:<20} {REPO_ID:<15} {_size(p.size_kb // 3):>5}\n" for p in packages
    ]
    return "".join(lines)


def _transaction(ctx: Context, db: PackageDB, command: str, names: list[str], assume_yes: bool) -> ToolReply:
    head = _metadata_line(ctx)
    if not names:
        return ToolReply(head, f"Error: Need to pass a list of pkgs to {command}\n", 1)
    todo: list[Package] = []
    out, err = [head], []
    for name in names:
        package = BY_NAME.get(name) or next((p for p in BY_NAME.values() if name == p.nevra), None)
        if package is None:
            out.append(f"No match for argument: {name}\n")
            err.append(f"Error: Unable to find a match: {name}\n")
            continue
        installed = db.is_installed(ctx.node, package.name)
        if command == "install" and installed:
            out.append(f"Package {package.nevra} is already installed.\n")
        elif command == "reinstall" and not installed:
            out.append(f"Package {package.name} available, but not installed.\n")
            out.append(f"No match for argument: {name}\n")
            err.append("Error: No packages marked for reinstall.\n")
        else:
            todo.append(package)
    if err:
        return ToolReply("".join(out), err[-1], 1)
    out.append("Dependencies resolved.\n")
    if not todo:
        out.append("Nothing to do.\nComplete!\n")
        return ToolReply("".join(out))
    verb = "Installing" if command == "install" else "Reinstalling"
    out.append(_table(verb, todo))
    count = len(todo)
    plural = "Package" if count == 1 else "Packages"
    out.append("\nTransaction Summary\n" + RULE)
    if command == "install":
        out.append(f"Install  {count} {plural}\n")
    out.append(f"\nTotal size: {_size(sum(p.size_kb // 3 for p in todo))}\n")
    if command == "install":
        out.append(f"Installed size: {_size(sum(p.size_kb for p in todo))}\n")
    if not assume_yes:
        out.append("Is this ok [y/N]: Operation aborted.\n")
        return ToolReply("".join(out), "", 1)
    out.append(
        "Downloading Packages:\nRunning transaction check\nTransaction check succeeded.\n"
        "Running transaction test\nTransaction test succeeded.\nRunning transaction\n"
    )
    out.append(f"  {'Preparing':<17}: {'':<50} 1/1\n")
    total = count if command == "install" else 2 * count
    step = 0
    for package in todo:
        step += 1
        out.append(f"  {verb:<17}: {package.nevra:<50} {step}/{total}\n")
        try:
            db.lay_down(ctx.node, package)
        except NodeFileError as error:
            # What rpm says when a path it unpacks to is in the way (a directory, a full disk).
            why = error.strerror or "Input/output error"
            out.append(f"Error unpacking rpm package {package.nevra}\n")
            failed = (
                f"error: unpacking of archive failed on file {error.filename or package.nevra}: "
                f"cpio: open failed - {why}\nerror: {package.nevra}: install failed\n"
            )
            return ToolReply("".join(out), failed + "\nError: Transaction failed\n", 1)
    if command == "reinstall":
        for package in todo:
            step += 1
            out.append(f"  {'Cleanup':<17}: {package.nevra:<50} {step}/{total}\n")
    for index in range(1, total + 1):
        package = todo[(index - 1) % count]
        out.append(f"  {'Verifying':<17}: {package.nevra:<50} {index}/{total}\n")
    done = "Installed" if command == "install" else "Reinstalled"
    out.append(f"\n{done}:\n" + "".join(f"  {p.nevra}\n" for p in todo) + "\nComplete!\n")
    return ToolReply("".join(out))
