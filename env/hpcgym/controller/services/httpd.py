"""The Open OnDemand portal's Apache httpd on the login node: config check, start-up, HTTP answers.

httpd refuses to start on a config that does not parse (`AH00526: Syntax error on line N of FILE:`,
as `httpd -t` prints it). Once up it answers from the config it started with. Its upstream (the
dashboard behind `/pun`, which talks to Slurm) is healthy when slurmctld and munged run on the
controller host; until then every request gets Apache's `502 Proxy Error` page. Healthy, `/` follows
the portal's RewriteRule (301 to the dashboard) and `/pun` asks for Basic auth (401 without `-u`).
The checker knows the directives of the modules Rocky's httpd loads for OnDemand, not all of Apache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from hpcgym.controller.numbers import to_int
from hpcgym.controller.services.access import NodeAccess
from hpcgym.controller.services.daemon import Launch, Line, exec_argv
from hpcgym.controller.services.facts import DaemonFacts
from hpcgym.controller.services.journal import Priority
from hpcgym.controller.services.units import UnitFile

if TYPE_CHECKING:
    from hpcgym.controller.services.network import Network

SERVER = "Apache/2.4.62 (Rocky Linux)"
MAIN_CONF = "/etc/httpd/conf/httpd.conf"
PORTAL_CONF = "/etc/httpd/conf.d/ood-portal.conf"
PID_FILE = "/run/httpd/httpd.pid"

SECTIONS = {
    "virtualhost", "location", "locationmatch", "directory", "directorymatch", "files", "filesmatch",
    "ifmodule", "ifdefine", "proxy", "requireall", "requireany", "limit", "limitexcept", "if", "else",
    "elseif", "ifversion",
}  # fmt: skip
DIRECTIVES = {
    "servername", "serveralias", "serveradmin", "serverroot", "listen", "user", "group", "include",
    "includeoptional", "loadmodule", "errorlog", "customlog", "loglevel", "logformat", "documentroot",
    "options", "allowoverride", "directoryindex", "addtype", "adddefaultcharset", "enablesendfile",
    "typesconfig", "alias", "scriptalias", "keepalive", "timeout", "rewriteengine", "rewriterule",
    "rewritecond", "header", "requestheader", "authtype", "authname", "authuserfile", "authbasicprovider",
    "require", "proxypass", "proxypassreverse", "proxypreservehost", "proxyrequests", "sethandler",
    "luaroot", "luahookfixups", "luahooklog", "luahookinsertfilter", "redirect", "redirectmatch",
    "errordocument", "protocols", "define", "setenv", "passenv", "sslengine", "sslcertificatefile",
    "sslcertificatekeyfile", "sslcertificatechainfile", "allowencodedslashes", "mimemagicfile",
    "trustedproxy", "remoteipheader",
}  # fmt: skip
_VHOST_PORT = re.compile(r"<VirtualHost\s+[^>]*:([0-9]{1,5})\s*>", re.IGNORECASE)
_REWRITE_ROOT = re.compile(
    r"^\s*RewriteRule\s+\^/\$\s+(\S+)\s+\[R=([0-9]{3})\]", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class ConfigError:
    """`AH00526`: where the config stops parsing, and why."""

    path: str
    line: int
    message: str

    def lines(self) -> list[str]:
        return [f"AH00526: Syntax error on line {self.line} of {self.path}:", self.message]


@dataclass(frozen=True)
class PortalConfig:
    """What a parsed config means for requests."""

    ports: tuple[int, ...] = (80,)
    root_redirect: str | None = None
    root_redirect_status: int = 301
    auth_prefixes: tuple[str, ...] = ()
    has_global_servername: bool = False


@dataclass(frozen=True)
class HttpdFacts(DaemonFacts):
    """The config a running httpd started with: it answers from that one until it restarts."""

    config: PortalConfig


def check_file(path: str, text: str) -> ConfigError | None:
    stack: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("</"):
            name = line[2:].rstrip(">").strip()
            if not stack:
                return ConfigError(path, number, f"</{name}> without matching <{name}> section")
            opened, _ = stack.pop()
            if opened.lower() != name.lower():
                return ConfigError(path, number, f"Expected </{opened}> but saw </{name}>")
            continue
        if line.startswith("<"):
            name = line[1:].split(None, 1)[0].rstrip(">")
            if name.lower() not in SECTIONS:
                return ConfigError(
                    path,
                    number,
                    f"Invalid command '<{name}', perhaps misspelled or defined by a module not included "
                    "in the server configuration",
                )
            if not line.endswith(">"):
                return ConfigError(path, number, f"<{name}> directive missing closing '>'")
            stack.append((name, number))
            continue
        directive = line.split(None, 1)[0]
        if directive.lower() not in DIRECTIVES:
            return ConfigError(
                path,
                number,
                f"Invalid command '{directive}', perhaps misspelled or defined by a module not included "
                "in the server configuration",
            )
    if stack:
        name, number = stack[-1]
        return ConfigError(path, number, f"<{name}> was not closed.")
    return None


def check_config(access: NodeAccess, node: str) -> PortalConfig | ConfigError:
    """Parse httpd.conf (if any) then the portal's config, as `httpd -t` would."""
    ports: set[int] = set()
    texts = []
    has_global_servername = False
    for path in (MAIN_CONF, PORTAL_CONF):
        raw = access.read(node, path)
        if raw is None:
            continue
        text = raw.decode(errors="replace")
        error = check_file(path, text)
        if error is not None:
            return error
        texts.append(text)
        for line in text.splitlines():
            words = line.split()
            if (
                words
                and words[0].lower() == "listen"
                and len(words) > 1
                and (port := to_int(words[1].split(":")[-1], max_digits=5)) is not None
            ):
                ports.add(port)
            if path == MAIN_CONF and words and words[0].lower() == "servername":
                has_global_servername = True
    portal = "\n".join(texts)
    ports.update(int(port) for port in _VHOST_PORT.findall(portal))
    redirect = _REWRITE_ROOT.search(portal)
    auth = tuple(re.findall(r'<Location\s+"?([^">]+)"?>\s*\n\s*AuthType', portal, re.IGNORECASE))
    return PortalConfig(
        ports=tuple(sorted(ports or {80})),
        root_redirect=redirect.group(1) if redirect else None,
        root_redirect_status=int(redirect.group(2)) if redirect else 301,
        auth_prefixes=auth,
        has_global_servername=has_global_servername,
    )


