"""The service tools' entries for the controller's TOOLS table (program name -> `run`).

Listed here so the lead can merge them into `controller.TOOLS` in one line and so tests of this
room can dispatch like the controller does.
"""

from __future__ import annotations

from collections.abc import Callable

from hpcgym.controller.commands import journalctl, systemctl
from hpcgym.controller.commands.base import Context, Reply

TOOLS: dict[str, Callable[[Context, list[str]], Reply]] = {
    "systemctl": systemctl.run,
    "journalctl": journalctl.run,
}
