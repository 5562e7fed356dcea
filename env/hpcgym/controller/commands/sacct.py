"""sacct: the reference cluster has no slurmdbd (AccountingStorageType=accounting_storage/none).

Real sacct checks the storage plugin before anything else, so every invocation, `--help` included,
prints one line on stderr and exits 1 (captures */sacct*.out, 90-help-usage/sacct_--help_head_-20).
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, Reply


def run(ctx: Context, args: list[str]) -> Reply:
    return Reply("", "Slurm accounting storage is disabled\n", 1)
