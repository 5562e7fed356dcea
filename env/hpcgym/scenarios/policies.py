"""Policies that play incidents: gold, noop, random, destructive, a scripted expert, an LLM, the red team.

A policy sees what an agent sees: the alert at `reset`, then each command's output at `act`, and
answers with the next command line (or None to stop). Only `GoldPolicy` is given the scenario's
gold commands, by `make_policy`; the expert works from observations alone, like an operator with
a runbook; the LLM policy talks to any OpenAI-compatible endpoint (vLLM, llama.cpp, a hosted API).
`blind` and the `cheat-*` policies (cheats.py) type fixed scripts without reading anything; the
group name `cheats` stands for all of them (`expand_policy_names`).
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import random
import re
import shlex
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpcgym.controller.hostlist import expand_hostlist
from hpcgym.controller.timefmt import format_limit, parse_time_limit
from hpcgym.errors import ScenarioError
from hpcgym.interfaces import chat
from hpcgym.scenarios import accounting_runbook, cheats
from hpcgym.scenarios.incident import LOGIN_NODE, first_observation

BASE_POLICY_NAMES = ("gold", "noop", "random", "destructive", "expert", "llm", "blind")
POLICY_NAMES = (*BASE_POLICY_NAMES, *cheats.CHEAT_NAMES)
# Names that stand for several policies on the command line (`invoke eval --policies gold,cheats`).
POLICY_GROUPS: dict[str, tuple[str, ...]] = {"cheats": ("blind", *cheats.CHEAT_NAMES)}
NODES = ("compute-01", "compute-02", "compute-03", "compute-04")
UNITS = ("munge", "slurmd", "slurmctld", "httpd")


class Policy(Protocol):
    """Chooses the next command from what the terminal showed."""

    name: str

    def reset(self, alert: str, seed: int) -> None:
        """Start a new episode with the alert the agent reads."""
        ...

    def act(self, observation: str) -> str | None:
        """The next command line after `observation` (the last output), or None to stop."""
        ...


class ScriptedPolicy:
    """Types a fixed list of commands in order, whatever the terminal shows, then stops."""

    name = "scripted"

    def __init__(self, commands: Sequence[str]) -> None:
        self.commands = list(commands)
        self.index = 0

    def reset(self, alert: str, seed: int) -> None:
        self.index = 0

    def act(self, observation: str) -> str | None:
        if self.index >= len(self.commands):
            return None
        self.index += 1
        return self.commands[self.index - 1]


class GoldPolicy(ScriptedPolicy):
    """Types the scenario's gold commands in order."""

    name = "gold"


class CheatPolicy(ScriptedPolicy):
    """A red-team script (cheats.py): typed in order, whatever the terminal shows."""

    def __init__(self, cheat: cheats.Cheat) -> None:
        super().__init__(cheat.commands)
        self.name = cheat.name


class BlindPolicy(ScriptedPolicy):
    """Every scenario's state-changing gold fix over every variant, then restart and resume all.

    It reads nothing: what it types is the same in every episode (`cheats.blind_commands`).
    """

    name = "blind"

    def __init__(self) -> None:
        super().__init__(cheats.blind_commands())


class NoopPolicy:
    """Does nothing useful: looks, never touches (`true`, `sinfo`)."""

    name = "noop"

    def reset(self, alert: str, seed: int) -> None:
        self.count = 0

    def act(self, observation: str) -> str | None:
        self.count += 1
        return "sinfo" if self.count % 2 else "true"


def _vocabulary() -> list[str]:
    """What an operator types on this cluster, looking far more often than touching, as on real shifts.

    Read-only checks outnumber changes about four to one; every fix a tier-1 incident needs is in
    here, so a random walk can stumble on one, but rarely on the right one for the right node.
    """
    words = [
        "sinfo",
        "sinfo -R",
        "sinfo -N -l",
        "sinfo -p gpu",
        "squeue",
        "squeue -l",
        "squeue --start",
        "sacct -X",
        "scontrol show nodes",
        "scontrol show partition",
        "scontrol show config",
        "scontrol ping",
        "systemctl --failed",
        "systemctl list-units --type=service",
        "curl -sI http://login01/",
        "curl -s http://login01/ -o /dev/null -w '%{http_code}'",
        "cat /etc/slurm/slurm.conf",
        "tail -n 20 /var/log/slurm/slurmctld.log",
        "ls -l /etc/munge",
        "cat /etc/hosts",
        "df -h",
        "free -m",
        "uptime",
        "ps aux",
        "ip addr",
        "ip route",
        "hostname",
        "date",
        "munge -n | unmunge",
        "httpd -t",
        "tail -n 20 /var/log/httpd/error_log",
        "sbatch --wrap hostname",
        "srun -N1 hostname",
    ]
    for unit in UNITS:
        words += [
            f"systemctl status {unit}",
            f"systemctl is-active {unit}",
            f"journalctl -u {unit} --no-pager -n 20",
            f"systemctl restart {unit}",
        ]
    for node in NODES:
        for command in (
            "uptime",
            "df -h",
            "free -m",
            "ip addr",
            "ip route",
            "ps aux",
            "pgrep -a slurmd",
            "pgrep -a munged",
            "systemctl status slurmd",
            "systemctl status munge",
            "journalctl -u slurmd --no-pager -n 20",
            "journalctl -u munge --no-pager -n 20",
            "cat /etc/sysconfig/network-scripts/route-eth0",
            "cat /etc/sysconfig/network-scripts/ifcfg-eth0",
            "ls -l /etc/munge",
            "tail -n 20 /var/log/slurm/slurmd.log",
            "ls -ld /var/spool/slurmd",
            "nvidia-smi",
            "systemctl restart slurmd",
            "systemctl restart munge",
            "ifup eth0",
        ):
            words.append(f"ssh {node} {command}")
        words += [f"scontrol show node {node}", f"scontrol update nodename={node} state=resume"]
    return words


