"""munge, unmunge and remunge (munge 0.5.15) against the node's simulated munged.

A credential carries the encoding node, time, TTL, uid/gid, restrictions, payload and a digest of the
key munged loaded at start-up, so `unmunge` on a node whose munged holds another key fails with
`Invalid credential` (exit 14): the cross-node key mismatch a broken cluster shows. Without an
active munged on the node both fail as capture 00-no-config/munge_-n shows (exit 6). Texts and exit
codes: reference/slurm-22.05/02-munge. Registered as three programs: munge, unmunge, remunge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime

from hpcgym.controller.commands import munge_usage
from hpcgym.controller.commands.base import Context, Reply
from hpcgym.controller.services import ServiceManager, services_of
from hpcgym.controller.services.munged import SOCKET, VERSION
from hpcgym.controller.services.slurm import MUNGE

DEFAULT_TTL_S = 300
MAX_TTL_S = 3600
# munge's wire header: version 3, aes128 (4), sha256 (5), no compression (0), no realm; then a
# salt byte, fixed here, so that every credential starts `MUNGE:AwQFAAA` like the captured ones.
HEADER = b"\x03\x04\x05\x00\x00\x17"
# munge_err_t values the tools exit with.
EXIT_SOCKET, EXIT_BAD_CRED, EXIT_CRED_INVALID, EXIT_EXPIRED, EXIT_REWOUND = 6, 8, 14, 15, 16
EXIT_REPLAYED, EXIT_UNAUTHORIZED = 17, 18
NAMES = {0: "root", 65534: "nobody"}
# (short, long, takes a value)
MUNGE_OPTIONS = (
    ("h", "help", False), ("L", "license", False), ("V", "version", False), ("n", "no-input", False),
    ("s", "string", True), ("i", "input", True), ("o", "output", True), ("c", "cipher", True),
    ("C", "list-ciphers", False), ("m", "mac", True), ("M", "list-macs", False), ("z", "zip", True),
    ("Z", "list-zips", False), ("u", "restrict-uid", True), ("U", "uid", True), ("g", "restrict-gid", True),
    ("G", "gid", True), ("t", "ttl", True), ("S", "socket", True),
)  # fmt: skip
UNMUNGE_OPTIONS = (
    ("h", "help", False), ("L", "license", False), ("V", "version", False), ("i", "input", True),
    ("n", "no-output", False), ("m", "metadata", True), ("o", "output", True), ("k", "keys", True),
    ("K", "list-keys", False), ("N", "numeric", False), ("S", "socket", True),
)  # fmt: skip
REMUNGE_OPTIONS = (
    ("h", "help", False), ("L", "license", False), ("V", "version", False), ("q", "quiet", False),
    ("c", "cipher", True), ("C", "list-ciphers", False), ("m", "mac", True), ("M", "list-macs", False),
    ("z", "zip", True), ("Z", "list-zips", False), ("e", "encode", False), ("d", "decode", False),
    ("l", "length", True), ("u", "restrict-uid", True), ("g", "restrict-gid", True), ("t", "ttl", True),
    ("S", "socket", True), ("D", "duration", True), ("N", "num-creds", True), ("T", "num-threads", True),
    ("W", "warn-time", True),
)  # fmt: skip


def _seal(data: bytes) -> bytes:
    # Real credentials are encrypted; ours are only scrambled (XOR with a fixed keystream, its own
    # inverse) so that they look as opaque as real ones. Validity is checked against munged's key.
    stream = b""
    counter = 0
    while len(stream) < len(data):
        stream += hashlib.sha256(b"hpcgym-munge-%d" % counter).digest()
        counter += 1
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


class MungeUsage(Exception):
    pass


def parse(prog: str, args: list[str], table: tuple[tuple[str, str, bool], ...]) -> dict[str, str]:
    """The munge tools' own getopt loop: its errors are `PROG: Error: ...`, not glibc's."""
    shorts = {short: (long, value) for short, long, value in table}
    longs = {long: value for _, long, value in table}
    found: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name not in longs:
                raise MungeUsage(f'{prog}: Error: Invalid option "{arg}"')
            if longs[name] and not eq:
                if index >= len(args):
                    raise MungeUsage(f'{prog}: Error: Missing argument for option "{arg}"')
                value = args[index]
                index += 1
            found[name] = value
        elif arg.startswith("-") and len(arg) > 1:
            letter = arg[1]
            if letter not in shorts:
                raise MungeUsage(f'{prog}: Error: Invalid option "-{letter}"')
            long, takes = shorts[letter]
            value = arg[2:]
            if takes and not value:
                if index >= len(args):
                    raise MungeUsage(f'{prog}: Error: Missing argument for option "-{letter}"')
                value = args[index]
                index += 1
            found[long] = value
        else:
            raise MungeUsage(f'{prog}: Error: Unrecognized argument "{arg}"')
    return found


def _no_munged(prog: str, socket: str) -> Reply:
    return Reply(
        "",
        f'{prog}: Error: Failed to access "{socket}": No such file or directory (Did you start munged?)\n',
        6,
    )


def _fixed(prog: str, found: dict[str, str]) -> Reply | None:
    if "help" in found:
        return Reply(
            {"munge": munge_usage.MUNGE_HELP, "unmunge": munge_usage.UNMUNGE_HELP}.get(
                prog, munge_usage.REMUNGE_HELP
            )
        )
    if "version" in found:
        return Reply(f"munge-{VERSION} (2022-06-22)\n")
    for key, text in (
        ("list-ciphers", munge_usage.CIPHERS),
        ("list-macs", munge_usage.MACS),
        ("list-zips", munge_usage.ZIPS),
    ):
        if key in found:
            return Reply(text)
    return None


def _path(ctx: Context, path: str) -> str:
    return posixpath.normpath(posixpath.join(ctx.cwd, path))


def _socket_ok(services: ServiceManager, node: str, found: dict[str, str]) -> str | None:
    socket = found.get("socket", SOCKET)
    return None if socket == SOCKET and services.is_active(node, MUNGE) else socket


def _prepare(
    ctx: Context, prog: str, args: list[str], options: tuple[tuple[str, str, bool], ...]
) -> Reply | tuple[dict[str, str], ServiceManager]:
    """What all three tools do first: parse, answer --help/--version/--list-*, find munged's socket."""
    try:
        found = parse(prog, args, options)
    except MungeUsage as error:
        return Reply("", f"{error}\n", 1)
    fixed = _fixed(prog, found)
    if fixed is not None:
        return fixed
    services = services_of(ctx)
    services.sync()
    bad_socket = _socket_ok(services, ctx.node, found)
    if bad_socket is not None:
        return _no_munged(prog, bad_socket)
    return found, services


