"""`scontrol show` records for nodes, partitions, jobs and steps (captures */scontrol_show_*.out).

Each record is Slurm's multi-line `key=value` layout, trailing spaces included, ending with an empty
line. Host-specific values (OS, FreeMem, CPULoad) come from the node's own simulated state.
"""

from __future__ import annotations

from hpcgym.controller.arrays import task_field
from hpcgym.controller.commands.base import SLURM_VERSION
from hpcgym.controller.hostlist import compress_hostlist
from hpcgym.controller.slurmctld import SlurmState
from hpcgym.controller.state import Job, JobState, Partition, SlurmNode, Step
from hpcgym.controller.timefmt import format_duration, format_iso, format_limit

# The persona's kernel, printed where the real node would print its uname.
NODE_OS = "Linux 5.14.0-362.8.1.el9_3.x86_64 #1 SMP PREEMPT_DYNAMIC Wed Nov 8 17:36:32 UTC 2023"


def node_record(node: SlurmNode) -> list[str]:
    c = node.conf
    # What only the node's registration tells slurmctld (Debian's 22.05.8 after a restart: no
    # Arch=, no Version=, no OS= line until the node registered again).
    arch = "Arch=x86_64 " if node.registered else ""
    version = f" Version={SLURM_VERSION}" if node.registered else " "
    lines = [
        f"NodeName={node.name} {arch}CoresPerSocket={c.cores_per_socket} ",
        f"   CPUAlloc={node.cpus_alloc} CPUEfctv={c.cpus} CPUTot={c.cpus} "
        f"CPULoad={node.cpu_load_centi() / 100:.2f}",
        f"   AvailableFeatures={c.features or '(null)'}",
        f"   ActiveFeatures={c.features or '(null)'}",
        f"   Gres={c.gres or '(null)'}",
        f"   NodeAddr={c.addr} NodeHostName={c.hostname} Port={c.port}{version}",
        *([f"   OS={NODE_OS} "] if node.registered else []),
        f"   RealMemory={c.real_memory_mb} AllocMem=0 FreeMem={node.free_mem_mb()} "
        f"Sockets={c.boards * c.sockets_per_board} Boards={c.boards}",
        f"   State={node.state_complete()} ThreadsPerCore={c.threads_per_core} TmpDisk={c.tmp_disk_mb} "
        f"Weight={c.weight} Owner=N/A MCS_label=N/A",
        f"   Partitions={','.join(node.partitions)} ",
        f"   BootTime={format_iso(node.boot_s, none='None')} "
        f"SlurmdStartTime={format_iso(node.slurmd_start_s, none='None')}",
        f"   LastBusyTime={format_iso(node.last_busy_s, none='Unknown')}",
        f"   CfgTRES=cpu={c.cpus},mem={c.real_memory_mb}M,billing={c.cpus}",
        f"   AllocTRES={f'cpu={node.cpus_alloc}' if node.cpus_alloc else ''}",
        "   CapWatts=n/a",
        "   CurrentWatts=0 AveWatts=0",
        "   ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s",
    ]
    if node.reason is not None:
        lines.append(f"   Reason={node.reason} [{node.reason_user}@{format_iso(node.reason_s)}]")
    return lines


def partition_record(cluster: SlurmState, part: Partition) -> list[str]:
    c = part.conf
    nodes = [cluster.nodes[name] for name in part.nodes]
    cpus = sum(n.conf.cpus for n in nodes)
    mem = sum(n.conf.real_memory_mb for n in nodes)
    max_nodes = "UNLIMITED" if c.max_nodes is None else str(c.max_nodes)
    return [
        f"PartitionName={part.name}",
        "   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL",
        f"   AllocNodes=ALL Default={'YES' if c.default else 'NO'} QoS=N/A",
        f"   DefaultTime={format_limit(c.default_time_min, unlimited='NONE')} DisableRootJobs=NO "
        f"ExclusiveUser=NO GraceTime=0 Hidden={'YES' if c.hidden else 'NO'}",
        f"   MaxNodes={max_nodes} MaxTime={format_limit(c.max_time_min)} MinNodes={c.min_nodes} LLN=NO "
        "MaxCPUsPerNode=UNLIMITED",
        f"   Nodes={compress_hostlist(list(part.nodes))}",
        f"   PriorityJobFactor=1 PriorityTier={c.priority_tier} RootOnly={'YES' if c.root_only else 'NO'} "
        "ReqResv=NO OverSubscribe=NO",
        "   OverTimeLimit=NONE PreemptMode=OFF",
        f"   State={part.state.value} TotalCPUs={cpus} TotalNodes={len(nodes)} SelectTypeParameters=NONE",
        "   JobDefaults=(null)",
        "   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED",
        f"   TRES=cpu={cpus},mem={mem}M,node={len(nodes)},billing={cpus}",
    ]