class RandomPolicy:
    """Commands drawn from an operator's vocabulary, seeded (restarts, resumes, status checks)."""

    name = "random"
    vocabulary = _vocabulary()

    def reset(self, alert: str, seed: int) -> None:
        self.rng = random.Random(f"random:{seed}")

    def act(self, observation: str) -> str | None:
        return self.rng.choice(self.vocabulary)


class DestructivePolicy(ScriptedPolicy):
    """What not to do: mass cancels, healthy nodes set down, world-writable keys, reboots."""

    name = "destructive"
    COMMANDS = (
        "scancel -u alice",
        "chmod 777 /etc/munge/munge.key",
        "scontrol update nodename=compute-01 state=down reason=debug",
        "systemctl stop munge",
        "rm -rf /var/spool/slurmctld",
        "reboot",
    )

    def __init__(self) -> None:
        super().__init__(self.COMMANDS)


# ---- the scripted expert -----------------------------------------------------------------------------

Plan = Generator[str, str, None]

# How admins and health checks say a node waits on hardware work: the runbook's words, not a list
# of this library's reasons (a reason that names finished work, like "BIOS update", does not match).
# NVIDIA's Xid catalogue: codes whose resolution is restarting the application (13 Graphics Engine
# Exception, 31 GPU memory page fault, 43 GPU stopped processing, 45 preemptive cleanup).
APPLICATION_XIDS = frozenset({13, 31, 43, 45})
HELD_FOR_REPAIR = re.compile(
    r"do not resume|pending|awaiting|waiting on|\bRMA\b|vendor|burn-in|machine check|leave (it )?out"
    r"|ticket \d+ open|\bcase \d+|check_hw_",
    re.IGNORECASE,
)


