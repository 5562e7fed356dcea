"""Grading predicates over an episode's end state, phrased as testinfra-style `is_*`/`has_*` facts.

Every predicate reads only what the agent cannot forge to pass it: the controller's live state
(Slurm nodes, partitions and jobs; systemd units and the daemons' real processes; the simulated
network; the GPUs), and the very node files the simulated daemons act on (the munge key munged
checks, the route-eth0 that ifup applies, the slurm.conf slurmd reads). Files are compared with the
image the cluster was built from, which lives outside every sandbox. Nothing here reads a log, a
marker or a state file: a forged log line or a `touch`ed sentinel changes no answer.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import stat as statmod
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from typing import Any

from hpcgym.controller.hostlist import expand_names
from hpcgym.controller.numbers import to_int
from hpcgym.controller.services import chrony, httpd, munged, slurm, users
from hpcgym.controller.services.access import FileStat
from hpcgym.controller.services.daemon import lookup_ids
from hpcgym.controller.services.manager import HTTPD
from hpcgym.controller.services.network import RouteFileError, parse_hosts, parse_route_file
from hpcgym.controller.services.packages import CATALOGUE
from hpcgym.controller.services.units import UnitFileState
from hpcgym.controller.slurmconf import parse_licenses, parse_slurm_conf
from hpcgym.controller.state import JobState, NodeBase, NodeFlag, PartitionState
from hpcgym.controller.timefmt import parse_time_limit
from hpcgym.episode import Episode, read_image
from hpcgym.errors import ControllerError
from hpcgym.scenarios import accounting_rules, nodehealth

BAD_FLAGS = NodeFlag.DRAIN | NodeFlag.FAIL | NodeFlag.NOT_RESPONDING | NodeFlag.MAINT | NodeFlag.INVALID_REG


@dataclass(frozen=True)
class ImageFiles:
    """Read-only access to a node's pristine image (the lower dir), for 'what it should be'."""

    episode: Episode

    def read(self, node: str, path: str) -> bytes | None:
        spec = self.episode.cluster.nodes[node]
        return read_image(self.episode.cluster.config.lowers[spec.role], path)

    def stat(self, node: str, path: str) -> FileStat | None:
        return None


# ---- Slurm -----------------------------------------------------------------------------------------


def is_node_healthy(episode: Episode, node: str) -> bool:
    """Schedulable and responding in slurmctld, with a slurmd that really runs and registers."""
    state = episode.controller.slurm.nodes.get(node)
    if state is None:
        return False
    usable = state.effective_base() in (NodeBase.IDLE, NodeBase.MIXED, NodeBase.ALLOCATED)
    return usable and not state.flags & BAD_FLAGS and episode.services.is_slurmd_registered(node)


def in_service_nodes(episode: Episode) -> list[str]:
    """The nodes the site means to be in service: every node but the one an admin took out."""
    site = episode.site
    if site is None:
        return list(episode.controller.slurm.nodes)
    # The site's node set, not whatever slurm.conf says now: dropping a node does not heal it.
    ctl = episode.services.controller_host
    return [node for node in site.addresses if node not in (ctl, site.maintenance)]


def is_every_node_healthy(episode: Episode) -> bool:
    """Every node the site means to serve is healthy (nodes since removed from slurm.conf count too)."""
    return all(is_node_healthy(episode, node) for node in in_service_nodes(episode))


def is_partition_up(episode: Episode, partition: str) -> bool:
    part = episode.controller.slurm.partitions.get(partition)
    return part is not None and part.state is PartitionState.UP


def has_jobs_running(episode: Episode, user: str) -> bool:
    """Every job of `user` that slurmctld knows runs or ran to completion (none pending or killed).

    A job in the partition the site keeps closed waits there by the site's choice, not the fault's.
    """
    site = episode.site
    closed = site.closed_partition[0] if site is not None else ""
    jobs = [
        job
        for job in episode.controller.slurm.jobs.values()
        if job.user == user and not (closed and job.partition == closed)
    ]
    return bool(jobs) and all(job.state in (JobState.RUNNING, JobState.COMPLETED) for job in jobs)


