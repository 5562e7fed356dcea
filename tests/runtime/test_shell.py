"""The agent's shell: exit codes, time limits, output caps, hostile programs and `exit`."""

from __future__ import annotations

import os
import signal
import time

import pytest

from hpcgym.runtime import Cluster


def test_output_and_exit_code(cluster: Cluster) -> None:
    result = cluster.execute("echo hello; hostname; (exit 3)")
    assert result.output == "hello\nlogin01\n"
    assert result.exit_code == 3
    assert result.node == "login01"
    assert not result.timed_out and not result.truncated


def test_shell_state_persists_and_multiline_commands_work(cluster: Cluster) -> None:
    cluster.execute("cd /tmp && export GREETING=hi")
    assert cluster.execute("pwd; echo $GREETING").output == "/tmp\nhi\n"
    heredoc = "cat <<'EOF'\nline one\n'quoted' \\ back\nEOF"
    assert cluster.execute(heredoc).output == "line one\n'quoted' \\ back\n"


def test_unbalanced_quote_does_not_hang(cluster: Cluster) -> None:
    result = cluster.execute('echo "unbalanced', timeout_s=5)
    assert not result.timed_out
    assert "unexpected EOF" in result.output
    assert cluster.execute("echo ok").output == "ok\n"


def test_timeout_interrupts_then_shell_keeps_working(cluster: Cluster) -> None:
    cluster.execute("sleep 300 &")  # a background job must survive another command's time-out
    start = time.monotonic()
    result = cluster.execute("sleep 100", timeout_s=1)
    assert time.monotonic() - start < 5
    assert result.timed_out
    assert result.exit_code == 124
    assert "timed out" in result.output
    assert cluster.execute("echo still here").output == "still here\n"
    assert "sleep 300" in cluster.execute("ps -eo args").output


def test_timeout_stops_a_loop_run_by_bash_itself(cluster: Cluster) -> None:
    result = cluster.execute("while :; do :; done", timeout_s=1)
    assert result.timed_out
    assert cluster.execute("echo back").output == "back\n"


def test_shell_that_ignores_interrupts_is_replaced(cluster: Cluster) -> None:
    cluster.execute("touch /root/kept")
    result = cluster.execute("trap '' INT; while :; do :; done", timeout_s=1)
    assert result.timed_out
    assert not result.ended
    assert cluster.execute("ls /root/kept").exit_code == 0


def test_output_is_capped_with_head_tail_and_marker(cluster: Cluster) -> None:
    result = cluster.execute("seq 1 200000")
    assert result.truncated
    assert result.output.startswith("1\n2\n3\n")
    assert result.output.endswith("199999\n200000\n")
    assert "bytes truncated" in result.output
    assert len(result.output.encode()) < cluster.config.max_output_bytes + 200


def test_flood_until_timeout_stays_bounded(cluster: Cluster) -> None:
    result = cluster.execute("yes", timeout_s=1)
    assert result.timed_out and result.truncated
    assert len(result.output) < cluster.config.max_output_bytes + 200


def test_ansi_stripped_and_invalid_utf8_replaced(cluster: Cluster) -> None:
    result = cluster.execute(r"printf '\033[31mred\033[0m \xff\xfe ok\n'")
    assert result.output == "red \ufffd\ufffd ok\n"


def test_full_screen_programs_cannot_hang_the_episode(cluster: Cluster) -> None:
    for command in ("cat", "vi /etc/hosts", "less /etc/os-release", "top", "read x", "python3"):
        start = time.monotonic()
        result = cluster.execute(command, timeout_s=3)
        assert time.monotonic() - start < 6, command
        assert cluster.execute("echo alive").output == "alive\n", command
        del result


def test_pagers_print_and_quit(cluster: Cluster) -> None:
    result = cluster.execute("less /etc/os-release", timeout_s=5)
    assert not result.timed_out
    assert "NAME=" in result.output


def test_syntax_error_exit_code_and_previous_status(cluster: Cluster) -> None:
    assert cluster.execute("if then fi").exit_code == 2
    cluster.execute("(exit 5)")
    assert cluster.execute("echo $?").output == "5\n"


def test_exit_on_login_node_ends_the_episode(cluster: Cluster) -> None:
    result = cluster.execute("exit")
    assert result.ended
    assert cluster.ended


def test_sigpipe_has_its_default_action(cluster: Cluster) -> None:
    # hpcgym's Python ignores SIGPIPE; the node's programs must not inherit that.
    result = cluster.execute("yes | head -1; ssh compute-01 'yes | head -1'")
    assert (result.output, result.exit_code) == ("y\ny\n", 0)


def test_a_child_that_is_slow_to_die_is_still_reaped() -> None:
    # pexpect with zero delays gives up on a child still dying after SIGKILL; close_child waits.
    import pexpect

    from hpcgym.runtime.shell import close_child

    children = []
    for _ in range(10):
        child = pexpect.spawn("/bin/bash", ["-c", "trap '' HUP INT; sleep 100"], use_poll=True)
        child.delayafterclose = child.delayafterterminate = 0
        child.ptyproc.delayafterclose = child.ptyproc.delayafterterminate = 0
        children.append(child)
    time.sleep(0.3)  # the traps are set
    codes = [close_child(child) for child in children]
    assert all(code == 128 + signal.SIGKILL for code in codes), codes
    for child in children:
        with pytest.raises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)