class ExpertPolicy:
    """A runbook-driven operator: reads tool output, follows the evidence, fixes, verifies.

    It knows Rocky/Slurm conventions (unit names, file locations, what munged and slurmd log), never
    the scenario, and no value of the cluster's: addresses, the gateway, the munge key and paths are
    read from the cluster (a healthy sibling, the controller, the majority of nodes, the logs).
    """

    name = "expert"

    def reset(self, alert: str, seed: int) -> None:
        self.alert = alert
        self.plan: Plan = self._triage()
        self.started = False

    def act(self, observation: str) -> str | None:
        try:
            if not self.started:
                self.started = True
                return next(self.plan)
            return self.plan.send(observation)
        except StopIteration:
            return None

    # Each helper is a sub-plan: `out = yield command` types a command and receives its output.

    def _triage(self) -> Plan:
        yield from self._controller()
        yield from self._portal()
        out = yield 'sinfo -N -h -o "%N %t"'
        if re.search(r"(?m) unk\*?$", out):
            # A restarted slurmctld knows nodes only once they register again: ask once more.
            out = yield 'sinfo -N -h -o "%N %t"'
        self.nodes = sorted({line.split()[0] for line in out.splitlines() if line.split()})
        bad = sorted(
            {
                line.split()[0]
                for line in out.splitlines()
                # A node held by a reservation (maint, resv) is not broken: the queue scan below
                # looks at the reservation.
                if len(line.split()) == 2
                and not line.split()[1].startswith(("idle", "mix", "alloc", "maint", "resv"))
            }
        )
        # Siblings to read the cluster's own values from: responding and in service now.
        self.healthy = [node for node in self.nodes if node not in bad]
        for node in bad:
            yield from self._node(node)
        out = yield "squeue -h -o '%i %P %r'"
        waiting = [line.split(None, 2) for line in out.splitlines() if len(line.split(None, 2)) == 3]
        for _, partition, why in waiting:
            if why.strip("()") in ("PartitionDown", "PartitionInactive"):
                yield from self._partition(partition)
        for job_id, _, why in waiting:
            # Requeued held after its launch failed on a node (a Prolog error): with the node
            # repaired above, the hold is lifted.
            if why.strip("()") == "launch failed requeued held":
                yield f"scontrol release {job_id}"
        if any(why == "Licenses" for _, _, why in waiting):
            yield from self._licenses()
        limited = sorted({p for _, p, why in waiting if why.strip("()") == "PartitionTimeLimit"})
        if limited:
            yield from self._partition_time_limits(limited)
        for partition in sorted({p for _, p, why in waiting if why.endswith("Reserved for maintenance")}):
            yield from self._maintenance_reservation(partition)
        yield from accounting_runbook.accounting(self.alert)
        if "exit code 127" in getattr(self, "alert", ""):
            # A user's ticket about jobs that die at start: look at where they died.
            yield from self._jobs_dying_at_start()
        if "exit code 126" in getattr(self, "alert", ""):
            yield from self._program_closed_to_users()
        yield "sinfo"

    def _program_closed_to_users(self) -> Plan:
        # Exit 126 with "Permission denied" from the batch script: root can run the program, its user
        # cannot. namei -l shows each component of its path; those that other users may not enter
        # (directories without o+x) or run (the program without o+rx) are opened for group and
        # others, and nothing else.
        out = yield "grep -H 'Permission denied' /home/*/slurm-*.out | sort | head -n 3"
        found = re.search(r"^/home/([\w.-]+)/slurm-\d+\.out:.*line \d+: (/\S+): Permission denied", out, re.M)
        if found is None:
            return
        user, program = found[1], found[2]
        yield f"su - {user} -c {shlex.quote(program)}"
        listing = yield f"namei -l {program}"
        here, closed = "", []
        for line in listing.splitlines()[1:]:
            fields = line.split(None, 3)
            if len(fields) != 4 or len(fields[0]) != 10:
                continue
            mode, name = fields[0], fields[3]
            here = "/" if name == "/" else posixpath.join(here or "/", name)
            others = mode[7:10]
            if (mode[0] == "d" and others[2] != "x") or (mode[0] == "-" and others[0::2] != "rx"):
                closed.append(here)
        if closed:
            yield "chmod go+rx " + " ".join(shlex.quote(path) for path in closed)
            yield f"su - {user} -c {shlex.quote(program)}"
            # The user's next queued job should now start and keep running.
            yield f"squeue -u {user}"
            yield f"squeue -u {user} -t R"

    def _jobs_dying_at_start(self) -> Plan:
        # Jobs that end at once with 127 on one host while the same jobs run elsewhere: that node's
        # loader cannot map a library. The job's output names the soname; rpm on a healthy sibling
        # names its package; rpm on the bad host says whether it is gone (install) or damaged
        # (rpm -V lists files: reinstall).
        out = yield "scontrol show job | grep -E 'JobId|JobState|ExitCode|BatchHost'"
        hosts: list[str] = []
        for record in out.split("JobId=")[1:]:
            batch_host = re.search(r"BatchHost=(\S+)", record)
            if "JobState=FAILED" in record and "ExitCode=127:0" in record and batch_host:
                hosts.append(batch_host[1])
        if not hosts:
            return
        host = max(sorted(set(hosts)), key=hosts.count)
        out = yield "cat /home/*/slurm-*.out | sort | uniq -c"
        libs = sorted(set(re.findall(r"error while loading shared libraries: ([\w.+-]+):", out)))
        siblings = [node for node in getattr(self, "healthy", ()) if node not in (host, LOGIN_NODE)]
        for soname in libs:
            owner = yield f"ssh {siblings[0] if siblings else host} rpm -qf /usr/lib64/{soname}"
            found = re.match(r"(\S+?)-\d[^-]*-[^-]+\.\w+$", owner.strip())
            if found is None:
                continue
            package = found[1]
            state = yield f"ssh {host} rpm -q {package}"
            if "is not installed" in state:
                yield f"ssh {host} dnf -y install {package}"
            else:
                damage = yield f"ssh {host} rpm -V {package}"
                if damage.strip():
                    yield f"ssh {host} dnf -y reinstall {package}"
            yield f"ssh {host} rpm -V {package}"

    def _licenses(self) -> Plan:
        # What slurm.conf counts against what the license server's file grants (FlexLM INCREMENT
        # lines: feature, vendor, version, expiry, count): each license gets the count it is granted.
        line = yield "grep -i '^Licenses=' /etc/slurm/slurm.conf"
        have = re.search(r"(?im)^Licenses=(\S+)", line)
        granted = yield "cat /opt/flexlm/licenses/*.lic"
        owned = {m[1]: m[2] for m in re.finditer(r"(?m)^INCREMENT (\S+) \S+ \S+ \S+ (\d+)\b", granted)}
        if have is None or not owned:
            return
        items = [item.partition(":") for item in have[1].split(",")]
        new = ",".join(f"{name}:{owned.get(name, count or '1')}" for name, _, count in items)
        if new == have[1]:
            return
        edit = f"sed -i 's/^Licenses=.*/Licenses={new}/' /etc/slurm/slurm.conf"
        yield edit
        for node in getattr(self, "nodes", ()):
            yield f"ssh {node} {shlex.quote(edit)}"
        yield "scontrol reconfigure"

    def _partition_time_limits(self, partitions: list[str]) -> Plan:
        # Jobs over their partition's MaxTime: a partition whose MaxTime is not the limit the site
        # announces to its users (the login banner's queue policy) gets that limit back in
        # slurm.conf on every node; one whose MaxTime is the announced limit is right, and the jobs
        # waiting there asked for more than it allows.
        motd = yield "cat /etc/motd"
        for name in partitions:
            said = re.search(rf"(?im)^\s*{re.escape(name)}:\s*(\d+)\s*(day|hour|minute)s?\b", motd)
            shown = yield f"scontrol show partition {name}"
            have = re.search(r"\bMaxTime=(\S+)", shown)
            if said is None or have is None:
                continue
            minutes = int(said[1]) * {"day": 1440, "hour": 60, "minute": 1}[said[2].lower()]
            try:
                if parse_time_limit(have[1]) == minutes:
                    continue
            except ValueError:
                continue
            edit = (
                f"sed -i '/^PartitionName={name} /s/MaxTime=[^ ]*/MaxTime={format_limit(minutes)}/' "
                "/etc/slurm/slurm.conf"
            )
            yield edit
            nodes = " ".join(getattr(self, "nodes", ()))
            if nodes:
                yield f"for n in {nodes}; do ssh $n {shlex.quote(edit)}; done"
            yield "scontrol reconfigure"

    def _maintenance_reservation(self, partition: str) -> Plan:
        # A MAINT reservation over every node of the partition: one the login banner announces for
        # another window is made again over that window (an active one cannot be moved); one made
        # with no end (Duration=infinite) that began long ago is a finished window left behind.
        # Any other is someone's plan and stays.
        listed = yield f"sinfo -h -p {partition} -o %N"
        nodes = set(expand_hostlist(",".join(listed.split()) or "-"))
        shown = yield "scontrol show reservation"
        motd = yield "cat /etc/motd"
        for record in shown.split("\n\n"):
            fields = dict(re.findall(r"(\w+)=(\S+)", record))
            name, held = fields.get("ReservationName"), set(expand_hostlist(fields.get("Nodes", "-")))
            if not name or "MAINT" not in fields.get("Flags", "") or not nodes <= held:
                continue
            when = re.search(
                re.escape(name) + r"\b[\s\S]*?from (\S+) (\d\d:\d\d) UTC to (\S+) (\d\d:\d\d) UTC", motd
            )
            if when is not None:
                start, end = f"{when[1]}T{when[2]}:00", f"{when[3]}T{when[4]}:00"
                if fields.get("StartTime") == start:
                    continue
                yield (
                    f"scontrol delete reservationname={name} && scontrol create reservation "
                    f"reservationname={name} starttime={start} endtime={end} nodes={fields['Nodes']} "
                    f"users={fields.get('Users', 'root')} flags={fields['Flags'].replace(',SPEC_NODES', '')}"
                )
            elif fields.get("Duration") == "365-00:00:00":
                yield f"scontrol delete reservationname={name}"

    def _partition(self, name: str) -> Plan:
        # slurm.conf says whether it is meant closed: a comment above its line says why. One kept
        # closed on purpose stays so; one closed for work that is over is opened in the file on
        # every node, then at runtime.
        conf = yield f"grep -i -B1 '^PartitionName={name} ' /etc/slurm/slurm.conf"
        state = re.search(r"(?i)\bState=(DOWN|INACTIVE|DRAIN)\b", conf)
        if state is not None:
            if re.search(r"(?i)do not open", conf):
                return
            edit = f"sed -i '/^PartitionName={name} /s/State={state[1]}/State=UP/' /etc/slurm/slurm.conf"
            yield edit
            for node in getattr(self, "nodes", ()):
                yield f"ssh {node} {shlex.quote(edit)}"
            yield "scontrol reconfigure"
        yield f"scontrol update partitionname={name} state=up"

    def _fix_munge(self, node: str) -> Plan:
        run = _on(node)
        out = yield run("journalctl -u munge --no-pager -n 20")
        if "PRNG seed dir is insecure" in out:
            yield run("chmod 0700 /var/lib/munge")
        if "Keyfile is insecure" in out:
            yield run("chown munge:munge /etc/munge/munge.key")
            yield run("chmod 0400 /etc/munge/munge.key")
        yield run("systemctl restart munge")

    def _controller(self) -> Plan:
        out = yield "systemctl is-active munge slurmctld"
        states = out.split()
        if states and states[0] != "active":
            yield from self._fix_munge("login01")
        if len(states) > 1 and states[1] != "active":
            log = yield "journalctl -u slurmctld --no-pager -n 20"
            torn = re.search(r"Can not recover (node|partition|job|reservation) state", log)
            if torn is not None:
                # One save is unreadable: put back the copy slurmctld kept before it, that file only.
                conf = yield "grep -i '^StateSaveLocation=' /etc/slurm/slurm.conf"
                where = re.search(r"(?im)^StateSaveLocation=(\S+)", conf)
                name = {"partition": "part", "reservation": "resv"}.get(torn[1], torn[1]) + "_state"
                path = f"{where[1] if where else '/var/spool/slurmctld'}/{name}"
                yield f"cp -p {path}.old {path}"
            save = re.search(r"Incorrect permissions on state save loc: (\S+)", log)
            if save is not None:
                # slurmctld must own it as SlurmUser, whoever slurm.conf names.
                conf = yield "grep -i '^SlurmUser=' /etc/slurm/slurm.conf"
                user = re.search(r"(?im)^SlurmUser=(\S+)", conf)
                owner = user[1] if user else "slurm"
                yield f"chown {owner}: {save[1]}"
            yield "systemctl restart slurmctld"

    def _portal(self) -> Plan:
        out = yield "systemctl is-active httpd"
        if out.strip() == "active":
            return
        for _ in range(3):
            check = yield "httpd -t"
            match = re.search(r"Syntax error on line (\d+) of (\S+):\n(.*)", check)
            if match is None:
                break
            line, path, why = int(match[1]), match[2], match[3]
            fix = _apache_fix(why)
            if fix is None:
                break
            old, new = fix
            yield f"sed -i '{line}s|{old}|{new}|' {path}"
        yield "systemctl restart httpd"

    def _node(self, node: str) -> Plan:
        out = yield f"scontrol show node {node}"
        found = re.search(r"Reason=(.*?)(?: \[|$)", out, re.MULTILINE)
        reason = found[1] if found is not None else None
        if reason is not None and HELD_FOR_REPAIR.search(reason):
            # Out for hardware work that is not done (a part awaited, a vendor case, a failed
            # hardware check): not part of the incident, and not to be brought back.
            return
        if reason is not None and (yield from self._first_repair(node, reason)):
            return
        yield from self._daemons(node)
        yield from self._controller_link(node)
        if reason is not None:
            yield from self._reason_repairs(node, reason)
        out = yield f"sinfo -h -n {node} -o %t"
        if not out.strip().startswith("idle") or reason is not None:
            yield f"scontrol update nodename={node} state=resume"

    def _first_repair(self, node: str, reason: str) -> Generator[str, str, bool]:
        """What the drain reason says to do before the daemons; True when that settles the node."""
        if reason.startswith("Prolog error") and (yield from self._prolog(node)):
            return True
        if reason.startswith("Kill task failed"):
            yield from self._unkillable_task(node)
            return True
        if reason.startswith("Epilog error"):
            yield from self._epilog(node)
            return True
        if "Xid" in reason and (yield from self._xid(node)):
            return True
        if reason.startswith("Node unexpectedly rebooted"):
            # Back from a crash: only if what crashed it is not failing still (a GPU that keeps
            # reporting uncorrectable ECC errors stays down for the vendor).
            return (yield from self._ecc_failing(node))
        return False

    def _prolog(self, node: str) -> Generator[str, str, bool]:
        """Run the Prolog by hand until it passes; True once it did and the node is resumed."""
        # slurmd drained it when its Prolog failed: run the Prolog by hand; what it reports
        # missing (a share that did not mount) is mounted from fstab, until it passes.
        run = _on(node)
        script = yield from _conf_script(run, "Prolog")
        for _ in range(3 if script is not None else 0):
            out = yield run(f"'bash {script}; echo prolog-rc=$?'")
            if "prolog-rc=0" in out:
                # It passes by hand now: slurmd itself was never the problem.
                yield f"scontrol update nodename={node} state=resume"
                return True
            for point in re.findall(r"(/\S+) is not mounted", out):
                yield run(f"mount {point}")
        return False

    def _unkillable_task(self, node: str) -> Plan:
        # A job's process that SIGKILL could not end: asleep in a call to a network filesystem
        # that stopped answering (df names it). Forcing that mount off (umount -f) ends the
        # call and the job completes; the share is mounted again and the node resumes.
        run = _on(node)
        out = yield run("df -P")
        for point in re.findall(r"^df: (/\S*): Stale file handle$", out, re.MULTILINE):
            yield run(f"umount -f {point}")
            yield run(f"mount {point}")
        yield f"scontrol update nodename={node} state=resume"

    def _xid(self, node: str) -> Generator[str, str, bool]:
        """Read the Xid codes: True when that settles the node (hardware kept out, or none logged)."""
        # A health check that drains on any Xid: the code in the kernel log says whether the GPU
        # is fine (an application's fault: resume) or not (hardware: it stays out, and the
        # reason says which Xid, for whoever reboots it or calls the vendor).
        log = yield _on(node)("dmesg")
        codes = {int(code) for code in re.findall(r"NVRM: Xid \([^)]*\): (\d+),", log)}
        hardware = sorted(codes - APPLICATION_XIDS)
        if hardware:
            yield (
                f"scontrol update nodename={node} state=drain "
                f"reason='Xid {hardware[0]} on a GPU, kept out for repair'"
            )
        return bool(hardware or not codes)

    def _ecc_failing(self, node: str) -> Generator[str, str, bool]:
        """Whether a GPU of the node still counts uncorrectable ECC errors."""
        ecc = yield _on(node)(
            "nvidia-smi --query-gpu=index,ecc.errors.uncorrected.volatile.total --format=csv,noheader"
        )
        return any(c.strip().isdigit() and int(c) > 0 for c in re.findall(r"^\d+,(.*)$", ecc, re.MULTILINE))

    def _daemons(self, node: str) -> Plan:
        """Bring munge and slurmd back where they are not active."""
        run = _on(node)
        states = (yield run("systemctl is-active munge slurmd")).split()
        if states and states[0] != "active":
            yield from self._fix_munge(node)
        if len(states) > 1 and states[1] != "active":
            enabled = yield run("systemctl is-enabled slurmd")
            if enabled.strip() == "disabled":
                yield run("systemctl enable slurmd")
            log = yield run("journalctl -u slurmd --no-pager -n 20")
            spool = re.search(r"Domain socket directory (\S+): No such file", log)
            if spool is not None:
                yield run(f"install -d -o root -g root -m 0755 {spool[1]}")
            if "lookup failure for node" in log or "Unable to process configuration" in log:
                yield run("'ssh login01 cat /etc/slurm/slurm.conf > /etc/slurm/slurm.conf'")
            yield run("systemctl restart slurmd")

    def _controller_link(self, node: str) -> Plan:
        """Mend what slurmd's log says keeps it from slurmctld: the network, or munge's trust."""
        run = _on(node)
        log = yield run("journalctl -u slurmd --no-pager -n 5")
        # The log may be old news: whether the node reaches its controller now is for ping to say.
        cut_off = "Unable to contact slurm controller" in log and (yield from self._network(node))
        if not cut_off and "Zero Bytes were transmitted" in log:
            # slurmctld rejects what the node signs: a foreign munge key, or a clock nothing keeps.
            tracking = yield run("chronyc tracking")
            if "Cannot talk to daemon" in tracking:
                yield run("systemctl enable --now chronyd")
            else:
                yield from self._sync_munge_key(node)

    def _reason_repairs(self, node: str, reason: str) -> Plan:
        """The repairs the drain reason asks for once the daemons run."""
        run = _on(node)
        if "ECC" in reason or "GPU" in reason or "gpu" in reason:
            ecc = yield run(
                "nvidia-smi --query-gpu=index,ecc.errors.uncorrected.volatile.total --format=csv,noheader"
            )
            for line in ecc.splitlines():
                index, _, count = line.partition(",")
                if count.strip().isdigit() and int(count) > 0:
                    yield run(f"nvidia-smi -r -i {index.strip()}")
        if "check_file" in reason or "check_fs" in reason:
            # A health check on a filesystem: df names every mount it cannot stat (a stale NFS handle).
            out = yield run("df -P")
            for point in re.findall(r"^df: (/\S*): Stale file handle$", out, re.MULTILINE):
                yield run(f"umount -l {point}")
                yield run(f"mount {point}")
        if re.search(r"\bLow (RealMemory|CPUs)\b", reason):
            yield from self._node_specs(node)
        if "check_file_test" in reason:
            yield from self._scratch_dir(node, reason)
        if "gres/gpu count reported lower than configured" in reason:
            yield from self._gres_conf(node)

    def _node_specs(self, node: str) -> Plan:
        # slurmctld drained a node that registered with less than its line says: its line takes what
        # `slurmd -C` reports (CPUs, layout, memory), in slurm.conf on every node, on a line of its
        # own if it shared one; the other nodes' lines stay. A changed CPU count needs slurmctld
        # restarted (a reconfigure refuses it), and the node's slurmd after it; memory alone, a
        # reconfigure.
        out = yield f"{_on(node)('slurmd -C')}; grep '^NodeName=' /etc/slurm/slurm.conf"
        # slurmd -C's two lines (its NodeName line, then UpTime=), then the controller's lines.
        printed, _, listed = out.partition("\nUpTime=")
        have = re.findall(rf"\b({'|'.join(_SPEC_KEYS)})=(\d+)", printed)
        if "RealMemory" not in dict(have):
            return
        line = _conf_line_of(listed.partition("\n")[2], node)
        if line is None:
            return
        names, rest = line
        edits = []
        if names != node:
            others = ",".join(name for name in expand_hostlist(names) if name != node)
            edits.append(
                f"sed -i 's/^NodeName={_bre(names)} \\(.*\\)$/NodeName={others} \\1\\nNodeName={node} \\1/' "
                "/etc/slurm/slurm.conf"
            )
        spec = " ".join(f"{key}={value}" for key, value in have)
        keys = "\\|".join((*_SPEC_KEYS, "Procs", "Sockets"))
        edits.append(
            f"sed -i '/^NodeName={node} /{{s/ \\({keys}\\)=[0-9]*//gI;"
            f"s/^NodeName={node} /NodeName={node} {spec} /}}' /etc/slurm/slurm.conf"
        )
        edit = "; ".join(edits)
        yield edit
        for other in getattr(self, "nodes", ()):
            yield f"ssh {other} {shlex.quote(edit)}"
        old_cpus = re.search(r"(?i)\bCPUs=(\d+)", rest)
        if old_cpus is not None and old_cpus[1] == dict(have).get("CPUs"):
            yield "scontrol reconfigure"
            return
        yield "systemctl restart slurmctld"
        yield _on(node)("systemctl restart slurmd")
        for _ in range(4):
            # It registers again once slurmctld is back: until then it is still INVALID_REG, and no
            # resume is taken.
            shown = yield f"scontrol show node {node}"
            if "INVALID_REG" not in shown:
                break

    def _gres_conf(self, node: str) -> Plan:
        # slurmd registered fewer GPUs than slurm.conf's Gres=: gres.conf names each GPU the node
        # has (nvidia-smi -L) by its device file; slurm.conf, which counts them right, stays.
        run = _on(node)
        listed = yield run("nvidia-smi -L")
        count = len(re.findall(r"(?m)^GPU \d+:", listed))
        if not count:
            return
        yield run(f"cat {GRES_CONF}")
        files = "/dev/nvidia0" if count == 1 else f"/dev/nvidia[0-{count - 1}]"
        yield run(f"\"sed -i 's|^Name=gpu .*|Name=gpu File={files}|' {GRES_CONF}\"")
        yield run("systemctl restart slurmd")

    def _scratch_dir(self, node: str, reason: str) -> Plan:
        # NHC failed a test on a scratch directory every job writes to: it must be 1777 again; NHC
        # run by hand then resumes the node it drained.
        failed = re.search(r"check_file_test:  -\w (/tmp|/var/tmp) returned 1", reason)
        if failed is None:
            return
        run = _on(node)
        yield run(f"ls -ld {failed[1]}")
        yield run(f"chmod 1777 {failed[1]}")
        yield run("nhc")

    def _epilog(self, node: str) -> Plan:
        # slurmd drained it when its Epilog failed: run the Epilog by hand; a command it cannot find
        # is one its directories hold under a close name (a typo pushed to every node), fixed on
        # every compute node, before the node resumes.
        run = _on(node)
        script = yield from _conf_script(run, "Epilog")
        for _ in range(3 if script is not None else 0):
            out = yield run(f"'bash {script}; echo epilog-rc=$?'")
            if "epilog-rc=0" in out:
                yield f"scontrol update nodename={node} state=resume"
                return
            missing = re.search(r"line \d+: (/\S+): No such file or directory", out)
            if missing is None:
                return
            listing = yield run("ls -1 /usr/local/sbin /usr/local/bin")
            where, names = "", []
            for line in listing.splitlines():
                if line.endswith(":"):
                    where = line[:-1]
                elif line.strip() and where:
                    names.append(f"{where}/{line.strip()}")
            best = difflib.get_close_matches(missing[1], names, n=1, cutoff=0.8)
            if not best:
                return
            fix = f"sed -i 's|{missing[1]} |{best[0]} |' {script}"
            for host in getattr(self, "nodes", (node,)):
                yield f"ssh {host} {shlex.quote(fix)}"

    def _sync_munge_key(self, node: str) -> Plan:
        # The cluster's key is the one most nodes hold (the controller's when it is among them); the
        # node that signs what slurmctld cannot decode takes it byte for byte.
        hosts = ["login01", *getattr(self, "nodes", ())]
        listing = "; ".join(f"echo {host} $(ssh {host} md5sum {_KEY})" for host in hosts)
        out = yield listing
        digests = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] in hosts and re.fullmatch(r"[0-9a-f]{32}", fields[1]):
                digests[fields[0]] = fields[1]
        counts: dict[str, int] = {}
        for digest in digests.values():
            counts[digest] = counts.get(digest, 0) + 1
        if not counts or digests.get(node) == max(counts, key=counts.__getitem__):
            return
        best = max(counts.values())
        majority = {digest for digest, count in counts.items() if count == best}
        if len(majority) > 1 and digests.get("login01") in majority:
            majority = {digests["login01"]}
        if len(majority) != 1:
            return
        (want,) = majority
        source = next(host for host in hosts if digests.get(host) == want and host != node)
        run = _on(node)
        yield run(f"'ssh {source} base64 -w0 {_KEY} | base64 -d > {_KEY}'")
        yield run(f"chown munge:munge {_KEY}")
        yield run(f"chmod 0400 {_KEY}")
        yield run("systemctl restart munge")

    def _network(self, node: str) -> Generator[str, str, bool]:
        """Give the node its path to the controller back; False when it had one all along."""
        run = _on(node)
        if _answered((yield run("ping -c 1 -W 1 login01"))):
            return False
        addr = yield run("ip -4 addr show eth0")
        if re.search(r"^\d+: eth0: .*\bstate DOWN\b", addr, re.MULTILINE):
            yield run("ifup eth0")
            if _answered((yield run("ping -c 1 -W 1 login01"))):
                return True
            addr = yield run("ip -4 addr show eth0")
        mine = yield run("getent hosts login01")
        truth = yield "getent hosts login01"
        if mine.split()[:1] != truth.split()[:1] and truth.split():
            wrong = mine.split()[0] if mine.split() else ""
            if wrong:
                yield run(f"\"sed -i 's/^{re.escape(wrong)} /{truth.split()[0]} /' /etc/hosts\"")
            return True
        # Each rack has its own subnet and router, at the host number every router of the site uses:
        # the service network and that host number come from healthy siblings' route files, the
        # subnet from the node's own address.
        peers = [n for n in getattr(self, "healthy", ()) if n != node][:2]
        routes = []
        for peer in peers:
            fields = dict(re.findall(r"^(\w+)=(\S+)$", (yield f"ssh {peer} cat {_ROUTE}"), re.MULTILINE))
            if {"ADDRESS0", "NETMASK0", "GATEWAY0"} <= fields.keys():
                routes.append((fields["ADDRESS0"], fields["NETMASK0"], fields["GATEWAY0"]))
        address_line = re.search(r"inet (\d+\.\d+\.\d+\.\d+/\d+) .*\beth0$", addr, re.MULTILINE)
        if not routes or address_line is None:
            return True
        address, netmask, gateway = max(routes, key=routes.count)
        subnet = ipaddress.IPv4Interface(address_line[1]).network
        router = int(ipaddress.IPv4Address(gateway)) & int(subnet.hostmask)
        mine_gateway = subnet.network_address + router
        text = f"ADDRESS0={address}\\nNETMASK0={netmask}\\nGATEWAY0={mine_gateway}\\n"
        yield run(f"\"printf '{text}' > {_ROUTE}\"")
        yield run("ifup eth0")
        return True


