"""`Runtime`: what one hpcgym process shares across its clusters.

It checks the host (root, bwrap), sweeps what dead hpcgym processes left, unpacks each image once,
picks the overlay mode, hands each cluster a host uid range of its own (`hostids.py`), runs the
control channel and the warm pool, and makes clusters.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import resource
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hpcgym.closing import Closing
from hpcgym.errors import SandboxError
from hpcgym.run import require_tool
from hpcgym.runtime import heap
from hpcgym.runtime.cgroup import Cgroups, remove_cgroup_tree
from hpcgym.runtime.channel import ControlChannel, Handler
from hpcgym.runtime.cluster import Cluster, ClusterConfig
from hpcgym.runtime.hostids import HostIds, idmap_unsupported_reason
from hpcgym.runtime.overlay import OverlayMode, detect_overlay_mode
from hpcgym.runtime.pool import WarmPool
from hpcgym.runtime.sandbox import Limits
from hpcgym.runtime.shell import DEFAULT_MAX_OUTPUT_BYTES
from hpcgym.runtime.sweep import owner_tag, sweep_partial_unpacks, sweep_stale
from hpcgym.runtime.unpack import DEFAULT_UID_BASE, ID_RANGE, Image, default_cache_dir, unpack_rootfs

log = logging.getLogger(__name__)

ROLES = ("rocky-login", "rocky-compute")
# Cluster names (scratch dirs, cgroups) must be unique per process, even across several runtimes.
_SEQ = itertools.count()
_SEQ_LOCK = threading.Lock()
DEFAULT_SCRATCH_DIR = Path("/dev/shm")


# ptyprocess closes every descriptor up to the soft limit in each child, capped at this.
MAX_OPEN_FILES = 1 << 20


def raise_open_file_limit() -> int:
    """Lift this process's descriptor limit as far as it may go, and return the soft limit.

    Each live node holds a few descriptors on the host (its pty, report socket, /proc handles and
    control socket: about 40 per five-node episode), so a process with many episodes passes the usual
    soft limit of 1024, and a hard limit of a few thousand, long before it runs short of memory. The
    runtime runs as root, which may raise its hard limit up to the kernel's fs.nr_open; where even
    root may not (a container without CAP_SYS_RESOURCE), the soft limit still rises to the hard one.
    Sandboxes set their own limit (`Limits.max_open_files`), so nothing inside a node changes.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return soft
    want = hard
    with contextlib.suppress(OSError, ValueError):
        want = max(hard, min(int(Path("/proc/sys/fs/nr_open").read_text()), MAX_OPEN_FILES))
    for target in (want, hard):
        try:
            if soft < target or hard < target:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            break
        except (OSError, ValueError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Runtime(Closing):
    """Makes isolated copies of the cluster from built images.

    Example:
        >>> with Runtime(Path("build/images"), pool_size=4) as runtime:
        ...     with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
        ...         print(cluster.execute("hostname").output)
        login01

    Args:
        images_dir: where the build put `<role>/rootfs.tar.zst` and `<role>/manifest.json`.
        overlay_mode: force `kernel`, `fuse-overlayfs` or `copy`; by default the best this host permits.
        pool_size: how many ready clusters to keep warm (0: every cluster is made on demand).
        cache_dir: where unpacked lower dirs are kept (see `unpack.default_cache_dir`).
        scratch_dir: where clusters' tmpfs dirs go.
        uid_base: the host uid that root in the unpacked images is on disk; each cluster maps its own
            range to uids 0..65535 (`Cluster.uid_base`), or this one where idmapped mounts are missing.
        limits: per-node rlimits and the per-cluster tmpfs size.
        default_timeout_s: per-command time limit when `execute` is given none.
        max_output_bytes: output cap per command (head and tail are kept).
        login_node: the login node's hostname.
        default_compute_nodes: compute node names when `new_cluster` is given none.
        use_cgroups: give each cluster a memory and process cgroup where the host allows it.
        max_clusters: at most this many clusters (the warm pool's included) live at once, and all
            of them share one cgroup capped at that many clusters' memory and processes. A server
            sets it from its session limit; None: only the host-wide caps apply.
    """

    def __init__(
        self,
        images_dir: Path,
        *,
        overlay_mode: OverlayMode | str | None = None,
        pool_size: int = 0,
        cache_dir: Path | None = None,
        scratch_dir: Path = DEFAULT_SCRATCH_DIR,
        uid_base: int = DEFAULT_UID_BASE,
        limits: Limits | None = None,
        default_timeout_s: float = 30.0,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        login_node: str = "login01",
        default_compute_nodes: Sequence[str] = ("compute-01", "compute-02", "compute-03", "compute-04"),
        use_cgroups: bool = True,
        max_clusters: int | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise SandboxError(
                "hpcgym's runtime must run as root: it maps a range of host uids into each sandbox",
                hint="run as root (root in a node is still an unprivileged uid on the host)",
            )
        require_tool("bwrap")
        raise_open_file_limit()
        heap.limit_arenas()
        if not scratch_dir.is_dir() or scratch_dir.stat().st_mode & 0o001 == 0:
            raise SandboxError(
                f"scratch dir {scratch_dir} is missing or not searchable by other users",
                hint=f"sandboxes run as unprivileged uids and must reach it: chmod o+x {scratch_dir}",
            )
        self.scratch_dir = scratch_dir
        self.login_node = login_node
        self.default_compute_nodes = tuple(default_compute_nodes)
        cache_dir = cache_dir or default_cache_dir()
        sweep_stale(scratch_dir)
        sweep_partial_unpacks(cache_dir)
        if max_clusters is not None and max_clusters < 1:
            raise SandboxError(f"max_clusters must be at least 1, not {max_clusters}")
        self.max_clusters = max_clusters
        limits = limits or Limits()
        self.cgroups = Cgroups.detect() if use_cgroups else None
        if self.cgroups is not None:
            self.cgroups.sweep_stale()
            if max_clusters is not None:
                self.cgroups = self.cgroups.nested(
                    f"{owner_tag()}-runtime",
                    max_clusters * limits.episode_memory_bytes,
                    max_clusters * limits.episode_max_processes,
                )
        lowers = {}
        for role in ROLES:
            lowers[role] = unpack_rootfs(Image.load(images_dir / role), cache_dir, uid_base)
        mode = OverlayMode(overlay_mode) if overlay_mode is not None else detect_overlay_mode(scratch_dir)
        self.host_ids = _finalize_host_ids(lowers[ROLES[0]], scratch_dir, uid_base, mode)
        self.channel = ControlChannel()
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcgym-spawner")
        self.config = ClusterConfig(
            lowers=lowers,
            scratch_dir=scratch_dir,
            overlay_mode=mode,
            uid_base=uid_base,
            limits=limits,
            channel=self.channel,
            spawner=self._spawner,
            cgroups=self.cgroups,
            default_timeout_s=default_timeout_s,
            max_output_bytes=max_output_bytes,
        )
        self._tag = owner_tag()
        self._live: set[Cluster] = set()
        self._room = threading.BoundedSemaphore(max_clusters) if max_clusters is not None else None
        self.pool = WarmPool(self._make_cluster, pool_size)
        if mode is OverlayMode.COPY:
            log.warning(
                "copy mode: nodes write straight into %s, bounded per file (%d MiB) but not in total",
                scratch_dir,
                self.config.limits.max_file_bytes >> 20,
            )
        log.info(
            "runtime ready: overlay mode %s, pool of %d, cgroups %s",
            mode,
            pool_size,
            f"v{self.cgroups.version}" if self.cgroups else "none (rlimits only)",
        )

    @property
    def overlay_mode(self) -> OverlayMode:
        return self.config.overlay_mode

    def _make_cluster(self) -> Cluster:
        if self._room is not None and not self._room.acquire(blocking=False):
            raise SandboxError(
                f"this runtime already holds {self.max_clusters} clusters, its max_clusters",
                hint="close an episode first, or give the runtime a higher max_clusters",
            )
        with _SEQ_LOCK:
            seq = next(_SEQ)
        ids = self.host_ids.take() if self.host_ids is not None else None
        try:
            cluster = Cluster(
                self.config,
                self.scratch_dir / f"{self._tag}-{seq:06d}",
                self.login_node,
                self._forget,
                ids=ids,
            )
        except BaseException as e:
            if ids is not None:
                ids.release()
            if self._room is not None:
                self._room.release()
            if isinstance(e, OSError):
                # A full /dev/shm (ENOSPC), a host out of descriptors or memory: the host's fault,
                # reported as one, never as an error of the episode's own.
                raise SandboxError(
                    f"cannot make a cluster in {self.scratch_dir}: {e.strerror or e}",
                    hint=f"free space or inodes in {self.scratch_dir} (df -h -i {self.scratch_dir})",
                ) from e
            raise
        self._live.add(cluster)
        return cluster

    def _forget(self, cluster: Cluster) -> None:
        if cluster in self._live:
            self._live.discard(cluster)
            if self._room is not None:
                self._room.release()
            heap.give_back()

    def new_cluster(
        self, compute_nodes: Sequence[str] | None = None, handler: Handler | None = None
    ) -> Cluster:
        """Return a fresh cluster at its login prompt: from the warm pool if one is ready, else made now.

        Args:
            compute_nodes: hostnames of the compute nodes (started on first use).
            handler: the controller; it answers every stub call except `ssh`. Default: an echo.
        """
        if self.pool.failure is not None:
            raise SandboxError(f"the warm pool failed: {self.pool.failure}", hint="see the log for the cause")
        cluster = self.pool.take() or self._make_cluster()
        names = self.default_compute_nodes if compute_nodes is None else tuple(compute_nodes)
        cluster.configure(names, handler)
        return cluster

    def close(self) -> None:
        """Close the pool and every cluster this runtime made, then stop the channel."""
        self.pool.close()
        for cluster in list(self._live):
            cluster.close()
        self._live.clear()
        self.channel.close()
        self._spawner.shutdown()
        if self.host_ids is not None:
            self.host_ids.close()
        if self.cgroups is not None and self.max_clusters is not None:
            for parent in self.cgroups.parents:
                remove_cgroup_tree(parent)


def _finalize_host_ids(lower: Path, scratch_dir: Path, uid_base: int, mode: OverlayMode) -> HostIds | None:
    reason = idmap_unsupported_reason(lower, scratch_dir, uid_base, mode)
    if reason is None:
        return HostIds(uid_base)
    log.warning(
        "idmapped mounts are unavailable (%s): every cluster runs as host uids %d..%d, so per-user kernel "
        "budgets (inotify instances, mqueue bytes, pending signals, RLIMIT_NPROC) are one pool for all "
        "episodes on this host",
        reason,
        uid_base,
        uid_base + ID_RANGE - 1,
    )
    return None
