"""Putting a scenario's fault into a fresh episode: node files, daemons, Slurm state, GPUs, time.

Inject steps run outside the agent's shell, before the first prompt, through the same hands the
controller uses (`episode.nodes` for files and processes, `episode.services` for units, the Slurm
`SlurmState` for node and partition state). After the last step the controller syncs, so what the
agent first sees is what the broken cluster would show. Grading never reads anything written here as
evidence of a fix: checks look at the live state and at root causes (checks.py).
"""

from __future__ import annotations

import calendar
import functools
import os
import posixpath
import random
import time
from collections.abc import Callable
from typing import Any

from hpcgym.controller import joblife
from hpcgym.controller.hostlist import expand_names
from hpcgym.controller.numbers import to_int
from hpcgym.controller.rpc import JobRequest, SlurmError, User
from hpcgym.controller.services import xid
from hpcgym.controller.services.daemon import lookup_ids
from hpcgym.controller.services.gpu import make_gpus
from hpcgym.controller.services.journal import Entry, Priority
from hpcgym.controller.services.packages import BY_NAME
from hpcgym.controller.slurmconf import SLURM_CONF_PATH, parse_slurm_conf
from hpcgym.controller.slurmctld import INFINITE_RESV_S
from hpcgym.controller.state import JobState, PartitionState, Reservation, ReservationFlag
from hpcgym.controller.timefmt import format_iso, parse_time_limit
from hpcgym.episode import Episode
from hpcgym.errors import ScenarioError
from hpcgym.scenarios import accounting_rules, schema

# The accounts the images create (setup-node.sh); jobs injected for them show their names in squeue.
USERS = {"alice": 2001, "bob": 2002, "carol": 2003}
KILL_WAIT_S = 5.0


def inject_fault(episode: Episode, steps: list[schema.InjectStep], rng: random.Random) -> None:
    """Apply every inject step in order, then let the controller see the result.

    Raises:
        ScenarioError: a step does not apply to this cluster (a file or node that is not there).
    """
    for step in steps:
        INJECTORS[step.kind](episode, step, rng)
    disguise_injected_files(episode, file_paths(steps))
    episode.controller.advance(0)


# Inject steps that change a node's files, and so leave times and inode numbers behind.
_FILE_STEPS = (
    schema.WriteFile,
    schema.ReplaceInFile,
    schema.Chmod,
    schema.Chown,
    schema.Delete,
    schema.RandomBytes,
)
# Enough draws per scenario to meet every variant of the library's small parameter spaces.
_DRAWS_PER_SCENARIO = 64


def file_paths(steps: list[schema.InjectStep]) -> frozenset[str]:
    return frozenset(
        posixpath.normpath("/" + step.path.lstrip("/")) for step in steps if isinstance(step, _FILE_STEPS)
    )


@functools.cache
def library_file_paths() -> frozenset[str]:
    """Every node path any library scenario's faults may touch, over its variants."""
    paths: set[str] = set()
    for scenario_id in schema.scenario_ids():
        scenario = schema.load_scenario(scenario_id)
        for seed in range(_DRAWS_PER_SCENARIO):
            paths |= file_paths(scenario.inject_steps(scenario.draw_params(seed)))
    return frozenset(paths)


def disguise_injected_files(episode: Episode, injected: frozenset[str]) -> None:
    """Make the fault's files look like every other candidate's, whatever the scenario.

    Without this `find / -cmin -1`, `ls -lt --time=ctime` or inode numbers point straight at the
    fault. Every path any scenario may touch is written anew on every node, in one fixed order, with
    its own bytes, mode and owners and the image's mtime, and each parent directory gets one entry
    added and removed: the times and the order of creation are the same in every episode.
    """
    paths = sorted(library_file_paths() | injected)
    # The paths themselves too: a state directory a fault removed and one it left look alike.
    dirs = sorted({parent for path in paths for parent in _parents(path)} | set(paths))
    for node in sorted(episode.cluster.nodes):
        role = episode.cluster.nodes[node].role
        image_mtime_s = int(os.stat(episode.cluster.config.lowers[role] / "etc/os-release").st_mtime)
        for directory in dirs:
            episode.nodes.touch_dir(node, directory)
        for path in paths:
            if not episode.nodes.rewrite(node, path, image_mtime_s):
                # Use up an inode number all the same, so the ones after it do not move.
                episode.nodes.touch_dir(node, posixpath.dirname(path))


