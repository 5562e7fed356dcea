"""The daemons' help texts (help/*.txt), from the captures (printed on stderr, exit 0, except munged).

Sources: reference/slurm-22.05/90-help-usage/index.json (`slurmd -h`, `slurmctld -h`: stderr) and
munged_-h.out (stdout).
"""

from __future__ import annotations

from hpcgym.controller.commands.usage import read_help

MUNGED_HELP = read_help("munged-help.txt")
SLURMD_HELP = read_help("slurmd-help.txt")
SLURMCTLD_HELP = read_help("slurmctld-help.txt")
