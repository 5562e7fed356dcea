"""`ssh` inside a cluster: moving the shell, running commands remotely, unknown hosts."""

from __future__ import annotations

from hpcgym.runtime import Cluster


def test_ssh_moves_the_shell_and_exit_returns(cluster: Cluster) -> None:
    assert cluster.execute("ssh compute-01").exit_code == 0
    assert cluster.current_node == "compute-01"
    assert cluster.execute("hostname").output == "compute-01\n"
    assert cluster.execute("pwd").output == "/root\n"
    cluster.execute("touch /etc/only-on-compute-01; sleep 500 &")
    result = cluster.execute("exit")
    assert result.output.endswith("Connection to compute-01 closed.\n")
    assert not result.ended
    assert cluster.current_node == "login01"
    assert cluster.execute("hostname").output == "login01\n"
    # Files and processes belong to the node they were made on.
    assert cluster.execute("ls /etc/only-on-compute-01").exit_code != 0
    assert "sleep 500" not in cluster.execute("ps -eo args").output
    assert "sleep 500" in cluster.execute("ssh compute-01 ps -eo args").output


def test_ssh_onward_and_back_from_every_node(cluster: Cluster) -> None:
    cluster.execute("ssh compute-01")
    cluster.execute("ssh compute-02")
    assert cluster.execute("hostname").output == "compute-02\n"
    assert cluster.execute("ssh login01 hostname").output == "login01\n"
    cluster.execute("ssh login01")
    assert cluster.execute("hostname").output == "login01\n"
    assert [cluster.execute("exit").node for _ in range(3)] == ["login01", "compute-02", "compute-01"]
    assert cluster.current_node == "login01"
    assert not cluster.ended


def test_ssh_command_keeps_every_argument(cluster: Cluster) -> None:
    # The default handler echoes node, cwd and argv: the stub on compute-01 got every flag.
    result = cluster.execute("ssh compute-01 nvidia-smi -r -i 0")
    assert result.output == 'compute-01 /root ["nvidia-smi", "-r", "-i", "0"]\n'
    assert cluster.execute("ssh compute-01 echo -n a b").output == "a b"
    assert cluster.current_node == "login01"


def test_ssh_command_exit_code_and_stderr(cluster: Cluster) -> None:
    result = cluster.execute("ssh -o BatchMode=yes root@compute-02 'echo out; echo err >&2; exit 7'")
    assert result.output == "out\nerr\n"
    assert result.exit_code == 7


def test_unknown_host_prints_what_ssh_prints(cluster: Cluster) -> None:
    result = cluster.execute("ssh nosuchnode")
    assert result.output == "ssh: Could not resolve hostname nosuchnode: Name or service not known\n"
    assert result.exit_code == 255
    assert cluster.current_node == "login01"


def test_shared_dirs_are_shared_across_nodes(cluster: Cluster) -> None:
    cluster.execute("echo from-login > /home/note; mkdir -p /apps/tool")
    assert cluster.execute("ssh compute-02 cat /home/note").output == "from-login\n"
    assert cluster.execute("ssh compute-01 ls -d /apps/tool").exit_code == 0


def test_ssh_remote_command_reads_the_local_stdin(cluster: Cluster) -> None:
    result = cluster.execute("printf 'a\\nb\\n' | ssh compute-01 'wc -l; hostname'")
    assert (result.output, result.exit_code) == ("2\ncompute-01\n", 0)
