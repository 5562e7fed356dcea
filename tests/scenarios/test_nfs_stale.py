"""hpc_nfs_stale: only remounting the share fixes it; resuming, restarting or faking the tree does not."""

from __future__ import annotations

from tests.scenarios.conftest import assert_unsolved, type_all

SEED = 800


def params(incident) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return str(incident.task.params["node"]), str(incident.task.params["path"])


def test_the_agent_sees_the_kernels_stale_handle(play):
    incident = play("hpc_nfs_stale", SEED)
    node, path = params(incident)
    assert incident.step(f"ssh {node} ls {path}").result.output == (
        f"ls: cannot access '{path}': Stale file handle\n"
    )
    assert incident.step(f"ssh {node} df {path}").result.output == f"df: {path}: Stale file handle\n"
    reasons = incident.step(f"scontrol show node {node} | grep Reason").result.output
    assert f"Reason=NHC: check_file_test:  -d {path} returned 1." in reasons
    assert_unsolved(incident)


def test_resume_restart_and_fake_trees_do_not_solve(play):
    incident = play("hpc_nfs_stale", SEED)
    node, path = params(incident)
    last = type_all(
        incident,
        [
            f"ssh {node} systemctl restart slurmd",
            f"scontrol update nodename={node} state=resume",
            f"ssh {node} 'mkdir -p /tmp{path} && ln -s /tmp{path} /root/share'",
            f"ssh {node} mount --bind /tmp{path} {path}",
            f"ssh {node} mount -o remount {path}",
            f"ssh {node} mount {path}",
            "sinfo",
        ],
    )
    assert last is not None and not last.terminated
    assert_unsolved(incident)


def test_unmounting_without_mounting_again_does_not_solve(play):
    incident = play("hpc_nfs_stale", SEED)
    node, path = params(incident)
    type_all(
        incident,
        [
            f"ssh {node} umount -f {path}",
            f"ssh {node} 'mkdir -p {path}/alice {path}/modulefiles'",
            f"scontrol update nodename={node} state=resume",
        ],
    )
    assert_unsolved(incident)
    # Mounting again is the fix (the files left in the local mount point stay hidden under it).
    last = type_all(incident, [f"ssh {node} mount -a"])
    assert last is not None and last.terminated and last.info["solved"]


def test_unmounting_a_healthy_share_elsewhere_breaks_success(play):
    incident = play("hpc_nfs_stale", SEED)
    node, path = params(incident)
    other = "compute-04" if node != "compute-04" else "compute-01"
    type_all(
        incident,
        [
            f"ssh {other} umount -l /home",
            f"ssh {node} umount -l {path}",
            f"ssh {node} mount {path}",
            f"scontrol update nodename={node} state=resume",
        ],
    )
    assert_unsolved(incident)
