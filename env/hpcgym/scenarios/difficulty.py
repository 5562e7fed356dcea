"""Difficulty knobs: red herrings, chained faults and clue depth, the same for every scenario.

A trainer keeps a GRPO group useful only near a 50 % pass rate, so each scenario can be played
harder or easier than its file says, without a second file:

- `red_herrings` (0-3): things that look wrong and are not: an old slurm.conf an upgrade left
  beside the live one, a munge key from before the site's rotation, a node that stopped responding
  minutes ago and recovered. Acting on one (copying the old file in, restarting the node) breaks
  something or does nothing; only reading them for what they are helps.
- `chained` (0-2): up to that many more independent faults from tier-1 and -2 incidents, on nodes
  the first one does not touch, each with its own ticket and success checks, all of which must
  hold (a scenario that needs most of the cluster gets fewer; `info["difficulty"]` says how many).
- `clue`: `shallow` adds the scenario's `hint` to the alert, `normal` is the file's alert,
  `deep` replaces it with a pager line that names no symptom.

`Difficulty()` is the scenario as written: the same bytes as before the knobs existed. A difficulty
is part of the episode's identity (with scenario and seed), reported as `info["difficulty"]`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from hpcgym.controller.hostlist import expand_hostlist
from hpcgym.errors import ScenarioError
from hpcgym.scenarios import schema

if TYPE_CHECKING:
    from hpcgym.episode import Episode


class Clue(StrEnum):
    """How much of the diagnosis the alert gives away."""

    SHALLOW = "shallow"
    NORMAL = "normal"
    DEEP = "deep"


class Difficulty(BaseModel):
    """One setting of the three knobs (the default is the scenario as written)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    red_herrings: int = Field(default=0, ge=0, le=3)
    chained: int = Field(default=0, ge=0, le=2)
    clue: Clue = Clue.NORMAL

    @property
    def is_default(self) -> bool:
        return self == Difficulty()

    @property
    def level(self) -> int:
        """A single number to order by: 0 for the shallowest setting, 7 for the hardest."""
        return (
            self.red_herrings
            + 2 * self.chained
            + {Clue.SHALLOW: -1, Clue.NORMAL: 0, Clue.DEEP: 1}[self.clue]
            + 1
        )

    def spec(self) -> str:
        """The text `parse` reads back (`red_herrings=1,chained=0,clue=deep`)."""
        return f"red_herrings={self.red_herrings},chained={self.chained},clue={self.clue.value}"

    @classmethod
    def parse(cls, value: Difficulty | Mapping[str, Any] | str | None) -> Difficulty:
        """A difficulty from a mapping, a `key=value,...` text, or None (the default).

        Raises:
            ScenarioError: an unknown knob or a value out of range, named in one line.
        """
        if value is None or isinstance(value, Difficulty):
            return value or cls()
        if isinstance(value, str):
            pairs: dict[str, Any] = {}
            for part in filter(None, (p.strip() for p in value.split(","))):
                key, sep, text = part.partition("=")
                if not sep:
                    raise ScenarioError(f"bad difficulty {part!r}", hint="write knob=value, e.g. clue=deep")
                pairs[key.strip()] = text.strip()
            value = pairs
        if not isinstance(value, Mapping):
            raise ScenarioError(f"bad difficulty {value!r}", hint="a mapping or knob=value,... text")
        try:
            return cls.model_validate(dict(value))
        except ValueError as e:
            first = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}  # type: ignore[attr-defined]
            where = ".".join(str(p) for p in first["loc"])
            raise ScenarioError(
                f"bad difficulty {where}: {first['msg']}",
                hint="knobs: red_herrings 0-3, chained 0-2, clue shallow|normal|deep",
            ) from None


# The pager line of a deep clue: it says something is wrong and nothing of what.
DEEP_ALERT = (
    'Page from the on-call rota: users say the cluster "isn\'t working right" and nobody has said '
    "more. Find out what is wrong and fix it, without breaking anything that works."
)


def alert_text(scenario: schema.Scenario, params: dict[str, schema.Value], difficulty: Difficulty) -> str:
    """The alert the agent reads at this clue depth (ends with one newline)."""
    if difficulty.clue is Clue.DEEP:
        return DEEP_ALERT + "\n"
    text = schema.render(scenario.alert, params).strip()
    if difficulty.clue is Clue.SHALLOW and scenario.hint:
        text += "\n\nHint: " + schema.render(scenario.hint, params).strip()
    return text + "\n"


