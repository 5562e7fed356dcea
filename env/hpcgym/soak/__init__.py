"""Soak runs: many episodes through a real server, then a check of what the host kept.

`run.py` plays the episodes (`run_soak`, after a `Plan`) and writes the report; `leaks.py` says what a
closed episode may not leave behind (mounts, processes, cgroups, descriptors). `invoke soak` calls
`run_soak`.
"""

from hpcgym.soak.run import Plan, Report, run_soak

__all__ = ["Plan", "Report", "run_soak"]
