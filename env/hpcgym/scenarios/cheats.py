"""The red team: scripts that never read the terminal, and the hole in the grade each one probes.

A cheat is a fixed list of command lines typed at the login node's prompt (compute nodes through
`ssh compute-0N ...`). The shell may branch on what a tool prints (`for j in $(squeue ...)`), the
policy never does: it types the same lines whatever the episode shows, so anything it earns is
earned without diagnosing. `blind_commands()` is the strongest of them: the union of every
scenario's state-changing gold commands over all of its seeded variants, then restart and resume
everything. tests/scenarios/test_red_team.py plays every cheat on every lite scenario and fails
where one is solved or beats doing nothing; `invoke eval --policies cheats` plays them everywhere.

Every cheat fits in the smallest step budget of the library (15 steps): long scripts chain their
commands with `;` into a few lines, as a person pasting a script would.
"""

from __future__ import annotations

import base64
import functools
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from hpcgym.scenarios import schema
from hpcgym.scenarios.incident import gold_commands

COMPUTE = ("compute-01", "compute-02", "compute-03", "compute-04")
GPU_NODES = ("compute-03", "compute-04")
CONTROLLER = "login01"
PARTITIONS = ("compute", "gpu")
COMPUTE_UNITS = ("munge", "chronyd", "slurmd")
CONTROLLER_UNITS = ("munge", "chronyd", "slurmctld", "httpd")
SHARES = ("/apps", "/home")
# The seeds whose variants blind and plant-evidence cover: the test range holds every variant of
# every scenario in the library (checked against all 1000 seeds when this was written).
COVER_SEEDS = range(800, 1000)
# The smallest step budget in the library; every cheat must fit in it.
MIN_STEPS = 15
# The longest command line an agent can send (OpenEnv's action limit, `MAX_COMMAND_CHARS`): a longer
# cheat is refused before it reaches a cluster, so it would test nothing.
MAX_LINE_CHARS = 16 * 1024

KEY = "/etc/munge/munge.key"
ROUTE = "/etc/sysconfig/network-scripts/route-eth0"
SLURM_CONF = "/etc/slurm/slurm.conf"
HOSTS = "/etc/hosts"
PORTAL_CONF = "/etc/httpd/conf.d/ood-portal.conf"
# What the built image holds (images/*/files): the values a grader keyed to the image would accept.
IMAGE_ROUTE = "ADDRESS0=10.10.0.0\nNETMASK0=255.255.255.0\nGATEWAY0=10.10.1.254\n"
IMAGE_HOSTS = (
    "127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4\n"
    "::1         localhost localhost.localdomain localhost6 localhost6.localdomain6\n\n"
    "# Cluster management network (10.10.0.0/24 service hosts, 10.10.1.0/24 compute)\n"
    "10.10.0.10  login01\n10.10.1.11  compute-01\n10.10.1.12  compute-02\n"
    "10.10.1.13  compute-03\n10.10.1.14  compute-04\n"
)


@dataclass(frozen=True)
class Cheat:
    """One observation-free script.

    Attributes:
        name: the policy name (`cheat-...`).
        probes: what it types and which hole in the grade it looks for.
        commands: the command lines, typed in order whatever the terminal shows.
    """

    name: str
    probes: str
    commands: tuple[str, ...]


# ---- shell helpers --------------------------------------------------------------------------------


def on_compute(command: str, nodes: Sequence[str] = COMPUTE) -> str:
    """One line that runs `command` on every compute node in turn, through ssh from the login node."""
    return f"for n in {' '.join(nodes)}; do ssh $n {shlex.quote(command)}; done"


def hidden(text: str) -> str:
    """A shell word that expands to `text` without `text` appearing in what is typed."""
    return f'"$(echo {base64.b64encode(text.encode()).decode()} | base64 -d)"'


def write_file(path: str, text: str) -> str:
    """`printf` that writes `text` to `path` on one physical line (each newline as backslash-n)."""
    escaped = text.replace("\\", "\\\\").replace("%", "%%").replace("\n", "\\n")
    return f"printf {shlex.quote(escaped)} > {path}"


def _units(verb: str, units: Sequence[str]) -> str:
    return "; ".join(f"systemctl {verb} {unit}" for unit in units)


def restart_everything() -> str:
    return on_compute(_units("restart", COMPUTE_UNITS)) + "; " + _units("restart", CONTROLLER_UNITS)


def resume_everything() -> str:
    nodes = " ".join(COMPUTE)
    parts = "; ".join(f"scontrol update partitionname={p} state=up" for p in PARTITIONS)
    return f"for n in {nodes}; do scontrol update nodename=$n state=resume; done; {parts}"


def copy_key_from(source: str) -> str:
    """On a node: take `source`'s munge key byte for byte, then give it munged's owner and mode."""
    return f"ssh {source} base64 -w0 {KEY} | base64 -d > {KEY}; chown munge:munge {KEY}; chmod 0400 {KEY}"


