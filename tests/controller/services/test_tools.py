"""curl and the portal, ifup/ifdown and routes, munge/unmunge, nvidia-smi."""

from __future__ import annotations

from hpcgym.controller.services import MemoryNodeAccess, RegistrationProblem
from hpcgym.controller.state import NodeBase

from .conftest import Env, make_env

ROUTE = "/etc/sysconfig/network-scripts/route-eth0"
PORTAL = "/etc/httpd/conf.d/ood-portal.conf"
CODE = ("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://localhost/")


def test_portal_answers_502_until_slurmctld_is_back(env: Env) -> None:
    assert env.run("login01", *CODE).stdout == "301"
    env.run("login01", "systemctl", "stop", "slurmctld")
    reply = env.run("login01", "curl", "-I", "http://localhost/")
    assert reply.stdout.startswith("HTTP/1.1 502 Bad Gateway\r\nDate: Mon, 23 Nov 2026 07:46:05 GMT\r\n")
    assert reply.stdout.endswith("\r\n\r\n") and reply.exit_code == 0
    assert "<title>502 Proxy Error</title>" in env.run("login01", "curl", "http://localhost/").stdout
    assert env.run("login01", "curl", "-f", "http://localhost/").stderr == (
        "curl: (22) The requested URL returned error: 502 Bad Gateway\n"
    )
    env.run("login01", "systemctl", "start", "slurmctld")
    assert env.run("login01", *CODE).stdout == "301"
    assert env.run("login01", "curl", "-sL", "-u", "alice:pw", "http://localhost/").stdout.startswith(
        "<!DOCTYPE html>"
    )


def test_curl_connection_errors(env: Env) -> None:
    env.run("login01", "systemctl", "stop", "httpd")
    reply = env.run("login01", "curl", "http://localhost/")
    assert (reply.stdout, reply.stderr, reply.exit_code) == (
        "",
        "curl: (7) Failed to connect to localhost port 80: Connection refused\n",
        7,
    )
    assert env.run("login01", *CODE).stdout == "000"
    reply = env.run("login01", "curl", "http://localhost:8080/")
    assert reply.stderr == "curl: (7) Failed to connect to localhost port 8080: Connection refused\n"
    assert env.run("login01", "curl", "http://nosuch/").stderr == "curl: (6) Could not resolve host: nosuch\n"
    assert env.run("login01", "curl").stderr == (
        "curl: no URL specified!\ncurl: try 'curl --help' or 'curl --manual' for more information\n"
    )
    assert env.run("login01", "curl", "--bogus", "http://x/").exit_code == 2


def test_broken_portal_config_fails_httpd_start(env: Env) -> None:
    text = env.access.read("login01", PORTAL)
    assert text is not None
    env.access.put("login01", PORTAL, text.replace(b"  RewriteEngine On", b"  RewriteEngin On"))
    reply = env.run("login01", "systemctl", "restart", "httpd")
    assert reply.exit_code == 1
    assert reply.stderr.startswith(
        "Job for httpd.service failed because the control process exited with error code."
    )
    journal = env.run("login01", "journalctl", "-u", "httpd", "-t", "httpd", "-o", "cat", "-n", "2").stdout
    assert journal == (
        "AH00526: Syntax error on line 8 of /etc/httpd/conf.d/ood-portal.conf:\n"
        "Invalid command 'RewriteEngin', perhaps misspelled or defined by a module not included in the server "
        "configuration\n"
    )
    assert env.run("login01", *CODE).stdout == "000"


def _broken_route(access: MemoryNodeAccess) -> None:
    access.put("compute-01", ROUTE, "ADDRESS0=10.10.0.0\nNETMASK0=255.255.255.0\nGATEWAY0=10.10.2.254\n")


def test_broken_route_keeps_slurmd_from_registering_until_ifup() -> None:
    env = make_env(_broken_route)
    assert env.services.registration_problem("compute-01") is RegistrationProblem.CONTROLLER_UNREACHABLE
    assert env.run("compute-01", "ip", "route").stdout == (
        "10.10.1.0/24 dev eth0 proto kernel scope link src 10.10.1.11 metric 100\n"
    )
    log = env.run("compute-01", "journalctl", "-u", "slurmd", "-n", "1", "-o", "cat").stdout
    assert log == "slurmd: error: Unable to register: Unable to contact slurm controller (connect failure)\n"
    reply = env.run("compute-01", "curl", "-s", "http://login01/")
    assert reply.exit_code == 7
    env.tick(45)  # SlurmdTimeout=30: DOWN at the ping round after the failed one (about 40 s)
    assert env.controller.slurm.nodes["compute-01"].base is NodeBase.DOWN
    env.access.put("compute-01", ROUTE, "ADDRESS0=10.10.0.0\nNETMASK0=255.255.255.0\nGATEWAY0=10.10.1.254\n")
    down = env.run("compute-01", "ifdown", "eth0")
    assert down.stdout.startswith("Connection 'eth0' successfully deactivated (D-Bus active path: ")
    up = env.run("compute-01", "ifup", "eth0")
    assert up.stdout.startswith("Connection successfully activated (D-Bus active path: ")
    env.tick(1)
    assert env.controller.slurm.nodes["compute-01"].base is NodeBase.IDLE