class HttpdHost(Protocol):
    """What httpd's start-up asks of the cluster: the node's files, and the address Listen binds."""

    access: NodeAccess
    network: Network


def launch(host: HttpdHost, node: str, unit: UnitFile) -> Launch:
    result = Launch(ok=False, comm="httpd", argv=[*exec_argv(unit)])
    config = check_config(host.access, node)
    if isinstance(config, ConfigError):
        result.stderr = [Line(text, Priority.ERR) for text in config.lines()]
        result.exit_status = 1
        return result
    result.ok = True
    result.pid_file = PID_FILE
    addr = host.network.address(node)
    if not config.has_global_servername:
        result.stderr.append(
            Line(
                f"AH00558: httpd: Could not reliably determine the server's fully qualified domain name, "
                f"using {addr or '127.0.0.1'}. "
                "Set the 'ServerName' directive globally to suppress this message"
            )
        )
    ports = ", ".join(f"port {port}" for port in config.ports)
    result.stderr.append(Line(f"Server configured, listening on: {ports}", Priority.NOTICE))
    result.facts = HttpdFacts(config)
    return result


def configtest(access: NodeAccess, node: str) -> tuple[str, int]:
    """`httpd -t` / `apachectl configtest`: stderr text and exit code."""
    config = check_config(access, node)
    if isinstance(config, ConfigError):
        return "".join(f"{line}\n" for line in config.lines()), 1
    return "Syntax OK\n", 0


# ---- answers ---------------------------------------------------------------------------------------

REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 401: "Unauthorized", 404: "Not Found",
           502: "Bad Gateway"}  # fmt: skip

_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>{title}</title>\n'
    "</head><body>\n<h1>{heading}</h1>\n{body}\n</body></html>\n"
)
_PAGES = {
    401: (
        "401 Unauthorized",
        "Unauthorized",
        "<p>This server could not verify that you\nare authorized to access the document\nrequested.  Either "
        "you supplied the wrong\ncredentials (e.g., bad password), or your\nbrowser doesn't understand how "
        "to supply\nthe credentials required.</p>",
    ),
    404: ("404 Not Found", "Not Found", "<p>The requested URL was not found on this server.</p>"),
    502: (
        "502 Proxy Error",
        "Proxy Error",
        "<p>The proxy server received an invalid\nresponse from an upstream server.<br />\nThe proxy server "
        "could not handle the request<p>Reason: <strong>Error reading from remote server</strong></p></p>",
    ),
}
DASHBOARD = (
    "<!DOCTYPE html>\n<html>\n<head>\n<title>Dashboard - Open OnDemand</title>\n</head>\n<body>\n"
    "<h1>Open OnDemand</h1>\n<p>OnDemand provides an integrated, single access point for all of your HPC "
    "resources.</p>\n</body>\n</html>\n"
)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    @property
    def reason(self) -> str:
        return REASONS.get(self.status, "")


def http_date(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def respond(
    config: PortalConfig, *, path: str, host_header: str, upstream_ok: bool, authorized: bool, now_s: int
) -> HttpResponse:
    """What the running portal answers to one request (config: the one it started with, `HttpdFacts`)."""
    headers = [("Date", http_date(now_s)), ("Server", SERVER)]
    if not upstream_ok:
        status = 502
    elif path in ("", "/") and config.root_redirect:
        target = config.root_redirect
        location = target if "://" in target else f"http://{host_header}{target}"
        title = "301 Moved Permanently"
        body = _PAGE.format(
            title=title,
            heading="Moved Permanently",
            body=f'<p>The document has moved <a href="{location}">here</a>.</p>',
        )
        headers += [("X-Content-Type-Options", "nosniff"), ("Location", location)]
        return _with_body(HttpResponse(config.root_redirect_status, headers), body, "iso-8859-1")
    elif any(path.startswith(prefix) for prefix in config.auth_prefixes):
        if not authorized:
            headers += [
                ("X-Content-Type-Options", "nosniff"),
                ("WWW-Authenticate", 'Basic realm="Open OnDemand"'),
            ]
            status = 401
        else:
            headers.append(("X-Content-Type-Options", "nosniff"))
            return _with_body(HttpResponse(200, headers), DASHBOARD, "utf-8")
    else:
        status = 404
    title, heading, text = _PAGES[status]
    if status != 502:
        headers = [*headers[:2], ("X-Content-Type-Options", "nosniff"), *headers[2:]]
    return _with_body(
        HttpResponse(status, headers), _PAGE.format(title=title, heading=heading, body=text), "iso-8859-1"
    )


def _with_body(response: HttpResponse, body: str, charset: str) -> HttpResponse:
    headers = [
        *response.headers,
        ("Content-Length", str(len(body.encode()))),
        ("Content-Type", f"text/html; charset={charset}"),
    ]
    return HttpResponse(response.status, headers, body)
