"""hpc_low_cores: a node back from hardware work with fewer sockets, cores or threads than its line.

slurmd registers the layout it finds, slurmctld drains the node INVALID_REG and refuses to resume it,
a reconfigure refuses a changed CPU count, and only a line of the node's own with what `slurmd -C`
prints, on every node, read by a restarted slurmctld, brings it back. The generic moves (resume it,
lower the shared line, change CPUs= alone, reconfigure twice, another variant's line, a second line
for the node, restart and resume everything) stay unsolved or are harm. Texts are Slurm 22.05's.
"""

from __future__ import annotations

import re

import pytest

from hpcgym.controller import Controller, TaskResult, parse_slurm_conf
from hpcgym.controller.hardware import NodeHardware, registration_reason
from hpcgym.controller.state import NodeFlag
from hpcgym.errors import ControllerError
from hpcgym.scenarios import cheats
from hpcgym.scenarios.difficulty import Clue, Difficulty
from hpcgym.scenarios.incident import gold_commands
from hpcgym.scenarios.schema import load_scenario

from .conftest import harm_of, type_all

SCENARIO = "hpc_low_cores"
# Test seeds and what they draw: all on compute-02's 16-CPU model (2 sockets x 4 cores x 2 threads).
BOARD, SMT, SOCKET = 800, 808, 814  # -> 2x3x2 = 12, 2x4x1 = 8, 1x4x2 = 8 CPUs
NODE = "compute-02"
NEED_RESTART = (
    "The node configuration changes that were made require restart of the slurmctld daemon to take effect"
)
LINE16 = "CPUs=16 Boards=1 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=2 RealMemory=4000"
SPLIT = (
    "s/^NodeName=compute-0\\[1-4\\] \\(.*\\)$/NodeName=compute-01 \\1\\nNodeName=compute-02 \\1\\n"
    "NodeName=compute-03 \\1\\nNodeName=compute-04 \\1/"
)


def out(incident, command: str) -> str:  # type: ignore[no-untyped-def]
    return incident.step(command).result.output


def everywhere(*edits: str) -> list[str]:
    """The sed edits on the login node, then on every compute node through ssh."""
    scripts = "; ".join(f"sed -i '{edit}' /etc/slurm/slurm.conf" for edit in edits)
    return [*(f"sed -i '{edit}' /etc/slurm/slurm.conf" for edit in edits), cheats.on_compute(scripts)]


def own_line(cpus: int, sockets: int, cores: int, threads: int) -> str:
    return (
        f"s/^NodeName={NODE} .*/NodeName={NODE} CPUs={cpus} Boards=1 SocketsPerBoard={sockets} "
        f"CoresPerSocket={cores} ThreadsPerCore={threads} RealMemory=4000 State=UNKNOWN/"
    )


# ---- what slurmd registers and how slurm.conf is read (no sandbox) -----------------------------------


def _conf(line: str) -> object:
    text = f"ClusterName=c\nSlurmctldHost=login01\nNodeName={NODE} {line}\nPartitionName=p Nodes={NODE}\n"
    return parse_slurm_conf(text).nodes[0]


def test_slurmd_registers_the_hardware_only_when_it_has_fewer_cpus():
    conf = _conf(LINE16)
    smt_off = NodeHardware(
        cpus=8, sockets_per_board=2, cores_per_socket=4, threads_per_core=1, real_memory_mb=4000
    )
    assert registration_reason(conf, smt_off) == "Low socket*core*thread count, Low CPUs"  # type: ignore[arg-type]
    # Only CPUs= lowered to the cores: the hardware has those CPUs, slurmd registers the line as
    # written (and logs that it differs), and slurmctld accepts it.
    cores_only = _conf("CPUs=8 Boards=1 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=2 RealMemory=4000")
    assert registration_reason(cores_only, smt_off) is None  # type: ignore[arg-type]
    exact = _conf("CPUs=8 Boards=1 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=4000")
    assert registration_reason(exact, smt_off) is None  # type: ignore[arg-type]


