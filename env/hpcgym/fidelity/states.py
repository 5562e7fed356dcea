"""The fidelity states: how an operator gets a cluster there, and what they look at once there.

Every state starts from a fresh cluster (four idle nodes of two CPUs, partitions `compute` and `gpu`),
then runs its own steps and the shared `LOOK` views. Commands are chosen so that the real cluster
prints the same thing every time (`srun -l ... | sort` where tasks print in any order). States marked
`ci` are the quick ones a CI-sized run plays; states whose real outputs race (the exit code of a
cancelled batch job, where the srun after a just-finished one lands) stay out of it.
"""

from __future__ import annotations

from hpcgym.fidelity.script import Cmd, Daemon, Start, State, Step, Stop, Wait

# What an operator looks at in every state.
LOOK = (
    "sinfo",
    "sinfo -N",
    "sinfo -R",
    "sinfo -s",
    "sinfo -o '%N %T %E %u'",
    "squeue",
    "squeue -t all",
    "squeue -o '%i %j %T %r %N %C'",
    "scontrol show node compute-01",
    "scontrol show job",
)
# A shorter look, for states where each client call is slow (slurmctld down) or the focus is narrow.
GLANCE = ("sinfo", "squeue", "sinfo -R")


def _steps(*items: str | Step, look: tuple[str, ...] = LOOK) -> tuple[Step, ...]:
    steps = [Cmd(item) if isinstance(item, str) else item for item in items]
    return (*steps, *(Cmd(line) for line in look))


def _state(
    name: str, about: str, *items: str | Step, look: tuple[str, ...] = LOOK, ci: bool = False
) -> State:
    return State(name, about, _steps(*items, look=look), ci=ci)


SLEEP_JOB = "sbatch --wrap 'sleep 120'"

