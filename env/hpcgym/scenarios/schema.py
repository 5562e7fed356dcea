"""The scenario file format: one YAML file per incident, validated by these pydantic models.

A scenario says what the agent is told (`alert`), what the seed decides (`params`), how the fault is
put into a fresh cluster (`inject`), how an operator fixes it (`gold`, typed into the agent's shell),
and what the end state must satisfy (`success`). Strings may name parameters as `{name}` or, for a
parameter whose choices are mappings, `{name.key}`; `render` fills them in. The scenario id is the
file name; adding a scenario needs no code unless it needs a new kind of check or inject step.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from hpcgym.controller.timefmt import parse_time_limit
from hpcgym.errors import ScenarioError

LIBRARY = Path(__file__).parent / "library"
# `{name}`, `{name.key}`, `{name.key.key}`: keys may hold dashes (node names: `{site.gateway.compute-01}`).
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z0-9_-]+)*)\}")

Value = str | int | dict[str, Any]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(Model):
    """One value the seed picks: one of `choice`, or an integer in `range` (inclusive)."""

    choice: list[Value] | None = None
    range: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if (self.choice is None) == (self.range is None):
            raise ValueError("a param needs exactly one of `choice` or `range`")
        if self.choice is not None and not self.choice:
            raise ValueError("`choice` is empty")
        return self

    def draw(self, rng: random.Random) -> Value:
        if self.choice is not None:
            return self.choice[rng.randrange(len(self.choice))]
        assert self.range is not None
        return rng.randint(*self.range)


# ---- inject steps: what a fault changes, outside the agent's shell --------------------------------


class WriteFile(Model):
    kind: Literal["write"]
    node: str
    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"


class ReplaceInFile(Model):
    """Replace the first occurrence of `old` with `new` (the file keeps its mode and owners)."""

    kind: Literal["replace"]
    node: str
    path: str
    old: str
    new: str


class Chmod(Model):
    kind: Literal["chmod"]
    node: str
    path: str
    mode: int


class Chown(Model):
    kind: Literal["chown"]
    node: str
    path: str
    owner: str
    group: str


class Delete(Model):
    """Remove a file, or a directory with everything under it."""

    kind: Literal["delete"]
    node: str
    path: str


class RandomBytes(Model):
    """Overwrite a file with `size` seeded random bytes (a key from another cluster, say)."""

    kind: Literal["random_bytes"]
    node: str
    path: str
    size: int = 1024


class Service(Model):
    """Act on a unit as systemd would (`kill` is a SIGKILL from outside systemd: the unit fails)."""

    kind: Literal["service"]
    node: str
    unit: str
    action: Literal["start", "stop", "restart", "kill", "enable", "disable"]


class Interface(Model):
    """Re-apply eth0's network scripts (`up`, as `ifup`), or take it down."""

    kind: Literal["interface"]
    node: str
    action: Literal["up", "down"] = "up"


class NodeState(Model):
    """Set a node's Slurm state as an admin or a health checker would."""

    kind: Literal["node_state"]
    node: str
    state: Literal["drain", "down", "resume"]
    reason: str = ""
    user: str = "root"


class PartitionStateStep(Model):
    kind: Literal["partition_state"]
    partition: str
    state: Literal["UP", "DOWN", "DRAIN", "INACTIVE"]


class SubmitJob(Model):
    """A user's batch job, as `sbatch` would queue it."""

    kind: Literal["submit"]
    user: str = "alice"
    name: str = "job"
    partition: str | None = None
    nodes: int = 1
    run_for_s: int = 3600
    gres: str | None = None
    # -L: the licenses the job needs ("ansys:4").
    licenses: str | None = None
    # -t/--time as sbatch takes it ("1-12:00:00"); None: the partition's DefaultTime or MaxTime.
    time: str | None = None

    @field_validator("time")
    @classmethod
    def _time_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time_limit(value)
        return value


class GpuEcc(Model):
    kind: Literal["gpu_ecc"]
    node: str
    index: int = 0
    dram_uncorrectable: int = 0
    dram_correctable: int = 0


class GpuXid(Model):
    """The NVIDIA driver reports Xid `code` on a node's GPU (controller/services/xid.py models which)."""

    kind: Literal["gpu_xid"]
    node: str
    index: int = 0
    code: int
    # The process whose GPU context faulted (application-class Xids name it).
    pid: int = 0
    name: str = "python3"


class NfsStale(Model):
    """A node's NFS mount goes stale (the server re-exported it): every access fails with ESTALE."""

    kind: Literal["nfs_stale"]
    node: str
    path: Literal["/home", "/apps"]


class NfsUnmount(Model):
    """A node's NFS mount is gone (not mounted after its last boot): the mount point is an empty dir."""

    kind: Literal["nfs_unmount"]
    node: str
    path: str


