"""A node's clock skew: date/uptime, munge across nodes, slurmd registration, chronyc and timedatectl."""

from __future__ import annotations

import pytest

from hpcgym.controller.services.slurm import MUNGE_TTL_S

from .conftest import Env, make_env

NODE = "compute-02"
NO_STEP_CONF = "server login01 iburst\ndriftfile /var/lib/chrony/drift\n"


def skewed(seconds: int) -> Env:
    """An env whose NODE lost chronyd and then drifted by `seconds`, past SlurmdTimeout."""
    env = make_env()
    env.run(NODE, "systemctl", "disable", "--now", "chronyd")
    env.services.clocks.set_offset(NODE, seconds)
    env.tick(60)
    return env


def test_date_and_uptime_show_the_node_clock() -> None:
    env = skewed(900)
    assert env.run("login01", "date", "+%T").stdout == "07:47:05\n"
    assert env.run(NODE, "date", "+%T").stdout == "08:02:05\n"
    assert env.run(NODE, "date", "-u", "+%s").stdout == f"{env.controller.clock.now_s + 900}\n"
    assert env.run(NODE, "uptime").stdout.startswith(" 08:02:05 up ")
    # Time up is monotonic: the same on both clocks.
    up_login = env.run("compute-01", "uptime", "-p").stdout
    env.services.clocks.set_offset("compute-01", -600)
    assert env.run("compute-01", "uptime", "-p").stdout == up_login
    refused = env.run(NODE, "date", "-s", "07:47:05")
    assert refused.exit_code == 1 and "Operation not permitted" in refused.stderr
    assert env.services.clocks.offset(NODE) == 900


@pytest.mark.parametrize(
    ("decoder_ahead_s", "status"),
    [
        (0, "Success (0)"),
        (MUNGE_TTL_S, "Success (0)"),
        (-MUNGE_TTL_S, "Success (0)"),
        (MUNGE_TTL_S + 1, "Expired credential (15)"),
        (-(MUNGE_TTL_S + 1), "Rewound credential (16)"),
    ],
)
def test_unmunge_across_skewed_clocks(decoder_ahead_s: int, status: str) -> None:
    env = make_env()
    env.services.clocks.set_offset(NODE, decoder_ahead_s)
    cred = env.run("login01", "munge", "-n").stdout
    out = env.run(NODE, "unmunge", stdin=cred)
    assert out.stdout.splitlines()[0] == f"STATUS:          {status}"
    assert out.exit_code == int(status.split("(")[1].rstrip(")"))
    encode, decode = (
        line for line in out.stdout.splitlines() if line.startswith(("ENCODE_TIME", "DECODE_TIME"))
    )
    assert (
        int(decode.rsplit("(", 1)[1].rstrip(")")) - int(encode.rsplit("(", 1)[1].rstrip(")"))
        == decoder_ahead_s
    )


@pytest.mark.parametrize(("skew", "status"), [(900, "Rewound credential"), (-1260, "Expired credential")])
def test_skewed_node_cannot_register_and_slurmctld_says_why(skew: int, status: str) -> None:
    env = skewed(skew)
    assert "compute-02" in env.run("login01", "sinfo", "-R").stdout
    assert not env.services.is_slurmd_registered(NODE)
    slurmd = env.run(NODE, "journalctl", "-u", "slurmd", "-o", "cat").stdout
    assert "slurmd: error: Unable to register: Zero Bytes were transmitted or received" in slurmd
    ctl = env.run("login01", "journalctl", "-u", "slurmctld", "-o", "cat").stdout.splitlines()
    assert f"slurmctld: error: Munge decode failed: {status}" in ctl
    assert ("slurmctld: error: Check for out of sync clocks" in ctl) == (skew > 0)
    # Restarting the daemons does not move the clock.
    env.run(NODE, "systemctl", "restart", "munge", "slurmd")
    env.tick(30)
    assert not env.services.is_slurmd_registered(NODE)
    assert env.run(NODE, "chronyc", "tracking").stderr == "506 Cannot talk to daemon\n"


