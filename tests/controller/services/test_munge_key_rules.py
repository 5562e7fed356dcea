"""The key files munged 0.5.15 accepts: src/munged/conf.c (`create_subkeys`, `_conf_open_keyfile`).

At least MUNGE_KEY_LEN_MIN_BYTES (32) bytes, no upper bound of munged's own; readable by its owner
(munged runs as munge, so root's bypass does not help). Each refusal is munged's own error line in
the journal and in /var/log/munge/munged.log, and the unit fails.
"""

from __future__ import annotations

import pytest

from .conftest import MUNGE_UID, Env

KEY = "/etc/munge/munge.key"
NODE = "compute-02"


def put_key(env: Env, data: bytes, mode: int = 0o400) -> None:
    env.access.put(NODE, KEY, data)
    env.access.chown(NODE, KEY, MUNGE_UID, MUNGE_UID)
    env.access.chmod(NODE, KEY, mode)


@pytest.mark.parametrize(
    ("data", "mode", "error"),
    [
        (b"k", 0o400, "Keyfile must be at least 32 bytes"),
        (b"", 0o400, "Keyfile must be at least 32 bytes"),
        (b"k" * 31, 0o600, "Keyfile must be at least 32 bytes"),
        (b"k" * 1024, 0o000, 'Failed to open keyfile "/etc/munge/munge.key": Permission denied'),
        (b"k" * 1024, 0o200, 'Failed to open keyfile "/etc/munge/munge.key": Permission denied'),
    ],
    ids=["one-byte", "empty", "31-bytes", "mode-0000", "write-only"],
)
def test_munged_refuses_the_key_with_its_own_error(env: Env, data: bytes, mode: int, error: str) -> None:
    put_key(env, data, mode)
    restart = env.run(NODE, "systemctl", "restart", "munge")
    assert restart.exit_code == 1
    assert env.run(NODE, "systemctl", "is-active", "munge").stdout == "failed\n"
    journal = env.run(NODE, "journalctl", "-u", "munge", "-o", "cat", "--no-pager").stdout.splitlines()
    assert f"munged: Error: {error}" in journal
    assert journal[-1] == "Failed to start MUNGE authentication service."
    log = env.access.read(NODE, "/var/log/munge/munged.log")
    assert log is not None and log.decode().endswith(f"+0000 Error:     {error}\n")
    assert env.services.systemd.daemon_of(NODE, "munge.service") is None
    # By hand, the same words.
    assert env.run(NODE, "munged", "-F").stderr.splitlines()[-1] == f"munged: Error: {error}"


@pytest.mark.parametrize("size", [32, 1024, 4096, 1 << 20])
def test_munged_takes_any_key_of_32_bytes_or_more(env: Env, size: int) -> None:
    put_key(env, b"k" * size)
    assert env.run(NODE, "systemctl", "restart", "munge").exit_code == 0
    assert env.services.systemd.daemon_of(NODE, "munge.service") == "munged"
