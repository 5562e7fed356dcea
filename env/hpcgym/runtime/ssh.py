"""What `ssh` means inside a cluster: parse its command line the way OpenSSH does.

The `ssh` stub forwards its argv untouched; the cluster decides whether it moves the agent's shell
(`ssh NODE`) or runs a command there (`ssh NODE CMD...`). Like OpenSSH, the remote command is the
remaining words joined by single spaces and handed to the remote shell, so
`ssh compute-01 nvidia-smi -r -i 0` arrives as `nvidia-smi -r -i 0`.
"""

from __future__ import annotations

from dataclasses import dataclass

# OpenSSH 8.7 (Rocky 9) options that take an argument; every other option letter is a flag.
_WITH_ARGUMENT = set("BbcDEeFIiJLlmOoPpQRSWw")
_FLAGS = set("46AaCfGgKkMNnqsTtVvXxYy")

USAGE = (
    "usage: ssh [-46AaCfGgKkMNnqsTtVvXxYy] [-B bind_interface]\n"
    "           [-b bind_address] [-c cipher_spec] [-D [bind_address:]port]\n"
    "           [-E log_file] [-e escape_char] [-F configfile] [-I pkcs11]\n"
    "           [-i identity_file] [-J [user@]host[:port]] [-L address]\n"
    "           [-l login_name] [-m mac_spec] [-O ctl_cmd] [-o option] [-p port]\n"
    "           [-Q query_option] [-R address] [-S ctl_path] [-W host:port]\n"
    "           [-w local_tun[:remote_tun]] destination [command [argument ...]]\n"
)


@dataclass(frozen=True)
class SshCall:
    host: str | None
    command: str | None
    error: str | None = None


def parse_ssh_args(args: list[str]) -> SshCall:
    """Split `ssh`'s arguments (without argv[0]) into destination and remote command."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in _WITH_ARGUMENT:
                if j + 1 == len(arg):
                    i += 1  # the argument is the next word
                    if i >= len(args):
                        return SshCall(None, None, f"option requires an argument -- {letter}\n{USAGE}")
                break
            if letter not in _FLAGS:
                return SshCall(None, None, f"unknown option -- {letter}\n{USAGE}")
            j += 1
        i += 1
    if i >= len(args):
        return SshCall(None, None, USAGE)
    destination = args[i].removeprefix("ssh://")
    host = destination.rsplit("@", 1)[-1].split(":", 1)[0]
    rest = args[i + 1 :]
    return SshCall(host, " ".join(rest) if rest else None)


def unknown_host_message(host: str) -> str:
    return f"ssh: Could not resolve hostname {host}: Name or service not known\n"