def run_munge(ctx: Context, args: list[str]) -> Reply:
    ready = _prepare(ctx, "munge", args, MUNGE_OPTIONS)
    if isinstance(ready, Reply):
        return ready
    found, services = ready
    if "no-input" in found:
        payload = ""
    elif "string" in found:
        payload = found["string"]
    elif "input" in found:
        raw = services.access.read(ctx.node, _path(ctx, found["input"]))
        if raw is None:
            return Reply(
                "",
                f'munge: Error: Failed to read input from "{found["input"]}": No such file or directory\n',
                1,
            )
        payload = raw.decode(errors="replace")
    else:
        payload = ctx.stdin or ""
    try:
        ttl = int(found.get("ttl", "0"))
    except ValueError:
        return Reply("", f'munge: Error: Invalid time-to-live "{found["ttl"]}"\n', 1)
    ttl = DEFAULT_TTL_S if ttl == 0 else MAX_TTL_S if ttl < 0 else min(ttl, MAX_TTL_S)
    services.munge_serial += 1
    body = {
        "host": ctx.node,
        "addr": str(services.network.address(ctx.node) or "127.0.0.1"),
        "time": services.node_now_s(ctx.node),
        "ttl": ttl,
        "uid": int(found.get("uid", ctx.user.uid)),
        "gid": int(found.get("gid", ctx.user.gid)),
        "ruid": found.get("restrict-uid"),
        "rgid": found.get("restrict-gid"),
        "key": services.memo(ctx.node, MUNGE).get("key_sha256", "")[:16],
        "payload": payload,
        "serial": services.munge_serial,
    }
    sealed = _seal(json.dumps(body, sort_keys=True).encode())
    cred = "MUNGE:" + base64.b64encode(HEADER + sealed).decode() + ":\n"
    if "output" in found and found["output"] != "-":
        services.access.write(ctx.node, _path(ctx, found["output"]), cred.encode())
        return Reply()
    return Reply(cred)


@dataclass
class Decoded:
    status: int
    text: str
    body: dict[str, object]


