"""mount and umount as Rocky 9 ships them (util-linux 2.37.4, NFS through nfs-utils' mount.nfs4 helper).

Inside a node nothing may mount (no CAP_SYS_ADMIN, and seccomp refuses the mount API), so these two
tools ask the runtime to change the node's view of its NFS shares (`/home` and `/apps` from the
login node): unmounting takes a stale handle away and shows the empty local mount point; mounting
shows the live share again. Every other mount in the table is the node's fixed system layout.
Texts follow util-linux's libmount messages (`mount: <target>: can't find in /etc/fstab.`,
`umount: <target>: not mounted.`) and nfs-utils' helper (`mount.nfs4: <dir> is busy or already
mounted`); exit codes are libmount's: 1 usage, 32 mount failure. Registered as `mount` and `umount`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.usage import read_help
from hpcgym.errors import ControllerError

UTIL_LINUX = "2.37.4"
LIBMOUNT_FEATURES = "selinux, smack, btrfs, namespaces, assert, debug"
EX_USAGE = 1
EX_FAIL = 32
NFS_TYPES = ("nfs", "nfs4")
EXPORT_DIR = "/export"
FSTAB = "/etc/fstab"
NFS_OPTIONS = (
    "rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,"
    "sec=sys,clientaddr={client},local_lock=none,addr={server}"
)
# The local mounts of a Rocky 9.5 node installed on LVM (what `mount` lists before the NFS shares).
SYSTEM_MOUNTS = (
    ("proc", "/proc", "proc", "rw,nosuid,nodev,noexec,relatime"),
    ("sysfs", "/sys", "sysfs", "rw,nosuid,nodev,noexec,relatime,seclabel"),
    ("devtmpfs", "/dev", "devtmpfs", "rw,nosuid,seclabel,size=4096k,nr_inodes=8192000,mode=755,inode64"),
    ("securityfs", "/sys/kernel/security", "securityfs", "rw,nosuid,nodev,noexec,relatime"),
    ("tmpfs", "/dev/shm", "tmpfs", "rw,nosuid,nodev,seclabel,inode64"),
    ("devpts", "/dev/pts", "devpts", "rw,nosuid,noexec,relatime,seclabel,gid=5,mode=620,ptmxmode=000"),
    ("tmpfs", "/run", "tmpfs", "rw,nosuid,nodev,seclabel,size=13106468k,nr_inodes=819200,mode=755,inode64"),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        "rw,nosuid,nodev,noexec,relatime,seclabel,nsdelegate,memory_recursiveprot",
    ),
    (
        "/dev/mapper/rl-root",
        "/",
        "xfs",
        "rw,relatime,seclabel,attr2,inode64,logbufs=8,logbsize=32k,noquota",
    ),
    ("/dev/sda1", "/boot", "xfs", "rw,relatime,seclabel,attr2,inode64,logbufs=8,logbsize=32k,noquota"),
    ("sunrpc", "/var/lib/nfs/rpc_pipefs", "rpc_pipefs", "rw,relatime"),
)


@runtime_checkable
class ShareAccess(Protocol):
    """What the runtime offers these tools: a node's NFS share points and their mounted state."""

    def share_points(self, node: str) -> tuple[str, ...]: ...

    def is_share_mounted(self, node: str, point: str) -> bool: ...

    def mount_share(self, node: str, point: str) -> None: ...

    def unmount_share(self, node: str, point: str) -> None: ...


@dataclass(frozen=True)
class FstabEntry:
    spec: str
    target: str
    fstype: str
    options: str


@dataclass
class Options:
    all: bool = False
    types: str | None = None
    options: str = ""
    force: bool = False
    lazy: bool = False
    bind: bool = False
    help: bool = False
    version: bool = False


def _shares(ctx: Context) -> ShareAccess:
    access = ctx.services.access
    if not isinstance(access, ShareAccess):
        raise ControllerError(
            "this node access cannot change NFS mounts",
            hint="use the runtime's ClusterNodes or MemoryNodeAccess",
        )
    return access


def read_fstab(ctx: Context) -> list[FstabEntry]:
    raw = ctx.services.access.read(ctx.node, FSTAB) or b""
    entries = []
    for line in raw.decode(errors="replace").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3:
            entries.append(FstabEntry(fields[0], fields[1], fields[2], fields[3] if len(fields) > 3 else ""))
    return entries


def export_of(ctx: Context, point: str) -> str:
    return f"{ctx.services.controller_host}:{EXPORT_DIR}{point}"


def mount_table(ctx: Context) -> list[tuple[str, str, str, str]]:
    """(source, target, type, options) of every mount on the node, in mount order."""
    services = ctx.services
    shares = _shares(ctx)
    client = services.network.address(ctx.node)
    server = services.controller_addr(ctx.node)
    options = NFS_OPTIONS.format(client=client or "0.0.0.0", server=server or "0.0.0.0")
    rows = list(SYSTEM_MOUNTS)
    for point in shares.share_points(ctx.node):
        if shares.is_share_mounted(ctx.node, point):
            rows.append((export_of(ctx, point), point, "nfs4", options))
    return rows