def test_slurm_conf_resets_cpus_that_fit_no_layout_and_infers_sockets():
    # read_config.c: CPUs=12 is none of 2, 2x4 or 2x4x2, so it is reset to 16.
    assert _conf("CPUs=12 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=2").cpus == 16  # type: ignore[attr-defined]
    assert _conf("CPUs=8 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=2").cpus == 8  # type: ignore[attr-defined]
    inferred = _conf("CPUs=8 CoresPerSocket=2")
    assert (inferred.sockets_per_board, inferred.cpus) == (4, 8)  # type: ignore[attr-defined]
    assert _conf("CPUs=0 CoresPerSocket=0 ThreadsPerCore=0").cpus == 1  # type: ignore[attr-defined]


def test_a_node_defined_on_two_lines_is_refused_in_slurms_words():
    text = (
        "ClusterName=c\nSlurmctldHost=login01\nNodeName=compute-02 CPUs=8\nNodeName=compute-0[1-4] CPUs=16\n"
    )
    with pytest.raises(ControllerError) as caught:
        parse_slurm_conf(text)
    assert caught.value.message == "Duplicated NodeHostName compute-02 in config file"


CONF16 = f"""ClusterName=hpc
SlurmctldHost=login01
SlurmUser=slurm
SlurmdTimeout=30
NodeName=compute-0[1-2] {LINE16} State=UNKNOWN
PartitionName=compute Nodes=compute-0[1-2] Default=YES State=UP
"""


def test_a_reconfigure_refuses_a_changed_cpu_count_and_the_record_waits_for_a_start():
    files = {"/etc/slurm/slurm.conf": CONF16.encode()}
    c = Controller(
        parse_slurm_conf(CONF16), run_task=lambda t: TaskResult(""), read_file=lambda n, p: files.get(p)
    )
    hw = NodeHardware(
        cpus=8, sockets_per_board=2, cores_per_socket=4, threads_per_core=1, real_memory_mb=4000
    )
    c.slurm.node_specs_check = lambda node: registration_reason(node.conf, hw) if node.name == NODE else None
    c.slurm.start_slurmd(NODE)  # it comes back from the repair and registers
    node = c.slurm.nodes[NODE]
    assert node.has(NodeFlag.INVALID_REG) and node.reason == "Low socket*core*thread count, Low CPUs"
    reply = c.handle("login01", ["scontrol", "update", f"nodename={NODE}", "state=resume"], "/root")
    assert (reply.stderr, reply.exit_code) == ("slurm_update error: Invalid node state specified\n", 1)
    fixed = CONF16.replace(
        "NodeName=compute-0[1-2]",
        f"NodeName={NODE} CPUs=8 Boards=1 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=4000\n"
        "NodeName=compute-01",
    )
    files["/etc/slurm/slurm.conf"] = fixed.encode()
    reply = c.handle("login01", ["scontrol", "reconfigure"], "/root")
    assert (reply.stderr, reply.exit_code) == (f"slurm_reconfigure error: {NEED_RESTART}\n", 1)
    assert [text for _, text in c.slurm.log_lines][-2:] == [
        f"error: Configured cpu count change on {NODE} (16 to 8)",
        f"error: _slurm_rpc_reconfigure_controller: {NEED_RESTART}",
    ]
    # The file is in force, but the slurmds were not told: the node is still INVALID_REG, and
    # slurmctld's record of it keeps 16 CPUs.
    assert node.conf.cpus == 8 and node.record_cpus == 16 and node.has(NodeFlag.INVALID_REG)
    # A second reconfigure sees no change and passes; the record stays until slurmctld starts.
    assert c.handle("login01", ["scontrol", "reconfigure"], "/root").exit_code == 0
    assert not node.has(NodeFlag.INVALID_REG) and node.record_cpus == 16
    c.slurm.rebuild(parse_slurm_conf(fixed))
    assert node.record_cpus == 8


# ---- the incident ------------------------------------------------------------------------------------


def test_every_change_and_node_is_drawn_and_the_gold_solves_each_change(play):
    scenario = load_scenario(SCENARIO)
    drawn = [scenario.draw_params(seed) for seed in range(800, 1000)]
    assert {str(p["hw"]["why"]) for p in drawn} == {  # type: ignore[index]
        "SMT turned off in its firmware",
        "one socket left empty after a failed CPU was pulled",
        "replacement CPUs of a smaller SKU",
    }
    assert {p["node"] for p in drawn} == {"compute-01", "compute-02", "compute-03", "compute-04"}
    for seed in (SMT, SOCKET):
        incident = play(SCENARIO, seed)
        type_all(incident, incident.gold)
        assert incident.solved and harm_of(incident) == []