def _parents(path: str) -> list[str]:
    parents = []
    while (path := posixpath.dirname(path)) != "/":
        parents.append(path)
    return parents


def _ids(episode: Episode, node: str, owner: str, group: str) -> tuple[int, int]:
    uid = lookup_ids(episode.nodes, node, owner)[0]
    gid = _group_gid(episode, node, group)
    return uid, gid if gid is not None else lookup_ids(episode.nodes, node, group)[1]


def _group_gid(episode: Episode, node: str, group: str) -> int | None:
    # A group that is no user's (ansys-users) is found in /etc/group, as chown(1) finds it.
    raw = episode.nodes.read(node, "/etc/group") or b""
    for line in raw.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == group and (number := to_int(fields[2])) is not None:
            return number
    return None


def _write(episode: Episode, step: schema.WriteFile, rng: random.Random) -> None:
    uid, gid = _ids(episode, step.node, step.owner, step.group)
    episode.nodes.write(step.node, step.path, step.content.encode(), mode=step.mode, uid=uid, gid=gid)


def _replace(episode: Episode, step: schema.ReplaceInFile, rng: random.Random) -> None:
    raw = episode.nodes.read(step.node, step.path)
    info = episode.nodes.stat(step.node, step.path)
    if raw is None or info is None or step.old.encode() not in raw:
        raise ScenarioError(f"{step.node}:{step.path} has no {step.old!r} to replace")
    data = raw.replace(step.old.encode(), step.new.encode(), 1)
    episode.nodes.write(step.node, step.path, data, mode=info.perms, uid=info.uid, gid=info.gid)


def _chmod(episode: Episode, step: schema.Chmod, rng: random.Random) -> None:
    episode.nodes.chmod(step.node, step.path, step.mode)


def _chown(episode: Episode, step: schema.Chown, rng: random.Random) -> None:
    episode.nodes.chown(step.node, step.path, *_ids(episode, step.node, step.owner, step.group))


def _delete(episode: Episode, step: schema.Delete, rng: random.Random) -> None:
    episode.nodes.remove_tree(step.node, step.path)


def _random_bytes(episode: Episode, step: schema.RandomBytes, rng: random.Random) -> None:
    info = episode.nodes.stat(step.node, step.path)
    mode, uid, gid = (info.perms, info.uid, info.gid) if info is not None else (0o600, 0, 0)
    episode.nodes.write(step.node, step.path, rng.randbytes(step.size), mode=mode, uid=uid, gid=gid)


def _service(episode: Episode, step: schema.Service, rng: random.Random) -> None:
    services = episode.services
    if services.systemd.unit(step.node, step.unit) is None:
        raise ScenarioError(f"{step.node} has no unit {step.unit}")
    if step.action == "kill":
        runtime = services.systemd.unit(step.node, step.unit)
        if runtime is not None and runtime.main_pid is not None:
            _kill_and_wait(episode, step.node, runtime.main_pid)
        services.systemd.sync()
    elif step.action in ("enable", "disable"):
        services.systemd.set_enabled(step.node, step.unit, step.action == "enable")
    else:
        getattr(services.systemd, step.action)(step.node, step.unit)


def _kill_and_wait(episode: Episode, node: str, pid: int) -> None:
    # SIGKILL is delivered asynchronously: systemd must not look before the process is gone, or
    # the unit would still read as running.
    episode.nodes.kill(node, pid, 9)
    deadline = time.monotonic() + KILL_WAIT_S
    while episode.nodes.is_alive(node, pid):
        if time.monotonic() > deadline:
            raise ScenarioError(f"pid {pid} on {node} survived SIGKILL for {KILL_WAIT_S} s")
        time.sleep(0.005)


def _interface(episode: Episode, step: schema.Interface, rng: random.Random) -> None:
    network = episode.services.network
    result = network.ifup(step.node, "eth0") if step.action == "up" else network.ifdown(step.node, "eth0")
    if step.action == "up" and result.exit_code != 0:
        # As at boot: NetworkManager could not load the scripts, so eth0 keeps only its subnet route.
        network.set_routes(step.node, [])


