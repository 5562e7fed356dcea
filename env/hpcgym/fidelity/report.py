"""The comparison and its report: per state and per command, identical or a diff.

A compared output is one command's stdout, stderr and exit status together; it is identical when all
three are, after masking. The JSON keeps both sides' masked texts; the markdown shows totals, a table
per state and every difference as a unified diff (real first, simulator second).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field

from hpcgym.fidelity.mask import same_within_tolerance
from hpcgym.fidelity.shell import Output


@dataclass(frozen=True)
class Compared:
    command: str
    real: Output
    sim: Output

    @property
    def identical(self) -> bool:
        if self.real.exit_code != self.sim.exit_code:
            return False
        if not same_within_tolerance(self.real.stderr, self.sim.stderr):
            return False
        return same_within_tolerance(self.real.stdout, self.sim.stdout) or self.reordered

    @property
    def reordered(self) -> bool:
        """Sinfo's rows, the same but in another order.

        sinfo sorts its rows by its sort key only (node name for -N, partition otherwise) and leaves
        ties in whatever order it built them: two runs of the real cluster printed a node's two
        partitions, or a partition's state rows, in either order. Only that order is let go.
        """
        if not self.command.startswith("sinfo") or self.real.stdout == self.sim.stdout:
            return False
        real, sim = self.real.stdout.splitlines(), self.sim.stdout.splitlines()
        if len(real) != len(sim):
            return False
        # The header, and with -l the date line above it, stay where they are.
        head = next((i + 1 for i, line in enumerate(real) if line.startswith(("NODELIST", "PARTITION"))), 1)
        if not all(same_within_tolerance(a, b) for a, b in zip(real[:head], sim[:head], strict=True)):
            return False
        return all(
            same_within_tolerance(a, b) for a, b in zip(sorted(real[head:]), sorted(sim[head:]), strict=True)
        )

    def diff(self) -> str:
        lines = difflib.unified_diff(
            _render(self.real).splitlines(keepends=True),
            _render(self.sim).splitlines(keepends=True),
            "real slurm 22.05.8",
            "simulator",
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _render(output: Output) -> str:
    parts = [f"stdout: {line}" for line in output.stdout.splitlines(keepends=True)]
    parts += [f"stderr: {line}" for line in output.stderr.splitlines(keepends=True)]
    parts.append(f"exit: {output.exit_code}\n")
    return "".join(parts)


@dataclass
class StateResult:
    name: str
    about: str
    compared: list[Compared] = field(default_factory=list)
    error: str = ""

    @property
    def identical(self) -> int:
        return sum(c.identical for c in self.compared)


@dataclass
class Report:
    states: list[StateResult] = field(default_factory=list)

    @property
    def outputs(self) -> int:
        return sum(len(s.compared) for s in self.states)

    @property
    def identical(self) -> int:
        return sum(s.identical for s in self.states)

    @property
    def ratio(self) -> float:
        return self.identical / self.outputs if self.outputs else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.states)} states, {self.outputs} outputs, {self.identical} identical "
            f"({100 * self.ratio:.1f} %)"
        )

    def to_json(self) -> str:
        data = {
            "states": len(self.states),
            "outputs": self.outputs,
            "identical": self.identical,
            "ratio": self.ratio,
            "results": [
                {
                    "name": s.name,
                    "about": s.about,
                    "error": s.error,
                    "identical": s.identical,
                    "outputs": len(s.compared),
                    "commands": [
                        {
                            "command": c.command,
                            "identical": c.identical,
                            "reordered": c.reordered,
                            "real": asdict(c.real),
                            "sim": asdict(c.sim),
                            "diff": "" if c.identical else c.diff(),
                        }
                        for c in s.compared
                    ],
                }
                for s in self.states
            ],
        }
        return json.dumps(data, indent=2) + "\n"

    def to_markdown(self) -> str:
        out = [
            "# Fidelity: real Slurm 22.05.8 against the simulator",
            "",
            f"**{self.summary()}**",
            "",
            "| state | identical | about |",
            "|---|---|---|",
        ]
        for s in self.states:
            mark = f" (error: {s.error})" if s.error else ""
            out.append(f"| {s.name} | {s.identical}/{len(s.compared)}{mark} | {s.about} |")
        for s in self.states:
            out += ["", f"## {s.name}", "", s.about, ""]
            for c in s.compared:
                verdict = (
                    "**differs**"
                    if not c.identical
                    else "same rows, sinfo's tie order"
                    if c.reordered
                    else "same"
                )
                out.append(f"- {verdict}: `{c.command}`")
            for c in s.compared:
                if not c.identical:
                    out += ["", f"### {s.name}: `{c.command}`", "", "```diff", c.diff().rstrip("\n"), "```"]
        return "\n".join(out) + "\n"