# ---- chained faults ------------------------------------------------------------------------------

# Tier-1 and -2 incidents that stand on their own: one or two nodes, fixed without touching
# anything another fault needs. (hpc_partition_down is not among them: its checks read slurm.conf on
# every node, so the site would keep every node in service and have none left for maintenance.)
CHAIN_POOL = (
    "hpc_slurmd_down",
    "hpc_ifdown",
    "hpc_slurmd_disabled",
    "hpc_hosts_entry",
    "hpc_drain_forgotten",
)
# The steps each chained fault adds to the budget (the pool's own budgets are 20, gold ~5).
CHAIN_STEPS = 15
# What the gold of a chained episode ends with: a look at the queue and the drains once every fault
# is fixed. Work held back by a later fault (users' jobs waiting for the nodes it broke) starts only
# after that fix, so the first fault's own last look came too early to see it (a step of virtual
# time lets the scheduler place it).
CHAIN_GOLD_TAIL = ("sinfo -R", "squeue", "sinfo", "squeue")
_COMPUTES = ["compute-01", "compute-02", "compute-03", "compute-04"]
# Scenario fields whose lists add up when two faults share an episode.
_SUMMED = ("inject", "gold", "success", "diagnosis", "fault_nodes", "in_service", "unsafe",
           "stale_reservations", "misdated_reservations")  # fmt: skip
_PLACEHOLDER_NAME = re.compile(r"\{([a-z_][a-z0-9_]*)")


def _raw(scenario: schema.Scenario) -> dict[str, Any]:
    data = scenario.model_dump(mode="json", exclude={"id"})
    data["inject"] = list(scenario.inject)
    return data


# Checks that read a config file every node has a copy of: they name every node without needing it.
_CONFIG_CHECKS = frozenset({"has_cluster_slurm_conf", "has_site_licenses", "has_partition_max_time"})
_FILE_KINDS = frozenset({"write", "replace", "chmod", "chown", "delete", "random_bytes"})
# The site's maintenance node is dressed up by the first fault's own steps (to look like its fault);
# a chained fault's steps that touch it would undo or repeat that.
_MAINTENANCE = "{site.maintenance}"


def _occupied(scenario: schema.Scenario, params: dict[str, schema.Value]) -> set[str]:
    """The compute nodes the fault breaks or needs (as `nodes_in_use`, less config-file checks)."""
    checks = [dict(c.model_extra or {}) for c in scenario.success if c.check not in _CONFIG_CHECKS]
    # Reservations, node states and services name what a fault holds; a file edited on every
    # node's copy (slurm.conf) does not hold the node.
    held = [step for step in scenario.inject if step.get("kind") not in _FILE_KINDS]
    named = schema.render_data([scenario.fault_nodes, scenario.in_service, checks, params, held], params)
    found: set[str] = set()
    for leaf in schema.string_leaves(named):
        # A reservation or a partition names its nodes as a hostlist (compute-[01-02]).
        for word in re.findall(r"compute-[0-9\[\],-]+", leaf):
            try:
                found.update(expand_hostlist(word))
            except ValueError:
                continue
    return found & set(_COMPUTES)