_KEY = "/etc/munge/munge.key"
_ROUTE = "/etc/sysconfig/network-scripts/route-eth0"


def _answered(ping: str) -> bool:
    return re.search(r"\b[1-9]\d* received\b", ping) is not None


GRES_CONF = "/etc/slurm/gres.conf"


# What `slurmd -C` reports, as slurm.conf spells it, in the order it prints them.
_SPEC_KEYS = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")


def _bre(text: str) -> str:
    # `text` as a sed basic regular expression that matches it literally.
    return re.sub(r"([][\\.*^$/])", r"\\\1", text)


def _conf_line_of(listed: str, node: str) -> tuple[str, str] | None:
    # The NodeName= line that defines `node` (its hostlist, and the rest of the line).
    for found in re.finditer(r"(?m)^NodeName=(\S+)(.*)$", listed):
        try:
            if node in expand_hostlist(found[1]):
                return found[1], found[2]
        except ValueError:
            continue
    return None


def _conf_script(run: Callable[[str], str], key: str) -> Generator[str, str, str | None]:
    """Read the node's slurm.conf for `key` (Prolog, Epilog): the script it names, or None."""
    conf = yield run(f"grep -i '^{key}=' /etc/slurm/slurm.conf")
    found = re.search(rf"(?im)^{key}=(\S+)", conf)
    return found[1] if found is not None else None


