"""curl 7.76.1 (Rocky 9) against the simulated cluster: the portal's httpd, or nothing listening.

A URL resolves through the asking node's /etc/hosts (`localhost` is the node itself); the packet
goes where the node's simulated routes let it; a node answers on a port only if its httpd unit is
active and listens there. Flags: -I/--head, -i/--include, -s/--silent, -S/--show-error, -o/--output,
-w/--write-out, -v/--verbose, -L/--location, -u/--user, -f/--fail, -X/--request, -H/--header, -k,
-m/--max-time, --connect-timeout. Errors print curl's text (`curl: (7) Failed to connect to ...`)
and exit with its code.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.numbers import to_int
from hpcgym.controller.services import ServiceManager
from hpcgym.controller.services.access import NodeFileError
from hpcgym.controller.services.httpd import HttpdFacts, HttpResponse, respond
from hpcgym.controller.services.manager import HTTPD

VERSION = "7.76.1"
HINT = "curl: try 'curl --help' or 'curl --manual' for more information\n"
MAX_REDIRECTS = 50
OPTIONS = (
    Option("head", "I", "head"),
    Option("include", "i", "include"),
    Option("silent", "s", "silent"),
    Option("show-error", "S", "show-error"),
    Option("output", "o", "output", Arg.REQUIRED),
    Option("write-out", "w", "write-out", Arg.REQUIRED),
    Option("verbose", "v", "verbose"),
    Option("location", "L", "location"),
    Option("user", "u", "user", Arg.REQUIRED),
    Option("fail", "f", "fail"),
    Option("request", "X", "request", Arg.REQUIRED),
    Option("header", "H", "header", Arg.REQUIRED),
    Option("insecure", "k", "insecure"),
    Option("max-time", "m", "max-time", Arg.REQUIRED),
    Option("connect-timeout", None, "connect-timeout", Arg.REQUIRED),
    Option("ipv4", "4", "ipv4"),
    Option("noproxy", None, "noproxy", Arg.REQUIRED),
)


def _unknown_option(text: str) -> str:
    """Curl names a flag it does not know in its own words, not getopt's."""
    if "unrecognized option" not in text and "invalid option" not in text:
        return text
    flag = text.split("'")[1] if "'" in text else text.rsplit(" ", 1)[-1]
    flag = flag if flag.startswith("-") else f"-{flag}"
    return f"curl: option {flag}: is unknown"