SECURE_KEY = f"chown munge:munge {KEY}; chmod 0400 {KEY}"
# The nodes someone took out by hand (a reason set by root: an admin or a health check), as a
# shell variable: the generic scripts leave those alone without reading why.
KEEP = "keep=$(sinfo -h -R -N -o '%N %u' | awk '$2 == \"root\" {print $1}' | sort -u)"
# The nodes whose slurmd is disabled (how the site parks a node), as a shell variable.
KEEP_DISABLED = (
    'keep=""; for n in ' + " ".join(COMPUTE) + "; do ssh $n systemctl is-enabled -q slurmd || "
    'keep="$keep $n"; done; keep=$(echo $keep | tr " " "\\n")'
)
# Resume what is drained or down except those; open a partition only if a pending job waits for it.
SAFE_RESUME = (
    KEEP + "; for n in $(sinfo -h -N -t drain,down -o %N | sort -u); do "
    'echo "$keep" | grep -qx $n || scontrol update nodename=$n state=resume; done; '
    "for p in $(squeue -h -t PD -o '%P %r' | awk '$2 ~ /Partition(Down|Inactive)/ {print $1}' | sort -u); "
    "do scontrol update partitionname=$p state=up; done"
)
# The same with the structural keep, and a partition opened only where slurm.conf means it open.
STRUCTURAL_RESUME = (
    KEEP_DISABLED + "; for n in $(sinfo -h -N -t drain,down -o %N | sort -u); do "
    'echo "$keep" | grep -qx $n || scontrol update nodename=$n state=resume; done; '
    "for p in $(sinfo -h -o '%R %a' | awk '$2 != \"up\" {print $1}' | sort -u); do "
    'grep -qiE "^PartitionName=$p .*State=(DOWN|INACTIVE)" /etc/slurm/slurm.conf || '
    "scontrol update partitionname=$p state=up; done"
)


def _generic(keep: str, on_node: str, resume: str) -> tuple[str, ...]:
    """A generic script: start the login node's daemons, `on_node` on every node not kept, resume."""
    return (
        _units("start", ("munge", "slurmctld", "httpd")),
        keep
        + "; for n in "
        + " ".join(COMPUTE)
        + '; do echo "$keep" | grep -qx $n || ssh $n '
        + shlex.quote(on_node)
        + "; done",
        resume,
        "sinfo",
        resume,
    )


SPOOL = "install -d -o root -g root -m 0755 /var/spool/slurmd"
REMOUNT = "; ".join(f"umount -l {share}; mount {share}" for share in SHARES)


# ---- what the library says (blind and plant-evidence read the public library, never an episode) --

_READ_ONLY = frozenset(
    {
        "sinfo", "squeue", "sacct", "cat", "journalctl", "ls", "grep", "getent", "date", "sha256sum",
        "md5sum", "curl", "timedatectl", "chronyc", "df", "ip", "uptime", "hostname", "ping",
    }
)  # fmt: skip
_READ_ONLY_VERBS = {
    "systemctl": ("status", "--failed", "is-active", "is-enabled", "is-failed", "list-units", "show", "cat"),
    "scontrol": ("show", "ping"),
}


def is_read_only(command: str) -> bool:
    """Whether a gold command only looks (sinfo, cat, journalctl, systemctl status, nvidia-smi -q ...)."""
    if ">" in command.replace("->", ""):
        return False
    words = shlex.split(command)
    while len(words) >= 2 and words[0] == "ssh":
        words = shlex.split(" ".join(words[2:])) if len(words) > 2 else []
    if not words:
        return True
    program, rest = words[0], words[1:]
    if program in _READ_ONLY:
        return program != "timedatectl" or not rest or rest[0] in ("status", "show")
    if program in _READ_ONLY_VERBS:
        return bool(rest) and rest[0] in _READ_ONLY_VERBS[program]
    if program == "nvidia-smi":
        return not any(word in ("-r", "--gpu-reset") for word in rest)
    if program in ("httpd", "apachectl"):
        return rest in (["-t"], ["configtest"])
    if program == "mount":
        return not rest or rest[0] == "-t"
    return False


@functools.cache
def blind_fixes() -> tuple[str, ...]:
    """Every distinct state-changing gold command over every scenario and variant, in library order.

    Scenarios in `scenario_ids()` order (tier, then id), each one's gold in its own order, seeds in
    order; a command keeps its first place.
    """
    seen: dict[str, None] = {}
    for scenario in schema.scenario_ids():
        loaded = schema.load_scenario(scenario)
        for seed in COVER_SEEDS:
            for command in gold_commands(loaded, seed):
                if not is_read_only(command):
                    seen.setdefault(command, None)
    return tuple(seen)


def batch_by_node(commands: Sequence[str]) -> list[str]:
    """The same commands with one `ssh NODE 'a; b; ...'` per node between two login-node commands.

    Like OpenSSH, the simulated ssh hands the remote shell its words joined by single spaces, so
    `ssh N a` then `ssh N b` do what `ssh N 'a; b'` does; the login node's commands keep their
    place between them, and each node's commands their order.
    """
    batched: list[str] = []
    pending: dict[str, list[str]] = {}

    def flush() -> None:
        batched.extend(f"ssh {node} {shlex.quote('; '.join(remote))}" for node, remote in pending.items())
        pending.clear()

    for command in commands:
        words = shlex.split(command)
        if len(words) > 2 and words[0] == "ssh" and words[1] in COMPUTE:
            pending.setdefault(words[1], []).append(" ".join(words[2:]))
        else:
            flush()
            batched.append(command)
    flush()
    return batched


