"""EnterpriseHPC's spaces as a user meets them: short repr, readable seeded samples, shell charset."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hpcgym.interfaces.spaces import COMMAND_CHARSET, SAMPLE_COMMANDS, ShellCommand, TerminalText


@pytest.mark.parametrize("space", [ShellCommand(8448), TerminalText(8448)])
def test_repr_is_short(space):
    assert len(repr(space)) < 90 and "8448" in repr(space)
    assert len(str(space)) < 90


def test_command_charset_is_what_a_command_line_holds():
    space = ShellCommand(8448)
    assert space.contains("sinfo -o '%N %T' | grep -c idle; echo $? && cat <<EOF\n\tx\nEOF\n")
    assert space.contains("awk -F: '{print $1}' /etc/passwd > ~/u.txt 2>&1 & [ -f x ] || ` #\\")
    assert set(COMMAND_CHARSET) == {chr(c) for c in range(0x20, 0x7F)} | {"\t", "\n"}
    assert not space.contains("\x1b[A") and not space.contains("\x00")
    assert not space.contains("x" * 8449)


def test_command_samples_are_commands_and_seeded():
    first = [ShellCommand(8448, seed=3).sample() for _ in range(2)]
    space = ShellCommand(8448, seed=3)
    drawn = [space.sample() for _ in range(30)]
    assert drawn[0] == first[0]
    assert set(drawn) <= set(SAMPLE_COMMANDS) and len(set(drawn)) > 3
    assert all(space.contains(command) for command in drawn)


def test_masked_sampling_is_gymnasiums():
    space = ShellCommand(16, seed=0)
    mask = np.zeros(len(space.character_set), dtype=np.int8)
    mask[space.character_list.index("a")] = 1
    assert space.sample(mask=(5, mask)) == "aaaaa"


def test_terminal_sample_is_readable_and_contained():
    space = TerminalText(8448, seed=1)
    for _ in range(20):
        text = space.sample()
        assert space.contains(text) and text.endswith("\n") and len(text) <= 73
        assert all(" " <= ch <= "~" for ch in text[:-1])
    assert space.contains("┌─ é \ufffd\n")


def test_spaces_pickle_and_compare():
    space = ShellCommand(100)
    back = pickle.loads(pickle.dumps(space))
    assert back == space and repr(back) == repr(space) and back.sample() in SAMPLE_COMMANDS
