"""The warm pool: hand-off of ready clusters, never the same one twice."""

from __future__ import annotations

from hpcgym.runtime import Runtime


def test_pool_never_hands_out_a_cluster_twice(runtime: Runtime) -> None:
    assert runtime.pool.wait_full(timeout_s=60)
    taken = []  # kept alive, so identity checks mean something
    seen_dirs: set[str] = set()
    for _ in range(8):
        cluster = runtime.new_cluster()
        assert all(cluster is not earlier for earlier in taken)
        assert cluster.dir.name not in seen_dirs
        taken.append(cluster)
        seen_dirs.add(cluster.dir.name)
        # Fresh: nothing a previous episode wrote is there.
        assert cluster.execute("ls /root/used").exit_code != 0
        cluster.execute("touch /root/used")
        cluster.close()
    assert runtime.pool.wait_full(timeout_s=60)
    for ready in list(runtime.pool._ready):
        assert ready.dir.name not in seen_dirs


def test_pooled_cluster_is_at_its_prompt_and_takes_compute_nodes(runtime: Runtime) -> None:
    assert runtime.pool.wait_full(timeout_s=60)
    with runtime.new_cluster(compute_nodes=["gpu-07"]) as cluster:
        assert cluster.nodes["login01"].is_running
        assert cluster.execute("ssh gpu-07 hostname").output == "gpu-07\n"