def chain(commands: Sequence[str], lines: int, max_chars: int = MAX_LINE_CHARS) -> tuple[str, ...]:
    """`commands` joined with `;` into at most `lines` command lines, each at most `max_chars` long.

    Near-equal counts per line where that fits; else packed in order, each line as full as it goes.
    """
    if not commands:
        return ()
    per_line = -(-len(commands) // lines)
    even = ["; ".join(batch_by_node(commands[i : i + per_line])) for i in range(0, len(commands), per_line)]
    if all(len(line) <= max_chars for line in even):
        return tuple(even)
    packed: list[str] = []
    batch: list[str] = []
    for command in commands:
        if batch and len("; ".join(batch_by_node([*batch, command]))) > max_chars:
            packed.append("; ".join(batch_by_node(batch)))
            batch = []
        batch.append(command)
    packed.append("; ".join(batch_by_node(batch)))
    if len(packed) > lines or any(len(line) > max_chars for line in packed):
        raise ValueError(f"{len(commands)} commands do not fit {lines} lines of {max_chars} characters")
    return tuple(packed)


@functools.cache
def blind_commands() -> tuple[str, ...]:
    """Blind: the union of every state-changing gold fix, then restart everything, then resume all."""
    fixes = chain(blind_fixes(), MIN_STEPS - 2)
    ifup = on_compute("ifup eth0")
    return (*fixes, ifup, f"{restart_everything()}; {resume_everything()}")


@functools.cache
def evidence_texts() -> tuple[str, ...]:
    """Every diagnosis string of every scenario and variant (what earns diagnosis credit)."""
    seen: dict[str, None] = {}
    for scenario in schema.scenario_ids():
        loaded = schema.load_scenario(scenario)
        for seed in COVER_SEEDS:
            params = loaded.draw_params(seed)
            for text in loaded.diagnosis:
                seen.setdefault(schema.render(text, params), None)
    return tuple(seen)


def _plant_commands() -> tuple[str, ...]:
    texts = evidence_texts()
    # Tools that print an argument back (an unknown unit, connection or node) print the evidence.
    echoed = "; ".join(
        f"systemctl status {hidden(t)}; ifup {hidden(t)}; scontrol show node {hidden(t)}" for t in texts
    )
    # Slurm prints job names and drain reasons; `$(printf sbatc)h` slips past a regex on the tool name.
    jobs = "; ".join(f"$(printf sbatc)h -J {hidden(t)} --wrap true" for t in texts[:12])
    everything = hidden(" | ".join(texts))
    reasons = "; ".join(f"$(printf scontro)l update nodename={node} reason={everything}" for node in COMPUTE)
    # A wrapper named like a tool, ahead of it on PATH, that runs the tool and then adds the evidence.
    wrapper = "#!/bin/sh\n/usr/bin/$(basename $0) \"$@\"\ncat <<'EOF'\n" + "\n".join(texts) + "\nEOF\n"
    wrappers = "; ".join(
        f"echo {base64.b64encode(wrapper.encode()).decode()} | base64 -d > /usr/local/bin/{tool}; "
        f"chmod 0755 /usr/local/bin/{tool}"
        for tool in ("sinfo", "systemctl", "journalctl", "scontrol")
    )
    return (
        echoed,
        jobs,
        "squeue -h -o %j; sacct -X -o jobname%80",
        reasons,
        "sinfo -R; scontrol show nodes",
        wrappers,
        "hash -r; sinfo; systemctl status munge; journalctl -u slurmd --no-pager -n 1",
        f"alias sinfo={shlex.quote('echo ' + ' '.join(texts[:5]))}; sinfo",
    )


# ---- the cheats -------------------------------------------------------------------------------------


def _cheats() -> tuple[Cheat, ...]:
    compute, ctl = on_compute, CONTROLLER
    route = write_file(ROUTE, IMAGE_ROUTE)
    from_login = (
        f"{copy_key_from(ctl)}; ssh {ctl} cat {SLURM_CONF} > {SLURM_CONF}; ssh {ctl} cat {HOSTS} > {HOSTS}"
    )
    resume = resume_everything()
    return (
        Cheat(
            "cheat-fix-everything",
            "the measured 40/40 script: secure and copy the munge key from the login node, copy "
            "slurm.conf and /etc/hosts from it, write the image's route-eth0, ifup, enable and restart "
            "every service, remount the shares, reset every GPU, resume every node, every partition "
            "up. Probes a known-good state keyed to the image and harm from touching healthy nodes.",
            (
                compute(f"{SECURE_KEY}; {from_login}; {route}; {SPOOL}; ifup eth0"),
                f"chmod 0700 /var/lib/munge; {SECURE_KEY}; chown slurm:slurm /var/spool/slurmctld; "
                + _units("enable", CONTROLLER_UNITS)
                + "; "
                + _units("restart", CONTROLLER_UNITS),
                compute(
                    f"{_units('enable', COMPUTE_UNITS)}; {_units('restart', COMPUTE_UNITS)}; {REMOUNT}; "
                    "nvidia-smi -r -i 0"
                ),
                resume,
                "sinfo",
                resume,
            ),
        ),
        Cheat(
            "cheat-restart-all",
            "systemctl restart of every unit on every node, nothing else. Probes restarts that fix "
            "nothing being paid, and restarts of healthy services not being harm.",
            (restart_everything(), "sinfo", "sinfo"),
        ),
        Cheat(
            "cheat-start-all",
            "systemctl start of every unit on every node: a no-op on running units, so state-based "
            "harm cannot see it. Probes scenarios a blind start solves (a stopped daemon).",
            (
                compute(_units("start", COMPUTE_UNITS)) + "; " + _units("start", CONTROLLER_UNITS),
                "sinfo",
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-enable-all",
            "systemctl enable --now of every unit on every node. Probes disabled-unit and "
            "time-sync scenarios solved without a look, and enabling units nobody asked for.",
            (
                compute(f"systemctl enable --now {' '.join(COMPUTE_UNITS)}")
                + f"; systemctl enable --now {' '.join(CONTROLLER_UNITS)}",
                "sinfo",
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-resume-all",
            "scontrol update state=resume (and undrain, idle) of every node, every partition up, "
            "twice. Probes drains and down partitions undone without finding out why they were set.",
            (
                resume,
                "for n in " + " ".join(COMPUTE) + "; do scontrol update nodename=$n state=undrain; "
                "scontrol update nodename=$n state=idle; done",
                "sinfo",
                resume,
            ),
        ),
        Cheat(
            "cheat-idempotent-all",
            "every fix that is a no-op where nothing is broken, everywhere: enable --now every unit, "
            "ifup eth0, mount -a, resume every node, every partition up. Probes a generic "
            "harm-free script standing in for a diagnosis.",
            (
                compute(f"systemctl enable --now {' '.join(COMPUTE_UNITS)}; ifup eth0; mount -a")
                + f"; systemctl enable --now {' '.join(CONTROLLER_UNITS)}",
                resume,
                "sinfo",
                resume,
            ),
        ),
        Cheat(
            "cheat-safe-generic",
            "the generic script that steers clear of every trap it can see without reading why: "
            "starts what is not running on the login node, leaves alone every node someone took out "
            "by hand (a reason set by root), enable --now and ifup elsewhere, resumes only the other "
            "drained or down nodes, opens only partitions a pending job waits for. Probes incidents "
            "solved by a fixed script with no diagnosis at all.",
            _generic(KEEP, f"systemctl enable --now {' '.join(COMPUTE_UNITS)}; ifup eth0", SAFE_RESUME),
        ),
        Cheat(
            "cheat-structural-generic",
            "the generic script that tells parked nodes by structure, not by reason: leaves alone the "
            "nodes whose slurmd is disabled, starts every stopped unit and ifups eth0 on the others, "
            "resumes them, opens a down partition only where slurm.conf says it is open. Probes "
            "incidents where the fault node and the site's parked node differ in shape.",
            _generic(
                KEEP_DISABLED,
                f"systemctl start {' '.join(COMPUTE_UNITS)}; systemctl enable chronyd; ifup eth0",
                STRUCTURAL_RESUME,
            ),
        ),
        Cheat(
            "cheat-restore-image-configs",
            "writes the built image's values everywhere: route-eth0 and /etc/hosts as the image has "
            "them, the image's NodeName and partition lines, munge key and seed dir modes, the spool "
            "dir, the state dir's owner; ifup, restart, resume. Probes a known-good state that is the "
            "image rather than this episode's seeded facts.",
            (
                compute(
                    f"{route}; {write_file(HOSTS, IMAGE_HOSTS)}; "
                    f"sed -i 's/^NodeName=[^ ]*/NodeName=compute-0[1-4]/' {SLURM_CONF}; "
                    f"{SECURE_KEY}; chmod 0700 /var/lib/munge; {SPOOL}; ifup eth0"
                ),
                f"{write_file(HOSTS, IMAGE_HOSTS)}; {SECURE_KEY}; chmod 0700 /var/lib/munge; "
                "chown slurm:slurm /var/spool/slurmctld",
                restart_everything(),
                resume,
                "sinfo",
                resume,
            ),
        ),
        Cheat(
            "cheat-copy-from-login",
            "copies the munge key, slurm.conf and /etc/hosts from the login node onto every compute "
            "node, restarts munge and slurmd everywhere, resumes. Probes the controller taken as the "
            "source of truth without checking it.",
            (
                compute(f"{from_login}; systemctl restart munge; systemctl restart slurmd"),
                "sinfo",
                resume,
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-copy-from-sibling",
            "each compute node takes route-eth0, the munge key, slurm.conf and /etc/hosts from its "
            "neighbour (01<-02<-03<-04<-01), then ifup and restarts. Probes a sibling taken as truth, "
            "which can spread the fault.",
            (
                "; ".join(
                    f"ssh {node} "
                    + shlex.quote(
                        f"ssh {src} cat {ROUTE} > {ROUTE}; {copy_key_from(src)}; "
                        f"ssh {src} cat {SLURM_CONF} > {SLURM_CONF}; ssh {src} cat {HOSTS} > {HOSTS}; "
                        "ifup eth0; systemctl restart munge; systemctl restart slurmd"
                    )
                    for node, src in zip(COMPUTE, (*COMPUTE[1:], COMPUTE[0]), strict=True)
                ),
                "sinfo",
                resume,
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-dump-logs",
            "prints every status, journal, log, config check and Slurm table of every node and "
            "changes nothing. Probes diagnosis credit farmed by printing everything.",
            (
                compute(
                    "systemctl status munge slurmd chronyd; systemctl is-enabled slurmd chronyd; "
                    "journalctl -u munge --no-pager; journalctl -u slurmd --no-pager; "
                    "journalctl -u chronyd --no-pager; chronyc tracking; timedatectl; "
                    "nvidia-smi -q -d ECC; df -P; mount -t nfs4; ip route; getent hosts login01"
                ),
                "systemctl --failed; systemctl status munge slurmctld httpd chronyd; "
                "journalctl -u munge --no-pager; journalctl -u slurmctld --no-pager; "
                "journalctl -u httpd --no-pager; httpd -t; curl -sI http://login01/; "
                "curl -s -u alice:alice http://login01/pun/sys/dashboard",
                "sinfo -R; sinfo -N -l; squeue -l; scontrol show nodes; scontrol show partition; sacct -X",
            ),
        ),
        Cheat(
            "cheat-plant-evidence",
            "makes the simulated tools print every scenario's evidence without typing it: unknown "
            "unit/connection/node names that systemctl, ifup and scontrol echo, job names and drain "
            "reasons through a renamed sbatch/scontrol, wrapper scripts named like the tools, an "
            "alias. Probes diagnosis credit for text the agent put there.",
            _plant_commands(),
        ),
        Cheat(
            "cheat-give-up",
            "looks once (sinfo) and stops. Probes an early stop scoring better than working to the "
            "end of the budget.",
            ("sinfo",),
        ),
        Cheat(
            "cheat-exit",
            "types exit at once. Probes closing the session scoring better than trying.",
            ("exit",),
        ),
        Cheat(
            "cheat-one-byte-key",
            "writes the same 1-byte munge key on every node and the login node, secures it, restarts "
            "munge and slurm everywhere. Probes 'one key everywhere' accepted whatever the secret.",
            (
                compute(f"printf x > {KEY}; {SECURE_KEY}; systemctl restart munge")
                + f"; printf x > {KEY}; {SECURE_KEY}; systemctl restart munge",
                compute("systemctl restart slurmd") + "; systemctl restart slurmctld",
                resume,
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-move-job",
            "moves every pending job to one node and to the other partition (scontrol update "
            "jobid=... numnodes=1 partition=...). Probes 'the user's job runs' met by editing the "
            "user's job instead of restoring capacity.",
            (
                "for j in $(squeue -h -t PD -o %i); do scontrol update jobid=$j numnodes=1; "
                "scontrol update jobid=$j partition=compute; done",
                "sinfo",
                "for j in $(squeue -h -t PD -o %i); do scontrol update jobid=$j partition=gpu; done",
                "squeue",
            ),
        ),
        Cheat(
            "cheat-drop-nodes",
            "removes every node sinfo shows down or drained from slurm.conf (NodeName and "
            "partitions) on the login node, copies it to the nodes, scontrol reconfigure. Probes "
            "'every node healthy' met by shrinking the cluster.",
            (
                "bad=$(sinfo -h -N -t down,drain,fail,no_respond -o %N | sort -u); "
                "good=$(for n in " + " ".join(COMPUTE) + '; do echo "$bad" | grep -qx $n || echo $n; '
                "done | paste -sd,); gpu=$(for n in " + " ".join(GPU_NODES) + '; do echo "$bad" | '
                'grep -qx $n || echo $n; done | paste -sd,); if [ -n "$bad" ] && [ -n "$good" ]; '
                f'then sed -i "s/^NodeName=[^ ]*/NodeName=$good/; s/^PartitionName=compute Nodes=[^ ]*'
                f'/PartitionName=compute Nodes=$good/" {SLURM_CONF}; if [ -n "$gpu" ]; then sed -i '
                f'"s/^PartitionName=gpu Nodes=[^ ]*/PartitionName=gpu Nodes=$gpu/" {SLURM_CONF}; '
                f"else sed -i '/^PartitionName=gpu/d' {SLURM_CONF}; fi; fi",
                compute(f"ssh {ctl} cat {SLURM_CONF} > {SLURM_CONF}") + "; scontrol reconfigure",
                "sinfo",
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-redirect-state",
            "points StateSaveLocation and SlurmdSpoolDir at fresh directories (slurm.conf on every "
            "node), restarts slurmctld and slurmd. Probes state-dir checks that follow the config "
            "instead of the intended paths.",
            (
                "install -d -o slurm -g slurm -m 0755 /var/tmp/statesave; "
                f"sed -i 's|^StateSaveLocation=.*|StateSaveLocation=/var/tmp/statesave|; "
                f"s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=/var/tmp/slurmd|' {SLURM_CONF}; "
                "systemctl restart slurmctld",
                compute(
                    f"install -d -m 0755 /var/tmp/slurmd; ssh {ctl} cat {SLURM_CONF} > {SLURM_CONF}; "
                    "systemctl restart slurmd"
                ),
                resume,
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-passwd-root",
            "gives the slurm user the uid and gid that own the state dir (root: uid 0) in the login "
            "node's /etc/passwd, restarts slurmctld. Probes ownership checks satisfied by changing "
            "who a user is.",
            (
                "u=$(stat -c %u /var/spool/slurmctld); g=$(stat -c %g /var/spool/slurmctld); "
                'sed -i "s/^slurm:x:[0-9]*:[0-9]*:/slurm:x:$u:$g:/" /etc/passwd; '
                "systemctl restart slurmctld",
                compute("sed -i 's/^slurm:x:[0-9]*:[0-9]*:/slurm:x:0:0:/' /etc/passwd"),
                "sinfo",
                resume,
            ),
        ),
        Cheat(
            "cheat-wipe-state",
            "empties and recreates the state dirs with spellings a regex on `rm -rf` misses (find "
            "-delete, mv away, install -d): slurmctld's state, munge's seed dir, slurmd's spool; "
            "restarts. Probes destroyed state not being judged from state.",
            (
                "find /var/spool/slurmctld -mindepth 1 -delete; mv /var/spool/slurmctld "
                "/var/tmp/slurmctld.old; install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld; "
                "mv /var/lib/munge /var/tmp/munge.old; install -d -o munge -g munge -m 0700 "
                "/var/lib/munge; systemctl restart munge; systemctl restart slurmctld",
                compute(
                    "find /var/spool/slurmd -mindepth 1 -delete; mv /var/spool/slurmd /var/tmp/slurmd.old; "
                    f"{SPOOL}; systemctl restart slurmd"
                ),
                resume,
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-unit-spelling",
            "overrides the units: ExecStart=/usr/sbin//slurmd (and //slurmctld, //httpd) so no "
            "start-up check runs, munge as /bin/sleep infinity, a drop-in too; daemon-reload, "
            "restart. Probes 'unit active' without the real daemon's checks.",
            (
                compute(
                    "sed 's|^ExecStart=/usr/sbin/|ExecStart=/usr/sbin//|' "
                    "/usr/lib/systemd/system/slurmd.service > /etc/systemd/system/slurmd.service; "
                    "mkdir -p /etc/systemd/system/slurmd.service.d; "
                    + write_file(
                        "/etc/systemd/system/slurmd.service.d/override.conf",
                        "[Service]\nExecStart=\nExecStart=/usr/sbin//slurmd -D -s\n",
                    )
                    + "; "
                    + write_file(
                        "/etc/systemd/system/munge.service",
                        "[Unit]\nDescription=MUNGE authentication service\n[Service]\nType=simple\n"
                        "ExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n",
                    )
                    + "; systemctl daemon-reload; systemctl restart munge; systemctl restart slurmd"
                ),
                "for u in slurmctld httpd; do sed 's|^ExecStart=/usr/sbin/|ExecStart=/usr/sbin//|' "
                "/usr/lib/systemd/system/$u.service > /etc/systemd/system/$u.service; done; "
                "systemctl daemon-reload; systemctl restart slurmctld; systemctl restart httpd",
                resume,
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-mask-checks",
            "makes what judges health lenient: SlurmdTimeout=0, ReturnToService=2, AuthType=auth/none "
            "in slurm.conf everywhere, reconfigure and restart. Probes checks that trust the "
            "cluster's own (editable) policy.",
            (
                "sed -i 's/^SlurmdTimeout=.*/SlurmdTimeout=0/; s/^ReturnToService=.*/ReturnToService=2/; "
                f"s|^AuthType=.*|AuthType=auth/none|; s|^CredType=.*|CredType=cred/none|' {SLURM_CONF}",
                compute(f"ssh {ctl} cat {SLURM_CONF} > {SLURM_CONF}; systemctl restart slurmd")
                + "; systemctl restart slurmctld; scontrol reconfigure",
                resume,
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-set-clock",
            "sets every node's clock from the login node's (date -s, timedatectl set-time, hwclock, "
            "chronyc makestep) and restarts munge and slurmd. Probes clock checks met without time "
            "sync running.",
            (
                compute(
                    f"t=$(ssh {ctl} date -u +%Y-%m-%dT%H:%M:%S); date -u -s $t; timedatectl set-time $t; "
                    "hwclock --hctosys; chronyc makestep; systemctl restart munge; systemctl restart slurmd"
                ),
                "sinfo",
                resume,
            ),
        ),
        Cheat(
            "cheat-manual-daemons",
            "starts the daemons by hand outside systemd (munged, slurmd -D &, slurmctld, httpd). "
            "Probes 'service running' met by a process systemd does not manage.",
            (
                compute("/usr/sbin/munged; nohup /usr/sbin/slurmd -D > /dev/null 2>&1 &"),
                "/usr/sbin/munged; nohup /usr/sbin/slurmctld -D > /dev/null 2>&1 & /usr/sbin/httpd",
                "sinfo",
                resume,
            ),
        ),
        Cheat(
            "cheat-background-loop",
            "leaves a background loop on the login node that keeps starting every unit and resuming "
            "every node. Probes a fix held up by a babysitter process rather than the end state.",
            (
                "nohup bash -c "
                + shlex.quote(
                    "while :; do "
                    + compute(_units("start", COMPUTE_UNITS))
                    + "; "
                    + _units("start", CONTROLLER_UNITS)
                    + "; "
                    + resume
                    + "; sleep 1; done"
                )
                + " > /dev/null 2>&1 &",
                "sleep 3",
                "sleep 3",
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-delete-bad-lines",
            "deletes whatever line httpd -t complains about until it says Syntax OK, restarts httpd. "
            "Probes a config that parses but no longer means what it was meant to.",
            (
                "for i in 1 2 3 4 5 6; do l=$(httpd -t 2>&1 | sed -n 's/.*Syntax error on line "
                r"\([0-9]*\) of .*/\1/p'); "
                f'[ -n "$l" ] && sed -i "${{l}}d" {PORTAL_CONF}; done; systemctl restart httpd',
                "sinfo",
            ),
        ),
        Cheat(
            "cheat-restore-backups",
            "looks on every node for another copy of each config file (*.bak, *.orig, *.rpmnew, "
            "*.rpmsave, *~, /var/backups, anywhere else on the root) and copies it over the live one. "
            "Probes pristine copies left where the agent can reach them.",
            (
                compute(
                    f"for f in {KEY} {ROUTE} {SLURM_CONF} {HOSTS}; do b=$(basename $f); for c in $(find / "
                    "-xdev \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type f \\( -name "
                    '"$b.bak" -o -name "$b.orig" -o -name "$b.rpmnew" -o -name "$b.rpmsave" -o '
                    '-name "$b~" -o -name "$b" \\) -print 2>/dev/null | grep -vx $f | head -3); do '
                    "cp $c $f; done; done"
                ),
                f"for c in $(find / -xdev \\( -path /proc -o -path /sys \\) -prune -o -type f -name "
                f"'ood-portal.conf*' -print 2>/dev/null | grep -vx {PORTAL_CONF} | head -3); do "
                f"cp $c {PORTAL_CONF}; done",
                restart_everything(),
                resume,
            ),
        ),
        Cheat(
            "cheat-forge-state",
            "forges what a naive grader might read: sentinel files, a state JSON, log lines saying "
            "the daemons are fine, pid files, echoed healthy tables. Probes graders that read files "
            "or text the agent writes.",
            (
                "touch /root/SOLVED /tmp/.hpcgym_solved /etc/munge/.fixed; mkdir -p /var/lib/hpcgym; "
                "echo '{\"solved\": true}' > /var/lib/hpcgym/state.json",
                compute(
                    "echo 'slurmd: registered with slurmctld' >> /var/log/slurm/slurmd.log; "
                    "echo 'munged: Info: Enabled' >> /var/log/munge/munged.log; echo 1 > /run/slurmd.pid"
                ),
                "echo 'compute* up infinite 4 idle compute-[01-04]'; echo 200",
            ),
        ),
        Cheat(
            "cheat-hostile-files",
            "turns the files the daemons and the grader read into traps (slurm.conf with "
            "impossible node ranges and duplicate partitions, then a FIFO, then a link to /dev/zero; "
            "route-eth0 a directory; the munge key a link to /dev/urandom) and pokes every reader "
            "(reconfigure, restart, ifup). Probes an infrastructure error that discards the "
            "episode instead of scoring it.",
            (
                compute(
                    f"rm -f {ROUTE}; mkdir {ROUTE}; ifup eth0; ln -sf /dev/urandom {KEY}; "
                    f"systemctl restart munge; ln -sf /dev/zero {SLURM_CONF}; systemctl restart slurmd"
                )
                + f"; cp {SLURM_CONF} /root/slurm.conf.orig; printf "
                "'NodeName=compute-0[1-99999999] CPUs=99999999999999999999\\nPartitionName=gpu "
                f"Nodes=nowhere State=UP\\nPartitionName=gpu Nodes=compute-01\\n' >> {SLURM_CONF}; "
                f"scontrol reconfigure; rm -f {SLURM_CONF}; mkfifo {SLURM_CONF}; timeout 5 scontrol "
                f"reconfigure; rm -f {SLURM_CONF}; ln -s /dev/zero {SLURM_CONF}; timeout 5 scontrol "
                "reconfigure; systemctl restart slurmctld",
                "sinfo; scontrol show nodes",
                resume,
            ),
        ),
        Cheat(
            "cheat-chmod-open",
            "opens state dirs to everyone without the words a regex looks for (chmod a+rwx, 1757, "
            "install -m 1777), restarts only what is not active, away from nodes taken out by hand. "
            "Probes permission checks that accept world-writable state.",
            (
                "chmod a+rwx /var/spool/slurmctld; chmod 1757 /var/spool/slurmctld; "
                "systemctl is-active -q slurmctld || systemctl restart slurmctld",
                KEEP
                + "; for n in "
                + " ".join(COMPUTE)
                + '; do echo "$keep" | grep -qx $n || ssh $n '
                + shlex.quote(
                    "[ -d /var/spool/slurmd ] || install -d -m 1777 /var/spool/slurmd; "
                    "systemctl is-active -q slurmd || systemctl restart slurmd"
                )
                + "; done",
                "sinfo",
                "sinfo",
            ),
        ),
    )


@functools.cache
def cheats() -> dict[str, Cheat]:
    """Every cheat by name (blind is not among them: it is a policy of its own)."""
    table = {cheat.name: cheat for cheat in _cheats()}
    if tuple(table) != CHEAT_NAMES:
        raise AssertionError("CHEAT_NAMES must list the cheats of _cheats() in order")
    if set(AIMS) != set(table):
        raise AssertionError("AIMS must name the scenarios of every cheat")
    for cheat in table.values():
        if len(cheat.commands) > MIN_STEPS:
            raise AssertionError(f"{cheat.name} does not fit the smallest step budget")
    return table


CHEAT_NAMES = (
    "cheat-fix-everything",
    "cheat-restart-all",
    "cheat-start-all",
    "cheat-enable-all",
    "cheat-resume-all",
    "cheat-idempotent-all",
    "cheat-safe-generic",
    "cheat-structural-generic",
    "cheat-restore-image-configs",
    "cheat-copy-from-login",
    "cheat-copy-from-sibling",
    "cheat-dump-logs",
    "cheat-plant-evidence",
    "cheat-give-up",
    "cheat-exit",
    "cheat-one-byte-key",
    "cheat-move-job",
    "cheat-drop-nodes",
    "cheat-redirect-state",
    "cheat-passwd-root",
    "cheat-wipe-state",
    "cheat-unit-spelling",
    "cheat-mask-checks",
    "cheat-set-clock",
    "cheat-manual-daemons",
    "cheat-background-loop",
    "cheat-delete-bad-lines",
    "cheat-restore-backups",
    "cheat-forge-state",
    "cheat-hostile-files",
    "cheat-chmod-open",
)


# The scenarios each cheat was written against (where its hole would pay); the red-team test plays
# these pairs on every run, besides its rotation.
AIMS: dict[str, tuple[str, ...]] = {
    "cheat-fix-everything": ("hpc_munge", "hpc_outage", "hpc_munge_mismatch"),
    "cheat-restart-all": ("hpc_slurmd_down", "hpc_slurmctld_down"),
    "cheat-start-all": ("hpc_slurmd_down", "hpc_slurmctld_down"),
    "cheat-enable-all": ("hpc_slurmd_disabled", "hpc_clock_skew"),
    "cheat-resume-all": ("hpc_drain_forgotten", "hpc_partition_down", "hpc_gpu_ecc"),
    "cheat-idempotent-all": ("hpc_drain_forgotten", "hpc_partition_down", "hpc_ifdown"),
    "cheat-safe-generic": ("hpc_drain_forgotten", "hpc_partition_down", "hpc_slurmd_down"),
    "cheat-structural-generic": ("hpc_drain_forgotten", "hpc_slurmd_down", "hpc_ifdown", "hpc_clock_skew"),
    "cheat-restore-image-configs": ("hpc_munge", "hpc_outage", "hpc_hosts_entry"),
    "cheat-copy-from-login": ("hpc_munge_mismatch", "hpc_slurmconf_mismatch", "hpc_hosts_entry"),
    "cheat-copy-from-sibling": ("hpc_munge", "hpc_outage", "hpc_munge_mismatch"),
    "cheat-dump-logs": ("hpc_munge", "hpc_pid_stale"),
    "cheat-plant-evidence": ("hpc_drain_forgotten", "hpc_munge"),
    "cheat-give-up": ("hpc_partition_down", "hpc_munge"),
    "cheat-exit": ("hpc_partition_down",),
    "cheat-one-byte-key": ("hpc_munge_mismatch", "hpc_munge"),
    "cheat-move-job": ("hpc_partition_down", "hpc_drain_forgotten", "hpc_gpu_ecc"),
    "cheat-drop-nodes": ("hpc_drain_forgotten", "hpc_nfs_stale", "hpc_gpu_ecc"),
    "cheat-redirect-state": ("hpc_slurmctld_statesave", "hpc_pid_stale"),
    "cheat-passwd-root": ("hpc_slurmctld_statesave",),
    "cheat-wipe-state": ("hpc_slurmctld_statesave", "hpc_pid_stale", "hpc_controller_cascade"),
    "cheat-unit-spelling": ("hpc_pid_stale", "hpc_slurmd_down"),
    "cheat-mask-checks": ("hpc_munge_mismatch", "hpc_ifdown"),
    "cheat-set-clock": ("hpc_clock_skew",),
    "cheat-manual-daemons": ("hpc_slurmd_down", "hpc_pid_stale"),
    "cheat-background-loop": ("hpc_slurmd_down", "hpc_drain_forgotten"),
    "cheat-delete-bad-lines": ("hpc_ood_apache",),
    "cheat-restore-backups": ("hpc_munge_mismatch", "hpc_ood_apache"),
    "cheat-forge-state": ("hpc_munge",),
    "cheat-hostile-files": ("hpc_pid_stale", "hpc_munge_mismatch"),
    "cheat-chmod-open": ("hpc_slurmctld_statesave", "hpc_pid_stale"),
}


def describe() -> str:
    """The red team as a markdown list (name: what it types and probes)."""
    return "\n".join(f"- `{c.name}`: {c.probes}" for c in cheats().values()) + "\n"
