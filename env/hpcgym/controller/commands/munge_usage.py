"""The fixed texts of munge, unmunge and remunge (help and type lists), copied from the captures.

Sources: reference/slurm-22.05/02-munge/munge_-h.out, munge_-C.out, munge_-M.out, munge_-Z.out and
90-help-usage/unmunge_-h.out, remunge_-h.out (munge 0.5.15).
"""

from __future__ import annotations

MUNGE_HELP = (
    "Usage: munge [OPTIONS]\n"
    "\n"
    "  -h, --help                Display this help message\n"
    "  -L, --license             Display license information\n"
    "  -V, --version             Display version information\n"
    "\n"
    "  -n, --no-input            Discard all input for payload\n"
    "  -s, --string=STR          Input payload from string\n"
    "  -i, --input=PATH          Input payload from file\n"
    "  -o, --output=PATH         Output credential to file\n"
    "\n"
    "  -c, --cipher=STR          Specify cipher type\n"
    "  -C, --list-ciphers        Display a list of supported ciphers\n"
    "  -m, --mac=STR             Specify MAC type\n"
    "  -M, --list-macs           Display a list of supported MACs\n"
    "  -z, --zip=STR             Specify compression type\n"
    "  -Z, --list-zips           Display a list of supported compressions\n"
    "\n"
    "  -u, --restrict-uid=UID    Restrict credential decoding by user/UID\n"
    "  -U, --uid=UID             Specify credential user/UID\n"
    "  -g, --restrict-gid=GID    Restrict credential decoding by group/GID\n"
    "  -G, --gid=GID             Specify credential group/GID\n"
    "  -t, --ttl=SECS            Specify time-to-live (in seconds; 0=dfl -1=max)\n"
    "  -S, --socket=PATH         Specify local socket for munged\n"
    "\n"
    "By default, payload read from stdin, credential written to stdout.\n"
    "\n"
)

UNMUNGE_HELP = (
    "Usage: unmunge [OPTIONS]\n"
    "\n"
    "  -h, --help                Display this help message\n"
    "  -L, --license             Display license information\n"
    "  -V, --version             Display version information\n"
    "\n"
    "  -i, --input=PATH          Input credential from file\n"
    "  -n, --no-output           Discard all output\n"
    "  -m, --metadata=PATH       Output metadata to file\n"
    "  -o, --output=PATH         Output payload to file\n"
    "\n"
    "  -k, --keys=STR            Specify subset of metadata keys to output\n"
    "  -K, --list-keys           Display list of metadata keys\n"
    "  -N, --numeric             Display metadata values numerically\n"
    "  -S, --socket=PATH         Specify local socket for munged\n"
    "\n"
    "By default, credential read from stdin, metadata & payload written to stdout.\n"
    "\n"
)

REMUNGE_HELP = (
    "Usage: remunge [OPTIONS]\n"
    "\n"
    "  -h, --help                Display this help message\n"
    "  -L, --license             Display license information\n"
    "  -V, --version             Display version information\n"
    "  -q, --quiet               Display only the creds/sec numeric result\n"
    "\n"
    "  -c, --cipher=STR          Specify cipher type\n"
    "  -C, --list-ciphers        Display a list of supported ciphers\n"
    "  -m, --mac=STR             Specify MAC type\n"
    "  -M, --list-macs           Display a list of supported MACs\n"
    "  -z, --zip=STR             Specify compression type\n"
    "  -Z, --list-zips           Display a list of supported compressions\n"
    "\n"
    "  -e, --encode              Encode (but do not decode) each credential\n"
    "  -d, --decode              Encode and decode each credential\n"
    "  -l, --length=BYTES        Specify payload length (in bytes)\n"
    "  -u, --restrict-uid=UID    Restrict credential decoding by user/UID\n"
    "  -g, --restrict-gid=GID    Restrict credential decoding by group/GID\n"
    "  -t, --ttl=SECS            Specify time-to-live (in seconds; 0=dfl -1=max)\n"
    "  -S, --socket=PATH         Specify local socket for munged\n"
    "\n"
    "  -D, --duration=SECS       Specify test duration (in seconds; -1=max)\n"
    "  -N, --num-creds=INT       Specify number of credentials to generate\n"
    "  -T, --num-threads=INT     Specify number of threads to spawn\n"
    "  -W, --warn-time=SECS      Specify max seconds for munge op before warning\n"
    "\n"
)

CIPHERS = (
    "Cipher types:\n\n  none (0)\n  default (1)\n  blowfish (2)\n  cast5 (3)\n  aes128 (4)\n  aes256 (5)\n\n"
)

MACS = "MAC types:\n\n  default (1)\n  md5 (2)\n  sha1 (3)\n  ripemd160 (4)\n  sha256 (5)\n  sha512 (6)\n\n"

ZIPS = "Compression types:\n\n  none (0)\n  default (1)\n  bzlib (2)\n  zlib (3)\n\n"