def is_slurmctld_serving(episode: Episode) -> bool:
    services = episode.services
    services.systemd.sync()
    return services.systemd.is_active(services.controller_host, slurm.SLURMCTLD) and (
        episode.controller.slurm.slurmctld_up
    )


def is_reservation_released(episode: Episode, name: str) -> bool:
    """The reservation no longer holds its nodes: deleted, or ended (EndTime moved to the past)."""
    cluster = episode.controller.slurm
    resv = cluster.reservations.get(name)
    return resv is None or resv.end_s <= cluster.now_s


def has_reservation_window(episode: Episode, name: str, start: str, end: str, nodes: str) -> bool:
    """The reservation holds `nodes` over the planned window (ISO instants, UTC), no more, no less."""
    resv = episode.controller.slurm.reservations.get(name)
    window = (calendar.timegm(time.strptime(start, ISO)), calendar.timegm(time.strptime(end, ISO)))
    return (
        resv is not None
        and (resv.start_s, resv.end_s) == window
        and set(resv.nodes) == set(expand_names(nodes))
    )


ISO = "%Y-%m-%dT%H:%M:%S"


def _license_counts(text: str) -> dict[str, int]:
    return dict(parse_licenses(text) or ()) if text else {}


def has_cluster_licenses(episode: Episode, licenses: str) -> bool:
    """Slurmctld counts exactly the licenses the site owns (what its slurm.conf said when last read)."""
    return dict(episode.controller.slurm.conf.licenses) == _license_counts(licenses)


def has_site_licenses(episode: Episode, node: str, licenses: str) -> bool:
    """The node's slurm.conf is the site's, with a Licenses= line that counts what the site owns."""
    ctl = episode.services.controller_host
    image = ImageFiles(episode).read(ctl, slurm.SLURM_CONF) or b""
    if episode.site is not None:
        image = episode.site.slurm_conf(image.decode(errors="replace")).encode()
    raw = episode.nodes.read(node, slurm.SLURM_CONF)
    lines = _conf_lines(raw)
    rest = [line for line in lines if not line.lower().startswith("licenses=")]
    if rest != _conf_lines(image) or len(lines) - len(rest) != 1:
        return False
    try:
        conf = parse_slurm_conf((raw or b"").decode(errors="replace"))
    except ControllerError:
        return False  # a file slurmd would refuse to read counts nothing
    return dict(conf.licenses) == _license_counts(licenses)


def is_partition_max_time(episode: Episode, partition: str, max_time: str) -> bool:
    """Slurmctld gives `partition` exactly the MaxTime the site's policy says (what it last read)."""
    part = episode.controller.slurm.partitions.get(partition)
    return part is not None and part.conf.max_time_min == parse_time_limit(max_time)


def has_partition_max_time(episode: Episode, node: str, partition: str, max_time: str) -> bool:
    """The node's slurm.conf is the site's, with `partition`'s MaxTime at `max_time` (any spelling)."""
    ctl = episode.services.controller_host
    image = ImageFiles(episode).read(ctl, slurm.SLURM_CONF) or b""
    if episode.site is not None:
        image = episode.site.slurm_conf(image.decode(errors="replace")).encode()
    raw = episode.nodes.read(node, slurm.SLURM_CONF)
    lines, want = _conf_lines(raw), _conf_lines(image)
    rest = [line for line in lines if _partition_named(line) != partition]
    if rest != [line for line in want if _partition_named(line) != partition] or len(lines) - len(rest) != 1:
        return False
    try:
        have = parse_slurm_conf((raw or b"").decode(errors="replace"))
        site = parse_slurm_conf(image.decode(errors="replace"))
    except ControllerError:
        return False  # a file slurmctld would refuse to read gives no partition
    mine = next((p for p in have.partitions if p.name == partition), None)
    meant = next((p for p in site.partitions if p.name == partition), None)
    return meant is not None and mine == replace(meant, max_time_min=parse_time_limit(max_time))


def _partition_named(line: str) -> str | None:
    # The key is case-insensitive, the partition's name is not (slurm.conf(5), DESCRIPTION).
    found = re.match(r"(?i:PartitionName)=(\S+)", line)
    return found[1] if found else None


# ---- packages (controller/services/packages.py) ------------------------------------------------------


