"""Masking: hide what is specific to a host or a moment, and nothing whose value differs for a reason.

Three kinds of rule. The real cluster's own facts (its private directory, work directory and host
name) are replaced by the simulated cluster's spelling of the same thing (`/etc/slurm/slurm.conf`,
`/root`, `login01`). On both sides the host's OS, load, free memory, boot times, node addresses and
session ids become placeholders. Times are not masked but mapped: every absolute timestamp becomes
its offset from the moment the state started on that side (`T+12`), and an offset or an elapsed time
(squeue's TIME, RunTime=) may differ by `TOLERANCE_S` between the sides, since the two runs cannot
type each command at the same fraction of a second.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from hpcgym.fidelity.shell import Output

SIM_HOST = "login01"
SIM_WORK_DIR = "/root"
SIM_MUNGE_SOCKET = "/run/munge/munge.socket.2"
SIM_SLURM_CONF = "/etc/slurm/slurm.conf"
TOLERANCE_S = 2


@dataclass(frozen=True)
class Facts:
    """What is specific to one side: its start instant, and for the real cluster its paths and host."""

    start_s: float
    root: str = ""
    work_dir: str = ""
    hostname: str = ""


# (pattern, replacement) applied to both sides, in order: the host's own facts.
_HOST: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bOS=.*$", re.M), "OS=<OS>"),
    (re.compile(r"\bCPULoad=\S+"), "CPULoad=<LOAD>"),
    (re.compile(r"\bFreeMem=\S+"), "FreeMem=<MEM>"),
    (re.compile(r"\bNodeAddr=\S+"), "NodeAddr=<ADDR>"),
    (re.compile(r"\bNodeHostName=\S+"), "NodeHostName=<HOST>"),
    (re.compile(r"(NodeHostName=<HOST> )Port=\d+"), r"\1Port=<PORT>"),
    (re.compile(r"\bAllocNode:Sid=\S+"), "AllocNode:Sid=<HOST>:<SID>"),
    (re.compile(r"\bArch=\S+"), "Arch=<ARCH>"),
    # An interactive bash (the episode's) reports a background job's number and pid; the real
    # side's bash is not interactive. Neither is Slurm's output.
    (re.compile(r"^\[\d+\] \d+\n", re.M), ""),
    # When the host (not the cluster) booted and when its slurmd started: before the state began.
    (re.compile(r"\b(BootTime|SlurmdStartTime)=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"), r"\1=<BOOT>"),
)
_ISO = re.compile(r"\b(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\b")
_CTIME = re.compile(r"\b[A-Z][a-z]{2} ([A-Z][a-z]{2}) ([ 0-3]\d) (\d\d):(\d\d):(\d\d) (\d{4})\b")
# Elapsed times as squeue and scontrol print them: [D-][HH:]MM:SS.
_ELAPSED = re.compile(r"(?<![\d:.-])(?<!ExitCode=)(?:(\d+)-)?(?:(\d+):)?(\d+):(\d\d)(?![\d:])")
_MARK = re.compile(r"<([TE])([+-]\d+)>")
_MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}


def _mapped(text: str, start_s: float) -> str:
    def iso(m: re.Match[str]) -> str:
        y, mo, d, h, mi, s = (int(g) for g in m.groups())
        return f"<T{calendar.timegm((y, mo, d, h, mi, s)) - round(start_s):+d}>"

    def ctime(m: re.Match[str]) -> str:
        mon, d, h, mi, s, y = m.groups()
        when = calendar.timegm((int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s)))
        return f"<T{when - round(start_s):+d}>"

    def elapsed(m: re.Match[str]) -> str:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        return f"<E+{((days * 24 + hours) * 60 + minutes) * 60 + seconds}>"

    text = _ISO.sub(iso, text)
    text = _CTIME.sub(ctime, text)
    return _ELAPSED.sub(elapsed, text)


def mask_text(text: str, facts: Facts) -> str:
    if facts.root:
        text = text.replace(f"{facts.root}/munge/munge.socket", SIM_MUNGE_SOCKET)
        text = text.replace(f"{facts.root}/slurm.conf", SIM_SLURM_CONF)
    if facts.work_dir:
        text = text.replace(facts.work_dir, SIM_WORK_DIR)
    if facts.hostname:
        text = re.sub(rf"\b{re.escape(facts.hostname)}\b", SIM_HOST, text)
    for pattern, replacement in _HOST:
        text = pattern.sub(replacement, text)
    return _mapped(text, facts.start_s)


def mask_output(output: Output, facts: Facts) -> Output:
    return Output(mask_text(output.stdout, facts), mask_text(output.stderr, facts), output.exit_code)


def same_within_tolerance(real: str, sim: str) -> bool:
    """Equal, except that mapped times and elapsed times may differ by TOLERANCE_S."""
    if real == sim:
        return True
    if _MARK.sub("<>", real) != _MARK.sub("<>", sim):
        return False
    pairs = zip(_MARK.finditer(real), _MARK.finditer(sim), strict=True)
    return all(
        a.group(1) == b.group(1) and abs(int(a.group(2)) - int(b.group(2))) <= TOLERANCE_S for a, b in pairs
    )
