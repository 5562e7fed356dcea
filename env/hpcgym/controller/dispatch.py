"""The per-episode controller: one entry point, `handle`, for every simulated tool.

The runtime's control socket calls `Controller.handle(node, argv, cwd)` for each stub invocation and
`Controller.tick()` once per agent command. Tools are looked up in one explicit table, `TOOLS`
(controller/tools.py), the programs the images link to the client (stubs/tools.list).
"""

from __future__ import annotations

import threading
from pathlib import Path

from hpcgym.controller.clock import DEFAULT_START_S, VirtualClock
from hpcgym.controller.commands.base import (
    Context,
    FileReader,
    TaskRequest,
    TaskResult,
    TaskRunner,
    ToolReply,
)
from hpcgym.controller.joblife import JobLife, sync_prologs
from hpcgym.controller.rpc import User
from hpcgym.controller.services import MemoryNodeAccess, NodeAccess, ServiceManager
from hpcgym.controller.services.slurmlink import sync_cluster
from hpcgym.controller.slurmconf import SLURM_CONF_PATH, SlurmConf, load_slurm_conf
from hpcgym.controller.slurmctld import SlurmState
from hpcgym.controller.tools import SLURM_CLIENTS, TOOLS

DEFAULT_USERS = (User("root", 0, "root", 0),)


# What a Slurm client prints when its node has no slurm.conf and no DNS SRV record points to one
# (capture 00-no-config); even `sinfo -V` fails, because the config is read first.
NO_CONFIG = (
    "{tool}: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\n"
    "{tool}: error: fetch_config: DNS SRV lookup failed\n"
    "{tool}: error: _establish_config_source: failed to fetch config\n"
    "{tool}: fatal: Could not establish a configuration source\n"
)