def test_live_route_fix_with_ip_route_add() -> None:
    env = make_env(_broken_route)
    bad = env.run("compute-01", "ip", "route", "add", "10.10.0.0/24", "via", "10.10.2.254")
    assert (bad.stderr, bad.exit_code) == ("Error: Nexthop has invalid gateway.\n", 2)
    assert (
        env.run(
            "compute-01", "ip", "route", "add", "10.10.0.0/24", "via", "10.10.1.254", "dev", "eth0"
        ).exit_code
        == 0
    )
    assert env.services.is_slurmd_registered("compute-01")


def test_ifup_errors(env: Env) -> None:
    reply = env.run("compute-01", "ifup", "eth1")
    assert (reply.stderr, reply.exit_code) == (
        "Could not load file '/etc/sysconfig/network-scripts/ifcfg-eth1'\n"
        "Error: unknown connection '/etc/sysconfig/network-scripts/ifcfg-eth1'.\n",
        10,
    )
    env.run("compute-01", "ifdown", "eth0")
    again = env.run("compute-01", "ifdown", "eth0")
    assert (
        again.stderr == "Error: 'eth0' is not an active connection.\nError: no active connection provided.\n"
    )


def test_munge_round_trip_and_key_mismatch(env: Env) -> None:
    cred = env.run("compute-01", "munge", "-n").stdout
    assert cred.startswith("MUNGE:AwQFAAA") and cred.endswith(":\n")
    out = env.run("compute-02", "unmunge", stdin=cred)
    assert out.exit_code == 0
    assert out.stdout.splitlines()[:2] == [
        "STATUS:          Success (0)",
        "ENCODE_HOST:     compute-01 (10.10.1.11)",
    ]
    assert env.run("compute-02", "unmunge", stdin=cred).stdout.startswith(
        "STATUS:          Replayed credential (17)"
    )
    env.tick(301)
    assert env.run("compute-03", "unmunge", stdin=cred).exit_code == 15
    # A different key on compute-04: munged starts, but nobody else can read its credentials.
    env.access.put("compute-04", "/etc/munge/munge.key", b"x" * 1024, mode=0o400, uid=981, gid=981)
    env.access.chmod("compute-04", "/etc/munge/munge.key", 0o400)
    env.access.chown("compute-04", "/etc/munge/munge.key", 981, 981)
    assert env.run("compute-04", "systemctl", "restart", "munge").exit_code == 0
    other = env.run("compute-04", "munge", "-n").stdout
    bad = env.run("compute-01", "unmunge", stdin=other)
    assert (bad.stderr, bad.exit_code) == ("unmunge: Error: Invalid credential\n", 14)
    assert env.services.registration_problem("compute-04") is RegistrationProblem.KEY_MISMATCH


def test_munge_without_munged_and_bad_flags(env: Env) -> None:
    env.run("compute-01", "systemctl", "stop", "munge")
    reply = env.run("compute-01", "munge", "-n")
    assert (reply.stderr, reply.exit_code) == (
        'munge: Error: Failed to access "/run/munge/munge.socket.2": No such file or directory '
        "(Did you start munged?)\n",
        6,
    )
    assert env.run("compute-01", "munge", "--bogus").stderr == 'munge: Error: Invalid option "--bogus"\n'
    assert (
        env.run("compute-01", "unmunge", "-m").stderr == 'unmunge: Error: Missing argument for option "-m"\n'
    )
    assert env.run("compute-01", "unmunge", stdin="garbage\n").exit_code in (6,)
    assert env.run("compute-01", "munge", "--version").stdout == "munge-0.5.15 (2022-06-22)\n"


def test_nvidia_smi(env: Env) -> None:
    table = env.run("compute-03", "nvidia-smi")
    assert table.exit_code == 0
    assert all(len(line) == 89 for line in table.stdout.splitlines()[1:])
    assert (
        "| NVIDIA-SMI 535.154.05             Driver Version: 535.154.05   CUDA Version: 12.2     |"
        in table.stdout
    )
    none = env.run("compute-01", "nvidia-smi")
    assert none.exit_code == 9
    assert none.stdout.startswith(
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    )
    env.services.hardware.gpus["compute-04"][0].add_ecc_errors(dram_uncorrectable=2)
    ecc = env.run("compute-04", "nvidia-smi", "-q", "-d", "ECC").stdout
    assert "            DRAM Uncorrectable            : 2\n" in ecc
    assert "|                    2 |" in env.run("compute-04", "nvidia-smi").stdout
    reset = env.run("compute-04", "nvidia-smi", "-r", "-i", "0")
    assert reset.stdout == "GPU 00000000:07:00.0 was successfully reset.\nAll done.\n"
    csv = env.run(
        "compute-04",
        "nvidia-smi",
        "--query-gpu=ecc.errors.uncorrected.volatile.total,ecc.errors.uncorrected.aggregate.total",
        "--format=csv,noheader",
    )
    assert csv.stdout == "0, 2\n"