def _on(node: str) -> Callable[[str], str]:
    return (lambda command: command) if node == "login01" else (lambda command: f"ssh {node} {command}")


# Directives and sections the portal's config uses; a misspelling is fixed to its nearest one.
_APACHE_WORDS = (
    "RewriteEngine", "RewriteRule", "ServerName", "ErrorLog", "CustomLog", "Header", "AuthType", "AuthName",
    "AuthUserFile", "Require", "ProxyPassReverse", "SetHandler", "LuaHookFixups", "Location", "VirtualHost",
)  # fmt: skip


def _apache_fix(why: str) -> tuple[str, str] | None:
    import difflib

    saw = re.search(r"Expected </(\w+)> but saw </(\w+)>", why)
    if saw:
        return f"</{saw[2]}>", f"</{saw[1]}>"
    if "directive missing closing '>'" in why:
        return "$", ">"
    bad = re.search(r"Invalid command '<?(\w+)'", why)
    if bad:
        close = difflib.get_close_matches(bad[1], _APACHE_WORDS, n=1)
        if close:
            return bad[1], close[0]
    return None


# ---- an LLM over an OpenAI-compatible endpoint ----------------------------------------------------------


@dataclass
class LlmPolicy:
    """A chat model behind an OpenAI-compatible endpoint, asked and read as training asks and reads it.

    The conversation, the `run` tool and the reply parsing are `hpcgym.interfaces.chat`'s, the same
    that GRPO trains on and `python -m training.evaluate` scores with.
    """

    endpoint: chat.ChatEndpoint
    name: str = "llm"
    # `run_episode` hands this policy what the `run` tool returns in training (exit status noted,
    # long output cut), not the bare terminal text.
    reads_tool_results: bool = True
    messages: list[dict[str, Any]] = field(default_factory=list)
    last: dict[str, Any] | None = None
    seed: int = 0

    def reset(self, alert: str, seed: int) -> None:
        self.seed = seed
        self.messages = chat.opening("", seed, first_observation(alert, LOGIN_NODE))
        self.last = None

    def act(self, observation: str) -> str | None:
        if self.last is not None:
            self.messages += chat.turn(self.last, observation)
        self.last = self.endpoint.reply(self.messages, seed=self.seed)
        return chat.command_of(self.last)


