"""Same scenario, seed and commands give the same observations and rewards."""

from __future__ import annotations

from hpcgym.scenarios.incident import Incident


def transcript(runtime, scenario: str, seed: int) -> list[tuple[str, int, float]]:  # type: ignore[no-untyped-def]
    with Incident(runtime, scenario, seed) as incident:
        commands = ["sinfo -R", "systemctl status slurmctld", *incident.gold]
        out = []
        for command in commands:
            if incident.done:
                break
            step = incident.step(command)
            out.append((step.result.output, step.result.exit_code, step.reward))
        return out


def test_same_seed_same_bytes(runtime):
    assert transcript(runtime, "hpc_munge", 5) == transcript(runtime, "hpc_munge", 5)


def test_initial_state_follows_the_seed(runtime):
    def first(seed: int) -> str:
        with Incident(runtime, "hpc_munge", seed) as incident:
            return incident.step(
                "sinfo -R; ssh compute-01 cat /etc/sysconfig/network-scripts/route-eth0"
            ).result.output

    # The same seed is the same cluster; other seeds break other nodes (or the same one otherwise).
    assert first(3) == first(3)
    assert len({first(seed) for seed in (3, 4, 5, 6, 7)}) > 1
