"""The Rocky Linux 9.5 persona an agent sees, and the manifest that says it is emulated."""


def test_os_release_is_rocky_9_5(host):
    os_release = host.file("/etc/os-release")
    assert os_release.is_symlink and os_release.linked_to == "/usr/lib/os-release"
    assert 'PRETTY_NAME="Rocky Linux 9.5 (Blue Onyx)"' in os_release.content_string
    assert 'ID="rocky"' in os_release.content_string
    assert host.system_info.distribution == "rocky"
    assert host.system_info.release == "9.5"


def test_release_files(host):
    assert host.file("/etc/rocky-release").content_string == "Rocky Linux release 9.5 (Blue Onyx)\n"
    for name in ("/etc/redhat-release", "/etc/system-release"):
        assert host.file(name).linked_to == "/etc/rocky-release"
    assert host.file("/etc/system-release-cpe").content_string.startswith("cpe:/o:rocky:rocky:9")
    assert not host.file("/etc/debian_version").exists


def test_manifest_labels_the_emulation(manifest, role):
    assert manifest["role"] == role
    assert manifest["persona"] == "rocky-9.5"
    assert manifest["emulated"] is True
    assert manifest["base"]["kind"] == "mmdebstrap"
    assert manifest["base"]["mirrors"], "the manifest must say where the base came from"
    assert "bash" in manifest["packages"] and "python3" in manifest["packages"]


def test_operator_tools_present(host):
    for command in ("bash", "ps", "ip", "find", "grep", "sed", "awk", "less", "vi", "python3", "pgrep", "ss"):
        assert host.exists(command), command
    assert host.run("python3 -c 'print(6*7)'").stdout == "42\n"
