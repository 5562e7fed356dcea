"""munge, unmunge and remunge (munge 0.5.15) against the node's simulated munged.

A credential carries the encoding node, time, TTL, uid/gid, restrictions, payload and a digest of the
key munged loaded at start-up, so `unmunge` on a node whose munged holds another key fails with
`Invalid credential` (exit 14): the cross-node key mismatch a broken cluster shows. Without an
active munged on the node both fail as capture 00-no-config/munge_-n shows (exit 6). Texts and exit
codes: reference/slurm-22.05/02-munge. Registered as three programs: munge, unmunge, remunge.

Input is the agent's, so the work is linear in it and capped where munge 0.5.15 caps it: its
read_data_from_file() refuses input of MUNGE_MAXIMUM_REQ_LEN (1 MiB) or more, and libmunge refuses
to send a request longer than that. A credential that does not decode to what `munge` seals is
`Invalid credential`, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime

from hpcgym.controller.commands import munge_usage
from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.numbers import is_digits, to_int
from hpcgym.controller.services import ServiceManager
from hpcgym.controller.services.access import NodeFileError
from hpcgym.controller.services.munged import SOCKET, VERSION, MungedFacts
from hpcgym.controller.services.slurm import MUNGE

# A node fault that strikes once the output file is open (the others stop the open itself).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})

DEFAULT_TTL_S = 300
MAX_TTL_S = 3600
# munge_defs.h (0.5.15): the longest request munged takes, and so the most input the tools read.
MUNGE_MAXIMUM_REQ_LEN = 1048576
# m_msg.c's packed requests around the data: encode adds cipher, mac, zip and realm length (1 byte
# each), ttl, uid, gid and data length (4 bytes each); decode adds the data length and the NUL that
# ends the credential.
ENCODE_REQUEST_OVERHEAD = 20
DECODE_REQUEST_OVERHEAD = 5
MAX_ID = 0xFFFFFFFF
# munge's wire header: version 3, aes128 (4), sha256 (5), no compression (0), no realm; then a
# salt byte, fixed here, so that every credential starts `MUNGE:AwQFAAA` like the captured ones.
HEADER = b"\x03\x04\x05\x00\x00\x17"
# munge_err_t values the tools exit with.
EXIT_SNAFU, EXIT_BAD_LENGTH = 1, 3
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
    # The keystream is joined once and XORed as two integers: linear in the input, which is the
    # agent's (growing it by concatenation was quadratic: minutes under the controller lock).
    if not data:
        return b""
    blocks = (len(data) + 31) // 32
    stream = b"".join(hashlib.sha256(b"hpcgym-munge-%d" % counter).digest() for counter in range(blocks))
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream[: len(data)], "big")
    return mixed.to_bytes(len(data), "big")


def _read_too_long(prog: str, size: int) -> ToolReply | None:
    """read.c's limit on stdin and --input: its doubling buffer may not grow past 1 MiB.

    A buffer that fills exactly is grown before EOF is seen, so 1 MiB itself is refused too.
    """
    if size >= MUNGE_MAXIMUM_REQ_LEN:
        return ToolReply("", f"{prog}: Error: Exceeded maximum memory allocation\n", EXIT_SNAFU)
    return None


def _send_too_long(prog: str, length: int) -> ToolReply | None:
    """m_msg_send()'s limit on the request libmunge writes to munged's socket (exit EMUNGE_BAD_LENGTH)."""
    if length > MUNGE_MAXIMUM_REQ_LEN:
        limit = MUNGE_MAXIMUM_REQ_LEN
        message = f"Failed to send message: length of {length} exceeds max of {limit}"
        return ToolReply("", f"{prog}: Error: {message}\n", EXIT_BAD_LENGTH)
    return None


def _query_id(ctx: Context, text: str, group: bool) -> int | None:
    """query.c's query_uid/query_gid: a name the node knows, or any number in range."""
    if is_digits(text):
        number = to_int(text)
        return number if number is not None and number < MAX_ID else None
    user = ctx.find_user(text)
    if user is None:
        return None
    if not group:
        return user.uid
    return user.gid if user.group == text else None


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


def _no_munged(prog: str, socket: str) -> ToolReply:
    return ToolReply(
        "",
        f'{prog}: Error: Failed to access "{socket}": No such file or directory (Did you start munged?)\n',
        6,
    )


def _fixed(prog: str, found: dict[str, str]) -> ToolReply | None:
    if "help" in found:
        return ToolReply(
            {"munge": munge_usage.MUNGE_HELP, "unmunge": munge_usage.UNMUNGE_HELP}.get(
                prog, munge_usage.REMUNGE_HELP
            )
        )
    if "version" in found:
        return ToolReply(f"munge-{VERSION} (2022-06-22)\n")
    for key, text in (
        ("list-ciphers", munge_usage.CIPHERS),
        ("list-macs", munge_usage.MACS),
        ("list-zips", munge_usage.ZIPS),
    ):
        if key in found:
            return ToolReply(text)
    return None