class HungIo(Model):
    """A running job's process blocks in the kernel on a node's NFS share (hard mount, dead server).

    No signal ends it until the mount is forced off (controller/joblife.py).
    """

    kind: Literal["hung_io"]
    node: str
    path: str
    job: str
    comm: str = "python3"
    pid: int = 4242


class ClockSkew(Model):
    """A node's clock runs `seconds` off the cluster's (hardware clock drift with chronyd stopped)."""

    kind: Literal["clock_skew"]
    node: str
    seconds: int


class ReservationStep(Model):
    """An advanced reservation, as an admin's `scontrol create reservation` made it.

    `start_s` is an offset from the moment of injection (negative: it began before the episode);
    the end is `end` (an ISO instant, UTC), else `duration_s` after the start, else a year
    (Duration=infinite). `motd`, with `{start}` and `{end}` filled from `motd_start` and
    `motd_end` (ISO instants), is written to the login node's /etc/motd: the announcement of when
    the maintenance is really planned.
    """

    kind: Literal["reservation"]
    name: str
    nodes: str
    users: str = "root"
    flags: str = "MAINT,IGNORE_JOBS"
    start_s: int = 0
    end: str | None = None
    duration_s: int | None = None
    motd: str | None = None
    motd_start: str = ""
    motd_end: str = ""


class Reboot(Model):
    """The node's host rebooted on its own (a kernel panic, a power blip); its daemons come back."""

    kind: Literal["reboot"]
    node: str


class Reconfigure(Model):
    """Slurmctld re-reads the controller's slurm.conf (as `scontrol reconfigure` would).

    `at_start`: as if slurmctld had last started with that file (the site's configuration from
    before the incident), so node records take its CPU counts too, which a reconfigure leaves.
    """

    kind: Literal["reconfigure"]
    at_start: bool = False


class HardwareStep(Model):
    """The node's hardware changes under slurm.conf (a DIMM pulled, a GPU gone, a failed part).

    slurmd registers again at once (the node came back from the repair) and slurmctld judges what it
    reports against the node's configured line. `failed_check` is a health-check message (without
    "NHC: ") that the node keeps failing because a part is broken.
    """

    kind: Literal["hardware"]
    node: str
    real_memory_mb: int | None = None
    cpus: int | None = None
    boards: int | None = Field(default=None, ge=1, le=64)
    sockets_per_board: int | None = Field(default=None, ge=1, le=64)
    cores_per_socket: int | None = Field(default=None, ge=1, le=1024)
    threads_per_core: int | None = Field(default=None, ge=1, le=8)
    gpus: int | None = None
    failed_check: str | None = None


class NodeModel(Model):
    """Every compute node is of this model, as the site bought them (before any fault).

    It names no node: a fault on one node is a `hardware` step after it. The CPUs are the product
    of the topology, as the kernel counts them.
    """

    kind: Literal["node_model"]
    boards: int = Field(default=1, ge=1, le=64)
    sockets_per_board: int = Field(ge=1, le=64)
    cores_per_socket: int = Field(ge=1, le=1024)
    threads_per_core: int = Field(ge=1, le=8)


class Advance(Model):
    """Let virtual time pass (slurmctld notices silent nodes, jobs run)."""

    kind: Literal["advance"]
    seconds: int


class DbPassword(Model):
    """The DBA rotates a MariaDB account's password on the login node (its grant line changes)."""

    kind: Literal["db_password"]
    user: str
    password: str


class AccountingDb(Model):
    """slurmdbd's database on disk: its directory and table files in the login node's MariaDB datadir.

    The controller keeps the records (controller/accounting.py); these files stand for them where an
    operator can destroy them (`rm -rf /var/lib/mysql`), and the grade knows each one's digest.
    """

    kind: Literal["accounting_db"]
    # The tables slurmdbd makes once, and those it makes per cluster (named CLUSTER_job_table ...).
    tables: list[str] = Field(default_factory=lambda: ["acct_table", "user_table", "qos_table"])
    cluster_tables: list[str] = Field(default_factory=lambda: ["assoc_table", "job_table", "step_table"])


class AssociationStep(Model):
    """The accounting database gains (`add`), loses (`delete`) or moves (`move`) a user's association."""

    kind: Literal["association"]
    user: str
    account: str = ""
    action: Literal["add", "delete", "move"] = "add"


class QosStep(Model):
    """Set a QOS's limits in the accounting database (TRES lists such as "cpu=16"; "" sets none)."""

    kind: Literal["qos"]
    name: str = "normal"
    max_tres_per_user: str = ""
    grp_tres: str = ""


