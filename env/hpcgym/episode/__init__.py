"""EPISODE: one fresh cluster (runtime) and the controller that owns its state, joined.

`Episode` is the one object every interface wraps (the gym env, the OpenEnv server, the TRL wrapper,
the CLI). Each agent command goes to the cluster's bash; stubs inside it reach the controller through
the node's control socket; after the command the virtual clock moves one step. Grading and scenarios
sit above this and only read what it exposes.
"""

from __future__ import annotations

import functools
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcgym.closing import Closing
from hpcgym.controller import Controller, User
from hpcgym.controller.clock import DEFAULT_START_S
from hpcgym.controller.commands.base import TaskRequest, TaskResult
from hpcgym.controller.hardware import check_registration, cpuinfo_text, meminfo_text
from hpcgym.controller.services import sync_cluster
from hpcgym.controller.services.packages import PackageDB
from hpcgym.controller.services.users import LaunchChecks
from hpcgym.controller.slurmconf import SlurmConf, load_slurm_conf, parse_slurm_conf
from hpcgym.episode.nodefs import NodeFS
from hpcgym.episode.nodes import ClusterNodes
from hpcgym.episode.site import ROUTE_FILE, Site
from hpcgym.errors import SandboxError
from hpcgym.runtime import Cluster, Runtime, WireReply
from hpcgym.runtime.sandbox import exec_in_node

SLURM_CONF = "etc/slurm/slurm.conf"
LOGIN_ROLE = "rocky-login"
DEFAULT_STEP_SECONDS = 5
TASK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StepResult:
    """What one agent command produced.

    Attributes:
        output: what the terminal showed (stdout and stderr interleaved, capped, ANSI stripped).
        exit_code: the command's exit status as `$?` reports it.
        node: the node the command ran on.
        wall_s: host seconds the command took.
        timed_out: the command hit its time limit and was interrupted.
        truncated: the output was longer than the cap; its head and tail are kept.
        ended: `exit` on the login node closed the session.
        now_s: the episode's virtual time after the step.
    """

    output: str
    exit_code: int
    node: str
    wall_s: float
    timed_out: bool
    truncated: bool
    ended: bool
    now_s: int


def cluster_conf(runtime: Runtime) -> SlurmConf:
    """The cluster's topology, from the login image's real slurm.conf."""
    path = runtime.config.lowers[LOGIN_ROLE] / SLURM_CONF
    if not path.is_file():
        raise SandboxError(f"the {LOGIN_ROLE} image has no /{SLURM_CONF}", hint="rebuild the images")
    return load_slurm_conf(path)


def hosts_file(conf: SlurmConf) -> str:
    """/etc/hosts for a cluster from its slurm.conf: the controller on 10.10.0.10, nodes from 10.10.1.11."""
    lines = [
        "127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4",
        "::1         localhost localhost.localdomain localhost6 localhost6.localdomain6",
        "",
        f"10.10.0.10  {conf.controller_host}",
    ]
    if len(conf.nodes) > 243:
        raise SandboxError(f"{len(conf.nodes)} nodes do not fit the simulated 10.10.1.0/24 compute network")
    lines += [f"10.10.1.{11 + index}  {node.name}" for index, node in enumerate(conf.nodes)]
    return "\n".join(lines) + "\n"


def read_image(lower: Path, path: str) -> bytes | None:
    """A regular file of an image's lower dir, resolved inside it as the node would; None otherwise.

    The image's symlinks (/lib64 -> usr/lib64, an absolute /etc/alternatives link) resolve against
    the lower dir as "/" (NodeFS), never against the host's own tree, and the read is capped at
    MAX_READ_BYTES. A path whose last component is a symlink is no file of its own: None.
    """
    if ".." in path.split("/"):
        return None
    fs = NodeFS(lower, 0, 1)
    found = fs.stat(path, follow_symlinks=False)
    if found is not None and stat.S_ISLNK(found.st_mode):
        return None
    return fs.read(path)


