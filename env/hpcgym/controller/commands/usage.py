"""Help and usage texts, verbatim from the captures (90-help-usage/*.out), as package data in help/.

The Slurm clients' texts are named here; other tools read theirs with `read_help`. Tabs and trailing
blanks are part of the texts, so a file is read byte for byte: no newline translation, no stripping.
"""

from __future__ import annotations

from importlib.resources import files


def read_help(name: str) -> str:
    """The text of help/<name>, exactly as stored."""
    return files("hpcgym.controller.commands").joinpath("help", name).read_bytes().decode("utf-8")


SINFO_HELP = read_help("sinfo-help.txt")
SINFO_USAGE = read_help("sinfo-usage.txt")
SQUEUE_HELP = read_help("squeue-help.txt")
SQUEUE_USAGE = read_help("squeue-usage.txt")
SCONTROL_HELP = read_help("scontrol-help.txt")
SBATCH_USAGE = read_help("sbatch-usage.txt")
SRUN_USAGE = read_help("srun-usage.txt")
SCANCEL_USAGE = read_help("scancel-usage.txt")