PROLOGUE = Prologue("curl", OPTIONS, hint=HINT, error_exit=2, reword=_unknown_option)
_URL = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)?(?P<host>[^/:?#]*)(?::(?P<port>[0-9]*))?(?P<path>[^?#]*)"
)
_WRITE_OUT = re.compile(r"%\{([a-z_]+)\}|%%|\\[nrt\\]")
DEFAULT_PORTS = {"http": 80, "https": 443}


class CurlError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass
class Transfer:
    """Everything one curl run produced, for the write-out variables and the final print."""

    url: str
    response: HttpResponse | None = None
    verbose: list[str] = field(default_factory=list)
    redirect_url: str = ""


def _split(url: str) -> tuple[str, str, int, str]:
    match = _URL.match(url)
    assert match is not None  # the pattern matches any string
    scheme = (match["scheme"] or "http").lower()
    if scheme not in DEFAULT_PORTS:
        raise CurlError(1, f'Protocol "{scheme}" not supported or disabled in libcurl')
    host = match["host"]
    if not host:
        raise CurlError(3, "URL using bad/illegal format or missing URL")
    port = to_int(match["port"], max_digits=5) if match["port"] else DEFAULT_PORTS[scheme]
    if port is None or port > 65535:
        raise CurlError(3, "URL using bad/illegal format or missing URL")
    return scheme, host, port, match["path"] or "/"


def _fetch(services: ServiceManager, node: str, transfer: Transfer, method: str, authorized: bool) -> None:
    scheme, host, port, path = _split(transfer.url)
    addr = services.network.resolve(node, host)
    if addr is None:
        raise CurlError(6, f"Could not resolve host: {host}")
    shown = "::1" if host == "localhost" else str(addr)
    transfer.verbose.append(f"*   Trying {shown}:{port}...")
    if not services.network.can_reach(node, addr):
        transfer.verbose.append(f"* connect to {shown} port {port} failed: Network is unreachable")
        raise CurlError(7, f"Failed to connect to {host} port {port}: Network is unreachable")
    target = node if addr.is_loopback else services.node_at(addr)
    httpd = (
        services.systemd.facts(target, HTTPD, HttpdFacts)
        if target is not None and services.systemd.is_active(target, HTTPD)
        else None
    )
    if httpd is None or port not in httpd.config.ports or scheme == "https":
        transfer.verbose.append(f"* connect to {shown} port {port} failed: Connection refused")
        if host == "localhost":
            # localhost is ::1 and 127.0.0.1 in /etc/hosts; curl tries both before giving up.
            transfer.verbose.append(f"*   Trying 127.0.0.1:{port}...")
            transfer.verbose.append(f"* connect to 127.0.0.1 port {port} failed: Connection refused")
        raise CurlError(7, f"Failed to connect to {host} port {port}: Connection refused")
    host_header = host if port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    response = respond(
        httpd.config,
        path=path,
        host_header=host_header,
        upstream_ok=services.is_portal_upstream_healthy(),
        authorized=authorized,
        now_s=services.clocks.now_s,
    )
    transfer.verbose += [
        f"* Connected to {host} ({shown}) port {port} (#0)",
        f"> {method} {path} HTTP/1.1\r",
        f"> Host: {host_header}\r",
        f"> User-Agent: curl/{VERSION}\r",
        "> Accept: */*\r",
        ">\r",
        "* Mark bundle as not supporting multiuse",
        f"< HTTP/1.1 {response.status} {response.reason}\r",
        *(f"< {name}: {value}\r" for name, value in response.headers),
        "<\r",
    ]
    transfer.response = response
    transfer.redirect_url = next((v for k, v in response.headers if k == "Location"), "")


def _head_block(response: HttpResponse) -> str:
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return "".join(f"{line}\r\n" for line in lines) + "\r\n"


def _write_out(fmt: str, transfer: Transfer) -> tuple[str, str]:
    response = transfer.response
    values = {
        "http_code": f"{response.status:03d}" if response else "000",
        "response_code": f"{response.status:03d}" if response else "000",
        "size_download": str(len(response.body.encode())) if response else "0",
        "content_type": next(
            (v for k, v in (response.headers if response else []) if k == "Content-Type"), ""
        ),
        "url_effective": transfer.url,
        "redirect_url": transfer.redirect_url,
        "num_redirects": "0",
        "time_total": "0.001512",
        "time_connect": "0.000231",
        "remote_ip": "127.0.0.1",
        "remote_port": "80",
    }
    errors = ""

    def expand(match: re.Match[str]) -> str:
        nonlocal errors
        text = match.group(0)
        if text == "%%":
            return "%"
        if text.startswith("\\"):
            return {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\"}[text]
        name = match.group(1)
        if name not in values:
            errors += f"curl: unknown --write-out variable: '{name}'\n"
            return ""
        return values[name]

    return _WRITE_OUT.sub(expand, fmt), errors


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    flags, values, urls = parsed.keys, dict(parsed.found), parsed.operands
    silent = "silent" in flags and "show-error" not in flags
    if not urls:
        return ToolReply("", "" if silent else f"curl: no URL specified!\n{HINT}", 2)
    services = ctx.services
    method = values.get("request") or ("HEAD" if "head" in flags else "GET")
    stdout, stderr, exit_code = "", "", 0
    for url in urls:
        transfer = Transfer(url)
        try:
            for _ in range(MAX_REDIRECTS):
                transfer = Transfer(url)
                _fetch(services, ctx.node, transfer, method, "user" in flags)
                if "location" not in flags or not transfer.redirect_url:
                    break
                url = transfer.redirect_url
            response = transfer.response
            assert response is not None
            if "fail" in flags and response.status >= 400:
                # curl 7.76's print_http_error quotes the status line after the protocol.
                raise CurlError(22, f"The requested URL returned error: {response.status} {response.reason}")
        except CurlError as error:
            if "verbose" in flags:
                stderr += "".join(f"{line}\n" for line in transfer.verbose)
                stderr += f"* {error.text}\n* Closing connection 0\n"
            if not silent:
                stderr += f"curl: ({error.code}) {error.text}\n"
            if "write-out" in flags:
                text, errors = _write_out(values["write-out"] or "", transfer)
                stdout, stderr = stdout + text, stderr + errors
            exit_code = error.code
            continue
        if "verbose" in flags:
            stderr += "".join(f"{line}\n" for line in transfer.verbose)
        body = "" if method == "HEAD" else response.body
        shown = _head_block(response) if "head" in flags or "include" in flags else ""
        shown += body
        target = values.get("output")
        if target is not None and target != "-":
            if target != "/dev/null":
                path = posixpath.normpath(posixpath.join(ctx.cwd, target))
                parent = services.access.stat(ctx.node, posixpath.dirname(path))
                if parent is None or not parent.is_dir():
                    if not silent:
                        stderr += "curl: (23) Failure writing output to destination\n"
                    exit_code = 23
                    continue
                try:
                    services.access.write(ctx.node, path, shown.encode())
                except NodeFileError:
                    if not silent:
                        stderr += "curl: (23) Failure writing output to destination\n"
                    exit_code = 23
                    continue
        else:
            stdout += shown
        if "verbose" in flags:
            stderr += f"* Connection #0 to host {_split(url)[1]} left intact\n"
        if "write-out" in flags:
            text, errors = _write_out(values["write-out"] or "", transfer)
            stdout, stderr = stdout + text, stderr + errors
    return ToolReply(stdout, stderr, exit_code)