STATES: tuple[State, ...] = (
    _state(
        "idle",
        "four idle nodes, no jobs; the views and their flags",
        "sinfo -l",
        "sinfo -N -l",
        "sinfo -Nel",
        "scontrol show partition",
        "scontrol show nodes",
        "scontrol ping",
        "squeue --start",
        "squeue -l",
        "sacct",
        "sinfo -p gpu",
        "sinfo -t idle",
        "sinfo -d",
        ci=True,
    ),
    _state(
        "drain-idle",
        "an idle node drained by hand with a reason",
        'scontrol update NodeName=compute-01 State=DRAIN Reason="disk full"',
        "sinfo -d",
        "sinfo -t drain",
        ci=True,
    ),
    _state(
        "drain-errors",
        "DRAIN without a reason, an unknown node, a bad state, RESUME of an idle node",
        "scontrol update NodeName=compute-01 State=DRAIN",
        'scontrol update NodeName=compute-99 State=DRAIN Reason="x"',
        "scontrol update NodeName=compute-01 State=BOGUS",
        "scontrol update NodeName=compute-01 State=RESUME",
        "scontrol show node compute-99",
        look=GLANCE,
        ci=True,
    ),
    _state(
        "draining",
        "a node drained under a running job (drng), then the job cancelled (drained)",
        "sbatch -w compute-01 --wrap 'sleep 120'",
        Wait(4),
        'scontrol update NodeName=compute-01 State=DRAIN Reason="bad dimm"',
        *LOOK,
        "scancel 1",
        Wait(2),
    ),
    _state(
        "resumed",
        "drained, then resumed, then resumed again (error)",
        'scontrol update NodeName=compute-02 State=DRAIN Reason="maintenance"',
        "scontrol update NodeName=compute-02 State=RESUME",
        "sinfo",
        "scontrol show node compute-02",
        "scontrol update NodeName=compute-02 State=RESUME",
        Wait(3),
        ci=True,
    ),
    _state(
        "down-manual",
        "a node set DOWN by hand with a reason",
        'scontrol update NodeName=compute-01 State=DOWN Reason="psu failed"',
        "sinfo -d",
        "scontrol update NodeName=compute-01 State=DOWN",
        ci=True,
    ),
    _state(
        "down-then-resume",
        "a node set DOWN by hand, then resumed while its slurmd runs",
        'scontrol update NodeName=compute-03 State=DOWN Reason="cable"',
        "scontrol update NodeName=compute-03 State=RESUME",
        Wait(4),
    ),
    _state(
        "fail",
        "a node set FAIL with a reason",
        'scontrol update NodeName=compute-04 State=FAIL Reason="ecc errors"',
    ),
    _state(
        "noresp",
        "slurmd on compute-02 stopped, a few seconds later (not yet SlurmdTimeout)",
        Stop(Daemon.SLURMD, "compute-02"),
        Wait(6),
        "scontrol show node compute-02",
    ),
    _state(
        "down-noresp",
        "slurmd on compute-02 stopped past SlurmdTimeout: DOWN*, Not responding",
        Stop(Daemon.SLURMD, "compute-02"),
        Wait(25),
        "scontrol show node compute-02",
        "sinfo -d",
    ),
    _state(
        "drained-noresp",
        "compute-02 drained by an admin, then its slurmd stopped past SlurmdTimeout",
        'scontrol update NodeName=compute-02 State=DRAIN Reason="swap disk"',
        Stop(Daemon.SLURMD, "compute-02"),
        Wait(25),
        "scontrol show node compute-02",
    ),
    _state(
        "return-to-service",
        "slurmd stopped past SlurmdTimeout, then started: ReturnToService=1 brings it back",
        Stop(Daemon.SLURMD, "compute-02"),
        Wait(25),
        "sinfo",
        Start(Daemon.SLURMD, "compute-02"),
        Wait(5),
        "scontrol show node compute-02",
    ),
    _state(
        "job-on-lost-node",
        "a batch job and an srun job on a node whose slurmd stops (requeue / NODE_FAIL)",
        "sbatch -w compute-02 --wrap 'sleep 120'",
        "srun -w compute-03 sleep 120 &",
        # The slurmd stop well clear of the jobs' launch and of a ping round (both at slurmctld's
        # start + 3 s), and the look after the nodes went DOWN (25-28 s after the stop) and before
        # the backfill pass at start + 60 s and the purge of the NODE_FAIL job: with the stop at 3 s
        # and the look at 28 s, two real runs differed on DOWN or not and on Reason=None or BeginTime.
        Wait(19),
        Stop(Daemon.SLURMD, "compute-02"),
        Stop(Daemon.SLURMD, "compute-03"),
        Wait(31),
    ),
    _state(
        "jobs-running-pending",
        "more work than CPUs: running jobs, Resources and Priority",
        "sbatch -N4 --wrap 'sleep 120'",
        "sbatch --wrap 'sleep 120'",
        "sbatch --wrap 'sleep 120'",
        "sbatch -p gpu --wrap 'sleep 120'",
        Wait(4),
        "squeue --start",
        "squeue -l",
        ci=True,
    ),
    _state(
        "partial-load",
        "a few jobs of different sizes: mixed and allocated nodes",
        "sbatch -n1 --wrap 'sleep 120'",
        "sbatch -n2 --wrap 'sleep 120'",
        "sbatch -N2 --wrap 'sleep 120'",
        Wait(4),
        "sinfo -o '%P %A %F'",
        "scontrol show nodes",
        ci=True,
    ),
    _state(
        "srun-foreground",
        "srun in the foreground: placement, task counts, exit codes",
        "srun printenv SLURMD_NODENAME",
        "srun -N2 -l printenv SLURMD_NODENAME | sort",
        "srun -n3 -l printenv SLURM_PROCID | sort",
        "srun -w compute-04 printenv SLURM_JOB_NODELIST",
        "srun false",
        "srun sh -c 'exit 3'",
        "srun -N4 -l printenv SLURM_NNODES | sort",
        ci=True,
    ),
    _state(
        "srun-back-to-back",
        "quick srun after srun: where each lands and what the queue keeps",
        "srun printenv SLURMD_NODENAME",
        "srun printenv SLURMD_NODENAME",
        "srun printenv SLURMD_NODENAME",
        "srun printenv SLURM_JOB_ID",
    ),
    _state(
        "srun-background",
        "a long srun in the background keeps its CPUs",
        "srun sleep 90 &",
        # Two clients started in the same instant race for the first job id on the real cluster.
        Wait(1),
        "srun -N2 sleep 90 &",
        Wait(14),
        "srun -N2 -l printenv SLURMD_NODENAME | sort",
    ),
    _state(
        "quick-jobs",
        "quick batch jobs just after they finish: CG, CD",
        "sbatch --wrap true",
        "sbatch --wrap true",
        "sbatch --wrap 'exit 2'",
        Wait(5),
    ),
    _state(
        "finished-purged",
        "batch jobs long after they finished: MinJobAge and the purge",
        "sbatch --wrap true",
        "sbatch --wrap 'exit 1'",
        Wait(8),
        "squeue -t all",
        Wait(25),
    ),
    _state(
        "cancelled",
        "running and pending jobs cancelled",
        "sbatch -N4 --wrap 'sleep 120'",
        "sbatch -N4 --wrap 'sleep 120'",
        Wait(4),
        "scancel 2",
        "scancel 1",
        Wait(3),
    ),
    _state(
        "scancel-forms",
        "scancel by name, by user, by state, of unknown and finished jobs",
        "sbatch -J alpha --wrap 'sleep 120'",
        "sbatch -J beta --wrap 'sleep 120'",
        Wait(4),
        "scancel 99",
        "scancel abc",
        "scancel -n alpha",
        "scancel --state=RUNNING -u root",
        "scancel 1",
        Wait(3),
        look=(*GLANCE, "squeue -t all"),
        ci=True,
    ),
    _state(
        "requeued",
        "a running batch job requeued",
        "sbatch --wrap 'sleep 120'",
        Wait(4),
        "scontrol requeue 1",
        Wait(2),
        "scontrol requeue 99",
    ),
    _state(
        "held-released",
        "jobs held at submission and by scontrol, then released",
        "sbatch -H --wrap 'sleep 120'",
        "sbatch -N4 --wrap 'sleep 120'",
        "sbatch --wrap 'sleep 120'",
        Wait(4),
        "scontrol hold 3",
        "squeue",
        "scontrol release 1",
        Wait(3),
        ci=True,
    ),
    _state(
        "dependencies",
        "afterok, afterany and afternotok on running and failing jobs",
        "sbatch --wrap 'sleep 4'",
        "sbatch -d afterok:1 --wrap 'sleep 120'",
        "sbatch -d afterany:1 --wrap 'sleep 120'",
        "sbatch --wrap 'exit 1'",
        "sbatch -d afterok:4 --wrap true",
        "sbatch -d afterok:99 --wrap true",
        Wait(10),
    ),
    _state(
        "array",
        "a job array, part running, part pending",
        "sbatch --array=1-6 --wrap 'sleep 120'",
        Wait(4),
    ),
    _state(
        "sbatch-errors",
        "sbatch refusals: partition, node count, memory, options, no script",
        "sbatch -p nope --wrap true",
        "sbatch -N 9 --wrap true",
        "sbatch --mem=99999 --wrap true",
        "sbatch -w compute-99 --wrap true",
        "sbatch --bogus --wrap true",
        "sbatch /nonexistent.sh",
        "sbatch -p gpu -t 2-00:00:00 --wrap true",
        "sbatch -t 1 --wrap true",
        look=GLANCE,
        ci=True,
    ),
    _state(
        "srun-errors",
        "srun refusals and waits",
        "srun -p nope true",
        "timeout 3 srun -N 9 true",
        "srun --bogus true",
        "srun",
        "srun -w compute-99 true",
        look=GLANCE,
        ci=True,
    ),
    _state(
        "partition-down",
        "a partition set DOWN by hand, and a job submitted to it",
        "scontrol update PartitionName=gpu State=DOWN",
        "sbatch -p gpu --wrap 'sleep 120'",
        "scontrol show partition gpu",
        "scontrol update PartitionName=nope State=DOWN",
        Wait(3),
    ),
    _state(
        "timeout",
        "a batch job and an srun past a one-minute TimeLimit",
        "sbatch -t 1 --wrap 'sleep 300'",
        "srun -t 1 sleep 300 &",
        Wait(95),
    ),
    _state(
        "munged-down",
        "munged stopped: what every client prints",
        "sbatch --wrap 'sleep 120'",
        Stop(Daemon.MUNGED),
        "sinfo",
        "squeue",
        "scontrol ping",
        "scontrol show node compute-01",
        "sbatch --wrap true",
        "srun true",
        "scancel 1",
        "sacct",
        Start(Daemon.MUNGED),
        "sinfo",
        "squeue",
        look=(),
        ci=True,
    ),
    _state(
        "slurmctld-down",
        "slurmctld stopped: clients cannot reach it",
        Stop(Daemon.SLURMCTLD),
        "sinfo",
        "scontrol ping",
        "squeue",
        look=(),
    ),
    _state(
        "slurmctld-restart",
        "slurmctld stopped and started again: jobs and node states survive",
        'scontrol update NodeName=compute-04 State=DRAIN Reason="fan"',
        "sbatch --wrap 'sleep 120'",
        Wait(3),
        Stop(Daemon.SLURMCTLD),
        Start(Daemon.SLURMCTLD),
        Wait(3),
        "scontrol ping",
    ),
    _state(
        "slurmctld-clean-start",
        "slurmctld started with -c: its saved jobs are gone",
        'scontrol update NodeName=compute-04 State=DRAIN Reason="fan"',
        "sbatch --wrap 'sleep 120'",
        Wait(3),
        Stop(Daemon.SLURMCTLD),
        Start(Daemon.SLURMCTLD, clean=True),
        # Looked at before the first ping round (3 s after the start) has the nodes register: at
        # 3 s one real run showed them UNKNOWN with BootTime=None, another idle.
        Wait(1),
    ),
    _state(
        "formats",
        "sinfo and squeue formats and flags with jobs running",
        "sbatch -J fmt -N2 --wrap 'sleep 120'",
        "sbatch -J other -p gpu --wrap 'sleep 120'",
        Wait(4),
        "squeue -o '%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R'",
        "squeue -h -o %i",
        "squeue -u root",
        "squeue -p gpu",
        "squeue -j 1",
        "squeue -n fmt",
        "squeue --states=R",
        "squeue -O jobid,name,state,nodelist",
        "sinfo -o '%P %a %l %D %t %N'",
        "sinfo -N -o '%N %c %m %z %d'",
        "sinfo -h -t alloc",
        "scontrol show job 1",
        "scontrol show partition compute",
        ci=True,
    ),
)


def choose(names: str = "", ci: bool = False) -> list[State]:
    """States by comma-separated names (all by default), or only the CI-sized set."""
    chosen = [s for s in STATES if s.ci] if ci else list(STATES)
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        by_name = {s.name: s for s in STATES}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            from hpcgym.errors import HpcgymError

            raise HpcgymError(f"no fidelity state {', '.join(unknown)}", hint=f"states: {', '.join(by_name)}")
        chosen = [by_name[n] for n in wanted]
    return chosen
