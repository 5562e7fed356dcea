#!/usr/bin/python3
# hpcgym's cluster-tool client in Python: the reference that the native client (hpcgym-client.c, which
# the images hard-link under the name of every simulated tool in tools.list) matches byte for byte, and
# the baseline `invoke bench` compares it with. It does no work of its own: it sends
# its argv and cwd over the node's control socket to the episode's controller, which runs outside the
# sandbox and owns all cluster state, then prints the answer and exits with its code. Which node is
# asking is known from the socket it arrives on, never from anything this process says.
#
# Wire format, both ways: 4-byte big-endian length, then that many bytes of UTF-8 JSON.
#   request:  {"v": 1, "argv": [...], "cwd": "...", "stdin": "..." (only for the tools that read it)}
#   reply:    {"stdout": "...", "stderr": "...", "exit_code": N}
# Kept stdlib-only and import-light: where it is installed, it starts once per agent command.
import json
import os
import socket
import struct
import sys

SOCKET_PATH = "/run/hpcgym/control.sock"
# Tools that read standard input (sbatch without a script, munge, unmunge, ssh's remote command);
# every other tool leaves stdin alone, as the real one does, so `yes | sinfo` cannot block.
READS_STDIN = {"sbatch", "munge", "unmunge", "ssh", "sacctmgr"}
MAX_STDIN_BYTES = 1024 * 1024
MAX_REPLY_BYTES = 16 * 1024 * 1024


def unreachable(tool):
    # The controller is the simulated slurmctld/munged/systemd; without it the tool cannot work.
    sys.stderr.write(f"{tool}: error: cannot reach the cluster controller at {SOCKET_PATH}\n")
    return 1


def recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("controller closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def main():
    tool = os.path.basename(sys.argv[0])
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    message = {"v": 1, "argv": [tool, *sys.argv[1:]], "cwd": cwd}
    if tool in READS_STDIN and sys.stdin is not None and not sys.stdin.isatty():
        message["stdin"] = sys.stdin.buffer.read(MAX_STDIN_BYTES).decode("utf-8", "replace")
    request = json.dumps(message).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(SOCKET_PATH)
            sock.sendall(struct.pack(">I", len(request)) + request)
            (length,) = struct.unpack(">I", recv_exact(sock, 4))
            if length > MAX_REPLY_BYTES:
                raise ConnectionError("reply too large")
            reply = json.loads(recv_exact(sock, length))
    except (OSError, ConnectionError, ValueError):
        return unreachable(tool)
    sys.stdout.write(reply.get("stdout", ""))
    sys.stdout.flush()
    sys.stderr.write(reply.get("stderr", ""))
    return int(reply.get("exit_code", 1))


if __name__ == "__main__":
    sys.exit(main())