def test_the_node_reports_its_layout_and_slurmctld_says_why(play):
    incident = play(SCENARIO, SMT)
    shown = out(incident, f"scontrol show node {NODE}")
    assert "State=IDLE+DRAIN+INVALID_REG " in shown and "CPUTot=16 " in shown
    assert "Reason=Low socket*core*thread count, Low CPUs [slurm@" in shown
    assert "Low socket*core*thre slurm " in out(incident, "sinfo -R")
    assert out(incident, f"sinfo -h -n {NODE} -o %t").strip() == "inval"
    assert out(incident, f"ssh {NODE} slurmd -C").splitlines()[0] == (
        f"NodeName={NODE} CPUs=8 Boards=1 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=4000"
    )
    lscpu = out(incident, f"ssh {NODE} lscpu")
    for label, value in (("CPU\\(s\\)", 8), ("Thread\\(s\\) per core", 1), ("Core\\(s\\) per socket", 4)):
        assert re.search(rf"(?m)^{label}: +{value}$", lscpu), label
    assert re.search(r"(?m)^Socket\(s\): +2$", lscpu)
    assert out(incident, f"ssh {NODE} nproc").strip() == "8"
    assert out(incident, f"ssh {NODE} grep -c ^processor /proc/cpuinfo").strip() == "8"
    # A node of the same model still has all of its 16.
    assert out(incident, "ssh compute-03 nproc").strip() == "16"
    log = out(incident, "journalctl -u slurmctld --no-pager")
    assert (
        f"slurmctld: error: Setting node {NODE} state to INVAL with reason:Low socket*core*thread count, Low CPUs"
        in log
    )
    started = out(incident, f"ssh {NODE} journalctl -u slurmd --no-pager | tail -1")
    assert "slurmd: CPUs=8 Boards=1 Sockets=2 Cores=4 Threads=1 Memory=4000 " in started


def test_resuming_alone_is_refused_and_the_node_stays_drained(play):
    incident = play(SCENARIO, SMT)
    step = incident.step(f"scontrol update nodename={NODE} state=resume")
    assert (step.result.output, step.result.exit_code) == (
        "slurm_update error: Invalid node state specified\n",
        1,
    )
    type_all(incident, [f"ssh {NODE} systemctl restart slurmd", "scontrol reconfigure", "sinfo"])
    assert out(incident, f"sinfo -h -n {NODE} -o %t").strip() == "inval"
    assert not incident.solved and harm_of(incident) == []


def test_lowering_the_shared_line_hides_cpus_every_other_node_has(play):
    incident = play(SCENARIO, SMT)
    lower = "s/^NodeName=compute-0\\[1-4\\] CPUs=16 \\(.*\\)ThreadsPerCore=2/NodeName=compute-0[1-4] CPUs=8 \\1ThreadsPerCore=1/"
    type_all(
        incident,
        [*everywhere(lower), "systemctl restart slurmctld", f"scontrol update nodename={NODE} state=resume"],
    )
    assert not incident.solved
    assert "configured compute-03 with fewer CPUs than it has (slurm.conf on login01)" in harm_of(incident)


@pytest.mark.parametrize(
    ("seed", "registers"),
    [
        # CPUs=8 with 2 sockets of 4 cores is a layout Slurm takes (a CPU per core): slurmd
        # registers it, and logs every start that the node's layout differs.
        (SMT, True),
        # CPUs=12 with 2x4x2 fits no layout: read_config resets it to 16, and the node stays invalid.
        (BOARD, False),
    ],
)
def test_changing_only_cpus_leaves_a_layout_the_node_lacks(play, seed, registers):
    incident = play(SCENARIO, seed)
    cpus = incident.task.params["hw"]["fcpus"]  # type: ignore[attr-defined]
    only = f"s/^NodeName={NODE} CPUs=[0-9]*/NodeName={NODE} CPUs={cpus}/"
    type_all(
        incident,
        [
            *everywhere(SPLIT, only),
            "systemctl restart slurmctld",
            f"ssh {NODE} systemctl restart slurmd",
            "sinfo",
            "sinfo",
            f"scontrol update nodename={NODE} state=resume",
            "sinfo",
        ],
    )
    assert not incident.solved and harm_of(incident) == []
    state = out(incident, f"sinfo -h -n {NODE} -o %t").strip()
    assert (state == "idle") is registers
    if registers:
        assert (
            "slurmd: error: Node configuration differs from hardware: CPUs=8:8(hw) Boards=1:1(hw) "
            "SocketsPerBoard=2:2(hw) CoresPerSocket=4:4(hw) ThreadsPerCore=2:1(hw)"
        ) in out(incident, f"ssh {NODE} journalctl -u slurmd --no-pager")


