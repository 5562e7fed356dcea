"""Every simulated tool from stubs/ is installed where the real tool lives, and runs."""

from hpcgym.imagebuild.client import compile_client
from tests.conftest import REPO, require_toolchain

TOOLS = [line for line in (REPO / "stubs" / "tools.list").read_text().splitlines() if line.startswith("/")]


def test_the_client_is_the_native_binary_this_source_makes(host, tmp_path):
    client = host.file("/usr/libexec/hpcgym/hpcgym-client")
    assert client.content.startswith(b"\x7fELF")
    script = host.file("/usr/libexec/hpcgym/hpcgym-client.py")
    assert script.content == (REPO / "stubs" / "hpcgym-client.py").read_bytes()
    assert script.user == "root" and script.mode == 0o755
    assert not host.file("/usr/libexec/hpcgym/hpcgym-client.c").exists
    require_toolchain()
    compile_client(REPO / "stubs", tmp_path / "hpcgym-client")
    assert client.content == (tmp_path / "hpcgym-client").read_bytes(), (
        "the image's client is not this source's"
    )


def test_every_listed_tool_is_installed(host):
    client = host.file("/usr/libexec/hpcgym/hpcgym-client")
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
    init = host.file("/usr/lib/systemd/systemd")
    for daemon in ("munged", "slurmd", "slurmctld", "httpd", "chronyd", "slurmdbd", "mariadbd"):
        image = host.file(f"/usr/libexec/hpcgym/daemons/{daemon}")
        assert image.mode == 0o755 and image.user == "root"
        assert image.sha256sum == init.sha256sum, daemon