def test_starting_chronyd_steps_the_clock_and_the_node_registers() -> None:
    env = skewed(-1260)
    assert env.run(NODE, "systemctl", "enable", "--now", "chronyd").exit_code == 0
    assert env.services.clocks.offset(NODE) == 0
    journal = env.run(NODE, "journalctl", "-u", "chronyd", "-o", "cat").stdout.splitlines()
    assert journal[-5:-1] == [
        "Selected source 10.10.0.10 (login01)",
        "System clock wrong by 1260.000000 seconds",
        "System clock was stepped by 1260.000000 seconds",
        "System clock TAI offset set to 37 seconds",
    ]
    env.tick(5)
    assert env.services.is_slurmd_registered(NODE)
    assert "compute-02" not in env.run("login01", "sinfo", "-R").stdout


def test_without_makestep_chronyd_only_slews_and_makestep_fixes_it() -> None:
    env = skewed(600)
    env.access.put(NODE, "/etc/chrony.conf", NO_STEP_CONF)
    env.run(NODE, "systemctl", "start", "chronyd")
    assert env.services.clocks.offset(NODE) == 600
    tracking = env.run(NODE, "chronyc", "tracking").stdout
    assert "System time     : 600.000000000 seconds fast of NTP time\n" in tracking
    assert env.run(NODE, "timedatectl").stdout.splitlines()[4] == "System clock synchronized: no"
    assert env.run(NODE, "chronyc", "makestep").stdout == "200 OK\n"
    assert env.services.clocks.offset(NODE) == 0
    assert env.run(NODE, "timedatectl").stdout.splitlines()[4] == "System clock synchronized: yes"


def test_chronyc_texts() -> None:
    env = make_env()
    tracking = env.run(NODE, "chronyc", "tracking").stdout.splitlines()
    assert tracking[0] == "Reference ID    : 0A0A000A (login01)"
    assert tracking[1] == "Stratum         : 11"
    assert tracking[-1] == "Leap status     : Normal"
    assert len(tracking) == 13
    sources = env.run(NODE, "chronyc", "-n", "sources").stdout.splitlines()
    assert sources[0].startswith("MS Name/IP address         Stratum Poll Reach LastRx Last sample")
    assert sources[1] == "=" * 79
    assert sources[2] == "^* login01                     10   6   377    35    -21us[  -25us] +/-  160us"
    login = env.run("login01", "chronyc", "tracking").stdout.splitlines()
    assert login[:2] == ["Reference ID    : 7F7F0101 ()", "Stratum         : 10"]
    assert env.run("login01", "chronyc", "sources").stdout.count("\n") == 2
    bad = env.run(NODE, "chronyc", "frobnicate")
    assert (bad.stderr, bad.exit_code) == ("Unrecognized command\n", 1)


def test_timedatectl_status_and_set_ntp() -> None:
    env = skewed(-720)
    assert env.run(NODE, "timedatectl").stdout == (
        "               Local time: Mon 2026-11-23 07:35:05 UTC\n"
        "           Universal time: Mon 2026-11-23 07:35:05 UTC\n"
        "                 RTC time: Mon 2026-11-23 07:35:05\n"
        "                Time zone: UTC (UTC, +0000)\n"
        "System clock synchronized: no\n"
        "              NTP service: inactive\n"
        "          RTC in local TZ: no\n"
    )
    refused = env.run(NODE, "timedatectl", "set-time", "07:47:05")
    assert refused.exit_code == 1 and env.services.clocks.offset(NODE) == -720
    assert env.run(NODE, "timedatectl", "set-ntp", "true").exit_code == 0
    assert env.services.clocks.offset(NODE) == 0
    assert env.run(NODE, "systemctl", "is-enabled", "chronyd").stdout == "enabled\n"
    assert "NTPSynchronized=yes\n" in env.run(NODE, "timedatectl", "show").stdout
    assert env.run(NODE, "timedatectl", "nope").stderr == "Unknown command verb nope.\n"
