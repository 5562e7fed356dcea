"""Hostlists come from the agent (arguments, slurm.conf): their cost must not grow past Slurm's limits."""

from __future__ import annotations

import time

import pytest

from hpcgym.controller.hostlist import MAX_HOSTS, compress_hostlist, expand_hostlist, expand_names
from hpcgym.errors import ControllerError


@pytest.mark.parametrize(
    "expression", ["x[1-999999999]", "a[1-1000][1-1000]", "n[1-99999999999999999999999]"]
)
def test_huge_ranges_are_refused_before_they_are_built(expression):
    started = time.monotonic()
    with pytest.raises(ControllerError):
        expand_hostlist(expression)
    assert time.monotonic() - started < 1.0
    # A client's node argument: a malformed one is a literal name that then fails the lookup.
    assert expand_names(expression) == [expression]


def test_the_largest_allowed_list_still_expands():
    assert len(expand_hostlist(f"n[1-{MAX_HOSTS}]")) == MAX_HOSTS


def test_long_digit_runs_cost_linear_time_and_no_int_overflow():
    started = time.monotonic()
    for name in ("1" * 100_000 + "x", "n" + "1" * 5000):
        assert compress_hostlist([name, "compute-01"]) in (f"compute-01,{name}", f"{name},compute-01")
    assert time.monotonic() - started < 1.0
