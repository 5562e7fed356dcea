"""Slurm accounting as slurmctld and slurmdbd keep it: job records, the DBD agent queue, associations.

With `AccountingStorageType=accounting_storage/slurmdbd` in slurm.conf, slurmctld sends a message to
slurmdbd when a job starts and when it ends (DBD_JOB_START, DBD_JOB_COMPLETE). While slurmdbd does
not answer, those messages wait in slurmctld's DBD agent queue (what `sdiag` shows as "DBD Agent
queue size"), and once it answers again the queue drains into the database in order: the jobs that
ended meanwhile then show in `sacct`. This module keeps that queue and the database (job records,
the cluster's accounts, users and their associations) outside every node. Whether slurmdbd serves is
decided by the service layer (services/slurmdbd.py) and pushed in through `sync`, as slurmlink does
for slurmctld; the tools (sacct, sacctmgr, sdiag) only read and format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpcgym.controller.hostlist import compress_hostlist
from hpcgym.controller.numbers import to_int
from hpcgym.controller.rpc import SlurmError
from hpcgym.controller.state import Job, JobState, Reason

if TYPE_CHECKING:
    from hpcgym.controller.slurmctld import SlurmState

SLURMDBD_STORAGE = "accounting_storage/slurmdbd"
# slurm_strerror(ESLURM_INVALID_ACCOUNT): a job from a user with no association, under enforcement.
INVALID_ACCOUNT = "Invalid account or account/partition combination specified"
DBD_PORT = 6819


@dataclass
class JobRecord:
    """One job as slurmdbd stores it (the job table's columns that sacct prints)."""

    job_id: int
    name: str
    partition: str
    account: str
    user: str
    uid: int
    group: str
    gid: int
    alloc_cpus: int
    nnodes: int
    node_list: str
    submit_s: int
    start_s: int | None
    end_s: int | None
    state: str
    exit_code: int
    exit_signal: int
    time_limit_min: int | None
    batch: bool


@dataclass(frozen=True)
class Association:
    """One association: a user (or, with user "", the account itself) under an account, on a cluster."""

    account: str
    user: str = ""
    parent: str = ""
    partition: str = ""
    qos: str = "normal"
    share: int = 1


@dataclass
class Qos:
    """One QOS and the limits sacctmgr sets on it (TRES name -> count; absent means no limit)."""

    name: str
    description: str = ""
    priority: int = 0
    max_tres_per_user: dict[str, int] = field(default_factory=dict)
    grp_tres: dict[str, int] = field(default_factory=dict)


def format_tres(tres: dict[str, int]) -> str:
    """`cpu=16,node=2` as sacctmgr prints a TRES list (in TRES id order: cpu, mem, energy, node)."""
    order = ["cpu", "mem", "energy", "node", "billing"]
    keys = sorted(tres, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ",".join(f"{key}={tres[key]}" for key in keys)


def parse_tres(text: str) -> dict[str, int] | None:
    """`cpu=16,node=2` into counts; -1 clears a limit (dropped here). None when malformed."""
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("cpu", "mem", "node", "billing", "energy"):
            return None
        # ASCII digits only (numbers.to_int): int() would also read " 3", "+3", "1_0" and "٣".
        if value == "-1":
            continue
        count = to_int(value)
        if count is None:
            return None
        out[key] = count
    return out


@dataclass
class AccountRecord:
    name: str
    description: str
    organization: str


@dataclass
class UserRecord:
    name: str
    default_account: str
    admin: str = "None"


@dataclass
class Accounting:
    """The cluster's accounting: slurmctld's DBD agent queue and slurmdbd's database."""

    cluster_name: str = "hpc"
    # Whether slurmdbd answers now (the service layer decides; `sync` receives it).
    serving: bool = False
    # Keyed as slurmdbd keys its job table: job id and submit time (ids restart after `slurmctld -c`).
    records: dict[tuple[int, int], JobRecord] = field(default_factory=dict)
    # Messages slurmctld has not delivered yet: (job id, kind, the record as of the event).
    queue: list[tuple[int, str, JobRecord]] = field(default_factory=list)
    # What slurmctld has already handed to its agent for each job: "start", "end".
    sent: dict[tuple[int, int], set[str]] = field(default_factory=dict)
    # Records slurmctld dropped (its state and queue wiped while slurmdbd was away).
    lost: int = 0
    accounts: dict[str, AccountRecord] = field(default_factory=dict)
    users: dict[str, UserRecord] = field(default_factory=dict)
    associations: list[Association] = field(default_factory=list)
    qos: dict[str, Qos] = field(default_factory=lambda: {"normal": Qos("normal", "Normal QOS default")})
    # The database's files in MariaDB's datadir (path under it -> sha256), where a scenario laid
    # them out: what an operator who wipes the datadir destroys (scenarios/accounting_rules.py).
    db_files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def seeded(cls, cluster_name: str, users: dict[str, str]) -> Accounting:
        """A database as the site set it up: root, one account per group of users (user -> account)."""
        acct = cls(cluster_name=cluster_name)
        acct.accounts["root"] = AccountRecord("root", "default root account", "root")
        acct.associations.append(Association("root"))
        acct.add_user("root", "root", admin="Administrator")
        for user, account in users.items():
            if account not in acct.accounts:
                acct.add_account(account, f"{account} group", account)
            acct.add_user(user, account)
        return acct

    def add_account(self, name: str, description: str, organization: str, parent: str = "root") -> None:
        self.accounts[name] = AccountRecord(name, description, organization)
        self.associations.append(Association(name, parent=parent))

    def add_user(self, name: str, account: str, admin: str = "None") -> None:
        if name not in self.users:
            self.users[name] = UserRecord(name, account, admin)
        if self.association(name, account) is None:
            self.associations.append(Association(account, user=name))

    def association(self, user: str, account: str) -> Association | None:
        return next((a for a in self.associations if a.user == user and a.account == account), None)

    def default_account(self, user: str) -> str:
        record = self.users.get(user)
        return record.default_account if record is not None else ""

    # ---- slurmctld's side -------------------------------------------------------------------------

    def check_submit(self, options: dict[str, str], user: str) -> None:
        """With AccountingStorageEnforce=associations, refuse a job whose user has no association.

        slurmctld checks this before it makes the job record, so a refused job uses no job id.

        Raises:
            SlurmError: ESLURM_INVALID_ACCOUNT's text.
        """
        if options.get("accountingstoragetype", "") != SLURMDBD_STORAGE:
            return
        enforce = set(options.get("accountingstorageenforce", "").lower().split(","))
        if not enforce & {"associations", "limits", "qos", "safe"}:
            return
        if not any(assoc.user == user for assoc in self.associations):
            raise SlurmError(INVALID_ACCOUNT)

    def limit_reason(self, cluster: SlurmState, job: Job) -> Reason | None:
        """The QOS limit that keeps `job` pending (acct_policy_job_runnable), or None.

        Every association's QOS is `normal` here. Only enforced with AccountingStorageEnforce
        naming limits (or qos) and slurmdbd accounting.
        """
        options = cluster.conf.options
        if options.get("accountingstoragetype", "") != SLURMDBD_STORAGE:
            return None
        if not set(options.get("accountingstorageenforce", "").lower().split(",")) & {"limits", "qos"}:
            return None
        qos = self.qos.get("normal")
        if qos is None:
            return None
        wanted = (job.num_tasks or job.min_nodes) * job.cpus_per_task
        running = [other for other in cluster.jobs.values() if other.state is JobState.RUNNING]
        in_use = sum(sum(other.cpus_by_node.values()) for other in running)
        mine = sum(sum(other.cpus_by_node.values()) for other in running if other.user == job.user)
        if "cpu" in qos.grp_tres and in_use + wanted > qos.grp_tres["cpu"]:
            return Reason.QOS_GRP_CPU
        if "cpu" in qos.max_tres_per_user and mine + wanted > qos.max_tres_per_user["cpu"]:
            return Reason.QOS_MAX_CPU_PER_USER
        return None

    @property
    def queue_size(self) -> int:
        return len(self.queue)

    def sync(self, cluster: SlurmState, serving: bool) -> None:
        """Hand new job events to the agent, then deliver the queue if slurmdbd answers."""
        self.serving = serving
        if cluster.conf.options.get("accountingstoragetype", "") != SLURMDBD_STORAGE:
            return
        for job in sorted(cluster.jobs.values(), key=lambda j: j.job_id):
            done = self.sent.setdefault((job.job_id, job.submit_s), set())
            if job.start_s is not None and "start" not in done:
                done.add("start")
                self.queue.append((job.job_id, "start", self._record_of(job, cluster)))
            if job.state.is_finished() and job.end_s is not None and "end" not in done:
                done.add("end")
                self.queue.append((job.job_id, "end", self._record_of(job, cluster)))
        if serving:
            for _, _, record in self.queue:
                self.records[(record.job_id, record.submit_s)] = record
            self.queue = []

    def drop_queue(self) -> None:
        """Slurmctld started without its saved state (`-c`, or StateSaveLocation wiped): the queue is gone."""
        self.lost += sum(1 for _, kind, _ in self.queue if kind == "end")
        self.queue = []
        self.sent = {}

    def _record_of(self, job: Job, cluster: SlurmState) -> JobRecord:
        state = job.state.value if job.state.is_finished() else JobState.RUNNING.value
        time_limit = job.time_limit_min if isinstance(job.time_limit_min, int) else None
        return JobRecord(
            job_id=job.job_id,
            name=job.name,
            partition=job.partition,
            account=self.default_account(job.user) or "root",
            user=job.user,
            uid=job.uid,
            group=job.group,
            gid=job.gid,
            alloc_cpus=sum(job.cpus_by_node.values()) or max(1, job.min_nodes),
            nnodes=len(job.nodes) or job.min_nodes,
            node_list=compress_hostlist(list(job.nodes)) if job.nodes else "None assigned",
            submit_s=job.submit_s,
            start_s=job.start_s,
            end_s=job.end_s if job.state.is_finished() else None,
            state=state,
            exit_code=job.exit_code,
            exit_signal=job.exit_signal,
            time_limit_min=time_limit,
            batch=job.batch,
        )


# The site's users and the account each belongs to (the images' accounts, setup-node.sh).
SITE_ACCOUNTS = {"alice": "physics", "bob": "chemistry", "carol": "physics"}