def is_package_intact(episode: Episode, node: str, package: str) -> bool:
    """The package is installed on the node and every file it owns is the package's (rpm -V clean)."""
    db = episode.services.packages
    return db is not None and db.is_intact(node, package)


def is_every_package_intact(episode: Episode) -> bool:
    """No node has a package missing or damaged: what one node needed is not taken from another."""
    db = episode.services.packages
    return db is not None and all(
        db.is_intact(node, package.name) for node in sorted(episode.cluster.nodes) for package in CATALOGUE
    )


def has_user_job_running_on(episode: Episode, user: str, node: str) -> bool:
    """A job of `user` runs on `node` now and has run there past the instant it started."""
    cluster = episode.controller.slurm
    return any(
        job.user == user
        and job.state is JobState.RUNNING
        and node in job.nodes
        and job.start_s is not None
        and cluster.now_s > job.start_s
        for job in cluster.jobs.values()
    )


def is_runnable_by(episode: Episode, node: str, user: str, program: str) -> bool:
    """`user` (their uid and groups on that node) may reach and run `program` there."""
    uid, gid = lookup_ids(episode.nodes, node, user)[:2]
    groups = users.user_groups(episode.nodes, node, user, gid)
    return uid != 0 and users.refusal(episode.nodes, node, program, uid, groups) is None


def is_runnable_by_anyone(episode: Episode, node: str, program: str) -> bool:
    """Any user may reach and run `program`: a uid that owns nothing and is in no group is let through.

    Runnable by one user is not enough: a tree chowned to that user, or the user added to a group of
    the tree, lets them in while the site's other users stay locked out.
    """
    return users.refusal(episode.nodes, node, program, -1, set()) is None


def has_owner(episode: Episode, node: str, path: str, owner: str = "root", group: str = "root") -> bool:
    """The path (followed) belongs to `owner`:`group` (the site installs its software as root:root)."""
    found = episode.nodes.stat(node, path)
    uid = 0 if owner == "root" else lookup_ids(episode.nodes, node, owner)[0]
    gid = 0 if group == "root" else _group_id(episode, node, group)
    return found is not None and (found.uid, found.gid) == (uid, gid)


def has_mode(episode: Episode, node: str, path: str, mode: int, group: str = "root") -> bool:
    """The path (followed) is root's, of `group`, with exactly these bits: a tree kept closed stays so."""
    found = episode.nodes.stat(node, path)
    gid = 0 if group == "root" else _group_id(episode, node, group)
    return found is not None and (found.perms, found.uid, found.gid) == (int(mode), 0, gid)


def _group_id(episode: Episode, node: str, group: str) -> int:
    raw = episode.nodes.read(node, "/etc/group") or b""
    for line in raw.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == group and (number := to_int(fields[2])) is not None:
            return number
    return -1


def has_user_job_running(episode: Episode, user: str) -> bool:
    """A job of `user` runs now and has run past the instant it started."""
    cluster = episode.controller.slurm
    return any(
        job.user == user
        and job.state is JobState.RUNNING
        and job.start_s is not None
        and cluster.now_s > job.start_s
        for job in cluster.jobs.values()
    )


# ---- systemd units ---------------------------------------------------------------------------------


def is_unit_active(episode: Episode, node: str, unit: str) -> bool:
    """Systemd says active and the daemon's process is alive (sync reaps a killed one first)."""
    episode.services.systemd.sync()
    runtime = episode.services.systemd.unit(node, unit)
    return (
        runtime is not None
        and episode.services.systemd.is_active(node, unit)
        and runtime.main_pid is not None
        and episode.nodes.is_alive(node, runtime.main_pid)
    )


def is_unit_enabled(episode: Episode, node: str, unit: str) -> bool:
    runtime = episode.services.systemd.unit(node, unit)
    return runtime is not None and runtime.enabled is UnitFileState.ENABLED


# ---- munge -----------------------------------------------------------------------------------------


def is_clock_synchronized(episode: Episode, node: str) -> bool:
    """The node's clock agrees with the controller's and chronyd runs to keep it so."""
    services = episode.services
    services.systemd.sync()
    return (
        services.clocks.offset(node) == services.clocks.offset(services.controller_host)
        and is_unit_active(episode, node, chrony.UNIT)
        and chrony.is_synchronized(services, node)
    )


