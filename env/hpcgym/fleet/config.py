"""Fleet configs: named, versioned YAML files saying where and how big env servers and the trainer run.

`load_config("dev")` reads `configs/dev.yaml` beside this module (or any path to a YAML file) into
frozen dataclasses, checking every value before anything reaches sbatch: Slurm reads `#SBATCH` lines
itself, so a stray space or newline in a partition name would silently change the job.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from hpcgym.errors import HpcgymError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Slurm's own spellings: a partition or account name, a --mem size, a --time limit.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MEM = re.compile(r"[1-9][0-9]*[KMGT]?")
_TIME = re.compile(r"(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})")
_SBATCH_OPTION = re.compile(r"--[a-z][a-z0-9-]*(=[^\s'\"\\$`;]+)?")


class FleetError(HpcgymError):
    """A fleet config, launch or coordination directory is invalid, or Slurm refused a request."""


@dataclass(frozen=True)
class ServerResources:
    """One env server = one array task. See configs/dev.yaml for what each field means."""

    partition: str
    cpus_per_task: int
    mem: str
    time: str
    sessions_per_server: int
    pool_size: int
    ready_timeout_s: int
    drain_s: int
    extra_sbatch: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_common(self, "server")
        if self.sessions_per_server < 1:
            raise FleetError(f"server.sessions_per_server must be at least 1, not {self.sessions_per_server}")
        if self.pool_size < 0:
            raise FleetError(f"server.pool_size must be 0 or more, not {self.pool_size}")
        if self.ready_timeout_s < 10:
            raise FleetError(f"server.ready_timeout_s must be at least 10, not {self.ready_timeout_s}")
        if not 0 <= self.drain_s <= 65533:
            raise FleetError(
                f"server.drain_s must be between 0 and 65533 (Slurm's --signal), not {self.drain_s}"
            )


@dataclass(frozen=True)
class TrainerResources:
    """The GRPO job that depends on the fleet. See configs/dev.yaml for what each field means."""

    partition: str
    gpus: int
    cpus_per_task: int
    mem: str
    time: str
    min_ready: int
    wait_s: int
    args: tuple[str, ...] = ()
    extra_sbatch: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_common(self, "trainer")
        if self.gpus < 0:
            raise FleetError(f"trainer.gpus must be 0 or more, not {self.gpus}")
        if self.min_ready < 0:
            raise FleetError(f"trainer.min_ready must be 0 (all servers) or more, not {self.min_ready}")
        if self.wait_s < 1:
            raise FleetError(f"trainer.wait_s must be positive, not {self.wait_s}")
        if "--env-urls" in self.args:
            raise FleetError("trainer.args must not name --env-urls: the fleet's servers are passed there")


@dataclass(frozen=True)
class FleetConfig:
    """A named, versioned fleet config."""

    name: str
    version: int
    server: ServerResources
    trainer: TrainerResources

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise FleetError(f"config name {self.name!r} must be letters, digits, '_', '.' or '-'")
        if self.version < 1:
            raise FleetError(f"config version must be at least 1, not {self.version}")


def _check_common(resources: ServerResources | TrainerResources, section: str) -> None:
    if not _NAME.fullmatch(resources.partition):
        raise FleetError(f"{section}.partition {resources.partition!r} is not a Slurm partition name")
    if resources.cpus_per_task < 1:
        raise FleetError(f"{section}.cpus_per_task must be at least 1, not {resources.cpus_per_task}")
    if not _MEM.fullmatch(resources.mem):
        raise FleetError(f"{section}.mem {resources.mem!r} is not a Slurm size such as 8G or 4000M")
    if not _TIME.fullmatch(resources.time):
        raise FleetError(
            f"{section}.time {resources.time!r} is not a Slurm time limit (minutes, HH:MM:SS or D-HH:MM:SS)"
        )
    for option in resources.extra_sbatch:
        if not _SBATCH_OPTION.fullmatch(option):
            raise FleetError(
                f"{section}.extra_sbatch entry {option!r} must be one long option such as --account=NAME "
                "(no spaces, quotes or shell characters)"
            )


def check_partition(partition: str) -> str:
    """Return `partition` if it is a valid Slurm partition name, else raise `FleetError`."""
    if not _NAME.fullmatch(partition):
        raise FleetError(f"partition {partition!r} is not a Slurm partition name")
    return partition


def check_time(limit: str) -> str:
    """Return `limit` if it is a Slurm time limit, else raise `FleetError`."""
    if not _TIME.fullmatch(limit):
        raise FleetError(f"time limit {limit!r} is not minutes, HH:MM:SS or D-HH:MM:SS")
    return limit


def config_names() -> list[str]:
    """The named configs shipped with hpcgym."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path) -> FleetConfig:
    """Read a fleet config by name (`dev`, `production`) or from a YAML file.

    Raises:
        FleetError: the config does not exist, has unknown or missing keys, or a value is invalid.
    """
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) or "/" in text else CONFIG_DIR / f"{text}.yaml"
    if not path.is_file():
        raise FleetError(
            f"no fleet config {text!r}",
            hint=f"use one of {', '.join(config_names())} or a path to a .yaml file",
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise FleetError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise FleetError(f"{path} must hold a mapping with name, version, server and trainer")
    _check_keys(data, {"name", "version", "server", "trainer"}, str(path))
    return FleetConfig(
        name=_typed(data, "name", str, str(path)),
        version=_typed(data, "version", int, str(path)),
        server=_section(ServerResources, data["server"], f"{path}: server"),
        trainer=_section(TrainerResources, data["trainer"], f"{path}: trainer"),
    )


def dump_config(config: FleetConfig) -> str:
    """The config as YAML that `load_config` reads back to an equal config."""
    plain = json.loads(json.dumps(asdict(config)))  # tuples to lists: safe_dump writes only plain types
    return yaml.safe_dump(plain, sort_keys=False)


def _section(cls: type[Any], data: object, where: str) -> Any:
    if not isinstance(data, dict):
        raise FleetError(f"{where} must be a mapping")
    names = {f.name for f in fields(cls)}
    _check_keys(data, names, where, names - _OPTIONAL)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        if f.name in _OPTIONAL:
            items = data[f.name] or []
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise FleetError(f"{where}.{f.name} must be a list of strings")
            values[f.name] = tuple(items)
        else:
            values[f.name] = _typed(data, f.name, int if f.type in ("int", int) else str, where)
    return cls(**values)


_OPTIONAL = {"args", "extra_sbatch"}


def _typed(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise FleetError(f"{where}: {key} must be an integer, not {value!r}")
    if kind is str and not isinstance(value, str):
        raise FleetError(f'{where}: {key} must be a string, not {value!r} (quote times such as "01:00:00")')
    return value


def _check_keys(
    data: dict[str, Any], allowed: set[str], where: str, required: set[str] | None = None
) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise FleetError(
            f"{where}: unknown keys {', '.join(unknown)}", hint=f"allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted((allowed if required is None else required) - set(data))
    if missing:
        raise FleetError(f"{where}: missing keys {', '.join(missing)}")