def test_two_reconfigures_pass_but_only_a_restart_takes_the_new_cpu_count(play):
    incident = play(SCENARIO, SMT)
    type_all(incident, everywhere(SPLIT, own_line(8, 2, 4, 1)))
    step = incident.step("scontrol reconfigure")
    assert (step.result.output, step.result.exit_code) == (f"slurm_reconfigure error: {NEED_RESTART}\n", 1)
    assert f"slurmctld: error: Configured cpu count change on {NODE} (16 to 8)" in out(
        incident, "journalctl -u slurmctld --no-pager | tail -2"
    )
    type_all(incident, ["scontrol reconfigure", f"scontrol update nodename={NODE} state=resume", "sinfo"])
    # It looks back in service, but slurmctld still holds the record it started with.
    assert out(incident, f"sinfo -h -n {NODE} -o %t").strip() == "idle"
    assert not incident.solved and harm_of(incident) == []
    type_all(incident, ["systemctl restart slurmctld", "sinfo", "sinfo", "sinfo -R"])
    assert incident.solved and harm_of(incident) == []


@pytest.mark.parametrize("other", [BOARD, SOCKET])
def test_another_variants_fix_is_no_fix(play, other):
    incident = play(SCENARIO, SMT)
    assert load_scenario(SCENARIO).draw_params(other)["node"] == NODE
    type_all(incident, gold_commands(SCENARIO, other))
    assert not incident.solved and harm_of(incident) == []


def test_a_second_line_for_the_node_is_fatal_to_slurmctld(play):
    incident = play(SCENARIO, SMT)
    line = (
        f"NodeName={NODE} CPUs=8 Boards=1 SocketsPerBoard=2 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=4000"
    )
    incident.step(f"sed -i '/^NodeName=compute-0\\[1-4\\]/i {line}' /etc/slurm/slurm.conf")
    assert not incident.solved
    assert harm_of(incident) == ["changed the cluster's configuration (slurm.conf on login01)"]
    episode = incident.episode
    episode.step("systemctl restart slurmctld")
    log = episode.step("journalctl -u slurmctld --no-pager | tail -3").output
    assert f"slurmctld: fatal: Duplicated NodeHostName {NODE} in config file" in log


def test_restarting_and_resuming_everything_does_not_solve(play):
    incident = play(SCENARIO, SOCKET)
    type_all(incident, [cheats.restart_everything(), cheats.resume_everything(), "sinfo"])
    assert not incident.solved


def test_a_restarted_slurmctld_reads_slurm_conf_and_a_restarted_slurmd_registers_again(play):
    incident = play(SCENARIO, SOCKET)
    # A partition added to the controller's file exists after slurmctld restarts, not before.
    incident.episode.step("echo 'PartitionName=extra Nodes=compute-01 State=UP' >> /etc/slurm/slurm.conf")
    assert "extra" not in incident.episode.controller.slurm.partitions
    incident.episode.step("systemctl restart slurmctld")
    assert "extra" in incident.episode.controller.slurm.partitions
    # slurmd restarted on a node: slurmctld hears its registration (SlurmdStartTime moves).
    before = incident.episode.step("scontrol show node compute-01 | grep -o 'SlurmdStartTime=[^ ]*'").output
    incident.episode.controller.advance(60)
    incident.episode.step("ssh compute-01 systemctl restart slurmd")
    after = incident.episode.step("scontrol show node compute-01 | grep -o 'SlurmdStartTime=[^ ]*'").output
    assert before != after


def test_the_knobs_play_it_and_the_gold_still_solves(play):
    hard = play(SCENARIO, SMT, difficulty=Difficulty(red_herrings=3, chained=2, clue=Clue.DEEP))
    assert Difficulty.parse(hard.info()["difficulty"]).chained >= 1
    type_all(hard, hard.gold)
    assert hard.solved and harm_of(hard) == []
    shallow = play(SCENARIO, SMT, difficulty=Difficulty(clue=Clue.SHALLOW))
    assert "Hint: The drain reason says the node registered fewer sockets" in shallow.alert
