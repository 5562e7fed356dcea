"""SCENARIOS: the incident library and the GRADE.

`library/<id>.yaml` holds one incident each (schema.py says what a file may contain); faults.py puts
a scenario's fault into a fresh episode, checks.py holds the predicates success is made of, grade.py
turns them into binary success and a shaped reward, incident.py runs one graded episode, policies.py
and evaluate.py drive many. `TASKS` (scenario id -> zero-argument factory) is what the interfaces'
task registry reads; nothing here imports the interfaces. `write_readme` (catalog.py) writes the
library's table into `README`, for `invoke scenario-table`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from hpcgym.scenarios.catalog import README, write_readme
from hpcgym.scenarios.incident import Incident, ScenarioTask
from hpcgym.scenarios.schema import LIBRARY, Scenario, lite_ids, load_scenario, scenario_ids

TASKS: dict[str, Callable[[], ScenarioTask]] = {
    path.stem: functools.partial(ScenarioTask, path.stem) for path in sorted(LIBRARY.glob("*.yaml"))
}

__all__ = [
    "README",
    "TASKS",
    "Incident",
    "Scenario",
    "ScenarioTask",
    "lite_ids",
    "load_scenario",
    "scenario_ids",
    "write_readme",
]