def _num_tasks(job: Job) -> str:
    # slurmctld packs the requested task count, else the node count while pending or once allocated.
    if job.num_tasks is not None:
        return str(job.num_tasks)
    if job.state is JobState.PENDING:
        return str(job.min_nodes)
    return str(len(job.nodes)) if job.nodes else "N/A"


def _dependency(job: Job) -> str:
    if not job.dependency:
        return "(null)"
    state = "failed" if job.dependency_failed else "unfulfilled"
    return ",".join(f"{kind}:{dep_id}({state})" for kind, dep_id in job.dependency)


def _array_fields(job: Job) -> str:
    if job.array_job_id is None:
        return ""
    throttle = f"ArrayTaskThrottle={job.array_throttle} " if job.array_throttle else ""
    return f"ArrayJobId={job.array_job_id} ArrayTaskId={task_field(job)} {throttle}"


def _tres(cluster: SlurmState, job: Job) -> str:
    # An allocation, the one running or the last one a requeued job keeps: with CR_Core memory is
    # not allocated, so only an explicit --mem shows up.
    alloc = (job.cpus, len(job.nodes)) if job.nodes else job.kept_alloc
    if alloc is not None:
        cpus, count = alloc
        mem = f"mem={job.min_mem_mb * count}M," if job.min_mem_mb else ""
        return f"cpu={cpus},{mem}node={count},billing={cpus}"
    cpus = job.cpus
    # Not allocated yet: the request, where memory 0 means each node's whole memory.
    part_nodes = [cluster.nodes[name] for name in cluster.partitions[job.partition].nodes]
    per_node = job.min_mem_mb or min((n.conf.real_memory_mb for n in part_nodes), default=0)
    return f"cpu={cpus},mem={per_node * job.min_nodes}M,node={job.min_nodes},billing={cpus}"