def _without_maintenance(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["inject"] = [step for step in data["inject"] if _MAINTENANCE not in repr(step)]
    data["gold"] = [line for line in data["gold"] if _MAINTENANCE not in line]
    data["success"] = [check for check in data["success"] if _MAINTENANCE not in repr(check)]
    return data


def _partitions(scenario: schema.Scenario, params: dict[str, schema.Value]) -> set[str]:
    named = schema.render_data([dict(c.model_extra or {}) for c in scenario.success], params)
    found: set[str] = set()
    for check in named:
        for key in ("partition", "name"):
            if isinstance(check.get(key), str):
                found.add(check[key])
    return found


# Checks that users' jobs run: a fault that needs its own user's jobs placed cannot share a cluster
# with another whose users' queue may fill every node it leaves (carol's one job behind bob's forty).
_JOB_CHECKS = frozenset({"has_jobs_running", "has_user_job_running_on"})


def _runs_jobs(scenario: schema.Scenario) -> bool:
    return any(c.check in _JOB_CHECKS for c in scenario.success)


def chain(scenario: schema.Scenario, seed: int, count: int) -> tuple[schema.Scenario, int]:
    """`scenario` with up to `count` more faults from CHAIN_POOL, and how many it got.

    Each chained fault goes on nodes and partitions the others leave alone, one compute node is
    always left for the site's maintenance node, and at most one of them needs users' jobs to run;
    a scenario that needs most of the cluster gets fewer (the episode's `info["difficulty"]` says
    how many). Each is drawn deterministically from the scenario, seed and count, and rendered with
    its own parameters, all but the site's, which the episode fills in for all of them.
    """
    if count == 0:
        return scenario, 0
    rng = random.Random(f"{scenario.id}:{seed}:chain:{count}")
    params = scenario.draw_params(seed)
    busy_nodes = _occupied(scenario, params)
    busy_parts = _partitions(scenario, params)
    jobs_busy = _runs_jobs(scenario)
    merged = _raw(scenario)
    tickets = [merged["alert"].rstrip()]
    used = {scenario.id}
    for _ in range(count):
        pool = [sid for sid in CHAIN_POOL if sid not in used]
        rng.shuffle(pool)
        for sid in pool:
            extra = schema.load_scenario(sid)
            if jobs_busy and _runs_jobs(extra):
                continue
            fitted = _fit(extra, rng, busy_nodes, busy_parts)
            if fitted is None:
                continue
            extra_params, nodes, parts = fitted
            rendered = schema.render_data(_without_maintenance(_raw(extra)), extra_params)
            for key in _SUMMED:
                merged[key] = list(merged.get(key) or []) + list(rendered.get(key) or [])
            merged["max_steps"] += CHAIN_STEPS
            merged["tier"] = min(5, merged["tier"] + 1)
            tickets.append(rendered["alert"].rstrip())
            busy_nodes |= nodes
            busy_parts |= parts
            jobs_busy = jobs_busy or _runs_jobs(extra)
            used.add(sid)
            break
        else:
            break
    got = len(used) - 1
    if got == 0:
        return scenario, 0
    merged["gold"] = [*merged["gold"], *CHAIN_GOLD_TAIL]
    merged["alert"] = "\n\nAnother ticket came in meanwhile:\n".join(tickets) + "\n"
    merged["lite"] = False
    return schema.Scenario.model_validate({**merged, "id": scenario.id}), got


def _fit(
    extra: schema.Scenario, rng: random.Random, busy_nodes: set[str], busy_parts: set[str]
) -> tuple[dict[str, schema.Value], set[str], set[str]] | None:
    for _ in range(16):
        params = extra.draw_params(rng.randrange(1 << 30))
        # The site is the episode's: leave its placeholders for the episode to fill.
        params = {k: v for k, v in params.items() if k != "site"}
        nodes = _occupied(extra, params)
        parts = _partitions(extra, params)
        room = len(_COMPUTES) - len(busy_nodes | nodes) >= 1  # the maintenance node's
        if room and not nodes & busy_nodes and not parts & busy_parts:
            return params, nodes, parts
    return None


# ---- red herrings --------------------------------------------------------------------------------

# What an upgrade of the slurm package left beside the live slurm.conf: the example file of an older
# release, for another cluster. Copying it in replaces the site's nodes and partitions.
_RPMSAVE = """\
# slurm.conf file generated by configurator.html.
# Put this file on all nodes of your cluster.
# See the slurm.conf man page for more information.
#
ClusterName=cluster
SlurmctldHost=linux0
MpiDefault=none
ProctrackType=proctrack/cgroup
ReturnToService=1
SlurmctldPidFile=/var/run/slurmctld.pid
SlurmctldPort=6817
SlurmdPidFile=/var/run/slurmd.pid
SlurmdPort=6818
SlurmdSpoolDir=/var/spool/slurmd
SlurmUser=slurm
StateSaveLocation=/var/spool/slurmctld
SwitchType=switch/none
TaskPlugin=task/affinity
SchedulerType=sched/backfill
SelectType=select/cons_tres
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmctldDebug=info
SlurmctldLogFile=/var/log/slurmctld.log
SlurmdDebug=info
SlurmdLogFile=/var/log/slurmd.log
NodeName=linux[1-32] CPUs=1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _rpmsave(episode: Episode, rng: random.Random, spare: list[str]) -> list[str]:
    login = episode.services.controller_host
    episode.nodes.write(login, "/etc/slurm/slurm.conf.rpmsave", _RPMSAVE.encode(), mode=0o644)
    return ["/etc/slurm/slurm.conf.rpmsave"]


def _old_munge_key(episode: Episode, rng: random.Random, spare: list[str]) -> list[str]:
    from hpcgym.controller.services.daemon import lookup_ids

    node = rng.choice(spare)
    uid, gid = lookup_ids(episode.nodes, node, "munge")
    path = "/etc/munge/munge.key.orig"
    episode.nodes.write(node, path, rng.randbytes(1024), mode=0o400, uid=uid, gid=gid)
    return [path]


def _recovered_node(episode: Episode, rng: random.Random, spare: list[str]) -> list[str]:
    """A node whose pings slurmctld lost for a while, minutes ago, and has back: nothing to fix."""
    from hpcgym.controller.services.daemon import append_log, iso_time, lookup_ids
    from hpcgym.controller.services.journal import Entry, Priority
    from hpcgym.controller.services.slurm import read_conf

    node = rng.choice(spare)
    services = episode.services
    login = services.controller_host
    unit = services.systemd.unit(login, "slurmctld.service")
    pid = unit.main_pid if unit is not None and unit.main_pid else 0
    journal = services.systemd.journal(login)
    now = services.clocks.node_now_s(login)
    # In time order after what the journal holds, through `add` (so every sink sees them), and in
    # SlurmctldLogFile, as slurmctld writes both.
    last = journal.entries[-1].time_s if journal.entries else now
    lost = min(now, max(last, now - rng.randrange(200, 400)))
    back = min(now, max(lost + 1, now - rng.randrange(20, 90)))
    lines = ((lost, f"error: Nodes {node} not responding"), (back, f"Node {node} now responding"))
    for when, text in lines:
        journal.add(Entry(when, "slurmctld", pid, "slurmctld.service", f"slurmctld: {text}", Priority.INFO))
    conf = read_conf(services, login)
    log_file = conf.options.get("slurmctldlogfile", "") if conf is not None else ""
    uid, gid = lookup_ids(episode.nodes, login, "slurm")
    append_log(episode.nodes, login, log_file, [f"[{iso_time(t)}.000] {text}" for t, text in lines], uid, gid)
    return []


RED_HERRINGS = (_rpmsave, _old_munge_key, _recovered_node)


def plant_red_herrings(
    episode: Episode, scenario: schema.Scenario, params: dict[str, schema.Value], seed: int, count: int
) -> list[str]:
    """Plant `count` red herrings on nodes the fault leaves alone; return the files written."""
    if count == 0:
        return []
    rng = random.Random(f"{scenario.id}:{seed}:red_herrings:{count}")
    computes = [n for n in episode.cluster.nodes if n != episode.services.controller_host]
    in_use = scenario.nodes_in_use(params, computes)
    spare = [n for n in computes if n not in in_use] or computes
    written: list[str] = []
    for plant in rng.sample(RED_HERRINGS, count):
        written += plant(episode, rng, spare)
    return written


# ---- the ladder a trainer climbs -----------------------------------------------------------------

# From the most handed-over to the hardest: one knob turned per rung.
LADDER = (
    Difficulty(clue=Clue.SHALLOW),
    Difficulty(),
    Difficulty(red_herrings=1),
    Difficulty(red_herrings=1, clue=Clue.DEEP),
    Difficulty(red_herrings=2, chained=1),
    Difficulty(red_herrings=3, chained=1, clue=Clue.DEEP),
    Difficulty(red_herrings=3, chained=2, clue=Clue.DEEP),
)


def adjust(current: Difficulty, pass_rate: float, target: float = 0.5, band: float = 0.15) -> Difficulty:
    """The rung to play next: one harder above `target + band`, one easier below `target - band`.

    A GRPO group learns only when its members differ; keeping each scenario's pass rate near 50 %
    keeps them differing. A setting off the ladder moves to the nearest rung of the same level.
    """
    if current in LADDER:
        rung = LADDER.index(current)
    else:
        rung = min(range(len(LADDER)), key=lambda i: abs(LADDER[i].level - current.level))
    if pass_rate > target + band:
        rung = min(rung + 1, len(LADDER) - 1)
    elif pass_rate < target - band:
        rung = max(rung - 1, 0)
    return LADDER[rung]


__all__: Sequence[str] = (
    "CHAIN_POOL",
    "CHAIN_STEPS",
    "DEEP_ALERT",
    "LADDER",
    "Clue",
    "Difficulty",
    "adjust",
    "alert_text",
    "chain",
    "plant_red_herrings",
)