class Episode(Closing):
    """One isolated copy of the cluster with its controller, ready at the login prompt.

    Example:
        >>> with Runtime(Path("build/images"), login_node="login01") as runtime:  # doctest: +SKIP
        ...     with Episode(runtime) as episode:
        ...         print(episode.step("sinfo").output)

    Args:
        runtime: makes the cluster (shared by many episodes in one process).
        step_seconds: virtual seconds per agent command.
        start_s: the virtual clock's first instant.
        timeout_s: per-command wall-clock limit (None: the runtime's default).
        slurm_conf_text: a slurm.conf to use instead of the image's (written to every node).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        step_seconds: int = DEFAULT_STEP_SECONDS,
        start_s: int | None = None,
        timeout_s: float | None = None,
        slurm_conf_text: str | None = None,
    ) -> None:
        self.conf = cluster_conf(runtime) if slurm_conf_text is None else parse_slurm_conf(slurm_conf_text)
        self.timeout_s = timeout_s
        # The episode's own facts, once `apply_site` made the cluster this site (None: the images' own).
        self.site: Site | None = None
        self._lock = threading.Lock()
        self.cluster: Cluster = runtime.new_cluster(
            compute_nodes=[node.name for node in self.conf.nodes], handler=self._handle
        )
        try:
            self.nodes = ClusterNodes(self.cluster)
            if slurm_conf_text is not None:
                # Every node reads the same files, as a real cluster keeps slurm.conf and hosts in sync.
                hosts = hosts_file(self.conf).encode()
                for name in self.cluster.nodes:
                    self.nodes.write(name, "/" + SLURM_CONF, slurm_conf_text.encode())
                    self.nodes.write(name, "/etc/hosts", hosts)
            self.controller = Controller(
                self.conf,
                start_s=DEFAULT_START_S if start_s is None else start_s,
                step_s=step_seconds,
                slurmd_running=False,
                users=(User("root", 0, "root", 0),),
                run_task=self._run_task,
                read_file=self.nodes.read,
                nodes=self.nodes,
            )
            self.services = self.controller.services
            # slurmctld judges each registration against the node's hardware (hardware.py).
            self.controller.slurm.node_specs_check = functools.partial(check_registration, self.services)
            for name in self.services.hardware.nodes:
                self.show_hardware(name)
            clock = self.controller.clock
            self.nodes.now_s = lambda: clock.now_s if clock.now_s >= 0 else clock.start_s
            self.services.packages = PackageDB(self.nodes, self._read_image, list(self.cluster.nodes))
            self.controller.slurm.launch_hooks.append(self.services.packages.on_launch)
            self.services.users = LaunchChecks(self.nodes)
            self.controller.slurm.launch_hooks.append(self.services.users.on_launch)
            with self._lock:
                sync_cluster(self.controller.slurm, self.services)  # boots every node's services
        except BaseException:
            self.cluster.close()
            raise

    # --- the agent's side -----------------------------------------------------------------------

    def step(self, command: str) -> StepResult:
        """Type one command line at the current node's prompt, then advance virtual time one step."""
        result = self.cluster.execute(command, self.timeout_s)
        with self._lock:
            now_s = self.controller.tick()
        return StepResult(
            output=result.output,
            exit_code=result.exit_code,
            node=result.node,
            wall_s=result.wall_s,
            timed_out=result.timed_out,
            truncated=result.truncated,
            ended=result.ended,
            now_s=now_s,
        )

    @property
    def current_node(self) -> str:
        return self.cluster.current_node

    @property
    def current_user(self) -> str:
        """Whose shell the agent types into: root, or the user `su -`/`sudo -i` made it."""
        return self.cluster.current_user

    def show_hardware(self, node: str) -> None:
        """Make the node's /proc/meminfo and /proc/cpuinfo say what its hardware is (hardware.py).

        Called before the node's sandbox first starts, and again when a fault changes its hardware.
        """
        hw = self.services.hardware.nodes[node]
        target = self.cluster.nodes.get(node)
        if target is None:
            return
        target.set_proc_file("/proc/meminfo", meminfo_text(node, hw).encode())
        target.set_proc_file("/proc/cpuinfo", cpuinfo_text(hw).encode())

    def apply_site(self, site: Site) -> None:
        """Make this fresh cluster `site`: its addresses, routes, munge secret and maintenance node.

        Done from outside, before the agent's first prompt, as the site's provisioning would have:
        files written with their owners, every eth0 brought up again, every munged restarted with the
        new key, and the maintenance node's slurmd stopped, disabled and its node set down by root.
        """
        from hpcgym.controller.services.daemon import lookup_ids
        from hpcgym.controller.services.munged import KEY_FILE
        from hpcgym.controller.services.slurm import MUNGE, SLURMD

        self.site = site
        services = self.services
        image_conf = (self.nodes.read(services.controller_host, "/" + SLURM_CONF) or b"").decode()
        conf_text = site.slurm_conf(image_conf)
        with self._lock:
            for name in self.cluster.nodes:
                self.nodes.write(name, "/" + SLURM_CONF, conf_text.encode())
                self.nodes.write(name, "/etc/hosts", site.hosts_file(name).encode())
                if name != services.controller_host and self.nodes.read(name, ROUTE_FILE) is not None:
                    self.nodes.write(name, ROUTE_FILE, site.route_file(name).encode())
                uid, gid = lookup_ids(self.nodes, name, "munge")[:2]
                self.nodes.write(name, KEY_FILE, site.munge_key, mode=0o400, uid=uid, gid=gid)
            services.network.router_host = site.router_host
            services.network.forget()
            for name in self.cluster.nodes:
                services.network.boot(name)
                services.systemd.restart(name, MUNGE)
            if site.maintenance is not None:
                services.systemd.stop(site.maintenance, SLURMD)
                services.systemd.set_enabled(site.maintenance, SLURMD, False)
                cluster = self.controller.slurm
                cluster.set_down(cluster.node(site.maintenance), site.maintenance_reason, "root")
            self.controller.slurm.reconfigure(parse_slurm_conf(conf_text))
            sync_cluster(self.controller.slurm, services)

    def submit_site_jobs(self, site: Site) -> None:
        """The site's own queue: a user's batch job in the closed partition, pending there.

        Submitted after the fault's own jobs, so a scenario's jobs keep the first ids.
        """
        from hpcgym.controller.rpc import JobRequest, User
        from hpcgym.controller.services.daemon import lookup_ids

        name, partition = site.closed_job_user, site.closed_partition[0]
        if not name or not partition:
            return
        with self._lock:
            record = self.controller.users.get(name)
            if record is None:
                uid, gid = lookup_ids(self.nodes, self.cluster.login_node, name)[:2]
                record = User(name, uid, name, gid)
                self.controller.users[name] = record
            request = JobRequest(
                name="prep",
                user=record,
                work_dir=f"/home/{name}",
                batch=True,
                command=f"/home/{name}/prep.sh",
                partition=partition,
                min_nodes=1,
                run_for_s=3600,
            )
            self.controller.slurm.submit(request)

    # --- the stubs' side (called on the runtime's channel threads) ------------------------------

    def _handle(self, node: str, argv: list[str], cwd: str, stdin: str | None, uid: int = 0) -> WireReply:
        with self.nodes.request():
            reply = self.controller.handle(node, argv, cwd, stdin, uid)
        return WireReply(stdout=reply.stdout, stderr=reply.stderr, exit_code=reply.exit_code)

    def _run_task(self, task: TaskRequest) -> TaskResult:
        # srun runs its task for real inside the target node, as slurmd would, for TASK_TIMEOUT_S of
        # host time at most; a task stopped there is `timed_out` and its job runs on (see srun).
        target = self.cluster.nodes[task.node]
        shell = target.ensure_started()
        exports = [f"{key}={value}" for key, value in sorted(task.env.items())]
        argv = ["/usr/bin/env", "-C", task.cwd, *exports, *task.argv]
        done = exec_in_node(target.spec, shell.shell_pid, argv, TASK_TIMEOUT_S)
        return TaskResult(
            stdout=done.stdout, stderr=done.stderr, exit_code=done.exit_code, timed_out=done.timed_out
        )

    def _read_image(self, node: str, path: str) -> bytes | None:
        # The node's pristine image (the read-only lower dir this process unpacked and verified),
        # never the node's own tree: what a package's file should be.
        return read_image(self.cluster.config.lowers[self.cluster.nodes[node].role], path)

    # --- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every node and free every mount, process and file of this episode."""
        self.cluster.close()


__all__: Sequence[str] = ("Episode", "StepResult", "cluster_conf")
