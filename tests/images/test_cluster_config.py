"""Slurm, munge, systemd units and network scripts: the files the cluster's software reads."""

import hashlib

import pytest

UNITS = {
    "rocky-login": ("munge.service", "slurmctld.service", "httpd.service"),
    "rocky-compute": ("munge.service", "slurmd.service"),
}


def test_munge_key_is_private_to_munge(host):
    key = host.file("/etc/munge/munge.key")
    assert key.is_file
    assert key.user == "munge" and key.group == "munge"
    assert key.mode == 0o400
    assert key.size == 1024
    directory = host.file("/etc/munge")
    assert directory.user == "munge" and directory.mode == 0o700


def test_slurm_conf_describes_the_cluster(host):
    conf = host.file("/etc/slurm/slurm.conf")
    assert conf.mode == 0o644 and conf.user == "root"
    text = conf.content_string
    assert "ClusterName=hpc\n" in text
    assert "SlurmctldHost=login01\n" in text
    assert "NodeName=compute-0[1-4] " in text
    assert "PartitionName=compute Nodes=compute-0[1-4] Default=YES" in text


def test_slurm_conf_and_munge_key_agree_across_images(unpacked):
    def digest(role, path):
        return hashlib.sha256((unpacked[role] / path).read_bytes()).hexdigest()

    for path in ("etc/slurm/slurm.conf", "etc/munge/munge.key", "etc/hosts"):
        assert digest("rocky-login", path) == digest("rocky-compute", path), path


@pytest.mark.parametrize(("path", "owner", "mode"), [
    ("/var/spool/slurmd", "root", 0o755),
    ("/var/log/slurm", "slurm", 0o755),
    ("/var/lib/munge", "munge", 0o700),
    ("/var/log/munge", "munge", 0o700),
])  # fmt: skip
def test_daemon_directories(host, path, owner, mode):
    directory = host.file(path)
    assert directory.is_directory and directory.user == owner and directory.mode == mode


def test_unit_files(host, role):
    for unit in UNITS[role]:
        path = host.file(f"/usr/lib/systemd/system/{unit}")
        assert path.is_file and path.mode == 0o644, unit
        assert "ExecStart=" in path.content_string
    other = {u for units in UNITS.values() for u in units} - set(UNITS[role])
    for unit in other:
        assert not host.file(f"/usr/lib/systemd/system/{unit}").exists, f"{unit} does not belong on {role}"


def test_compute_network_scripts(host, role):
    scripts = host.file("/etc/sysconfig/network-scripts")
    if role != "rocky-compute":
        assert not scripts.exists
        return
    assert "DEVICE=eth0" in host.file("/etc/sysconfig/network-scripts/ifcfg-eth0").content_string
    route = host.file("/etc/sysconfig/network-scripts/route-eth0").content_string
    assert "ADDRESS0=10.10.0.0" in route and "GATEWAY0=" in route


def test_login_hosts_slurmctld_state_and_portal(host, role):
    spool = host.file("/var/spool/slurmctld")
    portal = host.file("/etc/httpd/conf.d/ood-portal.conf")
    if role == "rocky-login":
        assert spool.user == "slurm" and spool.mode == 0o700
        assert portal.is_file and "<VirtualHost *:80>" in portal.content_string
    else:
        assert not spool.exists and not portal.exists