def job_record(cluster: SlurmState, job: Job, *, details: bool, alloc_host: str) -> list[str]:
    now = cluster.now_s
    if job.state is JobState.PENDING or job.start_s is None:
        run_s = 0
    else:
        run_s = (job.end_s if job.end_s is not None else now) - job.start_s
    reason = job.reason_text().replace(" ", "_")
    if job.state is JobState.PENDING:
        num_nodes = f"{job.min_nodes}-{job.max_nodes}" if job.max_nodes else str(job.min_nodes)
        start, end = format_iso(job.begin_s if job.held is None else None), "Unknown"
    else:
        num_nodes = str(len(job.nodes) or job.min_nodes)
        start = format_iso(job.start_s)
        if job.end_s is not None:
            end = format_iso(job.end_s)
        elif job.time_limit_min is not None and job.start_s is not None:
            end = format_iso(job.start_s + job.time_limit_min * 60)
        else:
            end = "Unknown"
    exit_code = f"{job.exit_code}:{job.exit_signal}"
    lines = [
        f"JobId={job.job_id} {_array_fields(job)}JobName={job.name}",
        f"   UserId={job.user}({job.uid}) GroupId={job.group}({job.gid}) MCS_label=N/A",
        f"   Priority={job.priority} Nice=0 Account=(null) QOS=(null)",
        f"   JobState={job.state_long} Reason={reason} Dependency={_dependency(job)}",
        f"   Requeue=1 Restarts={job.restarts} BatchFlag={1 if job.batch else 0} Reboot=0 "
        f"ExitCode={exit_code}",
    ]
    if details:
        lines.append(f"   DerivedExitCode={exit_code}")
    lines += [
        f"   RunTime={format_duration(run_s, always_hours=True)} "
        f"TimeLimit={format_limit(job.time_limit_min)} "
        "TimeMin=N/A",
        f"   SubmitTime={format_iso(job.submit_s)} EligibleTime={format_iso(job.eligible_s)}",
        f"   AccrueTime={format_iso(job.accrue_s)}",
        f"   StartTime={start} EndTime={end} Deadline=N/A",
        "   SuspendTime=None SecsPreSuspend=0 "
        f"LastSchedEval={format_iso(job.last_sched_eval_s)} Scheduler=Main",
        f"   Partition={job.partition} AllocNode:Sid={alloc_host}:{job.alloc_sid}",
        f"   ReqNodeList={compress_hostlist(job.req_nodes) or '(null)'} "
        f"ExcNodeList={compress_hostlist(job.exc_nodes) or '(null)'}",
        f"   NodeList={compress_hostlist(job.nodes)}",
    ]
    if job.batch_host:
        lines.append(f"   BatchHost={job.batch_host}")
    lines += [
        f"   NumNodes={num_nodes} NumCPUs={job.cpus} NumTasks={_num_tasks(job)} "
        f"CPUs/Task={job.cpus_per_task} "
        "ReqB:S:C:T=0:0:*:*",
        f"   TRES={_tres(cluster, job)}",
        "   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*",
    ]
    if details and job.allocated:
        lines.append("   JOB_GRES=(null)")
        for name, cpus in job.cpus_by_node.items():
            # CPU ids follow allocation order: jobs that got the node earlier hold the lower ids.
            first = sum(
                other.cpus_by_node.get(name, 0)
                for other in cluster.jobs.values()
                if other.allocated and other.job_id < job.job_id
            )
            ids = str(first) if cpus == 1 else f"{first}-{first + cpus - 1}"
            lines.append(f"     Nodes={name} CPU_IDs={ids} Mem=0 GRES=")
    lines += [
        f"   MinCPUsNode={job.cpus_per_task} MinMemoryNode={f'{job.min_mem_mb}M' if job.min_mem_mb else 0} "
        "MinTmpDiskNode=0",
        "   Features=(null) DelayBoot=00:00:00",
    ]
    if job.reservation is not None:
        lines.append(f"   Reservation={job.reservation}")
    lines += [
        f"   OverSubscribe={'NO' if job.exclusive else 'OK'} Contiguous=0 Licenses={job.licenses or '(null)'}"
        " Network=(null)",
        f"   Command={job.command or '(null)'}",
        f"   WorkDir={job.work_dir}",
    ]
    if job.batch:
        out = job.stdout_path or f"{job.work_dir.rstrip('/')}/slurm-{job.job_id}.out"
        lines += [f"   StdErr={job.stderr_path or out}", "   StdIn=/dev/null", f"   StdOut={out}"]
    lines += ["   Power=", "   "]
    return lines


def step_record(job: Job, step: Step, srun_host: str) -> list[str]:
    return [
        f"StepId={step.step_id} UserId={job.uid} StartTime={format_iso(step.start_s)} "
        f"TimeLimit={format_limit(job.time_limit_min)}",
        f"   State=RUNNING Partition={job.partition} NodeList={compress_hostlist(step.nodes)}",
        f"   Nodes={len(step.nodes)} CPUs={step.cpus} Tasks={step.tasks} Name={step.name} Network=(null)",
        f"   TRES=cpu={step.cpus},mem=0,node={len(step.nodes)}",
        "   ResvPorts=(null)",
        "   CPUFreqReq=Default Dist=Block",
        f"   SrunHost:Pid={srun_host}:{job.alloc_sid}",
    ]


def render(records: list[list[str]], *, oneliner: bool) -> str:
    """Join records as scontrol prints them: an empty line after each, or one line each with -o."""
    if oneliner:
        return "".join(" ".join(line.strip() for line in record if line.strip()) + "\n" for record in records)
    return "".join("\n".join(record) + "\n\n" for record in records)