def _node_state(episode: Episode, step: schema.NodeState, rng: random.Random) -> None:
    cluster = episode.controller.slurm
    node = cluster.node(step.node)
    if step.state == "drain":
        cluster.drain(node, step.reason, step.user)
    elif step.state == "down":
        cluster.set_down(node, step.reason, step.user)
    else:
        cluster.resume(node)


def _partition_state(episode: Episode, step: schema.PartitionStateStep, rng: random.Random) -> None:
    cluster = episode.controller.slurm
    if step.partition not in cluster.partitions:
        raise ScenarioError(f"no partition {step.partition!r}")
    cluster.partitions[step.partition].state = PartitionState[step.state]
    cluster.schedule()


def _site_user(episode: Episode, name: str, uid: int) -> User:
    """The site's user `name` (its group of the same name and id), known to slurmctld from now on."""
    user = User(name, uid, name, uid)
    episode.controller.users.setdefault(name, user)
    return user


def _batch_job(user: User, name: str, script: str, **fields: Any) -> JobRequest:
    """A user's sbatch of `script` from their home directory, with the request's other `fields`."""
    return JobRequest(
        name=name, user=user, work_dir=f"/home/{user.name}", batch=True, command=script, **fields
    )


def _submit(episode: Episode, step: schema.SubmitJob, rng: random.Random) -> None:
    uid = USERS.get(step.user)
    if uid is None:
        raise ScenarioError(f"no user {step.user!r}", hint=f"use one of {sorted(USERS)}")
    user = _site_user(episode, step.user, uid)
    episode.controller.slurm.submit(
        _batch_job(
            user,
            step.name,
            f"/home/{step.user}/{step.name}.sh",
            partition=step.partition,
            min_nodes=step.nodes,
            run_for_s=step.run_for_s,
            gres=step.gres,
            licenses=step.licenses,
            time_limit_min=parse_time_limit(step.time) if step.time is not None else None,
            time_limit_set=step.time is not None,
        )
    )


def _reservation(episode: Episode, step: schema.ReservationStep, rng: random.Random) -> None:
    cluster = episode.controller.slurm
    flags = ReservationFlag.NONE
    for name in filter(None, step.flags.split(",")):
        flags |= ReservationFlag[name]
    start = cluster.now_s + step.start_s
    if step.end is not None:
        end = parse_iso(step.end)
    else:
        end = start + (step.duration_s if step.duration_s is not None else INFINITE_RESV_S)
    resv = Reservation(
        step.name, start, end, tuple(expand_names(step.nodes)), tuple(step.users.split(",")), flags
    )
    try:
        cluster.create_reservation(resv)
    except SlurmError as error:
        raise ScenarioError(f"reservation {step.name}: {error}") from None
    if step.motd is not None:
        text = step.motd.replace("{start}", _when(step.motd_start)).replace("{end}", _when(step.motd_end))
        episode.nodes.write(episode.cluster.login_node, "/etc/motd", text.encode())


def parse_iso(text: str) -> int:
    """An ISO instant (`2026-11-26T08:00:00`, UTC) as epoch seconds.

    Raises:
        ScenarioError: it is not one.
    """
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        raise ScenarioError(f"not an ISO instant: {text!r}") from None


def _when(text: str) -> str:
    return format_iso(parse_iso(text)).replace("T", " ")[:16] + " UTC"


def _reboot(episode: Episode, step: schema.Reboot, rng: random.Random) -> None:
    cluster = episode.controller.slurm
    if step.node not in cluster.nodes:
        raise ScenarioError(f"no node {step.node!r}")
    cluster.reboot_host(step.node)


def _reconfigure(episode: Episode, step: schema.Reconfigure, rng: random.Random) -> None:
    raw = episode.nodes.read(episode.services.controller_host, SLURM_CONF_PATH)
    if raw is None:
        raise ScenarioError("the controller has no slurm.conf to reconfigure from")
    conf = parse_slurm_conf(raw.decode())
    if step.at_start:
        episode.controller.slurm.rebuild(conf)
    else:
        episode.controller.slurm.reconfigure(conf)


_TOPOLOGY = ("boards", "sockets_per_board", "cores_per_socket", "threads_per_core")