def _parse(
    prog: str, args: list[str], short_with_arg: str, short_flags: str
) -> tuple[Options, list[str]] | ToolReply:
    """util-linux's getopt_long: clustered short flags, `-t TYPE`/`-tTYPE`, long options, `--`."""
    opts = Options()
    positional: list[str] = []
    longs = {
        "--all": "a",
        "--types": "t",
        "--options": "o",
        "--force": "f",
        "--lazy": "l",
        "--help": "h",
        "--version": "V",
        "--verbose": "v",
        "--show-labels": "l",
        "--bind": "B",
        "--rbind": "R",
        "--move": "M",
    }
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            letter = longs.get(name)
            if letter is None:
                return _bad(prog, f"unrecognized option '{arg}'")
            if letter in short_with_arg:
                if not eq:
                    if i >= len(args):
                        return _bad(prog, f"option '{name}' requires an argument")
                    value = args[i]
                    i += 1
                _set(opts, prog, letter, value)
            else:
                _set(opts, prog, letter, "")
            continue
        if arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                letter = arg[j]
                j += 1
                if letter in short_with_arg:
                    value = arg[j:]
                    if not value:
                        if i >= len(args):
                            return _bad(prog, f"option requires an argument -- '{letter}'")
                        value = args[i]
                        i += 1
                    _set(opts, prog, letter, value)
                    break
                if letter not in short_flags:
                    return _bad(prog, f"invalid option -- '{letter}'")
                _set(opts, prog, letter, "")
            continue
        positional.append(arg)
    return opts, positional


def _parse_or_answer(
    prog: str, args: list[str], short_with_arg: str, short_flags: str, usage: str
) -> tuple[Options, list[str]] | ToolReply:
    """`_parse`, then the replies mount and umount give before anything else.

    Those are a usage error, `--help` (the usage text) and `--version`.
    """
    parsed = _parse(prog, args, short_with_arg, short_flags)
    if isinstance(parsed, ToolReply):
        return parsed
    if parsed[0].help:
        return ToolReply(usage)
    if parsed[0].version:
        return _version(prog)
    return parsed


def _set(opts: Options, prog: str, letter: str, value: str) -> None:
    if letter == "a":
        opts.all = True
    elif letter == "t":
        opts.types = value
    elif letter == "o":
        opts.options = f"{opts.options},{value}" if opts.options else value
    elif letter == "f":
        opts.force = True
    elif letter == "l" and prog == "umount":
        opts.lazy = True
    elif letter in "BRM" and prog == "mount":
        opts.bind = True
    elif letter == "h":
        opts.help = True
    elif letter == "V":
        opts.version = True


def _bad(prog: str, text: str) -> ToolReply:
    return ToolReply("", f"{prog}: {text}\nTry '{prog} --help' for more information.\n", EX_USAGE)


def _version(prog: str) -> ToolReply:
    return ToolReply(f"{prog} from util-linux {UTIL_LINUX} (libmount {UTIL_LINUX}: {LIBMOUNT_FEATURES})\n")


def _type_matches(types: str | None, fstype: str) -> bool:
    if not types:
        return True
    if types.startswith("no"):
        return fstype not in [t.removeprefix("no") for t in types.split(",")]
    return fstype in types.split(",")


def _path(ctx: Context, arg: str) -> str:
    if ":" in arg and not arg.startswith("/"):
        return arg  # an NFS source, server:/path
    return posixpath.normpath(posixpath.join(ctx.cwd, arg))


# ---- mount --------------------------------------------------------------------------------------

MOUNT_USAGE = read_help("mount-help.txt")


def run_mount(ctx: Context, args: list[str]) -> ToolReply:
    parsed = _parse_or_answer("mount", args, "tTOoLUN", "afFcnrsvwVhlBMRi", MOUNT_USAGE)
    if isinstance(parsed, ToolReply):
        return parsed
    opts, positional = parsed
    if opts.bind and positional:
        # Bind and move mounts need CAP_SYS_ADMIN, which a node's root does not hold here: mount(2)
        # fails with EPERM, which libmount prints as a permission error.
        return ToolReply("", f"mount: {_path(ctx, positional[-1])}: permission denied.\n", EX_FAIL)
    if opts.all:
        return _mount_all(ctx, opts)
    if not positional:
        rows = [row for row in mount_table(ctx) if _type_matches(opts.types, row[2])]
        return ToolReply(
            "".join(f"{src} on {tgt} type {kind} ({options})\n" for src, tgt, kind, options in rows)
        )
    if len(positional) == 1:
        wanted = _path(ctx, positional[0])
        entry = next((e for e in read_fstab(ctx) if wanted in (e.target, e.spec)), None)
        if entry is None:
            return ToolReply("", f"mount: {wanted}: can't find in {FSTAB}.\n", EX_USAGE)
        return _mount_entry(ctx, entry, opts)
    if len(positional) == 2:
        source, target = positional[0], _path(ctx, positional[1])
        fstype = opts.types or ("nfs4" if ":" in source else "")
        return _mount_entry(ctx, FstabEntry(source, target, fstype, opts.options), opts)
    return _bad("mount", "bad usage")


