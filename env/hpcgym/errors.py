"""The one exception tree.

Library code raises these; only `tasks.py` and the CLI turn them into exit codes. Every message says
what went wrong, and `hint` says what to do next.
"""

from __future__ import annotations


class HpcgymError(Exception):
    """Base of every error hpcgym raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class MissingTool(HpcgymError):
    """A host program hpcgym needs is not installed or not running."""


class BuildError(HpcgymError):
    """An image could not be built."""


class DigestMismatch(HpcgymError):
    """An artifact's bytes do not match the digest recorded for it."""


class SandboxError(HpcgymError):
    """A sandbox, overlay or shell could not be set up or kept alive."""


class ClusterClosedError(SandboxError):
    """Work asked of a cluster that is closing or closed (a request still in flight when it ended)."""


class NodeCrashedError(SandboxError):
    """A node's init died on its own (killed from the host, out of memory): the node is gone.

    Nothing inside a node can end its init (SIGKILL from its own PID namespace does not reach PID 1,
    and a non-dumpable init cannot be ptraced without CAP_SYS_PTRACE), so this is never the agent's
    doing: the episode is an infrastructure failure, discarded rather than scored.
    """


class SandboxForkError(SandboxError):
    """bwrap could not create a process in a node (EAGAIN from a pids limit, ENOMEM): the host's doing.

    Told by bwrap's --info-fd, where it writes its child's pid once the child exists: nothing a
    command in the node prints can pass for it.
    """


class ControllerError(HpcgymError):
    """The per-episode cluster controller failed."""


class ScenarioError(HpcgymError):
    """A scenario file is invalid or cannot be applied."""


class ConfigError(HpcgymError):
    """A setting, flag or input file a user gave is missing or unusable."""


class EndpointError(HpcgymError):
    """A model endpoint (an OpenAI-compatible server) could not be reached or answered badly."""