def _node_model(episode: Episode, step: schema.NodeModel, rng: random.Random) -> None:
    # The site's hardware, as it was before any fault: nothing registers anew (slurmctld judges
    # it at the next registration, or after a reconfigure).
    for node, hw in sorted(episode.services.hardware.nodes.items()):
        for name in _TOPOLOGY:
            setattr(hw, name, getattr(step, name))
        hw.cpus = hw.sockets * hw.cores_per_socket * hw.threads_per_core
        episode.show_hardware(node)


def _hardware(episode: Episode, step: schema.HardwareStep, rng: random.Random) -> None:
    hw = episode.services.hardware.nodes.get(step.node)
    node = episode.controller.slurm.nodes.get(step.node)
    if hw is None or node is None:
        raise ScenarioError(f"no compute node {step.node!r}")
    for name in ("real_memory_mb", "cpus", "gpus", *_TOPOLOGY):
        value = getattr(step, name)
        if value is not None:
            setattr(hw, name, value)
    if step.cpus is None and any(getattr(step, name) is not None for name in _TOPOLOGY):
        # The kernel counts every thread of every core of every socket it has.
        hw.cpus = hw.sockets * hw.cores_per_socket * hw.threads_per_core
    if step.gpus is not None:
        # nvidia-smi lists what the node has: GPUs it keeps stay as they were, new ones come clean.
        gpus = episode.services.hardware.gpus
        have = gpus.get(step.node, [])
        gpus[step.node] = (have + make_gpus(step.node, step.gpus)[len(have) :])[: step.gpus]
    if step.failed_check is not None:
        hw.failed_checks.append(step.failed_check.removeprefix("NHC: "))
    episode.show_hardware(step.node)
    if node.slurmd_up and node.registered:
        episode.controller.slurm.validate_node_specs(node)


def _package_damage(episode: Episode, step: schema.PackageDamage, rng: random.Random) -> None:
    packages = episode.services.packages
    if packages is None or step.package not in BY_NAME or step.node not in episode.cluster.nodes:
        raise ScenarioError(f"cannot damage {step.package!r} on {step.node!r}")
    packages.damage(step.node, step.package, step.how)


def _app_perms(episode: Episode, step: schema.AppPerms, rng: random.Random) -> None:
    exe = posixpath.join(step.path, step.exe)
    target = {"version": step.path, "bin": posixpath.dirname(exe), "exe": exe}[step.where]
    episode.nodes.chmod(step.node, target, step.mode)


def _app_jobs(episode: Episode, step: schema.AppJobs, rng: random.Random) -> None:
    packages, launch = episode.services.packages, episode.services.users
    uid = USERS.get(step.user)
    if packages is None or launch is None or uid is None or (step.package and step.package not in BY_NAME):
        raise ScenarioError(f"app_jobs: no user {step.user!r} or package {step.package!r}")
    user = _site_user(episode, step.user, uid)
    script = f"/home/{step.user}/{step.name}.sh"
    text = (
        f"#!/bin/bash\n#SBATCH -J {step.name}\n#SBATCH -N 1 -c 2\n"
        f"cd $SLURM_SUBMIT_DIR\n{step.program} input.dat\n"
    )
    episode.nodes.write(episode.cluster.login_node, script, text.encode(), mode=0o755, uid=uid, gid=uid)
    login = episode.cluster.login_node
    if episode.nodes.lstat(login, step.program) is None:
        # The site's application, installed under /apps (shared from the login node) if the
        # scenario has not laid it out itself.
        program = '#!/bin/sh\necho "$(basename "$0"): reading ${1:-input.dat}"\n'
        episode.nodes.write(login, step.program, program.encode(), mode=0o755)
    launch.require(step.user, step.name, step.program)
    if step.package:
        packages.require(step.user, step.name, step.program, step.package)
    now = episode.controller.slurm.now_s
    for index in range(step.count):
        later = max(0, index - step.at_once + 1) * step.stagger_s
        episode.controller.slurm.submit(
            _batch_job(
                user,
                step.name,
                script,
                cpus_per_task=2,
                run_for_s=step.run_for_s,
                begin_s=now + later if later else None,
            )
        )


