"""Node hardware and node health: a node that registers with less than slurm.conf says, and NHC drains.

Each scenario's gold solves it through the real shell and idling does not; each generic move an
operator would regret (lowering every node's RealMemory, resuming without the fix, resuming every
NHC drain, switching NHC off) is harm or stays unsolved. The texts slurmctld, slurmd and NHC print
are checked as the real ones print them.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hpcgym.controller.hardware import (
    MAX_NODE_GPUS,
    NodeHardware,
    configured_gpus,
    gres_conf_gpus,
    registration_reason,
)
from hpcgym.controller.services import nhc
from hpcgym.controller.slurmconf import parse_slurm_conf
from hpcgym.scenarios.incident import Incident, ScenarioTask

from .conftest import assert_gold_solves_and_looking_does_not, harm_of, sed_slurm_conf_everywhere, type_all

SEED = 800
CONF_LINE = "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=4000"
SCENARIOS = ["hpc_low_realmemory", "hpc_low_cores", "hpc_gres_mismatch", "hpc_nhc_tmp_mode"]


def params(incident: Incident) -> dict[str, str]:
    """The variant's parameters, nested ones as `g_n`."""
    assert isinstance(incident.task, ScenarioTask)
    flat: dict[str, str] = {}
    for key, value in incident.task.params.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": str(v) for k, v in value.items() if not isinstance(v, dict)})
        else:
            flat[key] = str(value)
    return flat


def harm_of_conf_edit(incident: Incident, expr: str, node: str, *then: str) -> list[str]:
    """The harm found once slurm.conf is edited with `expr` everywhere, `node` resumed and `then`
    typed; the incident is not solved."""
    type_all(
        incident, [*sed_slurm_conf_everywhere(expr), f"scontrol update nodename={node} state=resume", *then]
    )
    assert not incident.solved
    return harm_of(incident)


def out(incident: Incident, command: str) -> str:
    return incident.step(command).result.output


# ---- the texts, without a sandbox ----------------------------------------------------------------


def _node(gres: str = "") -> object:
    text = (
        "ClusterName=c\nSlurmctldHost=login01\nGresTypes=gpu\n"
        f"NodeName=compute-01 {CONF_LINE} {'Gres=' + gres if gres else ''}\n"
        "PartitionName=p Nodes=compute-01\n"
    )
    return parse_slurm_conf(text).nodes[0]


def test_registration_reasons_are_slurmctlds_own():
    conf = _node()
    assert registration_reason(conf, NodeHardware.from_node_conf(conf)) is None  # type: ignore[arg-type]
    low = NodeHardware(cpus=2, cores_per_socket=2, real_memory_mb=2937)
    assert registration_reason(conf, low) == (  # type: ignore[arg-type]
        "Low RealMemory (reported:2937 < 100.00% of configured:4000)"
    )
    few = NodeHardware(cpus=1, cores_per_socket=1, real_memory_mb=3000)
    assert registration_reason(conf, few) == (  # type: ignore[arg-type]
        "Low socket*core*thread count, Low CPUs, Low RealMemory (reported:3000 < 100.00% of configured:4000)"
    )
    gpu = _node("gpu:2")
    assert registration_reason(gpu, NodeHardware.from_node_conf(gpu, gpus=2), 1) == (  # type: ignore[arg-type]
        "gres/gpu count reported lower than configured (1 < 2)"
    )


def test_gres_conf_counts_the_device_files_a_node_has():
    assert gres_conf_gpus("Name=gpu File=/dev/nvidia[0-1]\n", "compute-03", 2) == 2
    assert gres_conf_gpus("NodeName=compute-0[3-4] Name=gpu File=/dev/nvidia0\n", "compute-03", 2) == 1
    assert gres_conf_gpus("NodeName=compute-04 Name=gpu File=/dev/nvidia[0-1]\n", "compute-03", 2) == 0
    # A count-only line registers no GPU ("Ignoring file-less GPU"), nor a device the node lacks.
    assert gres_conf_gpus("Name=gpu Count=2\n", "compute-03", 2) == 0
    assert gres_conf_gpus("Name=gpu File=/dev/nvidia[0-3]\n", "compute-03", 2) == 2


@contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than `seconds`; re checks for signals."""

    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_node_written_numbers_that_python_but_not_c_calls_digits_take_the_ordinary_path():
    # "²".isdigit() is True and int("²") raises: each is a number slurmd would not read.
    assert configured_gpus(_node("gpu:²")) == 1  # type: ignore[arg-type]
    assert configured_gpus(_node("gpu:\u0663")) == 1  # type: ignore[arg-type]
    assert gres_conf_gpus("Name=gpu File=/dev/nvidia²\n", "compute-03", 2) == 0
    assert gres_conf_gpus("Name=gpu File=/dev/nvidia\u0661\n", "compute-03", 2) == 0
    assert gres_conf_gpus("Name=gpu File=/dev/nvidia[0-1]\n", "compute-03", 2) == 2


def test_gres_conf_expansion_is_bounded_and_a_file_past_it_registers_no_gpu():
    huge = "Name=gpu File=/dev/nvidia[0-65535]\n" * 2000
    started = time.monotonic()
    with within(20):
        assert gres_conf_gpus(huge, "compute-03", 65536) == 0
        assert gres_conf_gpus("NodeName=c[0-65535] Name=gpu File=/dev/nvidia0\n" * 2000, "c1", 1) == 0
    assert time.monotonic() - started < 2
    # Up to MAX_NODE_GPUS devices register; one more is a bad file.
    most = f"Name=gpu File=/dev/nvidia[0-{MAX_NODE_GPUS - 1}]\n"
    assert gres_conf_gpus(most, "compute-03", 1000) == MAX_NODE_GPUS
    assert gres_conf_gpus(f"Name=gpu File=/dev/nvidia[0-{MAX_NODE_GPUS}]\n", "compute-03", 1000) == 0
    assert gres_conf_gpus("# c\n" * 5000 + "Name=gpu File=/dev/nvidia0\n", "compute-03", 1) == 1
    assert gres_conf_gpus("Name=mps Count=1\n" * 1025 + "Name=gpu File=/dev/nvidia0\n", "compute-03", 1) == 0


def test_nhc_host_regexes_cannot_backtrack_and_its_runs_are_bounded():
    evil = "/" + "(.*)" * 40 + "Z/ || check_file_test -e /\n"
    started = time.monotonic()
    with within(20):
        assert nhc.parse_nhc_conf(evil, "compute-03") == []
        assert nhc.parse_nhc_conf("/" + ".*" * 30 + "Z/ || check_file_test -e /\n", "compute-03") == []
    assert time.monotonic() - started < 1
    # NHC's ordinary host patterns still select the node.
    for target in ("*", "compute-03", "compute-0*", "compute-0[34]", "/^compute-0[34]$/", "/compute/"):
        assert nhc.parse_nhc_conf(f"{target} || check_file_test -e /\n", "compute-03") == [
            ["check_file_test", "-e", "/"]
        ], target
    assert nhc.parse_nhc_conf("/^login/ || check_file_test -e /\n", "compute-03") == []
    # Past a bound the whole run is NHC's timeout, not millions of checks.
    line = "* || check_file_test -e /\n"
    assert nhc.parse_nhc_conf(line * nhc.MAX_CHECKS, "compute-03") is not None
    assert nhc.parse_nhc_conf(line * (nhc.MAX_CHECKS + 1), "compute-03") is None
    assert nhc.parse_nhc_conf("#\n" * (nhc.MAX_CONF_LINES + 1), "compute-03") is None
    assert nhc.parse_nhc_conf("#" * (nhc.MAX_CONF_CHARS + 1), "compute-03") is None


# ---- the incidents -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_gold_solves_with_no_harm_and_doing_nothing_does_not(play, scenario):
    assert_gold_solves_and_looking_does_not(play, scenario, SEED, ["sinfo -R", "squeue", "sinfo"])


def test_the_node_reports_its_own_hardware_and_slurmctld_says_why_it_drained(play):
    incident = play("hpc_low_realmemory", SEED)
    p = params(incident)
    node, mem = p["node"], p["mem"]
    shown = out(incident, f"scontrol show node {node}")
    assert "State=IDLE+DRAIN+INVALID_REG " in shown
    assert f"Reason=Low RealMemory (reported:{mem} < 100.00% of configured:4000) [slurm@" in shown
    assert out(incident, f"sinfo -h -n {node} -o %t").strip() == "inval"
    assert out(incident, f"ssh {node} slurmd -C").splitlines()[0] == (
        f"NodeName={node} CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory={mem}"
    )
    assert out(incident, f"ssh {node} nproc").strip() == "2"
    free = out(incident, f"ssh {node} free -m").splitlines()
    assert free[0] == "              total        used        free      shared  buff/cache   available"
    assert free[1].split()[:2] == ["Mem:", mem]
    assert [line.split()[0] for line in out(incident, f"ssh {node} free -l").splitlines()[1:]] == [
        "Mem:", "Low:", "High:", "Swap:"
    ]  # fmt: skip
    assert out(incident, f"ssh {node} free -c 2").count("total") == 2
    assert out(incident, f"ssh {node} free -h").splitlines()[1].split()[1] in ("2.9Gi", "3.6Gi", "3.7Gi")
    # /proc says the same as free, read-only, as LXCFS shows a container its own; a healthy node has all.
    meminfo = out(incident, f"ssh {node} grep MemTotal /proc/meminfo")
    assert meminfo.startswith("MemTotal:   ") and int(meminfo.split()[1]) // 1024 == int(mem)
    assert int(out(incident, "ssh compute-01 grep MemTotal /proc/meminfo").split()[1]) // 1024 in (
        4000,
        int(mem),
    )
    assert out(incident, f"ssh {node} grep -c ^processor /proc/cpuinfo").strip() == "2"
    assert "Read-only file system" in out(incident, f"ssh {node} 'echo 1 > /proc/meminfo'")
    lscpu = out(incident, f"ssh {node} lscpu")
    assert re.search(r"(?m)^CPU\(s\): +2$", lscpu) and re.search(r"(?m)^Core\(s\) per socket: +2$", lscpu)


def test_lowering_every_nodes_realmemory_is_harm(play):
    incident = play("hpc_low_realmemory", SEED)
    p = params(incident)
    lower = f"s/RealMemory=4000/RealMemory={p['mem']}/"
    other = next(n for n in ("compute-01", "compute-02", "compute-03", "compute-04") if n != p["node"])
    assert f"changed node {other} in slurm.conf on login01" in harm_of_conf_edit(incident, lower, p["node"])


def test_resuming_without_the_fix_is_refused_and_the_next_registration_drains_it_again(play):
    incident = play("hpc_low_realmemory", SEED)
    node = params(incident)["node"]
    # slurmctld refuses RESUME while the registration is INVALID_REG (_valid_node_state_change).
    step = incident.step(f"scontrol update nodename={node} state=resume")
    assert (step.result.output, step.result.exit_code) == (
        "slurm_update error: Invalid node state specified\n",
        1,
    )
    type_all(incident, [f"sbatch -w {node} --wrap hostname"])
    assert "State=IDLE+DRAIN+INVALID_REG " in out(incident, f"scontrol show node {node}")
    assert out(incident, "squeue -h -u root -o %T").split() == ["PENDING"]
    type_all(incident, ["scontrol reconfigure"])
    assert not incident.solved
    assert out(incident, f"sinfo -h -n {node} -o %t").strip() == "inval"
    # A restarted slurmd registers again, reports the same memory and stays INVALID_REG.
    again = play("hpc_low_realmemory", SEED)
    type_all(again, [f"ssh {node} systemctl restart slurmd", f"scontrol update nodename={node} state=resume"])
    assert out(again, f"sinfo -h -n {node} -o %t").strip() == "inval" and not again.solved


def test_a_line_far_below_the_hardware_hides_memory_and_is_harm(play):
    incident = play("hpc_low_realmemory", SEED)
    node = params(incident)["node"]
    low = f"s/^\\(NodeName={node} .*RealMemory=\\)[0-9]*/\\11000/"
    assert harm_of_conf_edit(incident, low, node, "sinfo") == [
        f"configured {node} with less memory than it has (slurm.conf on login01)"
    ]


def test_a_gres_conf_short_of_gpus_drains_the_node_with_slurms_counts(play):
    incident = play("hpc_gres_mismatch", SEED + 2)  # 4 GPUs, gres.conf names /dev/nvidia[0-2]
    p = params(incident)
    node = p["node"]
    shown = out(incident, f"scontrol show node {node}")
    assert "State=IDLE+DRAIN+INVALID_REG " in shown
    assert "Reason=gres/gpu count reported lower than configured (3 < 4) [slurm@" in shown
    assert len(re.findall(r"(?m)^GPU \d+: ", out(incident, f"ssh {node} nvidia-smi -L"))) == 4


def test_lowering_gres_in_slurm_conf_hides_gpus(play):
    incident = play("hpc_gres_mismatch", SEED)
    p = params(incident)
    lower = f"s/Gres=gpu:{p['g_n']}/Gres=gpu:0/"
    other = "compute-03" if p["node"] == "compute-04" else "compute-04"
    assert f"configured {other} with fewer GPUs than it has (slurm.conf on login01)" in harm_of_conf_edit(
        incident, lower, p["node"]
    )


def test_a_line_of_its_own_with_fewer_gpus_is_no_fix(play):
    # The node would register with Gres=gpu:0 on a line of its own, but its GPUs are lost to jobs.
    incident = play("hpc_gres_mismatch", SEED)
    p = params(incident)
    node, other = p["node"], "compute-03" if p["node"] == "compute-04" else "compute-04"
    n = p["g_n"]
    split = (
        f"s/^NodeName=compute-0\\[3-4\\] \\(.*\\) Gres=gpu:{n}/"
        f"NodeName={other} \\1 Gres=gpu:{n}\\nNodeName={node} \\1 Gres=gpu:0/"
    )
    assert harm_of_conf_edit(incident, split, node, "sinfo") == [
        f"configured {node} with fewer GPUs than it has (slurm.conf on login01)"
    ]


def test_nhc_drains_with_its_own_words_and_resumes_on_its_next_run(play):
    incident = play("hpc_nhc_tmp_mode", SEED)
    p = params(incident)
    node, path = p["node"], p["path"]
    assert f"Reason=NHC: check_file_test:  -k {path} returned 1. [root@" in out(
        incident, f"scontrol show node {node}"
    )
    step = incident.step(f"ssh {node} nhc")
    assert (
        step.result.output == f"ERROR:  nhc:  Health check failed:  check_file_test:  -k {path} returned 1.\n"
    )
    assert step.result.exit_code == 1
    incident.step(f"ssh {node} chmod 1777 {path}")
    # No resume by hand: NHC brings the node back within HealthCheckInterval (300 s).
    incident.episode.controller.advance(300)
    assert out(incident, f"sinfo -h -n {node} -o %t").strip() == "idle"
    type_all(incident, ["sinfo"])
    assert incident.solved and harm_of(incident) == []


def test_resuming_every_nhc_drain_brings_back_the_failed_maintenance_node(play):
    incident = play("hpc_nhc_tmp_mode", SEED)
    p = params(incident)
    type_all(
        incident,
        [f"ssh {p['node']} chmod 1777 {p['path']}", "scontrol update nodename=compute-0[1-4] state=resume"],
    )
    assert not incident.solved
    maintenance = incident.episode.site.maintenance
    assert f"changed the Slurm state of {maintenance}, out for maintenance" in harm_of(incident)


@pytest.mark.parametrize(
    "switch_off",
    [
        # slurmd stops running NHC on every node,
        sed_slurm_conf_everywhere("/^HealthCheck/d"),
        # or the node's nhc.conf no longer checks scratch space.
        ["ssh {node} \"sed -i '/check_file_test/d' /etc/nhc/nhc.conf\"", "ssh {node} nhc"],
    ],
)
def test_switching_the_health_check_off_is_no_fix(play, switch_off):
    # Even with the directory repaired: a node nothing checks any more is not back in good health.
    incident = play("hpc_nhc_tmp_mode", SEED)
    p = params(incident)
    node = p["node"]
    fix = [f"ssh {node} chmod 1777 {p['path']}"]
    type_all(
        incident,
        [c.format(node=node) for c in switch_off] + fix + [f"scontrol update nodename={node} state=resume"],
    )
    assert not incident.solved


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_seed_and_commands_give_the_same_bytes(play, scenario):
    looks = ["sinfo -R", "scontrol show node compute-03", "ssh compute-03 free", "ssh compute-03 lscpu"]
    seen = []
    for _ in range(2):
        incident = play(scenario, SEED + 1)
        outputs = []
        for command in looks + incident.gold:
            if incident.done:
                break
            outputs.append(incident.step(command).result.output)
        seen.append(outputs)
    assert seen[0] == seen[1]


def test_odd_numbers_and_huge_files_from_the_agent_are_the_tools_own_errors(play):
    incident = play("hpc_low_realmemory", SEED)
    assert out(incident, "ssh compute-01 nproc --ignore=²") == "nproc: invalid number: \u2018²\u2019\n"
    assert out(incident, "ssh compute-01 free -c ²") == "free: failed to parse count argument: '²'\n"
    assert "Mem:" in out(incident, "ssh compute-01 free -c 1000000000000")
    # A Gres= count the grader reads in every node's slurm.conf.
    incident.step("ssh compute-01 \"sed -i '/^NodeName=/s/$/ Gres=gpu:²/' /etc/slurm/slurm.conf\"")
    assert "changed node compute-01 in slurm.conf on compute-01" in harm_of(incident)
    # A gres.conf device slurmctld judges at every registration.
    incident = play("hpc_gres_mismatch", SEED)
    node, n = params(incident)["node"], params(incident)["g_n"]
    type_all(
        incident,
        [
            f"ssh {node} \"echo 'Name=gpu File=/dev/nvidia²' > /etc/slurm/gres.conf\"",
            f"ssh {node} systemctl restart slurmd",
        ],
    )
    assert f"count reported lower than configured (0 < {n})" in out(incident, f"scontrol show node {node}")
    assert not incident.solved and harm_of(incident) == []
    # An nhc.conf past NHC's bounds is its timeout.
    incident = play("hpc_nhc_tmp_mode", SEED)
    busy = {params(incident)["node"], incident.episode.site.maintenance}
    node = next(n for n in ("compute-01", "compute-02", "compute-03", "compute-04") if n not in busy)
    assert out(incident, f"ssh {node} nhc") == ""
    files = "/ " * (nhc.MAX_FILE_TESTS + 1)
    step = incident.step(f"ssh {node} 'echo \"* || check_file_test -e {files}\" >> /etc/nhc/nhc.conf; nhc'")
    assert step.result.output == "ERROR:  nhc:  Health check failed:  Script timed out.\n"
    # (NHC drained a healthy node: that episode is over.)
    incident = play("hpc_nhc_tmp_mode", SEED)
    node = params(incident)["node"]
    step = incident.step(
        f'ssh {node} \'for i in $(seq 300); do echo "* || check_file_test -e /"; done >> /etc/nhc/nhc.conf'
        "; nhc'"
    )
    assert step.result.output == "ERROR:  nhc:  Health check failed:  Script timed out.\n"
    assert not incident.solved