def _munge_uid(episode: Episode, node: str) -> int:
    return lookup_ids(episode.nodes, node, "munge")[0]


def is_munge_key_secure(episode: Episode, node: str) -> bool:
    """The key file passes every check munged makes at start-up (owner, mode, directories)."""
    uid = _munge_uid(episode, node)
    if munged.key_insecurity(episode.nodes.stat(node, munged.KEY_FILE), uid) is not None:
        return False
    return munged.path_insecurity(episode.nodes, node, "/etc/munge", uid) is None


def is_munge_healthy(episode: Episode, node: str) -> bool:
    """Munged runs with the key that is on disk now, and that key is secure."""
    if not is_unit_active(episode, node, slurm.MUNGE) or not is_munge_key_secure(episode, node):
        return False
    key = episode.nodes.read(node, munged.KEY_FILE) or b""
    return _running_key_sha256(episode, node) == hashlib.sha256(key).hexdigest()


def _running_key_sha256(episode: Episode, node: str) -> str | None:
    """The digest of the key munged on `node` runs with (read at its start), or None."""
    running = episode.services.systemd.facts(node, slurm.MUNGE, munged.MungedFacts)
    return running.key_sha256 if running is not None else None


def has_one_munge_key(episode: Episode) -> bool:
    """Every node's munged is healthy and runs with the secret the site distributed.

    The same key everywhere is not enough: a key copied from the one node that had the wrong one,
    or a new one-byte key on every node, is not the cluster's secret.
    """
    site = episode.site
    digests = set()
    for node in episode.services.systemd.nodes:
        if not is_munge_healthy(episode, node):
            return False
        digests.add(_running_key_sha256(episode, node))
    if site is not None:
        return digests == {hashlib.sha256(site.munge_key).hexdigest()}
    return len(digests) == 1


def is_munge_seed_dir_secure(episode: Episode, node: str) -> bool:
    return munged.path_insecurity(episode.nodes, node, munged.SEED_DIR, _munge_uid(episode, node)) is None


# ---- network ---------------------------------------------------------------------------------------


def has_route_file_to_controller(episode: Episode, node: str) -> bool:
    """route-eth0 would, applied at the next boot or ifup, carry packets to SlurmctldHost."""
    network = episode.services.network
    raw = episode.nodes.read(node, "/etc/sysconfig/network-scripts/route-eth0")
    target = episode.services.controller_addr(node)
    subnet = network.subnet(node)
    if raw is None or target is None or subnet is None:
        return target is not None and subnet is not None and target in subnet
    try:
        routes = parse_route_file(raw.decode(errors="replace"))
    except RouteFileError:
        return False
    routes = [r for r in routes if r.gateway is None or r.gateway in subnet]
    candidates = [r for r in routes if target in r.dest] + [
        r for r in routes if r.dest == IPv4Network("0.0.0.0/0")
    ]
    if target in subnet:
        return True
    if not candidates:
        return False
    best = max(candidates, key=lambda route: route.dest.prefixlen)
    return best.gateway is not None and int(best.gateway) & 0xFF == network.router_host


def can_reach_controller(episode: Episode, node: str) -> bool:
    """eth0 is up now and its live routes reach SlurmctldHost."""
    network = episode.services.network
    target = episode.services.controller_addr(node)
    return target is not None and network.is_up(node) and network.can_reach(node, target)


def has_cluster_hosts(episode: Episode, node: str) -> bool:
    """/etc/hosts names the controller and the node itself with the site's addresses for them."""
    if episode.site is not None:
        want = dict(episode.site.addresses)
    else:
        image = ImageFiles(episode).read(node, "/etc/hosts")
        if image is None:
            return False
        want = parse_hosts(image.decode(errors="replace"))
    network = episode.services.network
    names = {episode.services.controller_host, node}
    return all(network.resolve(node, name) == want.get(name) for name in names)


# ---- slurmd / slurmctld files -----------------------------------------------------------------------


def _conf_lines(raw: bytes | None) -> list[str]:
    text = (raw or b"").decode(errors="replace")
    return [
        " ".join(line.split("#", 1)[0].split()) for line in text.splitlines() if line.split("#", 1)[0].strip()
    ]


