"""ping over the simulated network: each way a packet can fail prints iputils' own text and exit code."""

from __future__ import annotations

from .conftest import Env


def test_a_healthy_cluster_answers_through_the_router(env: Env) -> None:
    reply = env.run("compute-01", "ping", "-c", "2", "login01")
    assert reply.exit_code == 0 and reply.stderr == ""
    lines = reply.stdout.splitlines()
    assert lines[0] == "PING login01 (10.10.0.10) 56(84) bytes of data."
    assert lines[1].startswith("64 bytes from login01 (10.10.0.10): icmp_seq=1 ttl=63 time=")
    assert lines[2].startswith("64 bytes from login01 (10.10.0.10): icmp_seq=2 ttl=63 time=")
    assert lines[3:6] == [
        "",
        "--- login01 ping statistics ---",
        "2 packets transmitted, 2 received, 0% packet loss, time 1001ms",
    ]
    assert lines[6].startswith("rtt min/avg/max/mdev = ")
    # Same subnet: no router on the way, so the TTL is not decremented; numeric input prints no name.
    same = env.run("compute-01", "ping", "-c1", "10.10.1.12").stdout.splitlines()
    assert same[1].startswith("64 bytes from 10.10.1.12: icmp_seq=1 ttl=64 time=")
    # Same command, same bytes (round trips are fixed per source, destination and sequence).
    assert env.run("compute-01", "ping", "-c", "2", "login01") == reply


def test_a_node_without_a_route_cannot_even_send(env: Env) -> None:
    assert env.run("compute-02", "ip", "route", "del", "10.10.0.0/24").exit_code == 0
    reply = env.run("compute-02", "ping", "-c1", "login01")
    assert (reply.stdout, reply.stderr, reply.exit_code) == ("", "ping: connect: Network is unreachable\n", 2)
    # Only the sender's path is modelled (as for curl and slurmd): the login node still gets answers.
    assert env.run("login01", "ping", "-c1", "compute-02").exit_code == 0


def test_a_gateway_that_is_no_router_gives_host_unreachable(env: Env) -> None:
    env.run("compute-04", "ip", "route", "replace", "10.10.0.0/24", "via", "10.10.1.253")
    reply = env.run("compute-04", "ping", "-c", "2", "login01")
    assert reply.exit_code == 1
    assert reply.stdout.splitlines()[1:3] == [
        "From 10.10.1.14 icmp_seq=1 Destination Host Unreachable",
        "From 10.10.1.14 icmp_seq=2 Destination Host Unreachable",
    ]
    assert "2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms\n" in reply.stdout


def test_a_node_whose_eth0_is_down_never_answers(env: Env) -> None:
    assert env.run("compute-03", "ifdown", "eth0").exit_code == 0
    from_login = env.run("login01", "ping", "-c1", "compute-03")
    assert from_login.exit_code == 1
    assert from_login.stdout.endswith("1 packets transmitted, 0 received, 100% packet loss, time 0ms\n")
    assert env.run("compute-03", "ping", "-c1", "login01").stderr == "ping: connect: Network is unreachable\n"
    assert env.run("compute-03", "ifup", "eth0").exit_code == 0
    assert env.run("login01", "ping", "-c1", "compute-03").exit_code == 0


def test_a_wrong_hosts_entry_sends_pings_into_the_void(env: Env) -> None:
    hosts = env.access.read("compute-01", "/etc/hosts")
    assert hosts is not None
    env.access.put("compute-01", "/etc/hosts", hosts.decode().replace("10.10.0.10", "10.10.0.99"))
    reply = env.run("compute-01", "ping", "-c1", "-q", "login01")
    assert reply.stdout.startswith("PING login01 (10.10.0.99) 56(84) bytes of data.\n\n--- login01 ping")
    assert reply.exit_code == 1


def test_names_loopback_and_bad_input(env: Env) -> None:
    unknown = env.run("login01", "ping", "-c1", "nosuchhost")
    assert (unknown.stderr, unknown.exit_code) == ("ping: nosuchhost: Name or service not known\n", 2)
    bare = env.run("login01", "ping")
    assert (bare.stderr, bare.exit_code) == ("ping: usage error: Destination address required\n", 1)
    out = env.run("login01", "ping", "-c", "0", "login01")
    assert out.stderr.startswith("ping: invalid argument: '0': out of range: 1 <= value <=")
    assert out.exit_code == 1
    bad = env.run("login01", "ping", "-Z", "login01")
    assert bad.stderr.startswith("ping: invalid option -- 'Z'\n\nUsage\n  ping [options] <destination>\n")
    assert bad.exit_code == 2
    local = env.run("login01", "ping", "-c1", "localhost").stdout.splitlines()
    assert local[0] == "PING localhost(localhost (::1)) 56 data bytes"
    assert local[1].startswith("64 bytes from localhost (::1): icmp_seq=1 ttl=64 time=")
    assert env.run("login01", "ping", "-V").stdout == "ping from iputils 20210202\n"
