"""The coordination directory of one fleet launch, on a filesystem every node shares.

Layout (`.hpcgym/fleet/<launch-id>/` by default):
    launch.json        what was launched: config name and version, server count, job ids
    config.yaml        the fleet config as launched (overrides applied); fleet-train reads it
    token              the servers' API key, mode 0600, written once by fleet-up
    server.sbatch      the exact scripts that were submitted
    train.sbatch
    servers/<task>.json  one marker per ready server, written by `serve` only after /health passed
    logs/              the jobs' stdout and stderr

A marker names its job and array task, so a reader can drop markers of jobs Slurm no longer runs
(`ready.py`): a server killed with SIGKILL cannot remove its own marker, and must not look ready.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpcgym.fleet.config import FleetError

LAUNCH_FORMAT = 1


@dataclass(frozen=True)
class ServerMarker:
    """One ready server: where it listens and which Slurm array task it is."""

    job_id: str
    array_job_id: str
    task_id: int
    url: str
    host: str
    port: int
    pid: int
    sessions: int
    ready_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServerMarker:
        data = json.loads(text)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Launch:
    """What fleet-up launched (and fleet-train added), as recorded in launch.json."""

    launch_id: str
    config: str
    config_version: int
    servers: int
    server_job: str | None = None
    train_job: str | None = None

    @property
    def job_ids(self) -> list[str]:
        return [job for job in (self.server_job, self.train_job) if job]


@dataclass(frozen=True)
class CoordDir:
    """Paths inside one launch's coordination directory, and the few operations on them."""

    root: Path

    @property
    def launch_id(self) -> str:
        return self.root.name

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def launch_file(self) -> Path:
        return self.root / "launch.json"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def servers_dir(self) -> Path:
        return self.root / "servers"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def server_script(self) -> Path:
        return self.root / "server.sbatch"

    @property
    def train_script(self) -> Path:
        return self.root / "train.sbatch"

    def exists(self) -> bool:
        return self.launch_file.is_file()

    def create(self) -> None:
        """Make the directory (0700) and a fresh token (0600); an existing launch is never reused."""
        if self.root.exists():
            raise FleetError(f"{self.root} already exists", hint="pick another --coord-dir or run fleet-down")
        self.root.mkdir(parents=True, mode=0o700)
        self.servers_dir.mkdir(mode=0o700)
        self.logs_dir.mkdir(mode=0o700)
        fd = os.open(self.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")

    def read_token(self) -> str:
        """The API key; refused unless the file is ours and readable by nobody else."""
        try:
            info = self.token.stat()
        except FileNotFoundError:
            raise FleetError(
                f"no token at {self.token}", hint="is this a coordination dir made by fleet-up?"
            ) from None
        if stat.S_IMODE(info.st_mode) != 0o600 or info.st_uid != os.geteuid():
            raise FleetError(
                f"{self.token} has mode {stat.S_IMODE(info.st_mode):04o} and owner {info.st_uid}",
                hint="the token must be mode 0600 and owned by the user running the fleet",
            )
        token = self.token.read_text().strip()
        if not token:
            raise FleetError(f"{self.token} is empty")
        return token

    def write_launch(self, launch: Launch) -> None:
        _write_atomic(
            self.launch_file, json.dumps({"format": LAUNCH_FORMAT, **asdict(launch)}, indent=1) + "\n"
        )

    def read_launch(self) -> Launch:
        try:
            data: dict[str, Any] = json.loads(self.launch_file.read_text())
        except FileNotFoundError:
            raise FleetError(
                f"no launch at {self.root}", hint="run fleet-up first, or pass --coord-dir"
            ) from None
        if data.pop("format", None) != LAUNCH_FORMAT:
            raise FleetError(f"{self.launch_file} was written by another hpcgym version")
        return Launch(**data)

    def marker_path(self, task_id: int) -> Path:
        return self.servers_dir / f"{task_id}.json"

    def write_marker(self, marker: ServerMarker) -> None:
        """Publish a ready server: readers see the whole marker or none of it."""
        _write_atomic(self.marker_path(marker.task_id), marker.to_json())

    def remove_marker(self, task_id: int) -> None:
        self.marker_path(task_id).unlink(missing_ok=True)

    def markers(self) -> list[ServerMarker]:
        """Every marker on disk, live or not, by task id; unreadable ones are skipped."""
        found = []
        for path in sorted(self.servers_dir.glob("*.json")):
            try:
                found.append(ServerMarker.from_json(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed while we read it, or half-written by a foreign tool
        return sorted(found, key=lambda m: m.task_id)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
