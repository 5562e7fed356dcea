"""munged 0.5.15 on the key file the agent really made: symlinks, loops, a directory (conf.c)."""

from __future__ import annotations

import pytest

KEY = "/etc/munge/munge.key"


@pytest.mark.parametrize(
    ("make", "error"),
    [
        # A symlink to a good key (owned by munge, 0400) is still refused, unless munged ran --force.
        (
            f"cp -p {KEY} /etc/munge/real.key && ln -sf real.key {KEY}",
            f'Keyfile is insecure: "{KEY}" should not be a symbolic link',
        ),
        (
            f"ln -sf munge.key {KEY}",
            f'Failed to find keyfile "{KEY}": Too many levels of symbolic links (Did you run mungekey?)',
        ),
        (
            f"rm {KEY} && mkfifo -m 0400 {KEY}",
            f'Keyfile is insecure: "{KEY}" must be a regular file (type=0010000)',
        ),
        (
            f"head -c 31 /dev/urandom > {KEY}",
            "Keyfile must be at least 32 bytes",
        ),
    ],
    ids=["symlink", "symlink-loop", "fifo", "31-bytes"],
)
def test_munged_refuses_a_key_file_it_would_refuse(episode, make, error):
    assert episode.step(make).exit_code == 0
    assert episode.step("systemctl restart munge").exit_code == 1
    journal = episode.step("journalctl -u munge -o cat --no-pager").output.splitlines()
    assert f"munged: Error: {error}" in journal
    assert episode.services.systemd.daemon_of("login01", "munge.service") is None