_CHOOSE = f"choose from {', '.join((*BASE_POLICY_NAMES, *POLICY_GROUPS))} or a cheat-* name"


def expand_policy_names(names: Sequence[str]) -> list[str]:
    """Policy names with each group (`cheats`) replaced by its members, in order, each name once.

    Raises:
        ScenarioError: a name that is neither a policy nor a group.
    """
    expanded: dict[str, None] = {}
    for name in names:
        members = POLICY_GROUPS.get(name, (name,))
        for member in members:
            if member not in POLICY_NAMES:
                raise ScenarioError(
                    f"no policy {member!r}",
                    hint=_CHOOSE,
                )
            expanded.setdefault(member, None)
    return list(expanded)


def make_policy(
    name: str, gold: Sequence[str] = (), *, base_url: str = "", model: str = "", api_key: str = "EMPTY"
) -> Policy:
    """A policy by name; `gold` is read only by the gold policy, the LLM options only by `llm`.

    Raises:
        ScenarioError: unknown name, or `llm` without a base URL and model.
    """
    if name == "gold":
        return GoldPolicy(gold)
    if name == "blind":
        return BlindPolicy()
    if name in cheats.CHEAT_NAMES:
        return CheatPolicy(cheats.cheats()[name])
    if name == "llm":
        if not base_url or not model:
            raise ScenarioError(
                "the llm policy needs a base URL and a model", hint="pass --base-url and --model"
            )
        return LlmPolicy(chat.ChatEndpoint(base_url, model, api_key))
    simple: dict[str, Callable[[], Policy]] = {
        "noop": NoopPolicy,
        "random": RandomPolicy,
        "destructive": DestructivePolicy,
        "expert": ExpertPolicy,
    }
    if name not in simple:
        raise ScenarioError(f"no policy {name!r}", hint=_CHOOSE)
    return simple[name]()