def _gpu_ecc(episode: Episode, step: schema.GpuEcc, rng: random.Random) -> None:
    gpus = episode.services.hardware.gpus.get(step.node, [])
    if step.index >= len(gpus):
        raise ScenarioError(f"{step.node} has no GPU {step.index}")
    gpus[step.index].add_ecc_errors(
        dram_uncorrectable=step.dram_uncorrectable, dram_correctable=step.dram_correctable
    )


def _gpu_xid(episode: Episode, step: schema.GpuXid, rng: random.Random) -> None:
    gpus = episode.services.hardware.gpus.get(step.node, [])
    if step.index >= len(gpus):
        raise ScenarioError(f"{step.node} has no GPU {step.index}")
    if step.code not in xid.XIDS:
        raise ScenarioError(f"Xid {step.code} is not modelled (controller/services/xid.py)")
    values = (rng.randrange(8), rng.randrange(4), rng.randrange(8, 0x40))
    xid.record_xid(
        episode.services.systemd.journal(step.node),
        gpus[step.index],
        step.code,
        time_s=episode.controller.slurm.now_s,
        pid=step.pid,
        name=step.name,
        values=values,
    )


def _nfs_stale(episode: Episode, step: schema.NfsStale, rng: random.Random) -> None:
    if step.path not in episode.nodes.share_points(step.node):
        raise ScenarioError(f"{step.node} does not mount {step.path} over NFS")
    episode.nodes.make_share_stale(step.node, step.path)


def _nfs_unmount(episode: Episode, step: schema.NfsUnmount, rng: random.Random) -> None:
    if step.path not in episode.nodes.share_points(step.node):
        raise ScenarioError(f"{step.node} does not mount {step.path} over NFS")
    episode.nodes.unmount_share(step.node, step.path)


def _hung_io(episode: Episode, step: schema.HungIo, rng: random.Random) -> None:
    if step.path not in episode.nodes.share_points(step.node):
        raise ScenarioError(f"{step.node} does not mount {step.path} over NFS")
    cluster = episode.controller.slurm
    running = [
        job
        for job in cluster.jobs.values()
        if job.name == step.job and job.state is JobState.RUNNING and step.node in job.nodes
    ]
    if not running:
        raise ScenarioError(f"no running job {step.job!r} on {step.node} to hang")
    # The server came back with its export changed: new calls fail ESTALE; the old one never returns.
    episode.nodes.make_share_stale(step.node, step.path)
    server = episode.cluster.login_node
    episode.services.systemd.journal(step.node).add(
        Entry(
            cluster.now_s,
            xid.KERNEL,
            0,
            "",
            f"nfs: server {server} not responding, still trying",
            Priority.WARNING,
        )
    )
    joblife.hang_job(
        cluster,
        episode.controller.joblife,
        running[0].job_id,
        joblife.HungTask(step.node, step.path, step.comm, step.pid),
    )


def _clock_skew(episode: Episode, step: schema.ClockSkew, rng: random.Random) -> None:
    if step.node not in episode.services.systemd.nodes:
        raise ScenarioError(f"no node {step.node!r}")
    episode.services.clocks.set_offset(step.node, step.seconds)


def _advance(episode: Episode, step: schema.Advance, rng: random.Random) -> None:
    episode.controller.advance(step.seconds)


INJECTORS: dict[str, Callable[[Episode, Any, random.Random], None]] = {
    "write": _write,
    "replace": _replace,
    "chmod": _chmod,
    "chown": _chown,
    "delete": _delete,
    "random_bytes": _random_bytes,
    "service": _service,
    "interface": _interface,
    "node_state": _node_state,
    "partition_state": _partition_state,
    "submit": _submit,
    "gpu_ecc": _gpu_ecc,
    "gpu_xid": _gpu_xid,
    "nfs_stale": _nfs_stale,
    "nfs_unmount": _nfs_unmount,
    "hung_io": _hung_io,
    "clock_skew": _clock_skew,
    "reservation": _reservation,
    "reboot": _reboot,
    "reconfigure": _reconfigure,
    "hardware": _hardware,
    "node_model": _node_model,
    "package_damage": _package_damage,
    "app_perms": _app_perms,
    "app_jobs": _app_jobs,
    "advance": _advance,
    "db_password": accounting_rules.inject_db_password,
    "accounting_db": accounting_rules.inject_accounting_db,
    "association": accounting_rules.inject_association,
    "qos": accounting_rules.inject_qos,
}
