"""hpcgym: reproducible HPC cluster images and an RL environment built on them."""

__version__ = "0.1.0"