class PackageDamage(Model):
    """A package's shared library lost or cut short on a node behind rpm's back, or the package erased."""

    kind: Literal["package_damage"]
    node: str
    package: str
    how: Literal["missing", "truncated", "erased"] = "missing"


class AppPerms(Model):
    """One component of an installed application's tree left closed (made under a strict umask)."""

    kind: Literal["app_perms"]
    node: str
    # The version directory; `exe` is the program's path below it.
    path: str
    exe: str
    where: Literal["version", "bin", "exe"]
    mode: int


class AppJobs(Model):
    """A user's queue of whole-node batch jobs whose program loads a package's library."""

    kind: Literal["app_jobs"]
    user: str = "alice"
    name: str = "job"
    program: str
    # The package whose library the program loads (None: it needs none of the catalogue's).
    package: str | None = None
    count: int = Field(default=1, ge=1, le=200)
    run_for_s: int = 14400
    # The first `at_once` jobs may start now; each later one `stagger_s` after the one before
    # (sbatch --begin), as a campaign a user's script submits.
    at_once: int = 1
    stagger_s: int = 0


InjectStep = Annotated[
    WriteFile
    | ReplaceInFile
    | Chmod
    | Chown
    | Delete
    | RandomBytes
    | Service
    | Interface
    | NodeState
    | PartitionStateStep
    | SubmitJob
    | GpuEcc
    | GpuXid
    | NfsStale
    | NfsUnmount
    | HungIo
    | ClockSkew
    | ReservationStep
    | Reboot
    | Reconfigure
    | Advance
    | DbPassword
    | AccountingDb
    | AssociationStep
    | QosStep
    | HardwareStep
    | NodeModel
    | PackageDamage
    | AppPerms
    | AppJobs,
    Field(discriminator="kind"),
]

INJECT_STEP: TypeAdapter[InjectStep] = TypeAdapter(InjectStep)


# ---- grading -----------------------------------------------------------------------------------------


class Check(Model):
    """One predicate over the end state: `check` names a function in checks.CHECKS; the rest are its args."""

    model_config = ConfigDict(extra="allow", frozen=True)

    check: str


class Unsafe(Model):
    """A command pattern that is unsafe here (penalised) or catastrophic (ends the episode)."""

    pattern: str
    why: str
    catastrophic: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class Seeds(Model):
    """Half-open seed ranges: train on one, report on the other."""

    train: tuple[int, int] = (0, 800)
    test: tuple[int, int] = (800, 1000)


class MayRestart(Model):
    """A unit on a node that the fix restarts, though it serves (slurmctld, to read a node's new CPUs)."""

    node: str
    unit: str


class Scenario(Model):
    """One incident: what the agent sees, how the fault is made, how it is fixed and graded.

    Example:
        >>> scenario = load_scenario("hpc_munge")  # doctest: +SKIP
        >>> params = scenario.draw_params(seed=3)  # doctest: +SKIP
    """

    id: str
    title: str
    tier: int = Field(ge=1, le=5)
    alert: str
    notes: str = ""
    # Where the failure is documented in the real world (a manual page, a FAQ, a mailing-list
    # thread), what it teaches (one line for the README), the observation the agent needs to choose
    # the right fix, and what the generic fix (restart, resume or reopen everything) would break.
    source: str = ""
    teaches: str = ""
    observation: str = ""
    generic_fix_breaks: str = ""
    # The clue handed over at the shallowest clue depth (added to the alert): a difficulty knob.
    hint: str = ""
    lite: bool = False
    max_steps: int = 30
    params: dict[str, Param] = Field(default_factory=dict)
    # Kept as written (values may be `{param}` placeholders); `inject_steps` renders and validates.
    inject: list[dict[str, Any]]
    gold: list[str]
    success: list[Check]
    diagnosis: list[str] = Field(default_factory=list)
    # Nodes the fault touches: setting any other node down or drained is unsafe.
    fault_nodes: list[str] = Field(default_factory=list)
    # Nodes the fix needs in service beyond those the fault and checks name (a job's second node):
    # the site never takes one of them down for maintenance.
    in_service: list[str] = Field(default_factory=list)
    unsafe: list[Unsafe] = Field(default_factory=list)
    seeds: Seeds = Seeds()
    # Reservations the fault made stale (deleting or ending them is the fix) or misdated (the fix
    # deletes and makes them again: slurmctld moves no active reservation). Touching any other
    # reservation is harm.
    stale_reservations: list[str] = Field(default_factory=list)
    misdated_reservations: list[str] = Field(default_factory=list)
    # The licenses the site owns ("ansys:32,comsol:2"): slurm.conf promising more of one is harm.
    owned_licenses: str = ""
    # Users the fault left without their association, and the one account each may be added to
    # ({"alice": "{acct}"}): an association anywhere else is harm.
    allowed_associations: dict[str, str] = Field(default_factory=dict)
    # The most each QOS limit may be by the site's policy ({"normal.MaxTRESPU": "cpu=16"}): a QOS
    # limit raised past it, or cleared, is harm; any other QOS limit must stay as it was.
    qos_policy: dict[str, str] = Field(default_factory=dict)
    # The longest MaxTime the site's policy gives each partition the fault changed ({"gpu":
    # "2-00:00:00"}; UNLIMITED for none): a longer one is harm, and so is changing any other
    # partition's MaxTime.
    max_time_policy: dict[str, str] = Field(default_factory=dict)
    # Units the fix restarts on nodes the fault does not touch (restarting any other that serves
    # is harm).
    may_restart: list[MayRestart] = Field(default_factory=list)

    @model_validator(mode="after")
    def _inject_validates(self) -> Scenario:
        self.inject_steps(self.draw_params(0))
        return self

    def inject_steps(self, params: dict[str, Value]) -> list[InjectStep]:
        """The inject steps with this variant's parameters filled in, validated."""
        return [INJECT_STEP.validate_python(render_data(step, params)) for step in self.inject]

    def draw_params(self, seed: int) -> dict[str, Value]:
        """The parameters of one variant: the same (scenario, seed) always gives the same values."""
        rng = random.Random(f"{self.id}:{seed}")
        return {name: param.draw(rng) for name, param in sorted(self.params.items())}

    def nodes_in_use(self, params: dict[str, Value], nodes: list[str]) -> frozenset[str]:
        """The nodes this variant's fault, checks or parameters name: the site keeps them in service."""
        checks = [dict(c.model_extra or {}) for c in self.success]
        named = render_data([self.fault_nodes, self.in_service, checks], params)
        leaves = set(string_leaves(named)) | set(string_leaves(params))
        return frozenset(node for node in nodes if node in leaves)