def _path(ctx: Context, path: str) -> str:
    return posixpath.normpath(posixpath.join(ctx.cwd, path))


def _socket_ok(services: ServiceManager, node: str, found: dict[str, str]) -> str | None:
    socket = found.get("socket", SOCKET)
    return None if socket == SOCKET and services.systemd.is_active(node, MUNGE) else socket


def _prepare(
    ctx: Context,
    prog: str,
    args: list[str],
    options: tuple[tuple[str, str, bool], ...],
    *,
    find_socket: bool = True,
) -> ToolReply | tuple[dict[str, str], ServiceManager]:
    """What all three tools do first: parse, answer --help/--version/--list-*, find munged's socket.

    munge and unmunge read their input before they connect, so they find the socket themselves.
    """
    try:
        found = parse(prog, args, options)
    except MungeUsage as error:
        return ToolReply("", f"{error}\n", 1)
    fixed = _fixed(prog, found)
    if fixed is not None:
        return fixed
    services = ctx.services
    services.systemd.sync()
    if find_socket:
        no_munged = _find_socket(services, ctx.node, prog, found)
        if no_munged is not None:
            return no_munged
    return found, services


def _find_socket(services: ServiceManager, node: str, prog: str, found: dict[str, str]) -> ToolReply | None:
    bad_socket = _socket_ok(services, node, found)
    return None if bad_socket is None else _no_munged(prog, bad_socket)


def run_munge(ctx: Context, args: list[str]) -> ToolReply:
    ready = _prepare(ctx, "munge", args, MUNGE_OPTIONS, find_socket=False)
    if isinstance(ready, ToolReply):
        return ready
    found, services = ready
    ids: dict[str, int | None] = {}
    for key, group in (("restrict-uid", False), ("uid", False), ("restrict-gid", True), ("gid", True)):
        if key in found:
            ids[key] = _query_id(ctx, found[key], group)
            if ids[key] is None:
                kind = "group" if group else "user"
                return ToolReply("", f'munge: Error: Unrecognized {kind} "{found[key]}"\n', EXIT_SNAFU)
    # parse_cmdline() checks every option before munge reads or connects.
    try:
        ttl = int(found.get("ttl", "0"))
    except ValueError:
        return ToolReply("", f'munge: Error: Invalid time-to-live "{found["ttl"]}"\n', 1)
    ttl = DEFAULT_TTL_S if ttl == 0 else MAX_TTL_S if ttl < 0 else min(ttl, MAX_TTL_S)
    if "no-input" in found:
        raw = b""
    elif "string" in found:
        raw = found["string"].encode(errors="replace")
    else:
        if "input" in found:
            read = services.access.read(ctx.node, _path(ctx, found["input"]))
            if read is None:
                name = found["input"]
                message = f'Failed to read input from "{name}": No such file or directory'
                return ToolReply("", f"munge: Error: {message}\n", 1)
            raw = read
        else:
            raw = (ctx.stdin or "").encode(errors="replace")
        too_long = _read_too_long("munge", len(raw))
        if too_long is not None:
            return too_long
    # munge.c reads its input, then libmunge connects to munged and sends it.
    failed = _find_socket(services, ctx.node, "munge", found) or _send_too_long(
        "munge", ENCODE_REQUEST_OVERHEAD + len(raw)
    )
    if failed is not None:
        return failed
    payload = raw.decode(errors="replace")
    services.munge.serial += 1
    body = {
        "host": ctx.node,
        "addr": str(services.network.address(ctx.node) or "127.0.0.1"),
        "time": services.clocks.node_now_s(ctx.node),
        "ttl": ttl,
        "uid": ids.get("uid", ctx.user.uid),
        "gid": ids.get("gid", ctx.user.gid),
        "ruid": ids.get("restrict-uid"),
        "rgid": ids.get("restrict-gid"),
        "key": _key_tag(services, ctx.node),
        "payload": payload,
        "serial": services.munge.serial,
    }
    sealed = _seal(json.dumps(body, sort_keys=True).encode())
    cred = "MUNGE:" + base64.b64encode(HEADER + sealed).decode() + ":\n"
    if "output" in found and found["output"] != "-":
        try:
            services.access.write(ctx.node, _path(ctx, found["output"]), cred.encode())
        except NodeFileError as e:
            # munge.c's open_files/write_output, each a log_errno: the message, then strerror.
            what = "Failed to write to" if e.errno in _WRITE_ERRNOS else "Failed to open output file"
            return ToolReply("", f'munge: Error: {what} "{found["output"]}": {e.strerror}\n', EXIT_SNAFU)
        return ToolReply()
    return ToolReply(cred)


@dataclass
class Decoded:
    status: int
    text: str
    body: dict[str, object]


