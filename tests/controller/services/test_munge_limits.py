"""munge and unmunge on agent-sized input: linear work, munge 0.5.15's own limits, no exceptions.

The limits are the sources' (munge 0.5.15: src/munge/read.c, src/libcommon/m_msg.c, munge_defs.h):
input of MUNGE_MAXIMUM_REQ_LEN (1 MiB) or more is refused while it is read, and a request longer
than that is refused before it is sent. No capture holds these texts; they are the format strings.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from hpcgym.controller.commands import munge

from .conftest import Env

NODE = "compute-01"
MIB = 1 << 20


@pytest.fixture
def menv(env: Env) -> Env:
    assert env.run(NODE, "systemctl", "start", "munge").exit_code == 0
    return env


def timed(env: Env, *argv: str, stdin: str | None = None) -> tuple[float, munge.Reply]:
    start = time.monotonic()
    reply = env.run(NODE, *argv, stdin=stdin)
    return time.monotonic() - start, reply


def test_sealing_a_large_input_is_linear(menv: Env) -> None:
    # Just under munge's read limit and its send limit: the largest payload munge encodes, of
    # control characters, each six bytes in the sealed JSON body (the old quadratic sealing took
    # about a minute on this, under the controller lock).
    payload = "\x01" * (MIB - munge.ENCODE_REQUEST_OVERHEAD)
    elapsed_s, reply = timed(menv, "munge", stdin=payload)
    print(f"munge of {len(payload)} bytes: {elapsed_s:.2f} s")
    assert reply.exit_code == 0 and reply.stdout.startswith("MUNGE:AwQFAAA")
    assert elapsed_s < 2.0
    # The sealed body round-trips (checked in-process: the credential itself is over 1 MiB, which
    # real unmunge 0.5.15 cannot read either, below).
    raw = base64.b64decode(reply.stdout.strip()[len("MUNGE:") :].rstrip(":"))
    start = time.monotonic()
    body = json.loads(munge._seal(raw[len(munge.HEADER) :]))
    assert body["payload"] == payload
    assert time.monotonic() - start < 2.0


def test_sealing_is_its_own_inverse_and_keeps_the_keystream() -> None:
    data = bytes(range(256)) * 5 + b"tail"
    assert munge._seal(munge._seal(data)) == data
    assert munge._seal(b"") == b""
    # The stream is sha256("hpcgym-munge-<n>") blocks, as before: credentials keep their bytes.
    first = munge.hashlib.sha256(b"hpcgym-munge-0").digest()
    assert munge._seal(b"\x00" * 32) == first


def test_half_a_megabyte_round_trips_through_unmunge(menv: Env) -> None:
    payload = "p" * (MIB // 2)
    elapsed_s, cred = timed(menv, "munge", stdin=payload)
    assert cred.exit_code == 0
    decode_s, reply = timed(menv, "unmunge", stdin=cred.stdout)
    print(f"munge/unmunge of {len(payload)} bytes: {elapsed_s:.2f} s / {decode_s:.2f} s")
    assert reply.exit_code == 0
    assert reply.stdout.endswith("\n\n" + payload)
    assert elapsed_s < 2.0 and decode_s < 2.0


@pytest.mark.parametrize("size", [MIB, MIB + 1, 4 * MIB - 1])
def test_input_of_a_megabyte_or_more_is_refused_as_read_c_does(menv: Env, size: int) -> None:
    menv.access.put(NODE, "/tmp/big", b"y" * size)
    for argv, stdin in ((["munge", "-i", "/tmp/big"], None), (["munge"], "y" * size)):
        elapsed_s, reply = timed(menv, *argv, stdin=stdin)
        assert (reply.stdout, reply.stderr, reply.exit_code) == (
            "",
            "munge: Error: Exceeded maximum memory allocation\n",
            1,
        )
        assert elapsed_s < 1.0
    reply = menv.run(NODE, "unmunge", "-i", "/tmp/big")
    assert (reply.stderr, reply.exit_code) == ("unmunge: Error: Exceeded maximum memory allocation\n", 1)


def test_a_request_over_munged_limit_is_refused_before_it_is_sent(menv: Env) -> None:
    # Read fine (under 1 MiB) but the encode request around it is over: libmunge's m_msg_send().
    size = MIB - 10
    reply = menv.run(NODE, "munge", stdin="z" * size)
    assert reply.stderr == (
        f"munge: Error: Failed to send message: length of {size + 20} exceeds max of 1048576\n"
    )
    assert reply.exit_code == 3
    # -s is read without a limit (read_data_from_string), so only the send limit applies.
    reply = menv.run(NODE, "munge", "-s", "s" * MIB)
    assert reply.exit_code == 3 and "length of 1048596 exceeds max of 1048576" in reply.stderr
    reply = menv.run(NODE, "unmunge", stdin="MUNGE:" + "A" * (MIB - 8))
    assert reply.exit_code == 3 and "length of 1048579 exceeds max of 1048576" in reply.stderr


def test_the_limits_come_before_the_socket_as_in_munge_c(env: Env) -> None:
    # munged is not running: munge still reads (and refuses) its input first.
    assert env.run(NODE, "systemctl", "stop", "munge").exit_code == 0
    reply = env.run(NODE, "munge", stdin="y" * MIB)
    assert reply.stderr == "munge: Error: Exceeded maximum memory allocation\n"
    reply = env.run(NODE, "munge", "-n", "-U", "nosuchuser")
    assert (reply.stderr, reply.exit_code) == ('munge: Error: Unrecognized user "nosuchuser"\n', 1)
    reply = env.run(NODE, "munge", "-n")
    assert reply.exit_code == munge.EXIT_SOCKET


@pytest.mark.parametrize(
    ("flag", "value", "kind"),
    [("-u", "abc", "user"), ("-U", "abc", "user"), ("-g", "nogroup1", "group"), ("-G", "x1", "group")],
)
def test_unknown_ids_are_munge_errors_not_exceptions(menv: Env, flag: str, value: str, kind: str) -> None:
    reply = menv.run(NODE, "munge", "-n", flag, value)
    assert (reply.stdout, reply.stderr, reply.exit_code) == (
        "",
        f'munge: Error: Unrecognized {kind} "{value}"\n',
        1,
    )


def test_names_and_numbers_are_both_ids(menv: Env) -> None:
    cred = menv.run(NODE, "munge", "-n", "-U", "root", "-G", "65534", "-u", "root").stdout
    reply = menv.run(NODE, "unmunge", stdin=cred)
    assert reply.exit_code == 0
    assert "UID:             root (0)" in reply.stdout and "GID:             nobody (65534)" in reply.stdout


def forge(body: bytes) -> str:
    return "MUNGE:" + base64.b64encode(munge.HEADER + munge._seal(body)).decode() + ":\n"


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000,
        b'{"a": ' * 100_000,
        b"[1, 2]",
        b'"a string"',
        b'{"key": 1}',
        json.dumps({"host": "h", "addr": "a", "key": "k", "payload": "", "time": "x", "ttl": 1}).encode(),
        json.dumps(
            {
                "host": "h",
                "addr": "a",
                "key": "k",
                "payload": "",
                "time": 10**30,
                "ttl": 1,
                "uid": 0,
                "gid": 0,
            }
        ).encode(),
    ],
)
def test_forged_credentials_are_invalid_not_exceptions(menv: Env, body: bytes) -> None:
    reply = menv.run(NODE, "unmunge", stdin=forge(body))
    assert reply.exit_code in (munge.EXIT_BAD_CRED, munge.EXIT_CRED_INVALID)
    assert reply.stderr in ("unmunge: Error: Truncated cipher IV\n", "unmunge: Error: Invalid credential\n")


def test_the_replay_hash_holds_digests_not_credentials(menv: Env) -> None:
    cred = menv.run(NODE, "munge", stdin="q" * 100_000).stdout
    assert menv.run(NODE, "unmunge", stdin=cred).exit_code == 0
    assert menv.run(NODE, "unmunge", stdin=cred).exit_code == munge.EXIT_REPLAYED
    assert all(len(entry) == 64 for entry in menv.services.munge.seen[NODE])
