"""Route files in both RHEL formats, and what reaches what."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from hpcgym.controller.services.network import Route, RouteFileError, parse_hosts, parse_route_file

from .conftest import Env

ROUTE = "/etc/sysconfig/network-scripts/route-eth0"


def test_route_file_formats() -> None:
    keyed = parse_route_file("ADDRESS0=10.10.0.0\nNETMASK0=255.255.255.0\nGATEWAY0=10.10.1.254\n")
    lines = parse_route_file("# comment\n10.10.0.0/24 via 10.10.1.254 dev eth0\ndefault via 10.10.1.254\n")
    assert keyed == [Route(IPv4Network("10.10.0.0/24"), IPv4Address("10.10.1.254"))]
    assert lines == [*keyed, Route(IPv4Network("0.0.0.0/0"), IPv4Address("10.10.1.254"))]
    with pytest.raises(RouteFileError):
        parse_route_file("ADDRESS0=10.10.0.300\n")
    assert parse_hosts("10.10.0.10  login01 # the login node\n::1 localhost\n") == {
        "login01": IPv4Address("10.10.0.10")
    }


def test_malformed_route_file_fails_ifup(env: Env) -> None:
    env.access.put("compute-02", ROUTE, "ADDRESS0=10.10.0.0\nNETMASK0=255.255.255.0\nGATEWAY0=10.10.1.2544\n")
    reply = env.run("compute-02", "ifup", "eth0")
    assert reply.exit_code == 10
    assert reply.stderr.startswith("Could not load file '/etc/sysconfig/network-scripts/ifcfg-eth0'\n")


def test_ip_route_del_breaks_registration_and_add_restores_it(env: Env) -> None:
    assert env.run("compute-03", "ip", "route", "del", "10.10.0.0/24").exit_code == 0
    assert not env.services.is_slurmd_registered("compute-03")
    assert (
        env.run("compute-03", "ip", "route", "del", "10.10.0.0/24").stderr
        == "RTNETLINK answers: No such process\n"
    )
    assert (
        env.run("compute-03", "ip", "route", "get", "10.10.0.10").stderr
        == "RTNETLINK answers: Network is unreachable\n"
    )
    env.run("compute-03", "ip", "route", "add", "10.10.0.0/24", "via", "10.10.1.254")
    assert env.run("compute-03", "ip", "route", "get", "10.10.0.10").stdout == (
        "10.10.0.10 via 10.10.1.254 dev eth0 src 10.10.1.13 uid 0 \n    cache \n"
    )
    assert env.services.is_slurmd_registered("compute-03")


def test_a_non_router_gateway_carries_nothing(env: Env) -> None:
    env.run("compute-04", "ip", "route", "replace", "10.10.0.0/24", "via", "10.10.1.253")
    assert not env.services.is_slurmd_registered("compute-04")