def _key_tag(services: ServiceManager, node: str) -> str:
    """What a credential carries of the key `node`'s munged runs with ("" where none runs)."""
    running = services.systemd.facts(node, MUNGE, MungedFacts)
    return running.key_sha256[:16] if running is not None else ""


def _is_credential_body(body: object) -> bool:
    """What `munge` seals, field by field; anything else was not made by a munged (forged, say)."""
    if not isinstance(body, dict):
        return False
    if not all(isinstance(body.get(key), str) for key in ("host", "addr", "key", "payload")):
        return False
    numbers = [body.get(key) for key in ("time", "ttl", "uid", "gid")]
    numbers += [body[key] for key in ("ruid", "rgid") if body.get(key) is not None]
    return all(type(number) is int and 0 <= number <= MAX_ID for number in numbers)


def _decode(services: ServiceManager, node: str, cred: str) -> Decoded | ToolReply:
    cred = cred.strip()
    if not cred.startswith("MUNGE:"):
        return ToolReply("", "unmunge: Error: Failed to match armor prefix\n", EXIT_BAD_CRED)
    try:
        raw = base64.b64decode(cred[len("MUNGE:") :].rstrip(":"), validate=True)
        if not raw.startswith(HEADER):
            raise ValueError("header")
        body = json.loads(_seal(raw[len(HEADER) :]))
    except (ValueError, binascii.Error, RecursionError):
        return ToolReply("", "unmunge: Error: Truncated cipher IV\n", EXIT_BAD_CRED)
    if not _is_credential_body(body) or body["key"] != _key_tag(services, node):
        return ToolReply("", "unmunge: Error: Invalid credential\n", EXIT_CRED_INVALID)
    # The replay hash keeps a digest of each credential (munged keys it on the MAC), not the
    # credential, which can be most of a megabyte of the agent's choosing.
    seen = services.munge.seen.setdefault(node, set())
    digest = hashlib.sha256(cred.encode(errors="replace")).hexdigest()
    # munged's window (dec.c): decode time within [encode - ttl, encode + ttl] of the decoder's clock.
    now, encoded, ttl = services.clocks.node_now_s(node), int(body["time"]), int(body["ttl"])
    if now < encoded - ttl:
        return Decoded(EXIT_REWOUND, "Rewound credential", body)
    if encoded + ttl < now:
        return Decoded(EXIT_EXPIRED, "Expired credential", body)
    if digest in seen:
        return Decoded(EXIT_REPLAYED, "Replayed credential", body)
    seen.add(digest)
    return Decoded(0, "Success", body)


def _stamp(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%d %H:%M:%S +0000") + f" ({time_s})"


def run_unmunge(ctx: Context, args: list[str]) -> ToolReply:
    ready = _prepare(ctx, "unmunge", args, UNMUNGE_OPTIONS, find_socket=False)
    if isinstance(ready, ToolReply):
        return ready
    found, services = ready
    if "input" in found:
        raw = services.access.read(ctx.node, _path(ctx, found["input"])) or b""
    else:
        raw = (ctx.stdin or "").encode(errors="replace")
    failed = (
        _read_too_long("unmunge", len(raw))
        or _find_socket(services, ctx.node, "unmunge", found)
        or _send_too_long("unmunge", DECODE_REQUEST_OVERHEAD + len(raw))
    )
    if failed is not None:
        return failed
    decoded = _decode(services, ctx.node, raw.decode(errors="replace"))
    if isinstance(decoded, ToolReply):
        return decoded
    body = decoded.body
    ruid, rgid = body.get("ruid"), body.get("rgid")
    if (ruid is not None and int(str(ruid)) != ctx.user.uid) or (
        rgid is not None and int(str(rgid)) != ctx.user.gid
    ):
        return ToolReply(
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
        ("DECODE_TIME", _stamp(services.clocks.node_now_s(ctx.node))),
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
        return ToolReply("", "", decoded.status)
    metadata = "".join(f"{key + ':':<17}{value}\n" for key, value in lines)
    out = metadata + "\n" + payload
    return ToolReply(out, "", decoded.status)


def run_remunge(ctx: Context, args: list[str]) -> ToolReply:
    ready = _prepare(ctx, "remunge", args, REMUNGE_OPTIONS)
    if isinstance(ready, ToolReply):
        return ready
    found, services = ready
    now = services.clocks.node_now_s(ctx.node)
    start = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S")
    end = datetime.fromtimestamp(now + 1, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if "num-creds" in found:
        count = found["num-creds"]
        return ToolReply(
            f"{start} Spawning 1 thread for encoding\n{start} Processing {count} credentials\n"
            f"{start} Processed {count} credentials in 0.001s (3281 creds/sec)\n\n"
            "WARNING: Results based on such a short time interval are of low accuracy\n\n"
        )
    return ToolReply(
        f"{start} Spawning 1 thread for encoding\n{start} Processing credentials for 1 second\n"
        f"{end} Processed 12615 credentials in 1.001s (12608 creds/sec)\n"
    )
