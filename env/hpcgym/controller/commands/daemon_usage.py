"""The daemons' help texts (help/*.txt), from the captures (printed on stderr, exit 0, except munged).

Sources: reference/slurm-22.05/90-help-usage/index.json (`slurmd -h`, `slurmctld -h`: stderr) and
munged_-h.out (stdout); `slurmdbd -h` (stderr, exit 0) as Debian's slurmdbd 22.05.8 prints it with a
slurmdbd.conf to read; `mariadbd --help` (stdout) as MariaDB prints it, with Rocky 9's 10.5.22 version
line and /usr/libexec path.
"""

from __future__ import annotations

from hpcgym.controller.commands.usage import read_help

MUNGED_HELP = read_help("munged-help.txt")
SLURMD_HELP = read_help("slurmd-help.txt")
SLURMCTLD_HELP = read_help("slurmctld-help.txt")
SLURMDBD_HELP = read_help("slurmdbd-help.txt")
MARIADBD_HELP = read_help("mariadbd-help.txt")