def has_cluster_slurm_conf(episode: Episode, node: str) -> bool:
    """The node's slurm.conf says what the site's says (comments and spacing aside)."""
    ctl = episode.services.controller_host
    image = ImageFiles(episode).read(ctl, slurm.SLURM_CONF) or b""
    if episode.site is not None:
        image = episode.site.slurm_conf(image.decode(errors="replace")).encode()
    want = _conf_lines(image)
    return bool(want) and _conf_lines(episode.nodes.read(node, slurm.SLURM_CONF)) == want


def has_image_config(episode: Episode, node: str, path: str) -> bool:
    """A config the site never changes says what the image's says (comments and spacing aside).

    A fix that deletes what a parser complained about parses, but no longer means what was meant.
    """
    want = _conf_lines(ImageFiles(episode).read(node, path))
    return bool(want) and _conf_lines(episode.nodes.read(node, path)) == want


def has_slurmd_spool(episode: Episode, node: str) -> bool:
    """Slurmd's start-up checks pass on this node's files, and its spool directory is root's alone.

    slurmd would take a spool directory open to every user; no admin would leave it so.
    """
    conf = slurm.read_conf(episode.services, node)
    if conf is None or slurm.slurmd_init_errors(episode.services, node, conf, node):
        return False
    spool = slurm.slurmd_path(conf, "slurmdspooldir", "/var/spool/slurmd", node)
    info = episode.nodes.stat(node, spool)
    return (
        info is not None
        and info.is_dir()
        and info.uid == 0
        and not info.perms & (statmod.S_IWOTH | statmod.S_IWGRP)
    )


def has_statesave_for_slurm(episode: Episode) -> bool:
    """StateSaveLocation is SlurmUser's own directory, writable by no one else.

    slurmctld's start-up check only asks that SlurmUser may write there; a directory opened to every
    user passes that check but is not a repair.
    """
    ctl = episode.services.controller_host
    conf = slurm.read_conf(episode.services, ctl)
    if conf is None:
        return False
    path = conf.options.get("statesavelocation", "/var/spool/slurmctld")
    info = episode.nodes.stat(ctl, path)
    uid = lookup_ids(episode.nodes, ctl, conf.options.get("slurmuser", "root"))[0]
    # slurmctld itself would also take a world-writable directory; no admin would leave it so.
    return (
        info is not None
        and info.is_dir()
        and info.uid == uid
        and not info.perms & (statmod.S_IWOTH | statmod.S_IWGRP)
    )


# ---- portal ------------------------------------------------------------------------------------------


def is_portal_serving(episode: Episode) -> bool:
    """Httpd runs the portal's intended config and the dashboard answers 200 behind its login.

    The running config must mean what the image's does (same ports, redirect and protected paths),
    so deleting the broken line instead of fixing it does not pass.
    """
    services = episode.services
    ctl = services.controller_host
    if not is_unit_active(episode, ctl, HTTPD):
        return False
    want = httpd.check_config(ImageFiles(episode), ctl)  # type: ignore[arg-type]
    have = httpd.check_config(episode.nodes, ctl)
    if isinstance(want, httpd.ConfigError) or have != want:
        return False
    # httpd answers from the config it started with: that one must mean the same too.
    running = services.systemd.facts(ctl, HTTPD, httpd.HttpdFacts)
    if running is None or (running.config.root_redirect, running.config.auth_prefixes) != (
        want.root_redirect,
        want.auth_prefixes,
    ):
        return False
    page = httpd.respond(
        running.config,
        path="/pun/sys/dashboard",
        host_header=ctl,
        upstream_ok=services.is_portal_upstream_healthy(),
        authorized=True,
        now_s=services.clocks.now_s,
    )
    return page.status == 200


# ---- GPUs ----------------------------------------------------------------------------------------------


def has_no_uncorrected_ecc(episode: Episode, node: str) -> bool:
    """No GPU of the node has had an uncorrectable ECC error since its last reset."""
    gpus = episode.services.hardware.gpus.get(node) or []
    return bool(gpus) and all(gpu.volatile.uncorrected == 0 for gpu in gpus)