class Controller:
    """One episode's simulated Slurm cluster.

    Example:
        >>> controller = Controller.from_slurm_conf(Path("/etc/slurm/slurm.conf"))  # doctest: +SKIP
        >>> reply = controller.handle("login", ["sinfo"], "/root")  # doctest: +SKIP
        >>> controller.tick()  # doctest: +SKIP

    Args:
        conf: the parsed slurm.conf.
        start_s: the virtual clock's first instant (epoch seconds).
        step_s: seconds the clock advances per `tick()`, i.e. per agent command.
        slurmd_running: whether every node's slurmd is up and registered at the start.
        users: accounts the cluster knows (squeue -u checks them); the first is the caller.
        run_task: runs one srun task on a node and returns its output (the runtime provides it).
        read_file: reads a file from a node's filesystem (sbatch reads its script through it).
        nodes: the nodes' files and processes, which the services (systemd units, network, clocks,
            ...) run on; slurmctld's view follows their daemons. None: Slurm alone (unit tests),
            with services over empty in-memory nodes that slurmctld's view does not follow.
    """

    def __init__(
        self,
        conf: SlurmConf,
        *,
        start_s: int = DEFAULT_START_S,
        step_s: int = 1,
        slurmd_running: bool = True,
        users: tuple[User, ...] = DEFAULT_USERS,
        run_task: TaskRunner | None = None,
        read_file: FileReader | None = None,
        nodes: NodeAccess | None = None,
    ) -> None:
        self.clock = VirtualClock(start_s=start_s, step_s=step_s)
        self.slurm = SlurmState(conf, self.clock, slurmd_running=slurmd_running)
        self.users = {user.name: user for user in users}
        self.caller = users[0]
        self.run_task = run_task
        self.read_file = read_file
        # The episode's services, built once with the controller and passed to every tool.
        access = nodes if nodes is not None else MemoryNodeAccess()
        self.services = ServiceManager.from_slurm_conf(conf, access, self.clock)
        # Whether slurmctld's view (slurmd registered, munged up, prologs) follows the daemons.
        self.slurm_follows_services = nodes is not None
        # Stubs on several nodes may call at once; one request at a time keeps the state consistent
        # (slurmctld's own locks play this part) and the order of effects deterministic per arrival.
        self._lock = threading.Lock()
        self.joblife = JobLife()

    @classmethod
    def from_slurm_conf(cls, path: Path, **kwargs: object) -> Controller:
        """Build a controller from a slurm.conf file (keyword arguments as for the constructor)."""
        return cls(load_slurm_conf(path), **kwargs)  # type: ignore[arg-type]

    def handle(
        self, node: str, argv: list[str], cwd: str, stdin: str | None = None, uid: int | None = None
    ) -> ToolReply:
        """Run one tool invocation as the given node's user would see it.

        Args:
            node: the node the stub runs on (known from the socket, never from the request).
            argv: the full argv, program name first, passed through untouched.
            cwd: the stub's working directory on that node.
            stdin: what the tool read on standard input, where the client forwards it.
            uid: the caller's uid in the node (the kernel's word for it, never the request's); a
                user su made the agent is who submits, cancels and is refused, as in Slurm. None:
                the controller's own caller (its first user, root unless told otherwise).

        Returns:
            The stdout, stderr and exit code the real tool would produce.
        """
        if not argv:
            return ToolReply("", "hpcgym: empty command\n", 2)
        program = Path(argv[0]).name
        tool = TOOLS.get(program)
        if tool is None:
            return ToolReply("", f"bash: {program}: command not found\n", 127)
        if (
            program in SLURM_CLIENTS
            and self.read_file is not None
            and self.read_file(node, SLURM_CONF_PATH) is None
        ):
            return ToolReply("", NO_CONFIG.format(tool=program), 1)
        ctx = Context(
            slurm=self.slurm,
            node=node,
            cwd=cwd,
            user=self.caller,
            users=self.users,
            run_task=self._run_task_unlocked if self.run_task is not None else None,
            read_file=self.read_file,
            stdin=stdin,
            services=self.services,
        )
        if uid is not None and uid != self.caller.uid:
            ctx.user = ctx.find_user(str(uid)) or User(str(uid), uid, str(uid), uid)
        with self._lock:
            self._forget_files()
            reply = tool(ctx, list(argv[1:]))
            self._sync_services()
            return reply

    def _run_task_unlocked(self, task: TaskRequest) -> TaskResult:
        # A task is a program in a node; it may call the tools itself (`srun date`, `srun sinfo`),
        # and those requests arrive on another thread. Holding the lock across the task would
        # deadlock them, so srun lets go while its task runs, as slurmctld does during a step.
        assert self.run_task is not None
        self._lock.release()
        try:
            return self.run_task(task)
        finally:
            self._lock.acquire()
            self._forget_files()

    def _forget_files(self) -> None:
        # Node files the services parsed are trusted for one request or tick at most: the agent may
        # have changed any of them since.
        self.services.network.forget()

    def _sync_services(self) -> None:
        # Daemons the agent started or stopped change what slurmctld sees (slurmd registered, ...).
        if self.slurm_follows_services:
            sync_cluster(self.slurm, self.services)
            self._sync_joblife()

    def _sync_joblife(self) -> None:
        # Jobs that started or ended since run slurmd's Prolog or Epilog in their nodes (joblife.py),
        # also right after the clock moved: a script that fails at once drains its node at once.
        if self.slurm_follows_services:
            sync_prologs(self.slurm, self.services, self.joblife)

    def tick(self) -> int:
        """Advance virtual time by one step and apply what falls due (job ends, timeouts, pings)."""
        with self._lock:
            now = self.clock.tick()
            self._forget_files()
            self._sync_services()
            self.slurm.advance()
            self._sync_joblife()
            return now

    def advance(self, seconds: int) -> int:
        """Advance virtual time by any amount (scenario set-up, tests) and apply what falls due."""
        with self._lock:
            now = self.clock.advance(seconds)
            self._forget_files()
            self._sync_services()
            self.slurm.advance()
            self._sync_joblife()
            return now
