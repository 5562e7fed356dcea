"""IMAGE -> EPISODE: unpack images once, and run isolated copies of the cluster from them.

`Runtime` is the entry point; `Runtime.new_cluster` returns a `Cluster`, whose `execute` types one
command into the agent's shell and returns a `CommandResult`. Controller logic and grading live
elsewhere; the controller plugs in as a `Handler`.
"""

from hpcgym.runtime.channel import Handler, WireReply, echo_handler
from hpcgym.runtime.cluster import Cluster, CommandResult
from hpcgym.runtime.host import Runtime
from hpcgym.runtime.overlay import OverlayMode
from hpcgym.runtime.sandbox import Limits

__all__ = [
    "Cluster",
    "CommandResult",
    "Handler",
    "Limits",
    "OverlayMode",
    "Runtime",
    "WireReply",
    "echo_handler",
]