def _decode(services: ServiceManager, node: str, cred: str) -> Decoded | Reply:
    cred = cred.strip()
    if not cred.startswith("MUNGE:"):
        return Reply("", "unmunge: Error: Failed to match armor prefix\n", EXIT_BAD_CRED)
    try:
        raw = base64.b64decode(cred[len("MUNGE:") :].rstrip(":"), validate=True)
        if not raw.startswith(HEADER):
            raise ValueError("header")
        body = json.loads(_seal(raw[len(HEADER) :]))
    except (ValueError, binascii.Error):
        return Reply("", "unmunge: Error: Truncated cipher IV\n", EXIT_BAD_CRED)
    if body.get("key") != services.memo(node, MUNGE).get("key_sha256", "")[:16]:
        return Reply("", "unmunge: Error: Invalid credential\n", EXIT_CRED_INVALID)
    seen = services.munge_seen.setdefault(node, set())
    # munged's window (dec.c): decode time within [encode - ttl, encode + ttl] of the decoder's clock.
    now, encoded, ttl = services.node_now_s(node), int(body["time"]), int(body["ttl"])
    if now < encoded - ttl:
        return Decoded(EXIT_REWOUND, "Rewound credential", body)
    if encoded + ttl < now:
        return Decoded(EXIT_EXPIRED, "Expired credential", body)
    if cred in seen:
        return Decoded(EXIT_REPLAYED, "Replayed credential", body)
    seen.add(cred)
    return Decoded(0, "Success", body)


def _stamp(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%d %H:%M:%S +0000") + f" ({time_s})"


def run_unmunge(ctx: Context, args: list[str]) -> Reply:
    ready = _prepare(ctx, "unmunge", args, UNMUNGE_OPTIONS)
    if isinstance(ready, Reply):
        return ready
    found, services = ready
    if "input" in found:
        raw = services.access.read(ctx.node, _path(ctx, found["input"]))
        cred = raw.decode(errors="replace") if raw is not None else ""
    else:
        cred = ctx.stdin or ""
    decoded = _decode(services, ctx.node, cred)
    if isinstance(decoded, Reply):
        return decoded
    body = decoded.body
    ruid, rgid = body.get("ruid"), body.get("rgid")
    if (ruid is not None and int(str(ruid)) != ctx.user.uid) or (
        rgid is not None and int(str(rgid)) != ctx.user.gid
    ):
        return Reply(
            "",
            f"unmunge: Error: Unauthorized credential for client UID={ctx.user.uid} GID={ctx.user.gid}\n",
            EXIT_UNAUTHORIZED,
        )
    uid, gid = int(str(body["uid"])), int(str(body["gid"]))
    payload = str(body["payload"])
    lines = [
        ("STATUS", f"{decoded.text} ({decoded.status})"),
        ("ENCODE_HOST", f"{body['host']} ({body['addr']})"),
        ("ENCODE_TIME", _stamp(int(str(body["time"])))),
        ("DECODE_TIME", _stamp(services.node_now_s(ctx.node))),
        ("TTL", str(body["ttl"])),
        ("CIPHER", "aes128 (4)"),
        ("MAC", "sha256 (5)"),
        ("ZIP", "none (0)"),
        ("UID", f"{NAMES.get(uid, str(uid))} ({uid})"),
        ("GID", f"{NAMES.get(gid, str(gid))} ({gid})"),
        ("LENGTH", str(len(payload.encode()))),
    ]
    if "keys" in found:
        wanted = found["keys"].replace(",", " ").upper().split()
        lines = [(key, value) for key, value in lines if key in wanted]
    if "no-output" in found:
        return Reply("", "", decoded.status)
    metadata = "".join(f"{key + ':':<17}{value}\n" for key, value in lines)
    out = metadata + "\n" + payload
    return Reply(out, "", decoded.status)


def run_remunge(ctx: Context, args: list[str]) -> Reply:
    ready = _prepare(ctx, "remunge", args, REMUNGE_OPTIONS)
    if isinstance(ready, Reply):
        return ready
    found, services = ready
    now = services.node_now_s(ctx.node)
    start = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S")
    end = datetime.fromtimestamp(now + 1, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if "num-creds" in found:
        count = found["num-creds"]
        return Reply(
            f"{start} Spawning 1 thread for encoding\n{start} Processing {count} credentials\n"
            f"{start} Processed {count} credentials in 0.001s (3281 creds/sec)\n\n"
            "WARNING: Results based on such a short time interval are of low accuracy\n\n"
        )
    return Reply(
        f"{start} Spawning 1 thread for encoding\n{start} Processing credentials for 1 second\n"
        f"{end} Processed 12615 credentials in 1.001s (12608 creds/sec)\n"
    )