def is_node_kept_out(episode: Episode, node: str, mentions: str = "") -> bool:
    """Out of service in slurmctld (drained or down) with a reason that says why (names `mentions`)."""
    state = episode.controller.slurm.nodes.get(node)
    if state is None:
        return False
    out = state.effective_base() is NodeBase.DOWN or bool(state.flags & (NodeFlag.DRAIN | NodeFlag.FAIL))
    reason = (state.reason or "").strip()
    return out and bool(reason) and mentions.lower() in reason.lower()


def is_job_ended(episode: Episode, user: str, name: str) -> bool:
    """The user's job `name` is in slurmctld's record, has ended and left its nodes (no CG).

    A record without the job (slurmctld started afresh with -c, say) proves nothing ended: False.
    """
    jobs = [j for j in episode.controller.slurm.jobs.values() if j.user == user and j.name == name]
    return bool(jobs) and all(job.state.is_finished() and not job.completing for job in jobs)


# How long one check waits in all, in host seconds, for the node's Prolog or Epilog runs it makes
# (a site's script takes milliseconds); one still running then is killed, as slurmd kills one past
# PrologEpilogTimeout, and reads as a failure. The node decides how long its script runs: the
# budget keeps what one step's grading costs small, whatever the agent wrote.
SCRIPT_BUDGET_S = 1.0
SCRIPT_POLL_S = 0.01
# What has_epilog plants in the node's scratch area for the Epilog to clean.
SCRATCH_DIR = "/var/tmp/scratch"
SCRATCH_PLANT = "job4242/output.dat"


def has_prolog(episode: Episode, node: str, path: str, shares: str) -> bool:
    """The node's slurm.conf runs `path` as its Prolog, and it still guards jobs from a bare node.

    Judged by what the script does, not by its text: run in the node as slurmd runs it, it passes
    (exits 0) with every share there, and refuses (fails) with each of `shares` (space separated)
    hidden in turn. A Prolog disabled, emptied or made to succeed early no longer refuses.
    """
    if _slurmd_script(episode, node, "prolog", path) is None:
        return False
    points = shares.split()
    if not all(episode.nodes.sees_share(node, point) for point in points):
        return False
    deadline = time.monotonic() + SCRIPT_BUDGET_S
    if _run_script(episode, node, path, deadline) != 0:
        return False
    for point in points:
        episode.nodes.unmount_share(node, point)
        try:
            status = _run_script(episode, node, path, deadline)
        finally:
            episode.nodes.mount_share(node, point)
        if status is None or status == 0:
            return False  # it ran its job with the share gone (or could not be judged)
    return True


def has_epilog(episode: Episode, node: str, path: str) -> bool:
    """The node's slurm.conf runs `path` as its Epilog, and running it empties the node's scratch.

    Judged by what the script does: a file is planted under /var/tmp/scratch, the Epilog is run in
    the node as slurmd runs it, and it must exit 0 with the file gone (the plant is removed after).
    """
    if _slurmd_script(episode, node, "epilog", path) is None:
        return False
    plant = f"{SCRATCH_DIR}/{SCRATCH_PLANT}"
    episode.nodes.mkdir(node, plant.rsplit("/", 1)[0])
    episode.nodes.write(node, plant, b"scratch left by a job\n")
    try:
        status = _run_script(episode, node, path, time.monotonic() + SCRIPT_BUDGET_S)
        return status == 0 and episode.nodes.stat(node, plant) is None
    finally:
        episode.nodes.remove_tree(node, f"{SCRATCH_DIR}/{SCRATCH_PLANT.split('/')[0]}")


def _run_script(episode: Episode, node: str, path: str, deadline: float) -> int | None:
    # Run the node's script as joblife does for slurmd (its init starts it, as root); its raw wait
    # status, 9 (SIGKILL) if it ran past `deadline`; None if it could not be started, or init gave
    # no word of its end (nothing to judge it by).
    try:
        pid = episode.nodes.start_process(node, "prolog", [path], program=path)
    except OSError:
        return None
    while episode.nodes.is_alive(node, pid):
        if time.monotonic() >= deadline:
            episode.nodes.kill(node, pid, 9)
            return 9
        time.sleep(SCRIPT_POLL_S)
    return episode.nodes.exit_status(node, pid)