def _mount_all(ctx: Context, opts: Options) -> ToolReply:
    shares = _shares(ctx)
    errors: list[ToolReply] = []
    for entry in read_fstab(ctx):
        if "noauto" in entry.options.split(",") or not _type_matches(opts.types, entry.fstype):
            continue
        if entry.fstype not in NFS_TYPES:
            continue  # the local filesystems are mounted at boot
        if entry.target in shares.share_points(ctx.node) and shares.is_share_mounted(ctx.node, entry.target):
            continue  # -a skips what is already mounted
        reply = _mount_entry(ctx, entry, opts)
        if reply.exit_code:
            errors.append(reply)
    return ToolReply("", "".join(r.stderr for r in errors), EX_FAIL if errors else 0)


def _mount_entry(ctx: Context, entry: FstabEntry, opts: Options) -> ToolReply:
    services = ctx.services
    shares = _shares(ctx)
    fstype = opts.types or entry.fstype
    if fstype not in NFS_TYPES:
        if any(entry.target == row[1] for row in SYSTEM_MOUNTS):
            text = f"mount: {entry.target}: {entry.spec} already mounted on {entry.target}.\n"
            return ToolReply("", text, EX_FAIL)
        return ToolReply("", f"mount: {entry.target}: unknown filesystem type '{fstype}'.\n", EX_FAIL)
    helper = f"mount.{fstype}"
    if not services.access.stat(ctx.node, entry.target):
        return ToolReply("", f"{helper}: mount point {entry.target} does not exist\n", EX_FAIL)
    host, _, path = entry.spec.partition(":")
    if not path:
        return ToolReply("", f"{helper}: remote share not in 'host:dir' format\n", EX_FAIL)
    server = services.network.resolve(ctx.node, host)
    if server is None:
        return ToolReply(
            "", f"{helper}: Failed to resolve server {host}: Name or service not known\n", EX_FAIL
        )
    if server != services.controller_addr(ctx.node) or not services.can_reach_controller(ctx.node):
        return ToolReply("", f"{helper}: Connection timed out\n", EX_FAIL)
    point = posixpath.normpath(entry.target)
    if point not in shares.share_points(ctx.node) or posixpath.normpath(path) != f"{EXPORT_DIR}{point}":
        return ToolReply("", f"{helper}: access denied by server while mounting {entry.spec}\n", EX_FAIL)
    remount = "remount" in (opts.options or "").split(",")
    if shares.is_share_mounted(ctx.node, point):
        if remount:
            return ToolReply()  # new options on the same superblock: a stale handle stays stale
        return ToolReply("", f"{helper}: {point} is busy or already mounted\n", EX_FAIL)
    if remount:
        return ToolReply("", f"mount: {point}: mount point not mounted or bad option.\n", EX_FAIL)
    shares.mount_share(ctx.node, point)
    return ToolReply()


# ---- umount -------------------------------------------------------------------------------------

UMOUNT_USAGE = read_help("umount-help.txt")


def run_umount(ctx: Context, args: list[str]) -> ToolReply:
    parsed = _parse_or_answer("umount", args, "tOoN", "afcdilnRrvVhqA", UMOUNT_USAGE)
    if isinstance(parsed, ToolReply):
        return parsed
    opts, positional = parsed
    shares = _shares(ctx)
    if opts.all:
        # Local filesystems stay (they are busy); every NFS mount of the node goes.
        if _type_matches(opts.types, "nfs4"):
            for point in shares.share_points(ctx.node):
                if shares.is_share_mounted(ctx.node, point):
                    shares.unmount_share(ctx.node, point)
        return ToolReply()
    if not positional:
        return _bad("umount", "bad usage")
    stderr, code = "", 0
    for arg in positional:
        reply = _umount_one(ctx, _path(ctx, arg))
        stderr += reply.stderr
        code = reply.exit_code or code
    return ToolReply("", stderr, code)


def _umount_one(ctx: Context, target: str) -> ToolReply:
    shares = _shares(ctx)
    for point in shares.share_points(ctx.node):
        if target in (point, export_of(ctx, point)) and shares.is_share_mounted(ctx.node, point):
            shares.unmount_share(ctx.node, point)
            return ToolReply()
    if any(target == row[1] for row in SYSTEM_MOUNTS):
        return ToolReply("", f"umount: {target}: target is busy.\n", EX_FAIL)
    if ":" in target or ctx.services.access.stat(ctx.node, target) is not None:
        return ToolReply("", f"umount: {target}: not mounted.\n", EX_FAIL)
    return ToolReply("", f"umount: {target}: no mount point specified.\n", EX_FAIL)
