"""Every simulated tool from stubs/ is installed where the real tool lives, and runs."""

from tests.conftest import REPO

TOOLS = [line for line in (REPO / "stubs" / "tools.list").read_text().splitlines() if line.startswith("/")]


def test_every_listed_tool_is_installed(host):
    client = host.file("/usr/libexec/hpcgym/hpcgym-client")
    assert client.content == (REPO / "stubs" / "hpcgym-client").read_bytes()
    for path in TOOLS:
        tool = host.file(path)
        assert tool.is_file and not tool.is_symlink, path
        assert tool.user == "root" and tool.group == "root" and tool.mode == 0o755, path
        assert tool.content == client.content, path


def test_stub_without_controller_fails_clearly(host):
    # No control socket in a bare image: the tool must say so, not hang or print a traceback.
    result = host.run("sinfo -N")
    assert result.rc == 1
    assert result.stdout == ""
    assert result.stderr == "sinfo: error: cannot reach the cluster controller at /run/hpcgym/control.sock\n"


def test_daemon_process_images(host):
    # Started services run as these (see setup-node.sh), so ps/pgrep/pidof find them by name.
    cat = host.file("/usr/bin/cat")
    for daemon in ("munged", "slurmd", "slurmctld", "httpd"):
        image = host.file(f"/usr/libexec/hpcgym/daemons/{daemon}")
        assert image.mode == 0o755 and image.user == "root"
        assert image.sha256sum == cat.sha256sum, daemon