def _slurmd_script(episode: Episode, node: str, key: str, path: str) -> bytes | None:
    # The script, where the node's slurm.conf names it for `key` (None where it names another).
    try:
        conf = parse_slurm_conf((episode.nodes.read(node, slurm.SLURM_CONF) or b"").decode(errors="replace"))
    except (ControllerError, ValueError):
        return None  # a slurm.conf slurmd would refuse runs no script
    if conf.options.get(key, "").strip() != path:
        return None
    return episode.nodes.read(node, path)


# ---- NFS shares ----------------------------------------------------------------------------------------


def has_nfs_share(episode: Episode, node: str, path: str) -> bool:
    """The node's shell reaches the live share at `path`, as the kernel resolves it.

    A stat through the node's root must name the very directory the login node exports: no stale
    handle, not the empty local mount point.
    """
    return path in episode.nodes.share_points(node) and episode.nodes.sees_share(node, path)


def has_every_nfs_share(episode: Episode) -> bool:
    """Every node that mounts shares reaches all of them."""
    return all(
        episode.nodes.sees_share(node, path)
        for node in episode.cluster.nodes
        for path in episode.nodes.share_points(node)
    )


CHECKS: dict[str, Callable[..., bool]] = {
    "is_node_healthy": is_node_healthy,
    "is_every_node_healthy": is_every_node_healthy,
    "is_partition_up": is_partition_up,
    "has_jobs_running": has_jobs_running,
    "is_package_intact": is_package_intact,
    "is_every_package_intact": is_every_package_intact,
    "has_user_job_running_on": has_user_job_running_on,
    "is_runnable_by": is_runnable_by,
    "has_mode": has_mode,
    "is_runnable_by_anyone": is_runnable_by_anyone,
    "has_owner": has_owner,
    "has_user_job_running": has_user_job_running,
    "is_reservation_released": is_reservation_released,
    "has_reservation_window": has_reservation_window,
    "has_cluster_licenses": has_cluster_licenses,
    "has_site_licenses": has_site_licenses,
    "is_partition_max_time": is_partition_max_time,
    "has_partition_max_time": has_partition_max_time,
    "is_slurmctld_serving": is_slurmctld_serving,
    "is_unit_active": is_unit_active,
    "is_unit_enabled": is_unit_enabled,
    "is_clock_synchronized": is_clock_synchronized,
    "is_munge_key_secure": is_munge_key_secure,
    "is_munge_healthy": is_munge_healthy,
    "has_one_munge_key": has_one_munge_key,
    "is_munge_seed_dir_secure": is_munge_seed_dir_secure,
    "has_route_file_to_controller": has_route_file_to_controller,
    "can_reach_controller": can_reach_controller,
    "has_cluster_hosts": has_cluster_hosts,
    "has_cluster_slurm_conf": has_cluster_slurm_conf,
    "has_image_config": has_image_config,
    "has_slurmd_spool": has_slurmd_spool,
    "has_statesave_for_slurm": has_statesave_for_slurm,
    "is_portal_serving": is_portal_serving,
    "has_no_uncorrected_ecc": has_no_uncorrected_ecc,
    "is_node_kept_out": is_node_kept_out,
    "has_prolog": has_prolog,
    "is_job_ended": is_job_ended,
    "has_epilog": has_epilog,
    "has_nfs_share": has_nfs_share,
    "has_every_nfs_share": has_every_nfs_share,
    # Accounting (issue 17): slurmdbd, its records and associations (accounting_rules.py).
    **accounting_rules.CHECKS,
}
# Node hardware and node health (nodehealth.py).
CHECKS.update(nodehealth.CHECKS)


# What a predicate may meet in node data the agent made: unreadable, looping, huge, garbled, of the
# wrong type. Any of these means the predicate does not hold; anything else is the infrastructure's.
NODE_DATA_ERRORS = (OSError, ValueError, UnicodeError, LookupError, TypeError, RecursionError, OverflowError)


def run_check(episode: Episode, name: str, args: dict[str, Any]) -> bool:
    """Evaluate one named predicate with its (rendered) arguments; unreadable node data is False."""
    try:
        return bool(CHECKS[name](episode, **args))
    except NODE_DATA_ERRORS:
        return False
