"""The daemons' help texts, copied from the captures (they print them on stderr, exit 0, except munged).

Sources: reference/slurm-22.05/90-help-usage/index.json (`slurmd -h`, `slurmctld -h`: stderr) and
munged_-h.out (stdout).
"""

from __future__ import annotations

MUNGED_HELP = (
    "Usage: munged [OPTIONS]\n"
    "\n"
    "  -h, --help                Display this help message\n"
    "  -L, --license             Display license information\n"
    "  -V, --version             Display version information\n"
    "\n"
    "  -f, --force               Force daemon to run if possible\n"
    "  -F, --foreground          Run daemon in the foreground (do not fork)\n"
    "  -M, --mlockall            Lock all pages in memory\n"
    "  -s, --stop                Stop daemon bound to socket\n"
    "  -S, --socket=PATH         Specify local socket [/run/munge/munge.socket.2]\n"
    "  -v, --verbose             Be verbose\n"
    "\n"
    "  --benchmark               Disable timers to reduce noise while benchmarking\n"
    '  --group-check-mtime=BOOL  Specify whether to check "/etc/group" mtime [1]\n'
    "  --group-update-time=SECS  Specify seconds between group info updates [3600]\n"
    "  --key-file=PATH           Specify key file [/etc/munge/munge.key]\n"
    "  --log-file=PATH           Specify log file [/var/log/munge/munged.log]\n"
    "  --max-ttl=SECS            Specify maximum time-to-live (in seconds) [3600]\n"
    "  --num-threads=INT         Specify number of threads to spawn [2]\n"
    "  --origin=ADDR             Specify origin address via hostname/IPaddr/interface\n"
    "  --pid-file=PATH           Specify PID file [/run/munge/munged.pid]\n"
    "  --seed-file=PATH          Specify PRNG seed file [/var/lib/munge/munged.seed]\n"
    "  --syslog                  Redirect log messages to syslog\n"
    "  --trusted-group=GID       Specify trusted group/GID for directory checks\n"
    "\n"
)

SLURMD_HELP = (
    "Usage: slurmd [OPTIONS]\n"
    "   -b                         Report node reboot now.\n"
    "   -c                         Force cleanup of slurmd shared memory.\n"
    "   -C                         Print node configuration information and exit.\n"
    "   --conf                     Dynamic node configuration, works with -Z.\n"
    "   --conf-server host[:port]  Get configs from slurmctld at `host[:port]`.\n"
    "   -d stepd                   Pathname to the slurmstepd program.\n"
    "   -D                         Run daemon in foreground.\n"
    "   -f config                  Read configuration from the specified file.\n"
    "   -F[feature]                Start as Dynamic Future node w/optional Feature.\n"
    "   -G                         Print node's GRES configuration and exit.\n"
    "   -h                         Print this help message.\n"
    "   -L logfile                 Log messages to the file `logfile'.\n"
    "   -M                         Use mlock() to lock slurmd pages into memory.\n"
    "   -n value                   Run the daemon at the specified nice value.\n"
    "   -N node                    Run the daemon for specified nodename.\n"
    "   -s                         Change working directory to SlurmdLogFile/SlurmdSpoolDir.\n"
    "   -v                         Verbose mode. Multiple -v's increase verbosity.\n"
    "   -V                         Print version information and exit.\n"
    "   -Z                         Start as Dynamic Normal node.\n"
)

SLURMCTLD_HELP = (
    "Usage: slurmctld [OPTIONS]\n"
    "  -c      \tDo not recover state from last checkpoint.\n"
    "  -D      \tRun daemon in foreground, with logging copied to stdout.\n"
    "  -f file \tUse specified file for slurmctld configuration.\n"
    "  -h      \tPrint this help message.\n"
    "  -i      \tIgnore errors found while reading in state files on startup.\n"
    "  -L logfile \tLog messages to the specified file.\n"
    "  -n value \tRun the daemon at the specified nice value.\n"
    "  -R      \tRecover full state from last checkpoint.\n"
    "  -s      \tChange working directory to SlurmctldLogFile/StateSaveLocation.\n"
    "  -v      \tVerbose mode. Multiple -v's increase verbosity.\n"
    "  -V      \tPrint version information and exit.\n"
)
