"""No host identity, no surprise privileges, and a size within budget."""

SETUID_ALLOWED = {
    "/usr/bin/chfn", "/usr/bin/chsh", "/usr/bin/gpasswd", "/usr/bin/mount", "/usr/bin/newgrp",
    "/usr/bin/passwd", "/usr/bin/su", "/usr/bin/umount",
}  # fmt: skip
SETGID_ALLOWED = {"/usr/bin/chage", "/usr/bin/expiry", "/usr/sbin/unix_chkpwd"}
SIZE_BUDGET_BYTES = 220 * 1024 * 1024


def test_identity_scrubbed(host, role):
    assert host.file("/etc/machine-id").content == b""
    assert host.file("/etc/hostname").content_string == (
        "login01\n" if role == "rocky-login" else "compute-01\n"
    )
    assert "login01" in host.file("/etc/hosts").content_string
    for leftover in (
        "/.dockerenv",
        "/run/.containerenv",
        "/var/lib/dbus/machine-id",
        "/var/cache/ldconfig/aux-cache",
    ):
        assert not host.file(leftover).exists, leftover
    assert host.run("ls /etc/ssh/ssh_host_* 2>/dev/null").stdout == ""
    assert host.run("find /var/log /var/lib/apt/lists /tmp /var/tmp -type f").stdout == ""


def test_no_device_nodes(host):
    # The sandbox mounts its own /dev; nothing in the image may be a device node.
    assert host.run("find / -xdev \\( -type b -o -type c \\) -not -path '/dev/*' -print").stdout == ""


def test_setuid_and_setgid_on_allowlist(host):
    setuid = set(host.run("find / -xdev -perm -4000 -type f -not -path '/proc/*'").stdout.split())
    setgid = set(host.run("find / -xdev -perm -2000 -type f -not -path '/proc/*'").stdout.split())
    assert setuid <= SETUID_ALLOWED
    assert setgid <= SETGID_ALLOWED
    assert "/usr/bin/su" in setuid, "setuid bits must survive the build and the tar writer"


def test_nothing_world_writable_outside_tmp(host):
    found = host.run(
        "find / -xdev -perm -0002 -not -type l -not -path '/tmp*' -not -path '/var/tmp*' "
        "-not -path '/proc/*' -not -path '/dev/*' -not -path '/run/*'"
    ).stdout.split()
    assert found == []


def test_size_within_budget(manifest):
    assert 0 < manifest["tar_bytes"] <= SIZE_BUDGET_BYTES
    assert manifest["artifact_bytes"] < manifest["tar_bytes"]
