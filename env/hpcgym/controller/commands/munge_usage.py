"""The fixed texts of munge, unmunge and remunge (help in help/*.txt, type lists here), from the captures.

Sources: reference/slurm-22.05/02-munge/munge_-h.out, munge_-C.out, munge_-M.out, munge_-Z.out and
90-help-usage/unmunge_-h.out, remunge_-h.out (munge 0.5.15).
"""

from __future__ import annotations

from hpcgym.controller.commands.usage import read_help

MUNGE_HELP = read_help("munge-help.txt")
UNMUNGE_HELP = read_help("unmunge-help.txt")
REMUNGE_HELP = read_help("remunge-help.txt")

CIPHERS = (
    "Cipher types:\n\n  none (0)\n  default (1)\n  blowfish (2)\n  cast5 (3)\n  aes128 (4)\n  aes256 (5)\n\n"
)

MACS = "MAC types:\n\n  default (1)\n  md5 (2)\n  sha1 (3)\n  ripemd160 (4)\n  sha256 (5)\n  sha512 (6)\n\n"

ZIPS = "Compression types:\n\n  none (0)\n  default (1)\n  bzlib (2)\n  zlib (3)\n\n"