def string_leaves(data: Any) -> list[str]:
    """Every string inside a parsed structure (dict values and list items, depth first)."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [text for item in data.values() for text in string_leaves(item)]
    if isinstance(data, list):
        return [text for item in data for text in string_leaves(item)]
    return []


def render(text: str, params: dict[str, Value]) -> str:
    """Fill `{name}` and `{name.key...}` placeholders; other braces (awk, shell) stay as they are.

    Repeated, so a placeholder may name another: `{site.gateway.{node}}` is the gateway of the node
    the seed picked, and a parameter's value may itself hold placeholders.
    """

    def value(match: re.Match[str]) -> str:
        name, *keys = match.group(1).split(".")
        found: Any = params.get(name, _MISSING)
        for key in keys:
            found = found.get(key, _MISSING) if isinstance(found, dict) else _MISSING
        if found is _MISSING or isinstance(found, dict):
            return match.group(0)
        return str(found)

    for _ in range(_RENDER_PASSES):
        rendered = _PLACEHOLDER.sub(value, text)
        if rendered == text:
            break
        text = rendered
    return text


# Enough for a parameter whose value names the site and the node: `{gateway}` -> `{site.dead.{node}}`.
_RENDER_PASSES = 4


_MISSING = object()


def render_data(data: Any, params: dict[str, Value]) -> Any:
    """`render` applied to every string inside a parsed structure."""
    if isinstance(data, str):
        return render(data, params)
    if isinstance(data, list):
        return [render_data(item, params) for item in data]
    if isinstance(data, dict):
        return {key: render_data(item, params) for key, item in data.items()}
    return data


def scenario_ids(library: Path = LIBRARY) -> list[str]:
    """Every scenario in the library, sorted by tier then id."""
    ids = sorted(path.stem for path in library.glob("*.yaml"))
    return sorted(ids, key=lambda sid: (load_scenario(sid, library).tier, sid))


def lite_ids(library: Path = LIBRARY) -> list[str]:
    """The quick-check set."""
    return [sid for sid in scenario_ids(library) if load_scenario(sid, library).lite]


def load_scenario(scenario_id: str, library: Path = LIBRARY) -> Scenario:
    """Read and validate `library/<id>.yaml`.

    Raises:
        ScenarioError: no such file, or it does not validate.
    """
    path = library / f"{scenario_id}.yaml"
    if not path.is_file():
        raise ScenarioError(f"no scenario {scenario_id!r}", hint=f"see the files in {library}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path} is not a mapping")
    if "id" in raw and raw["id"] != scenario_id:
        raise ScenarioError(f"{path} says id {raw['id']!r}", hint="the id is the file name; drop the field")
    try:
        return Scenario.model_validate({**raw, "id": scenario_id})
    except ValueError as exc:
        raise ScenarioError(f"{path} does not validate: {exc}") from None
